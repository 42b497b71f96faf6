//! [`AsyncEventBoundary`]: chosen events cross from one event domain to another.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use nexus_core::channel::{Bounded, Overflow, TrySendError};
use nexus_core::{
    AbortOnDrop, BoxError, ConsumerFuture, Delivery, Event, EventConsumer, EventProducer,
    EventQueue, EventSource, Handler, NexusError, ProducerLink, async_trait,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Joins two event domains, each with its own nexus.
///
/// In the sending domain the boundary is a handler ([`handler`](Self::handler)), registered for
/// the event types that should cross; in the receiving domain it is a producer
/// ([`producer`](Self::producer)) that ingests them there. Between the two is a bounded queue:
/// when it is full, the sending handler waits, so the sending domain slows to the pace of the
/// receiving one and nothing is dropped.
///
/// Replies travel the other way through the same boundary: register
/// [`reply_handler`](Self::reply_handler) in the receiving domain for the types of the replies,
/// and [`reply_producer`](Self::reply_producer) in the sending domain.
///
/// [`close`](Self::close) refuses new events (`NexusError::Closed`, a bad call) and returns once
/// every event already accepted has been delivered, or handed back inside its error.
///
/// The boundary is a cheap cloneable handle.
///
/// # Examples
///
/// A logging domain with its own nexus, fed by an application domain:
///
/// ```
/// use nexus_bus::AsyncEventBoundary;
/// use nexus_core::{AsyncEventNexus, Event, EventQueue};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nexus_core::NexusError> {
/// const LOG: i64 = 500;
/// let app = AsyncEventNexus::new();
/// let logging = AsyncEventNexus::new();
/// let boundary = AsyncEventBoundary::new(64);
///
/// app.add_consumer(LOG, boundary.handler())?; // only LOG events cross
/// logging.add_producer(boundary.producer())?;
/// logging.add_handler(LOG, |e: Event, _q: EventQueue| println!("log: {}", e.payload))?;
///
/// let _logging = logging.start()?;
/// let _app = app.start()?;
/// app.ingest(Event::new(1, LOG, 0, "started")).await?;
/// boundary.close().await?; // returns once "started" was logged
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct AsyncEventBoundary {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    forward: Lane,
    replies: Lane,
}

/// A lane's queue, in arrival order or ranked by priority. Its close and its sends take the
/// same lock, so once it is closed nothing more gets in: what a drain after the close finds is
/// all there will ever be.
type Queue = Bounded<Event>;

/// One direction of the boundary.
#[derive(Debug)]
struct Lane {
    closed: AtomicBool,
    tx: Queue,
    /// The receiving handle of `tx`: taken by the producer that starts; still here if none
    /// ever did.
    rx: Mutex<Option<Queue>>,
    /// Producers of this direction in existence (registered somewhere, or about to be).
    producers: AtomicUsize,
    /// Events accepted: counted before the check of `closed`, and uncounted again when that
    /// check or the send then fails, or the send is dropped.
    accepted: AtomicU64,
    /// Events delivered or failed.
    settled: AtomicU64,
    /// Bumped for `close` to look again, once it is closing.
    changed: watch::Sender<()>,
    failures: Mutex<Vec<NexusError>>,
    stop: watch::Sender<bool>,
}

impl Lane {
    /// A lane holding `capacity` events, ranked by priority with aging after `max_wait` if
    /// given.
    fn new(capacity: usize, max_wait: Option<Duration>) -> Self {
        let tx = match max_wait {
            None => Bounded::new(capacity, Overflow::Wait),
            Some(max_wait) => {
                Bounded::ranked(capacity, Overflow::Wait, max_wait, |event: &Event| {
                    i64::from(event.priority)
                })
            }
        };
        let rx = tx.clone();
        Self {
            closed: AtomicBool::new(false),
            tx,
            rx: Mutex::new(Some(rx)),
            producers: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            changed: watch::channel(()).0,
            failures: Mutex::new(Vec::new()),
            stop: watch::channel(false).0,
        }
    }

    /// Puts `event` on the queue if it has room: `Ok(None)` once it is there, `Ok(Some(event))`
    /// when the queue is full (the event is counted as accepted: the caller sends it through an
    /// [`Owed`], which uncounts it if it never gets there).
    fn offer(&self, event: Event) -> Result<Option<Event>, NexusError> {
        self.accepted.fetch_add(1, SeqCst);
        if self.closed.load(SeqCst) {
            self.uncount();
            return Err(closed_error(event));
        }
        match self.tx.try_send(event) {
            // A queue that waits when full drops nothing.
            Ok(_) => Ok(None),
            Err(TrySendError::Full(event)) => Ok(Some(event)),
            Err(TrySendError::Closed(event)) => {
                self.uncount();
                Err(closed_error(event))
            }
        }
    }

    /// Takes back the count of an event that was not accepted after all; wakes `close` if
    /// closing.
    fn uncount(&self) {
        self.accepted.fetch_sub(1, SeqCst);
        if self.closed.load(SeqCst) {
            self.wake();
        }
    }

    fn settle(&self, outcome: Result<(), NexusError>) {
        if let Err(err) = outcome {
            tracing::error!(error = %err, "event boundary could not deliver an event");
            lock(&self.failures).push(err);
        }
        self.settled.fetch_add(1, SeqCst);
        // Only a closing lane has someone to wake: `close` sets `closed` before it looks.
        if self.closed.load(SeqCst) {
            self.wake();
        }
    }

    /// Wakes `close` to look again.
    fn wake(&self) {
        self.changed.send_modify(|()| {});
    }

    /// Refuses new events, waits until every accepted event is settled, then ends the
    /// producer's task. With no producer left to start, hands the queued events back instead of
    /// waiting forever.
    async fn close(&self) -> Vec<NexusError> {
        self.closed.store(true, SeqCst);
        // A producer keeping events while its nexus is stopped looks again: a shutdown may be
        // draining it.
        self.wake();
        let mut changed = self.changed.subscribe();
        let _ = changed
            .wait_for(|()| {
                let started = lock(&self.rx).is_none();
                if started {
                    self.settled.load(SeqCst) >= self.accepted.load(SeqCst)
                } else {
                    self.producers.load(SeqCst) == 0
                }
            })
            .await;
        let unstarted = lock(&self.rx).take();
        if let Some(rx) = unstarted {
            rx.close();
            while let Some(event) = rx.try_recv() {
                self.settle(Err(NexusError::Closed {
                    what: "event boundary (no producer was started to deliver it)".to_owned(),
                    event: Box::new(event),
                }));
            }
        }
        self.stop.send_replace(true);
        std::mem::take(&mut *lock(&self.failures))
    }
}

/// An event counted as accepted by [`Lane::offer`] that is not on the queue yet, because the
/// queue was full: uncounted if it never gets there (its send fails, or is dropped, even before
/// it starts).
struct Owed {
    boundary: AsyncEventBoundary,
    direction: Direction,
    sent: bool,
}

impl Owed {
    /// Sends `event`, waiting for room.
    async fn send(mut self, event: Event) -> Result<(), NexusError> {
        let sent = self.boundary.lane(self.direction).tx.send(event).await;
        match sent {
            Ok(_) => {
                self.sent = true;
                Ok(())
            }
            Err(event) => Err(closed_error(event)),
        }
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        if !self.sent {
            self.boundary.lane(self.direction).uncount();
        }
    }
}

fn closed_error(event: Event) -> NexusError {
    NexusError::Closed {
        what: "event boundary".to_owned(),
        event: Box::new(event),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A started producer's queue, and the event it keeps while its nexus is stopped: what is still
/// there when the producer's task ends early (aborted at a shutdown's deadline) is settled as
/// not delivered, each event handed back, the kept one first.
struct Pending {
    rx: Queue,
    kept: Option<Event>,
    boundary: AsyncEventBoundary,
    direction: Direction,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.rx.close();
        let lane = self.boundary.lane(self.direction);
        while let Some(event) = self.kept.take().or_else(|| self.rx.try_recv()) {
            lane.settle(Err(NexusError::Closed {
                what: "event boundary (its producer was stopped before delivering it)".to_owned(),
                event: Box::new(event),
            }));
        }
    }
}

/// The event a run is delivering, if any: settled when the run asks for the next one (so it
/// was delivered), when the run ends with its error, or as cut short should the run be dropped.
struct InFlight<'a> {
    lane: &'a Lane,
    id: Option<u64>,
}

impl InFlight<'_> {
    fn settle(&mut self, outcome: Result<(), NexusError>) {
        if self.id.take().is_some() {
            self.lane.settle(outcome);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.lane.settle(Err(NexusError::source(
                "AsyncEventBoundary producer",
                "distribute_event",
                format!("the delivery of event {id} was cut short"),
            )));
        }
    }
}

/// Delivers `first`, then up to `RUN - 1` more events waiting on `rx`, settling each. With
/// `keeps`, an event the nexus refused because it had stopped is not settled but handed back,
/// and the run ends.
async fn deliver(
    lane: &Lane,
    delivery: &Delivery<'_>,
    rx: &Queue,
    first: Event,
    keeps: bool,
) -> Option<Event> {
    let mut first = Some(first);
    let mut more = RUN - 1;
    let mut flight = InFlight { lane, id: None };
    loop {
        let ran = delivery
            .distribute_run(|| {
                // Asked for the next event: the one before it was delivered.
                flight.settle(Ok(()));
                let event = first.take().or_else(|| {
                    more = more.checked_sub(1)?;
                    rx.try_recv()
                })?;
                flight.id = Some(event.id);
                Some(event)
            })
            .await;
        match ran {
            Ok(()) => {
                flight.settle(Ok(()));
                return None;
            }
            Err(err @ NexusError::NotRunning { .. }) if keeps => {
                // Still accepted and not settled: the producer keeps it.
                flight.id = None;
                return err.into_event();
            }
            // The event in flight failed; the run goes on with the next.
            Err(err) => flight.settle(Err(err)),
        }
    }
}

/// Whether the producer may keep an event its nexus does not take because it has stopped,
/// rather than have it refused: it has one nexus (into several, one that took the event would
/// get it twice), and the lane is not closing (a shutdown draining the producer, or a close,
/// which settle what the producer holds).
fn may_keep(link: &ProducerLink, lane: &Lane) -> bool {
    !lane.closed.load(SeqCst) && link.nexus_count() == 1
}

/// How many waiting events a producer delivers with one lookup of its nexuses.
const RUN: usize = 64;

#[derive(Clone, Copy, Debug)]
enum Direction {
    Forward,
    Reply,
}

impl AsyncEventBoundary {
    /// A boundary whose queues hold `capacity` events in each direction (at least 1), each
    /// delivered in the order it crossed.
    pub fn new(capacity: usize) -> Self {
        Self::with_lanes(capacity, None)
    }

    /// As [`new`](Self::new), delivering in each direction the most urgent event first (the
    /// lowest [`priority`](Event::priority) number; events of equal priority in the order they
    /// crossed), with aging: an event that has waited `max_wait` goes before every event that
    /// crossed after it, whatever their priorities. So however many urgent events keep coming,
    /// an event waits at most `max_wait`, then for the overdue events that crossed before it
    /// (at most `capacity`). Closing works as with [`new`](Self::new).
    ///
    /// ```
    /// use std::time::Duration;
    /// use nexus_bus::AsyncEventBoundary;
    ///
    /// let boundary = AsyncEventBoundary::with_priority(64, Duration::from_millis(100));
    /// # drop(boundary);
    /// ```
    pub fn with_priority(capacity: usize, max_wait: Duration) -> Self {
        Self::with_lanes(capacity, Some(max_wait))
    }

    fn with_lanes(capacity: usize, max_wait: Option<Duration>) -> Self {
        Self {
            shared: Arc::new(Shared {
                forward: Lane::new(capacity, max_wait),
                replies: Lane::new(capacity, max_wait),
            }),
        }
    }

    fn lane(&self, direction: Direction) -> &Lane {
        match direction {
            Direction::Forward => &self.shared.forward,
            Direction::Reply => &self.shared.replies,
        }
    }

    /// Puts `event` on the queue of `direction`, waiting while it is full.
    async fn cross(&self, direction: Direction, event: Event) -> Result<(), NexusError> {
        match self.lane(direction).offer(event)? {
            None => Ok(()),
            Some(event) => self.owed(direction).send(event).await,
        }
    }

    fn owed(&self, direction: Direction) -> Owed {
        Owed {
            boundary: self.clone(),
            direction,
            sent: false,
        }
    }

    /// The handler to register in the sending domain, for the types that should cross.
    pub fn handler(&self) -> BoundaryHandler {
        BoundaryHandler {
            boundary: self.clone(),
            direction: Direction::Forward,
        }
    }

    /// The producer to register in the receiving domain.
    pub fn producer(&self) -> BoundaryProducer {
        BoundaryProducer::new(self, Direction::Forward)
    }

    /// The handler to register in the receiving domain, for the types of replies to send back.
    pub fn reply_handler(&self) -> BoundaryHandler {
        BoundaryHandler {
            boundary: self.clone(),
            direction: Direction::Reply,
        }
    }

    /// The producer to register in the sending domain, which ingests the replies there.
    pub fn reply_producer(&self) -> BoundaryProducer {
        BoundaryProducer::new(self, Direction::Reply)
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.forward.closed.load(SeqCst)
    }

    /// Refuses new events, then waits until every event already accepted has been delivered,
    /// then does the same for replies (so that replies to what was accepted still come back);
    /// then ends the producers' tasks. Closing again does the same.
    ///
    /// # Errors
    ///
    /// [`NexusError::CloseFailed`] listing each event that could not be delivered (its error
    /// hands the event back): because the receiving nexus refused it, or because no producer
    /// was ever started to deliver it.
    pub async fn close(&self) -> Result<(), NexusError> {
        let mut failures = self.shared.forward.close().await;
        failures.extend(self.shared.replies.close().await);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(NexusError::CloseFailed { failures })
        }
    }
}

/// The sending side of an [`AsyncEventBoundary`]: a consumer that puts each event it gets on
/// the boundary's queue, waiting while the queue is full.
#[derive(Clone, Debug)]
pub struct BoundaryHandler {
    boundary: AsyncEventBoundary,
    direction: Direction,
}

#[async_trait]
impl EventConsumer for BoundaryHandler {
    /// # Errors
    ///
    /// [`NexusError::Closed`], handing the event back, once the boundary is closed.
    async fn handle(&self, event: Event, _queue: EventQueue) -> Result<(), BoxError> {
        Ok(self.boundary.cross(self.direction, event).await?)
    }

    /// One future per event, owning the handler's shared part.
    fn handle_shared(self: Arc<Self>, event: Event, _queue: EventQueue) -> ConsumerFuture {
        Box::pin(async move { Ok(self.boundary.cross(self.direction, event).await?) })
    }

    /// A function handler that puts the event on the queue at once when it has room, with no
    /// allocation and no reference count; only a send that has to wait for room owns a clone
    /// of the boundary, in a box.
    fn as_handler(&self) -> Option<Handler> {
        let BoundaryHandler {
            boundary,
            direction,
        } = self.clone();
        Some(Handler::new(
            move |event: Event, _queue: EventQueue| match boundary.lane(direction).offer(event) {
                Ok(None) => Crossing::Done,
                Err(err) => Crossing::Later(Box::pin(std::future::ready(Err(err)))),
                Ok(Some(event)) => {
                    let owed = boundary.owed(direction);
                    Crossing::Later(Box::pin(owed.send(event)))
                }
            },
        ))
    }
}

/// One crossing through a [`BoundaryHandler`]: done when the queue had room; else the send
/// that waits for room, or the failure, boxed. Two words, returned in registers: the nexus makes
/// one for each event and writes it where it polls it, and a larger value, returned in memory in
/// pieces, was then read back whole, waiting for those pieces' stores.
enum Crossing {
    Done,
    Later(Pin<Box<dyn Future<Output = Result<(), NexusError>> + Send>>),
}

impl Future for Crossing {
    type Output = Result<(), NexusError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Crossing::Done => Poll::Ready(Ok(())),
            Crossing::Later(later) => later.as_mut().poll(cx),
        }
    }
}

/// The receiving side of an [`AsyncEventBoundary`]: a producer that ingests what crosses into
/// every nexus it is registered with. One producer per direction can start.
///
/// Feeding one nexus that has stopped ([`AsyncEventNexus::stop`](nexus_core::AsyncEventNexus::stop)),
/// it keeps the event it holds (also one the nexus refused in the middle of a run) and its
/// direction takes nothing more: senders get [`NexusError::Closed`] with their event. A later
/// [`shutdown`](nexus_core::AsyncEventNexus::shutdown) delivers what it kept and what waits in the
/// direction, in order, or names in its report what it could not; a close
/// ([`cleanup`](nexus_core::AsyncEventNexus::cleanup)) hands them back in its error. An event
/// that crosses after its nexus was dropped is handed back too, when the boundary closes.
#[derive(Debug)]
pub struct BoundaryProducer {
    boundary: AsyncEventBoundary,
    direction: Direction,
    link: ProducerLink,
    task: Option<JoinHandle<()>>,
    /// Whether it is counted among its direction's producers that may still start.
    counted: bool,
}

impl BoundaryProducer {
    fn new(boundary: &AsyncEventBoundary, direction: Direction) -> Self {
        boundary.lane(direction).producers.fetch_add(1, SeqCst);
        Self {
            boundary: boundary.clone(),
            direction,
            link: ProducerLink::new(),
            task: None,
            counted: true,
        }
    }

    /// No longer counted among the producers that may still start (dropped, or closed without
    /// having started): a close of the boundary does not wait for it.
    fn uncount(&mut self) {
        if std::mem::take(&mut self.counted) {
            let lane = self.boundary.lane(self.direction);
            lane.producers.fetch_sub(1, SeqCst);
            lane.wake();
        }
    }
}

impl Drop for BoundaryProducer {
    fn drop(&mut self) {
        self.uncount();
    }
}

#[async_trait]
impl EventSource for BoundaryProducer {
    /// Starts delivering.
    ///
    /// # Errors
    ///
    /// [`NexusError::MisconfiguredEventProducer`] with no nexus; [`NexusError::MultipleStart`]
    /// when a producer of this direction already started.
    async fn start(&mut self) -> Result<(), NexusError> {
        self.link.begin(self.name())?;
        let lane = self.boundary.lane(self.direction);
        let taken = lock(&lane.rx).take();
        let Some(rx) = taken else {
            return Err(NexusError::MultipleStart {
                source_name: self.name().to_owned(),
            });
        };
        lane.wake();
        let (boundary, direction, link) =
            (self.boundary.clone(), self.direction, self.link.clone());
        // Made before the task, so that a task aborted before it first runs (a shutdown's
        // deadline passing at once) still settles, in `Pending`'s drop, what waits on the lane.
        let pending = Pending {
            rx,
            kept: None,
            boundary: boundary.clone(),
            direction,
        };
        self.task = Some(tokio::spawn(async move {
            let mut pending = pending;
            let lane = boundary.lane(direction);
            let mut stop = lane.stop.subscribe();
            let mut changed = lane.changed.subscribe();
            loop {
                let event = match pending.kept.take() {
                    Some(event) => event,
                    None => tokio::select! {
                        biased;
                        event = pending.rx.recv() => match event {
                            Some(event) => event,
                            None => break,
                        },
                        _ = stop.wait_for(|stop| *stop) => break,
                    },
                };
                // What is already waiting goes through one lookup of the nexuses.
                let delivery = link.delivery();
                let keeps = may_keep(&link, lane);
                let refused = if keeps && !delivery.takes_events() {
                    Some(event)
                } else {
                    deliver(lane, &delivery, &pending.rx, event, keeps).await
                };
                drop(delivery);
                let Some(event) = refused else { continue };
                // The nexus has stopped: the lane takes nothing more (senders get `Closed` with
                // their event), and the producer keeps what it holds until a shutdown drains
                // it, the lane closes, or the nexus is gone.
                pending.kept = Some(event);
                pending.rx.close();
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|stop| *stop) => break,
                    _ = changed.wait_for(|()| {
                        lane.closed.load(SeqCst) || link.nexus_count() == 0
                    }) => {}
                }
            }
            link.finish();
        }));
        Ok(())
    }

    /// Refuses new events on this producer's direction and delivers what is already on it;
    /// events it could not deliver come back inside the error. Given up (at a shutdown's
    /// deadline), it ends the delivery under way at once, and what is left is handed back by
    /// [`close`](EventSource::close).
    async fn drain(&mut self) -> Result<(), NexusError> {
        let Some(task) = &self.task else {
            return Ok(());
        };
        if tokio::task::try_id() == Some(task.id()) {
            // A handler this producer is calling is shutting its nexus down: its task cannot
            // wait for itself.
            return Err(NexusError::source(
                self.name(),
                "drain",
                "called from the producer's own task: the events it holds were not waited for",
            ));
        }
        let abort = AbortOnDrop::new(task);
        let failures = self.boundary.lane(self.direction).close().await;
        abort.disarm();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(NexusError::CloseFailed { failures })
        }
    }

    /// Closes the whole boundary (see [`AsyncEventBoundary::close`]). A producer closed without
    /// having started will not start: the close does not wait for it, and hands back what waits
    /// in its direction if no other producer of it may still start.
    async fn close(&mut self) -> Result<(), NexusError> {
        if self.task.is_none() {
            self.uncount();
        }
        self.boundary.close().await
    }

    fn name(&self) -> &str {
        match self.direction {
            Direction::Forward => "AsyncEventBoundary producer",
            Direction::Reply => "AsyncEventBoundary reply producer",
        }
    }
}

impl EventProducer for BoundaryProducer {
    fn link(&self) -> &ProducerLink {
        &self.link
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lane whose producer has started: its receiver, as the producer's task holds it.
    fn started(boundary: &AsyncEventBoundary) -> Pending {
        let rx = lock(&boundary.shared.forward.rx)
            .take()
            .expect("not started");
        Pending {
            rx,
            kept: None,
            boundary: boundary.clone(),
            direction: Direction::Forward,
        }
    }

    /// A sender on another thread puts events in as fast as it can while the producer is
    /// given up: every event the lane accepted is then settled, none left on a queue no one
    /// reads. (Closing a queue whose senders check for room and then put in, as two steps,
    /// lets one put in after the close and its drain.)
    #[test]
    fn every_event_accepted_as_the_producer_is_given_up_is_settled() {
        for round in 0..50_000 {
            let boundary = AsyncEventBoundary::new(1_024);
            let pending = started(&boundary);
            let go = Arc::new(std::sync::Barrier::new(2));
            let sender = std::thread::spawn({
                let (boundary, go) = (boundary.clone(), go.clone());
                move || {
                    go.wait();
                    let lane = boundary.lane(Direction::Forward);
                    for id in 0.. {
                        match lane.offer(Event::new(id, 7, 0, "")) {
                            Ok(None) => {}
                            // Full: not accepted after all; tried again.
                            Ok(Some(_)) => lane.uncount(),
                            Err(_) => break,
                        }
                    }
                }
            });
            go.wait();
            // The producer is given up while the sender is putting events in.
            let lane = boundary.lane(Direction::Forward);
            while lane.accepted.load(SeqCst) < 1 + round % 32 {
                std::hint::spin_loop();
            }
            drop(pending);
            sender.join().expect("the sender");
            assert_eq!(
                lane.settled.load(SeqCst),
                lane.accepted.load(SeqCst),
                "round {round}: an accepted event was left unsettled"
            );
        }
    }

    /// The same on one thread, step by step: a sender waiting for room is granted it as the
    /// producer takes an event, and the producer is given up before the sender runs again. The
    /// sender's event comes back to it, or in the close's error, and the close returns.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn an_event_a_waiting_sender_puts_in_as_the_producer_is_given_up_is_handed_back() {
        let boundary = AsyncEventBoundary::new(1);
        let lane = boundary.lane(Direction::Forward);
        let pending = started(&boundary);
        boundary
            .cross(Direction::Forward, Event::new(1, 7, 0, "first"))
            .await
            .expect("room for the first");
        // The lane is full: the second waits for room.
        let mut waiting =
            Box::pin(boundary.cross(Direction::Forward, Event::new(2, 7, 0, "second")));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        // The producer takes the first and delivers it, which makes room for the second...
        let first = pending.rx.try_recv().expect("the first waits");
        assert_eq!(first.id, 1);
        lane.settle(Ok(()));
        // ... but is given up before the second's sender runs again.
        drop(pending);
        // The second is handed back to its sender, or settled as not delivered: never lost.
        let sent = waiting.as_mut().poll(&mut cx);
        let handed_back = match sent {
            Poll::Ready(Err(NexusError::Closed { event, .. })) => Some(event.id),
            Poll::Ready(Ok(())) => None,
            other => panic!("the sender should have finished: {other:?}"),
        };
        let closed = tokio::time::timeout(Duration::from_secs(60), lane.close())
            .await
            .expect("the close waits for an event no one holds");
        let failed: Vec<u64> = closed
            .into_iter()
            .filter_map(|err| err.into_event().map(|event| event.id))
            .collect();
        assert_eq!(
            handed_back.into_iter().chain(failed).collect::<Vec<_>>(),
            [2],
            "the second is handed back once"
        );
    }
}

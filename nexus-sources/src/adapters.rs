//! Sources made from what a program already has: a stream, a closure, a channel.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use nexus_core::channel::{Bounded, Overflow, Sent, TrySendError};
use nexus_core::{
    BoxStream, Delivery, Event, EventConverter, EventFactory, EventProducer, EventSource,
    NexusError, ProducerLink, SimpleEventConverter, async_trait,
};
use tokio::sync::watch;

use nexus_core::AbortOnDrop;
use tokio::task::JoinHandle;

/// A converter from any async stream of events; the stream's end means "no more events".
///
/// ```
/// use nexus_core::{AsyncEventNexus, Event};
/// use nexus_sources::StreamConverter;
///
/// let events = futures_util::stream::iter((1..=3).map(|id| Event::new(id, 7, 0, "from a stream")));
/// let nexus = AsyncEventNexus::new();
/// nexus.register(StreamConverter::new(events))?;
/// # Ok::<(), nexus_core::NexusError>(())
/// ```
pub struct StreamConverter {
    stream: BoxStream<'static, Event>,
}

impl StreamConverter {
    /// Wraps `stream`.
    pub fn new(stream: impl Stream<Item = Event> + Send + 'static) -> Self {
        Self {
            stream: Box::pin(stream),
        }
    }
}

impl fmt::Debug for StreamConverter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamConverter")
    }
}

impl EventSource for StreamConverter {
    fn name(&self) -> &str {
        "StreamConverter"
    }
}

impl EventConverter for StreamConverter {
    fn event_generator(&mut self, _factory: EventFactory) -> BoxStream<'_, Event> {
        Box::pin(self.stream.as_mut())
    }
}

/// A converter written as a generator: `make` receives the nexus's event factory and returns
/// the stream (an `async_stream::stream!` block, for instance). The original's `EventConverter`
/// without a type of your own.
///
/// ```
/// use std::time::Duration;
/// use nexus_core::AsyncEventNexus;
/// use nexus_sources::generator;
///
/// let countdown = generator(|factory| async_stream::stream! {
///     for n in (0..3).rev() {
///         tokio::time::sleep(Duration::from_millis(100)).await;
///         yield factory.create_event(n, 7);
///     }
/// });
/// AsyncEventNexus::new().register(countdown)?;
/// # Ok::<(), nexus_core::NexusError>(())
/// ```
pub fn generator<F, S>(make: F) -> GeneratorConverter<F>
where
    F: FnMut(EventFactory) -> S + Send + 'static,
    S: Stream<Item = Event> + Send + 'static,
{
    GeneratorConverter { make }
}

/// A converter from a generator function; see [`generator`].
pub struct GeneratorConverter<F> {
    make: F,
}

impl<F> fmt::Debug for GeneratorConverter<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GeneratorConverter")
    }
}

impl<F: Send + 'static> EventSource for GeneratorConverter<F> {
    fn name(&self) -> &str {
        "GeneratorConverter"
    }
}

impl<F, S> EventConverter for GeneratorConverter<F>
where
    F: FnMut(EventFactory) -> S + Send + 'static,
    S: Stream<Item = Event> + Send + 'static,
{
    fn event_generator(&mut self, factory: EventFactory) -> BoxStream<'_, Event> {
        Box::pin((self.make)(factory))
    }
}

/// A converter from a closure called for each event: it returns a future of the next event, or
/// of `None` when there are no more.
///
/// ```
/// use nexus_core::{AsyncEventNexus, Event};
/// use nexus_sources::converter_fn;
///
/// let mut id = 1000;
/// let converter = converter_fn(move || {
///     id += 1;
///     let event = (id <= 1003).then(|| Event::new(id, 50, 0, "hi"));
///     async move { event }
/// });
/// AsyncEventNexus::new().register(converter)?;
/// # Ok::<(), nexus_core::NexusError>(())
/// ```
pub fn converter_fn<F, Fut>(next: F) -> FnConverter<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Option<Event>> + Send,
{
    FnConverter { next }
}

/// A converter from a closure; see [`converter_fn`].
pub struct FnConverter<F> {
    next: F,
}

impl<F> fmt::Debug for FnConverter<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnConverter")
    }
}

impl<F: Send + 'static> EventSource for FnConverter<F> {
    fn name(&self) -> &str {
        "FnConverter"
    }
}

#[async_trait]
impl<F, Fut> SimpleEventConverter for FnConverter<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Option<Event>> + Send,
{
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        (self.next)().await.ok_or(NexusError::NoMoreEvents)
    }
}

/// How many waiting events a `ChannelProducer` delivers with one lookup of its nexuses.
const BATCH: usize = 64;

/// A producer fed through a channel: any task or thread holding an [`EventSender`] sends
/// events, and the producer ingests them into its nexuses in the order they were sent.
///
/// The channel is bounded. When it is full, `send` waits (the default, [`Overflow::Wait`]), or,
/// if chosen with [`with_overflow`](Self::with_overflow), the oldest or the new event is dropped,
/// counted in the nexus's [`NexusStats::dropped`](nexus_core::NexusStats::dropped) and reported
/// through `tracing`. Events sent before the nexus starts wait in the channel. When every sender
/// is dropped and the channel is empty, the producer has finished.
///
/// The producer takes what is waiting out of the channel at once, up to 64 events, and delivers
/// them in order; so up to `capacity` events wait in the channel and up to 64 more in the
/// producer. Those it holds when it is closed are counted as dropped, as those left in the
/// channel are.
///
/// Once its nexus has stopped, the producer closes its channel to senders (they get
/// [`NexusError::Closed`] with their event, as during a shutdown) and keeps what it holds and
/// what is left in the channel: a [`shutdown`](nexus_core::AsyncEventNexus::shutdown) then
/// delivers it in order, or names in its report what it could not; closing the producer without
/// a shutdown leaves it undelivered, counted as dropped. Should the nexus stop in the middle of
/// a run, the event it refused (counted there as returned) is kept too, first in line; into
/// several nexuses, that event is left undelivered instead, so that none gets it twice.
///
/// ```
/// use nexus_core::{AsyncEventNexus, Event, EventQueue};
/// use nexus_sources::ChannelProducer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nexus_core::NexusError> {
/// let nexus = AsyncEventNexus::new();
/// nexus.add_handler(3, |e: Event, _q: EventQueue| println!("{e}"))?;
/// let (producer, sender) = ChannelProducer::new(100);
/// nexus.add_producer(producer)?;
///
/// std::thread::spawn(move || {
///     // A thread outside the runtime sends without awaiting.
///     sender.blocking_send(Event::new(1, 3, 0, "from a thread")).expect("nexus gone");
/// });
/// nexus.loop_until_exhausted().await // ends once the sender is dropped and its event handled
/// # }
/// ```
#[derive(Debug)]
pub struct ChannelProducer {
    link: ProducerLink,
    channel: Bounded<Event>,
    task: Option<JoinHandle<()>>,
    /// What the producer's task is asked to do: [`RUN`], [`DRAIN`] or [`STOP`].
    mode: Arc<watch::Sender<u8>>,
}

/// The producer's task delivers what comes.
const RUN: u8 = 0;
/// The channel is closed to senders; the task delivers what is left, then ends.
const DRAIN: u8 = 1;
/// The task ends after the event it is delivering; what it holds is left undelivered.
const STOP: u8 = 2;

/// The sending end of a [`ChannelProducer`]: cheap to clone, usable from any task or thread.
#[derive(Clone, Debug)]
pub struct EventSender {
    senders: Arc<Senders>,
}

/// Closes the channel when the last sender is dropped.
#[derive(Debug)]
struct Senders {
    channel: Bounded<Event>,
    link: ProducerLink,
}

impl Drop for Senders {
    fn drop(&mut self) {
        self.channel.close();
    }
}

fn closed(event: Event) -> NexusError {
    NexusError::Closed {
        what: "channel producer".to_owned(),
        event: Box::new(event),
    }
}

impl EventSender {
    #[inline]
    fn sent(&self, sent: Result<Sent<Event>, Event>) -> Result<(), NexusError> {
        match sent {
            Ok(Sent::Queued) => Ok(()),
            Ok(Sent::DroppedOldest(event) | Sent::DroppedNewest(event)) => {
                self.senders.link.record_dropped(&event);
                Ok(())
            }
            Err(event) => Err(closed(event)),
        }
    }

    /// Sends `event`, waiting while the channel is full (unless its overflow choice drops).
    ///
    /// # Errors
    ///
    /// [`NexusError::Closed`], handing the event back, once the producer was closed or dropped.
    #[allow(
        clippy::manual_async_fn,
        reason = "an `async fn` copies its arguments into its body when first polled"
    )]
    pub fn send(&self, event: Event) -> impl Future<Output = Result<(), NexusError>> + Send + '_ {
        // A block rather than an `async fn`, whose first poll would copy the event from where
        // the caller wrote it: a copy that waits for the caller's stores.
        async move {
            let sent = self.senders.channel.send(event).await;
            self.sent(sent)
        }
    }

    /// Sends `event` from outside the async runtime (a plain thread, or a closure given to
    /// `tokio::task::spawn_blocking`), blocking while the channel is full. Inside an async task
    /// use [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send); and [`NexusError::BlockingInRuntime`], handing the event back,
    /// when called from a thread that runs async tasks, where blocking could wait forever for
    /// the very task that would make room. tokio refuses to block there, and its message about
    /// it goes to the panic hook (standard error) as it is caught.
    pub fn blocking_send(&self, event: Event) -> Result<(), NexusError> {
        let channel = &self.senders.channel;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self.sent(channel.blocking_send(event));
        };
        // tokio checks, before the send starts, that this thread may block.
        let mut slot = Some(event);
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(async {
                match slot.take() {
                    Some(event) => Some(channel.send(event).await),
                    None => None,
                }
            })
        }));
        match (attempt, slot.take()) {
            (Ok(Some(sent)), _) => self.sent(sent),
            (Err(_refused), Some(event)) => Err(NexusError::BlockingInRuntime {
                what: "EventSender::blocking_send",
                event: Box::new(event),
            }),
            (Err(panic), None) => std::panic::resume_unwind(panic),
            (Ok(None), _) => Ok(()),
        }
    }

    /// Sends `event` if the channel has room now (or its overflow choice makes room).
    ///
    /// # Errors
    ///
    /// [`NexusError::QueueFull`] when the channel is full and senders wait,
    /// [`NexusError::Closed`] when the producer is gone; both hand the event back.
    pub fn try_send(&self, event: Event) -> Result<(), NexusError> {
        let channel = &self.senders.channel;
        match channel.try_send(event) {
            Ok(sent) => self.sent(Ok(sent)),
            Err(TrySendError::Full(event)) => Err(NexusError::QueueFull {
                event: Box::new(event),
                capacity: channel.capacity(),
            }),
            Err(TrySendError::Closed(event)) => self.sent(Err(event)),
        }
    }
}

impl ChannelProducer {
    /// A producer whose channel holds `capacity` events (at least 1) and makes senders wait
    /// when full, and its first sender.
    pub fn new(capacity: usize) -> (Self, EventSender) {
        Self::with_overflow(capacity, Overflow::Wait)
    }

    /// As [`new`](Self::new), with the given choice for a full channel.
    pub fn with_overflow(capacity: usize, overflow: Overflow) -> (Self, EventSender) {
        Self::from_channel(Bounded::new(capacity, overflow))
    }

    /// As [`with_overflow`](Self::with_overflow), delivering the most urgent event first (the
    /// lowest [`priority`](Event::priority) number; events of equal priority in the order they
    /// were sent), with aging: an event that has waited `max_wait` in the channel goes before
    /// every event sent after it, whatever their priorities. So however many urgent events
    /// keep coming, an event waits at most `max_wait`, then for the overdue events sent before
    /// it (at most `capacity`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use nexus_core::channel::Overflow;
    /// use nexus_sources::ChannelProducer;
    ///
    /// let (producer, sender) =
    ///     ChannelProducer::with_priority(64, Overflow::Wait, Duration::from_millis(100));
    /// # drop((producer, sender));
    /// ```
    pub fn with_priority(
        capacity: usize,
        overflow: Overflow,
        max_wait: Duration,
    ) -> (Self, EventSender) {
        Self::from_channel(Bounded::ranked(
            capacity,
            overflow,
            max_wait,
            |event: &Event| i64::from(event.priority),
        ))
    }

    fn from_channel(channel: Bounded<Event>) -> (Self, EventSender) {
        let link = ProducerLink::new();
        let producer = Self {
            link: link.clone(),
            channel: channel.clone(),
            task: None,
            mode: Arc::new(watch::channel(RUN).0),
        };
        let senders = Arc::new(Senders { channel, link });
        (producer, EventSender { senders })
    }
}

impl Drop for ChannelProducer {
    fn drop(&mut self) {
        // Senders learn at once that nobody will take their events.
        self.channel.close();
    }
}

/// Events a channel producer took from its channel and has yet to deliver; those left when its
/// task ends (the producer was closed) are left undelivered ([`ProducerLink::leave`]).
struct Taken {
    events: VecDeque<Event>,
    link: ProducerLink,
}

impl Drop for Taken {
    fn drop(&mut self) {
        for event in self.events.drain(..) {
            self.link.leave(event);
        }
    }
}

/// Delivers what comes through the channel until it is closed and empty, or the producer is
/// told to stop (between two events, never during a delivery).
async fn deliver(link: ProducerLink, channel: Bounded<Event>, mode: watch::Receiver<u8>) {
    let mut mode = mode;
    // In order, events are taken in runs. By priority, one at a time, so that each delivery
    // goes to the most urgent event waiting then: the first is waited for, and the next ones of
    // the run are taken as their turn comes, while some are waiting.
    let ranked = channel.is_ranked();
    let batch = if ranked { 1 } else { BATCH };
    let mut taken = Taken {
        events: VecDeque::with_capacity(BATCH),
        link: link.clone(),
    };
    loop {
        // What is waiting is taken at once (a bounded run, so that a busy channel does not keep
        // a dropped nexus alive for long); events kept back while the nexus had stopped go
        // first.
        let moved = if taken.events.is_empty() {
            tokio::select! {
                biased;
                _ = mode.wait_for(|m| *m == STOP) => return,
                moved = channel.recv_many(&mut taken.events, batch) => moved,
            }
        } else if *mode.borrow_and_update() == STOP {
            return;
        } else {
            taken.events.len()
        };
        if moved == 0 {
            // Closed and empty: every sender is gone, or the producer drained.
            link.finish();
            return;
        }
        // The mode this run begins under: a shutdown lets the nexus take producers' events
        // before it asks them to drain, so a nexus that takes none under `DRAIN` means the drain
        // was cut short.
        let began_under = *mode.borrow();
        let delivery = link.delivery();
        if !delivery.takes_events() {
            drop(delivery);
            if keep_while_stopped(&channel, &mut mode, began_under).await {
                continue;
            }
            return;
        }
        let refused = deliver_run(
            &delivery,
            &channel,
            &mut taken.events,
            &mut mode,
            ranked,
            moved,
        )
        .await;
        drop(delivery);
        if let Some(event) = refused {
            keep(&link, &mut taken.events, event);
            if !keep_while_stopped(&channel, &mut mode, began_under).await {
                return;
            }
        }
    }
}

/// Delivers the events taken, and, by priority, those next in the channel up to `BATCH` in
/// all; `moved` were taken already. Stops early when the producer is told to stop (`has_changed`
/// is one atomic load: the mode's lock is taken only when it changed), and hands back an event
/// the nexus refused because it had stopped.
async fn deliver_run(
    delivery: &Delivery<'_>,
    channel: &Bounded<Event>,
    events: &mut VecDeque<Event>,
    mode: &mut watch::Receiver<u8>,
    ranked: bool,
    moved: usize,
) -> Option<Event> {
    let mut run = moved;
    // A stop is kept, so that nothing more is taken after it.
    let mut stopped = false;
    let mut next = || {
        stopped =
            stopped || (mode.has_changed().unwrap_or(true) && *mode.borrow_and_update() == STOP);
        if stopped {
            return None;
        }
        match events.pop_front() {
            Some(event) => Some(event),
            None if ranked && run < BATCH => {
                run += 1;
                channel.try_recv()
            }
            None => None,
        }
    };
    while let Err(err) = delivery.distribute_run(&mut next).await {
        if let NexusError::NotRunning { .. } = err {
            // Stopped since the run began.
            return err.into_event();
        }
        // Any other refusal was handed back and counted by the nexus (as returned).
        tracing::error!(error = %err, "channel producer could not deliver an event");
    }
    None
}

/// Keeps an event its nexus refused because it had stopped: at the front, to go first when the
/// producer is drained. Into several nexuses it is left undelivered instead, so that those that
/// took it do not get it twice.
fn keep(link: &ProducerLink, events: &mut VecDeque<Event>, event: Event) {
    if link.nexus_count() > 1 {
        link.leave(event);
    } else {
        events.push_front(event);
    }
}

/// The nexus takes no events now (it has stopped, or a shutdown's drain was cut short): closes
/// the channel to senders, who get [`NexusError::Closed`] with their event as during a drain,
/// keeps what the producer holds, and waits for the mode to move on from `began_under`. `true`
/// when the producer is to drain what it holds; `false` when it is to stop, or is gone.
///
/// A stop that came as the run began (`began_under` is `STOP` already) ends the wait at once:
/// no mode comes after it, and `close` waits for this task.
async fn keep_while_stopped(
    channel: &Bounded<Event>,
    mode: &mut watch::Receiver<u8>,
    began_under: u8,
) -> bool {
    channel.close();
    mode.wait_for(|m| *m > began_under || *m == STOP)
        .await
        .is_ok_and(|m| *m != STOP)
}

#[async_trait]
impl EventSource for ChannelProducer {
    /// Starts ingesting what is sent.
    ///
    /// # Errors
    ///
    /// [`NexusError::MisconfiguredEventProducer`] with no nexus; [`NexusError::MultipleStart`]
    /// when started before.
    async fn start(&mut self) -> Result<(), NexusError> {
        self.link.begin(self.name())?;
        if self.task.is_some() {
            return Err(NexusError::MultipleStart {
                source_name: self.name().to_owned(),
            });
        }
        let task = deliver(
            self.link.clone(),
            self.channel.clone(),
            self.mode.subscribe(),
        );
        self.task = Some(tokio::spawn(task));
        Ok(())
    }

    /// Closes the channel to senders (they get [`NexusError::Closed`] with their event), then
    /// delivers what the channel and the producer hold, and returns when that is done.
    async fn drain(&mut self) -> Result<(), NexusError> {
        self.channel.close();
        self.mode.send_if_modified(|mode| {
            let was_running = *mode == RUN;
            if was_running {
                *mode = DRAIN;
            }
            was_running
        });
        if let Some(task) = &self.task
            && tokio::task::try_id() == Some(task.id())
        {
            // A handler this producer is calling is shutting its nexus down: its task cannot wait
            // for itself, so what it still holds is not delivered by this drain.
            return Err(NexusError::source(
                self.name(),
                "drain",
                "called from the producer's own task: the events it holds were not waited for",
            ));
        }
        if let Some(task) = &mut self.task {
            // Given up, the task is aborted and stays here for `close` to wait for.
            let abort = AbortOnDrop::new(task);
            let _ = task.await;
            abort.disarm();
            self.task = None;
        }
        Ok(())
    }

    /// Stops ingesting: the event being delivered is delivered (its handlers are never cut
    /// short), then the events taken from the channel but not yet delivered, and those still
    /// in it, are left undelivered: counted as dropped and reported
    /// ([`ProducerLink::leave`]).
    async fn close(&mut self) -> Result<(), NexusError> {
        self.mode.send_replace(STOP);
        self.channel.close();
        if let Some(task) = self.task.take() {
            // Unless this is that task (a handler it called is closing the nexus): it stops
            // once that handler returns, and leaves what it holds then.
            if tokio::task::try_id() != Some(task.id()) {
                let _ = task.await;
            }
        }
        while let Some(event) = self.channel.try_recv() {
            self.link.leave(event);
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "ChannelProducer"
    }
}

impl EventProducer for ChannelProducer {
    fn link(&self) -> &ProducerLink {
        &self.link
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The producer's task read the mode as a run began, just after `close` set it to `STOP`
    /// from another thread, and found its nexus stopped: it must end, since `close` waits for
    /// it and no mode comes after `STOP`.
    #[tokio::test(start_paused = true)]
    async fn keeping_events_while_stopped_ends_when_the_stop_came_as_the_run_began() {
        let channel = Bounded::new(4, Overflow::Wait);
        let (_mode, mut watching) = watch::channel(STOP);
        let kept = tokio::time::timeout(
            Duration::from_secs(60),
            keep_while_stopped(&channel, &mut watching, STOP),
        )
        .await;
        assert_eq!(kept, Ok(false), "the wait must end at once, told to stop");
    }

    /// Stopped under `RUN` or `DRAIN`, the producer keeps its events until the mode moves on:
    /// to drain them (`true`), or to stop (`false`).
    #[tokio::test(start_paused = true)]
    async fn keeping_events_while_stopped_waits_for_the_next_mode() {
        for (began_under, next, drains) in
            [(RUN, DRAIN, true), (RUN, STOP, false), (DRAIN, STOP, false)]
        {
            let channel = Bounded::new(4, Overflow::Wait);
            let (mode, mut watching) = watch::channel(began_under);
            let mut kept = std::pin::pin!(keep_while_stopped(&channel, &mut watching, began_under));
            assert!(
                tokio::time::timeout(Duration::from_secs(60), kept.as_mut())
                    .await
                    .is_err(),
                "under {began_under} the wait goes on until the mode moves"
            );
            mode.send_replace(next);
            assert_eq!(kept.await, drains, "from {began_under} to {next}");
        }
    }
}

//! Where events come from: [`EventSource`], the pull-mode converters
//! ([`SimpleEventConverter`], [`EventConverter`]) and the push-mode [`EventProducer`] with its
//! [`ProducerLink`].

use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use async_trait::async_trait;
use futures_core::stream::BoxStream;

use crate::error::NexusError;
use crate::event::Event;
use crate::factory::EventFactory;
use crate::nexus::{AsyncEventNexus, Check, WeakNexus};

/// Anything that creates events. Both methods are optional.
///
/// A nexus awaits [`start`](Self::start) of every registered source, all at once, when its loop
/// starts, and [`close`](Self::close) in [`cleanup`](crate::AsyncEventNexus::cleanup).
#[async_trait]
pub trait EventSource: Send + 'static {
    /// Gets the source ready to make events. A producer begins emitting here and not before.
    ///
    /// # Errors
    ///
    /// A source that cannot start says why; the nexus's loop ends with that error.
    async fn start(&mut self) -> Result<(), NexusError> {
        Ok(())
    }

    /// Releases what the source holds. Called once, by `cleanup`.
    ///
    /// A producer's `close` stops it from taking new work and never cuts short the delivery of
    /// an event under way; events it still holds are left undelivered, each one counted in
    /// [`NexusStats::dropped`](crate::NexusStats::dropped) through
    /// [`ProducerLink::leave`].
    ///
    /// # Errors
    ///
    /// A failure is reported by `cleanup`, which still closes every other source.
    async fn close(&mut self) -> Result<(), NexusError> {
        Ok(())
    }

    /// For a producer: stops taking new work, then delivers what it already holds and returns
    /// once that is done. [`shutdown`](crate::AsyncEventNexus::shutdown) awaits this for every
    /// producer before closing it, and the nexus takes the producer's events meanwhile although
    /// its loop has stopped. Should the shutdown's deadline pass first, this future is dropped:
    /// the producer then ends what it was doing at once (an `ingest` dropped mid-dispatch is
    /// counted as cancelled by the nexus) and its `close` counts what is left.
    ///
    /// The default does nothing: a source without a buffer of its own has nothing to drain.
    ///
    /// # Errors
    ///
    /// A failure is listed in the shutdown's report.
    async fn drain(&mut self) -> Result<(), NexusError> {
        Ok(())
    }

    /// Whether an event of this source that fails (under
    /// [`ErrorPolicy::Propagate`](crate::ErrorPolicy)) ends the nexus's loop, which then returns
    /// that event's error. `true` by default, as in the original.
    ///
    /// A source of events from the network returns `false`, so that a remote peer cannot stop
    /// the nexus: its failed events (unhandled, or failing in their handler) are counted for it
    /// ([`NexusStats::per_source_failed`](crate::NexusStats::per_source_failed)), reported
    /// through `tracing`, and skipped. Under the other policies no event ends the loop anyway.
    fn failures_end_loop(&self) -> bool {
        true
    }

    /// The source's name in error messages: its type name unless overridden.
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }
}

/// A pull-mode source: the nexus asks it for one event after another.
///
/// # Examples
///
/// The original's `MyEventConverter`, counting ids from 1000:
///
/// ```
/// use std::time::Duration;
/// use nexus_core::{async_trait, Event, EventSource, NexusError, SimpleEventConverter};
///
/// struct MyEventConverter { id: u64 }
///
/// impl EventSource for MyEventConverter {}
///
/// #[async_trait]
/// impl SimpleEventConverter for MyEventConverter {
///     async fn obtain_event(&mut self) -> Result<Event, NexusError> {
///         tokio::time::sleep(Duration::from_millis(200)).await;
///         self.id += 1;
///         Ok(Event::new(self.id, 50, 0, "hi"))
///     }
/// }
///
/// let nexus = nexus_core::AsyncEventNexus::new();
/// nexus.register(MyEventConverter { id: 1000 }).unwrap();
/// ```
#[async_trait]
pub trait SimpleEventConverter: EventSource {
    /// Waits for and returns the next event.
    ///
    /// # Errors
    ///
    /// [`NexusError::NoMoreEvents`] when the converter is exhausted: the nexus drops it and goes
    /// on with its other sources. Any other error ends the nexus's loop with that error.
    async fn obtain_event(&mut self) -> Result<Event, NexusError>;
}

/// A pull-mode source written as a generator: an async stream of events, so that its state lives
/// in the generator rather than in fields. The stream's end means "no more events".
///
/// # Examples
///
/// ```
/// use futures_core::stream::BoxStream;
/// use nexus_core::{Event, EventConverter, EventFactory, EventSource};
///
/// struct Countdown;
///
/// impl EventSource for Countdown {}
///
/// impl EventConverter for Countdown {
///     fn event_generator(&mut self, factory: EventFactory) -> BoxStream<'_, Event> {
///         Box::pin(async_stream::stream! {
///             for n in (0..3).rev() {
///                 yield factory.create_event(n, 7);
///             }
///         })
///     }
/// }
///
/// nexus_core::AsyncEventNexus::new().register(Countdown).unwrap();
/// ```
pub trait EventConverter: EventSource {
    /// Returns the stream of events. Called once, when the loop starts; `factory` is the nexus's,
    /// for sequential ids ([`EventFactory::next_id`]).
    fn event_generator(&mut self, factory: EventFactory) -> BoxStream<'_, Event>;
}

/// A push-mode source: it emits events when it has them, through its [`ProducerLink`].
///
/// Implement [`EventSource::start`] to begin emitting (usually by spawning a task that holds a
/// clone of the link) and [`EventSource::close`] to stop. The nexus checks the link before it
/// calls `start`: a producer with no nexus fails with
/// [`NexusError::MisconfiguredEventProducer`], and one that emits before it was started gets the
/// same error.
///
/// # Examples
///
/// ```
/// use nexus_core::{async_trait, EventProducer, EventSource, NexusError, ProducerLink};
///
/// #[derive(Default)]
/// struct Greeter { link: ProducerLink }
///
/// #[async_trait]
/// impl EventSource for Greeter {
///     async fn start(&mut self) -> Result<(), NexusError> {
///         let link = self.link.clone();
///         tokio::spawn(async move {
///             let event = link.create_event("hello", 12);
///             if let Err(err) = link.distribute_event(event).await {
///                 eprintln!("{err}");
///             }
///         });
///         Ok(())
///     }
/// }
///
/// impl EventProducer for Greeter {
///     fn link(&self) -> &ProducerLink { &self.link }
/// }
///
/// nexus_core::AsyncEventNexus::new().add_producer(Greeter::default()).unwrap();
/// ```
pub trait EventProducer: EventSource {
    /// The producer's link to the nexuses it is registered with.
    fn link(&self) -> &ProducerLink;
}

/// A producer's weak link to the nexuses it sends to, and its event factory.
///
/// Cheap to clone: clones share the list, so a task spawned by the producer reaches every nexus
/// the producer is registered with, including those registered later. The link never keeps a
/// nexus alive.
#[derive(Clone, Debug, Default)]
pub struct ProducerLink {
    shared: Arc<LinkShared>,
}

#[derive(Debug, Default)]
struct LinkShared {
    nexuses: RwLock<Vec<WeakNexus>>,
    /// The nexuses that started this producer and count it among their unfinished sources.
    counted_by: std::sync::Mutex<Vec<WeakNexus>>,
    started: std::sync::atomic::AtomicBool,
    finished: std::sync::atomic::AtomicBool,
    delivered: Arc<std::sync::atomic::AtomicU64>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
    /// Events that failed without ending the loop (see `EventSource::failures_end_loop`).
    failed: Arc<std::sync::atomic::AtomicU64>,
    /// Set when the producer says its failures must not end the loop.
    tolerant: std::sync::atomic::AtomicBool,
    /// Events the producer held and did not deliver ([`ProducerLink::leave`]), for the report
    /// of a shutdown.
    left: std::sync::Mutex<Vec<Event>>,
    factory: OnceLock<EventFactory>,
    name: OnceLock<String>,
}

impl ProducerLink {
    /// A link with no nexus yet; registering the producer adds one.
    pub fn new() -> Self {
        Self::default()
    }

    /// A link whose events are numbered by `factory` rather than by the first nexus's factory.
    pub fn with_factory(factory: EventFactory) -> Self {
        let link = Self::default();
        let _ = link.shared.factory.set(factory);
        link
    }

    /// Adds a nexus to send to. [`AsyncEventNexus::register`] does this; call it directly to
    /// reach a nexus that does not own the producer.
    pub fn add_nexus(&self, nexus: &AsyncEventNexus) {
        let _ = self.shared.factory.get_or_init(|| nexus.event_factory());
        let mut list = self.write();
        list.retain(|w| w.is_alive());
        if !list.iter().any(|w| w.points_to(nexus)) {
            list.push(nexus.downgrade());
        }
    }

    /// How many registered nexuses are still alive.
    pub fn nexus_count(&self) -> usize {
        self.read().iter().filter(|w| w.is_alive()).count()
    }

    /// The factory for this producer's events: the one it was given, else the first nexus's.
    pub fn event_factory(&self) -> EventFactory {
        self.shared.factory.get_or_init(EventFactory::new).clone()
    }

    /// Creates an event with the next id of [`event_factory`](Self::event_factory).
    pub fn create_event(
        &self,
        payload: impl Into<crate::Payload>,
        event_type: impl Into<crate::EventType>,
    ) -> Event {
        self.event_factory().create_event(payload, event_type)
    }

    /// Marks the producer started, after checking it has a nexus to send to.
    ///
    /// The nexus calls this before [`EventSource::start`]; a producer started by other means
    /// should call it first.
    ///
    /// # Errors
    ///
    /// [`NexusError::MisconfiguredEventProducer`] when no live nexus is registered.
    pub fn begin(&self, producer: &str) -> Result<(), NexusError> {
        let _ = self.shared.name.set(producer.to_owned());
        if self.nexus_count() == 0 {
            return Err(self.misconfigured("no nexus registered"));
        }
        self.shared
            .started
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Says that the producer will emit no more events. A nexus running
    /// [`loop_until_exhausted`](AsyncEventNexus::loop_until_exhausted) stops once every source
    /// has finished. Calling it again does nothing.
    pub fn finish(&self) {
        if self
            .shared
            .finished
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let counted: Vec<WeakNexus> = self
            .shared
            .counted_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for nexus in counted.iter().filter_map(WeakNexus::upgrade) {
            nexus.source_finished();
        }
    }

    /// Whether [`finish`](Self::finish) was called.
    pub fn is_finished(&self) -> bool {
        self.shared
            .finished
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// How many events this producer has handed to `distribute_event`.
    pub fn delivered(&self) -> u64 {
        self.shared
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn delivered_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        Arc::clone(&self.shared.delivered)
    }

    pub(crate) fn dropped_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        Arc::clone(&self.shared.dropped)
    }

    /// Records that the producer dropped `event` (its buffer was full and its overflow choice
    /// was to drop): counted in the nexus's [`NexusStats::dropped`](crate::NexusStats::dropped)
    /// and reported through `tracing`.
    pub fn record_dropped(&self, event: &Event) {
        let count = self
            .shared
            .dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        tracing::warn!(id = event.id, event_type = %event.event_type, count, "event dropped: the producer's buffer was full");
    }

    /// Records that the producer leaves `event` undelivered: it still held it when it was
    /// closed, or its nexus stopped taking events. Counted as dropped, reported through
    /// `tracing`, and kept for the report of a [`shutdown`](AsyncEventNexus::shutdown), which
    /// hands it back.
    pub fn leave(&self, event: Event) {
        let count = self
            .shared
            .dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        tracing::warn!(id = event.id, event_type = %event.event_type, count, "event left undelivered by its producer");
        self.shared
            .left
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }

    /// Takes the events left undelivered so far.
    pub(crate) fn take_left(&self) -> Vec<Event> {
        std::mem::take(
            &mut *self
                .shared
                .left
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    pub(crate) fn failed_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        Arc::clone(&self.shared.failed)
    }

    pub(crate) fn set_tolerant(&self, tolerant: bool) {
        self.shared
            .tolerant
            .store(tolerant, std::sync::atomic::Ordering::Release);
    }

    /// How many events the producer dropped.
    pub fn dropped(&self) -> u64 {
        self.shared
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records that `nexus` started this producer and counts it as unfinished.
    pub(crate) fn counted_by(&self, nexus: &AsyncEventNexus) {
        self.shared
            .counted_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(nexus.downgrade());
        if self.is_finished() {
            nexus.source_finished();
        }
    }

    /// Whether [`begin`](Self::begin) has succeeded.
    pub fn is_started(&self) -> bool {
        self.shared
            .started
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Ingests `event` into every registered nexus in turn.
    ///
    /// While a [`shutdown`](AsyncEventNexus::shutdown) drains producers, the nexus still takes
    /// the producer's events, although its loop has stopped.
    ///
    /// An event that fails in its dispatch (unhandled, or its handler failing; only under
    /// [`ErrorPolicy::Propagate`](crate::ErrorPolicy), the others never fail here) ends that
    /// nexus's loop, which returns the event's error, and this returns
    /// [`NexusError::LoopEnded`]; unless the producer said its failures must not end the loop
    /// ([`EventSource::failures_end_loop`]): then the failure is counted for the producer and
    /// returned here, and the loop goes on.
    ///
    /// # Errors
    ///
    /// [`NexusError::MisconfiguredEventProducer`] before the producer was started;
    /// [`NexusError::Closed`], handing the event back, when no registered nexus is alive;
    /// [`NexusError::LoopEnded`] as above; otherwise the first error
    /// of a nexus's [`ingest`](AsyncEventNexus::ingest) (such as
    /// [`NexusError::NotRunning`], handing the event back), after which later nexuses are not
    /// tried.
    pub async fn distribute_event(&self, event: Event) -> Result<(), NexusError> {
        self.delivery().distribute_event(event).await
    }

    /// The nexuses to deliver to, looked up once for a run of events: a producer with several
    /// events at hand (such as a channel it drains) delivers them all through one `Delivery`
    /// instead of looking the nexuses up for each. Hold it only while the run lasts: it keeps
    /// the nexuses alive.
    ///
    /// ```
    /// use nexus_core::{Event, NexusError, ProducerLink};
    ///
    /// /// Delivers a batch of events with one lookup of the producer's nexuses.
    /// async fn deliver_all(link: &ProducerLink, events: Vec<Event>) -> Result<(), NexusError> {
    ///     let delivery = link.delivery();
    ///     for event in events {
    ///         delivery.distribute_event(event).await?;
    ///     }
    ///     Ok(())
    /// }
    /// # fn main() { let _ = deliver_all; }
    /// ```
    pub fn delivery(&self) -> Delivery<'_> {
        Delivery {
            link: self,
            targets: self.targets(),
        }
    }

    /// The live nexuses, without allocating in the common case of one.
    fn targets(&self) -> Targets {
        let list = self.read();
        match list.as_slice() {
            [only] => Targets::One(only.upgrade()),
            many => Targets::Many(many.iter().filter_map(WeakNexus::upgrade).collect()),
        }
    }

    /// One rule for a producer's event that `nexus` did not take: a refusal is the producer's to
    /// handle; a failure in dispatch ends the nexus's loop, unless the producer is tolerant.
    #[cold]
    fn failed(&self, nexus: &AsyncEventNexus, err: NexusError) -> NexusError {
        if err.is_refusal() {
            return err;
        }
        if self
            .shared
            .tolerant
            .load(std::sync::atomic::Ordering::Acquire)
        {
            self.shared
                .failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(error = %err, "a producer's event failed; the producer goes on");
            return err;
        }
        let ended = NexusError::LoopEnded {
            reason: err.to_string(),
        };
        nexus.end_loop(err);
        ended
    }

    fn misconfigured(&self, reason: &'static str) -> NexusError {
        NexusError::MisconfiguredEventProducer {
            producer: self.name(),
            reason,
        }
    }

    /// The producer's name, once it began.
    fn name(&self) -> String {
        self.shared
            .name
            .get()
            .cloned()
            .unwrap_or_else(|| "producer".to_owned())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<WeakNexus>> {
        self.shared
            .nexuses
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<WeakNexus>> {
        self.shared
            .nexuses
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Aborts a task if dropped before [`disarm`](Self::disarm).
///
/// For a producer's [`EventSource::drain`]: a drain waits for the producer's task, and a drain
/// given up (dropped at a shutdown's deadline) must end that task at once.
///
/// ```
/// use nexus_core::AbortOnDrop;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let task = tokio::spawn(std::future::pending::<()>());
/// drop(AbortOnDrop::new(&task)); // given up: the task is aborted
/// assert!(task.await.unwrap_err().is_cancelled());
///
/// let mut task = tokio::spawn(async {});
/// let abort = AbortOnDrop::new(&task);
/// (&mut task).await.unwrap();
/// abort.disarm(); // the wait is over: nothing to abort
/// # }
/// ```
#[derive(Debug)]
pub struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl AbortOnDrop {
    /// A guard for `task`.
    pub fn new<T>(task: &tokio::task::JoinHandle<T>) -> Self {
        Self(Some(task.abort_handle()))
    }

    /// The wait is over: nothing to abort.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// A source's counters, shared with the nexus's statistics.
#[derive(Clone, Debug, Default)]
pub(crate) struct SourceCounters {
    pub(crate) delivered: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) dropped: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) failed: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Debug)]
enum Targets {
    One(Option<AsyncEventNexus>),
    Many(Vec<AsyncEventNexus>),
}

/// The nexuses of a [`ProducerLink`], looked up once for a run of events
/// ([`ProducerLink::delivery`]).
#[derive(Debug)]
pub struct Delivery<'a> {
    link: &'a ProducerLink,
    targets: Targets,
}

impl Delivery<'_> {
    /// Whether every nexus of the run takes a producer's events now: its loop is starting or
    /// running, or a [`shutdown`](AsyncEventNexus::shutdown) is draining producers. A producer
    /// that finds it does not can keep its events, rather than have them refused (which hands
    /// each back in [`NexusError::NotRunning`], counted as returned). Also `false` when every
    /// nexus of the link was dropped.
    pub fn takes_events(&self) -> bool {
        match &self.targets {
            Targets::One(Some(nexus)) => nexus.takes_producer_events(),
            Targets::One(None) => false,
            Targets::Many(targets) => {
                !targets.is_empty() && targets.iter().all(AsyncEventNexus::takes_producer_events)
            }
        }
    }

    /// Ingests `event` into every nexus of the run in turn, as
    /// [`ProducerLink::distribute_event`] does.
    ///
    /// # Errors
    ///
    /// As [`ProducerLink::distribute_event`].
    pub async fn distribute_event(&self, event: Event) -> Result<(), NexusError> {
        let link = self.link;
        link.shared
            .delivered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !link.is_started() {
            return Err(link.misconfigured("distribute_event called before start"));
        }
        let targets = match &self.targets {
            Targets::One(Some(nexus)) => {
                return match nexus.ingest_from_producer(event).await {
                    Ok(()) => Ok(()),
                    Err(err) => Err(link.failed(nexus, err)),
                };
            }
            Targets::One(None) => &[][..],
            Targets::Many(targets) => targets.as_slice(),
        };
        let Some((last, rest)) = targets.split_last() else {
            // Nothing will ever take it: handed back, as a closed nexus hands back what it refuses.
            return Err(NexusError::Closed {
                what: format!("{} (every nexus it fed was dropped)", link.name()),
                event: Box::new(event),
            });
        };
        for nexus in rest {
            if let Err(err) = nexus.ingest_from_producer(event.clone()).await {
                return Err(link.failed(nexus, err));
            }
        }
        match last.ingest_from_producer(event).await {
            Ok(()) => Ok(()),
            Err(err) => Err(link.failed(last, err)),
        }
    }

    /// Ingests the events `next` gives, one after another, until it gives `None`: the same
    /// as [`distribute_event`](Self::distribute_event) for each in turn, but into a single
    /// nexus the run takes the nexus's gate once for as many events as follow without an error
    /// while no other task waits for it, rather than once per event. `next` is called only
    /// when the run is ready for an event, so an event it gives is never held between the two
    /// (a run dropped midway drops only the event being dispatched, counted as cancelled); and
    /// it is called under the nexus's gate, so it must not block on that nexus. A panic in
    /// `next` unwinds to the caller, and leaves the nexus as after the event before it. Between
    /// events whose handlers complete at once the run does not return to the runtime, so let
    /// `next` end a run after a bounded number of events.
    ///
    /// ```
    /// use std::collections::VecDeque;
    /// use nexus_core::{Event, ProducerLink};
    ///
    /// /// Delivers what is waiting in `events`, logging the events that fail.
    /// async fn deliver_waiting(link: &ProducerLink, events: &mut VecDeque<Event>) {
    ///     let delivery = link.delivery();
    ///     while let Err(err) = delivery.distribute_run(|| events.pop_front()).await {
    ///         eprintln!("{err}");
    ///     }
    /// }
    /// # fn main() { let _ = deliver_waiting; }
    /// ```
    ///
    /// # Errors
    ///
    /// The first error of an event, as [`distribute_event`](Self::distribute_event) gives
    /// it; the events after it are left to `next` (call again to go on with them).
    pub async fn distribute_run(
        &self,
        mut next: impl FnMut() -> Option<Event> + Send,
    ) -> Result<(), NexusError> {
        let link = self.link;
        let (Targets::One(Some(nexus)), true) = (&self.targets, link.is_started()) else {
            while let Some(event) = next() {
                self.distribute_event(event).await?;
            }
            return Ok(());
        };
        let delivered = &link.shared.delivered;
        // Each event after a run's first is put straight into the place the dispatch begins it.
        let mut fed = |slot: &mut Option<Event>| match next() {
            Some(event) => {
                delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                *slot = Some(event);
                true
            }
            None => false,
        };
        nexus
            .ingest_runs(Check::Producer, &mut fed)
            .await
            .map_err(|err| link.failed(nexus, err))
    }
}

/// A registered source, by kind.
pub(crate) enum SourceBox {
    Simple(Box<dyn SimpleEventConverter>),
    Generator(Box<dyn EventConverter>),
    Producer(Box<dyn EventProducer>),
}

impl SourceBox {
    pub(crate) fn name(&self) -> String {
        match self {
            Self::Simple(s) => s.name().to_owned(),
            Self::Generator(s) => s.name().to_owned(),
            Self::Producer(s) => s.name().to_owned(),
        }
    }

    /// Starts the source for `nexus`, which counts it as unfinished until it is exhausted or,
    /// for a producer, until it calls [`ProducerLink::finish`].
    pub(crate) async fn start(&mut self, nexus: &AsyncEventNexus) -> Result<(), NexusError> {
        match self {
            Self::Simple(s) => s.start().await,
            Self::Generator(s) => s.start().await,
            Self::Producer(s) => {
                s.link().begin(s.name())?;
                s.link().set_tolerant(!s.failures_end_loop());
                s.link().counted_by(nexus);
                s.start().await
            }
        }
    }

    /// Whether the source's failed events end the loop.
    pub(crate) fn failures_end_loop(&self) -> bool {
        match self {
            Self::Simple(s) => s.failures_end_loop(),
            Self::Generator(s) => s.failures_end_loop(),
            Self::Producer(s) => s.failures_end_loop(),
        }
    }

    /// A producer's link.
    pub(crate) fn link(&self) -> Option<&ProducerLink> {
        match self {
            Self::Producer(p) => Some(p.link()),
            Self::Simple(_) | Self::Generator(_) => None,
        }
    }

    /// Drains a producer (see [`EventSource::drain`]); a converter has nothing to drain.
    pub(crate) async fn drain(&mut self) -> Result<(), NexusError> {
        match self {
            Self::Producer(p) => p.drain().await,
            Self::Simple(_) | Self::Generator(_) => Ok(()),
        }
    }

    /// The counters of events this source delivered and dropped: a producer's link keeps its
    /// own; a converter's deliveries are counted by the loop, and it drops nothing.
    pub(crate) fn counters(&self) -> SourceCounters {
        match self {
            Self::Producer(p) => SourceCounters {
                delivered: p.link().delivered_counter(),
                dropped: p.link().dropped_counter(),
                failed: p.link().failed_counter(),
            },
            Self::Simple(_) | Self::Generator(_) => SourceCounters::default(),
        }
    }

    pub(crate) async fn close(&mut self) -> Result<(), NexusError> {
        match self {
            Self::Simple(s) => s.close().await,
            Self::Generator(s) => s.close().await,
            Self::Producer(s) => s.close().await,
        }
    }
}

/// Markers that tell source kinds apart in [`IntoSource`]; never named by users.
pub mod source_marker {
    /// A [`SimpleEventConverter`](super::SimpleEventConverter).
    #[derive(Debug)]
    pub struct Simple;
    /// An [`EventConverter`](super::EventConverter).
    #[derive(Debug)]
    pub struct Generator;
    /// An [`EventProducer`](super::EventProducer).
    #[derive(Debug)]
    pub struct Producer;
}

/// Any of the three kinds of source, as [`AsyncEventNexus::register`] takes them.
///
/// A type that implements more than one source trait is ambiguous here: name the kind, as in
/// `nexus.register::<nexus_core::__private::source_marker::Simple>(source)`, or register a
/// producer with [`AsyncEventNexus::add_producer`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event source the nexus can register",
    label = "this needs `impl SimpleEventConverter`, `impl EventConverter` or `impl EventProducer`"
)]
pub trait IntoSource<M> {
    #[doc(hidden)]
    fn into_source(self) -> SourceBoxPublic;
}

/// A source ready to register (opaque).
#[doc(hidden)]
#[allow(missing_debug_implementations)]
pub struct SourceBoxPublic(pub(crate) SourceBox);

impl<T: SimpleEventConverter> IntoSource<source_marker::Simple> for T {
    fn into_source(self) -> SourceBoxPublic {
        SourceBoxPublic(SourceBox::Simple(Box::new(self)))
    }
}

impl<T: EventConverter> IntoSource<source_marker::Generator> for T {
    fn into_source(self) -> SourceBoxPublic {
        SourceBoxPublic(SourceBox::Generator(Box::new(self)))
    }
}

impl<T: EventProducer> IntoSource<source_marker::Producer> for T {
    fn into_source(self) -> SourceBoxPublic {
        SourceBoxPublic(SourceBox::Producer(Box::new(self)))
    }
}

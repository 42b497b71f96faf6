//! [`AsyncEventNexus`]: registration, dispatch and the life cycle.

mod dispatch;
mod gate;
pub(crate) mod table;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::{LoopState, NexusError};
use crate::event::{Event, EventType, Payload};
use crate::factory::{EventFactory, EventId};
use crate::handler::{FilterReturn, FnHandler, Handler, HandlerReturn, Selector};
use crate::policy::{ErrorPolicy, NexusStats, TypeCounts};
use crate::queue::{DEFAULT_QUEUE_CAPACITY, EventQueue};
use crate::source::{EventProducer, IntoSource, SourceBox, SourceCounters};

pub(crate) use dispatch::Check;
use dispatch::Dispatcher;
pub(crate) use dispatch::{Counted, innermost_is};
use table::{FilterEntry, HandlerEntry, Table};

const READY: u8 = 0;
const STARTING: u8 = 1;
const LOOPING: u8 = 2;
const STOPPED: u8 = 3;

fn state_of(raw: u8) -> LoopState {
    match raw {
        READY => LoopState::Ready,
        STARTING => LoopState::Starting,
        LOOPING => LoopState::Looping,
        _ => LoopState::Stopped,
    }
}

/// Directs events from sources to filters and handlers.
///
/// A cheap cloneable handle: clones share one nexus, so a task can hold one and
/// [`ingest`](Self::ingest) events (the original's `teapot`). The nexus is dropped when the last
/// handle is; producers hold it only weakly.
///
/// # Dispatch
///
/// Each event goes through the filters in registration order (the first that returns `true`
/// consumes it), else to the handler(s) for its type, else to those of the first range holding
/// its type, else to the default handler; else it is unhandled and `ingest` fails with
/// [`NexusError::UnhandledEvent`]. Secondary events that handlers put on their
/// [`EventQueue`] are dispatched the same way, first in first out, before `ingest` returns.
///
/// One event at a time: no two handlers or filters of one nexus ever run at once, and events
/// from one source are dispatched in the order it produced them. An `ingest` made by a handler
/// into its own nexus (from the task that is dispatching) is taken like a secondary event: it is
/// queued, returns at once, and is dispatched after the current handler returns. An `ingest`
/// into a nexus that is waiting further up the same call (two nexuses whose handlers ingest
/// into each other) would wait on itself: it is refused with [`NexusError::Cycle`].
///
/// # Failures
///
/// A handler or filter that returns an error, panics or exceeds its time limit has failed; so
/// has an event nothing handles. The [`ErrorPolicy`] chosen with
/// [`NexusBuilder::error_policy`] says what happens next; the nexus always goes on.
/// [`stats`](Self::stats) counts every outcome.
///
/// # Life cycle
///
/// `READY` → [`loop_forever`](Self::loop_forever) or [`start`](Self::start) → `STARTING` (every
/// source's `start` is awaited, all at once) → `LOOPING` (converters are polled, producers push)
/// → [`stop`](Self::stop) → `STOPPED`. A nexus runs once. [`cleanup`](Self::cleanup) closes the
/// sources and forgets handlers and filters; [`scope`](Self::scope) runs it for you.
///
/// # Examples
///
/// ```
/// use nexus_core::{AsyncEventNexus, Event, EventQueue, NexusError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), NexusError> {
/// let nexus = AsyncEventNexus::new();
/// nexus.add_handler(99, |event: Event, _queue: EventQueue| async move {
///     println!("teapot ID: {}", event.id);
/// })?;
/// nexus.add_handler(-1, |event: Event, _queue: EventQueue| println!("{event}"))?;
///
/// let task = nexus.start()?;
/// tokio::task::yield_now().await; // let the loop reach LOOPING
/// nexus.ingest(Event::new(1001, 99, 0, "TEAPOT!")).await?;
/// nexus.stop();
/// task.await.expect("loop task")?;
/// nexus.cleanup().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AsyncEventNexus {
    inner: Arc<Inner>,
}

/// A weak handle to a nexus, as producers hold it.
#[derive(Clone, Debug, Default)]
pub struct WeakNexus {
    inner: Weak<Inner>,
}

impl WeakNexus {
    /// The nexus, if a strong handle to it still exists.
    pub fn upgrade(&self) -> Option<AsyncEventNexus> {
        self.inner.upgrade().map(|inner| AsyncEventNexus { inner })
    }

    /// Whether the nexus still exists.
    pub fn is_alive(&self) -> bool {
        self.inner.strong_count() > 0
    }

    pub(crate) fn points_to(&self, nexus: &AsyncEventNexus) -> bool {
        std::ptr::eq(self.inner.as_ptr(), Arc::as_ptr(&nexus.inner))
    }
}

pub(crate) struct Inner {
    state: AtomicU8,
    policy: ErrorPolicy,
    outcomes: dispatch::Outcomes,
    /// Counts per event type, when asked for.
    per_type: Option<Mutex<rustc_hash::FxHashMap<EventType, TypeCounts>>>,
    /// Events handed back to their senders (see `NexusStats::returned`).
    returned: AtomicU64,
    /// Events that arrived without taking the gate: refused, or cancelled before it.
    arrived_outside: AtomicU64,
    /// Set while a shutdown lets producers deliver what they hold.
    draining: AtomicBool,
    /// The ids of events cancelled while a shutdown records them.
    interrupted: Mutex<Option<Vec<u64>>>,
    /// A producer's failed event that ends the loop, for the loop to return.
    loop_failure: Mutex<Option<NexusError>>,
    /// Each source's count of delivered events, registered when the loop starts.
    per_source: Mutex<Vec<(String, SourceCounters)>>,
    /// The converter tasks of the running loop, to abort at a shutdown's deadline.
    converter_tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    multiple: bool,
    pub(crate) bit_mode: bool,
    factory: EventFactory,
    queue: crate::queue::OwnedQueue,
    /// The table new dispatches will use; registration replaces it whole.
    table: Mutex<Arc<Table>>,
    /// Bumped on every table change so the dispatcher notices without locking.
    table_version: AtomicU64,
    /// One event at a time.
    dispatcher: gate::Gate<Dispatcher>,
    sources: Mutex<Vec<SourceBox>>,
    /// Converters out in the loop's tasks, not in `sources` until they come back.
    converters_out: AtomicUsize,
    stop_tx: watch::Sender<bool>,
    /// How many loops and converter tasks are running; cleanup waits for 0.
    active: watch::Sender<usize>,
    /// Sources not yet exhausted or finished, for `loop_until_exhausted`.
    unfinished: watch::Sender<usize>,
}

impl std::fmt::Debug for AsyncEventNexus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncEventNexus")
            .field("state", &self.state())
            .field("multiple", &self.inner.multiple)
            .field("bit_mode", &self.inner.bit_mode)
            .field("queue", &*self.inner.queue)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AsyncEventNexus")
    }
}

impl Default for AsyncEventNexus {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds an [`AsyncEventNexus`] with options other than the defaults.
///
/// ```
/// use nexus_core::AsyncEventNexus;
///
/// let nexus = AsyncEventNexus::builder().multiple(true).queue_capacity(200).build();
/// assert_eq!(nexus.queue().capacity(), 200);
/// ```
#[derive(Clone, Debug)]
pub struct NexusBuilder {
    multiple: bool,
    bit_mode: bool,
    priority: Option<std::time::Duration>,
    queue_capacity: usize,
    factory: Option<EventFactory>,
    policy: ErrorPolicy,
    per_type: bool,
}

impl NexusBuilder {
    /// Allows several handlers per event type, run in registration order (default `false`:
    /// a second handler for a type is an error). Each but the last gets a copy of the event.
    /// A handler that fails fails the event: the handlers after it are not called for it.
    pub fn multiple(mut self, multiple: bool) -> Self {
        self.multiple = multiple;
        self
    }

    /// Bit mode, which the original's constructor names (`bitmode`) but never implemented:
    /// every event type is a power of two (1, 2, 4, … up to 2^62), and a handler may be
    /// registered for a mask of them ([`Selector::Mask`]). Default `false`.
    ///
    /// In bit mode an event goes to the handlers of the first of these that has any:
    ///
    /// 1. its exact type (`add_handler(4, …)`);
    /// 2. the masks holding its bit: every one of them, in registration order, in `multiple`
    ///    mode; otherwise the first registered (masks may overlap; one whose every bit an
    ///    earlier mask holds is refused, as it could never be called);
    /// 3. the first range holding its type;
    /// 4. the default handler.
    ///
    /// An event whose type is not a power of two (0, 6, a negative number, a named type) is
    /// refused with [`NexusError::NotABit`], at `ingest` and at [`EventQueue::put`], handing
    /// it back; registering a handler for such a type is [`NexusError::InvalidArgument`], and
    /// so is a mask on a nexus not in bit mode.
    ///
    /// ```
    /// use nexus_core::{AsyncEventNexus, Event, EventQueue, NexusError, Selector};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), NexusError> {
    /// const READ: i64 = 1;
    /// const WRITE: i64 = 2;
    /// const DELETE: i64 = 4;
    ///
    /// let nexus = AsyncEventNexus::builder().bit_mode(true).build();
    /// nexus.add_handler(Selector::Mask(0b011), |e: Event, _q: EventQueue| println!("access {e}"))?;
    /// nexus.add_handler(DELETE, |e: Event, _q: EventQueue| println!("delete {e}"))?;
    /// # let _ = nexus.start()?;
    /// # tokio::task::yield_now().await;
    /// nexus.ingest(Event::new(1, WRITE, 0, ())).await?; // the mask's handler
    /// let refused = nexus.ingest(Event::new(2, 3, 0, ())).await.unwrap_err();
    /// assert!(matches!(refused, NexusError::NotABit { .. }));
    /// # let _ = READ;
    /// # Ok(())
    /// # }
    /// ```
    pub fn bit_mode(mut self, bit_mode: bool) -> Self {
        self.bit_mode = bit_mode;
        self
    }

    /// Dispatches the secondary events that handlers queue by priority: the lowest
    /// [`priority`](Event::priority) number first, equal priorities in the order queued, and an
    /// event that has waited `max_wait` before every event queued after it. Off by default: in
    /// the order queued, as the original.
    ///
    /// ```
    /// use std::time::Duration;
    /// use nexus_core::AsyncEventNexus;
    ///
    /// let nexus = AsyncEventNexus::builder().priority(Duration::from_millis(100)).build();
    /// # drop(nexus);
    /// ```
    pub fn priority(mut self, max_wait: std::time::Duration) -> Self {
        self.priority = Some(max_wait);
        self
    }

    /// How many secondary events the queue holds (default 50, as the original). With 0,
    /// handlers cannot queue secondary events at all.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Numbers events from `factory` instead of a new sequence, so that several nexuses can
    /// share one id sequence.
    pub fn event_factory(mut self, factory: EventFactory) -> Self {
        self.factory = Some(factory);
        self
    }

    /// What the nexus does with failed events (default [`ErrorPolicy::Propagate`]).
    pub fn error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Also counts events per type ([`NexusStats::per_type`]); off by default, as it takes a
    /// lock per event.
    pub fn count_per_type(mut self, per_type: bool) -> Self {
        self.per_type = per_type;
        self
    }

    /// Builds the nexus, in state `READY`.
    pub fn build(self) -> AsyncEventNexus {
        let (stop_tx, _) = watch::channel(false);
        let (active, _) = watch::channel(0);
        let (unfinished, _) = watch::channel(0);
        AsyncEventNexus {
            inner: Arc::new(Inner {
                state: AtomicU8::new(READY),
                policy: self.policy,
                outcomes: dispatch::Outcomes::default(),
                per_type: self.per_type.then(Mutex::default),
                returned: AtomicU64::new(0),
                arrived_outside: AtomicU64::new(0),
                draining: AtomicBool::new(false),
                interrupted: Mutex::new(None),
                loop_failure: Mutex::new(None),
                per_source: Mutex::new(Vec::new()),
                converter_tasks: Mutex::new(Vec::new()),
                multiple: self.multiple,
                bit_mode: self.bit_mode,
                factory: self.factory.unwrap_or_default(),
                queue: crate::queue::OwnedQueue::new(
                    self.queue_capacity,
                    self.bit_mode,
                    self.priority,
                ),
                table: Mutex::new(Arc::default()),
                table_version: AtomicU64::new(0),
                dispatcher: gate::Gate::new(Dispatcher::default()),
                sources: Mutex::new(Vec::new()),
                converters_out: AtomicUsize::new(0),
                stop_tx,
                active,
                unfinished,
            }),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data consistent, so a poisoned lock is still sound.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AsyncEventNexus {
    /// A nexus with the defaults: one handler per type, a queue of 50 secondary events.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a nexus with other options.
    pub fn builder() -> NexusBuilder {
        NexusBuilder {
            multiple: false,
            bit_mode: false,
            priority: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            factory: None,
            policy: ErrorPolicy::Propagate,
            per_type: false,
        }
    }

    /// A weak handle, which does not keep the nexus alive.
    pub fn downgrade(&self) -> WeakNexus {
        WeakNexus {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// The life-cycle state.
    pub fn state(&self) -> LoopState {
        state_of(self.inner.state.load(Ordering::Acquire))
    }

    /// Whether several handlers may be registered per type.
    pub fn is_multiple(&self) -> bool {
        self.inner.multiple
    }

    /// Whether the nexus is in bit mode ([`NexusBuilder::bit_mode`]).
    pub fn is_bit_mode(&self) -> bool {
        self.inner.bit_mode
    }

    /// The queue of secondary events (the one handlers are given).
    pub fn queue(&self) -> &EventQueue {
        &self.inner.queue
    }

    // ----- the event factory -------------------------------------------------------------

    /// The nexus's event factory. It shares the nexus's id sequence but not the nexus itself.
    pub fn event_factory(&self) -> EventFactory {
        self.inner.factory.clone()
    }

    /// The next sequential event id (see [`EventFactory::next_id`]).
    pub fn next_id(&self) -> u64 {
        self.inner.factory.next_id()
    }

    /// A non-sequential event id (see [`EventFactory::random_id`]).
    pub fn random_id(&self) -> u64 {
        self.inner.factory.random_id()
    }

    /// Creates an event with the next sequential id and priority 0.
    pub fn create_event(
        &self,
        payload: impl Into<Payload>,
        event_type: impl Into<EventType>,
    ) -> Event {
        self.inner.factory.create_event(payload, event_type)
    }

    /// Creates an event, choosing its id as `id` says (see [`EventFactory::create_event_with`]).
    pub fn create_event_with(
        &self,
        payload: impl Into<Payload>,
        event_type: impl Into<EventType>,
        id: EventId,
        priority: i32,
    ) -> Event {
        self.inner
            .factory
            .create_event_with(payload, event_type, id, priority)
    }

    // ----- registration ------------------------------------------------------------------

    /// Registers a handler function for the events `selector` names (see [`Selector`]: an
    /// integer type, `-1` for the default handler, a named type, a range, a list).
    ///
    /// The handler takes the event and the nexus's [`EventQueue`], and may be an `async fn`, an
    /// async closure, a closure returning a future, or a plain closure. It returns `()` or
    /// `Result<(), E>`, at once or from its future.
    ///
    /// Handlers may be added while the nexus runs; the next event dispatched sees them.
    ///
    /// # Errors
    ///
    /// [`NexusError::DuplicateHandler`] when a handler is already registered for one of the
    /// types (outside `multiple` mode; nothing is registered then);
    /// [`NexusError::InvalidArgument`] for an empty range or list.
    ///
    /// # Examples
    ///
    /// ```
    /// use nexus_core::{AsyncEventNexus, Event, EventQueue, NexusError};
    ///
    /// async fn teapot_handler(event: Event, _queue: EventQueue) {
    ///     println!("teapot ID: {}", event.id);
    /// }
    ///
    /// let nexus = AsyncEventNexus::new();
    /// nexus.add_handler(99, teapot_handler)?;
    /// nexus.add_handler(1000..=1999, |_e: Event, _q: EventQueue| async move {
    ///     Ok::<(), std::io::Error>(())
    /// })?;
    /// nexus.add_handler(-1, |e: Event, _q: EventQueue| println!("{e}"))?;
    /// assert!(matches!(
    ///     nexus.add_handler(99, teapot_handler),
    ///     Err(NexusError::DuplicateHandler { .. })
    /// ));
    /// # Ok::<(), NexusError>(())
    /// ```
    pub fn add_handler<F, R, M>(
        &self,
        selector: impl Into<Selector>,
        handler: F,
    ) -> Result<(), NexusError>
    where
        F: Fn(Event, EventQueue) -> R + Send + Sync + 'static,
        R: HandlerReturn<M>,
        M: 'static,
    {
        self.insert_handler(&selector.into(), Handler::new(handler))
    }

    /// Registers a handler object for the events `selector` names, as
    /// [`add_handler`](Self::add_handler) does for functions: an [`EventConsumer`](crate::EventConsumer) (such as an
    /// `EventFanout` or a boundary's handler), or a [`Handler`] (a function with options, such as
    /// a time limit).
    ///
    /// # Errors
    ///
    /// As [`add_handler`](Self::add_handler).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use nexus_core::{AsyncEventNexus, Event, EventQueue, Handler};
    ///
    /// let nexus = AsyncEventNexus::new();
    /// let slow = Handler::new(|_e: Event, _q: EventQueue| async {});
    /// nexus.add_consumer(7, slow.timeout(Duration::from_secs(1)))?;
    /// # Ok::<(), nexus_core::NexusError>(())
    /// ```
    pub fn add_consumer(
        &self,
        selector: impl Into<Selector>,
        consumer: impl Into<Handler>,
    ) -> Result<(), NexusError> {
        self.insert_handler(&selector.into(), consumer.into())
    }

    fn insert_handler(&self, selector: &Selector, entry: HandlerEntry) -> Result<(), NexusError> {
        self.edit_table(|table| {
            table.insert(selector, entry, self.inner.multiple, self.inner.bit_mode)
        })
    }

    /// Registers a filter: it sees every event before the handlers, in registration order, and
    /// returns `true` when it has consumed the event (processing stops there).
    ///
    /// It takes `&Event` and `&EventQueue` and returns `bool` or `Result<bool, E>`, at once or
    /// from a future (which must not borrow the event: copy what it needs first).
    ///
    /// ```
    /// use nexus_core::{AsyncEventNexus, Event, EventQueue};
    ///
    /// let nexus = AsyncEventNexus::new();
    /// // Discard events with an empty payload.
    /// nexus.add_filter(|event: &Event, _queue: &EventQueue| event.payload.is_empty());
    /// ```
    pub fn add_filter<F, R, M>(&self, filter: F)
    where
        F: Fn(&Event, &EventQueue) -> R + Send + Sync + 'static,
        R: FilterReturn<M>,
        M: 'static,
    {
        self.add_filter_named(std::any::type_name::<F>(), filter);
    }

    /// [`add_filter`](Self::add_filter), named `name` in errors.
    pub(crate) fn add_filter_named<F, R, M>(&self, name: &'static str, filter: F)
    where
        F: Fn(&Event, &EventQueue) -> R + Send + Sync + 'static,
        R: FilterReturn<M>,
        M: 'static,
    {
        self.insert_filter(FilterEntry {
            filter: Arc::new(Box::new(FnHandler::<F, (R, M)>::new(filter))),
            name,
        });
    }

    fn insert_filter(&self, entry: FilterEntry) {
        let _ = self.edit_table(|table| {
            table.filters.push(entry);
            Ok(())
        });
    }

    fn edit_table(
        &self,
        edit: impl FnOnce(&mut Table) -> Result<(), NexusError>,
    ) -> Result<(), NexusError> {
        let mut current = lock(&self.inner.table);
        let mut next = Table::clone(&current);
        edit(&mut next)?;
        *current = Arc::new(next);
        self.inner.table_version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Registers an event source of any of the three kinds: a [`SimpleEventConverter`], an
    /// [`EventConverter`] or an [`EventProducer`]. A producer is linked to this nexus (weakly).
    ///
    /// Sources are started when the loop starts, so they are registered while the nexus is
    /// `READY`.
    ///
    /// [`SimpleEventConverter`]: crate::SimpleEventConverter
    /// [`EventConverter`]: crate::EventConverter
    ///
    /// # Errors
    ///
    /// [`NexusError::InvalidLoopState`] once the loop has started.
    pub fn register<M>(&self, source: impl IntoSource<M>) -> Result<(), NexusError> {
        self.add_source(source.into_source().0)
    }

    /// Registers a push-mode source and links it to this nexus.
    ///
    /// # Errors
    ///
    /// As [`register`](Self::register).
    pub fn add_producer<P: EventProducer>(&self, producer: P) -> Result<(), NexusError> {
        self.add_source(SourceBox::Producer(Box::new(producer)))
    }

    fn add_source(&self, source: SourceBox) -> Result<(), NexusError> {
        let mut sources = lock(&self.inner.sources);
        let state = self.state();
        if state != LoopState::Ready {
            return Err(NexusError::InvalidLoopState {
                operation: "register",
                expected: "READY",
                state,
            });
        }
        if let SourceBox::Producer(p) = &source {
            p.link().add_nexus(self);
        }
        sources.push(source);
        Ok(())
    }

    // ----- ingest ------------------------------------------------------------------------

    /// Dispatches `event` and every secondary event it leads to, then returns.
    ///
    /// # Errors
    ///
    /// [`NexusError::NotRunning`] (handing the event back) before the loop started or after it
    /// stopped; [`NexusError::UnhandledEvent`] when nothing consumed an event; the error of a
    /// failing handler or filter. Secondary events are all dispatched even when one fails; the
    /// first error is returned.
    ///
    /// # Cancellation
    ///
    /// Dropping the future before it is ready (a `select!`, a `timeout`) cancels the dispatch:
    /// the handler call under way is dropped, and the event counts as cancelled
    /// ([`NexusStats::cancelled`]) and goes to the error policy with [`NexusError::Cancelled`]
    /// (a dead-letter handler gets it; otherwise it is reported through `tracing`). Secondary
    /// events its handlers queued are not lost: the next dispatch of this nexus dispatches them
    /// first, and their failures go to the error policy, never to that next caller.
    #[inline]
    pub fn ingest(&self, event: Event) -> impl Future<Output = Result<(), NexusError>> + Send + '_ {
        dispatch::Dispatch::new(&self.inner, event, Check::Running)
    }

    /// Dispatches the events `events` gives, in order, each with every secondary event it leads
    /// to, as a loop of [`ingest`](Self::ingest) would; the nexus's gate is taken once for as
    /// long as no other task waits for it, rather than once per event.
    ///
    /// An event is taken from `events` only when its dispatch begins, so those not yet taken
    /// stay in `events` whatever happens: when this returns an error, when the nexus stops
    /// midway, when the future is dropped. Another task waiting for the gate gets it between two
    /// events, and the events after them wait their turn behind it. Between events whose
    /// handlers complete at once this does not return to the runtime, as a loop of `ingest`
    /// would not: give it a bounded number of events at a time where other tasks share the
    /// thread. A handler of this nexus that calls it queues each event as a secondary one, as
    /// `ingest` does. A panic in `events.next()` unwinds to the caller and leaves the nexus as
    /// after the event before it.
    ///
    /// ```
    /// use nexus_core::{AsyncEventNexus, Event, EventQueue};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nexus_core::NexusError> {
    /// let nexus = AsyncEventNexus::new();
    /// nexus.add_handler(1, |event: Event, _queue: EventQueue| async move {
    ///     println!("reading {}", event.id);
    /// })?;
    /// let _running = nexus.start()?;
    /// # tokio::task::yield_now().await;
    /// let mut readings = (0..3).map(|id| Event::new(id, 1, 0, ()));
    /// nexus.ingest_all(&mut readings).await?;
    /// assert_eq!(nexus.stats().dispatched, 3);
    /// # nexus.stop();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The first error, as `ingest` returns it for an event or its secondary events: the
    /// events after that one are left in `events` (call again to go on with them). A refused
    /// event ([`NexusError::NotRunning`], ...) is handed back in the error.
    ///
    /// # Cancellation
    ///
    /// Dropping the future cancels the event under way as it cancels an `ingest`'s (counted,
    /// given to the error policy); the events after it were never taken from `events`.
    pub async fn ingest_all<I>(&self, events: &mut I) -> Result<(), NexusError>
    where
        I: Iterator<Item = Event> + Send + ?Sized,
    {
        let mut fed = |slot: &mut Option<Event>| match events.next() {
            Some(event) => {
                *slot = Some(event);
                true
            }
            None => false,
        };
        self.ingest_runs(Check::Running, &mut fed).await
    }

    /// Dispatches the events `fed` puts in the slot it is given, in runs: each run holds the
    /// gate while nothing stops it (see `Dispatch::run`), and the next begins with the event
    /// after it. Ready once `fed` has no more, or with the first error.
    pub(crate) async fn ingest_runs(
        &self,
        check: Check,
        fed: dispatch::Feed<'_>,
    ) -> Result<(), NexusError> {
        let mut first = None;
        while fed(&mut first) {
            let Some(event) = first.take() else { break };
            dispatch::Dispatch::run(&self.inner, event, check, &mut *fed).await?;
        }
        Ok(())
    }

    /// `ingest` for a producer's event: also taken while a shutdown drains producers.
    #[inline]
    pub(crate) fn ingest_from_producer(
        &self,
        event: Event,
    ) -> impl Future<Output = Result<(), NexusError>> + Send + '_ {
        dispatch::Dispatch::new(&self.inner, event, Check::Producer)
    }

    /// Whether a producer's event is taken now: the loop starting or running, or a shutdown
    /// draining producers (as `Check::Producer` decides).
    pub(crate) fn takes_producer_events(&self) -> bool {
        let raw = self.inner.state.load(Ordering::Acquire);
        raw == LOOPING || raw == STARTING || self.inner.draining.load(Ordering::Acquire)
    }

    /// A producer's event failed under `Propagate`: the loop ends, and returns `err`.
    pub(crate) fn end_loop(&self, err: NexusError) {
        let raw = self.inner.state.load(Ordering::Acquire);
        if raw != LOOPING && raw != STARTING {
            tracing::error!(error = %err, "a producer's event failed after the loop ended");
            return;
        }
        {
            let mut slot = lock(&self.inner.loop_failure);
            match &*slot {
                None => *slot = Some(err),
                Some(_) => {
                    tracing::error!(error = %err, "a producer's event failed as the loop ended")
                }
            }
        }
        self.stop();
    }

    // ----- life cycle --------------------------------------------------------------------

    /// Runs the loop until [`stop`](Self::stop) is called or this future is dropped.
    ///
    /// Starts every source at once (`STARTING`), then (`LOOPING`) polls every converter in a
    /// task of its own, ingesting what each yields and dropping those that are exhausted, while
    /// producers push events themselves. After `stop`, each converter finishes the event it is
    /// ingesting, then the loop returns (`STOPPED`). Ctrl-C does not stop it unless
    /// [`stop_on_signals`](Self::stop_on_signals) was called.
    ///
    /// # Errors
    ///
    /// [`NexusError::LoopAlreadyStarted`] while the loop runs; [`NexusError::LoopStopped`] after
    /// it stopped. A source that fails to start, a converter that fails, and any error of
    /// `ingest` for a converter's event (such as an unhandled event) end the loop with that
    /// error.
    pub async fn loop_forever(&self) -> Result<(), NexusError> {
        self.begin("loop_forever")?;
        self.run_loop(false).await
    }

    /// Runs the loop as [`loop_forever`](Self::loop_forever) does, but also stops it once every
    /// source has finished: each converter exhausted, each producer having called
    /// [`ProducerLink::finish`](crate::ProducerLink::finish) (a counting `Timer` does when its
    /// count is done). With no sources, it stops at once.
    ///
    /// # Errors
    ///
    /// As [`loop_forever`](Self::loop_forever).
    pub async fn loop_until_exhausted(&self) -> Result<(), NexusError> {
        self.begin("loop_until_exhausted")?;
        self.run_loop(true).await
    }

    /// Runs the loop in a background task and returns its handle (the original's `start()`).
    ///
    /// # Errors
    ///
    /// [`NexusError::InvalidLoopState`] unless the nexus is `READY`.
    pub fn start(&self) -> Result<JoinHandle<Result<(), NexusError>>, NexusError> {
        let raw = self.inner.state.load(Ordering::Acquire);
        if raw != READY {
            return Err(NexusError::InvalidLoopState {
                operation: "start",
                expected: "READY",
                state: state_of(raw),
            });
        }
        self.begin("start")?;
        let nexus = self.clone();
        Ok(tokio::spawn(async move { nexus.run_loop(false).await }))
    }

    fn begin(&self, operation: &'static str) -> Result<(), NexusError> {
        match self.inner.state.compare_exchange(
            READY,
            STARTING,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(()),
            Err(STOPPED) => Err(NexusError::LoopStopped { operation }),
            Err(raw) => Err(NexusError::LoopAlreadyStarted {
                operation,
                state: state_of(raw),
            }),
        }
    }

    async fn run_loop(&self, until_exhausted: bool) -> Result<(), NexusError> {
        let inner = &*self.inner;
        let _active = Active::enter(self.clone());
        // Dropping this future (cancelling the loop) stops the nexus, like `stop`.
        let _stop = StopOnDrop(self);

        let mut sources = std::mem::take(&mut *lock(&inner.sources));
        inner.unfinished.send_replace(sources.len());
        let counters: Vec<SourceCounters> = sources.iter().map(SourceBox::counters).collect();
        *lock(&inner.per_source) = sources
            .iter()
            .zip(&counters)
            .map(|(s, c)| (s.name(), c.clone()))
            .collect();
        // Each converter's delivery counter, in the order the converters are spawned below.
        let mut converter_counters = sources
            .iter()
            .zip(counters)
            .filter(|(s, _)| !matches!(s, SourceBox::Producer(_)))
            .map(|(_, c)| c)
            .collect::<Vec<_>>()
            .into_iter();
        let started =
            futures_util::future::join_all(sources.iter_mut().map(|s| s.start(self))).await;
        let (converters, producers): (Vec<_>, Vec<_>) = sources
            .into_iter()
            .partition(|s| !matches!(s, SourceBox::Producer(_)));
        lock(&inner.sources).extend(producers);
        if let Some(err) = started.into_iter().find_map(Result::err) {
            lock(&inner.sources).extend(converters);
            return Err(err);
        }
        if inner
            .state
            .compare_exchange(STARTING, LOOPING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Stopped while starting.
            lock(&inner.sources).extend(converters);
            return Ok(());
        }

        let (failed_tx, mut failed) = mpsc::channel(converters.len().max(1));
        for converter in converters {
            inner.converters_out.fetch_add(1, Ordering::AcqRel);
            let counters = converter_counters.next().unwrap_or_default();
            let task = tokio::spawn(converter_task(
                self.clone(),
                converter,
                counters,
                inner.stop_tx.subscribe(),
                failed_tx.clone(),
            ));
            lock(&inner.converter_tasks).push(task.abort_handle());
        }
        drop(failed_tx);
        let mut stop_rx = inner.stop_tx.subscribe();
        let mut unfinished = inner.unfinished.subscribe();
        let mut failure = None;
        tokio::select! {
            biased;
            _ = stop_rx.wait_for(|stop| *stop) => {}
            Some(err) = failed.recv() => failure = Some(err),
            _ = unfinished.wait_for(|n| *n == 0), if until_exhausted => {}
        }
        self.stop();
        // Each converter finishes the event in hand and comes back; the channel closes when
        // the last one has.
        while let Some(err) = failed.recv().await {
            if failure.is_none() {
                failure = Some(err);
            } else {
                tracing::error!(error = %err, "converter failed while the loop stopped");
            }
        }
        // A producer's failed event that ended the loop.
        let ended = lock(&inner.loop_failure).take();
        match (failure, ended) {
            (Some(err), Some(also)) => {
                tracing::error!(error = %also, "a producer's event failed as the loop ended");
                Err(err)
            }
            (Some(err), None) | (None, Some(err)) => Err(err),
            (None, None) => Ok(()),
        }
    }

    /// Stops the loop: from now on `ingest` is refused, converters finish the event in hand and
    /// the loop returns. Producers keep their state until [`cleanup`](Self::cleanup) closes them.
    /// Stopping a `READY` nexus means it will never run. Stopping twice does nothing more.
    pub fn stop(&self) {
        self.inner.state.store(STOPPED, Ordering::Release);
        self.inner.stop_tx.send_replace(true);
    }

    /// Stops the loop on the first Ctrl-C or (on Unix) SIGTERM, from a background task that
    /// does not keep the nexus alive. Returns the task's handle; abort it to stop listening.
    pub fn stop_on_signals(&self) -> JoinHandle<()> {
        let weak = self.downgrade();
        tokio::spawn(async move {
            if wait_for_signal().await.is_ok()
                && let Some(nexus) = weak.upgrade()
            {
                tracing::info!("signal received: stopping the nexus");
                nexus.stop();
            }
        })
    }

    /// Counts one source as finished (a converter exhausted, a producer that said so).
    pub(crate) fn source_finished(&self) {
        self.inner
            .unfinished
            .send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Closes every producer and converter, then forgets every handler and filter.
    ///
    /// A running loop is stopped first and awaited. A source whose `close` fails does not keep
    /// the others from being closed.
    ///
    /// # Errors
    ///
    /// [`NexusError::CloseFailed`], listing each source that failed to close.
    pub async fn cleanup(&self) -> Result<(), NexusError> {
        let inner = &*self.inner;
        if *inner.active.borrow() > 0 {
            self.stop();
            let mut active = inner.active.subscribe();
            let _ = active.wait_for(|active| *active == 0).await;
        }
        let sources = std::mem::take(&mut *lock(&inner.sources));
        let mut failures = Vec::new();
        for mut source in sources.into_iter().rev() {
            let name = source.name();
            if let Err(err) = source.close().await {
                tracing::warn!(source = %name, error = %err, "event source failed to close");
                failures.push(err);
            }
        }
        *lock(&inner.table) = Arc::default();
        inner.table_version.fetch_add(1, Ordering::Release);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(NexusError::CloseFailed { failures })
        }
    }

    /// Runs `body` with this nexus, then always runs [`cleanup`](Self::cleanup): after success,
    /// after an error, and after a panic (which then goes on unwinding). This is the original's
    /// `with AsyncEventNexus() as nexus:` block.
    ///
    /// # Errors
    ///
    /// [`NexusError::NotPristine`] when the nexus is not `READY` or already has sources; else
    /// `body`'s error, or else cleanup's.
    ///
    /// # Examples
    ///
    /// ```
    /// use nexus_core::{AsyncEventNexus, Event, EventQueue, NexusError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), NexusError> {
    /// AsyncEventNexus::new()
    ///     .scope(|nexus| async move {
    ///         nexus.add_handler(-1, |e: Event, _q: EventQueue| println!("{e}"))?;
    ///         nexus.stop(); // something stops it; here, at once
    ///         nexus.loop_forever().await.or_else(|e| match e {
    ///             NexusError::LoopStopped { .. } => Ok(()),
    ///             e => Err(e),
    ///         })
    ///     })
    ///     .await
    /// # }
    /// ```
    pub async fn scope<F, Fut, T>(&self, body: F) -> Result<T, NexusError>
    where
        F: FnOnce(AsyncEventNexus) -> Fut,
        Fut: Future<Output = Result<T, NexusError>>,
    {
        if self.state() != LoopState::Ready {
            return Err(NexusError::NotPristine {
                reason: "its loop has already run",
            });
        }
        if !lock(&self.inner.sources).is_empty() {
            return Err(NexusError::NotPristine {
                reason: "it already has event sources",
            });
        }
        let outcome = AssertUnwindSafe(body(self.clone())).catch_unwind().await;
        let cleaned = self.cleanup().await;
        match outcome {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(Err(err)) => {
                if let Err(close) = cleaned {
                    tracing::warn!(error = %close, "cleanup after a failed scope also failed");
                }
                Err(err)
            }
            Ok(Ok(value)) => cleaned.map(|()| value),
        }
    }

    /// Whether no handler or filter is registered.
    pub fn has_no_consumers(&self) -> bool {
        lock(&self.inner.table).is_empty()
    }

    /// What the nexus has counted so far: events ingested, dispatched, filtered, unhandled,
    /// failed and returned, the queue's depth, and each source's deliveries.
    ///
    /// ```
    /// use nexus_core::{AsyncEventNexus, Event};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let nexus = AsyncEventNexus::new();
    /// let _ = nexus.ingest(Event::new(1, 1, 0, ())).await; // refused: not started
    /// let stats = nexus.stats();
    /// assert_eq!((stats.ingested, stats.returned), (1, 1));
    /// # }
    /// ```
    pub fn stats(&self) -> NexusStats {
        let inner = &*self.inner;
        let o = &inner.outcomes;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (dispatched, filtered, unhandled, failed) = (
            load(&o.dispatched),
            load(&o.filtered),
            load(&o.unhandled),
            load(&o.failed),
        );
        let returned = load(&inner.returned);
        let queue_depth = inner.queue.len();
        let per_source = lock(&inner.per_source);
        NexusStats {
            ingested: load(&o.arrived) + load(&inner.arrived_outside) + inner.queue.accepted(),
            dispatched,
            filtered,
            unhandled,
            failed,
            cancelled: load(&o.cancelled),
            returned,
            queue_depth,
            dropped: per_source.iter().map(|(_, c)| load(&c.dropped)).sum(),
            per_source: per_source
                .iter()
                .map(|(name, c)| (name.clone(), load(&c.delivered)))
                .collect(),
            per_source_failed: per_source
                .iter()
                .map(|(name, c)| (name.clone(), load(&c.failed)))
                .filter(|(_, failed)| *failed > 0)
                .collect(),
            per_type: inner.per_type.as_ref().map_or_else(Vec::new, |map| {
                let mut counts: Vec<_> = lock(map).iter().map(|(t, c)| (t.clone(), *c)).collect();
                counts.sort_by_key(|(t, _)| t.to_string());
                counts
            }),
        }
    }

    /// Stops the nexus and shuts it down within `deadline`, losing no event in silence.
    ///
    /// In order: the loop stops (converters finish the event in hand, `ingest` from outside is
    /// refused); every producer stops taking new work and delivers what it already holds, its
    /// channel included ([`EventSource::drain`](crate::EventSource::drain)), the nexus still
    /// taking its events; handlers under way finish, and the secondary events they queue are
    /// dispatched. Then every source is closed.
    ///
    /// What is not done by the deadline is cut short and reported: the dispatch under way is
    /// cancelled (its event is named in [`ShutdownReport::interrupted`], counted as cancelled,
    /// and given to the error policy), and the events still held (queued secondary events,
    /// events producers had not delivered, events a boundary could not deliver) come back in
    /// [`ShutdownReport::undelivered`]. `completed` is true only when nothing was left.
    ///
    /// # Errors
    ///
    /// None so far: a source that fails to drain or close is listed in the report's
    /// [`failures`](ShutdownReport::failures) (the others are still closed), and the events such
    /// failures hand back are in `undelivered`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use nexus_core::AsyncEventNexus;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nexus_core::NexusError> {
    /// let nexus = AsyncEventNexus::new();
    /// let _loop = nexus.start()?;
    /// let report = nexus.shutdown(Duration::from_secs(5)).await?;
    /// assert!(report.completed && report.undelivered.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(
        &self,
        deadline: std::time::Duration,
    ) -> Result<ShutdownReport, NexusError> {
        let inner = &*self.inner;
        let until = tokio::time::Instant::now() + deadline;
        *lock(&inner.interrupted) = Some(Vec::new());
        // Producers' events are still taken while they drain; nothing else is.
        inner.draining.store(true, Ordering::Release);
        self.stop();
        let mut sources = std::mem::take(&mut *lock(&inner.sources));
        let mut active = inner.active.subscribe();
        let drained = tokio::time::timeout_at(until, async {
            let loops = async {
                let _ = active.wait_for(|n| *n == 0).await;
            };
            let drains = futures_util::future::join_all(sources.iter_mut().map(SourceBox::drain));
            futures_util::future::join(loops, drains).await.1
        })
        .await;
        inner.draining.store(false, Ordering::Release);
        let mut failures = Vec::new();
        let in_time = match drained {
            Ok(results) => {
                failures.extend(results.into_iter().filter_map(Result::err));
                true
            }
            Err(_elapsed) => {
                // Cut short what is still running: the loop's converter tasks (the producers'
                // drains were dropped, which ends their work).
                for task in lock(&inner.converter_tasks).drain(..) {
                    task.abort();
                }
                let _ = active.wait_for(|n| *n == 0).await;
                false
            }
        };
        // Converters came back to the list while this shutdown held the others.
        let links: Vec<crate::ProducerLink> = {
            let mut all = lock(&inner.sources);
            all.splice(0..0, sources);
            // Every producer, including one a loop was starting as this shutdown began (that
            // loop has ended now, and given its producers back).
            all.iter().filter_map(|s| s.link().cloned()).collect()
        };
        // Closing counts what producers still hold (each `close` waits for its task).
        if let Err(NexusError::CloseFailed { failures: closing }) = self.cleanup().await {
            failures.extend(closing);
        }
        // Secondary events nobody will dispatch now go back to the caller.
        let mut undelivered = Vec::new();
        if let Some(_idle) = inner.dispatcher.try_lock() {
            #[allow(unsafe_code)]
            // SAFETY: this shutdown holds the gate (`_idle`).
            while let Some(event) = unsafe { inner.queue.pop() } {
                undelivered.push(event);
            }
        }
        inner
            .returned
            .fetch_add(undelivered.len() as u64, Ordering::Relaxed);
        for link in &links {
            undelivered.extend(link.take_left());
        }
        // Failures that hand an event back are events not delivered.
        let mut kept_failures = Vec::new();
        while let Some(failure) = failures.pop() {
            match failure {
                NexusError::CloseFailed { failures: inner } => failures.extend(inner),
                NexusError::Closed { event, .. } | NexusError::NotRunning { event, .. } => {
                    undelivered.push(*event);
                }
                other => kept_failures.push(other),
            }
        }
        let interrupted = lock(&inner.interrupted).take().unwrap_or_default();
        for id in &interrupted {
            tracing::warn!(id, "shutdown cut the dispatch of event {id} short");
        }
        let completed =
            in_time && undelivered.is_empty() && interrupted.is_empty() && kept_failures.is_empty();
        Ok(ShutdownReport {
            completed,
            undelivered,
            interrupted,
            failures: kept_failures,
        })
    }

    /// How many event sources are registered, including converters being polled by the loop
    /// (exhausted converters are gone).
    pub fn source_count(&self) -> usize {
        lock(&self.inner.sources).len() + self.inner.converters_out.load(Ordering::Acquire)
    }
}

/// What [`AsyncEventNexus::shutdown`] did.
#[derive(Debug)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Whether everything finished before the deadline with nothing left: no event
    /// undelivered, no dispatch cut short, no source failing to drain or close.
    pub completed: bool,
    /// Events that were not delivered, handed back: secondary events still queued, events
    /// producers held and did not deliver, events a boundary could not deliver.
    pub undelivered: Vec<Event>,
    /// The ids of the events whose dispatch was cut short at the deadline (each counted as
    /// cancelled and given to the error policy).
    pub interrupted: Vec<u64>,
    /// The sources that failed to drain or to close, with their errors.
    pub failures: Vec<NexusError>,
}

/// Waits for Ctrl-C or, on Unix, SIGTERM.
pub(crate) async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// Counts a loop or converter task as running until dropped, also when cancelled or panicking.
struct Active(AsyncEventNexus);

impl Active {
    fn enter(nexus: AsyncEventNexus) -> Self {
        nexus.inner.active.send_modify(|n| *n += 1);
        Self(nexus)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.inner.active.send_modify(|n| *n -= 1);
    }
}

struct StopOnDrop<'a>(&'a AsyncEventNexus);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Runs one converter in a task of its own, then puts it back among the sources (unless it
/// was exhausted) and reports its error, if any, to the loop.
async fn converter_task(
    nexus: AsyncEventNexus,
    source: SourceBox,
    counters: SourceCounters,
    stop: watch::Receiver<bool>,
    failed: mpsc::Sender<NexusError>,
) {
    let _active = Active::enter(nexus.clone());
    let name = source.name();
    let outcome = AssertUnwindSafe(drive(nexus.clone(), source, stop, counters))
        .catch_unwind()
        .await;
    let result = match outcome {
        Ok((None, result)) => {
            nexus.source_finished();
            result
        }
        Ok((Some(kept), result)) => {
            lock(&nexus.inner.sources).push(kept);
            result
        }
        Err(_) => Err(NexusError::source(
            name.clone(),
            "obtain_event",
            "the converter panicked; it was dropped",
        )),
    };
    nexus.inner.converters_out.fetch_sub(1, Ordering::AcqRel);
    if let Err(err) = result
        && let Err(mpsc::error::SendError(err)) = failed.send(err).await
    {
        // The loop itself was cancelled: nobody is left to return the error to.
        tracing::error!(source = %name, error = %err, "converter failed after its loop ended");
    }
}

/// Polls one converter until it is exhausted, fails, or the loop stops. Returns the converter
/// (unless exhausted) and the outcome.
async fn drive(
    nexus: AsyncEventNexus,
    mut source: SourceBox,
    mut stop: watch::Receiver<bool>,
    counters: SourceCounters,
) -> (Option<SourceBox>, Result<(), NexusError>) {
    let factory = nexus.event_factory();
    let ends_loop = source.failures_end_loop();
    let name = source.name();
    let (exhausted, result) = match Pull::of(&mut source, factory) {
        None => (false, Ok(())),
        Some(mut pull) => loop {
            let next = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break (false, Ok(())),
                next = pull.next() => next,
            };
            match next {
                Ok(Some(event)) => {
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    match dispatch::Dispatch::new(&nexus.inner, event, Check::Unchecked).await {
                        Ok(()) => {}
                        Err(err) if !ends_loop && !err.is_refusal() => {
                            // A source that says its failures must not end the loop (a peer on
                            // the network): counted for it, reported, and skipped.
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(source = %name, error = %err, "event failed; the source goes on");
                        }
                        Err(err) => break (false, Err(err)),
                    }
                }
                Ok(None) => break (true, Ok(())),
                Err(err) => break (false, Err(err)),
            }
        },
    };
    if exhausted {
        tracing::debug!(source = %source.name(), "converter exhausted; dropped");
        (None, result)
    } else {
        (Some(source), result)
    }
}

/// Either kind of converter, seen as "the next event, or none when exhausted".
enum Pull<'a> {
    Simple(&'a mut dyn crate::source::SimpleEventConverter),
    Stream(crate::BoxStream<'a, Event>),
}

impl<'a> Pull<'a> {
    fn of(source: &'a mut SourceBox, factory: EventFactory) -> Option<Self> {
        match source {
            SourceBox::Simple(converter) => Some(Self::Simple(converter.as_mut())),
            SourceBox::Generator(converter) => {
                Some(Self::Stream(converter.event_generator(factory)))
            }
            SourceBox::Producer(_) => None,
        }
    }

    async fn next(&mut self) -> Result<Option<Event>, NexusError> {
        match self {
            Self::Simple(converter) => match converter.obtain_event().await {
                Ok(event) => Ok(Some(event)),
                Err(NexusError::NoMoreEvents) => Ok(None),
                Err(err) => Err(err),
            },
            Self::Stream(events) => Ok(futures_util::StreamExt::next(events).await),
        }
    }
}

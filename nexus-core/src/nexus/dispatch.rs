//! The dispatch of one event and the secondary events it leads to.
//!
//! This is the hot path, written as one hand-made future ([`Dispatch`]) so that nothing is
//! moved or set up that an event does not need: no lock, allocation or reference count beyond
//! the gate, the handler's own future and the queue handle the handler is given. A call that
//! completes when first polled is started, polled and finished in one go; only a call that has
//! to wait is kept in the future, with what the rest of the dispatch needs.
//!
//! Each call is guarded: a panic or a timeout is a failure of that handler or filter, handled by
//! the nexus's error policy, never the end of the nexus.

use std::any::Any;
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use super::gate::GateGuard;
use super::table::{HandlerEntry, Table};
use super::{Inner, LOOPING, STARTING, state_of};
use crate::early::Early;
use crate::error::{BoxError, NexusError};
use crate::event::{Cause, Event, EventType, swap_current_cause};
use crate::fan::FanCopies;
use crate::handler::{ASIDE, Aside, CONSUMED, Call, Outcome, PASSED, Started, handler_error};
use crate::policy::ErrorPolicy;
use crate::spare::Spare;

/// The dispatcher's own state, behind the nexus's gate: its snapshot of the handler table,
/// refreshed when registration has changed it, its copies of fanouts' handler lists, and the
/// memory its calls' futures are placed in.
#[derive(Default)]
pub(crate) struct Dispatcher {
    table: Arc<Table>,
    version: u64,
    fans: FanCopies,
    spare: Spare,
}

impl Dispatcher {
    #[inline(always)]
    fn refresh(&mut self, inner: &Inner) {
        let version = inner.table_version.load(Ordering::Acquire);
        if version != self.version {
            self.table = Arc::clone(&super::lock(&inner.table));
            self.version = version;
            self.fans.clear();
        }
    }
}

/// Counters written only by the holder of the gate (a plain load and store each, no locked
/// instruction), readable at any time.
#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    pub(crate) dispatched: AtomicU64,
    pub(crate) filtered: AtomicU64,
    pub(crate) unhandled: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// Events that took the gate as they arrived (the others are counted where they arrive:
    /// by the queue, or as refused or cancelled before the gate).
    pub(crate) arrived: AtomicU64,
    /// Events whose dispatch was dropped before it was over (written with a locked add: a
    /// dispatch is cancelled also before it holds the gate).
    pub(crate) cancelled: AtomicU64,
}

#[inline]
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// How many nexuses of a chain of handler calls are tracked in place; deeper ones are kept in
/// a list of their own, so that a chain of any length is tracked.
const INLINE: usize = 8;

/// The nexuses whose handlers are being polled on this thread, innermost last: the first
/// [`INLINE`] here, the rest in [`DEEPER`].
struct Chain {
    depth: Cell<usize>,
    nexuses: [Cell<usize>; INLINE],
}

thread_local! {
    static DISPATCHING: Chain = const {
        Chain {
            depth: Cell::new(0),
            nexuses: [const { Cell::new(0) }; INLINE],
        }
    };
    /// The nexuses of this thread's chain past the first [`INLINE`], innermost last.
    static DEEPER: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// This thread's mark for one nexus in its chain of handler calls: taken off again when
/// dropped, also when what runs under it unwinds. It also holds the cause that events made on
/// this thread had before, given back when it is dropped.
///
/// Pushed only by a dispatch that holds its nexus's gate, and dropped before the gate is given
/// back: a handler's `EventQueue::put` relies on this (through [`innermost_is`]) to reach the
/// events kept beside the queue without a lock.
struct Mark {
    cause_before: Option<Cause>,
}

impl Mark {
    #[inline(always)]
    fn push(address: usize, cause: Option<Cause>) -> Self {
        let cause_before = swap_current_cause(cause);
        DISPATCHING.with(|chain| {
            let depth = chain.depth.get();
            match chain.nexuses.get(depth) {
                Some(slot) => slot.set(address),
                None => push_deeper(address),
            }
            chain.depth.set(depth + 1);
        });
        Self { cause_before }
    }
}

impl Drop for Mark {
    #[inline(always)]
    fn drop(&mut self) {
        swap_current_cause(self.cause_before);
        DISPATCHING.with(|chain| {
            let depth = chain.depth.get().wrapping_sub(1);
            if depth >= INLINE {
                pop_deeper();
            }
            chain.depth.set(depth);
        });
    }
}

#[cold]
#[inline(never)]
fn push_deeper(address: usize) {
    DEEPER.with(|deeper| deeper.borrow_mut().push(address));
}

#[cold]
#[inline(never)]
fn pop_deeper() {
    DEEPER.with(|deeper| deeper.borrow_mut().pop());
}

/// What tells a nexus from every other one alive, in this thread's chain: its queue's key.
fn address(inner: &Inner) -> usize {
    inner.queue.key()
}

/// Whether the innermost nexus whose handlers are being polled on this thread is the one whose
/// queue has `key`: then the dispatch holding its gate is being polled here.
#[inline]
pub(crate) fn innermost_is(key: usize) -> bool {
    DISPATCHING.with(|chain| {
        let depth = chain.depth.get();
        depth
            .checked_sub(1)
            .and_then(|at| chain.nexuses.get(at))
            .is_some_and(|nexus| nexus.get() == key)
    })
}

/// Where a nexus stands in this thread's chain of handler calls.
enum Nesting {
    /// Not being dispatched on this call stack.
    Outside,
    /// Its handler, innermost, is calling back into it.
    Reentry,
    /// Its handler is waiting further out, on a call through another nexus.
    Cycle,
}

fn nesting(inner: &Inner) -> Nesting {
    let me = address(inner);
    DISPATCHING.with(|chain| {
        let depth = chain.depth.get();
        let found = if depth > INLINE {
            DEEPER
                .with(|deeper| deeper.borrow().iter().rposition(|&a| a == me))
                .map(|at| at + INLINE)
        } else {
            None
        };
        let found = found.or_else(|| {
            chain.nexuses[..depth.min(INLINE)]
                .iter()
                .rposition(|a| a.get() == me)
        });
        match found {
            None => Nesting::Outside,
            Some(at) if at + 1 == depth => Nesting::Reentry,
            Some(_) => Nesting::Cycle,
        }
    })
}

/// How a guarded call went wrong.
enum Failure {
    Error(BoxError),
    Panic(String),
    TimedOut(Duration),
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".to_owned())
}

/// How one event ended, as the counters see it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counted {
    Dispatched,
    Filtered,
    Unhandled,
    Failed,
    Cancelled,
}

/// The nexus's error for a failed call, naming the event and the handler.
fn failure_error(
    failure: Failure,
    id: u64,
    event_type: &EventType,
    name: &'static str,
) -> NexusError {
    match failure {
        Failure::Error(err) => handler_error(err, id, event_type, name),
        Failure::Panic(message) => NexusError::HandlerPanicked {
            id,
            event_type: event_type.clone(),
            handler: name,
            message,
        },
        Failure::TimedOut(limit) => NexusError::HandlerTimedOut {
            id,
            event_type: event_type.clone(),
            handler: name,
            limit,
        },
    }
}

/// Runs `body`, catching a panic as a failure.
#[inline(always)]
fn caught<R>(body: impl FnOnce() -> R) -> Result<R, Failure> {
    std::panic::catch_unwind(AssertUnwindSafe(body))
        .map_err(|payload| Failure::Panic(panic_message(&*payload)))
}

/// Starts a call, which polls it once, guarded: its result, or the call itself when it has to
/// wait.
#[inline(always)]
fn start_and_poll<T: Outcome>(
    start: impl FnOnce() -> Started<Result<T, BoxError>>,
) -> Result<Result<T, Call<'static, Result<T, BoxError>>>, Failure> {
    match caught(start)? {
        Started::Done(Ok(value)) => Ok(Ok(value)),
        Started::Done(Err(err)) => Err(Failure::Error(err)),
        Started::Waiting(call) => Ok(Err(call)),
    }
}

/// Calls one handler with the event in `slot`, guarded, inside `span` when there is one: the
/// last handler takes the event itself, moved straight into its call; the others get a copy.
/// The caller has seen the event in `slot`.
#[inline(always)]
fn call_handler(
    entry: &HandlerEntry,
    slot: &mut Option<Event>,
    last: bool,
    span: Option<&tracing::Span>,
    queue: &crate::EventQueue,
    cx: &mut Context<'_>,
    spare: &mut Spare,
) -> Result<Result<(), Call<'static, Result<(), BoxError>>>, Failure> {
    let _entered = span.map(tracing::Span::enter);
    match (last, &*slot) {
        (false, Some(event)) => start_and_poll(|| entry.start_copy(event, queue, cx, spare)),
        // An empty slot is no call (`start_in` says so); the caller has seen the event there.
        _ => start_and_poll(|| entry.start_in(slot, queue, cx, spare)),
    }
}

/// One started call that has to wait.
enum Flight {
    /// A filter's: `true` when it consumed the event.
    Filter(Call<'static, Result<bool, BoxError>>),
    Handler(Call<'static, Result<(), BoxError>>),
    /// Dropped already.
    Gone,
}

/// A call that has to wait, with what its end needs: polled guarded, inside its span when a
/// subscriber wants one, and cancelled at its time limit. Boxed, so that a dispatch whose calls
/// all complete at once stays small.
struct Waiting {
    call: Flight,
    name: &'static str,
    limit: Option<Limit>,
    span: Option<tracing::Span>,
    /// The event's id and type, for the end of its dispatch (the last handler owns the event).
    id: u64,
    event_type: EventType,
    /// A copy for the dead-letter handler, when the policy wants one.
    kept: Option<Event>,
    /// When the call is one of a fanout's: where the fanout stands.
    fan: Option<Fan>,
}

/// Where a fanout stands for one event.
struct Turn {
    /// The index of the next handler to call.
    next: usize,
    /// Whether the fanout is the event's last handler (its last handler takes the event).
    last: bool,
    /// The first handler error; the event's once every handler was called.
    error: Option<NexusError>,
}

/// A fanout one of whose handlers has to wait: its handlers, and where it stands.
struct Fan {
    handlers: Arc<Vec<HandlerEntry>>,
    turn: Turn,
}

/// How a fanout's turn ended.
enum Fanned {
    /// Every handler was called without error: on to the event's next handler.
    Continue,
    /// The event is done with (dispatched, or failed), and counted.
    Over,
    /// A handler's call has to wait; it is kept with the fanout's state.
    Waiting,
}

/// A handler's time limit, counted from the start of its call.
struct Limit {
    limit: Duration,
    deadline: tokio::time::Instant,
    /// Set when the call first has to wait: a call that completes at once sets no timer.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Limit {
    fn new(limit: Duration) -> Self {
        Self {
            limit,
            deadline: tokio::time::Instant::now() + limit,
            sleep: None,
        }
    }

    /// Whether the limit has passed; otherwise arranges for a wake-up when it does.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        sleep.as_mut().poll(cx).is_ready()
    }
}

impl Waiting {
    /// Polls the call (the caller has marked the thread): `Ok(true)` when a filter consumed the
    /// event.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, Failure>> {
        let entered = self.span.as_ref().map(tracing::Span::enter);
        let call = &mut self.call;
        let polled = caught(|| match call {
            Flight::Filter(call) => Pin::new(call).poll(cx),
            Flight::Handler(call) => Pin::new(call).poll(cx).map(|done| done.map(|()| false)),
            Flight::Gone => Poll::Ready(Ok(false)),
        });
        drop(entered);
        match polled {
            Ok(Poll::Ready(Ok(consumed))) => Poll::Ready(Ok(consumed)),
            Ok(Poll::Ready(Err(err))) => Poll::Ready(Err(Failure::Error(err))),
            Err(failure) => Poll::Ready(Err(failure)),
            Ok(Poll::Pending) => self.timed_out(cx),
        }
    }

    /// Drops the call now: a panic in its drop (or in the drop of what it captured) is caught
    /// and given as its failure.
    fn release(&mut self) -> Result<(), Failure> {
        let call = std::mem::replace(&mut self.call, Flight::Gone);
        if matches!(call, Flight::Gone) {
            return Ok(());
        }
        caught(move || drop(call))
    }

    /// After a `Pending` from the call: times it out if its limit has passed.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, Failure>> {
        match &mut self.limit {
            Some(limit) => {
                if limit.expired(cx) {
                    Poll::Ready(Err(Failure::TimedOut(limit.limit)))
                } else {
                    Poll::Pending
                }
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for Waiting {
    /// A call dropped unfinished (timed out, failed, or its dispatch cancelled) may panic in its
    /// drop: that never leaves the nexus, and is reported.
    fn drop(&mut self) {
        if let Err(Failure::Panic(message)) = self.release() {
            tracing::error!(
                id = self.id,
                event_type = %self.event_type,
                handler = self.name,
                message,
                "a handler's future panicked while it was dropped"
            );
        }
    }
}

/// The span of one handler call (event id, type and handler), when a subscriber wants it.
#[inline(always)]
fn dispatch_span(id: u64, event_type: &EventType, handler: &HandlerEntry) -> Option<tracing::Span> {
    if !tracing::level_enabled!(tracing::Level::TRACE) {
        return None;
    }
    traced_span(id, event_type, handler)
}

#[cold]
fn traced_span(id: u64, event_type: &EventType, handler: &HandlerEntry) -> Option<tracing::Span> {
    let handler = handler.name();
    let span = tracing::trace_span!("dispatch", id, event_type = %event_type, handler);
    (!span.is_disabled()).then_some(span)
}

/// What comes next for an event.
#[derive(Clone, Copy)]
enum At {
    /// The filter at this index.
    Filter(usize),
    /// The handler at this index among those for the event's type.
    Handler(usize),
}

/// Counts how an event ended.
#[inline(always)]
fn count(inner: &Inner, counted: Counted, event_type: &EventType) {
    let outcomes = &inner.outcomes;
    bump(match counted {
        Counted::Dispatched => &outcomes.dispatched,
        Counted::Filtered => &outcomes.filtered,
        Counted::Unhandled => &outcomes.unhandled,
        Counted::Failed => &outcomes.failed,
        Counted::Cancelled => &outcomes.cancelled,
    });
    if let Some(per_type) = &inner.per_type {
        super::lock(per_type)
            .entry(event_type.clone())
            .or_default()
            .count(counted);
    }
}

/// Counts an event that failed and hands the failure to the error policy.
#[cold]
fn failed(
    inner: &Inner,
    first_error: &mut Option<Box<NexusError>>,
    event_type: &EventType,
    err: NexusError,
    kept: Option<Event>,
) {
    let counted = match err {
        NexusError::UnhandledEvent { .. } => Counted::Unhandled,
        _ => Counted::Failed,
    };
    count(inner, counted, event_type);
    match &inner.policy {
        ErrorPolicy::Propagate => match first_error {
            None => *first_error = Some(Box::new(err)),
            Some(_) => tracing::error!(error = %err, "secondary event failed"),
        },
        ErrorPolicy::Continue => tracing::error!(error = %err, "event failed"),
        ErrorPolicy::DeadLetter(dead_letter) => match kept {
            Some(copy) => dead_letter.send(copy, err),
            None => tracing::error!(error = %err, "event failed"),
        },
    }
}

/// Keeps a fanout's first handler error; logs the later ones.
#[cold]
fn note_fan_error(first: &mut Option<NexusError>, err: NexusError) {
    match first {
        None => *first = Some(err),
        Some(_) => tracing::error!(error = %err, "fanout handler failed"),
    }
}

/// What each handler call of an event's dispatch needs, besides the cursor.
struct Calls<'a, 'b, 'c> {
    inner: &'a Inner,
    fans: &'a mut FanCopies,
    spare: &'a mut Spare,
    cx: &'a mut Context<'b>,
    first_error: &'a mut Option<Box<NexusError>>,
    keeps: bool,
    id: u64,
    event_type: &'c EventType,
}

/// What a handler's call leaves the event's dispatch to do.
enum Step {
    /// On to the event's next handler.
    Next,
    /// The dispatch's poll ends here.
    Over(Poll<()>),
}

/// The dispatch of one event: through the filters, then to its handlers.
struct Cursor {
    /// The event while it is still the dispatcher's; the last handler takes it.
    event: Option<Event>,
    /// What the event is to the events its handlers make.
    cause: Option<Cause>,
    at: At,
    /// The call that has to wait, if any.
    waiting: Option<Box<Waiting>>,
}

impl Cursor {
    /// At the start of `event`'s dispatch.
    fn new(event: Option<Event>) -> Self {
        Cursor {
            cause: event.as_ref().map(Event::as_cause),
            event,
            at: At::Filter(0),
            waiting: None,
        }
    }

    /// Starts on the event `EventQueue::pop_into` put in place.
    #[inline]
    fn begin_in_place(&mut self) {
        if let Some(event) = &self.event {
            self.cause = Some(event.as_cause());
        }
        self.at = At::Filter(0);
    }

    /// Starts on `event`.
    #[inline]
    fn begin(&mut self, event: Event) {
        self.cause = Some(event.as_cause());
        self.event = Some(event);
        self.at = At::Filter(0);
    }

    /// Calls filters and handlers in turn until the event is done with (and counted) or a call
    /// has to wait. The caller has marked this thread as dispatching for the nexus.
    #[inline]
    fn advance(
        &mut self,
        inner: &Inner,
        dispatcher: &mut Dispatcher,
        cx: &mut Context<'_>,
        first_error: &mut Option<Box<NexusError>>,
    ) -> Poll<()> {
        let Dispatcher {
            table, spare, fans, ..
        } = dispatcher;
        self.run(inner, table, fans, spare, cx, first_error)
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        inner: &Inner,
        table: &Table,
        fans: &mut FanCopies,
        spare: &mut Spare,
        cx: &mut Context<'_>,
        first_error: &mut Option<Box<NexusError>>,
    ) -> Poll<()> {
        if self.waiting.is_some()
            && let Some(over) = self.resume(inner, spare, cx, first_error)
        {
            return over;
        }
        let keeps = inner.policy.keeps_events();
        let first = match self.at {
            At::Filter(first) => {
                match filter_through(inner, table, &mut self.event, first, cx, spare, first_error) {
                    Filtered::Passed => 0,
                    Filtered::Over => return Poll::Ready(()),
                    Filtered::Waits(waiting, at) => {
                        self.at = At::Filter(at);
                        return self.wait(inner, waiting, cx, first_error);
                    }
                }
            }
            At::Handler(first) => first,
        };
        let Some(event) = &self.event else {
            return Poll::Ready(());
        };
        let (handlers, table_type) = table.lookup(&event.event_type);
        if handlers.is_empty() {
            self.unhandled(inner, first_error);
            return Poll::Ready(());
        }
        let event_type = type_for_counts(table_type, event);
        let event_type = &*event_type;
        let id = event.id;
        let mut calls = Calls {
            inner,
            fans,
            spare,
            cx,
            first_error,
            keeps,
            id,
            event_type,
        };
        if first == 0
            && let [entry] = handlers
        {
            // The common case, one handler: called without a loop around it.
            if let Step::Over(over) = self.call_at(&mut calls, 0, entry, true) {
                return over;
            }
        } else {
            // Handlers that need none of `call_at`'s bookkeeping are called in one loop, up to
            // the first that does.
            let mut first = first;
            if !keeps && !tracing::level_enabled!(tracing::Level::TRACE) {
                let Calls {
                    ref mut spare,
                    ref mut cx,
                    ref mut first_error,
                    ..
                } = calls;
                match call_each(
                    handlers,
                    first,
                    event_type,
                    &mut self.event,
                    inner,
                    cx,
                    spare,
                    first_error,
                ) {
                    None => return Poll::Ready(()),
                    Some(Halt::Waits(waiting, next)) => {
                        self.at = At::Handler(next);
                        return self.wait(inner, waiting, cx, first_error);
                    }
                    Some(Halt::Before(at)) => first = at,
                }
            }
            for (at, entry) in handlers.iter().enumerate().skip(first) {
                let last = at + 1 == handlers.len();
                if let Step::Over(over) = self.call_at(&mut calls, at, entry, last) {
                    return over;
                }
            }
        }
        count(inner, Counted::Dispatched, event_type);
        Poll::Ready(())
    }

    /// Calls the event's handler at `at` (`last` when it is the event's last): a fanout's
    /// handlers each in turn, any other as one guarded call.
    #[inline(always)]
    fn call_at(
        &mut self,
        calls: &mut Calls<'_, '_, '_>,
        at: usize,
        entry: &HandlerEntry,
        last: bool,
    ) -> Step {
        let Calls {
            inner,
            ref mut fans,
            ref mut spare,
            ref mut cx,
            ref mut first_error,
            keeps,
            id,
            event_type,
        } = *calls;
        // A fanout with no handler is called as a consumer: that reports it.
        if let Some(list) = entry.fan_out()
            && let (handlers, plain) = fans.handlers(list)
            && !handlers.is_empty()
        {
            self.at = At::Handler(at + 1);
            // Handlers that need none of `fan`'s bookkeeping are called in one loop.
            if plain && last && !keeps && !tracing::level_enabled!(tracing::Level::TRACE) {
                let called = call_fan(
                    handlers,
                    event_type,
                    &mut self.event,
                    inner,
                    cx,
                    spare,
                    first_error,
                );
                return match called {
                    None => Step::Over(Poll::Ready(())),
                    Some(waiting) => Step::Over(self.wait(inner, waiting, cx, first_error)),
                };
            }
            let turn = Turn {
                next: 0,
                last,
                error: None,
            };
            return match self.fan(
                inner,
                spare,
                cx,
                first_error,
                handlers,
                turn,
                None,
                id,
                event_type,
            ) {
                Fanned::Continue => Step::Next,
                Fanned::Over => Step::Over(Poll::Ready(())),
                Fanned::Waiting => Step::Over(Poll::Pending),
            };
        }
        let Some(event) = &self.event else {
            return Step::Over(Poll::Ready(()));
        };
        let kept = if last && keeps {
            Some(event.clone())
        } else {
            None
        };
        let limit = entry.time_limit().map(Limit::new);
        let span = dispatch_span(id, event_type, entry);
        let polled = call_handler(
            entry,
            &mut self.event,
            last,
            span.as_ref(),
            &inner.queue,
            cx,
            spare,
        );
        match polled {
            Ok(Ok(())) => Step::Next,
            Ok(Err(waits)) => {
                self.at = At::Handler(at + 1);
                let waiting = Waiting {
                    call: Flight::Handler(waits),
                    name: entry.name(),
                    limit,
                    span,
                    id,
                    event_type: event_type.clone(),
                    kept,
                    fan: None,
                };
                Step::Over(self.wait(inner, Box::new(waiting), cx, first_error))
            }
            Err(failure) => {
                let kept = kept.or_else(|| self.event.take().filter(|_| keeps));
                self.event = None;
                let err = failure_error(failure, id, event_type, entry.name());
                failed(inner, first_error, event_type, err, kept);
                Step::Over(Poll::Ready(()))
            }
        }
    }

    /// Polls the call that had to wait: `Some` with the poll's end when the event is done with
    /// or the call still waits, `None` to go on to the event's next handler. Out of line, so
    /// that a dispatch whose calls complete at once stays small.
    #[cold]
    #[inline(never)]
    fn resume(
        &mut self,
        inner: &Inner,
        spare: &mut Spare,
        cx: &mut Context<'_>,
        first_error: &mut Option<Box<NexusError>>,
    ) -> Option<Poll<()>> {
        let mut waiting = self.waiting.take()?;
        let mut polled = waiting.poll(cx);
        if polled.is_pending() {
            self.waiting = Some(waiting);
            return Some(Poll::Pending);
        }
        // The call is over: its drop, too, is part of it.
        if let Poll::Ready(Ok(_)) = polled
            && let Err(failure) = waiting.release()
        {
            polled = Poll::Ready(Err(failure));
        }
        if let Some(Fan { handlers, mut turn }) = waiting.fan.take() {
            if let Poll::Ready(Err(failure)) = polled {
                let err = failure_error(failure, waiting.id, &waiting.event_type, waiting.name);
                note_fan_error(&mut turn.error, err);
            }
            let kept = waiting.kept.take();
            match self.fan(
                inner,
                spare,
                cx,
                first_error,
                &handlers,
                turn,
                kept,
                waiting.id,
                &waiting.event_type,
            ) {
                Fanned::Continue => None,
                Fanned::Over => Some(Poll::Ready(())),
                Fanned::Waiting => Some(Poll::Pending),
            }
        } else {
            match polled {
                Poll::Pending => return Some(Poll::Pending),
                Poll::Ready(Ok(false)) => {
                    if self.event.is_none() {
                        // That was the last handler.
                        count(inner, Counted::Dispatched, &waiting.event_type);
                        return Some(Poll::Ready(()));
                    }
                }
                Poll::Ready(Ok(true)) => {
                    self.event = None;
                    count(inner, Counted::Filtered, &waiting.event_type);
                    return Some(Poll::Ready(()));
                }
                Poll::Ready(Err(failure)) => {
                    self.fail_waiting(inner, &mut waiting, failure, first_error);
                    return Some(Poll::Ready(()));
                }
            }
            None
        }
    }

    /// Calls a fanout's handlers from `turn.next` on, each as one of the nexus's own handlers
    /// (guarded, timed, traced); a failing one does not keep the others from their copy, and the
    /// first error is the event's once all were called.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn fan(
        &mut self,
        inner: &Inner,
        spare: &mut Spare,
        cx: &mut Context<'_>,
        first_error: &mut Option<Box<NexusError>>,
        handlers: &Arc<Vec<HandlerEntry>>,
        mut turn: Turn,
        mut kept: Option<Event>,
        id: u64,
        event_type: &EventType,
    ) -> Fanned {
        let keeps = inner.policy.keeps_events();
        // Counted in a local, so that it stays in a register; `turn` is written when a call
        // has to wait.
        let mut next = turn.next;
        while let Some(entry) = handlers.get(next) {
            next += 1;
            let last = turn.last && next == handlers.len();
            let Some(event) = &self.event else {
                return Fanned::Over;
            };
            if last && keeps {
                kept = Some(event.clone());
            }
            let limit = entry.time_limit().map(Limit::new);
            let span = dispatch_span(id, event_type, entry);
            let polled = call_handler(
                entry,
                &mut self.event,
                last,
                span.as_ref(),
                &inner.queue,
                cx,
                spare,
            );
            let failure = match polled {
                Ok(Ok(())) => continue,
                Ok(Err(call)) => {
                    let waiting = Waiting {
                        call: Flight::Handler(call),
                        name: entry.name(),
                        limit,
                        span,
                        id,
                        event_type: event_type.clone(),
                        kept: kept.take(),
                        fan: None,
                    };
                    turn.next = next;
                    match self.park_fan(Box::new(waiting), handlers, &mut turn, &mut kept, cx) {
                        None => return Fanned::Waiting,
                        Some(failure) => failure,
                    }
                }
                Err(failure) => failure,
            };
            note_fan_error(
                &mut turn.error,
                failure_error(failure, id, event_type, entry.name()),
            );
        }
        if let Some(err) = turn.error {
            let kept = kept.or_else(|| self.event.take().filter(|_| keeps));
            self.event = None;
            failed(inner, first_error, event_type, err, kept);
            return Fanned::Over;
        }
        if self.event.is_none() {
            // The fanout was the last handler, and its last handler had the event.
            count(inner, Counted::Dispatched, event_type);
            return Fanned::Over;
        }
        Fanned::Continue
    }

    /// Keeps a fanout's call that has to wait, with where the fanout stands (taken from `turn`),
    /// unless its time is already up: then gives the failure, and the kept copy back to `kept`.
    #[cold]
    fn park_fan(
        &mut self,
        mut waiting: Box<Waiting>,
        handlers: &Arc<Vec<HandlerEntry>>,
        turn: &mut Turn,
        kept: &mut Option<Event>,
        cx: &mut Context<'_>,
    ) -> Option<Failure> {
        if let Poll::Ready(Err(failure)) = waiting.timed_out(cx) {
            *kept = waiting.kept.take();
            return Some(failure);
        }
        let turn = std::mem::replace(
            turn,
            Turn {
                next: turn.next,
                last: turn.last,
                error: None,
            },
        );
        waiting.fan = Some(Fan {
            handlers: Arc::clone(handlers),
            turn,
        });
        self.waiting = Some(waiting);
        None
    }

    /// Keeps a call that has to wait, unless its time is already up.
    #[cold]
    fn wait(
        &mut self,
        inner: &Inner,
        mut waiting: Box<Waiting>,
        cx: &mut Context<'_>,
        first_error: &mut Option<Box<NexusError>>,
    ) -> Poll<()> {
        match waiting.timed_out(cx) {
            Poll::Ready(Err(failure)) => {
                self.fail_waiting(inner, &mut waiting, failure, first_error);
                Poll::Ready(())
            }
            _ => {
                self.waiting = Some(waiting);
                Poll::Pending
            }
        }
    }

    /// Ends the event whose waiting call failed.
    #[cold]
    fn fail_waiting(
        &mut self,
        inner: &Inner,
        waiting: &mut Waiting,
        failure: Failure,
        first_error: &mut Option<Box<NexusError>>,
    ) {
        let keeps = inner.policy.keeps_events();
        let kept = waiting
            .kept
            .take()
            .or_else(|| self.event.take().filter(|_| keeps));
        self.event = None;
        let err = failure_error(failure, waiting.id, &waiting.event_type, waiting.name);
        failed(inner, first_error, &waiting.event_type, err, kept);
    }

    /// Ends an event no handler takes.
    #[cold]
    fn unhandled(&mut self, inner: &Inner, first_error: &mut Option<Box<NexusError>>) {
        if let Some(event) = self.event.take() {
            let kept = inner.policy.keeps_events().then(|| event.clone());
            let event_type = event.event_type.clone();
            let err = NexusError::UnhandledEvent {
                event: Box::new(event),
            };
            failed(inner, first_error, &event_type, err, kept);
        }
    }
}

/// Which events a dispatch refuses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// None: a converter's event in hand when its loop stops is still dispatched.
    Unchecked,
    /// Refuses the event unless the loop is starting or running (`ingest`).
    Running,
    /// As `Running`, but also takes a producer's event while a shutdown drains producers.
    Producer,
}

/// Where a run's events come from ([`Dispatch::run`]: a producer, or the iterator given to
/// `ingest_all`): puts the next event in the slot it is given (the dispatch's cursor) and says
/// so, or says the run is over. Put in place: an event returned as an `Option<Event>` was copied
/// twice more on its way to the cursor, each copy reading in 16-byte pieces what the one before
/// had written in others, and waiting for those stores.
pub(crate) type Feed<'a> = &'a mut (dyn FnMut(&mut Option<Event>) -> bool + Send);

/// What a dispatch goes on with once its event is over: nothing (`()`, an `ingest`), or the
/// next event of a run (a [`Feed`]). A type, so that a single `ingest` carries nothing of it.
pub(crate) trait Then: Send + Unpin {
    /// Whether there may be a next event.
    const RUNS: bool;

    /// Puts the next event, if any, in `slot`; whether there was one.
    fn next_into(&mut self, slot: &mut Option<Event>) -> bool;
}

impl Then for () {
    const RUNS: bool = false;

    #[inline(always)]
    fn next_into(&mut self, _slot: &mut Option<Event>) -> bool {
        false
    }
}

impl Then for Feed<'_> {
    const RUNS: bool = true;

    #[inline]
    fn next_into(&mut self, slot: &mut Option<Event>) -> bool {
        self(slot)
    }
}

/// The future of one `ingest`: dispatches the event, then every secondary event it led to.
///
/// Dropped before it is over (cancelled), it leaves the nexus as if its event had failed with
/// [`NexusError::Cancelled`]: counted, and given to the error policy. Events its handlers had
/// queued stay on the queue, and the next dispatch of the nexus dispatches them before its own
/// event, their failures going to the error policy, never to that caller.
pub(super) struct Dispatch<'a, T: Then = ()> {
    check: Check,
    inner: &'a Inner,
    /// The event, until the dispatch is over or set under way (then in `live`). Dropped by
    /// hand, in [`Dispatch::cancel`]: with no drop of its own, the dispatch's drop is two tests
    /// where it was awaited.
    event: std::mem::ManuallyDrop<Option<Event>>,
    /// What follows the event, until the first poll takes it.
    then: Option<T>,
    /// All that needs dropping once the first poll has left the dispatch under way (made only
    /// then), dropped as soon as the dispatch is over: the future is then dropped in a couple of
    /// instructions, where it was awaited.
    live: Early<Live<'a, T>>,
}

/// A dispatch under way.
struct Live<'a, T> {
    inner: &'a Inner,
    /// The event being dispatched. Declared before the stage, so that a waiting call is dropped
    /// before the gate is released.
    cursor: Cursor,
    stage: Stage<'a>,
    /// With [`ErrorPolicy::Propagate`], the first failure, returned once the queue is empty.
    first_error: Option<Box<NexusError>>,
    /// The caller's own event, set aside while events that were on the queue before it took the
    /// gate (queued outside a dispatch, or left by a cancelled one) are dispatched first.
    own: Option<Box<Event>>,
    /// For a run of a producer's events, where the next ones come from.
    then: T,
}

/// Where a dispatch stands with the nexus's gate.
enum Stage<'a> {
    /// Not yet polled: the gate is still to be taken for the cursor's event.
    Fresh,
    /// Waiting for the gate, which another task holds.
    Locking(Pin<Box<dyn Future<Output = GateGuard<'a, Dispatcher>> + Send + 'a>>),
    /// Holding the gate.
    Held(GateGuard<'a, Dispatcher>),
}

impl<'a> Dispatch<'a> {
    /// Dispatches `event`, then every event waiting on the queue, first in first out. Every
    /// event is dispatched even if one fails; what happens to failures is the error policy's
    /// choice. `check` says when the event is refused.
    #[inline]
    pub(crate) fn new(inner: &'a Inner, event: Event, check: Check) -> Self {
        Dispatch::with(inner, event, check, ())
    }
}

impl<'a> Dispatch<'a, Feed<'a>> {
    /// Dispatches `event` as [`new`](Self::new) does (refused as `check` says), then, holding
    /// the gate on, the events `feed` gives, each with its secondary events, for as long as:
    /// each ends without an error for the caller, no other task waits for the gate, and the
    /// nexus takes events (running, and not in bit mode, which refuses some). Ready once `feed`
    /// gives `None` or the run stops for one of those reasons, with the error of its last event,
    /// if any; the caller goes on with a new run. Each event taken from `feed` is begun at once,
    /// so none is between the feed and the dispatch when the run is dropped.
    #[inline]
    pub(crate) fn run(inner: &'a Inner, event: Event, check: Check, feed: Feed<'a>) -> Self {
        Self::with(inner, event, check, feed)
    }
}

impl<'a, T: Then> Dispatch<'a, T> {
    #[inline(always)]
    fn with(inner: &'a Inner, mut event: Event, check: Check, then: T) -> Self {
        event.inherit_cause();
        Self {
            check,
            inner,
            event: std::mem::ManuallyDrop::new(Some(event)),
            then: Some(then),
            live: Early::empty(),
        }
    }

    /// The first poll: an event that takes the common course is dispatched straight through
    /// ([`straight`]), with nothing written to the dispatch; otherwise the dispatch is set under
    /// way from where the event stands.
    #[inline(never)]
    fn first(&mut self, cx: &mut Context<'_>) -> Poll<Option<Box<NexusError>>> {
        let Some(then) = self.then.take() else {
            // Not reached: the first poll is the one that finds `then`.
            return Poll::Ready(None);
        };
        let entry = if T::RUNS {
            Entry::Fresh
        } else {
            match straight(self.inner, self.check, &mut self.event, cx) {
                Straight::Done(done) => return Poll::Ready(done),
                Straight::Handover(entry) => entry,
            }
        };
        self.under_way(entry, then, cx)
    }

    /// Takes the event on from where `entry` says [`straight`] left it: through its filters and
    /// handlers, and, should a call have to wait or events be queued, sets the dispatch under
    /// way and drives it.
    #[cold]
    #[inline(never)]
    fn under_way(
        &mut self,
        entry: Entry<'a>,
        then: T,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Box<NexusError>>> {
        let inner = self.inner;
        let (guard, cursor, first_error) = match entry {
            Entry::Fresh => (None, Cursor::new(self.event.take()), None),
            Entry::Queued(guard) => {
                let live = self
                    .live
                    .set(Live::new(inner, Cursor::new(self.event.take()), then));
                live.stage = Stage::Held(guard);
                live.set_own_aside();
                return self.drive_live(cx);
            }
            Entry::Entered(mut guard) => {
                let mut cursor = Cursor::new(self.event.take());
                let mut first_error = None;
                let mark = Mark::push(address(inner), cursor.cause);
                let ran = cursor.advance(inner, &mut guard, cx, &mut first_error);
                drop(mark);
                if ran.is_ready() && !inner.queue.any() {
                    drop(guard);
                    return Poll::Ready(first_error);
                }
                (Some(guard), cursor, first_error)
            }
            Entry::Called {
                guard,
                cause,
                waiting,
                first_error,
            } => {
                let (waiting, at) = match waiting {
                    Some((waiting, at)) => (Some(waiting), at),
                    None => (None, At::Handler(1)),
                };
                let cursor = Cursor {
                    event: self.event.take(),
                    cause: Some(cause),
                    at,
                    waiting,
                };
                (Some(guard), cursor, first_error)
            }
        };
        let waits = cursor.waiting.is_some();
        let live = self.live.set(Live::new(inner, cursor, then));
        live.first_error = first_error;
        if let Some(guard) = guard {
            live.stage = Stage::Held(guard);
            if waits {
                return Poll::Pending;
            }
        }
        self.drive_live(cx)
    }

    /// Drives the dispatch under way, and drops what it holds once it is over; `Ready(None)`
    /// when polled again after it was over.
    #[inline(always)]
    fn drive_live(&mut self, cx: &mut Context<'_>) -> Poll<Option<Box<NexusError>>> {
        let Some(live) = self.live.get_mut() else {
            return Poll::Ready(None);
        };
        let done = ready!(live.drive(self.check, cx));
        self.live.drop_here();
        Poll::Ready(done)
    }

    /// Polls the dispatch after its first poll: `Ready(None)` when it is over without error.
    /// Kept out of line, so that the caller's `poll` is small and the common outcome, `Ok(())`,
    /// is known to it. What it holds is dropped here, out of line already, so that the drop (the
    /// gate's release) is no call of its own; the caller's `drop_now` then finds nothing left.
    #[inline(never)]
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<Option<Box<NexusError>>> {
        self.drive_live(cx)
    }
}

impl<'a, T: Then> Live<'a, T> {
    fn new(inner: &'a Inner, cursor: Cursor, then: T) -> Self {
        Live {
            inner,
            cursor,
            stage: Stage::Fresh,
            first_error: None,
            own: None,
            then,
        }
    }

    /// Takes the gate for the first event: at once, or after waiting for it. Ready with the
    /// dispatch's end when the event is refused or taken as a secondary event.
    #[inline(always)]
    fn enter(
        &mut self,
        check: Check,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<(), NexusError>>> {
        let inner = self.inner;
        if let Stage::Locking(lock) = &mut self.stage {
            let guard = ready!(lock.as_mut().poll(cx));
            self.stage = Stage::Held(guard);
            return Poll::Ready(None);
        }
        if check != Check::Unchecked {
            let raw = inner.state.load(Ordering::Acquire);
            if raw != LOOPING && raw != STARTING {
                return self.not_running(check, raw, cx);
            }
        }
        if inner.bit_mode
            && let Some(event) = &self.cursor.event
            && !event.event_type.is_bit()
        {
            return Poll::Ready(Some(self.refuse(|event| NexusError::NotABit { event })));
        }
        match inner.dispatcher.try_lock() {
            Some(guard) => {
                self.stage = Stage::Held(guard);
                Poll::Ready(None)
            }
            None => self.contended(check, cx),
        }
    }

    /// The loop is neither starting nor running: refuses the event, unless it is a producer's
    /// and a shutdown is draining producers.
    #[cold]
    fn not_running(
        &mut self,
        check: Check,
        raw: u8,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<(), NexusError>>> {
        let inner = self.inner;
        if check == Check::Producer && inner.draining.load(Ordering::Acquire) {
            return match inner.dispatcher.try_lock() {
                Some(guard) => {
                    self.stage = Stage::Held(guard);
                    Poll::Ready(None)
                }
                None => self.contended(Check::Unchecked, cx),
            };
        }
        Poll::Ready(Some(self.refuse(|event| NexusError::NotRunning {
            event,
            state: state_of(raw),
        })))
    }

    /// The gate is not free: waits for it, or, when a handler of this very nexus calls in, takes
    /// the event as a secondary one (waiting would deadlock), or refuses it when the call comes
    /// round through another nexus.
    #[cold]
    fn contended(
        &mut self,
        check: Check,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<(), NexusError>>> {
        let inner = self.inner;
        match nesting(inner) {
            Nesting::Outside => {
                self.stage = Stage::Locking(Box::pin(inner.dispatcher.lock()));
                self.enter(check, cx)
            }
            Nesting::Reentry => Poll::Ready(Some(match self.cursor.event.take() {
                // Counted as it arrives by the queue.
                Some(event) => inner.queue.put(event).inspect_err(|_| {
                    inner.arrived_outside.fetch_add(1, Ordering::Relaxed);
                    inner.returned.fetch_add(1, Ordering::Relaxed);
                }),
                None => Ok(()),
            })),
            Nesting::Cycle => Poll::Ready(Some(self.refuse(|event| NexusError::Cycle { event }))),
        }
    }

    /// Hands the event back in an error.
    #[cold]
    fn refuse(&mut self, error: impl FnOnce(Box<Event>) -> NexusError) -> Result<(), NexusError> {
        let inner = self.inner;
        match self.cursor.event.take() {
            Some(event) => {
                inner.arrived_outside.fetch_add(1, Ordering::Relaxed);
                inner.returned.fetch_add(1, Ordering::Relaxed);
                Err(error(Box::new(event)))
            }
            None => Ok(()),
        }
    }

    /// Takes the gate, then dispatches the event and the secondary events it leads to.
    #[inline]
    fn drive(&mut self, check: Check, cx: &mut Context<'_>) -> Poll<Option<Box<NexusError>>> {
        let inner = self.inner;
        if !matches!(self.stage, Stage::Held(_)) {
            if let Some(done) = ready!(self.enter(check, cx)) {
                return Poll::Ready(done.err().map(Box::new));
            }
            if let Stage::Held(guard) = &mut self.stage {
                // The event has arrived: counted here, under the gate, apart from its outcome.
                bump(&inner.outcomes.arrived);
                guard.refresh(inner);
                if inner.queue.any() {
                    self.set_own_aside();
                }
            }
        }
        let Stage::Held(guard) = &mut self.stage else {
            // Not reached: `enter` leaves the gate held when it is done without an outcome.
            return Poll::Ready(None);
        };
        // Handlers run only under this mark, which tells a call back into this nexus (queued) or
        // into one waiting further up (a cycle) from any other.
        let mark = Mark::push(address(inner), self.cursor.cause);
        if self.own.is_none() {
            ready!(
                self.cursor
                    .advance(inner, &mut *guard, cx, &mut self.first_error)
            );
        } else {
            ready!(advance_found(&mut self.cursor, inner, guard, cx));
        }
        if !T::RUNS && self.own.is_none() && !inner.queue.any() {
            return Poll::Ready(self.first_error.take());
        }
        self.drain(cx, mark.cause_before)
    }

    /// Dispatches what follows the event just done with, under the gate and the thread's mark:
    /// the secondary events on the queue, the caller's own event set aside, the next events of a
    /// run. Out of line, so that an event with nothing after it runs straight through.
    #[inline(never)]
    fn drain(
        &mut self,
        cx: &mut Context<'_>,
        cause_before: Option<Cause>,
    ) -> Poll<Option<Box<NexusError>>> {
        let inner = self.inner;
        let Stage::Held(guard) = &mut self.stage else {
            // Not reached: called only while the gate is held.
            return Poll::Ready(self.first_error.take());
        };
        loop {
            // The cursor's event was taken by its last handler (or the dispatch is over).
            #[allow(unsafe_code)]
            // SAFETY: this dispatch holds the gate (`Stage::Held`).
            match unsafe { inner.queue.pop_into(&mut self.cursor.event) } {
                true => {
                    guard.refresh(inner);
                    self.cursor.begin_in_place();
                }
                false => match self.own.take() {
                    Some(own) => {
                        guard.refresh(inner);
                        self.cursor.begin(*own);
                    }
                    None => match then(
                        &mut self.then,
                        inner,
                        guard,
                        &self.first_error,
                        &mut self.cursor.event,
                    ) {
                        true => {
                            // Arrived now, as an `ingest` of it would, with the cause the
                            // producer's events have outside the mark.
                            bump(&inner.outcomes.arrived);
                            if let Some(next) = &mut self.cursor.event {
                                next.inherit(cause_before);
                            }
                            guard.refresh(inner);
                            self.cursor.begin_in_place();
                        }
                        false => return Poll::Ready(self.first_error.take()),
                    },
                },
            }
            swap_current_cause(self.cursor.cause);
            if self.own.is_none() {
                let Dispatcher { table, spare, .. } = &mut **guard;
                let only = match &self.cursor.event {
                    Some(event) if table.filters.is_empty() => only_handler(inner, table, event),
                    _ => None,
                };
                if let Some((entry, table_type)) = only {
                    let cursor = &mut self.cursor;
                    if let Some(waiting) = call_only(
                        entry,
                        table_type,
                        &mut cursor.event,
                        inner,
                        cx,
                        spare,
                        &mut self.first_error,
                    ) {
                        cursor.at = At::Handler(1);
                        cursor.waiting = Some(waiting);
                        return Poll::Pending;
                    }
                    continue;
                }
                if !table.filters.is_empty()
                    && let Some(called) = filter_and_call(
                        &mut self.cursor,
                        table,
                        inner,
                        cx,
                        spare,
                        &mut self.first_error,
                    )
                {
                    ready!(called);
                    continue;
                }
                ready!(
                    self.cursor
                        .advance(inner, &mut *guard, cx, &mut self.first_error)
                );
            } else {
                ready!(advance_found(&mut self.cursor, inner, guard, cx));
            }
        }
    }

    /// Events were waiting on the queue when this dispatch took the gate: they are not the
    /// caller's, so they go first, and their failures go to the error policy alone.
    #[cold]
    fn set_own_aside(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: called only while this dispatch holds the gate.
        if let Some(next) = unsafe { self.inner.queue.pop() } {
            self.own = self.cursor.event.take().map(Box::new);
            self.cursor.begin(next);
        }
    }

    /// The dispatch was dropped before it was over: its events count as cancelled, and go to
    /// the error policy. What its handlers queued stays for the next dispatch.
    #[cold]
    #[inline(never)]
    fn cancel(&mut self) {
        let inner = self.inner;
        let keeps = inner.policy.keeps_events();
        if !matches!(self.stage, Stage::Held(_)) {
            // It never took the gate: its event arrives only to be cancelled.
            inner.arrived_outside.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(mut waiting) = self.cursor.waiting.take() {
            let kept = waiting
                .kept
                .take()
                .or_else(|| self.cursor.event.take().filter(|_| keeps));
            let (id, event_type) = (waiting.id, waiting.event_type.clone());
            // A panic in the call's drop is caught and reported by `Waiting`.
            drop(waiting);
            self.cursor.event = None;
            cancelled(inner, id, &event_type, kept);
        } else if let Some(event) = self.cursor.event.take() {
            let (id, event_type) = (event.id, event.event_type.clone());
            cancelled(inner, id, &event_type, keeps.then_some(event));
        }
        if let Some(own) = self.own.take() {
            let (id, event_type) = (own.id, own.event_type.clone());
            cancelled(inner, id, &event_type, keeps.then_some(*own));
        }
    }
}

/// How far [`straight`] took an event.
enum Straight<'a> {
    /// All the way: the dispatch is over, with this error for the caller, if any.
    Done(Option<Box<NexusError>>),
    /// Not all the way: the general course takes the event on from here.
    Handover(Entry<'a>),
}

/// Where the straight course left an event for the general one.
enum Entry<'a> {
    /// Before the gate: nothing done yet.
    Fresh,
    /// Holding the gate, the event counted as arrived and the table refreshed, with events
    /// queued before it, which go first.
    Queued(GateGuard<'a, Dispatcher>),
    /// As `Queued`, but with nothing queued: the event's filters and handlers to call, and it
    /// does not take the common course (see [`only_handler`]).
    Entered(GateGuard<'a, Dispatcher>),
    /// The event's filters and its one handler called, as far as they went: a call has to
    /// wait, or events they led to are queued.
    Called {
        guard: GateGuard<'a, Dispatcher>,
        /// What the event is to the events its filters and handler make.
        cause: Cause,
        /// The call that has to wait, if any, and where the event goes on from after it.
        waiting: Option<(Box<Waiting>, At)>,
        first_error: Option<Box<NexusError>>,
    },
}

/// Dispatches the event in `slot` in one go, as the general course would, when it takes the
/// common course: the nexus running and not in bit mode, the gate free, nothing queued before
/// it, its filters then its one handler all there is to call ([`only_handler`]), and each call
/// complete at once without queuing events. Anything else is handed over to
/// [`Dispatch::under_way`], with the event where it stands. Only locals are written until then,
/// where the general course writes its state into the dispatch and reads it back.
#[inline(always)]
fn straight<'a>(
    inner: &'a Inner,
    check: Check,
    slot: &mut Option<Event>,
    cx: &mut Context<'_>,
) -> Straight<'a> {
    let Some(event) = slot else {
        // Not reached: the first poll finds the event in its slot.
        return Straight::Done(None);
    };
    if check != Check::Unchecked {
        let raw = inner.state.load(Ordering::Acquire);
        if raw != LOOPING && raw != STARTING {
            return Straight::Handover(Entry::Fresh);
        }
    }
    if inner.bit_mode {
        return Straight::Handover(Entry::Fresh);
    }
    let Some(mut guard) = inner.dispatcher.try_lock() else {
        return Straight::Handover(Entry::Fresh);
    };
    // The event has arrived: counted here, under the gate, apart from its outcome.
    bump(&inner.outcomes.arrived);
    guard.refresh(inner);
    if inner.queue.any() {
        return Straight::Handover(Entry::Queued(guard));
    }
    let Dispatcher { table, spare, .. } = &mut *guard;
    let Some((entry, table_type)) = only_handler(inner, table, event) else {
        return Straight::Handover(Entry::Entered(guard));
    };
    let cause = event.as_cause();
    // Filters and handlers run only under this mark (see `Live::drive`).
    let mark = Mark::push(address(inner), Some(cause));
    let mut first_error = None;
    let filtered = if table.filters.is_empty() {
        Filtered::Passed
    } else {
        filter_all(inner, table, slot, cx, spare, &mut first_error)
    };
    let waiting = match filtered {
        Filtered::Passed => call_only(entry, table_type, slot, inner, cx, spare, &mut first_error)
            .map(|waiting| (waiting, At::Handler(1))),
        Filtered::Over => None,
        Filtered::Waits(waiting, at) => Some((waiting, At::Filter(at))),
    };
    drop(mark);
    if waiting.is_none() && !inner.queue.any() {
        drop(guard);
        return Straight::Done(first_error);
    }
    Straight::Handover(Entry::Called {
        guard,
        cause,
        waiting,
        first_error,
    })
}

/// The event's one handler, when calling it is all its dispatch takes once its filters have
/// passed it: no fanout, no time limit, no span wanted and no copy kept for a dead-letter
/// handler. Its call then needs none of the bookkeeping of [`Cursor::run`]. With it, the
/// table's copy of the event's type, if it has one ([`Table::lookup`]).
#[inline(always)]
fn only_handler<'t>(
    inner: &Inner,
    table: &'t Table,
    event: &Event,
) -> Option<(&'t HandlerEntry, Option<&'t EventType>)> {
    let ([entry], table_type) = table.lookup(&event.event_type) else {
        return None;
    };
    let plain = !inner.policy.keeps_events()
        && entry.is_plain()
        && !tracing::level_enabled!(tracing::Level::TRACE);
    plain.then_some((entry, table_type))
}

/// What an event's filters made of it.
enum Filtered {
    /// Every filter passed it.
    Passed,
    /// A filter consumed it, or failed: the event is done with, and counted.
    Over,
    /// A filter's call has to wait; the index of the filter after it.
    Waits(Box<Waiting>, usize),
}

/// Calls the event's filters in registration order from `first`, until one consumes it, fails
/// or has to wait.
#[inline(always)]
fn filter_through(
    inner: &Inner,
    table: &Table,
    slot: &mut Option<Event>,
    first: usize,
    cx: &mut Context<'_>,
    spare: &mut Spare,
    first_error: &mut Option<Box<NexusError>>,
) -> Filtered {
    let Some(event) = &*slot else {
        return Filtered::Over;
    };
    // The index stays in a register (a call that completes at once cannot be interrupted).
    let queue = &inner.queue;
    let mut at = first;
    // Written by a filter only when it returns `ASIDE`, which ends the loop.
    let mut aside = None;
    while let Some(entry) = table.filters.get(at) {
        at += 1;
        let failure = match caught(|| entry.filter.start_in(event, queue, cx, spare, &mut aside)) {
            Ok(PASSED) => continue,
            Ok(CONSUMED) => {
                count(inner, Counted::Filtered, &event.event_type);
                *slot = None;
                return Filtered::Over;
            }
            Ok(verdict) => match (verdict, aside.take()) {
                (ASIDE, Some(Aside::Waiting(call))) => {
                    let waiting = Waiting {
                        call: Flight::Filter(call),
                        name: entry.name,
                        limit: None,
                        span: None,
                        id: event.id,
                        event_type: event.event_type.clone(),
                        kept: None,
                        fan: None,
                    };
                    return Filtered::Waits(Box::new(waiting), at);
                }
                (ASIDE, Some(Aside::Failed(err))) => Failure::Error(err),
                // No filter gives another verdict, nor `ASIDE` with nothing aside.
                _ => continue,
            },
            Err(failure) => failure,
        };
        let err = failure_error(failure, event.id, &event.event_type, entry.name);
        let event_type = event.event_type.clone();
        let kept = slot.take().filter(|_| inner.policy.keeps_events());
        failed(inner, first_error, &event_type, err, kept);
        return Filtered::Over;
    }
    Filtered::Passed
}

/// [`filter_through`] from the first filter, out of line: for [`straight`], whose events mostly
/// meet no filter.
#[inline(never)]
fn filter_all(
    inner: &Inner,
    table: &Table,
    slot: &mut Option<Event>,
    cx: &mut Context<'_>,
    spare: &mut Spare,
    first_error: &mut Option<Box<NexusError>>,
) -> Filtered {
    filter_through(inner, table, slot, 0, cx, spare, first_error)
}

/// As [`straight`] calls them: the cursor's event's filters, then, if they all pass it, its one
/// handler, when that handler is all there is to call ([`only_handler`]); `None` when it is
/// not, for the general course. `Pending` when a call has to wait, kept in the cursor. Out of
/// line, so that an event that meets no filter is called with none of this around it.
#[inline(never)]
fn filter_and_call(
    cursor: &mut Cursor,
    table: &Table,
    inner: &Inner,
    cx: &mut Context<'_>,
    spare: &mut Spare,
    first_error: &mut Option<Box<NexusError>>,
) -> Option<Poll<()>> {
    let (entry, table_type) = only_handler(inner, table, cursor.event.as_ref()?)?;
    let slot = &mut cursor.event;
    let (waiting, at) = match filter_through(inner, table, slot, 0, cx, spare, first_error) {
        Filtered::Passed => match call_only(entry, table_type, slot, inner, cx, spare, first_error)
        {
            Some(waiting) => (waiting, At::Handler(1)),
            None => return Some(Poll::Ready(())),
        },
        Filtered::Over => return Some(Poll::Ready(())),
        Filtered::Waits(waiting, at) => (waiting, At::Filter(at)),
    };
    cursor.at = at;
    cursor.waiting = Some(waiting);
    Some(Poll::Pending)
}

/// Calls `entry`, the one handler of the event in `slot` and all there is to call
/// ([`only_handler`]), and counts how the event ended: the call, when it has to wait.
/// `table_type` is the table's copy of the event's type, if it has one, kept for the counts and
/// errors in place of a clone of the event's.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn call_only(
    entry: &HandlerEntry,
    table_type: Option<&EventType>,
    slot: &mut Option<Event>,
    inner: &Inner,
    cx: &mut Context<'_>,
    spare: &mut Spare,
    first_error: &mut Option<Box<NexusError>>,
) -> Option<Box<Waiting>> {
    let Some(event) = slot else {
        return None;
    };
    let event_type = type_for_counts(table_type, event);
    let event_type = &*event_type;
    let (id, name) = (event.id, entry.name());
    match call_handler(entry, slot, true, None, &inner.queue, cx, spare) {
        Ok(Ok(())) => {
            count(inner, Counted::Dispatched, event_type);
            None
        }
        Ok(Err(waits)) => Some(waiting_call(waits, entry, id, event_type.clone(), None)),
        Err(failure) => {
            *slot = None;
            let err = failure_error(failure, id, event_type, name);
            failed(inner, first_error, event_type, err, None);
            None
        }
    }
}

/// The event's type as its dispatch keeps it for its count and errors once the event has gone
/// to a handler: the table's copy where it has one ([`Table::lookup`]), since a clone of the
/// event's would count a reference on a name made at run time; else a clone.
#[inline(always)]
fn type_for_counts<'t>(table_type: Option<&'t EventType>, event: &Event) -> Cow<'t, EventType> {
    match table_type {
        Some(event_type) => Cow::Borrowed(event_type),
        None => Cow::Owned(event.event_type.clone()),
    }
}

/// A call of `entry` that has to wait, for the general course to poll.
#[inline(always)]
fn waiting_call(
    call: Call<'static, Result<(), BoxError>>,
    entry: &HandlerEntry,
    id: u64,
    event_type: EventType,
    fan: Option<Fan>,
) -> Box<Waiting> {
    Box::new(Waiting {
        call: Flight::Handler(call),
        name: entry.name(),
        limit: None,
        span: None,
        id,
        event_type,
        kept: None,
        fan,
    })
}

/// Calls `handlers`, those of a fanout that is the event's last handler and whose handlers
/// are plain ([`FanCopies::handlers`]), as [`Cursor::fan`] does when no span is wanted and no
/// copy kept: a copy each but the last, which gets the event, and the first error the event's
/// once all were called. Counts how the event ended; the call, when one has to wait (the
/// fanout's state with it).
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn call_fan(
    handlers: &Arc<Vec<HandlerEntry>>,
    event_type: &EventType,
    slot: &mut Option<Event>,
    inner: &Inner,
    cx: &mut Context<'_>,
    spare: &mut Spare,
    first_error: &mut Option<Box<NexusError>>,
) -> Option<Box<Waiting>> {
    let Some(event) = slot else {
        return None;
    };
    let id = event.id;
    let mut error = None;
    let mut next = 0;
    while let Some(entry) = handlers.get(next) {
        next += 1;
        let last = next == handlers.len();
        let failure = match call_handler(entry, slot, last, None, &inner.queue, cx, spare) {
            Ok(Ok(())) => continue,
            Ok(Err(call)) => {
                let turn = Turn {
                    next,
                    last: true,
                    error,
                };
                let fan = Fan {
                    handlers: Arc::clone(handlers),
                    turn,
                };
                return Some(waiting_call(call, entry, id, event_type.clone(), Some(fan)));
            }
            Err(failure) => failure,
        };
        note_fan_error(
            &mut error,
            failure_error(failure, id, event_type, entry.name()),
        );
    }
    match error {
        Some(err) => {
            *slot = None;
            failed(inner, first_error, event_type, err, None);
        }
        None => count(inner, Counted::Dispatched, event_type),
    }
    None
}

/// Where [`call_each`] stopped for an event not done with.
enum Halt {
    /// A call has to wait; the index of the handler after it.
    Waits(Box<Waiting>, usize),
    /// Before the handler at this index, which is not plain.
    Before(usize),
}

/// Calls the event's `handlers` from `first` on, as [`Cursor::run`] does when no span is
/// wanted and no copy kept: in turn, a copy each but the last, until one fails. Stops before a
/// handler that is not plain ([`HandlerEntry::is_plain`]). Counts how the event ended, when
/// it is done with.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn call_each(
    handlers: &[HandlerEntry],
    first: usize,
    event_type: &EventType,
    slot: &mut Option<Event>,
    inner: &Inner,
    cx: &mut Context<'_>,
    spare: &mut Spare,
    first_error: &mut Option<Box<NexusError>>,
) -> Option<Halt> {
    let Some(event) = slot else {
        return None;
    };
    let id = event.id;
    for (at, entry) in handlers.iter().enumerate().skip(first) {
        if !entry.is_plain() {
            return Some(Halt::Before(at));
        }
        let last = at + 1 == handlers.len();
        match call_handler(entry, slot, last, None, &inner.queue, cx, spare) {
            Ok(Ok(())) => {}
            Ok(Err(call)) => {
                let waiting = waiting_call(call, entry, id, event_type.clone(), None);
                return Some(Halt::Waits(waiting, at + 1));
            }
            Err(failure) => {
                *slot = None;
                let err = failure_error(failure, id, event_type, entry.name());
                failed(inner, first_error, event_type, err, None);
                return None;
            }
        }
    }
    count(inner, Counted::Dispatched, event_type);
    None
}

/// A dispatch dropped before it was first polled: its event arrives only to be cancelled.
#[cold]
#[inline(never)]
fn never_polled(inner: &Inner, event: Event) {
    inner.arrived_outside.fetch_add(1, Ordering::Relaxed);
    let (id, event_type) = (event.id, event.event_type.clone());
    let kept = inner.policy.keeps_events().then_some(event);
    cancelled(inner, id, &event_type, kept);
}

impl<T: Then> Drop for Dispatch<'_, T> {
    /// A dispatch dropped before it was over (a finished one has dropped what it held already,
    /// so that this is seen to do nothing where it was awaited) is cancelled.
    #[inline(always)]
    fn drop(&mut self) {
        if self.live.get_mut().is_some() || self.event.is_some() {
            self.cancel();
        }
    }
}

impl<T: Then> Dispatch<'_, T> {
    /// Cancels a dispatch dropped before it was over: the one under way, or the event never
    /// polled.
    #[cold]
    #[inline(never)]
    fn cancel(&mut self) {
        // Taken first, so that the slot is left empty whichever way this goes; a dispatch under
        // way has taken its event already.
        let event = self.event.take();
        match (self.live.get_mut(), event) {
            (Some(live), _) => live.cancel(),
            (None, Some(event)) => never_polled(self.inner, event),
            (None, None) => {}
        }
    }
}

/// Puts the next event of a run ([`Dispatch::run`]) in `slot` while the run may go on, taken
/// under the gate already held; whether it did.
#[inline(always)]
fn then<T: Then>(
    then: &mut T,
    inner: &Inner,
    guard: &GateGuard<'_, Dispatcher>,
    first_error: &Option<Box<NexusError>>,
    slot: &mut Option<Event>,
) -> bool {
    if !T::RUNS || first_error.is_some() || guard.others_wait() || inner.bit_mode {
        return false;
    }
    let raw = inner.state.load(Ordering::Acquire);
    if raw != LOOPING && raw != STARTING {
        return false;
    }
    then.next_into(slot)
}

/// Dispatches an event that was on the queue before this dispatch took the gate: its failure goes
/// to the error policy alone, never to this caller.
#[cold]
#[inline(never)]
fn advance_found(
    cursor: &mut Cursor,
    inner: &Inner,
    dispatcher: &mut Dispatcher,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let mut found_error = None;
    let advanced = cursor.advance(inner, dispatcher, cx, &mut found_error);
    if let Some(err) = found_error {
        tracing::error!(error = %err, "an event found on the queue failed");
    }
    advanced
}

/// Counts a cancelled event and hands it to the error policy (a caller who cancelled gets no
/// error: under `Propagate` and `Continue` it is reported through `tracing`).
#[cold]
fn cancelled(inner: &Inner, id: u64, event_type: &EventType, kept: Option<Event>) {
    inner.outcomes.cancelled.fetch_add(1, Ordering::Relaxed);
    if let Some(per_type) = &inner.per_type {
        super::lock(per_type)
            .entry(event_type.clone())
            .or_default()
            .count(Counted::Cancelled);
    }
    if let Some(ids) = super::lock(&inner.interrupted).as_mut() {
        ids.push(id);
    }
    let err = NexusError::Cancelled {
        id,
        event_type: event_type.clone(),
    };
    match (&inner.policy, kept) {
        (ErrorPolicy::DeadLetter(dead_letter), Some(copy)) => dead_letter.send(copy, err),
        _ => tracing::warn!(error = %err, "event cancelled"),
    }
}

impl<T: Then> Future for Dispatch<'_, T> {
    type Output = Result<(), NexusError>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let done = ready!(if this.then.is_some() {
            this.first(cx)
        } else {
            this.drive(cx)
        });
        // Here, so that where the future is awaited its drop is seen to have nothing left to do.
        this.live.drop_now();
        match done {
            None => Poll::Ready(Ok(())),
            Some(err) => Poll::Ready(Err(*err)),
        }
    }
}

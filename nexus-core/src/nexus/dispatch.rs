//! The dispatch of one event and the secondary events it leads to.
//!
//! This is the hot path: one async fn, so that an event passes through a single state machine;
//! no lock, allocation or reference count beyond the gate, the handler's own future and the
//! queue handle the handler is given. Each handler call is guarded: a panic or a timeout is a
//! failure of that handler, handled by the nexus's error policy, never the end of the nexus.

use std::any::Any;
use std::cell::Cell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use super::table::Table;
use super::{AsyncEventNexus, Inner, LOOPING, STARTING, state_of};
use crate::error::{BoxError, NexusError};
use crate::event::{Event, EventType};
use crate::handler::{Call, handler_error};
use crate::policy::ErrorPolicy;
use tracing::Instrument;

/// The dispatcher's own state, behind the nexus's gate: its snapshot of the handler table,
/// refreshed when registration has changed it.
#[derive(Default)]
pub(crate) struct Dispatcher {
    table: Arc<Table>,
    version: u64,
}

impl Dispatcher {
    #[inline]
    fn refresh(&mut self, inner: &Inner) {
        let version = inner.table_version.load(Ordering::Acquire);
        if version != self.version {
            self.table = Arc::clone(&super::lock(&inner.table));
            self.version = version;
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
    /// The id of the event being dispatched (meaningful while the gate is held).
    pub(crate) current: AtomicU64,
}

#[inline]
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// How deep a chain of nexuses calling into each other is tracked; deeper calls are still
/// dispatched, only not checked for cycles.
const TRACKED: usize = 8;

/// The nexuses whose handlers are being polled on this thread, innermost last.
struct Chain {
    depth: Cell<usize>,
    nexuses: [Cell<usize>; TRACKED],
}

thread_local! {
    static DISPATCHING: Chain = const {
        Chain {
            depth: Cell::new(0),
            nexuses: [const { Cell::new(0) }; TRACKED],
        }
    };
}

/// Marks this thread as polling a handler of the nexus at `address` while `body` runs.
#[inline]
fn marked<R>(address: usize, body: impl FnOnce() -> R) -> R {
    DISPATCHING.with(|chain| {
        let depth = chain.depth.get();
        if let Some(slot) = chain.nexuses.get(depth) {
            slot.set(address);
        }
        chain.depth.set(depth + 1);
    });
    let result = body();
    DISPATCHING.with(|chain| chain.depth.set(chain.depth.get().saturating_sub(1)));
    result
}

fn address(inner: &Inner) -> usize {
    std::ptr::from_ref(inner) as usize
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
        let depth = chain.depth.get().min(TRACKED);
        let found = chain.nexuses[..depth].iter().rposition(|a| a.get() == me);
        match found {
            None => Nesting::Outside,
            Some(at) if at + 1 == chain.depth.get() => Nesting::Reentry,
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

/// A handler's or filter's call, started and polled with this thread marked as dispatching for
/// its nexus (so that calls back into the nexus are recognised), its panics caught, and its time
/// limited. Starting happens in the first poll, under the same mark and catch.
struct Guarded<'a, T, S> {
    start: Option<S>,
    call: Call<'a, Result<T, BoxError>>,
    inner: usize,
    limit: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
}

impl<'a, T, S> Guarded<'a, T, S>
where
    S: FnOnce() -> Call<'a, Result<T, BoxError>>,
{
    #[inline]
    fn new(start: S, inner: &Inner, limit: Option<Duration>) -> Self {
        Self {
            start: Some(start),
            call: Call::Ready(None),
            inner: address(inner),
            limit: limit.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
        }
    }
}

impl<'a, T, S> Future for Guarded<'a, T, S>
where
    T: Unpin + Default,
    S: FnOnce() -> Call<'a, Result<T, BoxError>> + Unpin,
{
    type Output = Result<T, Failure>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let (start, call) = (&mut this.start, &mut this.call);
        let polled = marked(this.inner, || {
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                if let Some(start) = start.take() {
                    *call = start();
                }
                Pin::new(call).poll(cx)
            }))
        });
        match polled {
            Ok(Poll::Ready(Ok(value))) => Poll::Ready(Ok(value)),
            Ok(Poll::Ready(Err(err))) => Poll::Ready(Err(Failure::Error(err))),
            Err(payload) => Poll::Ready(Err(Failure::Panic(panic_message(&*payload)))),
            Ok(Poll::Pending) => {
                if let Some((limit, sleep)) = &mut this.limit
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(Failure::TimedOut(*limit)));
                }
                Poll::Pending
            }
        }
    }
}

/// How one event ended, as the counters see it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counted {
    Dispatched,
    Filtered,
    Unhandled,
    Failed,
}

/// The span of one handler call: event id, type and handler. Costs a check of a static when no
/// subscriber wants it.
#[inline]
fn dispatch_span(event: &Event, handler: &'static str) -> tracing::Span {
    tracing::trace_span!("dispatch", id = event.id, event_type = %event.event_type, handler)
}

/// Awaits `guarded` inside its handler's span, when a subscriber wants the span.
async fn traced<'a, T, S>(
    guarded: Guarded<'a, T, S>,
    event: &Event,
    handler: &'static str,
) -> Result<T, Failure>
where
    T: Unpin + Default,
    S: FnOnce() -> Call<'a, Result<T, BoxError>> + Unpin,
{
    let span = dispatch_span(event, handler);
    if span.is_disabled() {
        guarded.await
    } else {
        guarded.instrument(span).await
    }
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

impl AsyncEventNexus {
    /// Dispatches `event`, then every event waiting on the queue, first in first out. Every
    /// event is dispatched even if one fails; what happens to failures is the error policy's
    /// choice. With `checked`, refuses the event unless the loop is starting or running.
    pub(super) async fn dispatch(&self, event: Event, checked: bool) -> Result<(), NexusError> {
        let inner = &*self.inner;
        if checked {
            let raw = inner.state.load(Ordering::Acquire);
            if raw != LOOPING && raw != STARTING {
                inner.returned.fetch_add(1, Ordering::Relaxed);
                return Err(NexusError::NotRunning {
                    event: Box::new(event),
                    state: state_of(raw),
                });
            }
        }
        let mut dispatcher = match inner.dispatcher.try_lock() {
            Some(guard) => guard,
            None => match nesting(inner) {
                Nesting::Outside => inner.dispatcher.lock().await,
                // A handler of this very dispatch calls back in: waiting would deadlock, so the
                // event is taken like a secondary event.
                Nesting::Reentry => {
                    return inner.queue.put(event).inspect_err(|_| {
                        inner.returned.fetch_add(1, Ordering::Relaxed);
                    });
                }
                Nesting::Cycle => {
                    inner.returned.fetch_add(1, Ordering::Relaxed);
                    return Err(NexusError::Cycle {
                        event: Box::new(event),
                    });
                }
            },
        };
        let outcomes = &inner.outcomes;
        let policy = &inner.policy;
        let mut event = event;
        let mut first_error: Option<NexusError> = None;
        loop {
            dispatcher.refresh(inner);
            outcomes.current.store(event.id, Ordering::Relaxed);
            let table = &*dispatcher.table;
            // The event's copy, kept only when a dead-letter handler may need it.
            let mut kept = None;
            // The type, kept only when counts per type are wanted.
            let counted_type = inner.per_type.as_ref().map(|_| event.event_type.clone());
            let result: Result<Counted, NexusError> = 'event: {
                for entry in &table.filters {
                    let call = || entry.filter.call(&event, &inner.queue);
                    match Guarded::new(call, inner, None).await {
                        Ok(true) => break 'event Ok(Counted::Filtered),
                        Ok(false) => {}
                        Err(failure) => {
                            kept = Some(event.clone());
                            let err =
                                failure_error(failure, event.id, &event.event_type, entry.name);
                            break 'event Err(err);
                        }
                    }
                }
                let handlers = table.lookup(&event.event_type);
                let Some((last, rest)) = handlers.split_last() else {
                    kept = policy.keeps_events().then(|| event.clone());
                    break 'event Err(NexusError::UnhandledEvent {
                        event: Box::new(event),
                    });
                };
                for entry in rest {
                    let call = || entry.start(event.clone(), inner.queue.clone());
                    let guarded = Guarded::new(call, inner, entry.time_limit());
                    if let Err(failure) = traced(guarded, &event, entry.name()).await {
                        kept = Some(event.clone());
                        let err = failure_error(failure, event.id, &event.event_type, entry.name());
                        break 'event Err(err);
                    }
                }
                let (id, event_type) = (event.id, event.event_type.clone());
                if policy.keeps_events() {
                    kept = Some(event.clone());
                }
                let span = dispatch_span(&event, last.name());
                let call = || last.start(event, inner.queue.clone());
                let guarded = Guarded::new(call, inner, last.time_limit());
                let outcome = if span.is_disabled() {
                    guarded.await
                } else {
                    guarded.instrument(span).await
                };
                match outcome {
                    Ok(()) => Ok(Counted::Dispatched),
                    Err(failure) => Err(failure_error(failure, id, &event_type, last.name())),
                }
            };
            let counted = match &result {
                Ok(counted) => *counted,
                Err(NexusError::UnhandledEvent { .. }) => Counted::Unhandled,
                Err(_) => Counted::Failed,
            };
            bump(match counted {
                Counted::Dispatched => &outcomes.dispatched,
                Counted::Filtered => &outcomes.filtered,
                Counted::Unhandled => &outcomes.unhandled,
                Counted::Failed => &outcomes.failed,
            });
            if let (Some(per_type), Some(event_type)) = (&inner.per_type, counted_type) {
                super::lock(per_type)
                    .entry(event_type)
                    .or_default()
                    .count(counted);
            }
            if let Err(err) = result {
                match policy {
                    ErrorPolicy::Propagate => match first_error {
                        None => first_error = Some(err),
                        Some(_) => tracing::error!(error = %err, "secondary event failed"),
                    },
                    ErrorPolicy::Continue => tracing::error!(error = %err, "event failed"),
                    ErrorPolicy::DeadLetter(dead_letter) => match kept.take() {
                        Some(copy) => dead_letter.send(copy, err),
                        None => tracing::error!(error = %err, "event failed"),
                    },
                }
            }
            match inner.queue.pop() {
                Some(next) => event = next,
                None => break,
            }
        }
        match first_error {
            None => Ok(()),
            Some(err) => Err(err),
        }
    }
}

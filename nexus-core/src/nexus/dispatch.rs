//! The dispatch of one event and the secondary events it leads to.
//!
//! This is the hot path: one async fn, so that an event passes through a single state machine;
//! no lock, allocation or reference count beyond the gate, the handler's own future and the
//! queue handle the handler is given.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use super::table::Table;
use super::{AsyncEventNexus, Inner, LOOPING, STARTING, state_of};
use crate::error::{BoxError, NexusError};
use crate::event::Event;
use crate::handler::{Call, handler_error};

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

thread_local! {
    /// The address of the nexus whose handler is being polled on this thread, or 0.
    static DISPATCHING: Cell<usize> = const { Cell::new(0) };
}

fn address(inner: &Inner) -> usize {
    std::ptr::from_ref(inner) as usize
}

/// A handler's or filter's call, polled with this thread marked as dispatching for `inner`, so
/// that an `ingest` into the same nexus from inside the handler is recognised as re-entry.
struct Marked<'a, T> {
    call: Call<'a, Result<T, BoxError>>,
    inner: usize,
}

impl<T: Unpin + Default> Future for Marked<'_, T> {
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let previous = DISPATCHING.replace(self.inner);
        let polled = Pin::new(&mut self.call).poll(cx);
        DISPATCHING.set(previous);
        polled
    }
}

impl AsyncEventNexus {
    /// Dispatches `event`, then every event waiting on the queue, first in first out. Every
    /// event is dispatched even if one fails; the first error is returned and later ones are
    /// logged. With `checked`, refuses the event unless the loop is starting or running.
    pub(super) async fn dispatch(&self, event: Event, checked: bool) -> Result<(), NexusError> {
        let inner = &*self.inner;
        if checked {
            let raw = inner.state.load(Ordering::Acquire);
            if raw != LOOPING && raw != STARTING {
                return Err(NexusError::NotRunning {
                    event: Box::new(event),
                    state: state_of(raw),
                });
            }
        }
        let mut dispatcher = match inner.dispatcher.try_lock() {
            Some(guard) => guard,
            None => {
                if DISPATCHING.get() == address(inner) {
                    // Re-entry from a handler of this very dispatch: waiting would deadlock.
                    return inner.queue.put(event);
                }
                inner.dispatcher.lock().await
            }
        };
        let marker = address(inner);
        let mut event = event;
        let mut first_error: Option<NexusError> = None;
        loop {
            dispatcher.refresh(inner);
            let table = &*dispatcher.table;
            let result = 'event: {
                for entry in &table.filters {
                    let call = entry.filter.call(&event, &inner.queue);
                    match (Marked {
                        call,
                        inner: marker,
                    })
                    .await
                    {
                        Ok(true) => break 'event Ok(()),
                        Ok(false) => {}
                        Err(err) => {
                            break 'event Err(handler_error(
                                err,
                                event.id,
                                &event.event_type,
                                entry.name,
                            ));
                        }
                    }
                }
                let handlers = table.lookup(&event.event_type);
                let Some((last, rest)) = handlers.split_last() else {
                    break 'event Err(NexusError::UnhandledEvent {
                        event: Box::new(event),
                    });
                };
                for entry in rest {
                    let call = entry.start(event.clone(), inner.queue.clone());
                    if let Err(err) = (Marked {
                        call,
                        inner: marker,
                    })
                    .await
                    {
                        break 'event Err(handler_error(
                            err,
                            event.id,
                            &event.event_type,
                            entry.name(),
                        ));
                    }
                }
                let (id, event_type) = (event.id, event.event_type.clone());
                let call = last.start(event, inner.queue.clone());
                let outcome: Result<(), BoxError> = (Marked {
                    call,
                    inner: marker,
                })
                .await;
                outcome.map_err(|err| handler_error(err, id, &event_type, last.name()))
            };
            if let Err(err) = result {
                match first_error {
                    None => first_error = Some(err),
                    Some(_) => tracing::error!(error = %err, "secondary event failed"),
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

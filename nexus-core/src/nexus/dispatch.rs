//! The dispatch of one event and the secondary events it leads to.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Inner;
use super::table::Table;
use crate::error::NexusError;
use crate::event::Event;
use crate::handler::handler_error;
use crate::queue::EventQueue;

/// The dispatcher's own state, behind the nexus's one-at-a-time lock: its snapshot of the
/// handler table, refreshed when registration has changed it.
#[derive(Default)]
pub(crate) struct Dispatcher {
    table: Arc<Table>,
    version: u64,
}

impl Dispatcher {
    /// Dispatches `event`, then every event waiting on the queue, first in first out. Every
    /// event is dispatched even if one fails; the first error is returned and later ones are
    /// logged.
    pub(super) async fn run(&mut self, inner: &Inner, event: Event) -> Result<(), NexusError> {
        let mut first_error = None;
        let mut next = Some(event);
        while let Some(event) = next {
            self.refresh(inner);
            if let Err(err) = dispatch_one(&self.table, &inner.queue, event).await {
                match first_error {
                    None => first_error = Some(err),
                    Some(_) => tracing::error!(error = %err, "secondary event failed"),
                }
            }
            next = inner.queue.pop();
        }
        first_error.map_or(Ok(()), Err)
    }

    #[inline]
    fn refresh(&mut self, inner: &Inner) {
        let version = inner.table_version.load(Ordering::Acquire);
        if version != self.version {
            self.table = Arc::clone(&super::lock(&inner.table));
            self.version = version;
        }
    }
}

/// Filters, then the handlers for the event's type, else `UnhandledEvent`.
async fn dispatch_one(table: &Table, queue: &EventQueue, event: Event) -> Result<(), NexusError> {
    for entry in &table.filters {
        match entry.filter.call(&event, queue).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(err) => return Err(handler_error(err, event.id, &event.event_type, entry.name)),
        }
    }
    let handlers = table.lookup(&event.event_type);
    let Some((last, rest)) = handlers.split_last() else {
        return Err(NexusError::UnhandledEvent {
            event: Box::new(event),
        });
    };
    for entry in rest {
        if let Err(err) = entry.handler.call(event.clone(), queue.clone()).await {
            return Err(handler_error(err, event.id, &event.event_type, entry.name));
        }
    }
    let id = event.id;
    let event_type = event.event_type.clone();
    last.handler
        .call(event, queue.clone())
        .await
        .map_err(|err| handler_error(err, id, &event_type, last.name))
}

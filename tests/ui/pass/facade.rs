//! The attributes through the `nexus` facade alone.
use nexus::{
    Event, EventQueue, EventSource, NexusError, SimpleEventConverter, async_trait, event_source,
    filter, handler,
};

#[handler(event_type = 1)]
async fn one(_event: Event, _queue: EventQueue) {}

#[filter]
async fn none(_event: &Event, _queue: &EventQueue) -> bool {
    false
}

#[event_source(new = Empty)]
struct Empty;

impl EventSource for Empty {}

#[async_trait]
impl SimpleEventConverter for Empty {
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        Err(NexusError::NoMoreEvents)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let listing = nexus::registrations();
    assert_eq!((listing.handlers.len(), listing.filters.len(), listing.sources.len()), (1, 1, 1));
    nexus::registered().until_exhausted(true).stop_on_signals(false).run().await.unwrap();
}

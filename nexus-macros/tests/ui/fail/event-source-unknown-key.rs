use nexus_core::{Event, EventSource, NexusError, SimpleEventConverter, async_trait, event_source};

#[event_source(constructor = Source)]
struct Source;

impl EventSource for Source {}

#[async_trait]
impl SimpleEventConverter for Source {
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        Err(NexusError::NoMoreEvents)
    }
}

fn main() {}

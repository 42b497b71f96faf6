//! The attributes through `nexus-core` alone, without the `nexus` facade.
use nexus_core::{Event, EventQueue, event_source, filter, handler};

#[handler(event_type = -1)]
async fn fallback(_event: Event, _queue: EventQueue) {}

#[filter]
async fn keep(_event: &Event, _queue: &EventQueue) -> bool {
    false
}

#[event_source]
#[derive(Default)]
struct Producer {
    link: nexus_core::ProducerLink,
}

impl nexus_core::EventSource for Producer {}

impl nexus_core::EventProducer for Producer {
    fn link(&self) -> &nexus_core::ProducerLink {
        &self.link
    }
}

fn main() {
    let nexus = nexus_core::registered().build().unwrap();
    assert_eq!(nexus.source_count(), 1);
    assert_eq!(nexus_core::registrations().filters.len(), 1);
}

use nexus_core::{Event, EventQueue, handler};

#[handler(event_type = 10..=1)]
async fn backwards(_event: Event, _queue: EventQueue) {}

fn main() {}

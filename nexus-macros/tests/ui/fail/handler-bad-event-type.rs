use nexus_core::{Event, EventQueue, handler};

#[handler(event_type = 1.5)]
async fn fractional(_event: Event, _queue: EventQueue) {}

fn main() {}

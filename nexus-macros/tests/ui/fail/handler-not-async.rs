use nexus_core::{Event, EventQueue, handler};

#[handler(event_type = 1)]
fn not_async(_event: Event, _queue: EventQueue) {}

fn main() {}

use nexus_core::{Event, EventQueue, handler};

#[handler(event_type = 1)]
async fn generic<T>(_event: Event, _queue: EventQueue) {}

fn main() {}

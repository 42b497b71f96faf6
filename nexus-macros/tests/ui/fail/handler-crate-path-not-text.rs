use nexus_core::{Event, EventQueue, handler};

#[handler(event_type = 3, crate = nexus_core)]
async fn renamed(_event: Event, _queue: EventQueue) {}

fn main() {}

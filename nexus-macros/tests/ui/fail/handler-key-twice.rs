use nexus_core::{Event, EventQueue, handler};

#[handler(event_type = 1, event_type = 2)]
async fn twice(_event: Event, _queue: EventQueue) {}

fn main() {}

use nexus_core::{Event, EventQueue, handler};

#[handler(evnt_type = 1)]
async fn misspelt(_event: Event, _queue: EventQueue) {}

fn main() {}

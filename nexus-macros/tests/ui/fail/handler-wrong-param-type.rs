use nexus_core::{EventQueue, handler};

#[handler(event_type = 1)]
async fn takes_text(_event: String, _queue: EventQueue) {}

fn main() {}

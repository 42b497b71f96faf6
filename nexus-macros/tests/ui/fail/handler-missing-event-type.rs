use nexus_core::{Event, EventQueue, handler};

#[handler]
async fn which_type(_event: Event, _queue: EventQueue) {}

fn main() {}

use nexus_core::{Event, handler};

#[handler(event_type = 1)]
async fn only_event(_event: Event) {}

fn main() {}

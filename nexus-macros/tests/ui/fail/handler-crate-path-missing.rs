//! The generated code names the `crate` given, not the core.
use nexus_core::{Event, EventQueue, handler};

#[handler(event_type = 3, crate = "missing")]
async fn renamed(_event: Event, _queue: EventQueue) {}

fn main() {}

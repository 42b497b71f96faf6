use nexus_core::{Event, EventQueue, filter};

#[filter]
fn not_async(_event: &Event, _queue: &EventQueue) -> bool {
    false
}

fn main() {}

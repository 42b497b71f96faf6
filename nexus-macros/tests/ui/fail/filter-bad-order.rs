use nexus_core::{Event, EventQueue, filter};

#[filter(order = "first")]
async fn ordered(_event: &Event, _queue: &EventQueue) -> bool {
    false
}

fn main() {}

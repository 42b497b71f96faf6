use nexus_core::{Event, EventQueue, filter};

#[filter]
async fn owns_event(_event: Event, _queue: &EventQueue) -> bool {
    false
}

fn main() {}

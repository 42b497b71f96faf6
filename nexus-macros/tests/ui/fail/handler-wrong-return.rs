use nexus_core::{Event, EventQueue, handler};

#[handler(event_type = 1)]
async fn returns_number(_event: Event, _queue: EventQueue) -> u32 {
    7
}

fn main() {}

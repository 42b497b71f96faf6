use nexus_core::{Event, EventQueue, filter};

#[filter]
async fn returns_text(_event: &Event, _queue: &EventQueue) -> String {
    String::new()
}

fn main() {}

use nexus_core::{Event, handler};

struct Service;

impl Service {
    #[handler(event_type = 1)]
    async fn method(&self, _event: Event) {}
}

fn main() {}

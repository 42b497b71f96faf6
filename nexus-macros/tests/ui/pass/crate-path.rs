//! `crate = "path"` names nexus where the user reaches it under another name.
use nexus_core as events;

#[events::handler(event_type = 3, crate = "events")]
async fn renamed(_event: events::Event, _queue: events::EventQueue) {}

fn main() {
    assert_eq!(events::registrations().handlers.len(), 1);
}

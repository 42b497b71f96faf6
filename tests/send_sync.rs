//! The types users move between tasks are `Send + Sync`.

fn is_send_sync<T: Send + Sync>() {}

#[test]
fn handles_events_and_errors_are_send_and_sync() {
    is_send_sync::<nexus::Event>();
    is_send_sync::<nexus::AsyncEventNexus>();
    is_send_sync::<nexus::WeakNexus>();
    is_send_sync::<nexus::EventQueue>();
    is_send_sync::<nexus::EventFactory>();
    is_send_sync::<nexus::ProducerLink>();
    is_send_sync::<nexus::NexusError>();
    is_send_sync::<nexus::sources::Timer>();
}

#[test]
fn ingest_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let nexus = nexus::AsyncEventNexus::new();
    is_send(&nexus.ingest(nexus::Event::new(1, 1, 0, ())));
    let mut events = std::iter::once(nexus::Event::new(1, 1, 0, ()));
    is_send(&nexus.ingest_all(&mut events));
    is_send(&nexus.loop_forever());
    is_send(&nexus.cleanup());
}

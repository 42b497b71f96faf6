//! Named event types state their names: the name is what selects handlers and what travels,
//! whatever the Rust type's path, and one name means one type on a nexus.

use std::sync::{Arc, Mutex};

use nexus::{AsyncEventNexus, Event, EventKind, EventQueue, EventType, NexusError, Selector};

mod ordering {
    /// An order, in one part of a program.
    #[derive(Debug)]
    pub(crate) struct Placed;

    impl nexus::EventKind for Placed {
        const NAME: &'static str = "order.placed";
    }
}

mod billing {
    /// Another type, in another module, that states the same name by mistake.
    #[derive(Debug)]
    pub(crate) struct Placed;

    impl nexus::EventKind for Placed {
        const NAME: &'static str = "order.placed";
    }
}

/// A type whose name is unlike its path.
#[derive(Debug)]
struct Renamed;

impl EventKind for Renamed {
    const NAME: &'static str = "renamed";
}

#[test]
fn an_event_types_name_is_the_name_it_states_not_its_path() {
    let path = std::any::type_name::<Renamed>();
    assert_ne!(path, "renamed", "the test needs a path unlike the name");
    assert_eq!(EventType::of::<Renamed>(), EventType::name("renamed"));
    assert_eq!(EventType::of::<Renamed>().to_string(), "renamed");
    let event = Event::named(1, Renamed);
    assert_eq!(event.event_type.as_name(), Some("renamed"));
    assert!(!event.to_string().contains(path), "{event}");
    // Two types of one name are one event type: what travels cannot tell them apart.
    assert_eq!(
        EventType::of::<ordering::Placed>(),
        EventType::of::<billing::Placed>()
    );
}

#[test]
fn two_types_registered_under_one_name_are_an_error_naming_both() {
    let nexus = AsyncEventNexus::builder().multiple(true).build();
    let handler = |_e: Event, _q: EventQueue| {};
    nexus
        .add_handler(Selector::of::<ordering::Placed>(), handler)
        .unwrap();
    // The same type again is allowed in `multiple` mode.
    nexus
        .add_handler(Selector::of::<ordering::Placed>(), handler)
        .unwrap();
    let err = nexus
        .add_handler(Selector::of::<billing::Placed>(), handler)
        .unwrap_err();
    let NexusError::EventNameClash {
        name,
        first,
        second,
    } = &err
    else {
        panic!("expected EventNameClash, got {err}");
    };
    assert_eq!(*name, "order.placed");
    assert_eq!(*first, std::any::type_name::<ordering::Placed>());
    assert_eq!(*second, std::any::type_name::<billing::Placed>());
    let message = err.to_string();
    assert!(message.contains("ordering::Placed"), "{message}");
    assert!(message.contains("billing::Placed"), "{message}");
    assert!(message.contains("\"order.placed\""), "{message}");
}

#[test]
fn a_clash_within_one_list_is_refused_whole() {
    let nexus = AsyncEventNexus::new();
    let err = nexus
        .add_handler(
            vec![
                Selector::from(5),
                Selector::of::<ordering::Placed>(),
                Selector::of::<billing::Placed>(),
            ],
            |_e: Event, _q: EventQueue| {},
        )
        .unwrap_err();
    assert!(matches!(err, NexusError::EventNameClash { .. }), "{err}");
    // Nothing of the list was registered: type 5 is still free, and so is the name.
    nexus
        .add_handler(5, |_e: Event, _q: EventQueue| {})
        .unwrap();
    nexus
        .add_handler(
            Selector::of::<billing::Placed>(),
            |_e: Event, _q: EventQueue| {},
        )
        .unwrap();
}

#[test]
fn a_name_registered_as_text_and_as_a_type_is_one_event_type() {
    let nexus = AsyncEventNexus::new();
    nexus
        .add_handler("order.placed", |_e: Event, _q: EventQueue| {})
        .unwrap();
    let err = nexus
        .add_handler(
            Selector::of::<ordering::Placed>(),
            |_e: Event, _q: EventQueue| {},
        )
        .unwrap_err();
    assert!(matches!(err, NexusError::DuplicateHandler { .. }), "{err}");
}

/// A name made at run time, as one read off the wire is (shared text whose references the test
/// counts), and a handler that writes down how many references the name has while it is called.
#[derive(Clone)]
struct NameProbe {
    name: Arc<str>,
    seen: Arc<Mutex<Option<usize>>>,
}

impl NameProbe {
    fn new() -> Self {
        Self {
            name: Arc::from(String::from("order.shipped")),
            seen: Arc::default(),
        }
    }

    /// The name as an event type, sharing the probe's text.
    fn event_type(&self) -> EventType {
        EventType::Named(nexus::Text::from(Arc::clone(&self.name)))
    }

    /// How many references the name has now.
    fn references(&self) -> usize {
        Arc::strong_count(&self.name)
    }

    fn handler(&self) -> impl Fn(Event, EventQueue) + Send + Sync + 'static {
        let probe = self.clone();
        move |_event: Event, _queue: EventQueue| {
            *probe.seen.lock().unwrap() = Some(probe.references());
        }
    }

    /// Runs `nexus` and ingests one event of the name: the references the name had while the
    /// handler was called must be those it had just before (the event's own, the table's, the
    /// probes'), none counted by the dispatch.
    async fn ingest_without_a_count(&self, nexus: AsyncEventNexus, course: &str) {
        let _running = nexus.start().unwrap();
        let event = Event::new(1, self.event_type(), 0, ());
        let before = self.references();
        nexus.ingest(event).await.unwrap();
        assert_eq!(*self.seen.lock().unwrap(), Some(before), "{course}");
    }
}

/// An event of a named type is dispatched without a reference counted on its name (a locked
/// instruction each way): the dispatch keeps the table's copy of the type for its counts and
/// errors, where a clone of the event's would count one. Seen from the handler that gets the
/// event, on each course a dispatch takes: one handler, one behind a filter, the last of two
/// handlers in `multiple` mode, the last handler of a fanout, and an event put by a handler.
#[tokio::test]
async fn a_name_made_at_run_time_is_dispatched_without_a_reference_counted_on_it() {
    let probe = NameProbe::new();
    let nexus = AsyncEventNexus::new();
    nexus
        .add_handler(probe.event_type(), probe.handler())
        .unwrap();
    probe.ingest_without_a_count(nexus, "one handler").await;

    let probe = NameProbe::new();
    let nexus = AsyncEventNexus::new();
    nexus.add_filter(|_e: &Event, _q: &EventQueue| false);
    nexus
        .add_handler(probe.event_type(), probe.handler())
        .unwrap();
    probe.ingest_without_a_count(nexus, "behind a filter").await;

    // The first of the two gets a copy, dropped by the time the second is called.
    let probe = NameProbe::new();
    let nexus = AsyncEventNexus::builder().multiple(true).build();
    nexus
        .add_handler(probe.event_type(), |_e: Event, _q: EventQueue| {})
        .unwrap();
    nexus
        .add_handler(probe.event_type(), probe.handler())
        .unwrap();
    probe.ingest_without_a_count(nexus, "multiple mode").await;

    let probe = NameProbe::new();
    let nexus = AsyncEventNexus::new();
    let fanout = nexus::bus::EventFanout::new();
    fanout.register(nexus::Handler::new(|_e: Event, _q: EventQueue| {}));
    fanout.register(nexus::Handler::new(probe.handler()));
    nexus.add_consumer(probe.event_type(), fanout).unwrap();
    probe.ingest_without_a_count(nexus, "fanout").await;

    // An event a handler puts, dispatched before `ingest` returns: counted from the put.
    let probe = NameProbe::new();
    let nexus = AsyncEventNexus::new();
    nexus
        .add_handler(probe.event_type(), probe.handler())
        .unwrap();
    let before_put = Arc::new(Mutex::new(None));
    let (putter, before) = (probe.clone(), Arc::clone(&before_put));
    nexus
        .add_handler(7, move |_e: Event, queue: EventQueue| {
            let event = Event::new(2, putter.event_type(), 0, ());
            *before.lock().unwrap() = Some(putter.references());
            queue.put(event).unwrap();
        })
        .unwrap();
    let _running = nexus.start().unwrap();
    nexus.ingest(Event::new(1, 7, 0, ())).await.unwrap();
    let during = *probe.seen.lock().unwrap();
    assert!(during.is_some(), "the put event was dispatched");
    assert_eq!(
        during,
        *before_put.lock().unwrap(),
        "an event put by a handler"
    );
}

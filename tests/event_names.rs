//! Named event types state their names: the name is what selects handlers and what travels,
//! whatever the Rust type's path, and one name means one type on a nexus.

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

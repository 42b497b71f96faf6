//! Bit mode, which the original's constructor names but never implemented: event types are
//! powers of two, handlers may take a mask of them, and the rule that picks handlers among exact
//! types, masks, ranges and the default holds in `multiple` mode and outside it.

use std::sync::{Arc, Mutex};

use crate::support::running;
use nexus::testing::Probe;
use nexus::{AsyncEventNexus, Event, EventQueue, EventType, NexusError, Selector};

fn record(
    nexus: &AsyncEventNexus,
    probe: &Probe,
    selector: impl Into<Selector>,
    name: &'static str,
) {
    nexus.add_handler(selector, probe.handler(name)).unwrap();
}

/// A nexus in bit mode with an exact type, three masks, a range and the default.
fn registered(multiple: bool) -> (AsyncEventNexus, Probe) {
    let nexus = AsyncEventNexus::builder()
        .bit_mode(true)
        .multiple(multiple)
        .build();
    let log = Probe::new();
    record(&nexus, &log, 4, "exact 4");
    record(&nexus, &log, Selector::Mask(0b0110), "mask 2|4");
    record(&nexus, &log, Selector::Mask(0b1100), "mask 4|8");
    record(&nexus, &log, 16..=64, "range 16..=64");
    record(&nexus, &log, Selector::Mask(0b10_0000), "mask 32");
    record(&nexus, &log, Selector::Mask(0b1_0000_1000), "mask 8|256");
    record(&nexus, &log, -1, "default");
    (nexus, log)
}

/// Ingests one event of each type, its id being its type, and returns who took each.
async fn dispatch(nexus: &AsyncEventNexus, log: &Probe) -> Vec<(&'static str, u64)> {
    let _task = running(nexus).await;
    for t in [1, 2, 4, 8, 16, 32, 128, 256] {
        nexus.ingest(Event::new(t, t as i64, 0, ())).await.unwrap();
    }
    log.handled()
}

#[tokio::test]
async fn exact_type_then_masks_then_ranges_then_the_default_outside_multiple_mode() {
    let (nexus, log) = registered(false);
    assert_eq!(
        dispatch(&nexus, &log).await,
        [
            ("default", 1),
            ("mask 2|4", 2),
            ("exact 4", 4),
            // Two masks hold 8: the first registered takes it.
            ("mask 4|8", 8),
            ("range 16..=64", 16),
            ("mask 32", 32),
            ("default", 128),
            ("mask 8|256", 256),
        ]
    );
}

#[tokio::test]
async fn in_multiple_mode_every_mask_holding_the_bit_takes_the_event_in_registration_order() {
    let (nexus, log) = registered(true);
    // Outside multiple mode this mask could never be called (the first mask holds bit 2); here
    // it runs after it. And a second handler for the exact type.
    record(&nexus, &log, Selector::Mask(0b0010), "mask 2");
    record(&nexus, &log, 4, "exact 4 again");
    assert_eq!(
        dispatch(&nexus, &log).await,
        [
            ("default", 1),
            ("mask 2|4", 2),
            ("mask 2", 2),
            // The exact type's handlers, not the masks that also hold 4.
            ("exact 4", 4),
            ("exact 4 again", 4),
            ("mask 4|8", 8),
            ("mask 8|256", 8),
            ("range 16..=64", 16),
            ("mask 32", 32),
            ("default", 128),
            ("mask 8|256", 256),
        ]
    );
}

#[tokio::test]
async fn an_event_whose_type_is_not_a_power_of_two_is_refused_and_handed_back() {
    let (nexus, log) = registered(false);
    let _task = running(&nexus).await;
    for (id, t) in [
        (1, EventType::Int(6)),
        (2, EventType::Int(0)),
        (3, EventType::Int(-4)),
        (4, EventType::Int(i64::MIN)),
        (5, EventType::from("tick")),
    ] {
        let err = nexus
            .ingest(Event::new(id, t.clone(), 0, ()))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "event {id} of type {t} refused: in bit mode an event type must be a power of two"
            )
        );
        assert!(matches!(err, NexusError::NotABit { .. }));
        assert_eq!(err.into_event().map(|e| e.id), Some(id));
    }
    assert!(log.records().is_empty(), "not even the default saw them");
    assert_eq!(nexus.stats().dispatched, 0);
}

#[tokio::test]
async fn a_handler_cannot_queue_an_event_whose_type_is_not_a_power_of_two() {
    let nexus = AsyncEventNexus::builder().bit_mode(true).build();
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&refused);
    nexus
        .add_handler(1, move |_e: Event, q: EventQueue| {
            let err = q.put(Event::new(10, 3, 0, ())).unwrap_err();
            assert_eq!(err.into_event().map(|e| e.id), Some(10));
            q.put(Event::new(11, 3, 0, ()))
                .map_err(|e| seen.lock().unwrap().push(e.to_string()))
                .ok();
        })
        .unwrap();
    let _task = running(&nexus).await;
    nexus.ingest(Event::new(1, 1, 0, ())).await.unwrap();
    assert_eq!(
        *refused.lock().unwrap(),
        ["event 11 of type 3 refused: in bit mode an event type must be a power of two"]
    );
}

#[test]
fn registrations_that_bit_mode_cannot_take_are_refused_with_the_reason() {
    let bits = AsyncEventNexus::builder().bit_mode(true).build();
    let plain = AsyncEventNexus::new();
    let noop = |_e: Event, _q: EventQueue| {};
    let cases: [(&AsyncEventNexus, Selector, &str); 6] = [
        (
            &bits,
            6.into(),
            "invalid selector 6: in bit mode an event type must be a power of two",
        ),
        (
            &bits,
            "tick".into(),
            "invalid selector tick: in bit mode an event type must be a power of two",
        ),
        (
            &bits,
            Selector::Mask(0),
            "invalid selector mask 0b0: a mask must hold at least one of the bits 0 to 62 and no other",
        ),
        (
            &bits,
            Selector::Mask(1 << 63),
            "invalid selector mask 0b1000000000000000000000000000000000000000000000000000000000000000: \
             a mask must hold at least one of the bits 0 to 62 and no other",
        ),
        (
            &plain,
            Selector::Mask(0b11),
            "invalid selector mask 0b11: a mask selects event types only in bit mode \
             (NexusBuilder::bit_mode)",
        ),
        (
            // A list is refused whole: the valid 8 is not registered either.
            &bits,
            Selector::from([8, 12]),
            "invalid selector 12: in bit mode an event type must be a power of two",
        ),
    ];
    for (nexus, selector, message) in cases {
        let err = nexus.add_handler(selector.clone(), noop).unwrap_err();
        assert!(matches!(err, NexusError::InvalidArgument { .. }), "{err}");
        assert_eq!(err.to_string(), message, "{selector}");
    }
    // Nothing of the refused list was registered: 8 is still free.
    bits.add_handler(8, noop).unwrap();
    // Outside multiple mode a mask no bit of which is left to it is a duplicate.
    bits.add_handler(Selector::Mask(0b0110), noop).unwrap();
    let err = bits.add_handler(Selector::Mask(0b0100), noop).unwrap_err();
    assert!(matches!(err, NexusError::DuplicateHandler { .. }), "{err}");
    assert!(err.to_string().contains("mask 0b100"), "{err}");
    bits.add_handler(Selector::Mask(0b1100), noop).unwrap();
    assert!(bits.is_bit_mode() && !plain.is_bit_mode());
}

#[tokio::test]
async fn outside_bit_mode_any_type_is_taken_as_before() {
    let nexus = AsyncEventNexus::new();
    let log = Probe::new();
    record(&nexus, &log, 6, "six");
    let _task = running(&nexus).await;
    nexus.ingest(Event::new(1, 6, 0, ())).await.unwrap();
    nexus.queue().put(Event::new(2, 6, 0, ())).unwrap();
    nexus.ingest(Event::new(3, 6, 0, ())).await.unwrap();
    assert_eq!(log.ids("six"), [1, 2, 3]);
}

//! Properties of the JSON wire format: decoding never panics whatever the bytes, and every
//! event with a JSON-able payload survives encoding and decoding.
#![cfg(feature = "json")]

use nexus_core::wire::{self, DecodeLimits};
use nexus_core::{Event, EventType, NexusError, Payload};
use proptest::prelude::*;

fn event_type() -> impl Strategy<Value = EventType> {
    prop_oneof![
        any::<i64>().prop_map(EventType::Int),
        "[a-zA-Z0-9._\u{e9}\u{2713} -]{0,24}".prop_map(EventType::name),
    ]
}

fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        Just(Payload::Empty),
        any::<i64>().prop_map(Payload::Int),
        ".{0,64}".prop_map(Payload::from),
        json().prop_map(Payload::value),
    ]
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        match wire::decode(&bytes, DecodeLimits { max_bytes: 256 }) {
            Ok(_) | Err(NexusError::Malformed { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    #[test]
    fn decoding_arbitrary_json_objects_never_panics(fields in prop::collection::btree_map(
        prop_oneof![Just("id".to_owned()), Just("type".to_owned()), Just("priority".to_owned()),
                    Just("payload".to_owned()), "[a-z]{1,5}"],
        json(), 0..6)) {
        let text = serde_json::Value::Object(fields.into_iter().collect()).to_string();
        let _ = wire::decode(text.as_bytes(), DecodeLimits::default());
    }

    #[test]
    fn events_survive_encoding_and_decoding(id in any::<u64>(), event_type in event_type(),
                                            priority in any::<i32>(), payload in payload()) {
        let event = Event::new(id, event_type, priority, payload);
        let back = wire::decode(&wire::encode(&event).unwrap(), DecodeLimits::default()).unwrap();
        prop_assert_eq!((back.id, &back.event_type, back.priority),
                        (event.id, &event.event_type, event.priority));
        match (&event.payload, &back.payload) {
            // A JSON payload that is a string or an integer comes back as text or an integer.
            (Payload::Value(sent), got) => {
                let sent = sent.downcast_ref::<serde_json::Value>().unwrap();
                let got_json = match got {
                    Payload::Value(v) => v.downcast_ref::<serde_json::Value>().unwrap().clone(),
                    Payload::Text(t) => serde_json::Value::from(t.as_str()),
                    Payload::Int(i) => serde_json::Value::from(*i),
                    Payload::Empty => serde_json::Value::Null,
                };
                prop_assert_eq!(sent, &got_json);
            }
            (sent, got) => prop_assert_eq!(sent, got),
        }
    }
}

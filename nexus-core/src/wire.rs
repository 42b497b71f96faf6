//! The JSON wire format of events, the one the original library's ZeroMQ adapters speak:
//! one JSON object per event, `{"id": 1, "type": 99, "priority": 0, "payload": "TEAPOT!"}`.
//!
//! `type` is an integer or a string (a named type). `payload` is `null` (no payload), a string
//! (text), an integer, or any other JSON value (kept as a [`serde_json::Value`] typed payload).
//! Unknown keys are ignored; `priority` may be missing (0).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;
use serde_json::Value;

use crate::error::{Malformed, NexusError};
use crate::event::{Cause, Event, EventType, Payload};
use crate::handler::Selector;

/// What [`decode`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The largest message, in bytes (default 1 MiB).
    pub max_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self { max_bytes: 1 << 20 }
    }
}

#[derive(Serialize)]
struct Outgoing<'a> {
    id: u64,
    #[serde(rename = "type")]
    event_type: OutgoingType<'a>,
    priority: i32,
    payload: OutgoingPayload<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    root: Option<u64>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutgoingType<'a> {
    Int(i64),
    Name(&'a str),
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutgoingPayload<'a> {
    Null(Option<()>),
    Int(i64),
    Text(&'a str),
    Json(&'a Value),
}

/// Encodes `event` as one JSON object.
///
/// # Errors
///
/// [`NexusError::Encode`] when the payload is a typed value other than a
/// [`serde_json::Value`]: it has no JSON form.
///
/// ```
/// use nexus_core::{Event, wire};
///
/// let bytes = wire::encode(&Event::new(1001, 99, 0, "TEAPOT!"))?;
/// assert_eq!(bytes, br#"{"id":1001,"type":99,"priority":0,"payload":"TEAPOT!"}"#);
/// # Ok::<(), nexus_core::NexusError>(())
/// ```
pub fn encode(event: &Event) -> Result<Vec<u8>, NexusError> {
    encode_as(event, false)
}

/// [`encode`], with the event's [`cause`](Event::cause), when it has one, in two more keys:
/// `cause` (the id of the event that led to it) and `root`. For peers that are nexus too: the
/// original's receiver refuses an object with keys it does not know. [`decode`] reads them.
///
/// # Errors
///
/// As [`encode`].
///
/// ```
/// use nexus_core::{Event, wire};
///
/// let order = Event::new(1, 10, 0, ());
/// let invoice = Event::new(2, 11, 0, ()).caused_by(&order);
/// let bytes = wire::encode_with_cause(&invoice)?;
/// assert_eq!(bytes, br#"{"id":2,"type":11,"priority":0,"payload":null,"cause":1,"root":1}"#);
/// assert_eq!(wire::decode(&bytes, Default::default())?, invoice);
/// assert_eq!(wire::encode(&invoice)?, br#"{"id":2,"type":11,"priority":0,"payload":null}"#);
/// # Ok::<(), nexus_core::NexusError>(())
/// ```
pub fn encode_with_cause(event: &Event) -> Result<Vec<u8>, NexusError> {
    encode_as(event, true)
}

/// [`encode`], written to `writer` instead of a new vector: for a sender that keeps its own
/// buffer, such as the NATS publisher, which writes many events into one allocation.
///
/// # Errors
///
/// As [`encode`]; and [`NexusError::Encode`] when `writer` fails. Whatever was written before
/// an error is left in `writer`.
///
/// ```
/// use nexus_core::{Event, wire};
///
/// let mut out = b"[".to_vec();
/// wire::encode_to(&Event::new(7, 3, 0, 42), &mut out)?;
/// out.push(b']');
/// assert_eq!(out, br#"[{"id":7,"type":3,"priority":0,"payload":42}]"#);
/// # Ok::<(), nexus_core::NexusError>(())
/// ```
pub fn encode_to<W: std::io::Write>(event: &Event, writer: W) -> Result<(), NexusError> {
    write_as(event, false, writer)
}

fn encode_as(event: &Event, with_cause: bool) -> Result<Vec<u8>, NexusError> {
    let mut out = Vec::with_capacity(128);
    write_as(event, with_cause, &mut out)?;
    Ok(out)
}

fn write_as<W: std::io::Write>(
    event: &Event,
    with_cause: bool,
    writer: W,
) -> Result<(), NexusError> {
    let event_type = match &event.event_type {
        EventType::Int(i) => OutgoingType::Int(*i),
        EventType::Named(name) => OutgoingType::Name(name),
    };
    let payload = match &event.payload {
        Payload::Empty => OutgoingPayload::Null(None),
        Payload::Int(i) => OutgoingPayload::Int(*i),
        Payload::Text(text) => OutgoingPayload::Text(text),
        Payload::Value(value) => match value.downcast_ref::<Value>() {
            Some(json) => OutgoingPayload::Json(json),
            None => {
                return Err(NexusError::Encode {
                    id: event.id,
                    event_type: event.event_type.clone(),
                    reason: format!(
                        "its payload {value:?} has no JSON form; send text, an integer or a \
                         serde_json::Value"
                    ),
                });
            }
        },
    };
    let cause = event.cause.filter(|_| with_cause);
    let outgoing = Outgoing {
        id: event.id,
        event_type,
        priority: event.priority,
        payload,
        cause: cause.map(|c| c.id),
        root: cause.map(|c| c.root),
    };
    serde_json::to_writer(writer, &outgoing).map_err(|err| NexusError::Encode {
        id: event.id,
        event_type: event.event_type.clone(),
        reason: err.to_string(),
    })
}

/// Decodes one JSON object into an event.
///
/// # Errors
///
/// [`NexusError::Malformed`], saying what is wrong: too large, not JSON, not an object, a
/// missing field, or a field of the wrong type.
///
/// ```
/// use nexus_core::{EventType, wire};
///
/// // As Python's json module writes it.
/// let event = wire::decode(br#"{"id": 7, "type": "log", "priority": 1, "payload": "caf\u00e9"}"#,
///                          wire::DecodeLimits::default())?;
/// assert_eq!(event.event_type, EventType::name("log"));
/// assert_eq!(event.payload.as_str(), Some("café"));
/// # Ok::<(), nexus_core::NexusError>(())
/// ```
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<Event, NexusError> {
    decode_here(bytes, limits)
}

/// [`decode`], made inside its caller ([`WireStats::admit`] too), so that the event is written
/// where the caller keeps it: each copy of an event just written in pieces waits for those
/// pieces' stores.
#[inline(always)]
fn decode_here(bytes: &[u8], limits: DecodeLimits) -> Result<Event, NexusError> {
    if bytes.len() <= limits.max_bytes {
        if let Some(event) = plain::in_order(bytes) {
            return Ok(event);
        }
        if let Some(event) = plain::any_order(bytes).or_else(|| fast::decode(bytes)) {
            return Ok(event);
        }
    }
    decode_checked(bytes, limits)
}

/// [`decode`] through a [`serde_json::Value`]: accepts exactly what the fast path accepts, and
/// more (payloads of any JSON form), and says what is wrong with what it refuses.
fn decode_checked(bytes: &[u8], limits: DecodeLimits) -> Result<Event, NexusError> {
    let malformed = |kind, detail: String| NexusError::Malformed { kind, detail };
    if bytes.len() > limits.max_bytes {
        return Err(malformed(
            Malformed::TooLarge,
            format!(
                "{} bytes, more than the {} allowed",
                bytes.len(),
                limits.max_bytes
            ),
        ));
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|err| malformed(Malformed::NotJson, err.to_string()))?;
    let Value::Object(mut fields) = value else {
        return Err(malformed(
            Malformed::WrongField,
            "an event is a JSON object".to_owned(),
        ));
    };
    let wrong = |field: &str, expected: &str, found: &Value| {
        malformed(
            Malformed::WrongField,
            format!("`{field}` must be {expected}, not {found}"),
        )
    };
    let id = match fields.get("id") {
        Some(found) => found
            .as_u64()
            .ok_or_else(|| wrong("id", "a non-negative integer", found))?,
        None => {
            return Err(malformed(
                Malformed::WrongField,
                "`id` is missing".to_owned(),
            ));
        }
    };
    let event_type = match fields.get_mut("type") {
        Some(Value::String(name)) => EventType::name(std::mem::take(name)),
        Some(found) => EventType::Int(
            found
                .as_i64()
                .ok_or_else(|| wrong("type", "an integer or a string", found))?,
        ),
        None => {
            return Err(malformed(
                Malformed::WrongField,
                "`type` is missing".to_owned(),
            ));
        }
    };
    let priority = match fields.get("priority") {
        None | Some(Value::Null) => 0,
        Some(found) => found
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| wrong("priority", "a 32-bit integer", found))?,
    };
    let payload = match fields.remove("payload") {
        None | Some(Value::Null) => Payload::Empty,
        Some(Value::String(text)) => Payload::from(text),
        Some(Value::Number(n)) if n.is_i64() => Payload::Int(n.as_i64().unwrap_or_default()),
        Some(other) => Payload::value(other),
    };
    let link = |field| match fields.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(found) => found
            .as_u64()
            .map(Some)
            .ok_or_else(|| wrong(field, "a non-negative integer", found)),
    };
    let cause = match (link("cause")?, link("root")?) {
        (Some(id), Some(root)) => Some(Cause { id, root }),
        (None, None) => None,
        _ => {
            return Err(malformed(
                Malformed::WrongField,
                "`cause` and `root` go together".to_owned(),
            ));
        }
    };
    Ok(Event {
        id,
        event_type,
        priority,
        payload,
        cause,
    })
}

/// The keys of an event's object, and any other.
#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Id,
    Type,
    Priority,
    Payload,
    Cause,
    Root,
    #[serde(other)]
    Other,
}

/// A named type read from a message: its text copied once, into the shared text it is kept in
/// (by way of a `String`, it would be copied twice and allocated twice).
fn name_of(name: &str) -> EventType {
    EventType::Named(crate::event::Text::from(std::sync::Arc::<str>::from(name)))
}

/// The event as [`encode`] and Python's `json.dumps` write it, read by hand: an object of only
/// the keys `id`, `type`, `priority`, `payload`, `cause` and `root`, with numbers that are
/// integers and strings without escapes; first with the keys in the order `encode` writes them,
/// then in any order. Anything else gives `None`, and the [`fast`] path reads it; what this
/// reads, it reads as [`decode_checked`] does.
mod plain {
    use std::sync::Arc;

    use super::Field as Key;
    use crate::event::{Cause, Event, EventType, Payload};

    /// The keys in the order [`encode`](super::encode) writes them, with white space anywhere
    /// JSON allows it but between a key and its colon (`json.dumps` writes it after each colon
    /// and comma): read straight through, where a loop over the keys took about 90 instructions
    /// a key.
    ///
    /// The type and the payload are read as their bytes or their integer, in registers, and made
    /// into the event's fields only once the whole message has been read: made as they were read,
    /// each was written to memory in pieces and read back whole when the event was put together,
    /// and each such read waited for the pieces' stores.
    #[inline(always)]
    pub(super) fn in_order(bytes: &[u8]) -> Option<Event> {
        let mut input = Input { rest: bytes };
        input.expect(b'{')?;
        input.literal(b"\"id\":")?;
        let id = input.unsigned()?;
        input.field(b"\"type\":")?;
        let event_type = input.raw()?;
        input.field(b"\"priority\":")?;
        let priority = i32::try_from(input.signed()?).ok()?;
        input.field(b"\"payload\":")?;
        // Not through `or_null`: its `Option<Option<_>>`, and the payload made by `map_or`, took
        // the bench's decode path from 56 ns a message to 74.
        let payload = match input.peek()? {
            b'n' => {
                input.null()?;
                None
            }
            _ => Some(input.raw()?),
        };
        let cause = match input.next()? {
            b'}' => None,
            b',' => {
                input.literal(b"\"cause\":")?;
                let id = input.unsigned()?;
                input.field(b"\"root\":")?;
                let root = input.unsigned()?;
                input.expect(b'}')?;
                Some(Cause { id, root })
            }
            _ => return None,
        };
        input.skip_space();
        if !input.rest.is_empty() {
            return None;
        }
        let event_type = event_type.event_type()?;
        let payload = match payload {
            None => Payload::Empty,
            Some(raw) => raw.payload()?,
        };
        Some(Event {
            id,
            event_type,
            priority,
            payload,
            cause,
        })
    }

    /// The keys in any order, each at most once but for a key given twice, and white space
    /// wherever JSON allows it.
    #[inline(never)]
    pub(super) fn any_order(bytes: &[u8]) -> Option<Event> {
        let mut input = Input { rest: bytes };
        let (mut id, mut event_type, mut priority, mut payload) = (None, None, None, None);
        let (mut cause, mut root) = (None, None);
        input.expect(b'{')?;
        loop {
            // A key given twice: the last one counts, as on the checked path.
            let key = input.key()?;
            input.expect(b':')?;
            match key {
                Key::Id => id = Some(input.unsigned()?),
                Key::Type => event_type = Some(input.event_type()?),
                Key::Priority => priority = input.or_null(Input::signed)?,
                Key::Payload => payload = Some(input.payload()?),
                Key::Cause => cause = input.or_null(Input::unsigned)?,
                Key::Root => root = input.or_null(Input::unsigned)?,
                // Not given by `key`, which refuses other keys.
                Key::Other => return None,
            }
            match input.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
        input.skip_space();
        if !input.rest.is_empty() {
            return None;
        }
        let priority = i32::try_from(priority.unwrap_or(0)).ok()?;
        let cause = match (cause, root) {
            (Some(id), Some(root)) => Some(Cause { id, root }),
            (None, None) => None,
            _ => return None,
        };
        Some(Event {
            id: id?,
            event_type: event_type?,
            priority,
            payload: payload.unwrap_or(Payload::Empty),
            cause,
        })
    }

    /// A string's bytes (no escapes), or an integer: a type or a payload as read, before it is
    /// made into the event's field.
    enum Raw<'a> {
        Int(i64),
        Text(&'a [u8]),
    }

    impl Raw<'_> {
        /// As a `type`: an integer, or a name.
        #[inline(always)]
        fn event_type(self) -> Option<EventType> {
            Some(match self {
                Raw::Int(i) => EventType::Int(i),
                Raw::Text(name) => crate::wire::name_of(std::str::from_utf8(name).ok()?),
            })
        }

        /// As a `payload`: an integer, or text.
        #[inline(always)]
        fn payload(self) -> Option<Payload> {
            Some(match self {
                Raw::Int(i) => Payload::Int(i),
                Raw::Text(text) => {
                    let text: Arc<str> = Arc::from(std::str::from_utf8(text).ok()?);
                    Payload::Text(text.into())
                }
            })
        }
    }

    /// What is left to read.
    struct Input<'a> {
        rest: &'a [u8],
    }

    impl<'a> Input<'a> {
        /// Skips white space. Most events have none where this is called: one comparison then,
        /// as no byte JSON allows there is a space but these four, all below `!`.
        #[inline(always)]
        fn skip_space(&mut self) {
            if self.rest.first().is_some_and(|&byte| byte > b' ') {
                return;
            }
            while let [b' ' | b'\t' | b'\n' | b'\r', rest @ ..] = self.rest {
                self.rest = rest;
            }
        }

        /// The next byte that is not white space, left in place.
        fn peek(&mut self) -> Option<u8> {
            self.skip_space();
            self.rest.first().copied()
        }

        /// The next byte that is not white space, taken.
        fn next(&mut self) -> Option<u8> {
            self.skip_space();
            let (&byte, rest) = self.rest.split_first()?;
            self.rest = rest;
            Some(byte)
        }

        fn expect(&mut self, byte: u8) -> Option<()> {
            (self.next()? == byte).then_some(())
        }

        /// `literal`, next.
        #[inline(always)]
        fn literal(&mut self, literal: &[u8]) -> Option<()> {
            self.skip_space();
            self.rest = self.rest.strip_prefix(literal)?;
            Some(())
        }

        /// A comma, then `literal`.
        #[inline(always)]
        fn field(&mut self, literal: &[u8]) -> Option<()> {
            self.expect(b',')?;
            self.literal(literal)
        }

        /// A string without escapes, or an integer.
        #[inline(always)]
        fn raw(&mut self) -> Option<Raw<'a>> {
            Some(if self.peek()? == b'"' {
                Raw::Text(self.string()?)
            } else {
                Raw::Int(self.signed()?)
            })
        }

        /// A `type`: an integer, or a name.
        fn event_type(&mut self) -> Option<EventType> {
            self.raw()?.event_type()
        }

        /// A `payload`: text, `null` or an integer.
        fn payload(&mut self) -> Option<Payload> {
            self.or_null(Input::raw)?
                .map_or(Some(Payload::Empty), Raw::payload)
        }

        /// One of the keys of an event, with its quotes; `None` for any other string. Matched
        /// whole: read as a string and then compared, a key cost about 20 instructions a byte.
        fn key(&mut self) -> Option<Key> {
            self.expect(b'"')?;
            let (key, rest) = if let Some(rest) = self.rest.strip_prefix(b"id\"") {
                (Key::Id, rest)
            } else if let Some(rest) = self.rest.strip_prefix(b"type\"") {
                (Key::Type, rest)
            } else if let Some(rest) = self.rest.strip_prefix(b"priority\"") {
                (Key::Priority, rest)
            } else if let Some(rest) = self.rest.strip_prefix(b"payload\"") {
                (Key::Payload, rest)
            } else if let Some(rest) = self.rest.strip_prefix(b"cause\"") {
                (Key::Cause, rest)
            } else {
                (Key::Root, self.rest.strip_prefix(b"root\"")?)
            };
            self.rest = rest;
            Some(key)
        }

        /// A string's bytes, if it has no escapes and no control characters.
        fn string(&mut self) -> Option<&'a [u8]> {
            self.expect(b'"')?;
            let len = self
                .rest
                .iter()
                .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)?;
            let (text, rest) = self.rest.split_at(len);
            let rest = rest.strip_prefix(b"\"")?;
            self.rest = rest;
            Some(text)
        }

        fn null(&mut self) -> Option<()> {
            self.skip_space();
            self.rest = self.rest.strip_prefix(b"null")?;
            Some(())
        }

        /// `null` as `None`, or what `read` reads.
        fn or_null<T>(&mut self, read: fn(&mut Self) -> Option<T>) -> Option<Option<T>> {
            if self.peek()? == b'n' {
                self.null().map(|()| None)
            } else {
                read(self).map(Some)
            }
        }

        /// A JSON number's digits that make a non-negative integer of 64 bits: no sign, no
        /// leading zero, no fraction or exponent (those read as floats elsewhere).
        fn magnitude(&mut self) -> Option<u64> {
            // Read in one pass; 19 digits cannot overflow, and longer numbers are read again
            // with checks.
            let mut value: u64 = 0;
            let mut digits = 0;
            while let Some(&byte) = self.rest.get(digits) {
                let digit = byte.wrapping_sub(b'0');
                if digit > 9 {
                    break;
                }
                value = value.wrapping_mul(10).wrapping_add(u64::from(digit));
                digits += 1;
            }
            let (number, rest) = self.rest.split_at(digits);
            if digits > 19 {
                value = number.iter().try_fold(0u64, |value, &digit| {
                    value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
                })?;
            }
            let ends = !matches!(rest.first(), Some(b'.' | b'e' | b'E'));
            let leading = *number.first()?;
            self.rest = rest;
            (ends && (leading != b'0' || digits == 1)).then_some(value)
        }

        fn unsigned(&mut self) -> Option<u64> {
            self.skip_space();
            self.magnitude()
        }

        /// An integer that fits an `i64`; not `-0`, which JSON parsers read as a float.
        fn signed(&mut self) -> Option<i64> {
            if self.peek()? == b'-' {
                self.rest = &self.rest[1..];
                let magnitude = self.magnitude()?;
                if magnitude == 0 {
                    return None;
                }
                0i64.checked_sub_unsigned(magnitude)
            } else {
                i64::try_from(self.magnitude()?).ok()
            }
        }
    }
}

/// The common event, decoded without building a [`serde_json::Value`]: an object whose `id`,
/// `type`, `priority` and `payload` (null, text or an integer) are what [`decode_checked`]
/// accepts. Anything else (a malformed message, a duplicate key, a payload of another JSON form)
/// gives `None`, and the checked path decodes it or says what is wrong.
mod fast {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{self, IgnoredAny, MapAccess, Visitor};

    use super::Field;
    use crate::event::{Cause, Event, EventType, Payload};

    pub(super) fn decode(bytes: &[u8]) -> Option<Event> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let event = (&mut de).deserialize_map(EventVisitor).ok()?;
        de.end().ok()?;
        event
    }

    /// `type`: an integer or a name.
    struct TypeField(EventType);

    impl<'de> de::Deserialize<'de> for TypeField {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct TypeVisitor;
            impl Visitor<'_> for TypeVisitor {
                type Value = TypeField;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an integer or a string")
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<TypeField, E> {
                    Ok(TypeField(EventType::Int(v)))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<TypeField, E> {
                    i64::try_from(v)
                        .map(|v| TypeField(EventType::Int(v)))
                        .map_err(|_| E::custom("out of range"))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<TypeField, E> {
                    Ok(TypeField(crate::wire::name_of(v)))
                }
                fn visit_string<E: de::Error>(self, v: String) -> Result<TypeField, E> {
                    Ok(TypeField(EventType::name(v)))
                }
            }
            deserializer.deserialize_any(TypeVisitor)
        }
    }

    /// `payload`: null, text or an integer; `None` for any other form (left to the checked
    /// path).
    struct PayloadField(Option<Payload>);

    impl<'de> de::Deserialize<'de> for PayloadField {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct PayloadVisitor;
            impl<'de> Visitor<'de> for PayloadVisitor {
                type Value = PayloadField;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_unit<E: de::Error>(self) -> Result<PayloadField, E> {
                    Ok(PayloadField(Some(Payload::Empty)))
                }
                fn visit_none<E: de::Error>(self) -> Result<PayloadField, E> {
                    Ok(PayloadField(Some(Payload::Empty)))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<PayloadField, E> {
                    Ok(PayloadField(Some(Payload::Int(v))))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<PayloadField, E> {
                    Ok(PayloadField(i64::try_from(v).ok().map(Payload::Int)))
                }
                fn visit_f64<E: de::Error>(self, _: f64) -> Result<PayloadField, E> {
                    Ok(PayloadField(None))
                }
                fn visit_bool<E: de::Error>(self, _: bool) -> Result<PayloadField, E> {
                    Ok(PayloadField(None))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<PayloadField, E> {
                    // Straight into the shared text: one allocation, not a `String` first.
                    let text: std::sync::Arc<str> = std::sync::Arc::from(v);
                    Ok(PayloadField(Some(Payload::Text(text.into()))))
                }
                fn visit_string<E: de::Error>(self, v: String) -> Result<PayloadField, E> {
                    Ok(PayloadField(Some(Payload::from(v))))
                }
                fn visit_seq<A: de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<PayloadField, A::Error> {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(PayloadField(None))
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<PayloadField, A::Error> {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(PayloadField(None))
                }
            }
            deserializer.deserialize_any(PayloadVisitor)
        }
    }

    /// The event, or `None` when the checked path must decide.
    struct EventVisitor;

    impl<'de> Visitor<'de> for EventVisitor {
        type Value = Option<Event>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an event object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Event>, A::Error> {
            let (mut id, mut event_type, mut priority, mut payload) = (None, None, None, None);
            let (mut cause, mut root) = (None, None);
            // A key given twice: the last one counts, as on the checked path.
            while let Some(field) = map.next_key::<Field>()? {
                match field {
                    Field::Id => id = Some(map.next_value::<u64>()?),
                    Field::Type => event_type = Some(map.next_value::<TypeField>()?),
                    Field::Priority => priority = Some(map.next_value::<Option<i64>>()?),
                    Field::Payload => payload = Some(map.next_value::<PayloadField>()?),
                    Field::Cause => cause = map.next_value::<Option<u64>>()?,
                    Field::Root => root = map.next_value::<Option<u64>>()?,
                    Field::Other => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            let priority = match priority.flatten() {
                None => 0,
                Some(p) => match i32::try_from(p) {
                    Ok(p) => p,
                    Err(_) => return Ok(None),
                },
            };
            let payload = match payload {
                None => Payload::Empty,
                Some(PayloadField(Some(payload))) => payload,
                Some(PayloadField(None)) => return Ok(None),
            };
            let cause = match (cause, root) {
                (Some(id), Some(root)) => Some(Cause { id, root }),
                (None, None) => None,
                _ => return Ok(None),
            };
            Ok(match (id, event_type) {
                (Some(id), Some(TypeField(event_type))) => Some(Event {
                    id,
                    event_type,
                    priority,
                    payload,
                    cause,
                }),
                _ => None,
            })
        }
    }
}

/// Counts of what a network receiver took in: events passed on, and malformed messages skipped,
/// by kind. A cheap cloneable handle: keep one to read the counts while the receiver runs.
///
/// ```
/// use nexus_core::Malformed;
/// use nexus_core::wire::WireStats;
///
/// let stats = WireStats::default();
/// stats.record_event();
/// stats.record_malformed(Malformed::NotJson, "expected value at line 1 column 1");
/// assert_eq!((stats.events(), stats.malformed(Malformed::NotJson), stats.malformed_total()), (1, 1, 1));
/// ```
#[derive(Clone, Debug, Default)]
pub struct WireStats {
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    events: AtomicU64,
    not_json: AtomicU64,
    wrong_field: AtomicU64,
    too_large: AtomicU64,
    unknown_type: AtomicU64,
}

impl WireStats {
    fn slot(&self, kind: Malformed) -> &AtomicU64 {
        match kind {
            Malformed::NotJson => &self.counts.not_json,
            Malformed::WrongField => &self.counts.wrong_field,
            Malformed::TooLarge => &self.counts.too_large,
            Malformed::UnknownType => &self.counts.unknown_type,
        }
    }

    /// Counts one event passed on.
    pub fn record_event(&self) {
        self.counts.events.fetch_add(1, Relaxed);
    }

    /// Counts one malformed message, and reports it through `tracing`.
    pub fn record_malformed(&self, kind: Malformed, detail: &str) {
        let count = self.slot(kind).fetch_add(1, Relaxed) + 1;
        tracing::warn!(%kind, detail, count, "malformed message skipped");
    }

    /// Counts the error of [`decode`] if it is a malformed message; hands any other error back.
    ///
    /// # Errors
    ///
    /// `error` itself when it is not [`NexusError::Malformed`].
    pub fn record(&self, error: NexusError) -> Result<(), NexusError> {
        match error {
            NexusError::Malformed { kind, detail } => {
                self.record_malformed(kind, &detail);
                Ok(())
            }
            other => Err(other),
        }
    }

    /// Decodes a message from the network into an event of a type `only` names (any type with
    /// `None`), counting it; or counts why not and returns `None`, so that a receiver skips it.
    ///
    /// ```
    /// use nexus_core::{Malformed, Selector};
    /// use nexus_core::wire::{DecodeLimits, WireStats};
    ///
    /// let stats = WireStats::default();
    /// let only = Selector::from(1..=9);
    /// let good = br#"{"id": 1, "type": 2, "payload": "hi"}"#;
    /// assert!(stats.admit(good, DecodeLimits::default(), Some(&only)).is_some());
    /// assert!(stats.admit(b"oops", DecodeLimits::default(), Some(&only)).is_none());
    /// assert_eq!((stats.events(), stats.malformed(Malformed::NotJson)), (1, 1));
    /// ```
    pub fn admit(
        &self,
        bytes: &[u8],
        limits: DecodeLimits,
        only: Option<&Selector>,
    ) -> Option<Event> {
        let event = match decode_here(bytes, limits) {
            Ok(event) => event,
            Err(err) => {
                if let Err(other) = self.record(err) {
                    tracing::warn!(error = %other, "message skipped");
                }
                return None;
            }
        };
        if only.is_some_and(|only| !only.matches(&event.event_type)) {
            let detail = format!("event {} of type {}", event.id, event.event_type);
            self.record_malformed(Malformed::UnknownType, &detail);
            return None;
        }
        self.record_event();
        Some(event)
    }

    /// Events passed on.
    pub fn events(&self) -> u64 {
        self.counts.events.load(Relaxed)
    }

    /// Malformed messages of one kind skipped.
    pub fn malformed(&self, kind: Malformed) -> u64 {
        self.slot(kind).load(Relaxed)
    }

    /// Malformed messages of every kind skipped.
    pub fn malformed_total(&self) -> u64 {
        [
            Malformed::NotJson,
            Malformed::WrongField,
            Malformed::TooLarge,
            Malformed::UnknownType,
        ]
        .into_iter()
        .map(|kind| self.malformed(kind))
        .sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy as _;

    use super::*;

    fn roundtrip(event: &Event) -> Event {
        decode(&encode(event).unwrap(), DecodeLimits::default()).unwrap()
    }

    #[test]
    fn an_event_encoded_to_a_writer_that_fails_is_an_encode_error_naming_it() {
        struct Full;
        impl std::io::Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("no room"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let err = encode_to(&Event::new(12, "order", 0, "x"), Full).unwrap_err();
        match &err {
            NexusError::Encode {
                id,
                event_type,
                reason,
            } => {
                assert_eq!((*id, event_type), (12, &EventType::name("order")));
                assert!(reason.contains("no room"), "{reason}");
            }
            other => panic!("not an encode error: {other}"),
        }
    }

    /// Whatever the plain or the fast path decodes, the checked path decodes to the same event;
    /// what they leave, the checked path decides.
    fn agrees(text: &str) {
        agrees_on(text.as_bytes());
    }

    fn agrees_on(bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let checked = decode_checked(bytes, DecodeLimits::default());
        let reads = [
            plain::in_order(bytes),
            plain::any_order(bytes),
            fast::decode(bytes),
        ];
        for read in reads {
            if let Some(event) = &read {
                assert_eq!(Some(event), checked.as_ref().ok(), "{text}");
            }
        }
        // Typed payloads compare by identity: compare what they print.
        let shown = |result: Result<Event, NexusError>| format!("{result:?}");
        assert_eq!(
            shown(decode(bytes, DecodeLimits::default())),
            shown(checked),
            "{text}"
        );
    }

    #[test]
    fn the_plain_path_reads_integers_to_their_last_digit_and_refuses_overflow() {
        /// An event's id, type and integer payload.
        type Read = (u64, EventType, Option<i64>);
        let read = |text: &str| -> Option<Read> {
            let event = plain::in_order(text.as_bytes())?;
            Some((event.id, event.event_type, event.payload.as_int()))
        };
        let cases: [(&str, Option<Read>); 6] = [
            (
                r#"{"id":9999999999999999999,"type":-999999999999999999,"priority":0,"payload":1000000000000000000}"#,
                Some((
                    9_999_999_999_999_999_999,
                    EventType::Int(-999_999_999_999_999_999),
                    Some(1_000_000_000_000_000_000),
                )),
            ),
            (
                r#"{"id":18446744073709551615,"type":-9223372036854775808,"priority":0,"payload":9223372036854775807}"#,
                Some((u64::MAX, EventType::Int(i64::MIN), Some(i64::MAX))),
            ),
            (
                r#"{"id":10000000000000000000,"type":0,"priority":0,"payload":null}"#,
                Some((10_000_000_000_000_000_000, EventType::Int(0), None)),
            ),
            (
                r#"{"id":18446744073709551616,"type":2,"priority":0,"payload":null}"#,
                None,
            ),
            (
                r#"{"id":99999999999999999999,"type":2,"priority":0,"payload":null}"#,
                None,
            ),
            (
                r#"{"id":1,"type":9223372036854775808,"priority":0,"payload":null}"#,
                None,
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(read(text), expected, "{text}");
        }
    }

    #[test]
    fn the_plain_and_fast_paths_decode_as_the_checked_path_does() {
        let common = r#"{"id":1,"type":99,"priority":0,"payload":"TEAPOT!"}"#;
        let python = "{\"id\": 7, \"type\": \"log\", \"priority\": -1, \"payload\": \"caf\u{e9}\"}";
        let caused = r#"{"id":2,"type":11,"priority":0,"payload":null,"cause":1,"root":1}"#;
        for read in [plain::in_order, plain::any_order, fast::decode] {
            assert!(read(common.as_bytes()).is_some());
            assert!(read(python.as_bytes()).is_some());
            assert!(read(caused.as_bytes()).is_some());
        }
        for text in [
            common,
            python,
            caused,
            " \t{\n\"id\" :1 ,\r\"type\": 2 , \"payload\" : -5 }\n ",
            r#"{"id":18446744073709551615,"type":-9223372036854775808,"payload":9223372036854775807}"#,
            // About the 19 digits that are read without checks.
            r#"{"id":9999999999999999999,"type":-999999999999999999,"payload":1000000000000000000}"#,
            r#"{"id":10000000000000000000,"type":2,"payload":-9223372036854775807}"#,
            // Left to the other paths: numbers JSON reads as floats or refuses, escapes and
            // control characters in strings, stray bytes, other keys.
            r#"{"id":18446744073709551616,"type":2}"#,
            r#"{"id":99999999999999999999,"type":2}"#,
            r#"{"id":100000000000000000000,"type":2}"#,
            r#"{"id":00000000000000000000,"type":2}"#,
            r#"{"id":1,"type":2,"payload":-10000000000000000000}"#,
            r#"{"id":1,"type":-9223372036854775809}"#,
            r#"{"id":1,"type":2,"payload":-0}"#,
            r#"{"id":1,"type":-0}"#,
            r#"{"id":01,"type":2}"#,
            r#"{"id":1,"type":2,"payload":00}"#,
            r#"{"id":1e3,"type":2}"#,
            r#"{"id":1,"type":2,"priority":2E1}"#,
            r#"{"id":1,"type":2,"payload":-}"#,
            r#"{"id":1,"type":2,"payload":+1}"#,
            r#"{"id":1,"type":2,"payload":nul}"#,
            r#"{"id":1,"type":2,"payload":nullx}"#,
            "{\"id\":1,\"type\":2,\"payload\":\"raw\tcontrol\u{1}\"}",
            r#"{"id":1,"type":"a\"b","payload":"x"}"#,
            r#"{"id":1,"type":2,}"#,
            r#"{"id":1 "type":2}"#,
            r#"{"id":1,"type":2}}"#,
            r#"{,"id":1,"type":2}"#,
            r#"{"ID":1,"type":2}"#,
            r#"{}"#,
            r#"{"id": 7, "type": "log", "priority": 1, "payload": "caf\u00e9"}"#,
            r#"{"id":1,"type":-3,"payload":-12}"#,
            r#"{"id":1,"type":2,"priority":null,"payload":null,"extra":{"a":[1,2]}}"#,
            r#"{"id":1,"type":2}"#,
            // Left to the checked path: other payloads, keys twice, out of range, wrong forms.
            r#"{"id":1,"type":2,"payload":1.5}"#,
            r#"{"id":1,"type":2,"payload":[1,{"b":null}]}"#,
            r#"{"id":1,"type":2,"payload":{"a":true}}"#,
            r#"{"id":1,"type":2,"payload":18446744073709551615}"#,
            r#"{"id":1,"type":2,"payload":true}"#,
            r#"{"id":1,"id":2,"type":2}"#,
            r#"{"id":1,"type":2,"type":"x"}"#,
            r#"{"id":1,"type":2,"priority":4294967296}"#,
            r#"{"id":1,"type":2,"priority":1.0}"#,
            r#"{"id":-1,"type":2}"#,
            r#"{"id":1.0,"type":2}"#,
            r#"{"id":1,"type":9223372036854775808}"#,
            r#"{"id":1,"type":true}"#,
            r#"{"type":2}"#,
            r#"{"id":1}"#,
            r#"[1,2,0,"x"]"#,
            r#""text""#,
            r#"{"id":1,"type":2,"cause":3,"root":1}"#,
            r#"{"id":1,"type":2,"cause":3}"#,
            r#"{"id":1,"type":2,"root":3}"#,
            r#"{"id":1,"type":2,"cause":-3,"root":1}"#,
            r#"{"id":1,"type":2,"cause":null,"root":null}"#,
            r#"{"id":1,"type":2,"cause":"3","root":1}"#,
            r#"{"id":1,"type":2} trailing"#,
            r#"{"id":1,"type":2"#,
            "",
        ] {
            agrees(text);
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn the_plain_and_fast_paths_agree_on_arbitrary_objects(fields in proptest::collection::vec(
            (proptest::prop_oneof![
                proptest::strategy::Just("id".to_owned()),
                proptest::strategy::Just("type".to_owned()),
                proptest::strategy::Just("priority".to_owned()),
                proptest::strategy::Just("payload".to_owned()),
                proptest::strategy::Just("cause".to_owned()),
                proptest::strategy::Just("root".to_owned()),
                "[a-z]{1,5}",
            ], json_value()),
            0..6,
        )) {
            // Written by hand, so that a key may come twice.
            let body: Vec<String> = fields
                .iter()
                .map(|(key, value)| format!("{}:{value}", Value::from(key.as_str())))
                .collect();
            agrees(&format!("{{{}}}", body.join(",")));
        }

        /// Messages as they are written, with white space where JSON allows it and one byte
        /// changed: each path reads the same event or leaves it.
        #[test]
        fn the_plain_and_fast_paths_agree_on_damaged_messages(
            id in proptest::prelude::any::<u64>(),
            event_type in proptest::prop_oneof![
                proptest::prelude::any::<i64>().prop_map(EventType::Int),
                "[a-z\\\\\"\u{e9}]{0,4}".prop_map(EventType::name),
            ],
            priority in proptest::prelude::any::<i32>(),
            payload in proptest::prop_oneof![
                proptest::strategy::Just(Payload::Empty),
                proptest::prelude::any::<i64>().prop_map(Payload::from),
                ".{0,6}".prop_map(Payload::from),
            ],
            spaced in proptest::prelude::any::<bool>(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prop_oneof![
                proptest::sample::select(b" \t\n\r{}[]:,\"\\-+.0123456789eEnul".to_vec()),
                proptest::prelude::any::<u8>(),
            ],
        ) {
            let event = Event::new(id, event_type, priority, payload);
            let mut bytes = encode(&event).unwrap();
            if spaced {
                // As Python's json.dumps writes it.
                let text = String::from_utf8(bytes).unwrap();
                bytes = text.replace("\":", "\": ").replace(",\"", ", \"").into_bytes();
            }
            agrees_on(&bytes);
            let at = at.index(bytes.len());
            bytes[at] = byte;
            agrees_on(&bytes);
        }
    }

    mod deep {
        pub(super) struct Treacle;
        impl crate::EventKind for Treacle {
            const NAME: &'static str = "treacle";
        }
    }

    #[test]
    fn a_named_type_travels_as_the_name_it_states_not_its_path() {
        let event = Event::new(1, EventType::of::<deep::Treacle>(), 0, "x");
        let json: serde_json::Value = serde_json::from_slice(&encode(&event).unwrap()).unwrap();
        assert_eq!(json["type"], "treacle");
        let path = std::any::type_name::<deep::Treacle>();
        assert!(!json.to_string().contains(path), "{json}");
        assert_eq!(
            roundtrip(&event).event_type,
            EventType::of::<deep::Treacle>()
        );
    }

    #[test]
    fn text_integer_json_and_empty_payloads_round_trip() {
        for payload in [
            Payload::from("hello"),
            Payload::from(-42),
            Payload::Empty,
            Payload::value(serde_json::json!({"a": [1, 2.5, true]})),
        ] {
            let event = Event::new(5, EventType::name("x"), -3, payload);
            let back = roundtrip(&event);
            assert_eq!(
                (back.id, &back.event_type, back.priority),
                (5, &event.event_type, -3)
            );
            match (&event.payload, &back.payload) {
                (Payload::Value(a), Payload::Value(b)) => {
                    assert_eq!(a.downcast_ref::<Value>(), b.downcast_ref::<Value>());
                }
                (a, b) => assert_eq!(a, b),
            }
        }
    }

    #[test]
    fn a_payload_without_a_json_form_is_an_error_naming_the_event() {
        #[derive(Debug)]
        struct Opaque;
        let err = encode(&Event::new(9, 4, 0, Payload::value(Opaque))).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("event 9 of type 4 cannot be encoded"),
            "{err}"
        );
    }

    #[test]
    fn every_kind_of_bad_input_is_named() {
        let limits = DecodeLimits { max_bytes: 64 };
        let cases: [(&[u8], Malformed); 7] = [
            (b"not json", Malformed::NotJson),
            (b"[1, 2]", Malformed::WrongField),
            (br#"{"type": 1}"#, Malformed::WrongField),
            (br#"{"id": -1, "type": 1}"#, Malformed::WrongField),
            (br#"{"id": 1, "type": 1.5}"#, Malformed::WrongField),
            (
                br#"{"id": 1, "type": 1, "priority": "high"}"#,
                Malformed::WrongField,
            ),
            (&[b' '; 65], Malformed::TooLarge),
        ];
        for (input, expected) in cases {
            match decode(input, limits) {
                Err(NexusError::Malformed { kind, .. }) => assert_eq!(kind, expected),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
            }
        }
    }
}

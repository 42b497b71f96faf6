//! Events and what they carry: [`Event`], [`EventType`], [`Payload`] and [`Text`].

use std::any::Any;
use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// One event: an id, a type, a priority and a payload.
///
/// Cloning an event is cheap: text and typed payloads are reference-counted, never copied.
///
/// # Examples
///
/// ```
/// use nexus_core::{Event, EventType};
///
/// let event = Event::new(1001, 99, 0, "TEAPOT!");
/// assert_eq!(event.id, 1001);
/// assert_eq!(event.event_type, EventType::from(99));
/// assert_eq!(event.payload.as_str(), Some("TEAPOT!"));
/// assert_eq!(event.to_string(), "Event(id=1001, type=99, priority=0, payload=TEAPOT!)");
/// ```
// Laid out in the order declared, so that the cause's tag, where an `Option<Event>` marks
// `None`, lies near the end: moving an event out of such an `Option` (as the call of its last
// handler takes it) copies the words before the tag in 16-byte pieces from the start, the pieces
// in which an `async fn`'s future, when first polled, reads its arguments back. With the tag
// first, as the compiler's own order put it, each of those reads spanned two of the writes just
// made and waited for them: about 6 ns per call of an `async fn` handler in the bench.
#[derive(Clone, Debug, PartialEq)]
#[repr(C)]
pub struct Event {
    /// The event's id, chosen by its source (see [`EventFactory`](crate::EventFactory)).
    pub id: u64,
    /// What kind of event this is; handlers are chosen by it.
    pub event_type: EventType,
    /// Lower numbers mean more urgent. Where events wait by priority
    /// (`ChannelProducer::with_priority`,
    /// [`NexusBuilder::priority`](crate::NexusBuilder::priority)) the most urgent goes first;
    /// elsewhere it is carried.
    pub priority: i32,
    /// What the event carries.
    pub payload: Payload,
    /// The event that led to this one, and the first of the chain; `None` for an event no
    /// other led to. Set by nexus for an event queued ([`EventQueue::put`](crate::EventQueue::put))
    /// or ingested while a handler handles another; kept across boundaries, and across NATS in
    /// message headers. It is not part of the original's JSON form.
    pub cause: Option<Cause>,
}

/// The cause of events made on this thread now, a cell per part, each written and read whole.
/// Whether there is one is read first, and the cause itself only when there is one: the common
/// case, no cause, reads the flag alone, never the rest of a value written in other pieces
/// (which would wait for those stores).
///
/// The flag lies between the id and the root (`repr(C)`), so that the two are never copied as
/// one 16-byte value: a cause just written in two 8-byte pieces (as a dispatch writes its event's
/// cause when it is made) and read back whole cannot be taken from the store buffer, and the read
/// waits for both stores to complete.
#[repr(C)]
struct CurrentCause {
    id: std::cell::Cell<u64>,
    set: std::cell::Cell<bool>,
    root: std::cell::Cell<u64>,
}

thread_local! {
    /// The cause of events made on this thread now: that of the event whose handler is being
    /// polled here, if any.
    static CURRENT: CurrentCause = const {
        CurrentCause {
            id: std::cell::Cell::new(0),
            set: std::cell::Cell::new(false),
            root: std::cell::Cell::new(0),
        }
    };
}

impl CurrentCause {
    #[inline(always)]
    fn get(&self) -> Option<Cause> {
        self.set.get().then(|| Cause {
            id: self.id.get(),
            root: self.root.get(),
        })
    }

    #[inline(always)]
    fn put(&self, cause: Option<Cause>) {
        if let Some(cause) = cause {
            self.id.set(cause.id);
            self.root.set(cause.root);
        }
        self.set.set(cause.is_some());
    }
}

/// The cause of an event made now on this thread, by a handler of another event.
#[inline]
pub(crate) fn current_cause() -> Option<Cause> {
    CURRENT.with(CurrentCause::get)
}

/// Makes `cause` the cause of events made on this thread from now; returns the one before.
#[inline]
pub(crate) fn swap_current_cause(cause: Option<Cause>) -> Option<Cause> {
    CURRENT.with(|current| {
        let before = current.get();
        current.put(cause);
        before
    })
}

impl Event {
    /// Gives this event the cause of what is being handled on this thread, unless it has one,
    /// or is that very event.
    #[inline]
    pub(crate) fn inherit_cause(&mut self) {
        if self.cause.is_none() {
            self.inherit(current_cause());
        }
    }

    /// Gives this event `cause`, unless it has one, or is that very event.
    #[inline]
    pub(crate) fn inherit(&mut self, cause: Option<Cause>) {
        if self.cause.is_none()
            && let Some(cause) = cause
            && cause.id != self.id
        {
            self.cause = Some(cause);
        }
    }
}

/// What led to an event: the event whose handler made it, and the first event of the chain.
///
/// ```
/// use nexus_core::{Cause, Event};
///
/// let order = Event::new(1, 10, 0, "order");
/// let invoice = Event::new(2, 11, 0, "invoice").caused_by(&order);
/// let mail = Event::new(3, 12, 0, "mail").caused_by(&invoice);
/// assert_eq!(mail.cause, Some(Cause { id: 2, root: 1 }));
/// assert_eq!((order.root(), invoice.root(), mail.root()), (1, 1, 1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cause {
    /// The id of the event that led to this one.
    pub id: u64,
    /// The id of the first event of the chain.
    pub root: u64,
}

impl Event {
    /// Creates an event from its four fields.
    ///
    /// `event_type` takes an integer or an [`EventType`]; `payload` takes text, an integer or a
    /// [`Payload`].
    pub fn new(
        id: u64,
        event_type: impl Into<EventType>,
        priority: i32,
        payload: impl Into<Payload>,
    ) -> Self {
        Self {
            id,
            event_type: event_type.into(),
            priority,
            payload: payload.into(),
            cause: None,
        }
    }

    /// This event, as led to by `cause`: its cause is `cause`'s id, its root `cause`'s root.
    #[must_use]
    pub fn caused_by(mut self, cause: &Event) -> Self {
        self.cause = Some(cause.as_cause());
        self
    }

    /// The first event of this event's chain: its cause's root, or its own id.
    #[inline]
    pub fn root(&self) -> u64 {
        self.cause.map_or(self.id, |cause| cause.root)
    }

    /// What this event is to the events it leads to.
    #[inline]
    pub(crate) fn as_cause(&self) -> Cause {
        Cause {
            id: self.id,
            root: self.root(),
        }
    }

    /// Creates a named event: its type is `T`'s [`EventKind::NAME`] and its payload is `value`.
    ///
    /// This is the original's `NamedEvent`, with the name stated by the type rather than taken
    /// from its path.
    ///
    /// ```
    /// use nexus_core::{Event, EventKind, EventType};
    ///
    /// #[derive(Debug, PartialEq)]
    /// struct Ping(u32);
    /// impl EventKind for Ping {
    ///     const NAME: &'static str = "ping";
    /// }
    ///
    /// let event = Event::named(7, Ping(3));
    /// assert_eq!(event.event_type, EventType::name("ping"));
    /// assert_eq!(event.payload.get::<Ping>(), Some(&Ping(3)));
    /// ```
    pub fn named<T: EventKind + Send + Sync + fmt::Debug>(id: u64, value: T) -> Self {
        Self::new(id, EventType::of::<T>(), 0, Payload::value(value))
    }
}

/// A Rust type that is an event type of its own, under the name it states.
///
/// The name is what selects the type's handlers and what travels to other processes (over
/// ZeroMQ or NATS), so it is written once, here, and never derived from the type's path, which
/// changes with modules and compilers. Two types registered on one nexus under one name are an
/// error ([`NexusError::EventNameClash`](crate::NexusError::EventNameClash)).
///
/// ```
/// use nexus_core::{AsyncEventNexus, Event, EventKind, EventQueue, EventType, Selector};
///
/// #[derive(Debug)]
/// struct Treacle {
///     sweetness: u32,
/// }
/// impl EventKind for Treacle {
///     const NAME: &'static str = "treacle";
/// }
///
/// let nexus = AsyncEventNexus::new();
/// nexus.add_handler(Selector::of::<Treacle>(), |event: Event, _q: EventQueue| {
///     let treacle = event.payload.get::<Treacle>().expect("a Treacle");
///     println!("sweetness {}", treacle.sweetness);
/// })?;
/// assert_eq!(EventType::of::<Treacle>().to_string(), "treacle");
/// # Ok::<(), nexus_core::NexusError>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no event name",
    label = "this type is used as an event type",
    note = "state its name: `impl EventKind for {Self} {{ const NAME: &'static str = \"...\"; }}`"
)]
pub trait EventKind: Any {
    /// The event type's name, as it is registered and as it travels.
    const NAME: &'static str;
}

/// An [`EventKind`] as a value: its name, and the Rust type that claimed it (for
/// [`Selector::Kind`](crate::Selector::Kind), which checks that one name means one type).
#[derive(Clone, Copy, Debug)]
pub struct Kind {
    name: &'static str,
    type_id: std::any::TypeId,
    type_name: &'static str,
}

impl Kind {
    /// The kind of `T`.
    pub fn of<T: EventKind>() -> Self {
        Self {
            name: T::NAME,
            type_id: std::any::TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
        }
    }

    /// The event type's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The Rust type's path, for messages only.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Whether `self` and `other` are the same Rust type.
    pub fn same_type(&self, other: &Self) -> bool {
        self.type_id == other.type_id
    }
}

/// Kinds are equal when they are the same type under the same name.
impl PartialEq for Kind {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.type_id == other.type_id
    }
}

impl Eq for Kind {}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Event(id={}, type={}, priority={}, payload={})",
            self.id, self.event_type, self.priority, self.payload
        )
    }
}

/// Shared, immutable text: a `&'static str` kept as is, or an `Arc<str>`.
///
/// Cloning never copies the characters. It compares, hashes and prints as the `str` it holds.
///
/// ```
/// use nexus_core::Text;
///
/// let a = Text::from("hello");
/// let b = Text::from(String::from("hello"));
/// assert_eq!(a, b);
/// assert_eq!(&*a, "hello");
/// ```
#[derive(Clone)]
pub struct Text(TextRepr);

#[derive(Clone)]
enum TextRepr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Text {
    /// Returns the text as a `str`.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            TextRepr::Static(s) => s,
            TextRepr::Shared(s) => s,
        }
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Self {
        Self(TextRepr::Static(s))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(TextRepr::Shared(s.into()))
    }
}

impl From<Arc<str>> for Text {
    fn from(s: Arc<str>) -> Self {
        Self(TextRepr::Shared(s))
    }
}

/// The type of an event: an integer or a name.
///
/// Integer types are what most programs use. A named type is a Rust type's stated name (see
/// [`EventType::of`] and [`EventKind`]), the original's `NamedEvent`, or any text (see
/// [`EventType::name`]), which is what arrives from other processes.
///
/// `-1` is not an event type to register a handler for: [`Selector`](crate::Selector) reads it as
/// "the default handler", as the original library does.
///
/// ```
/// use nexus_core::{EventKind, EventType};
///
/// struct Ping;
/// impl EventKind for Ping {
///     const NAME: &'static str = "ping";
/// }
/// assert_eq!(EventType::from(99), EventType::Int(99));
/// assert_eq!(EventType::of::<Ping>(), EventType::name("ping"));
/// assert_eq!(EventType::name("log.warning").as_name(), Some("log.warning"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// An integer event type.
    Int(i64),
    /// A named event type.
    Named(Text),
}

impl EventType {
    /// The named event type of `T`: the name it states ([`EventKind::NAME`]).
    pub fn of<T: EventKind>() -> Self {
        Self::Named(Text::from(T::NAME))
    }

    /// A named event type from any text.
    pub fn name(name: impl Into<Text>) -> Self {
        Self::Named(name.into())
    }

    /// The integer, if this is an integer type.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            Self::Named(_) => None,
        }
    }

    /// The name, if this is a named type.
    pub fn as_name(&self) -> Option<&str> {
        match self {
            Self::Int(_) => None,
            Self::Named(n) => Some(n),
        }
    }

    /// Whether this is a type a nexus in bit mode takes: an integer that is a power of two.
    ///
    /// ```
    /// use nexus_core::EventType;
    ///
    /// assert!(EventType::Int(8).is_bit());
    /// assert!(!EventType::Int(6).is_bit());
    /// assert!(!EventType::Int(0).is_bit());
    /// assert!(!EventType::from("tick").is_bit());
    /// ```
    pub fn is_bit(&self) -> bool {
        bit_of(self).is_some()
    }
}

/// The bit an event type is in bit mode: its value, when it is a power of two.
#[inline]
pub(crate) fn bit_of(event_type: &EventType) -> Option<u64> {
    match event_type {
        EventType::Int(i) if *i > 0 && i.count_ones() == 1 => Some(i.unsigned_abs()),
        _ => None,
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(i) => write!(f, "{i}"),
            Self::Named(n) => f.write_str(n),
        }
    }
}

macro_rules! event_type_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for EventType {
            fn from(i: $t) -> Self {
                Self::Int(i64::from(i))
            }
        }
    )*};
}
event_type_from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<&'static str> for EventType {
    fn from(name: &'static str) -> Self {
        Self::Named(Text::from(name))
    }
}

impl From<String> for EventType {
    fn from(name: String) -> Self {
        Self::Named(Text::from(name))
    }
}

impl From<Text> for EventType {
    fn from(name: Text) -> Self {
        Self::Named(name)
    }
}

/// What an event carries: nothing, an integer, text, or any typed value.
///
/// A typed value is read back with [`Payload::get`], never by parsing text. Cloning a payload
/// never copies a large value.
///
/// ```
/// use nexus_core::Payload;
///
/// #[derive(Debug)]
/// struct Reading { celsius: f32 }
///
/// assert_eq!(Payload::from(4).as_int(), Some(4));
/// assert_eq!(Payload::from("hi").as_str(), Some("hi"));
/// let p = Payload::value(Reading { celsius: 21.5 });
/// assert_eq!(p.get::<Reading>().map(|r| r.celsius), Some(21.5));
/// assert!(p.get::<String>().is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Payload {
    /// No payload.
    #[default]
    Empty,
    /// An integer, such as a [`Timer`](../nexus_sources/struct.Timer.html)'s count.
    Int(i64),
    /// Text.
    Text(Text),
    /// Any typed value.
    Value(AnyValue),
}

impl Payload {
    /// Wraps any value as a payload, to be read back with [`Payload::get`].
    pub fn value<T: Any + Send + Sync + fmt::Debug>(value: T) -> Self {
        Self::Value(AnyValue::new(value))
    }

    /// The integer, if this payload is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The text, if this payload is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The typed value, if this payload holds a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        match self {
            Self::Value(v) => v.downcast_ref(),
            _ => None,
        }
    }

    /// Whether the payload is [`Payload::Empty`].
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("None"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Text(t) => f.write_str(t),
            Self::Value(v) => fmt::Debug::fmt(v, f),
        }
    }
}

macro_rules! payload_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Payload {
            fn from(i: $t) -> Self {
                Self::Int(i64::from(i))
            }
        }
    )*};
}
payload_from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<&'static str> for Payload {
    fn from(s: &'static str) -> Self {
        Self::Text(Text::from(s))
    }
}

impl From<String> for Payload {
    fn from(s: String) -> Self {
        Self::Text(Text::from(s))
    }
}

impl From<Text> for Payload {
    fn from(s: Text) -> Self {
        Self::Text(s)
    }
}

impl From<()> for Payload {
    fn from((): ()) -> Self {
        Self::Empty
    }
}

/// A typed value held by a [`Payload`]: shared, immutable, and printable with `Debug`.
///
/// One reference-counted pointer: a payload holding one is no bigger than one holding text.
#[derive(Clone)]
pub struct AnyValue {
    value: Arc<dyn Held>,
}

/// What an [`AnyValue`] holds: a value that can be looked at as `Any` and printed.
trait Held: Any + Send + Sync {
    fn as_any(&self) -> &(dyn Any + Send + Sync);
    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

impl<T: Any + Send + Sync + fmt::Debug> Held for T {
    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl AnyValue {
    /// Wraps `value`.
    pub fn new<T: Any + Send + Sync + fmt::Debug>(value: T) -> Self {
        Self {
            value: Arc::new(value),
        }
    }

    /// The value, if it is a `T`.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.value.as_any().downcast_ref()
    }
}

impl fmt::Debug for AnyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.debug(f)
    }
}

/// Two typed values are equal when they are the same shared value.
impl PartialEq for AnyValue {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.value, &other.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_shares_large_payloads() {
        let big = String::from_utf8(vec![b'x'; 1 << 20]).unwrap();
        let event = Event::new(1, 2, 0, big);
        let copy = event.clone();
        let (Payload::Text(a), Payload::Text(b)) = (&event.payload, &copy.payload) else {
            panic!("text payload expected");
        };
        assert_eq!(
            a.as_ptr(),
            b.as_ptr(),
            "clone must share the text, not copy it"
        );
    }

    #[test]
    fn named_and_int_types_differ() {
        assert_ne!(EventType::from(1), EventType::name("1"));
        assert_eq!(EventType::name(String::from("a")), EventType::from("a"));
    }

    #[test]
    fn display_of_each_payload() {
        assert_eq!(Payload::Empty.to_string(), "None");
        assert_eq!(Payload::from(-3).to_string(), "-3");
        assert_eq!(Payload::value(vec![1, 2]).to_string(), "[1, 2]");
    }
}

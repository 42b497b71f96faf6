//! The one error type of the nexus crates, [`NexusError`].

use std::fmt;

use crate::event::{Event, EventType};

/// A boxed error from user code (a handler, filter or source), kept as the `source` of a
/// [`NexusError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The life-cycle state of an [`AsyncEventNexus`](crate::AsyncEventNexus).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoopState {
    /// Created; handlers and sources may be registered; the loop has not started.
    Ready,
    /// The loop is starting its sources.
    Starting,
    /// The loop is running: sources feed it and events are dispatched.
    Looping,
    /// The loop has stopped; it cannot be started again.
    Stopped,
}

impl fmt::Display for LoopState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ready => "READY",
            Self::Starting => "STARTING",
            Self::Looping => "LOOPING",
            Self::Stopped => "STOPPED",
        })
    }
}

/// The kinds of malformed message from the network, counted apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Malformed {
    /// Not valid JSON.
    NotJson,
    /// JSON, but not an event: not an object, or a field missing or of the wrong type.
    WrongField,
    /// Larger than allowed.
    TooLarge,
    /// An event of a type the receiver does not accept.
    UnknownType,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotJson => "not JSON",
            Self::WrongField => "wrong fields",
            Self::TooLarge => "too large",
            Self::UnknownType => "unknown type",
        })
    }
}

/// Everything that can go wrong in nexus.
///
/// The variants mirror the original library's exception classes. Those that were kinds of
/// `BadCall` there (a call made at the wrong time or on a misconfigured object) answer `true` to
/// [`NexusError::is_bad_call`]. Each message says what happened and to which event, type or
/// source.
///
/// # Examples
///
/// ```
/// use nexus_core::{AsyncEventNexus, Event, NexusError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let nexus = AsyncEventNexus::new();
/// // Not started yet: the event is refused and handed back.
/// let err = nexus.ingest(Event::new(7, 3, 0, "early")).await.unwrap_err();
/// assert!(err.is_bad_call());
/// assert_eq!(err.to_string(), "event 7 of type 3 refused: the nexus loop is not running (state READY)");
/// let NexusError::NotRunning { event, .. } = err else { unreachable!() };
/// assert_eq!(event.id, 7);
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NexusError {
    /// A converter has no more events to give; the nexus drops it and goes on with the others.
    #[error("no more events")]
    NoMoreEvents,

    /// No filter consumed the event and no handler is registered for its type, nor a default
    /// handler.
    #[error(
        "unhandled event {} of type {}: no filter consumed it and no handler is registered for \
         its type or as default",
        .event.id, .event.event_type
    )]
    UnhandledEvent {
        /// The event nobody handled.
        event: Box<Event>,
    },

    /// A handler is already registered for this event type (outside `multiple` mode).
    #[error("a handler for event type {selector} is already registered")]
    DuplicateHandler {
        /// The event type, range or `default`, as written.
        selector: String,
    },

    /// Two handlers registered by attribute take one event type (outside `multiple` mode).
    #[error(
        "handlers {first} and {second} are both registered for event type {selector}: keep one, \
         or build the nexus in `multiple` mode"
    )]
    DuplicateRegisteredHandler {
        /// The event types of the second handler, as written.
        selector: String,
        /// The path of the handler registered first.
        first: &'static str,
        /// The path of the handler that could not be registered.
        second: &'static str,
    },

    /// Two Rust types were registered on one nexus under one event name
    /// ([`EventKind::NAME`](crate::EventKind::NAME)): events of that name could not tell them
    /// apart.
    #[error(
        "event name \"{name}\" is claimed by two types, {first} and {second}: give each its own \
         name"
    )]
    EventNameClash {
        /// The name both types state.
        name: &'static str,
        /// The type registered first under the name.
        first: &'static str,
        /// The type that could not be registered.
        second: &'static str,
    },

    /// A producer has no live nexus to send to, or was asked to send before it was started.
    #[error("misconfigured event producer {producer}: {reason}")]
    MisconfiguredEventProducer {
        /// The producer's type name.
        producer: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A consumer cannot handle events as configured (for example a fanout with no handlers).
    #[error("misconfigured event consumer {consumer}: {reason}")]
    MisconfiguredEventConsumer {
        /// The consumer's type name.
        consumer: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// `loop_forever` was called while the loop is already starting or running.
    #[error("loop already started: {operation} called while the nexus is {state}")]
    LoopAlreadyStarted {
        /// The call that was refused.
        operation: &'static str,
        /// The state the nexus was in.
        state: LoopState,
    },

    /// `loop_forever` was called after the loop stopped; a nexus runs once.
    #[error("loop stopped: {operation} called after the nexus stopped")]
    LoopStopped {
        /// The call that was refused.
        operation: &'static str,
    },

    /// A call needs the nexus in another state.
    #[error("invalid loop state: {operation} needs the nexus {expected}, but it is {state}")]
    InvalidLoopState {
        /// The call that was refused.
        operation: &'static str,
        /// What the call needs, such as "READY".
        expected: &'static str,
        /// The state the nexus was in.
        state: LoopState,
    },

    /// An event was ingested while the loop is not running (before start or after stop). The
    /// event is handed back.
    #[error(
        "event {} of type {} refused: the nexus loop is not running (state {state})",
        .event.id, .event.event_type
    )]
    NotRunning {
        /// The refused event.
        event: Box<Event>,
        /// The state the nexus was in.
        state: LoopState,
    },

    /// A handler put more secondary events on its queue than it holds. The event is handed back;
    /// nothing already queued is lost.
    #[error(
        "secondary event {} of type {} refused: the event queue is full ({capacity} events)",
        .event.id, .event.event_type
    )]
    QueueFull {
        /// The refused event.
        event: Box<Event>,
        /// The queue's capacity.
        capacity: usize,
    },

    /// An event was handed to something that was closed (such as an event boundary); the event
    /// is handed back.
    #[error(
        "event {} of type {} refused: {what} is closed",
        .event.id, .event.event_type
    )]
    Closed {
        /// What was closed.
        what: String,
        /// The refused event.
        event: Box<Event>,
    },

    /// A nexus in bit mode was handed an event whose type is not a power of two; the event is
    /// handed back.
    #[error(
        "event {} of type {} refused: in bit mode an event type must be a power of two",
        .event.id, .event.event_type
    )]
    NotABit {
        /// The refused event.
        event: Box<Event>,
    },

    /// An event could not be encoded for the wire (its payload has no JSON form).
    #[error("event {id} of type {event_type} cannot be encoded: {reason}")]
    Encode {
        /// The event's id.
        id: u64,
        /// The event's type.
        event_type: EventType,
        /// Why.
        reason: String,
    },

    /// A message from the network is not an event; it was skipped.
    #[error("malformed message ({kind}): {detail}")]
    Malformed {
        /// What kind of fault.
        kind: Malformed,
        /// What exactly.
        detail: String,
    },

    /// A network transport (a socket, a broker connection) failed.
    #[error("{transport} failed: {detail}")]
    Transport {
        /// Which transport, such as "ZeroMQ" or "NATS".
        transport: &'static str,
        /// What failed.
        detail: String,
    },

    /// A source that was already running was started again.
    #[error("{source_name} was started twice: stop it before starting it again")]
    MultipleStart {
        /// The source's type name.
        source_name: String,
    },

    /// A constructor was given a value it cannot work with.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// What was wrong, such as "count of Timer CountDown".
        what: String,
        /// Why, and what would be accepted.
        reason: &'static str,
    },

    /// The nexus's `scope` was entered with a nexus that was already used.
    #[error("scope entered with a used nexus: {reason}")]
    NotPristine {
        /// What was found used.
        reason: &'static str,
    },

    /// A handler or filter returned an error (its `source`).
    #[error("handler {handler} failed on event {id} of type {event_type}")]
    Handler {
        /// The id of the event being handled.
        id: u64,
        /// The type of the event being handled.
        event_type: EventType,
        /// The handler's type name (a function's path, or a consumer's type).
        handler: &'static str,
        /// The handler's own error.
        #[source]
        source: BoxError,
    },

    /// A handler or filter panicked; the panic was caught and the nexus goes on.
    #[error("handler {handler} panicked on event {id} of type {event_type}: {message}")]
    HandlerPanicked {
        /// The id of the event being handled.
        id: u64,
        /// The type of the event being handled.
        event_type: EventType,
        /// The handler's name.
        handler: &'static str,
        /// The panic's message.
        message: String,
    },

    /// A handler ran longer than its time limit and was cancelled.
    #[error("handler {handler} timed out after {limit:?} on event {id} of type {event_type}")]
    HandlerTimedOut {
        /// The id of the event being handled.
        id: u64,
        /// The type of the event being handled.
        event_type: EventType,
        /// The handler's name.
        handler: &'static str,
        /// Its time limit.
        limit: std::time::Duration,
    },

    /// Ingesting the event would wait on a nexus that is itself waiting for this very call (two
    /// nexuses whose handlers ingest into each other). The event is handed back.
    #[error(
        "event {} of type {} refused: its nexus is waiting, further up this call, for the handler \
         that ingests it (a cycle between nexuses)",
        .event.id, .event.event_type
    )]
    Cycle {
        /// The refused event.
        event: Box<Event>,
    },

    /// The `ingest` dispatching the event was dropped (cancelled) before it was over. The
    /// event was counted as cancelled and given to the error policy (a dead-letter handler gets
    /// it with this error); what its handlers had queued is dispatched by the nexus's next
    /// dispatch.
    #[error(
        "event {id} of type {event_type} cancelled: the ingest dispatching it was dropped before \
         it was over"
    )]
    Cancelled {
        /// The event's id.
        id: u64,
        /// The event's type.
        event_type: EventType,
    },

    /// A producer's event failed (under [`ErrorPolicy::Propagate`](crate::ErrorPolicy)) and so
    /// ended the loop of the nexus it went to: that nexus's `loop_forever` returns the event's
    /// own error; the producer gets this one, which says what it was.
    #[error("the nexus loop ended on this producer's failed event: {reason}")]
    LoopEnded {
        /// The event's error, as its message.
        reason: String,
    },

    /// A blocking send was made from a thread that runs asynchronous tasks, where waiting would
    /// block the very tasks it waits for. The event is handed back: send with `.await` there, or
    /// block from a plain thread or `tokio::task::spawn_blocking`.
    #[error(
        "event {} of type {} refused: {what} was called from an async task, where it could \
         block the runtime forever; use `send(event).await` there",
        .event.id, .event.event_type
    )]
    BlockingInRuntime {
        /// The call that was refused.
        what: &'static str,
        /// The refused event.
        event: Box<Event>,
    },

    /// A broker answered that it already holds a message with this event's message id: the
    /// event was not stored again. Each publisher's message ids are unique, so this means the
    /// same event was published twice.
    #[error(
        "event {id} of type {event_type} not stored again: the broker already holds message \
         {message_id} (a duplicate)"
    )]
    DuplicatePublish {
        /// The event's id.
        id: u64,
        /// The event's type.
        event_type: EventType,
        /// The message id the broker knew.
        message_id: String,
    },

    /// An event source failed (its `source`).
    #[error("event source {source_name} failed in {operation}")]
    Source {
        /// The source's type name.
        source_name: String,
        /// What it was doing: `start`, `obtain_event`, `close`.
        operation: &'static str,
        /// The source's own error.
        #[source]
        source: BoxError,
    },

    /// Cleanup closed every source, but some failed to close; each failure is listed.
    #[error("cleanup: {} event source(s) failed to close: {}", .failures.len(), list(.failures))]
    CloseFailed {
        /// One error per source that failed to close.
        failures: Vec<NexusError>,
    },
}

fn list(errors: &[NexusError]) -> String {
    let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    texts.join("; ")
}

impl NexusError {
    /// Whether this error is a kind of the original's `BadCall`: a call made at the wrong time, or
    /// on a misconfigured object.
    pub fn is_bad_call(&self) -> bool {
        matches!(
            self,
            Self::MisconfiguredEventProducer { .. }
                | Self::MisconfiguredEventConsumer { .. }
                | Self::LoopAlreadyStarted { .. }
                | Self::LoopStopped { .. }
                | Self::InvalidLoopState { .. }
                | Self::NotRunning { .. }
                | Self::NotPristine { .. }
                | Self::Closed { .. }
                | Self::Cycle { .. }
                | Self::BlockingInRuntime { .. }
        )
    }

    /// Whether the event was refused before any handler saw it (handed back to its sender), as
    /// opposed to failing in its dispatch.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::NotRunning { .. }
                | Self::Cycle { .. }
                | Self::QueueFull { .. }
                | Self::Closed { .. }
                | Self::NotABit { .. }
                | Self::MisconfiguredEventProducer { .. }
                | Self::LoopEnded { .. }
        )
    }

    /// Wraps a source's own error, naming the source and what it was doing.
    ///
    /// ```
    /// use nexus_core::NexusError;
    ///
    /// let err = NexusError::source("SerialPort", "start", "device unplugged");
    /// assert_eq!(err.to_string(), "event source SerialPort failed in start");
    /// ```
    pub fn source(
        source_name: impl Into<String>,
        operation: &'static str,
        error: impl Into<BoxError>,
    ) -> Self {
        Self::Source {
            source_name: source_name.into(),
            operation,
            source: error.into(),
        }
    }

    /// The event this error hands back, if it carries one ([`NotRunning`](Self::NotRunning),
    /// [`QueueFull`](Self::QueueFull), [`UnhandledEvent`](Self::UnhandledEvent)).
    pub fn into_event(self) -> Option<Event> {
        match self {
            Self::NotRunning { event, .. }
            | Self::Closed { event, .. }
            | Self::Cycle { event }
            | Self::QueueFull { event, .. }
            | Self::NotABit { event }
            | Self::BlockingInRuntime { event, .. }
            | Self::UnhandledEvent { event } => Some(*event),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_failed_lists_every_source() {
        let err = NexusError::CloseFailed {
            failures: vec![
                NexusError::source("A", "close", "boom"),
                NexusError::source("B", "close", "bang"),
            ],
        };
        assert_eq!(
            err.to_string(),
            "cleanup: 2 event source(s) failed to close: event source A failed in close; \
             event source B failed in close"
        );
    }

    #[test]
    fn bad_call_kinds() {
        assert!(NexusError::LoopStopped { operation: "x" }.is_bad_call());
        assert!(!NexusError::NoMoreEvents.is_bad_call());
    }
}

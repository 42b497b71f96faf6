//! ZeroMQ, in the original library's format: strings become events of a set type
//! ([`ZmqEventConverter`]), JSON objects become whole events ([`ZmqEventReceiver`]), and events
//! go out as JSON objects ([`ZmqEventSender`]). They talk to libzmq and pyzmq peers, including
//! the original library itself.
//!
//! Sockets come from the `zeromq` crate: the socket types the original's patterns use
//! (PUB/SUB, PUSH/PULL) and the traits to bind, connect and use them are re-exported here. Bind
//! or connect them, then hand them over.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use nexus_core::wire::{self, DecodeLimits, WireStats};
use nexus_core::{
    BoxError, Event, EventConsumer, EventFactory, EventQueue, EventSource, EventType, Malformed,
    NexusError, Selector, SimpleEventConverter, async_trait,
};
use zeromq::ZmqMessage;
/// What a user needs of the `zeromq` crate: the sockets and the traits that bind, connect,
/// receive and send.
pub use zeromq::{
    PubSocket, PullSocket, PushSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqError,
};

fn transport(detail: impl fmt::Display) -> NexusError {
    NexusError::Transport {
        transport: "ZeroMQ",
        detail: detail.to_string(),
    }
}

/// The message's frames, joined (a single-frame message, the usual case, is not copied).
fn body(message: ZmqMessage) -> Vec<u8> {
    let mut frames = message.into_vec();
    if frames.len() == 1 {
        return frames.pop().map(|f| f.to_vec()).unwrap_or_default();
    }
    frames.concat()
}

type Rewrite = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Turns each string received on a socket (SUB or PULL) into an event of a set type, with an
/// id from the event factory and the string as its payload.
///
/// A hook may rewrite each string first, or skip it by returning `None` (the original's demo
/// stripped an `"RX "` prefix that way). A message that is not UTF-8 is counted as malformed and
/// skipped.
///
/// ```no_run
/// use nexus_core::AsyncEventNexus;
/// use nexus_sources::zmq::{Socket, SubSocket, ZmqEventConverter};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let nexus = AsyncEventNexus::new();
/// let mut socket = SubSocket::new();
/// socket.connect("tcp://127.0.0.1:5556").await?;
/// socket.subscribe("").await?;
/// let converter = ZmqEventConverter::new(socket, 42, nexus.event_factory())
///     .rewrite(|text| Some(text.strip_prefix("RX ").unwrap_or(text).to_owned()));
/// nexus.register(converter)?;
/// # Ok(())
/// # }
/// ```
pub struct ZmqEventConverter<S> {
    socket: S,
    event_type: EventType,
    factory: EventFactory,
    rewrite: Option<Arc<Rewrite>>,
    stats: WireStats,
}

impl<S: SocketRecv + Send + 'static> ZmqEventConverter<S> {
    /// Events of `event_type`, numbered by `factory` (usually the nexus's).
    pub fn new(socket: S, event_type: impl Into<EventType>, factory: EventFactory) -> Self {
        Self {
            socket,
            event_type: event_type.into(),
            factory,
            rewrite: None,
            stats: WireStats::default(),
        }
    }

    /// Rewrites each string before it becomes an event; `None` skips it.
    pub fn rewrite(
        mut self,
        hook: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.rewrite = Some(Arc::new(hook));
        self
    }

    /// The counts of what it received.
    pub fn stats(&self) -> WireStats {
        self.stats.clone()
    }
}

impl<S> fmt::Debug for ZmqEventConverter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZmqEventConverter")
            .field("event_type", &self.event_type)
            .finish_non_exhaustive()
    }
}

impl<S: Send + 'static> EventSource for ZmqEventConverter<S> {
    fn name(&self) -> &str {
        "ZmqEventConverter"
    }
}

#[async_trait]
impl<S: SocketRecv + Send + 'static> SimpleEventConverter for ZmqEventConverter<S> {
    /// # Errors
    ///
    /// [`NexusError::Transport`] when the socket fails.
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        loop {
            let message = self.socket.recv().await.map_err(transport)?;
            let text = match String::from_utf8(body(message)) {
                Ok(text) => text,
                Err(err) => {
                    self.stats
                        .record_malformed(Malformed::NotJson, &format!("not UTF-8: {err}"));
                    continue;
                }
            };
            let text = match &self.rewrite {
                Some(hook) => match hook(&text) {
                    Some(text) => text,
                    None => continue,
                },
                None => text,
            };
            self.stats.record_event();
            return Ok(self.factory.create_event(text, self.event_type.clone()));
        }
    }
}

/// Receives whole events as JSON objects (`{"id", "type", "priority", "payload"}`) on a socket,
/// usually PULL, as the original's `ZmqEventReceiver` does.
///
/// Bad input (not JSON, wrong fields, too large, a type outside [`only`](Self::only)) is
/// counted ([`stats`](Self::stats)), reported through `tracing`, and skipped: the nexus keeps
/// running and the good messages around it arrive.
///
/// An event that arrives well formed but then fails (nothing handles its type, or its handler
/// fails) does not end the nexus's loop either, unlike in the original: it is counted for the
/// receiver ([`NexusStats::per_source_failed`](nexus_core::NexusStats::per_source_failed)),
/// reported, and skipped, so that no peer on the network can stop the nexus.
/// [`end_loop_on_failure`](Self::end_loop_on_failure) restores the original's behaviour.
pub struct ZmqEventReceiver<S> {
    socket: S,
    limits: DecodeLimits,
    only: Option<Selector>,
    stats: WireStats,
    ends_loop: bool,
}

impl<S: SocketRecv + Send + 'static> ZmqEventReceiver<S> {
    /// A receiver on `socket`, accepting every type and messages up to 1 MiB.
    pub fn new(socket: S) -> Self {
        Self {
            socket,
            limits: DecodeLimits::default(),
            only: None,
            stats: WireStats::default(),
            ends_loop: false,
        }
    }

    /// With `true`, an event of this receiver that fails (under
    /// [`ErrorPolicy::Propagate`](nexus_core::ErrorPolicy)) ends the nexus's loop, as in the
    /// original: only for peers you trust. Default `false`.
    pub fn end_loop_on_failure(mut self, ends_loop: bool) -> Self {
        self.ends_loop = ends_loop;
        self
    }

    /// Accepts only events whose type `selector` names; others are counted as
    /// [`Malformed::UnknownType`] and skipped.
    pub fn only(mut self, selector: impl Into<Selector>) -> Self {
        self.only = Some(selector.into());
        self
    }

    /// Skips messages larger than `max_bytes`.
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.limits.max_bytes = max_bytes;
        self
    }

    /// The counts of what it received.
    pub fn stats(&self) -> WireStats {
        self.stats.clone()
    }
}

impl<S> fmt::Debug for ZmqEventReceiver<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZmqEventReceiver")
            .field("limits", &self.limits)
            .field("only", &self.only)
            .finish_non_exhaustive()
    }
}

impl<S: Send + 'static> EventSource for ZmqEventReceiver<S> {
    fn name(&self) -> &str {
        "ZmqEventReceiver"
    }

    /// `false` unless [`end_loop_on_failure`](ZmqEventReceiver::end_loop_on_failure) said
    /// otherwise: a peer on the network must not be able to stop the nexus.
    fn failures_end_loop(&self) -> bool {
        self.ends_loop
    }
}

#[async_trait]
impl<S: SocketRecv + Send + 'static> SimpleEventConverter for ZmqEventReceiver<S> {
    /// # Errors
    ///
    /// [`NexusError::Transport`] when the socket fails.
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        loop {
            let message = self.socket.recv().await.map_err(transport)?;
            let Some(event) = self
                .stats
                .admit(&body(message), self.limits, self.only.as_ref())
            else {
                continue;
            };
            return Ok(event);
        }
    }
}

/// Sends each event it handles as a JSON object on a socket, usually PUSH: register it as a
/// handler for the types to send.
///
/// A PUSH socket with no peer connected yet cannot take a message; the sender retries for up to
/// [`send_timeout`](Self::send_timeout) (default 5 s) before it reports the failure.
pub struct ZmqEventSender<S> {
    socket: tokio::sync::Mutex<S>,
    send_timeout: Duration,
    with_causes: bool,
}

impl<S: SocketSend + Send + 'static> ZmqEventSender<S> {
    /// A sender on `socket`.
    pub fn new(socket: S) -> Self {
        Self {
            socket: tokio::sync::Mutex::new(socket),
            send_timeout: Duration::from_secs(5),
            with_causes: false,
        }
    }

    /// Also sends each event's [`cause`](Event::cause), in the keys `cause` and `root`, for
    /// receivers that are nexus too (default `false`). The original's receiver refuses objects
    /// with keys it does not know: leave it off for it.
    pub fn with_causes(mut self, with_causes: bool) -> Self {
        self.with_causes = with_causes;
        self
    }

    /// How long to keep trying while no peer can take a message.
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Sends `event` now.
    ///
    /// # Errors
    ///
    /// [`NexusError::Encode`] when the payload has no JSON form (nothing is sent);
    /// [`NexusError::Transport`] when no peer took it within the send timeout, or the socket
    /// failed.
    pub async fn send(&self, event: &Event) -> Result<(), NexusError> {
        let bytes = if self.with_causes {
            wire::encode_with_cause(event)?
        } else {
            wire::encode(event)?
        };
        let mut message = ZmqMessage::from(bytes);
        let deadline = tokio::time::Instant::now() + self.send_timeout;
        let mut pause = Duration::from_millis(5);
        let mut socket = self.socket.lock().await;
        loop {
            match socket.send(message).await {
                Ok(()) => return Ok(()),
                Err(ZmqError::ReturnToSender { message: back, .. })
                    if tokio::time::Instant::now() < deadline =>
                {
                    message = back;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(err) => {
                    return Err(transport(format!(
                        "event {} of type {} not sent: {err}",
                        event.id, event.event_type
                    )));
                }
            }
        }
    }
}

impl<S> fmt::Debug for ZmqEventSender<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZmqEventSender")
            .field("send_timeout", &self.send_timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<S: SocketSend + Send + 'static> EventConsumer for ZmqEventSender<S> {
    async fn handle(&self, event: Event, _queue: EventQueue) -> Result<(), BoxError> {
        self.send(&event).await.map_err(Into::into)
    }
}

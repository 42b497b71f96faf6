//! [`NatsBoundary`]: events cross between domains in different processes or machines through a
//! NATS server, in the original library's JSON format.
//!
//! Each event type maps onto a subject, `<prefix>.<type>` (`nexus.events.99`,
//! `nexus.events.log.warning`), so that a domain subscribes only to the types it wants and NATS
//! routes them. Plain NATS delivers at most once; with JetStream
//! ([`NatsBoundary::jetstream`]) events are stored by the server and delivered at least once: the
//! receiving side acknowledges an event only after its nexus has dispatched it, and an event
//! delivered again (same id) is not dispatched twice.
//!
//! Besides its event, a message carries in its headers the event's cause (`Nexus-Cause`,
//! `Nexus-Root`) and, with the feature `otel`, the OpenTelemetry context of the `tracing` span it
//! was published in, written by the propagator installed with
//! `opentelemetry::global::set_text_map_propagator`; the receiving side then dispatches the
//! event in a `nexus.receive` span of that trace.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use nexus_core::wire::{self, DecodeLimits, WireStats};
use nexus_core::{
    AbortOnDrop, BoxError, Cause, Delivery, Event, EventConsumer, EventProducer, EventQueue,
    EventSource, EventType, Handler, NexusError, ProducerLink, Selector, async_trait,
};
use tokio::task::JoinHandle;
use tracing::Instrument;

mod trace;

/// Returns once the server has processed everything `client` sent before this call (such as a
/// subscription): a message to a fresh inbox, sent on the same connection, comes back only after
/// the server handled what came before it. (`flush` only writes to the socket.)
async fn in_place(client: &async_nats::Client) -> Result<(), NexusError> {
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .map_err(|err| transport(format!("subscribe to {inbox}: {err}")))?;
    client
        .publish(inbox.clone(), Bytes::new())
        .await
        .map_err(|err| transport(format!("publish to {inbox}: {err}")))?;
    client.flush().await.map_err(transport)?;
    let back = tokio::time::timeout(Duration::from_secs(30), echo.next()).await;
    // Dropping `echo` unsubscribes.
    match back {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(transport(format!(
            "the connection closed before {inbox} came back"
        ))),
        Err(_) => Err(transport(format!(
            "no answer from the server on {inbox} within 30 s"
        ))),
    }
}

fn transport(detail: impl fmt::Display) -> NexusError {
    NexusError::Transport {
        transport: "NATS",
        detail: detail.to_string(),
    }
}

/// A connection to a NATS server, and the subject prefix of one family of event domains.
///
/// # Examples
///
/// ```no_run
/// use nexus_bus::nats::NatsBoundary;
/// use nexus_core::AsyncEventNexus;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nexus_core::NexusError> {
/// const LOG: i64 = 500;
/// // In the process that makes the events:
/// let nats = NatsBoundary::connect("nats://127.0.0.1:4222", "shop.events").await?
///     .jetstream("SHOP").await?;
/// let app = AsyncEventNexus::new();
/// app.add_consumer(LOG, nats.publisher())?;
///
/// // In the process (or on the machine) that handles them:
/// let logging = AsyncEventNexus::new();
/// logging.add_producer(nats.durable_subscriber(LOG, "logging"))?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct NatsBoundary {
    client: async_nats::Client,
    prefix: String,
    jetstream: Option<(jetstream::Context, String)>,
}

impl fmt::Debug for NatsBoundary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBoundary")
            .field("prefix", &self.prefix)
            .field("stream", &self.jetstream.as_ref().map(|(_, name)| name))
            .finish_non_exhaustive()
    }
}

impl NatsBoundary {
    /// Connects to the server at `url`; events go to subjects under `prefix`.
    ///
    /// # Errors
    ///
    /// [`NexusError::Transport`] when the server cannot be reached.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, NexusError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(url)
            .await
            .map_err(|err| transport(format!("cannot connect to {url}: {err}")))?;
        Ok(Self::with_client(client, prefix))
    }

    /// Uses a client connected by other means.
    pub fn with_client(client: async_nats::Client, prefix: &str) -> Self {
        Self {
            client,
            prefix: prefix.trim_end_matches('.').to_owned(),
            jetstream: None,
        }
    }

    /// Stores events in the JetStream stream `stream` (created if missing, on disk, for every
    /// subject under the prefix), so that they are delivered at least once and survive
    /// restarts.
    ///
    /// # Errors
    ///
    /// [`NexusError::Transport`] when the server has no JetStream or refuses the stream.
    pub async fn jetstream(mut self, stream: &str) -> Result<Self, NexusError> {
        let context = jetstream::new(self.client.clone());
        ensure_stream(
            &context,
            stream::Config {
                name: stream.to_owned(),
                subjects: vec![format!("{}.>", self.prefix)],
                storage: stream::StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        self.jetstream = Some((context, stream.to_owned()));
        Ok(self)
    }

    /// The subject events of `event_type` travel on.
    ///
    /// ```no_run
    /// use nexus_bus::nats::NatsBoundary;
    /// use nexus_core::EventType;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nexus_core::NexusError> {
    /// let nats = NatsBoundary::connect("nats://127.0.0.1:4222", "shop.events").await?;
    /// assert_eq!(nats.subject(&EventType::Int(99)), "shop.events.99");
    /// assert_eq!(nats.subject(&EventType::name("log.warning")), "shop.events.log.warning");
    /// # Ok(())
    /// # }
    /// ```
    pub fn subject(&self, event_type: &EventType) -> String {
        match event_type {
            EventType::Int(i) => format!("{}.{i}", self.prefix),
            EventType::Named(name) => {
                let token: String = name
                    .chars()
                    .map(|c| match c {
                        '*' | '>' | ' ' | '\t' | '\r' | '\n' => '_',
                        c => c,
                    })
                    .collect();
                format!("{}.{token}", self.prefix)
            }
        }
    }

    /// The subject a subscription to `selector` needs: one type's subject, else every subject
    /// under the prefix (the subscriber then keeps only the types it wants).
    fn subscription(&self, selector: &Selector) -> String {
        match selector {
            Selector::Type(event_type) => self.subject(event_type),
            Selector::Kind(kind) => self.subject(&EventType::name(kind.name())),
            _ => format!("{}.>", self.prefix),
        }
    }

    /// Returns once the server has taken every message this boundary's connection sent before
    /// the call.
    ///
    /// Over plain NATS a publish returns once the client has queued its message, which is
    /// written to the server soon after; a process that ends right after its last publish
    /// loses what is still queued. Call this before it ends. (With JetStream, a publish returns
    /// only once the server stored the event.)
    ///
    /// # Errors
    ///
    /// [`NexusError::Transport`] when the connection closed or the server did not answer
    /// within 30 s.
    pub async fn flush(&self) -> Result<(), NexusError> {
        in_place(&self.client).await
    }

    /// The sending side: a consumer that publishes each event it handles.
    pub fn publisher(&self) -> NatsPublisher {
        NatsPublisher {
            boundary: self.clone(),
            origin: "nexus".to_owned(),
            instance: format!("{:016x}", fastrand::u64(..)),
            publish_timeout: Duration::from_secs(30),
            on_duplicate: OnDuplicate::Error,
            counts: Arc::default(),
            first_subject: Arc::default(),
            last_subject: Arc::default(),
        }
    }

    /// The receiving side, over plain NATS (at most once): a producer that ingests the events of
    /// the types `selector` names.
    pub fn subscriber(&self, selector: impl Into<Selector>) -> NatsSubscriber {
        self.make_subscriber(selector.into(), None)
    }

    /// The receiving side, over JetStream (at least once, resumed where it left off after a
    /// restart): a producer that ingests the events of the types `selector` names, through the
    /// durable consumer `durable`. Needs [`jetstream`](Self::jetstream).
    pub fn durable_subscriber(
        &self,
        selector: impl Into<Selector>,
        durable: &str,
    ) -> NatsSubscriber {
        self.make_subscriber(selector.into(), Some(durable.to_owned()))
    }

    fn make_subscriber(&self, selector: Selector, durable: Option<String>) -> NatsSubscriber {
        NatsSubscriber {
            boundary: self.clone(),
            selector,
            durable,
            ack_wait: Duration::from_secs(30),
            max_deliveries: 3,
            dead_letter: None,
            dedupe_window: Duration::from_secs(3600),
            limits: DecodeLimits::default(),
            stats: WireStats::default(),
            deliveries: Arc::default(),
            link: ProducerLink::new(),
            task: None,
            stopping: Arc::new(tokio::sync::watch::channel(Mode::Run).0),
        }
    }
}

/// What a [`NatsSubscriber`]'s task is asked to do, each later one overriding those before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    /// Deliver as messages come.
    Run,
    /// A plain subscriber: unsubscribe and deliver what the client had received before, then
    /// end ([`EventSource::drain`]).
    Drain,
    /// End after the message being dispatched ([`EventSource::close`]).
    Stop,
    /// End at once, the dispatch under way cut short: a drain was given up.
    Cut,
}

/// Asks a subscriber's task to go at least as far as `mode`.
fn ask(stopping: &tokio::sync::watch::Sender<Mode>, mode: Mode) {
    stopping.send_if_modified(|now| {
        let later = mode > *now;
        if later {
            *now = mode;
        }
        later
    });
}

/// Asks a subscriber's task to end at once when dropped, unless disarmed: a drain given up.
struct CutOnDrop<'a>(Option<&'a tokio::sync::watch::Sender<Mode>>);

impl CutOnDrop<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CutOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(stopping) = self.0 {
            ask(stopping, Mode::Cut);
        }
    }
}

/// Publishes each event it handles to its type's subject. Register it for the types that should
/// leave the domain.
///
/// With JetStream, `handle` returns once the server has stored the event; while the server is
/// unreachable it keeps trying for up to [`publish_timeout`](Self::publish_timeout), and an event
/// published twice meanwhile is stored once.
///
/// # Message ids
///
/// Each event travels with the message id `<origin>-<instance>-<event id>` (as `Nats-Msg-Id`):
/// the [`origin`](Self::origin) names the publisher, and the instance is a random 64-bit number
/// drawn when the publisher is made, so that a publisher started again (a new process, whose
/// event ids start again at 1) never reuses an id, while the retries of one publish share it.
/// The server drops a message whose id it has seen (within its duplicate window, 2 minutes by
/// default) and says so; a publish that gets that answer on its first try is not a silent
/// success: it fails with [`NexusError::DuplicatePublish`], or, with
/// [`on_duplicate(OnDuplicate::Warn)`](Self::on_duplicate), is reported through `tracing`.
/// Either way it is counted ([`stats`](Self::stats)).
///
/// # Memory
///
/// The subjects published to are kept for the life of the program, each once, so that a message
/// takes its subject without counting a reference shared with the client's connection: up to
/// 1,024 subjects of at most 256 bytes (256 KiB at most). Subjects past those are made as the
/// client makes them, and freed with the publishers that made them.
#[derive(Clone, Debug)]
pub struct NatsPublisher {
    boundary: NatsBoundary,
    /// Names the publisher in its message ids.
    origin: String,
    /// Drawn when the publisher is made: its message ids are its own.
    instance: String,
    publish_timeout: Duration,
    on_duplicate: OnDuplicate,
    counts: Arc<PublishCounts>,
    /// The subject of the first type published, made once and then read without a lock.
    first_subject: Arc<std::sync::OnceLock<(EventType, async_nats::Subject)>>,
    /// The subject of the last other type published, made once for a run of events of one type.
    last_subject: Arc<std::sync::Mutex<Option<(EventType, async_nats::Subject)>>>,
}

/// What a [`NatsPublisher`] does when the server says it already holds an event's message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnDuplicate {
    /// The publish fails with [`NexusError::DuplicatePublish`]. The default.
    #[default]
    Error,
    /// The publish succeeds; the duplicate is reported through `tracing` and counted.
    Warn,
}

#[derive(Debug, Default)]
struct PublishCounts {
    stored: AtomicU64,
    duplicates: AtomicU64,
}

/// What a [`NatsPublisher`] has counted (with JetStream).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Events the server stored.
    pub stored: u64,
    /// Events the server already held (its answer said `duplicate`) on the first try.
    pub duplicates: u64,
}

impl NatsPublisher {
    /// How long to keep trying while the server is unreachable (default 30 s).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Names this publisher in its message ids (default `nexus`). Characters outside
    /// `[A-Za-z0-9_]` become `_`.
    pub fn origin(mut self, origin: &str) -> Self {
        self.origin = origin
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self
    }

    /// What to do when the server already holds an event's message (default
    /// [`OnDuplicate::Error`]).
    pub fn on_duplicate(mut self, on_duplicate: OnDuplicate) -> Self {
        self.on_duplicate = on_duplicate;
        self
    }

    /// The message id `event` travels with.
    pub fn message_id(&self, event: &Event) -> String {
        format!("{}-{}-{}", self.origin, self.instance, event.id)
    }

    /// The subject of events of `event_type`: the first type's or the last one's again when the
    /// type is the same.
    fn subject_of(&self, event_type: &EventType) -> async_nats::Subject {
        let make = || kept_subject(self.boundary.subject(event_type));
        let (first, subject) = self
            .first_subject
            .get_or_init(|| (event_type.clone(), make()));
        if first == event_type {
            return subject.clone();
        }
        let mut last = self
            .last_subject
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*last {
            Some((known, subject)) if known == event_type => subject.clone(),
            _ => {
                let subject = make();
                *last = Some((event_type.clone(), subject.clone()));
                subject
            }
        }
    }

    /// What this publisher (and its clones) counted.
    pub fn stats(&self) -> PublishStats {
        PublishStats {
            stored: self.counts.stored.load(Relaxed),
            duplicates: self.counts.duplicates.load(Relaxed),
        }
    }

    /// Publishes `event` now: over plain NATS, returns once the client has queued it (see
    /// [`NatsBoundary::flush`]); with JetStream, once the server stored it.
    ///
    /// # Errors
    ///
    /// [`NexusError::Encode`] when its payload has no JSON form; [`NexusError::Transport`] when
    /// it could not be published (or, with JetStream, stored) in time.
    pub async fn publish(&self, event: &Event) -> Result<(), NexusError> {
        match &self.boundary.jetstream {
            None => self.publish_plain(event).await,
            Some((context, _)) => self.publish_stored(context, event).await,
        }
    }

    /// [`publish`](Self::publish) over plain NATS: a future of its own, smaller than a
    /// JetStream publish's, for the plain publisher's handler (see `as_handler`).
    async fn publish_plain(&self, event: &Event) -> Result<(), NexusError> {
        let payload = encoded(event)?;
        let subject = self.subject_of(&event.event_type);
        let client = &self.boundary.client;
        let trace = trace::current();
        // A message with nothing more to say than its event has no headers.
        let published = if event.cause.is_none() && trace.is_none() {
            client.publish(Handed::new(subject), payload).await
        } else {
            let mut headers = async_nats::HeaderMap::new();
            write_cause(&mut headers, event);
            if let Some(trace) = &trace {
                trace::write(&mut headers, trace);
            }
            client
                .publish_with_headers(Handed::new(subject), headers, payload)
                .await
        };
        published.map_err(|err| transport(format!("event {} not published: {err}", event.id)))
    }

    /// [`publish`](Self::publish) to the JetStream of `context`: retried until the server
    /// stores the event, or the publish timeout passes.
    async fn publish_stored(
        &self,
        context: &async_nats::jetstream::Context,
        event: &Event,
    ) -> Result<(), NexusError> {
        let payload = encoded(event)?;
        let subject = self.subject_of(&event.event_type);
        let message_id = self.message_id(event);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", message_id.as_str());
        write_cause(&mut headers, event);
        if let Some(trace) = trace::current() {
            trace::write(&mut headers, &trace);
        }
        let deadline = tokio::time::Instant::now() + self.publish_timeout;
        let mut pause = Duration::from_millis(50);
        let mut first = true;
        loop {
            let attempt = async {
                context
                    .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                    .await?
                    .await
                    .map_err(BoxError::from)
            };
            match attempt.await {
                Ok(ack) if ack.duplicate && first => {
                    // Not this publish's own retry: the event was published before.
                    self.counts.duplicates.fetch_add(1, Relaxed);
                    let err = NexusError::DuplicatePublish {
                        id: event.id,
                        event_type: event.event_type.clone(),
                        message_id,
                    };
                    return match self.on_duplicate {
                        OnDuplicate::Error => Err(err),
                        OnDuplicate::Warn => {
                            tracing::warn!(error = %err, "duplicate publish");
                            Ok(())
                        }
                    };
                }
                Ok(_) => {
                    // Stored, by this try or an earlier one whose answer was lost.
                    self.counts.stored.fetch_add(1, Relaxed);
                    return Ok(());
                }
                Err(err) if tokio::time::Instant::now() < deadline => {
                    first = false;
                    tracing::debug!(error = %err, id = event.id, "publish failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(err) => {
                    return Err(transport(format!(
                        "event {} of type {} not stored: {err}",
                        event.id, event.event_type
                    )));
                }
            }
        }
    }
}

/// How many subjects [`kept_subject`] keeps for the life of the program.
const KEPT_SUBJECTS: usize = 1024;
/// The longest subject [`kept_subject`] keeps.
const KEPT_SUBJECT_LEN: usize = 256;

/// Subjects published to, each kept once for the life of the program (see [`kept_subject`]).
static SUBJECTS: std::sync::LazyLock<std::sync::Mutex<HashSet<&'static str>>> =
    std::sync::LazyLock::new(Default::default);

/// `name` as a subject whose copies cost nothing to make and drop: text kept for the life of the
/// program, so that the copy the client takes for each message, dropped on its connection's
/// thread, counts no reference on shared bytes (an atomic add on the publishing thread and an
/// atomic subtract on the other, on the same line of memory, for every message). Each distinct
/// name is kept once, up to [`KEPT_SUBJECTS`] names of at most [`KEPT_SUBJECT_LEN`] bytes (at
/// most 256 KiB in all); past that, a subject of shared bytes, as the client makes one.
fn kept_subject(name: String) -> async_nats::Subject {
    let mut subjects = SUBJECTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    keep_subject(&mut subjects, name, KEPT_SUBJECTS)
}

/// [`kept_subject`] with the names kept so far and how many may be kept.
fn keep_subject(
    subjects: &mut HashSet<&'static str>,
    name: String,
    most: usize,
) -> async_nats::Subject {
    if let Some(&kept) = subjects.get(name.as_str()) {
        return async_nats::Subject::from_static(kept);
    }
    if name.len() > KEPT_SUBJECT_LEN || subjects.len() >= most {
        return async_nats::Subject::from(name);
    }
    let kept: &'static str = Box::leak(name.into_boxed_str());
    subjects.insert(kept);
    async_nats::Subject::from_static(kept)
}

/// A subject handed to the client as it is. The client's own `ToSubject` for `Subject` clones
/// the subject it is given, one more count on the subject's shared bytes, which the client's
/// connection drops on another thread.
struct Handed(std::cell::Cell<Option<async_nats::Subject>>);

impl Handed {
    fn new(subject: async_nats::Subject) -> Self {
        Self(std::cell::Cell::new(Some(subject)))
    }
}

impl async_nats::ToSubject for Handed {
    /// The subject; asked for again (the client asks once), the empty subject, which the
    /// client refuses as invalid.
    fn to_subject(&self) -> async_nats::Subject {
        self.0
            .take()
            .unwrap_or_else(|| async_nats::Subject::from_static(""))
    }
}

#[async_trait]
impl EventConsumer for NatsPublisher {
    async fn handle(&self, event: Event, _queue: EventQueue) -> Result<(), BoxError> {
        self.publish(&event).await.map_err(Into::into)
    }

    /// A function handler, so that a nexus makes each publish's future in memory it keeps
    /// instead of boxing it.
    ///
    /// Over plain NATS, the handler's future is that of a plain publish alone: a future that
    /// could also be a JetStream publish has the size of one (1,464 bytes against 864, built
    /// with Rust 1.95 and async-nats 0.51), and is moved whole for each event.
    fn as_handler(&self) -> Option<Handler> {
        let publisher = Arc::new(self.clone());
        Some(if self.boundary.jetstream.is_none() {
            Handler::new(move |event: Event, _queue: EventQueue| {
                let publisher = Arc::clone(&publisher);
                async move { publisher.publish_plain(&event).await }
            })
        } else {
            Handler::new(move |event: Event, _queue: EventQueue| {
                let publisher = Arc::clone(&publisher);
                async move { publisher.publish(&event).await }
            })
        })
    }
}

/// The size of the buffer a thread encodes the events it publishes into, one after the other.
const OUT_CHUNK: usize = 16 * 1024;
/// Below this much room left in its buffer, a thread starts a new one for its next event.
const OUT_ROOM: usize = 256;

thread_local! {
    /// This thread's buffer for encoded events (see [`encoded`]).
    static OUT: RefCell<Out> = RefCell::new(Out::default());
}

/// A thread's buffer for encoded events: what is left of the last buffer its events were written
/// into, and the vector an event is encoded in first.
#[derive(Default)]
struct Out {
    buffer: BytesMut,
    scratch: Vec<u8>,
}

/// `event` encoded ([`wire::encode`]) as a message's payload: written after the last event this
/// thread encoded, in a buffer of [`OUT_CHUNK`] bytes that the messages written in it share,
/// freed once the client has let go of them all. A message encoded on its own takes two
/// allocations (its bytes, and the count `Bytes` adds to a vector with room to spare), which the
/// connection's task frees, mostly on another thread: the allocator then takes a lock that the
/// publishing thread's own allocations wait on.
fn encoded(event: &Event) -> Result<Bytes, NexusError> {
    OUT.with(|out| match out.try_borrow_mut() {
        Ok(mut out) => encoded_in(event, &mut out),
        // Only when what runs while the buffer is borrowed (a typed payload's `Debug`, for
        // the error that it has no JSON form) publishes in turn: a buffer of its own.
        Err(_) => encoded_in(event, &mut Out::default()),
    })
}

/// [`encoded`] with `out`. The event is encoded into `out.scratch` first, then copied into the
/// buffer whole: writing to a vector takes about a tenth less time than writing piece by piece
/// to the buffer, and an event that cannot be encoded leaves nothing in the buffer.
fn encoded_in(event: &Event, out: &mut Out) -> Result<Bytes, NexusError> {
    let Out { buffer, scratch } = out;
    scratch.clear();
    let encoded = wire::encode_to(event, &mut *scratch);
    if encoded.is_ok() {
        if buffer.capacity() < OUT_ROOM.max(scratch.len()) {
            *buffer = BytesMut::with_capacity(OUT_CHUNK.max(scratch.len()));
        }
        buffer.extend_from_slice(scratch);
    }
    if scratch.capacity() > OUT_CHUNK {
        // Not kept for the next event: an event larger than a buffer is rare.
        *scratch = Vec::new();
    }
    encoded.map(|()| buffer.split().freeze())
}

/// Ingests the events of chosen types from NATS into every nexus it is registered with.
///
/// Bad input (not JSON, wrong fields, too large, a type it does not take) is counted
/// ([`stats`](Self::stats)), reported through `tracing`, and skipped.
///
/// # Delivery over JetStream
///
/// A durable subscriber acknowledges an event only once its nexus has dispatched it, so an event
/// is delivered at least once; and it records each dispatched event's message id in a JetStream
/// stream of its own (`<stream>_DISPATCHED_<durable>`, one subject per event) before
/// acknowledging it, and looks every delivery up there first, so that an
/// event delivered again (the subscriber or the server restarted, an acknowledgement lost) is
/// acknowledged without being dispatched twice, whichever process dispatched it before. Where
/// this stops: an event whose dispatch finished but whose record was not yet written when the
/// receiving process died, or when it was stopped while the server was away, is dispatched
/// again: at most one event per crash or such stop, as events are dispatched one at a time. Records are kept for [`dedupe_window`](Self::dedupe_window).
///
/// An event that fails (nothing handles it, its handler fails or panics) is delivered again, up
/// to [`max_deliveries`](Self::max_deliveries) times in all; then it is set aside: published
/// with its error (header `Nexus-Error`) to the dead-letter subject
/// ([`dead_letter`](Self::dead_letter)), and terminated on the server, so that it never comes
/// again and a flood of them cannot hold up good events. [`deliveries`](NatsSubscriber::deliveries)
/// counts new events, redeliveries, duplicates skipped and events set aside.
pub struct NatsSubscriber {
    boundary: NatsBoundary,
    selector: Selector,
    durable: Option<String>,
    ack_wait: Duration,
    max_deliveries: u32,
    dead_letter: Option<String>,
    dedupe_window: Duration,
    limits: DecodeLimits,
    stats: WireStats,
    deliveries: Arc<DeliveryCounts>,
    link: ProducerLink,
    task: Option<JoinHandle<()>>,
    /// What the task is asked to do: go on, drain, stop between two messages, or end at once.
    stopping: Arc<tokio::sync::watch::Sender<Mode>>,
}

#[derive(Debug, Default)]
struct DeliveryCounts {
    received: AtomicU64,
    redelivered: AtomicU64,
    dispatched: AtomicU64,
    duplicates: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
}

/// The counts of a durable [`NatsSubscriber`]: a handle that stays readable once the subscriber
/// is registered ([`NatsSubscriber::deliveries`]).
#[derive(Clone, Debug)]
pub struct Deliveries(Arc<DeliveryCounts>);

impl Deliveries {
    /// The counts now.
    pub fn now(&self) -> DeliveryStats {
        let d = &self.0;
        DeliveryStats {
            received: d.received.load(Relaxed),
            redelivered: d.redelivered.load(Relaxed),
            dispatched: d.dispatched.load(Relaxed),
            duplicates: d.duplicates.load(Relaxed),
            retried: d.retried.load(Relaxed),
            dead_lettered: d.dead_lettered.load(Relaxed),
        }
    }
}

/// What a durable [`NatsSubscriber`] has counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Events delivered for the first time.
    pub received: u64,
    /// Events delivered again (after a failure, a restart, a lost acknowledgement) and
    /// dispatched again because no dispatch of them was recorded.
    pub redelivered: u64,
    /// Events dispatched, and recorded as such.
    pub dispatched: u64,
    /// Deliveries of events already dispatched (by this process or an earlier one): acknowledged,
    /// not dispatched.
    pub duplicates: u64,
    /// Failed dispatches left for another delivery.
    pub retried: u64,
    /// Events set aside after their last delivery failed.
    pub dead_lettered: u64,
}

impl fmt::Debug for NatsSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSubscriber")
            .field("selector", &self.selector)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

impl NatsSubscriber {
    /// How long JetStream waits for an acknowledgement before delivering an event again
    /// (default 30 s). Set it longer than the slowest dispatch.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// How many times, in all, an event that fails is delivered before it is set aside
    /// (default 3; at least 1).
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.max_deliveries = deliveries.max(1);
        self
    }

    /// The subject events set aside are published to, with their error. A JetStream stream
    /// must capture it. Default: `<prefix>-dead-letter.<durable>`, captured by the stream
    /// `<stream>_DEAD_LETTER`, made if missing.
    pub fn dead_letter(mut self, subject: &str) -> Self {
        self.dead_letter = Some(subject.to_owned());
        self
    }

    /// How long the record of a dispatched event is kept (default 1 hour): an event delivered
    /// again later than that after its dispatch is dispatched again.
    pub fn dedupe_window(mut self, window: Duration) -> Self {
        self.dedupe_window = window;
        self
    }

    /// What a durable subscriber counts, readable at any time (also once the subscriber is
    /// registered).
    pub fn deliveries(&self) -> Deliveries {
        Deliveries(Arc::clone(&self.deliveries))
    }

    /// Skips messages larger than `max_bytes` (default 1 MiB).
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.limits.max_bytes = max_bytes;
        self
    }

    /// The counts of what it received.
    pub fn stats(&self) -> WireStats {
        self.stats.clone()
    }

    /// Whether the connection to the server is up.
    fn connected(&self) -> bool {
        self.boundary.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Waits until the connection to the server is up again.
    async fn reconnected(&self) {
        while !self.connected() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Decodes a message into an event this subscriber takes, or counts why not.
    fn accept(&self, payload: &[u8]) -> Option<Event> {
        self.stats.admit(payload, self.limits, Some(&self.selector))
    }

    async fn run_core(self: Arc<Self>, mut messages: async_nats::Subscriber) {
        let (mut stopping, mut draining, mut cutting) = (
            self.stopping.subscribe(),
            self.stopping.subscribe(),
            self.stopping.subscribe(),
        );
        // Checked between two messages that were already there: one atomic load.
        let mut asked = self.stopping.subscribe();
        // Each wait made once, and polled while waiting for a message (the cut, while a run is
        // delivered).
        let stopped = stopping.wait_for(|mode| *mode >= Mode::Stop);
        let drain = draining.wait_for(|mode| *mode >= Mode::Drain);
        let cut = cutting.wait_for(|mode| *mode == Mode::Cut);
        tokio::pin!(stopped, drain, cut);
        let mut drained = false;
        let mut held = None;
        loop {
            let message = tokio::select! {
                biased;
                () = (&mut stopped).map(drop) => break,
                () = (&mut drain).map(drop), if !drained => {
                    // The client ends the subscription once it has handed on what it had
                    // received before the unsubscription.
                    drained = true;
                    if let Err(err) = messages.drain().await {
                        tracing::warn!(error = %err, "NATS subscription not drained; stopping");
                        break;
                    }
                    continue;
                }
                message = messages.next() => message,
            };
            let Some(message) = message else { break };
            // This message and those already there after it, up to `RUN`, go through one
            // lookup of the nexuses (held only for the run, so that an idle subscriber does not
            // keep a dropped nexus alive).
            let delivery = self.link.delivery();
            let mut run = Run {
                subscriber: &self,
                messages: &mut messages,
                asked: &mut asked,
                held: Some(message),
                taken: 1,
                started: false,
                over: false,
            };
            let goes_on = tokio::select! {
                biased;
                goes_on = run.deliver(&delivery) => goes_on,
                // The dispatch under way is dropped, and counted as cancelled by the nexus.
                () = (&mut cut).map(drop) => false,
            };
            held = run.held.take();
            if !goes_on {
                break;
            }
        }
        self.leave_waiting(&mut messages, held).await;
    }

    /// Leaves undelivered ([`ProducerLink::leave`]) the events of the messages the client had
    /// received for this subscription and it had not dispatched when it ended (`held` first):
    /// counted as dropped, and handed back in a shutdown's report. It unsubscribes first, so
    /// what the client holds then is all there is.
    async fn leave_waiting(
        &self,
        messages: &mut async_nats::Subscriber,
        held: Option<async_nats::Message>,
    ) {
        // An ended subscription has nothing waiting, and refuses this.
        let _ = messages.unsubscribe().await;
        let waiting = held.into_iter().chain(std::iter::from_fn(|| {
            messages.next().now_or_never().flatten()
        }));
        for message in waiting {
            if let Some(mut event) = self.accept(&message.payload) {
                event.cause = read_cause(message.headers.as_ref());
                self.link.leave(event);
            }
        }
    }

    /// Leaves undelivered the event a nexus handed back with `err`, if any.
    fn leave_refused(&self, err: NexusError) {
        if let Some(event) = err.into_event() {
            self.link.leave(event);
        }
    }

    /// Decodes and dispatches one message; `false` when the nexus takes no more events.
    async fn deliver(&self, delivery: &Delivery<'_>, message: &async_nats::Message) -> bool {
        let Some(mut event) = self.accept(&message.payload) else {
            return true;
        };
        event.cause = read_cause(message.headers.as_ref());
        let span = trace::receive_span(message.headers.as_ref(), &message.subject, &event);
        let dispatched = delivery.distribute_event(event);
        let dispatched = match span {
            None => dispatched.await,
            Some(span) => dispatched.instrument(span).await,
        };
        match dispatched {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(error = %err, "NATS event could not be dispatched");
                if err.is_bad_call() {
                    self.leave_refused(err);
                    return false;
                }
                true
            }
        }
    }

    async fn run_durable(self: Arc<Self>, consumer: pull::Stream, durable: Durable) {
        let durable = &durable;
        // Each delivery is looked up in the record as soon as it arrives, up to `LOOK_AHEAD`
        // ahead of the one being dispatched, in order: only the dispatch and its record wait
        // for each other. A record written after a lookup was sent is caught by `seen`, which
        // is asked again when the delivery's turn comes.
        let mut messages = consumer
            .map(|next| async move {
                let message = next?;
                let (delivered, sequence) = message.info().map_or((1, 0), |info| {
                    (info.delivered.max(1).unsigned_abs(), info.stream_sequence)
                });
                let key = record_key(&message, sequence);
                let recorded = durable.was_dispatched(&key).await;
                Ok::<_, pull::MessagesError>((message, delivered, key, recorded))
            })
            .buffered(LOOK_AHEAD);
        let mut seen = Seen::new(100_000);
        let counts = &self.deliveries;
        let mut stopping = self.stopping.subscribe();
        let stopped = stopping.wait_for(|mode| *mode >= Mode::Stop);
        tokio::pin!(stopped);
        loop {
            // Stopped between two messages, never in the middle of one.
            let next = tokio::select! {
                biased;
                _ = &mut stopped => break,
                next = messages.next() => next,
            };
            let Some(next) = next else { break };
            let (message, delivered, key, recorded) = match next {
                Ok(looked_up) => looked_up,
                Err(err) => {
                    tracing::warn!(error = %err, "JetStream delivery failed; continuing");
                    continue;
                }
            };
            if recorded || seen.contains(&key) {
                tracing::debug!(key, "event delivered again; already dispatched");
                counts.duplicates.fetch_add(1, Relaxed);
                acknowledge(&message).await;
                continue;
            }
            let Some(mut event) = self.accept(&message.payload) else {
                // Bad input is not redelivered: it would be as bad next time.
                acknowledge(&message).await;
                continue;
            };
            event.cause = read_cause(message.headers.as_ref());
            // Looked up ahead, so the server may have gone since: an event is dispatched only
            // while the server is there to take its record right after. Asked to stop while it
            // is away, the event is left for a later delivery, not dispatched.
            if !self.connected() {
                let back = tokio::select! {
                    biased;
                    _ = &mut stopped => false,
                    () = self.reconnected() => true,
                };
                if !back {
                    break;
                }
            }
            if delivered > 1 {
                counts.redelivered.fetch_add(1, Relaxed);
            } else {
                counts.received.fetch_add(1, Relaxed);
            }
            let span = trace::receive_span(message.headers.as_ref(), &message.subject, &event);
            let dispatched = self.link.distribute_event(event);
            let dispatched = match span {
                None => dispatched.await,
                Some(span) => dispatched.instrument(span).await,
            };
            match dispatched {
                Ok(()) => {
                    seen.insert(key.clone());
                    // Acknowledged only once recorded, so that a redelivery is skipped. Asked to
                    // stop while the server cannot store the record, it goes on trying for
                    // `STOP_GRACE`; then the event is left unacknowledged, delivered again
                    // later, and dispatched again (the one event of the stated bound).
                    let record = durable.record(&key);
                    tokio::pin!(record);
                    let (recorded, stop) = tokio::select! {
                        biased;
                        () = &mut record => (true, false),
                        _ = &mut stopped => (false, true),
                    };
                    let recorded =
                        recorded || tokio::time::timeout(STOP_GRACE, &mut record).await.is_ok();
                    if recorded {
                        counts.dispatched.fetch_add(1, Relaxed);
                        acknowledge(&message).await;
                    } else {
                        tracing::warn!(
                            key,
                            "stopped before the server stored the record of a dispatched event; it will be dispatched again"
                        );
                    }
                    if stop {
                        break;
                    }
                }
                Err(err) if err.is_bad_call() => {
                    // The nexus is not taking events: left for the next subscriber.
                    tracing::error!(error = %err, "JetStream event not dispatched; left for redelivery");
                    break;
                }
                Err(err) if delivered >= u64::from(self.max_deliveries) => {
                    durable.set_aside(&message, &err, delivered).await;
                    counts.dead_lettered.fetch_add(1, Relaxed);
                }
                Err(err) => {
                    tracing::warn!(error = %err, delivered, "JetStream event failed; delivered again soon");
                    counts.retried.fetch_add(1, Relaxed);
                    let pause = Duration::from_millis(100 * delivered).min(self.ack_wait);
                    if let Err(err) = message.ack_with(jetstream::AckKind::Nak(Some(pause))).await {
                        tracing::warn!(error = %err, "negative acknowledgement not sent; the event comes again after ack_wait");
                    }
                }
            }
        }
    }
}

/// A run of messages of a plain subscription: the one it begins with and those already there
/// after it, up to `RUN`, taken one at a time as the nexus is ready for each.
struct Run<'a> {
    subscriber: &'a NatsSubscriber,
    messages: &'a mut async_nats::Subscriber,
    asked: &'a mut tokio::sync::watch::Receiver<Mode>,
    /// The next message, taken from the subscription but not yet looked at, or one left for
    /// [`NatsSubscriber::deliver`].
    held: Option<async_nats::Message>,
    /// Messages taken from the subscription in this run.
    taken: usize,
    /// Whether a message of the run was looked at: a stop asked for after it ends the run.
    started: bool,
    /// The subscriber is to end: a stop was asked for, or the subscription ended.
    over: bool,
}

impl Run<'_> {
    /// Delivers the run: messages without headers through one hold of the nexus's gate
    /// ([`Delivery::distribute_run`]), each message with headers alone, in the span its trace
    /// context asks for ([`NatsSubscriber::deliver`]), all in the order they came. `false` when
    /// the subscriber is to end.
    async fn deliver(&mut self, delivery: &Delivery<'_>) -> bool {
        loop {
            match delivery.distribute_run(|| self.next()).await {
                Ok(()) => {}
                Err(err) => {
                    tracing::error!(error = %err, "NATS event could not be dispatched");
                    if err.is_bad_call() {
                        self.subscriber.leave_refused(err);
                        return false;
                    }
                    // The event failed; the run goes on with the next.
                    continue;
                }
            }
            if self.over {
                return false;
            }
            let Some(message) = self.held.take() else {
                // `RUN` messages, or none waiting: the subscriber waits for the next.
                return true;
            };
            if !self.subscriber.deliver(delivery, &message).await {
                return false;
            }
        }
    }

    /// The event of the next message without headers; `None` at a message with headers (held
    /// for [`NatsSubscriber::deliver`]), when none is waiting, after `RUN` messages, or once
    /// the subscriber is to end. Messages that are not events it takes are counted and skipped.
    fn next(&mut self) -> Option<Event> {
        loop {
            if self.started
                && self.asked.has_changed().unwrap_or(true)
                && *self.asked.borrow_and_update() >= Mode::Stop
            {
                self.over = true;
                return None;
            }
            self.started = true;
            let message = match self.held.take() {
                Some(message) => message,
                None if self.taken == RUN => return None,
                None => match self.messages.next().now_or_never() {
                    Some(Some(message)) => {
                        self.taken += 1;
                        message
                    }
                    Some(None) => {
                        self.over = true;
                        return None;
                    }
                    None => return None,
                },
            };
            if message.headers.is_some() {
                self.held = Some(message);
                return None;
            }
            if let Some(event) = self.subscriber.accept(&message.payload) {
                return Some(event);
            }
        }
    }
}

/// The headers an event's cause travels in: the id of the event that led to it, and the first
/// event of the chain.
const CAUSE: &str = "Nexus-Cause";
const ROOT: &str = "Nexus-Root";

fn write_cause(headers: &mut async_nats::HeaderMap, event: &Event) {
    if let Some(cause) = event.cause {
        headers.insert(CAUSE, cause.id.to_string().as_str());
        headers.insert(ROOT, cause.root.to_string().as_str());
    }
}

/// The cause a message's headers state; none when either header is missing or not a number.
fn read_cause(headers: Option<&async_nats::HeaderMap>) -> Option<Cause> {
    let headers = headers?;
    let number = |name| headers.get(name)?.as_str().parse().ok();
    Some(Cause {
        id: number(CAUSE)?,
        root: number(ROOT)?,
    })
}

/// The stream `config` names, made if missing. Two processes starting at once may both find it
/// missing: the one whose creation fails then finds the other's.
async fn ensure_stream(
    context: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, NexusError> {
    let name = config.name.clone();
    match context.get_or_create_stream(config).await {
        Ok(stream) => Ok(stream),
        Err(first) => context
            .get_stream(&name)
            .await
            .map_err(|_| transport(format!("stream {name}: {first}"))),
    }
}

/// The key an event's dispatch is recorded under: its message id where it has one that the
/// bucket takes as it is, else that id in hex, else its stream sequence.
fn record_key(message: &jetstream::Message, sequence: u64) -> String {
    match message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(async_nats::HeaderValue::as_str)
    {
        Some(id)
            if !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            id.to_owned()
        }
        Some(id) if !id.is_empty() => {
            let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
            format!("x{hex}")
        }
        _ => format!("seq-{sequence}"),
    }
}

/// What a durable subscriber keeps on the server besides its consumer: the record of dispatched
/// events, and where events set aside go.
struct Durable {
    /// The stream of records: one subject per dispatched event, one message per subject.
    record: stream::Stream,
    /// The subjects of the records: `<this>.<key>`.
    record_subject: String,
    context: jetstream::Context,
    dead_letter: String,
}

impl Durable {
    /// Whether the record holds `key`. A record that cannot be read (the server restarting) is
    /// asked again, with growing pauses, until it answers: dispatching on a guess could dispatch
    /// an event twice.
    async fn was_dispatched(&self, key: &str) -> bool {
        let subject = format!("{}.{key}", self.record_subject);
        let mut pause = Duration::from_millis(50);
        loop {
            match self.record.get_last_raw_message_by_subject(&subject).await {
                Ok(_) => return true,
                Err(err) if err.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                    return false;
                }
                Err(err) => {
                    tracing::warn!(error = %err, key, "record of dispatched events not read; asking again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Records `key` as dispatched, waiting for the server to store it, and trying again, with
    /// growing pauses, until it does.
    async fn record(&self, key: &str) {
        let subject = format!("{}.{key}", self.record_subject);
        let mut pause = Duration::from_millis(50);
        loop {
            let stored = async {
                self.context
                    .publish(subject.clone(), Bytes::new())
                    .await?
                    .await
                    .map_err(BoxError::from)
            };
            match stored.await {
                Ok(_) => return,
                Err(err) => {
                    tracing::warn!(error = %err, key, "dispatch not recorded; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Publishes a failed event with its error to the dead-letter subject, then terminates it on
    /// the server.
    async fn set_aside(&self, message: &jetstream::Message, err: &NexusError, delivered: u64) {
        let mut headers = async_nats::HeaderMap::new();
        let error: String = err
            .to_string()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        headers.insert("Nexus-Error", error.as_str());
        headers.insert("Nexus-Deliveries", delivered.to_string().as_str());
        headers.insert("Nexus-Subject", message.subject.as_str());
        let sequence = message.info().map_or(0, |info| info.stream_sequence);
        let key = record_key(message, sequence);
        headers.insert("Nats-Msg-Id", format!("{key}-dead").as_str());
        let published = async {
            self.context
                .publish_with_headers(self.dead_letter.clone(), headers, message.payload.clone())
                .await?
                .await
                .map_err(BoxError::from)
        };
        match published.await {
            Ok(_) => {
                tracing::warn!(error, delivered, subject = %self.dead_letter, "event set aside")
            }
            Err(failure) => {
                tracing::error!(error, %failure, "event set aside, but not stored on the dead-letter subject")
            }
        }
        if let Err(failure) = message.ack_with(jetstream::AckKind::Term).await {
            tracing::warn!(%failure, "termination not sent; the event comes again after ack_wait");
        }
    }
}

/// Acknowledges without waiting for the server's confirmation: an acknowledgement that is lost
/// brings the event back, and its record (written before) has it skipped then.
async fn acknowledge(message: &jetstream::Message) {
    if let Err(err) = message.ack().await {
        tracing::warn!(error = %err, "acknowledgement not sent; the event comes again, and is skipped as recorded");
    }
}

/// How long a durable subscriber asked to stop goes on trying to record an event it dispatched.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How many messages already there a plain subscriber delivers in one run.
const RUN: usize = 64;

/// How many deliveries a durable subscriber looks up in its record ahead of the one it is
/// dispatching.
const LOOK_AHEAD: usize = 32;

/// The ids of recently dispatched events, bounded.
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Seen {
    fn new(capacity: usize) -> Self {
        Self {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: String) {
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        self.ids.insert(id.clone());
        self.order.push_back(id);
    }
}

impl NatsSubscriber {
    /// Opens (or makes) the record of dispatched events and the dead-letter stream of the
    /// durable consumer `durable` of `stream`.
    async fn durable_state(
        &self,
        context: &jetstream::Context,
        stream: &str,
        durable: &str,
    ) -> Result<Durable, NexusError> {
        let name = |text: &str| -> String {
            text.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let record_name = format!("{}_DISPATCHED_{}", name(stream), name(durable));
        let record_subject = format!("nexus-dispatched.{}.{}", name(stream), name(durable));
        let record = ensure_stream(
            context,
            stream::Config {
                name: record_name.clone(),
                description: Some(format!(
                    "events dispatched through the durable consumer {durable}"
                )),
                subjects: vec![format!("{record_subject}.>")],
                max_messages_per_subject: 1,
                max_age: self.dedupe_window,
                storage: stream::StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        let dead_letter = match &self.dead_letter {
            Some(subject) => subject.clone(),
            None => {
                let subject = format!("{}-dead-letter.{}", self.boundary.prefix, name(durable));
                let dead = format!("{}_DEAD_LETTER", name(stream));
                ensure_stream(
                    context,
                    stream::Config {
                        name: dead.clone(),
                        subjects: vec![format!("{}-dead-letter.>", self.boundary.prefix)],
                        storage: stream::StorageType::File,
                        ..Default::default()
                    },
                )
                .await?;
                subject
            }
        };
        Ok(Durable {
            record,
            record_subject,
            context: context.clone(),
            dead_letter,
        })
    }
}

#[async_trait]
impl EventSource for NatsSubscriber {
    /// Subscribes and starts ingesting.
    ///
    /// # Errors
    ///
    /// [`NexusError::MisconfiguredEventProducer`] with no nexus; [`NexusError::MultipleStart`]
    /// when already started; [`NexusError::Transport`] when the subscription fails, or a durable
    /// subscriber's boundary has no JetStream.
    async fn start(&mut self) -> Result<(), NexusError> {
        self.link.begin(self.name())?;
        if self.task.as_ref().is_some_and(|t| !t.is_finished()) {
            return Err(NexusError::MultipleStart {
                source_name: self.name().to_owned(),
            });
        }
        let subject = self.boundary.subscription(&self.selector);
        let runner = Arc::new(Self {
            boundary: self.boundary.clone(),
            selector: self.selector.clone(),
            durable: self.durable.clone(),
            ack_wait: self.ack_wait,
            max_deliveries: self.max_deliveries,
            dead_letter: self.dead_letter.clone(),
            dedupe_window: self.dedupe_window,
            limits: self.limits,
            stats: self.stats.clone(),
            deliveries: Arc::clone(&self.deliveries),
            link: self.link.clone(),
            task: None,
            stopping: Arc::clone(&self.stopping),
        });
        self.stopping.send_replace(Mode::Run);
        let task = match (&self.durable, &self.boundary.jetstream) {
            (None, _) => {
                let client = &self.boundary.client;
                let messages = client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|err| transport(format!("subscribe to {subject}: {err}")))?;
                // The subscription is in place at the server before `start` returns.
                in_place(client).await?;
                tokio::spawn(runner.run_core(messages))
            }
            (Some(durable), Some((context, stream_name))) => {
                let kept = self.durable_state(context, stream_name, durable).await?;
                let stream = context
                    .get_stream(stream_name)
                    .await
                    .map_err(|err| transport(format!("stream {stream_name}: {err}")))?;
                let consumer = stream
                    .get_or_create_consumer(
                        durable,
                        pull::Config {
                            durable_name: Some(durable.clone()),
                            filter_subject: subject,
                            ack_policy: jetstream::consumer::AckPolicy::Explicit,
                            ack_wait: self.ack_wait,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|err| transport(format!("consumer {durable}: {err}")))?;
                let messages = consumer
                    .messages()
                    .await
                    .map_err(|err| transport(format!("consumer {durable}: {err}")))?;
                tokio::spawn(runner.run_durable(messages, kept))
            }
            (Some(durable), None) => {
                return Err(transport(format!(
                    "durable subscriber {durable} needs a boundary with JetStream: call \
                     `NatsBoundary::jetstream` first"
                )));
            }
        };
        self.task = Some(task);
        Ok(())
    }

    /// A plain subscriber unsubscribes, delivers what the client had received for it, and
    /// returns once the subscription has ended. Given up (a shutdown's deadline passed), it
    /// ends at once: the dispatch under way is cut short (counted as cancelled) and the events
    /// of the messages not dispatched are left undelivered, as [`close`](EventSource::close)
    /// leaves them. A durable subscriber has nothing to drain: what it has not acknowledged is
    /// delivered again to the next subscriber of its durable name.
    ///
    /// # Errors
    ///
    /// [`NexusError::Source`] when called from the subscriber's own task (a handler it is
    /// calling shuts its nexus down): the task cannot wait for itself.
    async fn drain(&mut self) -> Result<(), NexusError> {
        if self.durable.is_some() {
            return Ok(());
        }
        let Some(task) = &mut self.task else {
            return Ok(());
        };
        if tokio::task::try_id() == Some(task.id()) {
            return Err(NexusError::source(
                "NatsSubscriber",
                "drain",
                "called from the subscriber's own task: the messages it holds were not waited for",
            ));
        }
        ask(&self.stopping, Mode::Drain);
        let cut = CutOnDrop(Some(&self.stopping));
        let _ = task.await;
        cut.disarm();
        self.task = None;
        Ok(())
    }

    /// Stops ingesting, after the message being dispatched (its dispatch is recorded and
    /// acknowledged; given up, the task is aborted where it is). With JetStream, what was not
    /// acknowledged is delivered again to the next subscriber of the same durable name. Over
    /// plain NATS, the events of the messages the client had received and not dispatched are
    /// left undelivered ([`ProducerLink::leave`]): counted as dropped, and handed back in a
    /// shutdown's report.
    async fn close(&mut self) -> Result<(), NexusError> {
        ask(&self.stopping, Mode::Stop);
        if let Some(mut task) = self.task.take()
            && tokio::task::try_id() != Some(task.id())
        {
            let abort = AbortOnDrop::new(&task);
            let _ = (&mut task).await;
            abort.disarm();
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "NatsSubscriber"
    }

    /// `false`: an event from the network that fails is counted for the subscriber and
    /// reported, never the end of the nexus's loop.
    fn failures_end_loop(&self) -> bool {
        false
    }
}

impl EventProducer for NatsSubscriber {
    fn link(&self) -> &ProducerLink {
        &self.link
    }
}

#[cfg(test)]
mod tests {
    use async_nats::ToSubject;
    use nexus_core::wire::{self, DecodeLimits};
    use nexus_core::{Event, NexusError, Payload};

    use std::collections::HashSet;

    use super::{Handed, KEPT_SUBJECT_LEN, OUT_CHUNK, encoded, keep_subject, kept_subject};

    #[test]
    fn events_encoded_one_after_another_share_a_buffer_and_each_reads_back_as_itself() {
        let big = "x".repeat(OUT_CHUNK + 100);
        let events: Vec<Event> = (0..2_000u64)
            .map(|i| match i % 4 {
                0 => Event::new(i, 7, 0, i as i64),
                1 => Event::new(i, "order.placed", -3, format!("order {i}")),
                2 => Event::new(i, 8, 1, ()),
                // One larger than a whole buffer.
                _ if i == 1_003 => Event::new(i, 9, 0, big.clone()),
                _ => Event::new(i, 9, 0, "é\"\n"),
            })
            .collect();
        // All kept: a later event is never written over an earlier one's bytes.
        let messages: Vec<_> = events.iter().map(|e| encoded(e).unwrap()).collect();
        let limits = DecodeLimits {
            max_bytes: 2 * OUT_CHUNK,
        };
        for (event, message) in events.iter().zip(&messages) {
            assert_eq!(&message[..], &wire::encode(event).unwrap()[..], "{event}");
            assert_eq!(&wire::decode(message, limits).unwrap(), event);
        }
        // The first two messages lie side by side in one buffer.
        let (first, second) = (&messages[0], &messages[1]);
        assert_eq!(first.as_ptr().wrapping_add(first.len()), second.as_ptr());
    }

    #[test]
    fn an_event_encoded_while_the_thread_encodes_another_is_encoded_apart() {
        // A typed payload's `Debug` runs while its event is being encoded (for the error that
        // it has no JSON form); one that encodes an event of its own gets it whole.
        type Seen = std::sync::Arc<std::sync::Mutex<Option<bytes::Bytes>>>;
        struct Nested(Seen);
        impl std::fmt::Debug for Nested {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let inner = encoded(&Event::new(1, 7, 0, "inner")).map_err(|_| std::fmt::Error)?;
                *self.0.lock().unwrap() = Some(inner);
                f.write_str("Nested")
            }
        }
        let seen = Seen::default();
        let outer = Event::new(2, 7, 0, Payload::value(Nested(seen.clone())));
        assert!(matches!(
            encoded(&outer),
            Err(NexusError::Encode { id: 2, .. })
        ));
        let inner = seen
            .lock()
            .unwrap()
            .take()
            .expect("the inner event was encoded");
        assert_eq!(
            &inner[..],
            br#"{"id":1,"type":7,"priority":0,"payload":"inner"}"#
        );
    }

    #[test]
    fn an_event_that_cannot_be_encoded_is_an_error_and_the_next_one_is_whole() {
        #[derive(Debug)]
        struct Opaque;
        let bad = Event::new(5, 7, 0, Payload::value(Opaque));
        let err = encoded(&bad).unwrap_err();
        assert!(matches!(err, NexusError::Encode { id: 5, .. }), "{err}");
        let good = Event::new(6, 7, 0, "after");
        let message = encoded(&good).unwrap();
        assert_eq!(
            wire::decode(&message, DecodeLimits::default()).unwrap(),
            good
        );
    }

    #[test]
    fn a_handed_subject_is_the_subject_itself_once() {
        let subject = async_nats::Subject::from("app.events.7".to_owned());
        let handed = Handed::new(subject.clone());
        let given = handed.to_subject();
        assert_eq!(given, subject);
        // The same bytes, not a copy of them.
        assert_eq!(given.as_str().as_ptr(), subject.as_str().as_ptr());
        // Asked again: the empty subject, which the client refuses, never a panic.
        assert_eq!(handed.to_subject().as_str(), "");
    }

    #[test]
    fn a_subject_is_kept_once_and_made_again_from_the_same_text() {
        let first = kept_subject("app.kept.7".to_owned());
        let again = kept_subject("app.kept.7".to_owned());
        assert_eq!(first.as_str(), "app.kept.7");
        // The same text, kept once: both point at it.
        assert_eq!(first.as_str().as_ptr(), again.as_str().as_ptr());
        assert_ne!(
            kept_subject("app.kept.8".to_owned()).as_str().as_ptr(),
            first.as_str().as_ptr()
        );
    }

    #[test]
    fn past_the_names_it_may_keep_a_subject_is_made_of_shared_bytes_each_time() {
        let mut kept = HashSet::new();
        let a = keep_subject(&mut kept, "a.1".to_owned(), 2);
        let b = keep_subject(&mut kept, "a.2".to_owned(), 2);
        assert_eq!(kept.len(), 2);
        // Full: a third name is not kept, and each subject of it is made apart.
        let c1 = keep_subject(&mut kept, "a.3".to_owned(), 2);
        let c2 = keep_subject(&mut kept, "a.3".to_owned(), 2);
        assert_eq!((c1.as_str(), c2.as_str()), ("a.3", "a.3"));
        assert_ne!(c1.as_str().as_ptr(), c2.as_str().as_ptr());
        assert_eq!(kept.len(), 2);
        // The names kept before are still found.
        let a2 = keep_subject(&mut kept, "a.1".to_owned(), 2);
        assert_eq!(a2.as_str().as_ptr(), a.as_str().as_ptr());
        assert_eq!(b.as_str(), "a.2");
        // A name too long to keep is made apart each time too, with room to spare.
        let long = "x".repeat(KEPT_SUBJECT_LEN + 1);
        let mut room = HashSet::new();
        let l1 = keep_subject(&mut room, long.clone(), 10);
        let l2 = keep_subject(&mut room, long.clone(), 10);
        assert!(room.is_empty(), "nothing kept");
        assert_eq!(l1.as_str(), long);
        assert_ne!(l1.as_str().as_ptr(), l2.as_str().as_ptr());
        // At the longest kept, it is kept.
        let longest = "z".repeat(KEPT_SUBJECT_LEN);
        let k1 = keep_subject(&mut room, longest.clone(), 10);
        let k2 = keep_subject(&mut room, longest, 10);
        assert_eq!(k1.as_str().as_ptr(), k2.as_str().as_ptr());
    }
}

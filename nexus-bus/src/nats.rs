//! [`NatsBoundary`]: events cross between domains in different processes or machines through a
//! NATS server, in the original library's JSON format.
//!
//! Each event type maps onto a subject, `<prefix>.<type>` (`nexus.events.99`,
//! `nexus.events.log.warning`), so that a domain subscribes only to the types it wants and NATS
//! routes them. Plain NATS delivers at most once; with JetStream
//! ([`NatsBoundary::jetstream`]) events are stored by the server and delivered at least once: the
//! receiving side acknowledges an event only after its nexus has dispatched it, and an event
//! delivered again (same id) is not dispatched twice.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use nexus_core::wire::{self, DecodeLimits, WireStats};
use nexus_core::{
    BoxError, Event, EventConsumer, EventProducer, EventQueue, EventSource, EventType, NexusError,
    ProducerLink, Selector, async_trait,
};
use tokio::task::JoinHandle;

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
        context
            .get_or_create_stream(stream::Config {
                name: stream.to_owned(),
                subjects: vec![format!("{}.>", self.prefix)],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|err| transport(format!("stream {stream}: {err}")))?;
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
            _ => format!("{}.>", self.prefix),
        }
    }

    /// The sending side: a consumer that publishes each event it handles.
    pub fn publisher(&self) -> NatsPublisher {
        NatsPublisher {
            boundary: self.clone(),
            origin: format!("{:016x}", fastrand::u64(..)),
            publish_timeout: Duration::from_secs(30),
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
            limits: DecodeLimits::default(),
            stats: WireStats::default(),
            link: ProducerLink::new(),
            task: None,
        }
    }
}

/// Publishes each event it handles to its type's subject. Register it for the types that should
/// leave the domain.
///
/// With JetStream, `handle` returns once the server has stored the event; while the server is
/// unreachable it keeps trying for up to [`publish_timeout`](Self::publish_timeout), and an event
/// published twice meanwhile is stored once (its id travels as `Nats-Msg-Id`).
#[derive(Clone, Debug)]
pub struct NatsPublisher {
    boundary: NatsBoundary,
    /// Distinguishes this publisher's event ids from another's in the same stream.
    origin: String,
    publish_timeout: Duration,
}

impl NatsPublisher {
    /// How long to keep trying while the server is unreachable (default 30 s).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Names this publisher in message ids, instead of a random name. Give each publisher of a
    /// stream its own name.
    pub fn origin(mut self, origin: &str) -> Self {
        self.origin = origin.to_owned();
        self
    }

    /// Publishes `event` now.
    ///
    /// # Errors
    ///
    /// [`NexusError::Encode`] when its payload has no JSON form; [`NexusError::Transport`] when
    /// it could not be published (or, with JetStream, stored) in time.
    pub async fn publish(&self, event: &Event) -> Result<(), NexusError> {
        let payload = Bytes::from(wire::encode(event)?);
        let subject = self.boundary.subject(&event.event_type);
        let Some((context, _)) = &self.boundary.jetstream else {
            return self
                .boundary
                .client
                .publish(subject, payload)
                .await
                .map_err(|err| transport(format!("event {} not published: {err}", event.id)));
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!("{}-{}", self.origin, event.id).as_str(),
        );
        let deadline = tokio::time::Instant::now() + self.publish_timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            let attempt = async {
                context
                    .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                    .await?
                    .await
                    .map_err(BoxError::from)
            };
            match attempt.await {
                Ok(_) => return Ok(()),
                Err(err) if tokio::time::Instant::now() < deadline => {
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

#[async_trait]
impl EventConsumer for NatsPublisher {
    async fn handle(&self, event: Event, _queue: EventQueue) -> Result<(), BoxError> {
        self.publish(&event).await.map_err(Into::into)
    }
}

/// Ingests the events of chosen types from NATS into every nexus it is registered with.
///
/// Bad input (not JSON, wrong fields, too large, a type it does not take) is counted
/// ([`stats`](Self::stats)), reported through `tracing`, and skipped.
pub struct NatsSubscriber {
    boundary: NatsBoundary,
    selector: Selector,
    durable: Option<String>,
    ack_wait: Duration,
    limits: DecodeLimits,
    stats: WireStats,
    link: ProducerLink,
    task: Option<JoinHandle<()>>,
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

    /// Skips messages larger than `max_bytes` (default 1 MiB).
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.limits.max_bytes = max_bytes;
        self
    }

    /// The counts of what it received.
    pub fn stats(&self) -> WireStats {
        self.stats.clone()
    }

    /// Decodes a message into an event this subscriber takes, or counts why not.
    fn accept(&self, payload: &[u8]) -> Option<Event> {
        self.stats.admit(payload, self.limits, Some(&self.selector))
    }

    async fn run_core(self: std::sync::Arc<Self>, mut messages: async_nats::Subscriber) {
        while let Some(message) = messages.next().await {
            let Some(event) = self.accept(&message.payload) else {
                continue;
            };
            if let Err(err) = self.link.distribute_event(event).await {
                tracing::error!(error = %err, "NATS event could not be dispatched");
                if err.is_bad_call() {
                    break;
                }
            }
        }
    }

    async fn run_durable(self: std::sync::Arc<Self>, consumer: pull::Stream) {
        let mut messages = consumer;
        let mut seen = Seen::new(100_000);
        while let Some(next) = messages.next().await {
            let message = match next {
                Ok(message) => message,
                Err(err) => {
                    tracing::warn!(error = %err, "JetStream delivery failed; continuing");
                    continue;
                }
            };
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned());
            if id.as_ref().is_some_and(|id| seen.contains(id)) {
                tracing::debug!(?id, "event delivered again; already dispatched");
                acknowledge(&message).await;
                continue;
            }
            let Some(event) = self.accept(&message.payload) else {
                // Bad input is not redelivered: it would be as bad next time.
                acknowledge(&message).await;
                continue;
            };
            match self.link.distribute_event(event).await {
                Ok(()) => {
                    if let Some(id) = id {
                        seen.insert(id);
                    }
                    acknowledge(&message).await;
                }
                Err(err) => {
                    // Not acknowledged: JetStream delivers it again after `ack_wait`.
                    tracing::error!(error = %err, "JetStream event not dispatched; left for redelivery");
                    if err.is_bad_call() {
                        break;
                    }
                }
            }
        }
    }
}

/// Acknowledges and waits for the server to record it, so that a crash right after cannot
/// bring the event back.
async fn acknowledge(message: &jetstream::Message) {
    if let Err(err) = message.double_ack().await {
        tracing::warn!(error = %err, "acknowledgement not confirmed; the event may come again");
    }
}

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
        let runner = std::sync::Arc::new(Self {
            boundary: self.boundary.clone(),
            selector: self.selector.clone(),
            durable: self.durable.clone(),
            ack_wait: self.ack_wait,
            limits: self.limits,
            stats: self.stats.clone(),
            link: self.link.clone(),
            task: None,
        });
        let task = match (&self.durable, &self.boundary.jetstream) {
            (None, _) => {
                let client = &self.boundary.client;
                let messages = client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|err| transport(format!("subscribe to {subject}: {err}")))?;
                // The subscription is in place at the server before `start` returns.
                client.flush().await.map_err(transport)?;
                tokio::spawn(runner.run_core(messages))
            }
            (Some(durable), Some((context, stream))) => {
                let stream = context
                    .get_stream(stream)
                    .await
                    .map_err(|err| transport(format!("stream {stream}: {err}")))?;
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
                tokio::spawn(runner.run_durable(messages))
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

    /// Stops ingesting. With JetStream, what was not acknowledged is delivered again to the
    /// next subscriber of the same durable name.
    async fn close(&mut self) -> Result<(), NexusError> {
        if let Some(task) = self.task.take() {
            task.abort();
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

//! Sources made from what a program already has: a stream, a closure, a channel.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_core::Stream;
use nexus_core::channel::{Bounded, Overflow, Sent};
use nexus_core::{
    BoxStream, Event, EventConverter, EventFactory, EventProducer, EventSource, NexusError,
    ProducerLink, SimpleEventConverter, async_trait,
};
use tokio::task::JoinHandle;

/// A converter from any async stream of events; the stream's end means "no more events".
///
/// ```
/// use nexus_core::{AsyncEventNexus, Event};
/// use nexus_sources::StreamConverter;
///
/// let events = futures_util::stream::iter((1..=3).map(|id| Event::new(id, 7, 0, "from a stream")));
/// let nexus = AsyncEventNexus::new();
/// nexus.register(StreamConverter::new(events))?;
/// # Ok::<(), nexus_core::NexusError>(())
/// ```
pub struct StreamConverter {
    stream: BoxStream<'static, Event>,
}

impl StreamConverter {
    /// Wraps `stream`.
    pub fn new(stream: impl Stream<Item = Event> + Send + 'static) -> Self {
        Self {
            stream: Box::pin(stream),
        }
    }
}

impl fmt::Debug for StreamConverter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamConverter")
    }
}

impl EventSource for StreamConverter {
    fn name(&self) -> &str {
        "StreamConverter"
    }
}

impl EventConverter for StreamConverter {
    fn event_generator(&mut self, _factory: EventFactory) -> BoxStream<'_, Event> {
        Box::pin(self.stream.as_mut())
    }
}

/// A converter written as a generator: `make` receives the nexus's event factory and returns
/// the stream (an `async_stream::stream!` block, for instance). The seed's `EventConverter`
/// without a type of your own.
///
/// ```
/// use std::time::Duration;
/// use nexus_core::AsyncEventNexus;
/// use nexus_sources::generator;
///
/// let countdown = generator(|factory| async_stream::stream! {
///     for n in (0..3).rev() {
///         tokio::time::sleep(Duration::from_millis(100)).await;
///         yield factory.create_event(n, 7);
///     }
/// });
/// AsyncEventNexus::new().register(countdown)?;
/// # Ok::<(), nexus_core::NexusError>(())
/// ```
pub fn generator<F, S>(make: F) -> GeneratorConverter<F>
where
    F: FnMut(EventFactory) -> S + Send + 'static,
    S: Stream<Item = Event> + Send + 'static,
{
    GeneratorConverter { make }
}

/// A converter from a generator function; see [`generator`].
pub struct GeneratorConverter<F> {
    make: F,
}

impl<F> fmt::Debug for GeneratorConverter<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GeneratorConverter")
    }
}

impl<F: Send + 'static> EventSource for GeneratorConverter<F> {
    fn name(&self) -> &str {
        "GeneratorConverter"
    }
}

impl<F, S> EventConverter for GeneratorConverter<F>
where
    F: FnMut(EventFactory) -> S + Send + 'static,
    S: Stream<Item = Event> + Send + 'static,
{
    fn event_generator(&mut self, factory: EventFactory) -> BoxStream<'_, Event> {
        Box::pin((self.make)(factory))
    }
}

/// A converter from a closure called for each event: it returns a future of the next event, or
/// of `None` when there are no more.
///
/// ```
/// use nexus_core::{AsyncEventNexus, Event};
/// use nexus_sources::converter_fn;
///
/// let mut id = 1000;
/// let converter = converter_fn(move || {
///     id += 1;
///     let event = (id <= 1003).then(|| Event::new(id, 50, 0, "hi"));
///     async move { event }
/// });
/// AsyncEventNexus::new().register(converter)?;
/// # Ok::<(), nexus_core::NexusError>(())
/// ```
pub fn converter_fn<F, Fut>(next: F) -> FnConverter<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Option<Event>> + Send,
{
    FnConverter { next }
}

/// A converter from a closure; see [`converter_fn`].
pub struct FnConverter<F> {
    next: F,
}

impl<F> fmt::Debug for FnConverter<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnConverter")
    }
}

impl<F: Send + 'static> EventSource for FnConverter<F> {
    fn name(&self) -> &str {
        "FnConverter"
    }
}

#[async_trait]
impl<F, Fut> SimpleEventConverter for FnConverter<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Option<Event>> + Send,
{
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        (self.next)().await.ok_or(NexusError::NoMoreEvents)
    }
}

/// How many waiting events a `ChannelProducer` delivers with one lookup of its nexuses.
const RUN: usize = 64;

/// A producer fed through a channel: any task or thread holding an [`EventSender`] sends
/// events, and the producer ingests them into its nexuses in the order they were sent.
///
/// The channel is bounded. When it is full, `send` waits (the default, [`Overflow::Wait`]), or,
/// if chosen with [`with_overflow`](Self::with_overflow), the oldest or the new event is dropped,
/// counted in the nexus's [`NexusStats::dropped`](nexus_core::NexusStats::dropped) and reported
/// through `tracing`. Events sent before the nexus starts wait in the channel. When every sender
/// is dropped and the channel is empty, the producer has finished.
///
/// The producer takes what is waiting out of the channel at once, up to 64 events, and delivers
/// them in order; so up to `capacity` events wait in the channel and up to 64 more in the
/// producer. Those it holds when it is closed are counted as dropped, as those left in the
/// channel are.
///
/// ```
/// use nexus_core::{AsyncEventNexus, Event, EventQueue};
/// use nexus_sources::ChannelProducer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nexus_core::NexusError> {
/// let nexus = AsyncEventNexus::new();
/// nexus.add_handler(3, |e: Event, _q: EventQueue| println!("{e}"))?;
/// let (producer, sender) = ChannelProducer::new(100);
/// nexus.add_producer(producer)?;
///
/// std::thread::spawn(move || {
///     // A thread outside the runtime sends without awaiting.
///     sender.blocking_send(Event::new(1, 3, 0, "from a thread")).expect("nexus gone");
/// });
/// nexus.loop_until_exhausted().await // ends once the sender is dropped and its event handled
/// # }
/// ```
#[derive(Debug)]
pub struct ChannelProducer {
    link: ProducerLink,
    channel: Bounded<Event>,
    task: Option<JoinHandle<()>>,
}

/// The sending end of a [`ChannelProducer`]: cheap to clone, usable from any task or thread.
#[derive(Clone, Debug)]
pub struct EventSender {
    senders: Arc<Senders>,
}

/// Closes the channel when the last sender is dropped.
#[derive(Debug)]
struct Senders {
    channel: Bounded<Event>,
    link: ProducerLink,
}

impl Drop for Senders {
    fn drop(&mut self) {
        self.channel.close();
    }
}

fn closed(event: Event) -> NexusError {
    NexusError::Closed {
        what: "channel producer".to_owned(),
        event: Box::new(event),
    }
}

impl EventSender {
    fn sent(&self, sent: Result<Sent<Event>, Event>) -> Result<(), NexusError> {
        match sent {
            Ok(Sent::Queued) => Ok(()),
            Ok(Sent::DroppedOldest(event) | Sent::DroppedNewest(event)) => {
                self.senders.link.record_dropped(&event);
                Ok(())
            }
            Err(event) => Err(closed(event)),
        }
    }

    /// Sends `event`, waiting while the channel is full (unless its overflow choice drops).
    ///
    /// # Errors
    ///
    /// [`NexusError::Closed`], handing the event back, once the producer was closed or dropped.
    pub async fn send(&self, event: Event) -> Result<(), NexusError> {
        let sent = self.senders.channel.send(event).await;
        self.sent(sent)
    }

    /// Sends `event` from outside the async runtime (a plain thread), blocking while the
    /// channel is full. Inside a runtime use [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn blocking_send(&self, event: Event) -> Result<(), NexusError> {
        let sent = self.senders.channel.blocking_send(event);
        self.sent(sent)
    }

    /// Sends `event` if the channel has room now (or its overflow choice makes room).
    ///
    /// # Errors
    ///
    /// [`NexusError::QueueFull`] when the channel is full and senders wait,
    /// [`NexusError::Closed`] when the producer is gone; both hand the event back.
    pub fn try_send(&self, event: Event) -> Result<(), NexusError> {
        let channel = &self.senders.channel;
        match channel.try_send(event) {
            Err(event) if !channel.is_closed() => Err(NexusError::QueueFull {
                event: Box::new(event),
                capacity: channel.capacity(),
            }),
            sent => self.sent(sent),
        }
    }
}

impl ChannelProducer {
    /// A producer whose channel holds `capacity` events (at least 1) and makes senders wait
    /// when full, and its first sender.
    pub fn new(capacity: usize) -> (Self, EventSender) {
        Self::with_overflow(capacity, Overflow::Wait)
    }

    /// As [`new`](Self::new), with the given choice for a full channel.
    pub fn with_overflow(capacity: usize, overflow: Overflow) -> (Self, EventSender) {
        let channel = Bounded::new(capacity, overflow);
        let link = ProducerLink::new();
        let producer = Self {
            link: link.clone(),
            channel: channel.clone(),
            task: None,
        };
        let senders = Arc::new(Senders { channel, link });
        (producer, EventSender { senders })
    }
}

impl Drop for ChannelProducer {
    fn drop(&mut self) {
        // Senders learn at once that nobody will take their events.
        self.channel.close();
    }
}

/// Events a channel producer took from its channel and has yet to deliver; those left when its
/// task is dropped (the producer was closed) are counted as dropped.
struct Taken {
    events: VecDeque<Event>,
    link: ProducerLink,
}

impl Drop for Taken {
    fn drop(&mut self) {
        for event in self.events.drain(..) {
            self.link.record_dropped(&event);
        }
    }
}

#[async_trait]
impl EventSource for ChannelProducer {
    /// Starts ingesting what is sent.
    ///
    /// # Errors
    ///
    /// [`NexusError::MisconfiguredEventProducer`] with no nexus; [`NexusError::MultipleStart`]
    /// when started before.
    async fn start(&mut self) -> Result<(), NexusError> {
        self.link.begin(self.name())?;
        if self.task.is_some() {
            return Err(NexusError::MultipleStart {
                source_name: self.name().to_owned(),
            });
        }
        let (link, channel) = (self.link.clone(), self.channel.clone());
        self.task = Some(tokio::spawn(async move {
            let mut taken = Taken {
                events: VecDeque::with_capacity(RUN),
                link: link.clone(),
            };
            // What is waiting is taken at once (a bounded run, so that a busy channel does not
            // keep a dropped nexus alive for long) and goes through one lookup of the nexuses.
            while channel.recv_many(&mut taken.events, RUN).await > 0 {
                let delivery = link.delivery();
                while let Some(event) = taken.events.pop_front() {
                    if let Err(err) = delivery.distribute_event(event).await {
                        tracing::error!(error = %err, "channel producer could not deliver an event");
                    }
                }
            }
            link.finish();
        }));
        Ok(())
    }

    /// Stops ingesting; events taken from the channel but not yet delivered, and those still
    /// in it, are counted as dropped and reported.
    async fn close(&mut self) -> Result<(), NexusError> {
        if let Some(task) = self.task.take() {
            task.abort();
            // Once the task is gone, what it had taken is counted. Unless this is that task (a
            // handler it called is closing the nexus): it is dropped at its next wait, and
            // counts then.
            if tokio::task::try_id() != Some(task.id()) {
                let _ = task.await;
            }
        }
        self.channel.close();
        while let Some(event) = self.channel.try_recv() {
            self.link.record_dropped(&event);
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "ChannelProducer"
    }
}

impl EventProducer for ChannelProducer {
    fn link(&self) -> &ProducerLink {
        &self.link
    }
}

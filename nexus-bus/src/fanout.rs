//! [`EventFanout`] and [`EventDiscarder`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use nexus_core::__private::FanList;
use nexus_core::{
    BoxError, ConsumerFuture, Event, EventConsumer, EventQueue, Handler, NexusError, async_trait,
};

/// A consumer that sends a copy of each event to every handler registered with it, one after
/// the other, in registration order.
///
/// Simpler than a second nexus: no queue, no task. Register it with a nexus for the types to
/// fan out; it is a cheap cloneable handle, so keep a clone to register and deregister handlers
/// while it runs.
///
/// Every handler gets the event even if an earlier one fails; the first error is returned and
/// later ones are logged.
///
/// # Examples
///
/// ```
/// use nexus_bus::EventFanout;
/// use nexus_core::{AsyncEventNexus, Event, EventQueue, Handler};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nexus_core::NexusError> {
/// let fanout = EventFanout::new();
/// fanout.register(Handler::new(|e: Event, _q: EventQueue| println!("ping handler: {}", e.id)));
/// let key = fanout.register(Handler::new(|e: Event, _q: EventQueue| println!("{e}")));
///
/// let nexus = AsyncEventNexus::new();
/// nexus.add_consumer(100, fanout.clone())?;
/// # let _loop = nexus.start()?;
/// nexus.ingest(Event::new(1, 100, 0, "ping")).await?; // both handlers, in order
/// assert!(fanout.deregister(key));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct EventFanout {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// The keys of the handlers, side by side with them; held while the handlers change.
    keys: Mutex<Vec<FanoutKey>>,
    /// Replaced whole on each change; a nexus reads it per event without a lock.
    handlers: FanList,
    next_key: AtomicU64,
}

/// Identifies a handler registered with an [`EventFanout`], to deregister it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FanoutKey(u64);

impl EventFanout {
    /// A fanout with no handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `handler` after those already registered; returns its key.
    pub fn register(&self, handler: Handler) -> FanoutKey {
        let key = FanoutKey(self.shared.next_key.fetch_add(1, Ordering::Relaxed));
        self.edit(|keys, handlers| {
            keys.push(key);
            handlers.push(handler);
        });
        key
    }

    /// Removes the handler registered under `key`; returns whether it was there.
    pub fn deregister(&self, key: FanoutKey) -> bool {
        let mut found = false;
        self.edit(|keys, handlers| {
            if let Some(at) = keys.iter().position(|k| *k == key) {
                keys.remove(at);
                handlers.remove(at);
                found = true;
            }
        });
        found
    }

    /// How many handlers are registered.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// Whether no handler is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn edit(&self, change: impl FnOnce(&mut Vec<FanoutKey>, &mut Vec<Handler>)) {
        let mut keys = self
            .shared
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.shared
            .handlers
            .update(|handlers| change(&mut keys, handlers));
    }

    fn snapshot(&self) -> Arc<Vec<Handler>> {
        self.shared.handlers.snapshot()
    }
}

impl EventFanout {
    /// Sends a copy of `event` to every registered handler, in order; the first error is
    /// returned, the others are logged.
    async fn fan(&self, event: Event, queue: EventQueue) -> Result<(), BoxError> {
        let handlers = self.snapshot();
        if handlers.is_empty() {
            return Err(NexusError::MisconfiguredEventConsumer {
                consumer: "EventFanout".to_owned(),
                reason: "no handler registered",
            }
            .into());
        }
        Ok(Handler::call_all(&handlers, event, queue).await?)
    }
}

#[async_trait]
impl EventConsumer for EventFanout {
    /// Sends a copy of `event` to every registered handler, in order.
    ///
    /// # Errors
    ///
    /// [`NexusError::MisconfiguredEventConsumer`] with no handler registered; else the first
    /// handler error.
    async fn handle(&self, event: Event, queue: EventQueue) -> Result<(), BoxError> {
        self.fan(event, queue).await
    }

    /// One future for the whole fanout, owning the fanout's shared part.
    fn handle_shared(self: Arc<Self>, event: Event, queue: EventQueue) -> ConsumerFuture {
        Box::pin(async move { self.fan(event, queue).await })
    }

    /// The registered handlers: a nexus calls them itself, each as one of its own handlers.
    fn fan_out(&self) -> Option<&FanList> {
        Some(&self.shared.handlers)
    }
}

/// A consumer that drops every event it gets: register it for events nobody needs, so that they
/// are not reported as unhandled.
///
/// ```
/// use nexus_bus::EventDiscarder;
/// use nexus_core::AsyncEventNexus;
///
/// let nexus = AsyncEventNexus::new();
/// nexus.add_consumer(1000..=1999, EventDiscarder)?;
/// # Ok::<(), nexus_core::NexusError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct EventDiscarder;

#[async_trait]
impl EventConsumer for EventDiscarder {
    async fn handle(&self, _event: Event, _queue: EventQueue) -> Result<(), BoxError> {
        Ok(())
    }
}

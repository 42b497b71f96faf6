//! A kit for testing code built on nexus (feature `testing`): a [`Probe`] that records what was
//! dispatched, to which handler or filter, in which order and with which outcome; waits for an
//! event or a count, bounded in time, that run on tokio's paused clock as on a real one; a nexus
//! built from what `#[handler]` and the other attributes registered ([`registered_nexus`]); and
//! [`replay`], which feeds a recorded sequence of events back into a nexus.
//!
//! Turn it on for tests only:
//!
//! ```toml
//! [dev-dependencies]
//! async-nexus = { version = "0.1", features = ["testing"] }
//! ```
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use nexus_core::testing::{Outcome, Probe};
//! use nexus_core::{AsyncEventNexus, Event, EventQueue};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), nexus_core::NexusError> {
//! let nexus = AsyncEventNexus::new();
//! let probe = Probe::new();
//! nexus.add_filter(probe.filter("drop empty", |e: &Event| e.payload.is_empty()));
//! nexus.add_handler(1, probe.handler("orders"))?;
//! nexus.add_handler(2, probe.wrap("refunds", |e: Event, _q: EventQueue| async move {
//!     if e.id == 3 { Err("refund refused") } else { Ok(()) }
//! }))?;
//! let _task = nexus.start()?;
//! # tokio::task::yield_now().await;
//! nexus.ingest(Event::new(1, 1, 0, "book")).await?;
//! nexus.ingest(Event::new(2, 2, 0, "book")).await?;
//! nexus.ingest(Event::new(3, 2, 0, "book")).await.unwrap_err();
//! nexus.ingest(Event::new(4, 1, 0, ())).await?;
//!
//! probe.until_count("refunds", 2, Duration::from_secs(1)).await;
//! assert_eq!(probe.handled(), [("orders", 1), ("refunds", 2)]);
//! assert_eq!(probe.ids("refunds"), [2, 3]);
//! assert_eq!(probe.outcome_of("refunds", 3), Some(Outcome::Failed("refund refused".into())));
//! assert_eq!(probe.outcome_of("drop empty", 4), Some(Outcome::Consumed));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::NexusError;
use crate::event::Event;
use crate::nexus::AsyncEventNexus;
use crate::queue::EventQueue;

/// How one call that a [`Probe`] watched ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A handler completed without error.
    Handled,
    /// A handler returned an error; its message.
    Failed(String),
    /// A handler or filter that started and has not completed: it is still running, or it
    /// panicked, timed out or was cancelled.
    Unfinished,
    /// A filter consumed the event.
    Consumed,
    /// A filter let the event pass.
    Passed,
}

/// One call a [`Probe`] watched.
#[derive(Clone, Debug)]
pub struct Record {
    /// The order of the call among all the probe watched, from 0.
    pub seq: usize,
    /// The name the handler or filter was given.
    pub name: &'static str,
    /// The event it was called with.
    pub event: Event,
    /// How the call ended.
    pub outcome: Outcome,
}

/// Records the calls of the handlers and filters it makes or wraps, in the order they were
/// made. Clones share one record. See the [module](self) for an example.
#[derive(Clone, Default)]
pub struct Probe {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    records: Mutex<Vec<Record>>,
    changed: Notify,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("records", &self.lock().len())
            .finish()
    }
}

/// The future of a handler wrapped by [`Probe::wrap`].
pub type WrappedFuture<E> = Pin<Box<dyn Future<Output = Result<(), E>> + Send>>;

impl Probe {
    /// A probe with nothing recorded.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.shared
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the start of a call; its index.
    fn start(&self, name: &'static str, event: &Event) -> usize {
        let mut records = self.lock();
        let seq = records.len();
        records.push(Record {
            seq,
            name,
            event: event.clone(),
            outcome: Outcome::Unfinished,
        });
        drop(records);
        self.shared.changed.notify_waiters();
        seq
    }

    fn finish(&self, seq: usize, outcome: Outcome) {
        if let Some(record) = self.lock().get_mut(seq) {
            record.outcome = outcome;
        }
        self.shared.changed.notify_waiters();
    }

    /// A handler that records each event it is given under `name`, and succeeds.
    ///
    /// ```
    /// # use nexus_core::{AsyncEventNexus, testing::Probe};
    /// let probe = Probe::new();
    /// AsyncEventNexus::new().add_handler(1, probe.handler("ones")).unwrap();
    /// ```
    pub fn handler(
        &self,
        name: &'static str,
    ) -> impl Fn(Event, EventQueue) + Send + Sync + Clone + 'static {
        let probe = self.clone();
        move |event: Event, _queue: EventQueue| {
            let seq = probe.start(name, &event);
            probe.finish(seq, Outcome::Handled);
        }
    }

    /// `handler`, watched: each call is recorded under `name` when it starts, and its outcome
    /// when it ends ([`Outcome::Handled`] or [`Outcome::Failed`] with the error's message; a call
    /// that panics or is cut short stays [`Outcome::Unfinished`]). The call's result is passed
    /// on to the nexus unchanged.
    pub fn wrap<F, Fut, E>(
        &self,
        name: &'static str,
        handler: F,
    ) -> impl Fn(Event, EventQueue) -> WrappedFuture<E> + Send + Sync + 'static
    where
        F: Fn(Event, EventQueue) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let probe = self.clone();
        move |event: Event, queue: EventQueue| {
            let seq = probe.start(name, &event);
            let call = handler(event, queue);
            let probe = probe.clone();
            Box::pin(async move {
                let result = call.await;
                let outcome = match &result {
                    Ok(()) => Outcome::Handled,
                    Err(err) => Outcome::Failed(err.to_string()),
                };
                probe.finish(seq, outcome);
                result
            })
        }
    }

    /// A filter that consumes the events for which `consume` is true, recording each call under
    /// `name` with [`Outcome::Consumed`] or [`Outcome::Passed`].
    pub fn filter<F>(
        &self,
        name: &'static str,
        consume: F,
    ) -> impl Fn(&Event, &EventQueue) -> bool + Send + Sync + 'static
    where
        F: Fn(&Event) -> bool + Send + Sync + 'static,
    {
        let probe = self.clone();
        move |event: &Event, _queue: &EventQueue| {
            let seq = probe.start(name, event);
            let consumed = consume(event);
            let outcome = if consumed {
                Outcome::Consumed
            } else {
                Outcome::Passed
            };
            probe.finish(seq, outcome);
            consumed
        }
    }

    /// Every call recorded so far, in order.
    pub fn records(&self) -> Vec<Record> {
        self.lock().clone()
    }

    /// The handler calls that completed without error, as `(name, event id)`, in order.
    pub fn handled(&self) -> Vec<(&'static str, u64)> {
        self.lock()
            .iter()
            .filter(|r| r.outcome == Outcome::Handled)
            .map(|r| (r.name, r.event.id))
            .collect()
    }

    /// The ids of the events the call named `name` was given, in order (whatever the outcome).
    pub fn ids(&self, name: &str) -> Vec<u64> {
        self.lock()
            .iter()
            .filter(|r| r.name == name)
            .map(|r| r.event.id)
            .collect()
    }

    /// The events the call named `name` was given, in order: a sequence to [`replay`].
    pub fn events(&self, name: &str) -> Vec<Event> {
        self.lock()
            .iter()
            .filter(|r| r.name == name)
            .map(|r| r.event.clone())
            .collect()
    }

    /// How the first call named `name` with the event `id` ended, if there was one.
    pub fn outcome_of(&self, name: &str, id: u64) -> Option<Outcome> {
        self.lock()
            .iter()
            .find(|r| r.name == name && r.event.id == id)
            .map(|r| r.outcome.clone())
    }

    /// How many calls named `name` were recorded.
    pub fn count(&self, name: &str) -> usize {
        self.lock().iter().filter(|r| r.name == name).count()
    }

    /// Forgets everything recorded so far.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Waits until `found` finds something in the records, for at most `limit` (of tokio's
    /// clock, so a paused clock moves on by itself while everything waits), and returns it. An
    /// assertion: panics when the limit passes, listing what was recorded.
    async fn until<R>(
        &self,
        what: &str,
        limit: Duration,
        found: impl Fn(&[Record]) -> Option<R>,
    ) -> R {
        let waited = tokio::time::timeout(limit, async {
            loop {
                let changed = self.shared.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if let Some(result) = found(&self.lock()) {
                    return result;
                }
                changed.await;
            }
        })
        .await;
        waited.unwrap_or_else(|_| {
            let seen: Vec<String> = self
                .lock()
                .iter()
                .map(|r| format!("{} got event {} ({:?})", r.name, r.event.id, r.outcome))
                .collect();
            panic!(
                "waited {limit:?} for {what}; recorded: [{}]",
                seen.join(", ")
            )
        })
    }

    /// Waits until `name` was called `count` times, for at most `limit`. An assertion: panics
    /// when the limit passes, listing what was recorded.
    pub async fn until_count(&self, name: &str, count: usize, limit: Duration) {
        let what = format!("{count} calls of {name}");
        self.until(&what, limit, |records| {
            (records.iter().filter(|r| r.name == name).count() >= count).then_some(())
        })
        .await;
    }

    /// Waits until a call of `name` with the event `id` has ended, for at most `limit`, and
    /// returns its record. An assertion: panics when the limit passes, listing what was
    /// recorded.
    pub async fn until_event(&self, name: &str, id: u64, limit: Duration) -> Record {
        let what = format!("{name} to finish with event {id}");
        self.until(&what, limit, |records| {
            records
                .iter()
                .find(|r| r.name == name && r.event.id == id && r.outcome != Outcome::Unfinished)
                .cloned()
        })
        .await
    }
}

/// A nexus with every filter, handler and source that `#[filter]`, `#[handler]` and
/// `#[event_source]` registered in this binary, built for one test and not running; signals do
/// not stop it. Each call builds a new one.
///
/// # Errors
///
/// As [`RegisteredNexus::build`](crate::RegisteredNexus::build).
pub fn registered_nexus() -> Result<AsyncEventNexus, NexusError> {
    crate::registered().stop_on_signals(false).build()
}

/// Ingests `events` into `nexus`, in order, each after the one before was dispatched; the
/// number ingested.
///
/// # Errors
///
/// The first error of [`AsyncEventNexus::ingest`]; the events after it are not ingested.
pub async fn replay(
    nexus: &AsyncEventNexus,
    events: impl IntoIterator<Item = Event>,
) -> Result<usize, NexusError> {
    let mut count = 0;
    for event in events {
        nexus.ingest(event).await?;
        count += 1;
    }
    Ok(count)
}

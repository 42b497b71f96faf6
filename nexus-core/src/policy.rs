//! What a nexus does with failures ([`ErrorPolicy`]) and what it has counted ([`NexusStats`]).

use std::fmt;
use std::sync::Arc;

use crate::error::NexusError;
use crate::event::{Event, EventType};

/// What a nexus does when an event fails: a handler or filter returns an error, panics or runs
/// out of time, or nothing handles the event.
///
/// Whatever the policy, the failure is counted ([`NexusStats::failed`],
/// [`NexusStats::unhandled`]) and the nexus goes on dispatching: a failing handler never takes
/// the nexus down.
///
/// ```
/// use nexus_core::{AsyncEventNexus, ErrorPolicy};
///
/// let dead_letters = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
/// let sink = dead_letters.clone();
/// let nexus = AsyncEventNexus::builder()
///     .error_policy(ErrorPolicy::dead_letter(move |event, error| {
///         sink.lock().unwrap().push((event.id, error.to_string()));
///     }))
///     .build();
/// # drop(nexus);
/// ```
#[derive(Clone, Default)]
pub enum ErrorPolicy {
    /// The original's behaviour: the error reaches the caller of `ingest` (a converter's error
    /// ends the loop). The default.
    #[default]
    Propagate,
    /// The error is reported through `tracing` and `ingest` succeeds.
    Continue,
    /// The failed event and its error go to a dead-letter handler of the user's; `ingest`
    /// succeeds.
    DeadLetter(DeadLetter),
}

impl ErrorPolicy {
    /// Routes failed events to `handler`, with their errors.
    pub fn dead_letter(handler: impl Fn(Event, NexusError) + Send + Sync + 'static) -> Self {
        Self::DeadLetter(DeadLetter(Arc::new(handler)))
    }

    /// Whether dispatch must keep a copy of each event, for the dead-letter handler.
    #[inline]
    pub(crate) fn keeps_events(&self) -> bool {
        matches!(self, Self::DeadLetter(_))
    }
}

impl fmt::Debug for ErrorPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Propagate => "Propagate",
            Self::Continue => "Continue",
            Self::DeadLetter(_) => "DeadLetter",
        })
    }
}

/// A dead-letter handler: receives each failed event and its error.
#[derive(Clone)]
pub struct DeadLetter(Arc<dyn Fn(Event, NexusError) + Send + Sync>);

impl DeadLetter {
    pub(crate) fn send(&self, event: Event, error: NexusError) {
        tracing::warn!(id = event.id, event_type = %event.event_type, error = %error, "event sent to the dead-letter handler");
        // A panicking dead-letter handler must not take the dispatcher down either.
        let handler = &self.0;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(event, error))).is_err()
        {
            tracing::error!("the dead-letter handler panicked");
        }
    }
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeadLetter")
    }
}

/// What a nexus has counted so far, as [`AsyncEventNexus::stats`](crate::AsyncEventNexus::stats)
/// reads it.
///
/// `ingested` is counted where events arrive (an `ingest`, a handler's `put` on the queue),
/// apart from how they end; every event that arrives ends as exactly one of dispatched,
/// filtered, unhandled, failed, cancelled or returned. So at rest (nothing queued or in
/// dispatch), `ingested == dispatched + filtered + unhandled + failed + cancelled + returned`
/// ([`balanced`](Self::balanced)), whatever failed, panicked or was cancelled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NexusStats {
    /// Events that reached the nexus: ingested (refused ones too, each time one is tried
    /// again), or queued by handlers.
    pub ingested: u64,
    /// Events that handlers handled without failing.
    pub dispatched: u64,
    /// Events that a filter consumed.
    pub filtered: u64,
    /// Events that nothing handled.
    pub unhandled: u64,
    /// Events whose handler or filter failed, panicked or ran out of time.
    pub failed: u64,
    /// Events whose `ingest` was dropped before it was over ([`NexusError::Cancelled`]).
    pub cancelled: u64,
    /// Events handed back to their sender: refused before start or after stop, refused as a
    /// cycle, or left undelivered at shutdown.
    pub returned: u64,
    /// Events that producers dropped: their buffer was full and their overflow choice was to
    /// drop, or they still held them when they were closed. Not counted in `ingested`, unless
    /// a stopped nexus had refused the event first (counted then as `returned`) and the
    /// producer kept it.
    pub dropped: u64,
    /// Secondary events waiting on the queue now.
    pub queue_depth: usize,
    /// Events each source has delivered, by source name.
    pub per_source: Vec<(String, u64)>,
    /// Events of each source that failed without ending the loop because the source said its
    /// failures must not ([`EventSource::failures_end_loop`](crate::EventSource::failures_end_loop),
    /// as network sources do), by source name; only sources with such failures are listed.
    pub per_source_failed: Vec<(String, u64)>,
    /// Counts per event type, when the nexus was built with
    /// [`count_per_type`](crate::NexusBuilder::count_per_type); else empty.
    pub per_type: Vec<(EventType, TypeCounts)>,
}

impl NexusStats {
    /// Whether every event that arrived is accounted for: `ingested` equals the sum of the
    /// outcomes and of the events still queued. True at rest; while events are in dispatch it
    /// may be false for a moment.
    pub fn balanced(&self) -> bool {
        self.ingested
            == self.dispatched
                + self.filtered
                + self.unhandled
                + self.failed
                + self.cancelled
                + self.returned
                + self.queue_depth as u64
    }
}

/// How the events of one type ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TypeCounts {
    /// Handled without failing.
    pub dispatched: u64,
    /// Consumed by a filter.
    pub filtered: u64,
    /// Handled by nothing.
    pub unhandled: u64,
    /// Failed, panicked or timed out.
    pub failed: u64,
    /// Cancelled: the `ingest` dispatching it was dropped before it was over.
    pub cancelled: u64,
}

impl TypeCounts {
    pub(crate) fn count(&mut self, counted: crate::nexus::Counted) {
        use crate::nexus::Counted;
        match counted {
            Counted::Dispatched => self.dispatched += 1,
            Counted::Filtered => self.filtered += 1,
            Counted::Unhandled => self.unhandled += 1,
            Counted::Failed => self.failed += 1,
            Counted::Cancelled => self.cancelled += 1,
        }
    }
}

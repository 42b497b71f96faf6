//! Registration by attribute: what `#[handler]`, `#[filter]` and `#[event_source]` record, the
//! listing of it, and [`run_registered`].
//!
//! Each attribute submits a record to a list gathered at link time (through `inventory`).
//! [`registered`] builds a nexus from every record linked into the binary.
//!
//! Records of a library crate count only if the binary links that crate: refer to something in
//! it (any item) from the binary, or its attributes register nothing.

use std::fmt;

use tokio::sync::watch;

use crate::error::NexusError;
use crate::handler::Selector;
use crate::nexus::table::selectors_overlap;
use crate::nexus::{AsyncEventNexus, NexusBuilder};

/// A handler function registered with `#[handler]`. Not public API: built by nexus-macros.
#[doc(hidden)]
#[derive(Debug)]
pub struct HandlerRecord {
    /// The function's path (`module::function`).
    pub path: &'static str,
    /// The event types it takes.
    pub selector: fn() -> Selector,
    /// Registers it with a nexus.
    pub register: fn(&AsyncEventNexus) -> Result<(), NexusError>,
}

/// A filter function registered with `#[filter]`. Not public API: built by nexus-macros.
#[doc(hidden)]
#[derive(Debug)]
pub struct FilterRecord {
    /// The function's path.
    pub path: &'static str,
    /// Where it runs among registered filters: lower first, then by path.
    pub order: i64,
    /// Registers it with a nexus.
    pub register: fn(&AsyncEventNexus),
}

/// An event source registered with `#[event_source]`. Not public API: built by nexus-macros.
#[doc(hidden)]
#[derive(Debug)]
pub struct SourceRecord {
    /// The struct's path.
    pub path: &'static str,
    /// Creates an instance and registers it with a nexus.
    pub register: fn(&AsyncEventNexus) -> Result<(), NexusError>,
}

inventory::collect!(HandlerRecord);
inventory::collect!(FilterRecord);
inventory::collect!(SourceRecord);

/// Handlers sorted by path, so that the order is the same in every build.
fn handler_records() -> Vec<&'static HandlerRecord> {
    let mut records: Vec<_> = inventory::iter::<HandlerRecord>().collect();
    records.sort_by_key(|r| r.path);
    records
}

/// Filters in the order they run: by `order`, then by path.
fn filter_records() -> Vec<&'static FilterRecord> {
    let mut records: Vec<_> = inventory::iter::<FilterRecord>().collect();
    records.sort_by_key(|r| (r.order, r.path));
    records
}

fn source_records() -> Vec<&'static SourceRecord> {
    let mut records: Vec<_> = inventory::iter::<SourceRecord>().collect();
    records.sort_by_key(|r| r.path);
    records
}

/// What the attributes registered in this binary, as [`registrations`] lists it.
///
/// Its `Display` prints one line per item:
///
/// ```text
/// handler 99 -> my_app::teapot_handler
/// handler default (-1) -> my_app::default_handler
/// filter 0 -> my_app::low_id
/// source my_app::MyEventConverter
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Registrations {
    /// Each registered handler: the event types it takes, and its function's path.
    pub handlers: Vec<(Selector, &'static str)>,
    /// Each registered filter, in the order filters run: its order key and its path.
    pub filters: Vec<(i64, &'static str)>,
    /// Each registered event source's type path.
    pub sources: Vec<&'static str>,
}

impl fmt::Display for Registrations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (selector, path) in &self.handlers {
            writeln!(f, "handler {selector} -> {path}")?;
        }
        for (order, path) in &self.filters {
            writeln!(f, "filter {order} -> {path}")?;
        }
        for path in &self.sources {
            writeln!(f, "source {path}")?;
        }
        Ok(())
    }
}

/// Lists what `#[handler]`, `#[filter]` and `#[event_source]` registered in this binary, so that
/// you can see what the attributes wired up.
///
/// ```
/// let listing = nexus_core::registrations();
/// println!("{listing}");
/// ```
pub fn registrations() -> Registrations {
    Registrations {
        handlers: handler_records()
            .into_iter()
            .map(|r| ((r.selector)(), r.path))
            .collect(),
        filters: filter_records()
            .into_iter()
            .map(|r| (r.order, r.path))
            .collect(),
        sources: source_records().into_iter().map(|r| r.path).collect(),
    }
}

/// A handle that stops a nexus run by [`RegisteredNexus::run`] from anywhere, as a signal would.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nexus_core::NexusError> {
/// let registered = nexus_core::registered().stop_on_signals(false);
/// let stop = registered.stop_handle();
/// stop.stop(); // stops at once, here
/// registered.run().await
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct StopHandle {
    stop: watch::Sender<bool>,
}

impl StopHandle {
    fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
        }
    }

    /// Stops the nexus (or, before it runs, makes it stop as soon as it starts).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// Builds and runs a nexus from everything the attributes registered in this binary.
///
/// Made by [`registered`]; [`run_registered`] is `registered().run()`.
///
/// # Examples
///
/// ```no_run
/// use nexus_core::{Event, EventQueue, NexusError};
///
/// #[tokio::main]
/// async fn main() -> Result<(), NexusError> {
///     let registered = nexus_core::registered().until_exhausted(true);
///     let nexus = registered.build()?;
///     // Add by hand what is not registered by attribute.
///     nexus.add_handler(7, |e: Event, _q: EventQueue| println!("{e}"))?;
///     registered.run_nexus(&nexus).await
/// }
/// ```
#[derive(Clone, Debug)]
pub struct RegisteredNexus {
    builder: NexusBuilder,
    multiple: bool,
    until_exhausted: bool,
    signals: bool,
    deadline: std::time::Duration,
    stop: StopHandle,
}

/// Starts building a nexus from everything registered by attribute; see [`RegisteredNexus`].
pub fn registered() -> RegisteredNexus {
    RegisteredNexus {
        builder: AsyncEventNexus::builder(),
        multiple: false,
        until_exhausted: false,
        signals: true,
        deadline: std::time::Duration::from_secs(10),
        stop: StopHandle::new(),
    }
}

/// Builds a nexus from everything `#[handler]`, `#[filter]` and `#[event_source]` registered in
/// this binary, and runs it until Ctrl-C or SIGTERM; then closes every source.
///
/// # Errors
///
/// [`NexusError::DuplicateRegisteredHandler`] when two registered handlers take one event type
/// (naming both); any error of the loop (see
/// [`AsyncEventNexus::loop_forever`]); a failure to close a source.
///
/// # Examples
///
/// ```no_run
/// use nexus_core::{Event, EventQueue, handler};
///
/// #[handler(event_type = 99)]
/// async fn teapot_handler(event: Event, _queue: EventQueue) {
///     println!("teapot ID: {}", event.id);
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), nexus_core::NexusError> {
///     nexus_core::run_registered().await
/// }
/// ```
pub async fn run_registered() -> Result<(), NexusError> {
    registered().run().await
}

impl RegisteredNexus {
    /// Allows several registered handlers per type (default `false`: two are an error). They run
    /// in the order of their paths.
    pub fn multiple(mut self, multiple: bool) -> Self {
        self.multiple = multiple;
        self.builder = self.builder.multiple(multiple);
        self
    }

    /// The capacity of the queue of secondary events (default 50).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.builder = self.builder.queue_capacity(capacity);
        self
    }

    /// Also stops once every source has finished (see
    /// [`AsyncEventNexus::loop_until_exhausted`]); default `false`.
    pub fn until_exhausted(mut self, until_exhausted: bool) -> Self {
        self.until_exhausted = until_exhausted;
        self
    }

    /// How long a shutdown on Ctrl-C or SIGTERM may take before what is still running is cut
    /// short and reported (default 10 s; see [`AsyncEventNexus::shutdown`]).
    pub fn shutdown_deadline(mut self, deadline: std::time::Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Whether Ctrl-C and SIGTERM shut the nexus down (default `true`).
    pub fn stop_on_signals(mut self, signals: bool) -> Self {
        self.signals = signals;
        self
    }

    /// A handle that stops the nexus when it runs.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Builds the nexus with every registered filter, handler and source, without running it.
    ///
    /// # Errors
    ///
    /// [`NexusError::DuplicateRegisteredHandler`], naming both functions, when two handlers take
    /// one type outside `multiple` mode; an error of a source's registration.
    pub fn build(&self) -> Result<AsyncEventNexus, NexusError> {
        let nexus = self.builder.clone().build();
        for filter in filter_records() {
            (filter.register)(&nexus);
        }
        let mut taken: Vec<(Selector, &'static str)> = Vec::new();
        for handler in handler_records() {
            let selector = (handler.selector)();
            if !self.multiple
                && let Some((_, first)) =
                    taken.iter().find(|(s, _)| selectors_overlap(s, &selector))
            {
                return Err(NexusError::DuplicateRegisteredHandler {
                    selector: selector.to_string(),
                    first,
                    second: handler.path,
                });
            }
            (handler.register)(&nexus)?;
            taken.push((selector, handler.path));
        }
        for source in source_records() {
            (source.register)(&nexus)?;
        }
        Ok(nexus)
    }

    /// Builds the nexus and runs it (see [`run_nexus`](Self::run_nexus)).
    ///
    /// # Errors
    ///
    /// Those of [`build`](Self::build) and [`run_nexus`](Self::run_nexus).
    pub async fn run(self) -> Result<(), NexusError> {
        let nexus = self.build()?;
        self.run_nexus(&nexus).await
    }

    /// Runs `nexus` (usually from [`build`](Self::build), with more added by hand) until it is
    /// stopped: by Ctrl-C or SIGTERM (unless turned off; they shut it down within
    /// [`shutdown_deadline`](Self::shutdown_deadline)), the [`StopHandle`], `stop`, or, with
    /// [`until_exhausted`](Self::until_exhausted), when every source has finished. Then closes
    /// every source.
    ///
    /// # Errors
    ///
    /// The loop's error, else cleanup's.
    pub async fn run_nexus(&self, nexus: &AsyncEventNexus) -> Result<(), NexusError> {
        let signals = self.signals.then(|| {
            let (weak, deadline) = (nexus.downgrade(), self.deadline);
            tokio::spawn(async move {
                if crate::nexus::wait_for_signal().await.is_err() {
                    return;
                }
                let Some(nexus) = weak.upgrade() else { return };
                tracing::info!(?deadline, "signal received: shutting the nexus down");
                match nexus.shutdown(deadline).await {
                    Ok(report) if report.completed && report.undelivered.is_empty() => {}
                    Ok(report) => tracing::warn!(
                        interrupted = ?report.interrupted,
                        undelivered = report.undelivered.len(),
                        "shutdown deadline passed; what was left is reported here"
                    ),
                    Err(err) => tracing::error!(error = %err, "shutdown failed"),
                }
            })
        });
        let stopper = {
            let (stop, weak) = (self.stop.clone(), nexus.downgrade());
            tokio::spawn(async move {
                stop.stopped().await;
                if let Some(nexus) = weak.upgrade() {
                    nexus.stop();
                }
            })
        };
        if *self.stop.stop.borrow() {
            nexus.stop();
        }
        let ran = if self.until_exhausted {
            nexus.loop_until_exhausted().await
        } else {
            nexus.loop_forever().await
        };
        stopper.abort();
        if let Some(signals) = signals {
            signals.abort();
        }
        let ran = match ran {
            // Stopped before it could start (a stop handle used early): not a failure.
            Err(NexusError::LoopStopped { .. }) => Ok(()),
            other => other,
        };
        let cleaned = nexus.cleanup().await;
        ran.and(cleaned)
    }
}

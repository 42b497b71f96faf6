//! [`Timer`]: an event per interval.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nexus_core::{
    Event, EventFactory, EventProducer, EventSource, EventType, NexusError, ProducerLink,
    async_trait,
};
use tokio::sync::watch;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// What a [`Timer`] counts, and so the payload of each event it emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// Counts down from `n`: emits `n-1, n-2, ..., 0`, then ends.
    CountDown(u64),
    /// Counts up to `n`: emits `1, 2, ..., n`, then ends.
    CountUp(u64),
    /// Emits `1, 2, 3, ...` forever.
    Ongoing,
    /// Emits `1` once.
    OneShot,
}

impl TimerKind {
    /// The value before the first firing, the step, and the value after which the timer ends.
    fn plan(self) -> (u64, Step, Option<u64>) {
        match self {
            Self::CountDown(n) => (n, Step::Down, Some(0)),
            Self::CountUp(n) => (0, Step::Up, Some(n)),
            Self::Ongoing => (0, Step::Up, None),
            Self::OneShot => (0, Step::Up, Some(1)),
        }
    }
}

#[derive(Clone, Copy)]
enum Step {
    Up,
    Down,
}

/// The timer's task, once started.
type TaskSlot = Mutex<Option<Running>>;

/// A started timer's task, and the signal that stops it at its next wait for a tick (never
/// during a delivery).
struct Running {
    task: JoinHandle<Result<(), NexusError>>,
    stop: watch::Sender<bool>,
}

impl Running {
    fn is_running(&self) -> bool {
        !self.task.is_finished() && !*self.stop.borrow()
    }
}

type Hook = dyn Fn(u64, &EventFactory) -> Option<Event> + Send + Sync;

/// The one source usable as it is: a producer that emits an event each time its interval
/// passes.
///
/// Each event's payload is the timer's current value (see [`TimerKind`]) and its id comes from
/// the event factory (the nexus's, unless [`with_factory`](Self::with_factory) gave another).
/// A hook ([`on_fire`](Self::on_fire)) may choose per firing which event to emit, or none.
///
/// Firings keep to the schedule `start + k * interval`: a slow handler delays one firing, not
/// every later one (the timer catches up).
///
/// `Timer` is a cheap cloneable handle: register one clone and keep another to
/// [`stop`](Self::stop) it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nexus_core::{AsyncEventNexus, Event, EventQueue};
/// use nexus_sources::{Timer, TimerKind};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), nexus_core::NexusError> {
/// let nexus = AsyncEventNexus::new();
/// let timer = Timer::new(Duration::from_secs_f64(1.5), TimerKind::CountDown(5), 98)?;
/// nexus.add_producer(timer.clone())?;
/// nexus.add_handler(98, |e: Event, _q: EventQueue| println!("{}", e.payload))?; // 4 3 2 1 0
/// let running = nexus.start()?;
/// tokio::time::sleep(Duration::from_secs(8)).await;
/// assert!(!timer.stop(), "the countdown had finished");
/// nexus.stop();
/// running.await.expect("loop task")?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Timer {
    interval: Duration,
    kind: TimerKind,
    event_type: EventType,
    hook: Option<Arc<Hook>>,
    link: ProducerLink,
    task: Arc<TaskSlot>,
}

impl Timer {
    /// A timer of `kind` that fires every `interval`, emitting events of `event_type`.
    ///
    /// # Errors
    ///
    /// [`NexusError::InvalidArgument`] for a zero interval, or a count of 0 for
    /// [`TimerKind::CountDown`] or [`TimerKind::CountUp`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use nexus_sources::{Timer, TimerKind};
    ///
    /// let err = Timer::new(Duration::from_secs(1), TimerKind::CountDown(0), 98).unwrap_err();
    /// assert_eq!(err.to_string(), "invalid count of Timer CountDown(0): a count must be 1 or more");
    /// ```
    pub fn new(
        interval: Duration,
        kind: TimerKind,
        event_type: impl Into<EventType>,
    ) -> Result<Self, NexusError> {
        if let TimerKind::CountDown(0) | TimerKind::CountUp(0) = kind {
            return Err(NexusError::InvalidArgument {
                what: format!("count of Timer {kind:?}"),
                reason: "a count must be 1 or more",
            });
        }
        if interval.is_zero() {
            return Err(NexusError::InvalidArgument {
                what: "interval of Timer".to_owned(),
                reason: "the interval must be longer than zero",
            });
        }
        Ok(Self {
            interval,
            kind,
            event_type: event_type.into(),
            hook: None,
            link: ProducerLink::new(),
            task: Arc::default(),
        })
    }

    /// Numbers events from `factory` instead of the nexus's factory. Call before registering.
    pub fn with_factory(mut self, factory: EventFactory) -> Self {
        self.link = ProducerLink::with_factory(factory);
        self
    }

    /// Calls `hook` at each firing with the timer's value and the event factory; the event it
    /// returns is emitted, and `None` emits nothing this time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use nexus_sources::{Timer, TimerKind};
    ///
    /// // Emit only on even counts, with a text payload.
    /// let timer = Timer::new(Duration::from_secs(1), TimerKind::Ongoing, 7)?
    ///     .on_fire(|n, factory| (n % 2 == 0).then(|| factory.create_event(format!("tick {n}"), 7)));
    /// nexus_core::AsyncEventNexus::new().add_producer(timer)?;
    /// # Ok::<(), nexus_core::NexusError>(())
    /// ```
    pub fn on_fire(
        mut self,
        hook: impl Fn(u64, &EventFactory) -> Option<Event> + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// The interval between firings.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// What the timer counts.
    pub fn kind(&self) -> TimerKind {
        self.kind
    }

    /// Whether the timer is running (started, neither finished nor stopped).
    pub fn is_running(&self) -> bool {
        self.slot().as_ref().is_some_and(Running::is_running)
    }

    /// Stops the timer; it counts as finished (see
    /// [`loop_until_exhausted`](nexus_core::AsyncEventNexus::loop_until_exhausted)). It fires no
    /// more; an event it is delivering right now is still delivered (its handlers are never cut
    /// short), after which its task ends.
    ///
    /// Returns `true` if it was stopped while running, had been stopped before, or had never
    /// been started; `false` if it had already finished by itself (its count was done).
    pub fn stop(&self) -> bool {
        self.link.finish();
        match &*self.slot() {
            None => true,
            Some(running) => {
                let running_now = running.is_running() || *running.stop.borrow();
                running.stop.send_replace(true);
                running_now
            }
        }
    }

    /// Stops the timer and waits until its task has ended (after the delivery under way, if
    /// any). Given up before that, it aborts the task and leaves it for the next wait.
    async fn stop_and_wait(&self) {
        self.stop();
        let running = self.slot().take();
        let Some(running) = running else {
            return;
        };
        if tokio::task::try_id() == Some(running.task.id()) {
            // A handler this timer is calling is closing it: the task ends after that handler.
            return;
        }
        let mut wait = Wait {
            slot: &self.task,
            running: Some(running),
        };
        if let Some(running) = &mut wait.running {
            let _ = (&mut running.task).await;
        }
        wait.running = None;
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.task.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fires until the count is done or an event is refused, then tells the nexus that this
    /// source has finished.
    async fn run(self, stop: watch::Receiver<bool>) -> Result<(), NexusError> {
        let result = self.fire(stop).await;
        self.link.finish();
        result
    }

    async fn fire(&self, mut stopping: watch::Receiver<bool>) -> Result<(), NexusError> {
        let (mut value, step, last) = self.kind.plan();
        let factory = self.link.event_factory();
        let mut ticks = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        // Catch up after a slow firing, so that firings keep to the original schedule.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
        loop {
            tokio::select! {
                biased;
                // Stopped, or replaced by a new start (its signal is gone).
                _ = stopping.wait_for(|stop| *stop) => return Ok(()),
                _ = ticks.tick() => {}
            }
            value = match step {
                Step::Up => value + 1,
                Step::Down => value - 1,
            };
            let event = match &self.hook {
                Some(hook) => hook(value, &factory),
                None => Some(factory.create_event(payload(value), self.event_type.clone())),
            };
            if let Some(event) = event
                && let Err(err) = self.link.distribute_event(event).await
            {
                // The nexus stopped, or this event's failure ended its loop (which returns that
                // error): nobody takes the timer's events any more.
                tracing::warn!(error = %err, "timer stops: its event was refused");
                return Err(err);
            }
            if Some(value) == last {
                return Ok(());
            }
        }
    }
}

fn payload(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A wait for a timer's task: given up, it aborts the task and puts it back in its slot, so that
/// the next wait (the timer's `close`) sees it end.
struct Wait<'a> {
    slot: &'a TaskSlot,
    running: Option<Running>,
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.task.abort();
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(running);
            }
        }
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("interval", &self.interval)
            .field("kind", &self.kind)
            .field("event_type", &self.event_type)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventSource for Timer {
    /// Starts firing.
    ///
    /// # Errors
    ///
    /// [`NexusError::MisconfiguredEventProducer`] when the timer is registered with no live
    /// nexus; [`NexusError::MultipleStart`] while it is already running.
    async fn start(&mut self) -> Result<(), NexusError> {
        self.link.begin(self.name())?;
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(Running::is_running) {
            return Err(NexusError::MultipleStart {
                source_name: self.name().to_owned(),
            });
        }
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(self.clone().run(stopping));
        *slot = Some(Running { task, stop });
        Ok(())
    }

    /// Stops the timer and waits for its task to end: an event being delivered is delivered.
    async fn drain(&mut self) -> Result<(), NexusError> {
        self.stop_and_wait().await;
        Ok(())
    }

    /// Stops the timer as [`drain`](EventSource::drain) does.
    async fn close(&mut self) -> Result<(), NexusError> {
        self.stop_and_wait().await;
        Ok(())
    }

    fn name(&self) -> &str {
        "Timer"
    }
}

impl EventProducer for Timer {
    fn link(&self) -> &ProducerLink {
        &self.link
    }
}

//! The "Usage" section of the guide again, written only with attributes: the countdown timer and
//! the teapot task are `#[event_source]`s, the handlers are `#[handler]`s, and the nexus is built
//! from them and run until every source has finished. It prints the same lines as
//! `examples/usage.rs`.
//!
//! ```text
//! cargo run --example registered
//! ```

use std::sync::Mutex;
use std::time::Duration;

use nexus::sources::{Timer, TimerKind};
use nexus::{
    Event, EventProducer, EventQueue, EventSource, NexusError, ProducerLink, async_trait,
    event_source, handler,
};

/// The timer's interval, as in `examples/usage.rs`.
pub const INTERVAL: Duration = Duration::from_millis(500);
/// How long the teapot waits before sending its event, as in `examples/usage.rs`.
pub const TEAPOT_DELAY: Duration = Duration::from_millis(1200);

/// Where the lines go: stdout, unless a test collects them here.
pub static COLLECTED: Mutex<Option<Vec<String>>> = Mutex::new(None);

fn say(line: String) {
    match &mut *COLLECTED.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(lines) => lines.push(line),
        None => println!("{line}"),
    }
}

/// The guide's countdown timer: one event of type 98 per interval, with 4, 3, 2, 1, 0.
#[event_source(new = Countdown::new())]
struct Countdown(Timer);

impl Countdown {
    fn new() -> Self {
        let timer = Timer::new(INTERVAL, TimerKind::CountDown(5), 98);
        Self(timer.expect("a countdown from 5 is a valid timer"))
    }
}

#[async_trait]
impl EventSource for Countdown {
    async fn start(&mut self) -> Result<(), NexusError> {
        self.0.start().await
    }

    async fn close(&mut self) -> Result<(), NexusError> {
        self.0.close().await
    }
}

impl EventProducer for Countdown {
    fn link(&self) -> &ProducerLink {
        self.0.link()
    }
}

/// The guide's teapot task, as a producer: one event after a while, then it has finished.
#[event_source]
#[derive(Default)]
struct Teapot {
    link: ProducerLink,
}

#[async_trait]
impl EventSource for Teapot {
    async fn start(&mut self) -> Result<(), NexusError> {
        let link = self.link.clone();
        tokio::spawn(async move {
            tokio::time::sleep(TEAPOT_DELAY).await;
            let event = Event::new(1001, 99, 0, "TEAPOT!");
            if let Err(err) = link.distribute_event(event).await {
                say(format!("teapot: {err}"));
            }
            link.finish();
        });
        Ok(())
    }
}

impl EventProducer for Teapot {
    fn link(&self) -> &ProducerLink {
        &self.link
    }
}

#[handler(event_type = 99)]
async fn teapot_handler(event: Event, _queue: EventQueue) {
    say(format!("teapot ID: {}", event.id));
}

#[handler(event_type = -1)]
async fn default_handler(event: Event, _queue: EventQueue) {
    say(event.to_string());
}

/// Runs the nexus twice, as `examples/usage.rs` does: first waiting for it, then from a task.
pub async fn run() -> Result<(), NexusError> {
    say("-- loop_forever (blocking mode)".to_owned());
    nexus::registered().until_exhausted(true).run().await?;

    say("-- start (background task)".to_owned());
    let registered = nexus::registered().until_exhausted(true);
    let nexus = registered.build()?;
    let task = tokio::spawn(async move { registered.run_nexus(&nexus).await });
    task.await.expect("nexus task")
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), NexusError> {
    run().await
}

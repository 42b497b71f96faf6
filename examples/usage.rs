//! The "Usage" section of the guide, end to end: a timer counting down, the teapot task, the
//! teapot handler and a default handler; the loop run first in blocking mode, then as a
//! background task.
//!
//! ```text
//! cargo run --example usage
//! ```

use std::sync::Arc;
use std::time::Duration;

use nexus::sources::{Timer, TimerKind};
use nexus::{AsyncEventNexus, Event, EventQueue, NexusError};

/// Where the example's lines go: stdout when run, a buffer when tested.
pub type Out = Arc<dyn Fn(String) + Send + Sync>;

/// The timer counts down from this, one event per interval.
pub const COUNTDOWN: u64 = 5;
/// The timer's interval (the guide uses 1.5 s; shorter here so the example ends quickly).
pub const INTERVAL: Duration = Duration::from_millis(500);
/// How long the teapot task waits before sending its event.
pub const TEAPOT_DELAY: Duration = Duration::from_millis(1200);

/// The simplest kind of event source: a task that sends an event to the nexus.
pub async fn teapot(nexus: AsyncEventNexus) -> Result<(), NexusError> {
    tokio::time::sleep(TEAPOT_DELAY).await;
    let event = Event::new(1001, 99, 0, "TEAPOT!");
    nexus.ingest(event).await
}

/// A nexus with the guide's timer, teapot handler and default handler. The default handler
/// stops the nexus after the countdown's last event, so that the example ends by itself.
pub fn build(out: Out) -> Result<AsyncEventNexus, NexusError> {
    let nexus = AsyncEventNexus::new();

    let timer = Timer::new(INTERVAL, TimerKind::CountDown(COUNTDOWN), 98)?;
    nexus.add_producer(timer)?;

    let teapot_out = out.clone();
    nexus.add_handler(99, move |event: Event, _queue: EventQueue| {
        let out = teapot_out.clone();
        async move { out(format!("teapot ID: {}", event.id)) }
    })?;

    let weak = nexus.downgrade();
    nexus.add_handler(-1, move |event: Event, _queue: EventQueue| {
        out(event.to_string());
        if event.event_type == 98.into()
            && event.payload.as_int() == Some(0)
            && let Some(nexus) = weak.upgrade()
        {
            nexus.stop();
        }
    })?;
    Ok(nexus)
}

/// Blocking mode: `loop_forever` returns when the nexus is stopped.
pub async fn run_blocking(out: Out) -> Result<(), NexusError> {
    out("-- loop_forever (blocking mode)".to_owned());
    let nexus = build(out)?;
    let teapot_task = tokio::spawn(teapot(nexus.clone()));
    nexus.loop_forever().await?;
    teapot_task.await.expect("teapot task")?;
    nexus.cleanup().await
}

/// Background mode: `start` runs the loop in a task of its own.
pub async fn run_background(out: Out) -> Result<(), NexusError> {
    out("-- start (background task)".to_owned());
    let nexus = build(out)?;
    let teapot_task = tokio::spawn(teapot(nexus.clone()));
    let nexus_task = nexus.start()?;
    // ... the program is free to do other work here ...
    nexus_task.await.expect("nexus task")?;
    teapot_task.await.expect("teapot task")?;
    nexus.cleanup().await
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), NexusError> {
    let out: Out = Arc::new(|line| println!("{line}"));
    run_blocking(out.clone()).await?;
    run_background(out).await
}

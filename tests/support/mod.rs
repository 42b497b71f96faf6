//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

use nexus::{AsyncEventNexus, Event, EventQueue, LoopState};

/// A list of what happened, in order, shared between handlers and the test.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, line: impl Into<String>) {
        self.0.lock().unwrap().push(line.into());
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// A handler that logs `"{tag}:{id}"` for each event it gets.
    pub fn handler(&self, tag: &'static str) -> impl Fn(Event, EventQueue) + Send + Sync + 'static {
        let log = self.clone();
        move |event: Event, _queue: EventQueue| log.push(format!("{tag}:{}", event.id))
    }
}

/// Starts the loop in the background and waits until it is `LOOPING`.
pub async fn running(
    nexus: &AsyncEventNexus,
) -> tokio::task::JoinHandle<Result<(), nexus::NexusError>> {
    let task = nexus.start().expect("start");
    while nexus.state() != LoopState::Looping {
        tokio::task::yield_now().await;
    }
    task
}

/// Whether a test that needs an outside program may run. In CI (`CI=true`) it must: a missing
/// program fails the test. Elsewhere the test is skipped, saying why.
pub fn outside_program_available(what: &str, problem: Option<String>) -> bool {
    let Some(problem) = problem else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is required in CI but unavailable: {problem}");
    }
    eprintln!("skipped: {what} unavailable here ({problem}); CI runs this test");
    false
}

//! The guide's "Usage" life cycle: `loop_forever`, `start`, `stop`, `cleanup`, and every misuse
//! error of the original's `BadCall` family.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{Log, running};
use nexus::{
    AsyncEventNexus, Event, EventProducer, EventQueue, EventSource, LoopState, NexusError,
    ProducerLink, SimpleEventConverter, async_trait,
};

#[tokio::test]
async fn the_states_in_order() {
    let nexus = AsyncEventNexus::new();
    assert_eq!(nexus.state(), LoopState::Ready);
    let task = nexus.start().unwrap();
    assert_eq!(nexus.state(), LoopState::Starting);
    while nexus.state() != LoopState::Looping {
        tokio::task::yield_now().await;
    }
    nexus.stop();
    assert_eq!(nexus.state(), LoopState::Stopped);
    task.await.unwrap().unwrap();
    assert_eq!(nexus.state(), LoopState::Stopped);
}

#[tokio::test]
async fn ingest_before_start_and_after_stop_is_refused_with_the_event_handed_back() {
    let nexus = AsyncEventNexus::new();
    nexus
        .add_handler(-1, |_e: Event, _q: EventQueue| {})
        .unwrap();
    let err = nexus
        .ingest(Event::new(1, 2, 0, "early"))
        .await
        .unwrap_err();
    assert!(err.is_bad_call());
    assert_eq!(
        err.to_string(),
        "event 1 of type 2 refused: the nexus loop is not running (state READY)"
    );
    assert_eq!(err.into_event().unwrap().payload.as_str(), Some("early"));

    let task = running(&nexus).await;
    nexus.ingest(Event::new(2, 2, 0, ())).await.unwrap();
    nexus.stop();
    task.await.unwrap().unwrap();
    let err = nexus.ingest(Event::new(3, 2, 0, "late")).await.unwrap_err();
    assert!(
        matches!(
            err,
            NexusError::NotRunning {
                state: LoopState::Stopped,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn loop_forever_while_running_is_loop_already_started() {
    let nexus = AsyncEventNexus::new();
    let task = running(&nexus).await;
    let err = nexus.loop_forever().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "loop already started: loop_forever called while the nexus is LOOPING"
    );
    assert!(err.is_bad_call());
    nexus.stop();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn loop_forever_after_stop_is_loop_stopped() {
    let nexus = AsyncEventNexus::new();
    let task = running(&nexus).await;
    nexus.stop();
    task.await.unwrap().unwrap();
    let err = nexus.loop_forever().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "loop stopped: loop_forever called after the nexus stopped"
    );
    assert!(err.is_bad_call());

    let never = AsyncEventNexus::new();
    never.stop();
    assert!(matches!(
        never.loop_forever().await,
        Err(NexusError::LoopStopped { .. })
    ));
}

#[tokio::test]
async fn start_is_only_for_a_ready_nexus() {
    let nexus = AsyncEventNexus::new();
    let task = nexus.start().unwrap();
    let err = nexus.start().unwrap_err();
    assert!(matches!(
        err,
        NexusError::InvalidLoopState {
            state: LoopState::Starting,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "invalid loop state: start needs the nexus READY, but it is STARTING"
    );
    nexus.stop();
    task.await.unwrap().unwrap();
    let err = nexus.start().unwrap_err();
    assert!(matches!(
        err,
        NexusError::InvalidLoopState {
            state: LoopState::Stopped,
            ..
        }
    ));
    assert!(err.is_bad_call());
}

#[derive(Default)]
struct Idle;

impl EventSource for Idle {}

#[async_trait]
impl SimpleEventConverter for Idle {
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn sources_are_registered_before_the_loop_starts() {
    let nexus = AsyncEventNexus::new();
    let task = running(&nexus).await;
    let err = nexus.register(Idle).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid loop state: register needs the nexus READY, but it is LOOPING"
    );
    nexus.stop();
    task.await.unwrap().unwrap();
}

/// A source that records its start and close, and may fail to close.
struct Tracked {
    name: &'static str,
    log: Log,
    fail_close: bool,
    link: ProducerLink,
}

#[async_trait]
impl EventSource for Tracked {
    async fn start(&mut self) -> Result<(), NexusError> {
        self.log.push(format!("start {}", self.name));
        Ok(())
    }

    async fn close(&mut self) -> Result<(), NexusError> {
        self.log.push(format!("close {}", self.name));
        if self.fail_close {
            return Err(NexusError::source(self.name, "close", "port busy"));
        }
        Ok(())
    }

    fn name(&self) -> &str {
        self.name
    }
}

impl EventProducer for Tracked {
    fn link(&self) -> &ProducerLink {
        &self.link
    }
}

#[tokio::test]
async fn cleanup_closes_every_source_even_when_one_fails_then_forgets_consumers() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    for (name, fail_close) in [("a", false), ("b", true), ("c", false)] {
        let source = Tracked {
            name,
            log: log.clone(),
            fail_close,
            link: ProducerLink::new(),
        };
        nexus.add_producer(source).unwrap();
    }
    nexus.register(Idle).unwrap();
    nexus
        .add_handler(1, |_e: Event, _q: EventQueue| {})
        .unwrap();
    nexus.add_filter(|_e: &Event, _q: &EventQueue| false);
    let task = running(&nexus).await;
    assert_eq!(nexus.source_count(), 4);

    let err = nexus.cleanup().await.unwrap_err();
    task.await.unwrap().unwrap();
    assert_eq!(
        nexus.state(),
        LoopState::Stopped,
        "cleanup stops a running loop first"
    );
    let NexusError::CloseFailed { failures } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(
        err.to_string(),
        "cleanup: 1 event source(s) failed to close: event source b failed in close"
    );
    let closes: Vec<String> = log
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("close"))
        .collect();
    assert_eq!(closes.len(), 3, "a and c were closed despite b: {closes:?}");
    assert_eq!(nexus.source_count(), 0);
    assert!(
        nexus.has_no_consumers(),
        "handlers and filters are forgotten"
    );
}

#[tokio::test]
async fn every_source_is_started_when_the_loop_starts() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    for name in ["p1", "p2"] {
        let link = ProducerLink::new();
        nexus
            .add_producer(Tracked {
                name,
                log: log.clone(),
                fail_close: false,
                link,
            })
            .unwrap();
    }
    let task = running(&nexus).await;
    let mut lines = log.lines();
    lines.sort();
    assert_eq!(lines, ["start p1", "start p2"]);
    nexus.stop();
    task.await.unwrap().unwrap();
}

struct FailsToStart;

#[async_trait]
impl EventSource for FailsToStart {
    async fn start(&mut self) -> Result<(), NexusError> {
        Err(NexusError::source(
            "FailsToStart",
            "start",
            "no such device",
        ))
    }
}

#[async_trait]
impl SimpleEventConverter for FailsToStart {
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        Err(NexusError::NoMoreEvents)
    }
}

#[tokio::test]
async fn a_source_that_cannot_start_ends_the_loop() {
    let nexus = AsyncEventNexus::new();
    nexus.register(FailsToStart).unwrap();
    let err = nexus.loop_forever().await.unwrap_err();
    assert_eq!(err.to_string(), "event source FailsToStart failed in start");
    assert_eq!(nexus.state(), LoopState::Stopped);
    assert_eq!(nexus.source_count(), 1, "kept for cleanup");
}

/// Yields one event per call, counting how many it gave out.
struct Numbered(Arc<AtomicUsize>);

impl EventSource for Numbered {}

#[async_trait]
impl SimpleEventConverter for Numbered {
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        tokio::task::yield_now().await;
        let n = self.0.fetch_add(1, Ordering::SeqCst) as u64;
        Ok(Event::new(n, 1, 0, ()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_loses_no_event_a_converter_has_given() {
    let nexus = AsyncEventNexus::new();
    let given = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    nexus
        .add_handler(1, move |_e: Event, _q: EventQueue| {
            let h = h.clone();
            async move {
                tokio::task::yield_now().await;
                h.fetch_add(1, Ordering::SeqCst);
            }
        })
        .unwrap();
    nexus.register(Numbered(given.clone())).unwrap();
    let task = running(&nexus).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    nexus.stop();
    task.await.unwrap().unwrap();
    assert!(handled.load(Ordering::SeqCst) > 0);
    assert_eq!(given.load(Ordering::SeqCst), handled.load(Ordering::SeqCst));
}

#[tokio::test]
async fn the_nexus_is_an_event_factory() {
    let nexus = AsyncEventNexus::new();
    assert_eq!(nexus.next_id(), 1);
    let e = nexus.create_event("x", 4);
    assert_eq!((e.id, e.priority), (2, 0));
    let factory = nexus.event_factory();
    assert_eq!(
        factory.next_id(),
        3,
        "the factory shares the nexus's sequence"
    );
    let r = nexus.create_event_with("x", 4, nexus::EventId::Random, 2);
    assert_eq!(r.priority, 2);
    assert_eq!(nexus.next_id(), 4, "random ids leave the sequence alone");
}

/// A converter that never yields, and records its close.
struct Waits(Log);

#[async_trait]
impl EventSource for Waits {
    async fn close(&mut self) -> Result<(), NexusError> {
        self.0.push("closed");
        Ok(())
    }
}

#[async_trait]
impl SimpleEventConverter for Waits {
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn cancelling_the_loop_stops_the_nexus_and_keeps_its_converters_for_cleanup() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    nexus.register(Waits(log.clone())).unwrap();
    let task = running(&nexus).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(nexus.state(), LoopState::Stopped);
    nexus.cleanup().await.unwrap();
    assert_eq!(
        log.lines(),
        ["closed"],
        "the converter came back and was closed"
    );
}

struct Panics;

impl EventSource for Panics {}

#[async_trait]
impl SimpleEventConverter for Panics {
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        panic!("converter bug")
    }
}

#[tokio::test]
async fn a_panicking_converter_ends_the_loop_with_an_error_not_a_hang() {
    let nexus = AsyncEventNexus::new();
    nexus.register(Panics).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), nexus.loop_forever())
        .await
        .expect("the loop must not hang")
        .unwrap_err();
    assert!(err.to_string().contains("Panics"), "{err}");
    assert_eq!(nexus.state(), LoopState::Stopped);
    nexus.cleanup().await.unwrap();
}

//! Every event accounted for inside a process, under faults: a shutdown while producers hold
//! events, a cancelled `ingest` at each of its await points, panics in the drop of a handler's
//! future, cycles of any length, blocking sends on a runtime thread, refused events from every
//! kind of source. After each fault, the nexus's counts balance against what the test sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::support::{Log, Make, assert_balanced, running, with_both_lanes};
use nexus::bus::AsyncEventBoundary;
use nexus::sources::{ChannelProducer, Timer, TimerKind};
use nexus::{
    AsyncEventNexus, ErrorPolicy, Event, EventQueue, EventSource, Handler, NexusError,
    SimpleEventConverter, async_trait,
};

/// A handler that takes `ms` milliseconds, then logs `"{tag}:{id}"`.
fn slow_handler(
    log: &Log,
    tag: &'static str,
    ms: u64,
) -> impl Fn(Event, EventQueue) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static
{
    let log = log.clone();
    move |e: Event, _q: EventQueue| {
        let log = log.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            log.push(format!("{tag}:{}", e.id));
        })
    }
}

/// A nexus whose handler for type 1 takes 50 ms and logs each event it finished.
fn slow_nexus(log: &Log) -> AsyncEventNexus {
    let nexus = AsyncEventNexus::new();
    nexus.add_handler(1, slow_handler(log, "done", 50)).unwrap();
    nexus
}

fn ids(events: &[Event]) -> Vec<u64> {
    let mut ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids
}

/// The ids of the events a close hands back in its error, in order: a nexus's close lists one
/// failure per source, and a boundary's lists each event it could not deliver.
fn handed_back(closed: Result<(), NexusError>) -> Vec<u64> {
    let Err(NexusError::CloseFailed { failures }) = closed else {
        panic!("expected events handed back, got {closed:?}");
    };
    let events: Vec<Event> = failures
        .into_iter()
        .flat_map(|failure| match failure {
            NexusError::CloseFailed { failures } => failures,
            other => vec![other],
        })
        .filter_map(NexusError::into_event)
        .collect();
    ids(&events)
}

// ----- 1. shutdown drains producers ---------------------------------------------------------

/// A running `slow_nexus` fed by a ChannelProducer holding events 1 to 10, and its sender.
async fn channel_fed(log: &Log) -> (AsyncEventNexus, nexus::sources::EventSender) {
    let nexus = slow_nexus(log);
    let (producer, sender) = ChannelProducer::new(16);
    nexus.add_producer(producer).unwrap();
    // The loop task runs on by itself; its handle is not needed.
    drop(running(&nexus).await);
    for id in 1..=10 {
        sender.send(Event::new(id, 1, 0, ())).await.unwrap();
    }
    tokio::task::yield_now().await; // the producer takes the first run
    (nexus, sender)
}

#[tokio::test(start_paused = true)]
async fn shutdown_delivers_every_event_a_channel_producer_holds() {
    let log = Log::default();
    let (nexus, sender) = channel_fed(&log).await;

    let started = tokio::time::Instant::now();
    let report = nexus.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(report.completed, "{report:?}");
    assert!(report.undelivered.is_empty() && report.interrupted.is_empty());
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(500),
        "ten handlers of 50 ms, none cut short"
    );
    assert_eq!(log.len(), 10, "every handler finished: {:?}", log.lines());
    let stats = nexus.stats();
    assert_eq!(
        (stats.dispatched, stats.cancelled, stats.dropped),
        (10, 0, 0)
    );
    assert_balanced(&stats, 10);
    // New work is refused once the shutdown began, the event handed back.
    let err = sender.send(Event::new(11, 1, 0, ())).await.unwrap_err();
    assert_eq!(err.into_event().map(|e| e.id), Some(11));
}

#[tokio::test(start_paused = true)]
async fn a_short_shutdown_names_every_event_a_channel_producer_did_not_deliver() {
    let log = Log::default();
    let (nexus, _sender) = channel_fed(&log).await;
    a_short_shutdown_cuts_the_third_short(&nexus, &log, 10).await;
}

/// A shutdown of 120 ms while a producer holds events 1 to `last` for `slow_nexus`'s handler of
/// 50 ms: two finish, the third is cut short, the rest are named undelivered.
async fn a_short_shutdown_cuts_the_third_short(nexus: &AsyncEventNexus, log: &Log, last: u64) {
    let report = nexus.shutdown(Duration::from_millis(120)).await.unwrap();
    assert!(!report.completed);
    assert_eq!(log.lines(), ["done:1", "done:2"]);
    assert_eq!(report.interrupted, [3]);
    assert_eq!(ids(&report.undelivered), (4..=last).collect::<Vec<_>>());
    let stats = nexus.stats();
    assert_eq!(
        (stats.dispatched, stats.cancelled, stats.dropped),
        (2, 1, last - 3)
    );
    assert_balanced(&stats, 3);
}

/// A running `slow_nexus` fed by a ChannelProducer, stopped; then events 1 to 5 are sent, and the
/// producer has found the nexus stopped.
async fn stopped_then_sent(log: &Log) -> (AsyncEventNexus, nexus::sources::EventSender) {
    let nexus = slow_nexus(log);
    let (producer, sender) = ChannelProducer::new(16);
    nexus.add_producer(producer).unwrap();
    let task = running(&nexus).await;
    nexus.stop();
    task.await.unwrap().unwrap();
    for id in 1..=5 {
        sender.send(Event::new(id, 1, 0, ())).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    (nexus, sender)
}

#[tokio::test(start_paused = true)]
async fn after_a_stop_a_channel_producer_keeps_what_it_is_sent_for_the_shutdown_to_deliver() {
    let log = Log::default();
    let (nexus, sender) = stopped_then_sent(&log).await;
    // Nothing was refused or dropped: the producer keeps the five, and takes no more.
    let stats = nexus.stats();
    assert_eq!(
        (stats.ingested, stats.returned, stats.dropped),
        (0, 0, 0),
        "{stats:?}"
    );
    let err = sender.send(Event::new(6, 1, 0, ())).await.unwrap_err();
    assert!(
        matches!(&err, NexusError::Closed { event, .. } if event.id == 6),
        "{err}"
    );

    let report = nexus.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(report.completed, "{report:?}");
    assert_eq!(
        log.lines(),
        ["done:1", "done:2", "done:3", "done:4", "done:5"]
    );
    let stats = nexus.stats();
    assert_eq!((stats.dispatched, stats.dropped), (5, 0));
    assert_balanced(&stats, 5);
}

#[tokio::test(start_paused = true)]
async fn after_a_stop_a_short_shutdown_names_every_event_a_channel_producer_kept() {
    let log = Log::default();
    let (nexus, _sender) = stopped_then_sent(&log).await;
    a_short_shutdown_cuts_the_third_short(&nexus, &log, 5).await;
}

#[tokio::test(start_paused = true)]
async fn after_a_stop_closing_a_channel_producer_counts_what_it_kept_as_dropped() {
    let log = Log::default();
    let (nexus, _sender) = stopped_then_sent(&log).await;
    nexus.cleanup().await.unwrap();
    assert!(log.lines().is_empty());
    let stats = nexus.stats();
    assert_eq!((stats.dispatched, stats.dropped), (0, 5), "{stats:?}");
    assert_balanced(&stats, 0);
}

/// A producer into two nexuses: B then A. B's handler of event 2 stops A, so A refuses event 2
/// after B took it. That event is left undelivered, not tried again (B would get it twice), and
/// A's shutdown delivers the rest to both.
#[tokio::test(start_paused = true)]
async fn a_channel_producer_into_two_nexuses_never_delivers_an_event_twice_after_a_stop() {
    let (a, b) = (AsyncEventNexus::new(), AsyncEventNexus::new());
    let log = Log::default();
    let seen = log.clone();
    a.add_handler(1, move |e: Event, _q: EventQueue| {
        seen.push(format!("a:{}", e.id))
    })
    .unwrap();
    let (seen, stop_a) = (log.clone(), a.downgrade());
    b.add_handler(1, move |e: Event, _q: EventQueue| {
        seen.push(format!("b:{}", e.id));
        if let (2, Some(a)) = (e.id, stop_a.upgrade()) {
            a.stop();
        }
    })
    .unwrap();
    let (producer, sender) = ChannelProducer::new(16);
    nexus::EventProducer::link(&producer).add_nexus(&b);
    a.add_producer(producer).unwrap();
    let _b_loop = running(&b).await;
    for id in 1..=5 {
        sender.send(Event::new(id, 1, 0, ())).await.unwrap();
    }
    a.start().unwrap().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(log.lines(), ["b:1", "a:1", "b:2"]);

    let report = a.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ids(&report.undelivered), [2], "{report:?}");
    assert_eq!(
        log.lines(),
        [
            "b:1", "a:1", "b:2", "b:3", "a:3", "b:4", "a:4", "b:5", "a:5"
        ]
    );
    assert_eq!(a.stats().dropped, 1);
}

#[tokio::test(start_paused = true)]
async fn a_nexus_stopped_in_the_middle_of_a_run_has_the_event_it_refused_kept_first_in_line() {
    let log = Log::default();
    let nexus = AsyncEventNexus::new();
    let (seen, weak) = (log.clone(), nexus.downgrade());
    nexus
        .add_handler(1, move |e: Event, _q: EventQueue| {
            seen.push(format!("done:{}", e.id));
            if let (1, Some(nexus)) = (e.id, weak.upgrade()) {
                nexus.stop();
            }
        })
        .unwrap();
    let (producer, sender) = ChannelProducer::new(16);
    nexus.add_producer(producer).unwrap();
    for id in 1..=5 {
        sender.send(Event::new(id, 1, 0, ())).await.unwrap();
    }
    nexus.start().unwrap().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(log.lines(), ["done:1"]);
    // Event 2 came next in the same run, and was refused: handed back, and kept.
    let stats = nexus.stats();
    assert_eq!((stats.ingested, stats.returned), (2, 1), "{stats:?}");

    let report = nexus.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(report.completed, "{report:?}");
    assert_eq!(
        log.lines(),
        ["done:1", "done:2", "done:3", "done:4", "done:5"]
    );
    let stats = nexus.stats();
    assert_eq!((stats.dispatched, stats.returned, stats.dropped), (5, 1, 0));
    // Event 2 arrived twice: refused, then delivered.
    assert_balanced(&stats, 6);
}

/// A producer that delivers nothing and takes `ms` milliseconds to close.
struct SlowToClose {
    link: nexus::ProducerLink,
    ms: u64,
}

#[async_trait]
impl EventSource for SlowToClose {
    async fn close(&mut self) -> Result<(), NexusError> {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        Ok(())
    }
}

impl nexus::EventProducer for SlowToClose {
    fn link(&self) -> &nexus::ProducerLink {
        &self.link
    }
}

/// A producer that takes `ms` milliseconds to start and holds `events` until it is closed,
/// when it leaves them undelivered.
struct SlowToStart {
    link: nexus::ProducerLink,
    ms: u64,
    events: Vec<Event>,
}

#[async_trait]
impl EventSource for SlowToStart {
    async fn start(&mut self) -> Result<(), NexusError> {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        Ok(())
    }

    async fn close(&mut self) -> Result<(), NexusError> {
        for event in self.events.drain(..) {
            self.link.leave(event);
        }
        Ok(())
    }
}

impl nexus::EventProducer for SlowToStart {
    fn link(&self) -> &nexus::ProducerLink {
        &self.link
    }
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_while_the_loop_starts_its_producers_names_what_they_hold() {
    let nexus = AsyncEventNexus::new();
    nexus
        .add_producer(SlowToStart {
            link: nexus::ProducerLink::new(),
            ms: 50,
            events: vec![Event::new(1, 1, 0, ()), Event::new(2, 1, 0, ())],
        })
        .unwrap();
    let task = nexus.start().unwrap();
    tokio::task::yield_now().await;
    assert_eq!(
        nexus.source_count(),
        0,
        "the loop holds its producer while it starts"
    );

    let report = nexus.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ids(&report.undelivered), [1, 2], "{report:?}");
    assert!(!report.completed);
    task.await.unwrap().unwrap();
    assert_eq!(nexus.stats().dropped, 2);
}

/// The shutdown's deadline passes while a channel producer's handler blocks its thread: the
/// drain is given up, but the producer's task goes on until its next wait, and then finds a
/// nexus that takes nothing more. What it holds must still come back in the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_still_running_when_the_shutdown_gives_up_its_drain_hands_back_what_it_holds() {
    let log = Log::default();
    let nexus = AsyncEventNexus::new();
    let blocking = Arc::new(AtomicUsize::new(0));
    let (seen, blocked) = (log.clone(), Arc::clone(&blocking));
    nexus
        .add_handler(1, move |e: Event, _q: EventQueue| {
            if e.id == 1 {
                blocked.store(1, Ordering::Release);
                // Holds this worker thread past the deadline, out of reach of the abort.
                std::thread::sleep(Duration::from_millis(100));
            }
            seen.push(format!("done:{}", e.id));
        })
        .unwrap();
    let (producer, sender) = ChannelProducer::new(16);
    nexus.add_producer(producer).unwrap();
    // Closed first (sources close in reverse), it keeps the channel producer open meanwhile.
    nexus
        .add_producer(SlowToClose {
            link: nexus::ProducerLink::new(),
            ms: 300,
        })
        .unwrap();
    for id in 1..=10 {
        sender.send(Event::new(id, 1, 0, ())).await.unwrap();
    }
    let _task = running(&nexus).await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while blocking.load(Ordering::Acquire) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("event 1's handler runs");

    let report = nexus.shutdown(Duration::from_millis(20)).await.unwrap();
    let mut fates: Vec<u64> = log
        .lines()
        .iter()
        .map(|line| line["done:".len()..].parse().unwrap())
        .chain(report.interrupted.iter().copied())
        .chain(report.undelivered.iter().map(|e| e.id))
        .collect();
    fates.sort_unstable();
    assert_eq!(
        fates,
        (1..=10).collect::<Vec<_>>(),
        "each event dispatched, interrupted or handed back, once: {:?} {report:?}",
        log.lines()
    );
    assert!(nexus.stats().balanced(), "{:?}", nexus.stats());
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_timer_finish_the_event_it_is_delivering() {
    let log = Log::default();
    let nexus = slow_nexus(&log);
    let timer = Timer::new(Duration::from_millis(100), TimerKind::Ongoing, 1).unwrap();
    nexus.add_producer(timer.clone()).unwrap();
    let _task = running(&nexus).await;
    // The third firing (at 300 ms) is being delivered: its handler runs until 350 ms.
    tokio::time::sleep(Duration::from_millis(320)).await;
    assert_eq!(log.len(), 2);

    let report = nexus.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(report.completed, "{report:?}");
    assert_eq!(log.len(), 3, "the third firing's handler finished");
    assert!(!timer.is_running(), "and the timer fired no more");
    let stats = nexus.stats();
    assert_eq!((stats.dispatched, stats.cancelled), (3, 0));
    assert_balanced(&stats, 3);
}

#[tokio::test(start_paused = true)]
async fn a_short_shutdown_names_the_timer_event_it_cut_short() {
    let log = Log::default();
    let nexus = slow_nexus(&log);
    let timer = Timer::new(Duration::from_millis(100), TimerKind::Ongoing, 1).unwrap();
    nexus.add_producer(timer).unwrap();
    let _task = running(&nexus).await;
    tokio::time::sleep(Duration::from_millis(320)).await;

    let report = nexus.shutdown(Duration::from_millis(10)).await.unwrap();
    assert!(!report.completed);
    assert_eq!(report.interrupted.len(), 1, "{report:?}");
    assert_eq!(log.len(), 2);
    let stats = nexus.stats();
    assert_eq!((stats.dispatched, stats.cancelled), (2, 1));
    assert_balanced(&stats, 3);
}

/// A channel producer whose link reaches `nexus`, kept by the test to start, drain and close
/// it itself.
fn kept_channel_producer(
    nexus: &AsyncEventNexus,
) -> (ChannelProducer, nexus::sources::EventSender) {
    let (producer, sender) = ChannelProducer::new(16);
    nexus::ProducerLink::add_nexus(nexus::EventProducer::link(&producer), nexus);
    (producer, sender)
}

#[tokio::test(start_paused = true)]
async fn closing_a_channel_producer_finishes_the_delivery_under_way_and_counts_the_rest() {
    let log = Log::default();
    let nexus = slow_nexus(&log);
    let (mut producer, sender) = kept_channel_producer(&nexus);
    let _task = running(&nexus).await;
    producer.start().await.unwrap();
    for id in 1..=5 {
        sender.send(Event::new(id, 1, 0, ())).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(10)).await; // event 1's handler is running

    let started = tokio::time::Instant::now();
    producer.close().await.unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(40),
        "close waited for the handler"
    );
    assert_eq!(log.lines(), ["done:1"], "the handler was not cut short");
    assert_eq!(nexus::EventProducer::link(&producer).dropped(), 4);
    let stats = nexus.stats();
    assert_eq!((stats.dispatched, stats.cancelled), (1, 0));
    assert_balanced(&stats, 1);
}

#[tokio::test(start_paused = true)]
async fn a_channel_producer_given_up_before_its_task_first_ran_counts_what_waits() {
    let log = Log::default();
    let nexus = slow_nexus(&log);
    let (mut producer, sender) = kept_channel_producer(&nexus);
    let _task = running(&nexus).await;
    for id in 1..=3 {
        sender.send(Event::new(id, 1, 0, ())).await.unwrap();
    }
    producer.start().await.unwrap();
    // As a shutdown whose deadline has passed: the drain is given up at its first wait, and the
    // producer's task, which has not run yet, is aborted.
    let given_up = tokio::time::timeout(Duration::ZERO, producer.drain()).await;
    assert!(
        given_up.is_err(),
        "the drain waited for the task: {given_up:?}"
    );
    tokio::time::timeout(Duration::from_secs(60), producer.close())
        .await
        .expect("closing waited forever")
        .unwrap();
    assert_eq!(nexus::EventProducer::link(&producer).dropped(), 3);
    assert!(log.lines().is_empty());
}

/// Domain A sends type 1 across a boundary to domain B, whose handler takes 50 ms.
async fn across_a_boundary(log: &Log, make: Make) -> (AsyncEventNexus, AsyncEventNexus) {
    let boundary = make(32);
    let a = AsyncEventNexus::new();
    a.add_consumer(1, boundary.handler()).unwrap();
    let b = slow_nexus(log);
    b.add_producer(boundary.producer()).unwrap();
    let _a = running(&a).await;
    let _b = running(&b).await;
    for id in 1..=10 {
        a.ingest(Event::new(id, 1, 0, ())).await.unwrap();
    }
    (a, b)
}

with_both_lanes! { #[tokio::test(start_paused = true)] shutdown_delivers_what_a_boundary_holds }
async fn shutdown_delivers_what_a_boundary_holds(make: Make) {
    let log = Log::default();
    let (a, b) = across_a_boundary(&log, make).await;
    let report = b.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(report.completed, "{report:?}");
    assert_eq!(log.len(), 10);
    assert_balanced(&b.stats(), 10);
    // The boundary is closed: A's next crossing is refused and handed back.
    let err = a.ingest(Event::new(11, 1, 0, ())).await.unwrap_err();
    assert!(matches!(err, NexusError::Closed { .. }), "{err}");
}

with_both_lanes! { #[tokio::test(start_paused = true)] a_short_shutdown_hands_back_what_a_boundary_did_not_deliver }
async fn a_short_shutdown_hands_back_what_a_boundary_did_not_deliver(make: Make) {
    let log = Log::default();
    let (_a, b) = across_a_boundary(&log, make).await;
    let report = b.shutdown(Duration::from_millis(120)).await.unwrap();
    assert!(!report.completed);
    assert_eq!(log.lines(), ["done:1", "done:2"]);
    assert_eq!(report.interrupted, [3]);
    assert_eq!(ids(&report.undelivered), (4..=10).collect::<Vec<_>>());
    let stats = b.stats();
    assert_eq!((stats.dispatched, stats.cancelled), (2, 1));
    assert_balanced(&stats, 3);
}

/// `across_a_boundary`, then B is stopped while its handler takes event 1 (of 10 waiting), and
/// the time passes for event 1 to be done and event 2 to be refused.
async fn stopped_across_a_boundary(log: &Log, make: Make) -> (AsyncEventNexus, AsyncEventNexus) {
    let (a, b) = across_a_boundary(log, make).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    b.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(log.lines(), ["done:1"]);
    (a, b)
}

with_both_lanes! { #[tokio::test(start_paused = true)] after_a_stop_a_boundary_keeps_what_it_holds_for_the_shutdown_to_deliver }
async fn after_a_stop_a_boundary_keeps_what_it_holds_for_the_shutdown_to_deliver(make: Make) {
    let log = Log::default();
    let (a, b) = stopped_across_a_boundary(&log, make).await;
    // The boundary no longer takes what A sends: it is handed back to A at once.
    let err = a.ingest(Event::new(11, 1, 0, ())).await.unwrap_err();
    assert!(
        matches!(&err, NexusError::Closed { event, .. } if event.id == 11),
        "{err}"
    );

    let report = b.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(report.completed, "{report:?}");
    let done: Vec<String> = (1..=10).map(|id| format!("done:{id}")).collect();
    assert_eq!(log.lines(), done, "delivered, in order");
    let stats = b.stats();
    assert_eq!((stats.dispatched, stats.dropped), (10, 0), "{stats:?}");
    assert!(stats.balanced(), "{stats:?}");
}

with_both_lanes! { #[tokio::test(start_paused = true)] after_a_stop_a_short_shutdown_names_every_event_a_boundary_kept }
async fn after_a_stop_a_short_shutdown_names_every_event_a_boundary_kept(make: Make) {
    let log = Log::default();
    let (_a, b) = stopped_across_a_boundary(&log, make).await;
    // Kept: 2 to 10. Within 120 ms two are done, the third is cut short.
    let report = b.shutdown(Duration::from_millis(120)).await.unwrap();
    assert!(!report.completed);
    assert_eq!(log.lines(), ["done:1", "done:2", "done:3"]);
    assert_eq!(report.interrupted, [4]);
    assert_eq!(ids(&report.undelivered), (5..=10).collect::<Vec<_>>());
}

with_both_lanes! { #[tokio::test(start_paused = true)] a_boundary_idle_when_its_nexus_stops_keeps_the_next_event_for_the_shutdown }
async fn a_boundary_idle_when_its_nexus_stops_keeps_the_next_event_for_the_shutdown(make: Make) {
    let log = Log::default();
    let boundary = make(32);
    let a = AsyncEventNexus::new();
    a.add_consumer(1, boundary.handler()).unwrap();
    let b = slow_nexus(&log);
    b.add_producer(boundary.producer()).unwrap();
    let _a = running(&a).await;
    let b_task = running(&b).await;
    b.stop();
    b_task.await.unwrap().unwrap();
    // Taken while the boundary did not know yet; the producer then finds B stopped.
    a.ingest(Event::new(1, 1, 0, ())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let err = a.ingest(Event::new(2, 1, 0, ())).await.unwrap_err();
    assert!(
        matches!(&err, NexusError::Closed { event, .. } if event.id == 2),
        "{err}"
    );
    let stats = b.stats();
    assert_eq!(
        (stats.ingested, stats.returned),
        (0, 0),
        "kept, not refused: {stats:?}"
    );

    let report = b.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(report.completed, "{report:?}");
    assert_eq!(log.lines(), ["done:1"]);
}

with_both_lanes! { #[tokio::test(start_paused = true)] what_a_boundary_kept_is_handed_back_when_its_stopped_nexus_is_dropped }
async fn what_a_boundary_kept_is_handed_back_when_its_stopped_nexus_is_dropped(make: Make) {
    let log = Log::default();
    let boundary = make(32);
    let b = slow_nexus(&log);
    b.add_producer(boundary.producer()).unwrap();
    let b_task = running(&b).await;
    b.stop();
    b_task.await.unwrap().unwrap();
    let handler = boundary.handler();
    for id in 1..=3 {
        nexus::EventConsumer::handle(&handler, Event::new(id, 1, 0, ()), b.queue().clone())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(10)).await; // the producer keeps event 1
    drop(b);
    let closed = tokio::time::timeout(Duration::from_secs(5), boundary.close())
        .await
        .expect("the producer let go of what it kept");
    assert_eq!(handed_back(closed), [1, 2, 3]);
    assert!(log.lines().is_empty());
}

with_both_lanes! { #[tokio::test(start_paused = true)] events_sent_across_a_boundary_after_its_nexus_was_dropped_are_handed_back }
async fn events_sent_across_a_boundary_after_its_nexus_was_dropped_are_handed_back(make: Make) {
    let boundary = make(32);
    let b = AsyncEventNexus::new();
    b.add_handler(1, |_e: Event, _q: EventQueue| {}).unwrap();
    b.add_producer(boundary.producer()).unwrap();
    let b_task = running(&b).await;
    b.stop();
    b_task.await.unwrap().unwrap();
    drop(b);
    let handler = boundary.handler();
    let queue = AsyncEventNexus::new().queue().clone();
    for id in 1..=3 {
        nexus::EventConsumer::handle(&handler, Event::new(id, 1, 0, ()), queue.clone())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(handed_back(boundary.close().await), [1, 2, 3]);
}

with_both_lanes! { #[tokio::test(start_paused = true)] closing_a_nexus_whose_boundary_producer_never_started_hands_back_what_waits }
async fn closing_a_nexus_whose_boundary_producer_never_started_hands_back_what_waits(make: Make) {
    let boundary = make(4);
    let b = AsyncEventNexus::new();
    b.add_producer(boundary.producer()).unwrap();
    let handler = boundary.handler();
    let queue = b.queue().clone();
    for id in 1..=2 {
        nexus::EventConsumer::handle(&handler, Event::new(id, 1, 0, ()), queue.clone())
            .await
            .unwrap();
    }
    // The loop never ran: the producer never started, and is the only one there is.
    let closed = tokio::time::timeout(Duration::from_secs(5), b.cleanup())
        .await
        .expect("closing did not wait for a producer that will never start");
    assert_eq!(handed_back(closed), [1, 2]);
}

with_both_lanes! { #[tokio::test(start_paused = true)] a_boundary_producer_given_up_before_its_task_first_ran_hands_back_what_waits }
async fn a_boundary_producer_given_up_before_its_task_first_ran_hands_back_what_waits(make: Make) {
    let boundary = make(4);
    let b = AsyncEventNexus::new();
    let mut producer = boundary.producer();
    // The producer's link reaches this nexus; the test keeps the producer to drive it itself.
    nexus::ProducerLink::add_nexus(nexus::EventProducer::link(&producer), &b);
    let _b = running(&b).await;
    let handler = boundary.handler();
    for id in 1..=3 {
        nexus::EventConsumer::handle(&handler, Event::new(id, 1, 0, ()), b.queue().clone())
            .await
            .unwrap();
    }
    producer.start().await.unwrap();
    // A shutdown whose deadline has passed gives the drain up at its first wait, before the
    // producer's task has run once (nothing here has yielded to it): the task is aborted.
    let given_up = tokio::time::timeout(Duration::ZERO, producer.drain()).await;
    assert!(
        given_up.is_err(),
        "the drain waited for the task: {given_up:?}"
    );
    // What waits on the boundary is neither delivered nor lost: closing hands it back.
    let closed = tokio::time::timeout(Duration::from_secs(60), producer.close())
        .await
        .expect("closing waited forever for events the aborted task never took");
    assert_eq!(handed_back(closed), [1, 2, 3]);
    assert_eq!(b.stats().dispatched, 0);
}

with_both_lanes! { #[tokio::test(start_paused = true)] after_a_stop_cleanup_hands_back_what_a_boundary_kept }
async fn after_a_stop_cleanup_hands_back_what_a_boundary_kept(make: Make) {
    let log = Log::default();
    let (_a, b) = stopped_across_a_boundary(&log, make).await;
    assert_eq!(handed_back(b.cleanup().await), (2..=10).collect::<Vec<_>>());
    assert_eq!(log.lines(), ["done:1"]);
}

/// One nexus fed at once by a ChannelProducer (type 1, 10 events waiting), a Timer (type 1,
/// every 100 ms) and a boundary from another nexus (type 1, 10 events waiting); its handler
/// takes 50 ms. Returns the nexus, its log, and how many events were sent to it when the
/// shutdown begins (the timer's firings so far included).
async fn fed_by_three(log: &Log) -> (AsyncEventNexus, Timer, AsyncEventNexus) {
    let nexus = slow_nexus(log);
    let (producer, sender) = ChannelProducer::new(16);
    nexus.add_producer(producer).unwrap();
    let timer = Timer::new(Duration::from_millis(100), TimerKind::Ongoing, 1)
        .unwrap()
        .on_fire(|n, _factory| Some(Event::new(1_000 + n, 1, 0, ())));
    nexus.add_producer(timer.clone()).unwrap();
    let boundary = AsyncEventBoundary::new(32);
    nexus.add_producer(boundary.producer()).unwrap();
    let upstream = AsyncEventNexus::new();
    upstream.add_consumer(1, boundary.handler()).unwrap();
    let _up = running(&upstream).await;
    let _task = running(&nexus).await;
    for id in 1..=10 {
        sender.send(Event::new(id, 1, 0, ())).await.unwrap();
        upstream
            .ingest(Event::new(100 + id, 1, 0, ()))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(120)).await; // the timer fired once
    (nexus, timer, upstream)
}

#[tokio::test(start_paused = true)]
async fn shutdown_delivers_what_a_channel_producer_a_timer_and_a_boundary_all_hold() {
    let log = Log::default();
    let (nexus, timer, _upstream) = fed_by_three(&log).await;
    let report = nexus.shutdown(Duration::from_secs(30)).await.unwrap();
    assert!(report.completed, "{report:?}");
    assert!(!timer.is_running());
    let stats = nexus.stats();
    // 10 + 10 waiting, and the timer's firings until its delivery under way was the last.
    let fired = stats.ingested - 20;
    assert!(fired >= 1, "{stats:?}");
    assert_eq!(log.len() as u64, 20 + fired, "every event delivered");
    assert_eq!(
        (stats.dispatched, stats.cancelled, stats.dropped),
        (20 + fired, 0, 0)
    );
    assert_balanced(&stats, 20 + fired);
}

#[tokio::test(start_paused = true)]
async fn a_short_shutdown_accounts_for_every_event_three_producers_held() {
    let log = Log::default();
    let (nexus, _timer, _upstream) = fed_by_three(&log).await;
    let report = nexus.shutdown(Duration::from_millis(200)).await.unwrap();
    assert!(!report.completed);
    assert!(
        !report.interrupted.is_empty(),
        "the deadline cut a dispatch short"
    );
    // Each event the channel and the boundary held is dispatched, cut short or handed back:
    // exactly one of them.
    let dispatched = log
        .lines()
        .iter()
        .map(|l| l.strip_prefix("done:").unwrap().parse::<u64>().unwrap())
        .collect::<Vec<_>>();
    let mut accounted: Vec<u64> = dispatched
        .iter()
        .chain(&report.interrupted)
        .copied()
        .chain(report.undelivered.iter().map(|e| e.id))
        .filter(|id| *id < 1_000) // the timer's events are numbered from 1,001
        .collect();
    accounted.sort_unstable();
    let held: Vec<u64> = (1..=10).chain(101..=110).collect();
    assert_eq!(accounted, held, "{report:?}");
    let stats = nexus.stats();
    assert_eq!(stats.cancelled, report.interrupted.len() as u64);
    assert_eq!(stats.dispatched, dispatched.len() as u64);
    assert_balanced(&stats, stats.dispatched + stats.cancelled);
}

// ----- 2. a cancelled ingest --------------------------------------------------------------

/// A nexus whose handler for type 1 waits three times, queueing a secondary event of type 2
/// before each wait; type 2 always fails. Dead letters are recorded.
fn waiting_nexus(
    letters: &Arc<Mutex<Vec<(u64, String)>>>,
    policy_dead_letter: bool,
) -> AsyncEventNexus {
    let sink = letters.clone();
    let policy = if policy_dead_letter {
        ErrorPolicy::dead_letter(move |event, error| {
            sink.lock().unwrap().push((event.id, error.to_string()));
        })
    } else {
        ErrorPolicy::Propagate
    };
    let nexus = AsyncEventNexus::builder().error_policy(policy).build();
    nexus
        .add_handler(1, |e: Event, q: EventQueue| async move {
            for step in 1..=3 {
                q.put(Event::new(e.id * 10 + step, 2, 0, ())).unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .unwrap();
    nexus
        .add_handler(2, |e: Event, _q: EventQueue| {
            Err(format!("secondary {} fails", e.id))
        })
        .unwrap();
    nexus
        .add_handler(3, |_e: Event, _q: EventQueue| {})
        .unwrap();
    nexus
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_ingest_is_counted_and_its_secondary_events_never_reach_the_next_caller() {
    // Cancelled in each of the handler's three waits.
    for waits in 1..=3u64 {
        let letters = Arc::default();
        let nexus = waiting_nexus(&letters, false);
        let _task = running(&nexus).await;
        let cut = Duration::from_millis(10 * waits - 5);
        let outcome = tokio::time::timeout(cut, nexus.ingest(Event::new(1, 1, 0, ()))).await;
        assert!(outcome.is_err(), "cancelled in wait {waits}");
        let stats = nexus.stats();
        assert_eq!(stats.cancelled, 1, "{stats:?}");
        assert_eq!(
            stats.queue_depth, waits as usize,
            "its secondary events wait"
        );
        assert_balanced(&stats, 1 + waits);

        // The next, unrelated caller gets its own outcome, not the secondary events' errors;
        // they are dispatched first, their failures going to the error policy.
        nexus.ingest(Event::new(7, 3, 0, ())).await.unwrap();
        let stats = nexus.stats();
        assert_eq!(
            (stats.failed, stats.dispatched, stats.queue_depth),
            (waits, 1, 0),
            "{stats:?}"
        );
        assert_balanced(&stats, 2 + waits);
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_ingest_gives_its_event_to_the_dead_letter_handler() {
    let letters: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let nexus = waiting_nexus(&letters, true);
    let _task = running(&nexus).await;
    let _ = tokio::time::timeout(
        Duration::from_millis(15),
        nexus.ingest(Event::new(1, 1, 0, ())),
    )
    .await
    .unwrap_err();
    let got = letters.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, 1);
    assert_eq!(
        got[0].1,
        "event 1 of type 1 cancelled: the ingest dispatching it was dropped before it was over"
    );
}

#[tokio::test(start_paused = true)]
async fn an_ingest_cancelled_before_it_ran_or_while_waiting_for_the_gate_is_counted() {
    let letters = Arc::default();
    let nexus = waiting_nexus(&letters, false);
    let _task = running(&nexus).await;

    // Dropped before it was ever polled.
    drop(nexus.ingest(Event::new(1, 3, 0, ())));
    assert_balanced(&nexus.stats(), 1);
    assert_eq!(nexus.stats().cancelled, 1);

    // Dropped while another dispatch holds the gate.
    let holder = {
        let nexus = nexus.clone();
        tokio::spawn(async move { nexus.ingest(Event::new(2, 1, 0, ())).await })
    };
    tokio::task::yield_now().await; // the holder is in its handler's first wait
    let waiting = tokio::time::timeout(
        Duration::from_millis(5),
        nexus.ingest(Event::new(3, 3, 0, ())),
    );
    assert!(waiting.await.is_err());
    let _ = holder.await.unwrap(); // its secondary events fail, under Propagate
    let stats = nexus.stats();
    assert_eq!((stats.cancelled, stats.dispatched, stats.failed), (2, 1, 3));
    assert_balanced(&stats, 3 + 3);
}

/// A payload that counts its drops.
#[derive(Debug)]
struct CountsDrops(Arc<AtomicUsize>);

impl Drop for CountsDrops {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Every event an `ingest` takes is dropped once, however the ingest ends: refused by a nexus
/// not running, dispatched, dropped before it ran, dropped while it waited for the gate, dropped
/// while its handler waited; with the error returned to the caller and with a dead-letter
/// handler. None is kept past the end of its ingest.
#[tokio::test(start_paused = true)]
async fn every_event_an_ingest_takes_is_dropped_once_however_the_ingest_ends() {
    for dead_letter in [false, true] {
        let drops = Arc::new(AtomicUsize::new(0));
        let event = |id: u64, event_type: i64| {
            Event::new(
                id,
                event_type,
                0,
                nexus::Payload::value(CountsDrops(drops.clone())),
            )
        };
        let letters = Arc::new(AtomicUsize::new(0));
        let policy = if dead_letter {
            let letters = letters.clone();
            ErrorPolicy::dead_letter(move |_event, _error| {
                letters.fetch_add(1, Ordering::SeqCst);
            })
        } else {
            ErrorPolicy::Propagate
        };
        let nexus = AsyncEventNexus::builder().error_policy(policy).build();
        nexus
            .add_handler(1, |e: Event, _q: EventQueue| async move {
                let e = e; // the whole event, kept across the wait
                tokio::time::sleep(Duration::from_millis(30)).await;
                drop(e);
            })
            .unwrap();
        nexus
            .add_handler(3, |_e: Event, _q: EventQueue| {})
            .unwrap();

        let refused = nexus.ingest(event(1, 3)).await;
        assert!(
            matches!(refused, Err(NexusError::NotRunning { .. })),
            "{refused:?}"
        );
        drop(refused);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "refused, then dropped");

        let task = running(&nexus).await;
        nexus.ingest(event(2, 3)).await.unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 2, "dispatched");

        drop(nexus.ingest(event(3, 3)));
        assert_eq!(drops.load(Ordering::SeqCst), 3, "dropped before it ran");

        let holder = {
            let nexus = nexus.clone();
            let event = event(4, 1);
            tokio::spawn(async move { nexus.ingest(event).await })
        };
        tokio::task::yield_now().await; // the holder is in its handler's first wait
        let waiting = tokio::time::timeout(Duration::from_millis(5), nexus.ingest(event(5, 3)));
        assert!(waiting.await.is_err());
        assert_eq!(
            drops.load(Ordering::SeqCst),
            4,
            "dropped while waiting for the gate"
        );
        let _ = holder.await.unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 5, "the holder's, dispatched");

        let in_handler = tokio::time::timeout(Duration::from_millis(5), nexus.ingest(event(6, 1)));
        assert!(in_handler.await.is_err());
        assert_eq!(
            drops.load(Ordering::SeqCst),
            6,
            "dropped while its handler waited"
        );

        nexus.stop();
        let _ = task.await;
        drop(nexus);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            6,
            "nothing more with the nexus"
        );
        let cancelled = if dead_letter { 3 } else { 0 };
        assert_eq!(letters.load(Ordering::SeqCst), cancelled);
    }
}

// ----- 3. a panic in the drop of a handler's future -----------------------------------------

/// A future that is pending `polls` times (waking itself), then ready, and panics when dropped.
struct PanicsOnDrop {
    polls: usize,
}

impl Future for PanicsOnDrop {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.polls == 0 {
            return Poll::Ready(());
        }
        self.polls -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("dropped");
    }
}

/// Checks that this thread is not left marked as dispatching: an `ingest` that finds the gate
/// held by another task waits for it, dispatches its own event and gets its own outcome.
async fn the_next_contended_ingest_waits_its_turn(nexus: &AsyncEventNexus, log: &Log) {
    let holder = {
        let nexus = nexus.clone();
        tokio::spawn(async move { nexus.ingest(Event::new(100, 9, 0, ())).await })
    };
    tokio::task::yield_now().await; // the holder waits in its handler, holding the gate
    nexus.ingest(Event::new(101, 8, 0, ())).await.unwrap();
    assert_eq!(log.lines(), ["held:100", "own:101"], "dispatched in turn");
    holder.await.unwrap().unwrap();
}

fn with_probe(nexus: &AsyncEventNexus, log: &Log) {
    nexus.add_handler(9, slow_handler(log, "held", 5)).unwrap();
    nexus.add_handler(8, log.handler("own")).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_drop_of_a_finished_call_is_that_handlers_failure() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    with_probe(&nexus, &log);
    nexus
        .add_consumer(
            1,
            Handler::new(|_e: Event, _q: EventQueue| PanicsOnDrop { polls: 2 }).named("bomb"),
        )
        .unwrap();
    let _task = running(&nexus).await;
    let err = nexus.ingest(Event::new(1, 1, 0, ())).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "handler bomb panicked on event 1 of type 1: dropped"
    );
    the_next_contended_ingest_waits_its_turn(&nexus, &log).await;
    let stats = nexus.stats();
    assert_eq!((stats.failed, stats.dispatched), (1, 2));
    assert_balanced(&stats, 3);
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_drop_of_a_timed_out_call_stays_inside_the_nexus() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    with_probe(&nexus, &log);
    nexus
        .add_consumer(
            1,
            Handler::new(|_e: Event, _q: EventQueue| async {
                let _bomb = PanicsOnDrop { polls: 0 };
                tokio::time::sleep(Duration::from_secs(60)).await;
            })
            .named("slow bomb")
            .timeout(Duration::from_secs(1)),
        )
        .unwrap();
    let _task = running(&nexus).await;
    let err = nexus.ingest(Event::new(1, 1, 0, ())).await.unwrap_err();
    assert!(matches!(err, NexusError::HandlerTimedOut { .. }), "{err}");
    the_next_contended_ingest_waits_its_turn(&nexus, &log).await;
    assert_balanced(&nexus.stats(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_drop_of_a_cancelled_call_stays_inside_the_nexus() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    with_probe(&nexus, &log);
    nexus
        .add_handler(1, |_e: Event, _q: EventQueue| async {
            let _bomb = PanicsOnDrop { polls: 0 };
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
        .unwrap();
    let _task = running(&nexus).await;
    let cancelled = tokio::time::timeout(
        Duration::from_millis(1),
        nexus.ingest(Event::new(1, 1, 0, ())),
    );
    assert!(cancelled.await.is_err());
    the_next_contended_ingest_waits_its_turn(&nexus, &log).await;
    let stats = nexus.stats();
    assert_eq!(stats.cancelled, 1);
    assert_balanced(&stats, 3);
}

#[tokio::test(start_paused = true)]
async fn panics_in_filters_and_consumers_are_their_failures_and_stay_inside() {
    /// A consumer whose `handle` panics after a wait.
    struct Faulty;

    #[async_trait]
    impl nexus::EventConsumer for Faulty {
        async fn handle(&self, event: Event, _queue: EventQueue) -> Result<(), nexus::BoxError> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            panic!("consumer broke on {}", event.id);
        }
    }

    let nexus = AsyncEventNexus::builder()
        .error_policy(ErrorPolicy::Continue)
        .build();
    let log = Log::default();
    with_probe(&nexus, &log);
    // Panics at once on type 3.
    nexus.add_filter(|e: &Event, _q: &EventQueue| {
        assert!(e.event_type != nexus::EventType::Int(3), "filter broke");
        false
    });
    // Panics after a wait on type 4; on type 6, what its future holds panics when dropped as
    // the future finishes. (Both at once would be a panic while unwinding, which Rust itself
    // turns into an abort of the process.)
    nexus.add_filter(|e: &Event, _q: &EventQueue| {
        let broken = e.event_type == nexus::EventType::Int(4);
        let bomb = (e.event_type == nexus::EventType::Int(6)).then(|| PanicsOnDrop { polls: 0 });
        async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert!(!broken, "async filter broke");
            drop(bomb);
            false
        }
    });
    nexus.add_consumer(5, Faulty).unwrap();
    let _task = running(&nexus).await;
    for (id, t) in [(1, 3), (2, 4), (3, 5), (4, 6)] {
        nexus.ingest(Event::new(id, t, 0, ())).await.unwrap();
    }
    the_next_contended_ingest_waits_its_turn(&nexus, &log).await;
    let stats = nexus.stats();
    assert_eq!((stats.failed, stats.dispatched), (4, 2), "{stats:?}");
    assert_balanced(&stats, 6);
}

// ----- 4. cycles of any length ------------------------------------------------------------

/// `count` running nexuses; the handler of each (type 1) ingests its event into the one `next`
/// names (`None`: it stops there), or, when that is its own nexus, a new event of type 3; and
/// logs what that ingest returned. Type 3 is logged as `again:<nexus>:<id>`.
async fn linked(
    count: usize,
    next: impl Fn(usize) -> Option<usize>,
    log: &Log,
) -> (
    Vec<AsyncEventNexus>,
    Vec<tokio::task::JoinHandle<Result<(), NexusError>>>,
) {
    let nexuses: Vec<AsyncEventNexus> = (0..count).map(|_| AsyncEventNexus::new()).collect();
    for (at, nexus) in nexuses.iter().enumerate() {
        let target = next(at).map(|to| (to, nexuses[to].downgrade()));
        let l = log.clone();
        nexus
            .add_handler(1, move |e: Event, _q: EventQueue| {
                let target = target
                    .as_ref()
                    .and_then(|(to, weak)| Some((*to, weak.upgrade()?)));
                let l = l.clone();
                async move {
                    l.push(format!("{at}"));
                    if let Some((to, target)) = target {
                        let event = if to == at {
                            Event::new(e.id + 1000, 3, 0, ())
                        } else {
                            e
                        };
                        match target.ingest(event).await {
                            Ok(()) => {}
                            Err(NexusError::Cycle { .. }) => l.push(format!("cycle at {at}")),
                            Err(err) => l.push(format!("{err}")),
                        }
                    }
                }
            })
            .unwrap();
        let l = log.clone();
        nexus
            .add_handler(3, move |e: Event, _q: EventQueue| {
                l.push(format!("again:{at}:{}", e.id));
            })
            .unwrap();
    }
    let mut tasks = Vec::new();
    for nexus in &nexuses {
        tasks.push(running(nexus).await);
    }
    (nexuses, tasks)
}

#[tokio::test(start_paused = true)]
async fn rings_entered_through_a_chain_of_eight_are_refused_as_cycles() {
    for ring in [9, 12] {
        let log = Log::default();
        // 0..8 is the chain, 8..8+ring the ring, whose last member ingests into its first.
        let last = 7 + ring;
        let (nexuses, _tasks) = linked(
            8 + ring,
            |at| Some(if at == last { 8 } else { at + 1 }),
            &log,
        )
        .await;
        tokio::time::timeout(
            Duration::from_secs(10),
            nexuses[0].ingest(Event::new(1, 1, 0, ())),
        )
        .await
        .expect("a cycle never hangs")
        .unwrap();
        let lines = log.lines();
        assert_eq!(lines.len(), 8 + ring + 1, "{lines:?}");
        assert_eq!(lines.last().unwrap(), &format!("cycle at {last}"));
        let returned: u64 = nexuses.iter().map(|n| n.stats().returned).sum();
        assert_eq!(returned, 1, "the refused event was handed back");
    }
}

#[tokio::test(start_paused = true)]
async fn a_handler_nine_deep_that_ingests_into_its_own_nexus_is_queued() {
    let log = Log::default();
    // 0..8 each ingest into the next; the ninth (depth 9) ingests into itself.
    let (nexuses, _tasks) = linked(9, |at| Some(if at == 8 { 8 } else { at + 1 }), &log).await;
    tokio::time::timeout(
        Duration::from_secs(10),
        nexuses[0].ingest(Event::new(1, 1, 0, ())),
    )
    .await
    .expect("re-entry never hangs")
    .unwrap();
    let expected: Vec<String> = (0..9)
        .map(|at| at.to_string())
        .chain(["again:8:1001".to_owned()])
        .collect();
    assert_eq!(log.lines(), expected);
    assert_balanced(&nexuses[8].stats(), 2);
}

// ----- 5. blocking sends on a runtime thread ------------------------------------------------

#[test]
fn a_blocking_send_on_a_runtime_thread_is_refused_not_hung() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = runtime.block_on(async {
            let (producer, sender) = ChannelProducer::new(1);
            sender.try_send(Event::new(1, 1, 0, ())).unwrap(); // full
            let refused = sender.blocking_send(Event::new(2, 1, 0, ()));
            drop(producer);
            refused
        });
        let _ = done_tx.send(outcome);
    });
    let outcome = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("blocking_send on a runtime thread hung");
    let err = outcome.unwrap_err();
    assert!(matches!(err, NexusError::BlockingInRuntime { .. }), "{err}");
    assert_eq!(
        err.into_event().map(|e| e.id),
        Some(2),
        "the event is handed back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_send_from_spawn_blocking_waits_for_room() {
    let nexus = AsyncEventNexus::new();
    let got = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    nexus
        .add_handler(1, move |_e: Event, _q: EventQueue| {
            g.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let (producer, sender) = ChannelProducer::new(1);
    nexus.add_producer(producer).unwrap();
    let task = nexus.start().unwrap();
    tokio::task::spawn_blocking(move || {
        for id in 1..=50 {
            sender.blocking_send(Event::new(id, 1, 0, ())).unwrap();
        }
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while got.load(Ordering::SeqCst) < 50 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
    nexus.stop();
    task.await.unwrap().unwrap();
}

// ----- 6. one rule for refused events from every source -------------------------------------

#[tokio::test(start_paused = true)]
async fn a_timers_unhandled_event_ends_the_loop_with_its_error_under_propagate() {
    let nexus = AsyncEventNexus::new();
    nexus
        .add_handler(1, |_e: Event, _q: EventQueue| {})
        .unwrap();
    nexus
        .add_producer(Timer::new(Duration::from_millis(10), TimerKind::Ongoing, 98).unwrap())
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), nexus.loop_forever())
        .await
        .expect("the loop ends")
        .unwrap_err();
    assert!(matches!(err, NexusError::UnhandledEvent { .. }), "{err}");
    assert_eq!(nexus.stats().unhandled, 1);
}

#[tokio::test(start_paused = true)]
async fn a_timer_goes_on_after_a_refused_event_under_continue() {
    let nexus = AsyncEventNexus::builder()
        .error_policy(ErrorPolicy::Continue)
        .build();
    nexus
        .add_producer(Timer::new(Duration::from_millis(10), TimerKind::CountUp(5), 98).unwrap())
        .unwrap();
    nexus.loop_until_exhausted().await.unwrap();
    let stats = nexus.stats();
    assert_eq!(
        stats.unhandled, 5,
        "every firing reached the nexus: {stats:?}"
    );
    assert_balanced(&stats, 5);
}

#[tokio::test(start_paused = true)]
async fn a_channel_producers_failed_event_ends_the_loop_under_propagate() {
    let nexus = AsyncEventNexus::new();
    nexus
        .add_handler(1, |_e: Event, _q: EventQueue| {})
        .unwrap();
    let (producer, sender) = ChannelProducer::new(8);
    nexus.add_producer(producer).unwrap();
    sender.send(Event::new(1, 1, 0, ())).await.unwrap();
    sender.send(Event::new(2, 99, 0, ())).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), nexus.loop_forever())
        .await
        .expect("the loop ends")
        .unwrap_err();
    assert!(
        matches!(&err, NexusError::UnhandledEvent { event } if event.id == 2),
        "{err}"
    );
}

/// A converter of events from "the network": its failures must not end the loop.
struct Remote(Vec<Event>);

impl EventSource for Remote {
    fn failures_end_loop(&self) -> bool {
        false
    }
}

#[async_trait]
impl SimpleEventConverter for Remote {
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        self.0.pop().ok_or(NexusError::NoMoreEvents)
    }
}

#[tokio::test(start_paused = true)]
async fn a_remote_sources_failed_events_are_counted_and_skipped() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    nexus.add_handler(1, log.handler("got")).unwrap();
    let events = vec![
        Event::new(3, 1, 0, ()),
        Event::new(2, 42, 0, "nobody handles this"),
        Event::new(1, 1, 0, ()),
    ];
    nexus.register(Remote(events)).unwrap();
    nexus.loop_until_exhausted().await.unwrap();
    assert_eq!(log.lines(), ["got:1", "got:3"]);
    let stats = nexus.stats();
    assert_eq!(
        stats.per_source_failed,
        [(std::any::type_name::<Remote>().to_owned(), 1)]
    );
    assert_balanced(&stats, 3);
}

// ----- 7. a peer on the network cannot stop a nexus -----------------------------------------

#[cfg(feature = "zmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhandled_event_from_a_zeromq_peer_does_not_stop_the_nexus() {
    use nexus::sources::zmq::ZmqEventReceiver;
    use nexus::sources::zmq::{self, Socket};
    let mut pull = zmq::PullSocket::new();
    let endpoint = pull.bind("tcp://127.0.0.1:0").await.unwrap();
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    nexus.add_handler(1, log.handler("got")).unwrap();
    nexus.register(ZmqEventReceiver::new(pull)).unwrap();
    let running = nexus.start().unwrap();
    let mut push = zmq::PushSocket::new();
    push.connect(&endpoint.to_string()).await.unwrap();
    for message in [
        r#"{"id": 1, "type": 1, "priority": 0, "payload": "good"}"#,
        r#"{"id": 2, "type": 42, "priority": 0, "payload": "nobody handles type 42"}"#,
        r#"{"id": 3, "type": 1, "priority": 0, "payload": "good"}"#,
    ] {
        zmq::SocketSend::send(&mut push, message.to_owned().into())
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while log.len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the good events arrive");
    assert_eq!(
        nexus.state(),
        nexus::LoopState::Looping,
        "the nexus keeps running"
    );
    let stats = nexus.stats();
    assert_eq!(stats.unhandled, 1);
    assert_eq!(
        stats.per_source_failed,
        [("ZmqEventReceiver".to_owned(), 1)]
    );
    nexus.stop();
    running.await.unwrap().unwrap();
}

/// A producer that only holds its link: the test delivers through it by hand.
struct Hand(nexus::ProducerLink);

impl EventSource for Hand {}

impl nexus::EventProducer for Hand {
    fn link(&self) -> &nexus::ProducerLink {
        &self.0
    }
}

/// A producer's `next` that panics in the middle of a run unwinds to the producer; the nexus
/// has released its gate, the events before the panic were dispatched and counted, and it
/// takes the next events as before.
#[tokio::test]
async fn a_run_whose_next_panics_leaves_the_nexus_as_after_the_event_before() {
    let nexus = AsyncEventNexus::new();
    let probe = nexus::testing::Probe::new();
    nexus.add_handler(1, probe.handler("seen")).unwrap();
    let link = nexus::ProducerLink::default();
    nexus.add_producer(Hand(link.clone())).unwrap();
    let _task = running(&nexus).await;
    let panicked = tokio::spawn(async move {
        let mut left = 0..5_u64;
        link.delivery()
            .distribute_run(|| match left.next() {
                Some(3) => panic!("the producer's own bug"),
                id => id.map(|id| Event::new(id, 1, 0, ())),
            })
            .await
    })
    .await
    .unwrap_err();
    assert!(panicked.is_panic());
    crate::support::assert_going_on_after_a_panic_at_3(&nexus, &probe).await;
}

/// A run dropped while one of its events waits in its handler: that event is cancelled and
/// counted, the ones before it were dispatched, and those after it were never taken from the
/// producer, which still holds them.
#[tokio::test(start_paused = true)]
async fn a_run_dropped_midway_holds_only_the_event_it_was_dispatching() {
    let nexus = AsyncEventNexus::new();
    let probe = nexus::testing::Probe::new();
    let stuck = |e: Event, _q: EventQueue| async move {
        if e.id == 1 {
            std::future::pending::<()>().await;
        }
        Ok::<(), NexusError>(())
    };
    nexus.add_handler(1, probe.wrap("seen", stuck)).unwrap();
    let link = nexus::ProducerLink::default();
    nexus.add_producer(Hand(link.clone())).unwrap();
    let _task = running(&nexus).await;
    let mut waiting: std::collections::VecDeque<Event> =
        (0..5).map(|id| Event::new(id, 1, 0, ())).collect();
    let delivery = link.delivery();
    let run = delivery.distribute_run(|| waiting.pop_front());
    assert!(
        tokio::time::timeout(Duration::from_secs(1), run)
            .await
            .is_err(),
        "the run should wait on event 1"
    );
    drop(delivery);
    let left: Vec<u64> = waiting.iter().map(|e| e.id).collect();
    assert_eq!(
        left,
        [2, 3, 4],
        "taken from the producer only as their turn came"
    );
    assert_eq!(probe.ids("seen"), [0, 1]);
    let stats = nexus.stats();
    assert_eq!((stats.dispatched, stats.cancelled), (1, 1), "{stats:?}");
    assert_eq!(link.delivered(), 2);
    assert_balanced(&stats, 2);
}

/// An `ingest` dropped while a fanout's handler waits (the fanout alone for its type), or one of
/// several handlers in `multiple` mode: its event is cancelled, the handlers after the waiting
/// one are not called for it, and the next events go through whole.
#[tokio::test(start_paused = true)]
async fn an_ingest_cancelled_while_a_fanouts_or_one_of_several_handlers_waits_is_counted() {
    let nexus = AsyncEventNexus::builder().multiple(true).build();
    let log = Log::default();
    // Waits a minute on odd ids.
    let sleeps = |log: &Log| {
        let log = log.clone();
        Handler::new(move |e: Event, _q: EventQueue| {
            let log = log.clone();
            async move {
                if e.id % 2 == 1 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                log.push(format!("sleeps:{}", e.id));
            }
        })
    };
    let fanout = nexus::bus::EventFanout::new();
    fanout.register(Handler::new(log.handler("a")));
    fanout.register(sleeps(&log));
    fanout.register(Handler::new(log.handler("c")));
    nexus.add_consumer(1, fanout).unwrap();
    nexus
        .add_consumer(2, Handler::new(log.handler("x")))
        .unwrap();
    nexus.add_consumer(2, sleeps(&log)).unwrap();
    nexus
        .add_consumer(2, Handler::new(log.handler("z")))
        .unwrap();
    let _task = running(&nexus).await;

    for (id, event_type) in [(1, 1), (3, 2)] {
        let ingest = nexus.ingest(Event::new(id, event_type, 0, ()));
        let cut = tokio::time::timeout(Duration::from_secs(1), ingest).await;
        assert!(cut.is_err(), "event {id} should have waited");
    }
    nexus.ingest(Event::new(2, 1, 0, ())).await.unwrap();
    nexus.ingest(Event::new(4, 2, 0, ())).await.unwrap();
    assert_eq!(
        log.lines(),
        [
            "a:1", "x:3", "a:2", "sleeps:2", "c:2", "x:4", "sleeps:4", "z:4"
        ]
    );
    let stats = nexus.stats();
    assert_eq!((stats.cancelled, stats.dispatched), (2, 2));
    assert_balanced(&stats, 4);
}

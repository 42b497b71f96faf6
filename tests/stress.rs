//! A million events from eight producers (four tasks ingesting, two of them by `ingest` and two
//! by `ingest_all` in batches of 1 to 64, and four threads sending through a channel producer),
//! handlers that fail or panic at random and ingests cancelled at random (a fixed seed), a stop
//! in the middle, then a shutdown that delivers what the channel producer kept: every event is
//! accounted for exactly once, and nothing hangs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use nexus::sources::ChannelProducer;
use nexus::{AsyncEventNexus, ErrorPolicy, Event, EventQueue, NexusError};

const PRODUCERS: u64 = 8;
const PER_PRODUCER: u64 = 125_000;
const SEED: u64 = 0x5eed;

/// A fixed pseudo-random draw per event id.
fn draw(id: u64) -> u64 {
    fastrand::Rng::with_seed(SEED ^ id).u64(..)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_events_are_each_accounted_for_once() {
    // Panics are part of the test; keep their messages off the output.
    std::panic::set_hook(Box::new(|_| {}));

    let nexus = AsyncEventNexus::builder()
        .error_policy(ErrorPolicy::Continue)
        .build();
    nexus.add_filter(|e: &Event, _q: &EventQueue| draw(e.id).is_multiple_of(31));
    nexus
        .add_handler(0..=5, |e: Event, _q: EventQueue| {
            let d = draw(e.id);
            if d.is_multiple_of(101) {
                panic!("random panic on {}", e.id);
            }
            if d.is_multiple_of(13) {
                return Err("random failure");
            }
            Ok(())
        })
        .unwrap();
    // Type 6 has no handler: those events are unhandled.
    let (producer, sender) = ChannelProducer::new(1024);
    nexus.add_producer(producer).unwrap();
    let running = nexus.start().unwrap();

    let sent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let cancelled = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    // Events a batch refused by the stopped nexus never took: handed back where they were.
    let kept = Arc::new(AtomicU64::new(0));
    let outcome = |result: Result<(), NexusError>, sent: &AtomicU64, refused: &AtomicU64| {
        sent.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {}
            Err(NexusError::NotRunning { .. }) => {
                refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(other) => panic!("unexpected error under Continue: {other}"),
        }
    };

    let mut tasks = Vec::new();
    for p in 0..PRODUCERS / 4 {
        let (nexus, sent, refused) = (nexus.clone(), sent.clone(), refused.clone());
        let cancelled = cancelled.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..PER_PRODUCER {
                let id = p * PER_PRODUCER + n;
                let ingest = nexus.ingest(Event::new(id, (id % 7) as i64, 0, ()));
                if draw(id) % 17 == 5 {
                    // Polled once, then dropped if it has to wait (for the gate): cancelled.
                    match ingest.now_or_never() {
                        Some(result) => outcome(result, &sent, &refused),
                        None => {
                            sent.fetch_add(1, Ordering::Relaxed);
                            cancelled.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                } else {
                    outcome(ingest.await, &sent, &refused);
                }
            }
        }));
    }
    for p in PRODUCERS / 4..PRODUCERS / 2 {
        let (nexus, sent, refused) = (nexus.clone(), sent.clone(), refused.clone());
        let (cancelled, kept) = (cancelled.clone(), kept.clone());
        tasks.push(tokio::spawn(async move {
            let (mut next, end) = (p * PER_PRODUCER, (p + 1) * PER_PRODUCER);
            let mut batch = VecDeque::new();
            while next < end || !batch.is_empty() {
                let size = 1 + draw(next) % 64;
                while (batch.len() as u64) < size && next < end {
                    batch.push_back(Event::new(next, (next % 7) as i64, 0, ()));
                    sent.fetch_add(1, Ordering::Relaxed);
                    next += 1;
                }
                let mut events = std::iter::from_fn(|| batch.pop_front());
                let all = nexus.ingest_all(&mut events);
                let result = if draw(next) % 17 == 5 {
                    // Polled once, then dropped if it has to wait (for the gate): the event it
                    // was to dispatch is cancelled, and those after it stay in the batch.
                    match all.now_or_never() {
                        Some(result) => result,
                        None => {
                            cancelled.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                } else {
                    all.await
                };
                match result {
                    Ok(()) => assert!(batch.is_empty(), "a batch that ended well took all"),
                    Err(NexusError::NotRunning { .. }) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        kept.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        batch.clear();
                    }
                    Err(other) => panic!("unexpected error under Continue: {other}"),
                }
            }
        }));
    }
    let mut threads = Vec::new();
    for p in PRODUCERS / 2..PRODUCERS {
        let (sender, sent, closed) = (sender.clone(), sent.clone(), closed.clone());
        threads.push(std::thread::spawn(move || {
            for n in 0..PER_PRODUCER {
                let id = p * PER_PRODUCER + n;
                match sender.blocking_send(Event::new(id, (id % 7) as i64, 0, ())) {
                    Ok(()) => {}
                    // The nexus has stopped: the producer takes no more, handing the event back.
                    Err(NexusError::Closed { event, .. }) => {
                        assert_eq!(event.id, id);
                        closed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(other) => panic!("unexpected error from a send: {other}"),
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    drop(sender);

    // Stop in the middle.
    tokio::time::timeout(Duration::from_secs(60), async {
        while sent.load(Ordering::Relaxed) < PRODUCERS * PER_PRODUCER / 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("producers make progress");
    nexus.stop();

    tokio::time::timeout(Duration::from_secs(60), async {
        for task in tasks {
            task.await.unwrap();
        }
        running.await.unwrap().unwrap();
    })
    .await
    .expect("no hang");
    for thread in threads {
        thread.join().unwrap();
    }
    // The channel producer kept what the threads sent before the stop and had not delivered:
    // a shutdown delivers it.
    let total = PRODUCERS * PER_PRODUCER;
    let report = nexus.shutdown(Duration::from_secs(60)).await.unwrap();
    assert!(report.completed, "{report:?}");
    let _ = std::panic::take_hook();

    let stats = nexus.stats();
    let (refused, closed, kept) = (
        refused.load(Ordering::Relaxed),
        closed.load(Ordering::Relaxed),
        kept.load(Ordering::Relaxed),
    );
    assert_eq!(sent.load(Ordering::Relaxed), total);
    assert_eq!(
        stats.dispatched
            + stats.filtered
            + stats.unhandled
            + stats.failed
            + stats.cancelled
            + refused
            + closed
            + kept
            + stats.dropped,
        total,
        "every event ended one way: handled, or handed back to its task or thread: {stats:?}"
    );
    assert_eq!(
        stats.dropped, 0,
        "the shutdown delivered what the producer kept"
    );
    // Arrived: every ingest, refused or not, and every event the producer delivered (one the
    // nexus refused as it stopped arrives again when the shutdown delivers it).
    assert!(stats.ingested >= total - closed - kept, "{stats:?}");
    assert!(stats.balanced(), "{stats:?}");
    assert_eq!(stats.cancelled, cancelled.load(Ordering::Relaxed));
    assert!(
        stats.cancelled > 0,
        "some ingests were cancelled: {stats:?}"
    );
    // Refused: the tasks' own ingests after the stop, and one the channel producer kept.
    assert!(stats.returned >= refused, "{stats:?}");
    assert!(
        matches!(&stats.per_source[..], [(name, delivered)]
            if name == "ChannelProducer" && *delivered >= total / 2 - closed),
        "{stats:?}"
    );
    assert!(
        refused + closed > 0 && stats.dispatched > 0,
        "stopped in the middle: {stats:?}"
    );
    assert!(
        stats.failed > 0 && stats.filtered > 0 && stats.unhandled > 0,
        "{stats:?}"
    );
    assert_eq!(stats.queue_depth, 0);
}

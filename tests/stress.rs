//! A million events from eight producers (four tasks ingesting, four threads sending through a
//! channel producer), handlers that fail or panic at random and ingests cancelled at random (a
//! fixed seed), and a stop in the middle: every event is accounted for exactly once, and nothing
//! hangs.

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
    for p in 0..PRODUCERS / 2 {
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
    let mut threads = Vec::new();
    for p in PRODUCERS / 2..PRODUCERS {
        let (sender, sent) = (sender.clone(), sent.clone());
        threads.push(std::thread::spawn(move || {
            for n in 0..PER_PRODUCER {
                let id = p * PER_PRODUCER + n;
                sender
                    .blocking_send(Event::new(id, (id % 7) as i64, 0, ()))
                    .unwrap();
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
    // The channel producer hands on (or has refused) what the threads sent.
    let total = PRODUCERS * PER_PRODUCER;
    tokio::time::timeout(Duration::from_secs(60), async {
        while nexus.stats().ingested < total {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the channel producer drains");
    let _ = std::panic::take_hook();

    let stats = nexus.stats();
    assert_eq!(sent.load(Ordering::Relaxed), total);
    assert_eq!(stats.ingested, total, "{stats:?}");
    assert_eq!(
        stats.dispatched
            + stats.filtered
            + stats.unhandled
            + stats.failed
            + stats.returned
            + stats.cancelled,
        total,
        "every event counted once: {stats:?}"
    );
    assert!(stats.balanced(), "{stats:?}");
    assert_eq!(stats.cancelled, cancelled.load(Ordering::Relaxed));
    assert!(
        stats.cancelled > 0,
        "some ingests were cancelled: {stats:?}"
    );
    // Refused: the tasks' own ingests after the stop, and the channel producer's.
    assert!(stats.returned >= refused.load(Ordering::Relaxed));
    assert_eq!(
        stats.per_source,
        [("ChannelProducer".to_owned(), total / 2)]
    );
    assert!(
        stats.returned > 0 && stats.dispatched > 0,
        "stopped in the middle: {stats:?}"
    );
    assert!(
        stats.failed > 0 && stats.filtered > 0 && stats.unhandled > 0,
        "{stats:?}"
    );
    assert_eq!(stats.queue_depth, 0);
}

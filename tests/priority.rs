//! Priority honoured where events wait: a `ChannelProducer` and an `AsyncEventBoundary` made
//! `with_priority` deliver the most urgent event first (lowest number), equal priorities in the
//! order sent, and age what waits so that no flood of urgent events holds an event back longer
//! than its bound. So does a nexus's secondary queue, when the nexus asks for it.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::running;
use nexus::bus::AsyncEventBoundary;
use nexus::channel::Overflow;
use nexus::sources::{ChannelProducer, EventSender};
use nexus::testing::Probe;
use nexus::{AsyncEventNexus, Event, EventQueue};
use tokio::time::Instant;

const URGENT: i32 = 0;
const LOW: i32 = 9;
const CAPACITY: usize = 64;
/// Each dispatch takes this long (on the paused clock).
const WORK: Duration = Duration::from_millis(1);

/// Where the events wait.
#[derive(Clone, Copy)]
enum Via {
    /// A `ChannelProducer`'s channel.
    Channel,
    /// The lane of an `AsyncEventBoundary` from another nexus.
    Boundary,
}

/// What puts events where they wait: a channel's sender, or the nexus on the far side of a
/// boundary, which sends type 1 across it.
#[derive(Clone)]
enum Feed {
    Channel(EventSender),
    Boundary(AsyncEventNexus),
}

impl Feed {
    /// Sends `event`, waiting for room.
    async fn send(&self, event: Event) {
        match self {
            Feed::Channel(sender) => sender.send(event).await.unwrap(),
            Feed::Boundary(upstream) => upstream.ingest(event).await.unwrap(),
        }
    }
}

/// Runs `$name`, an `async fn(Via)`, with the events waiting in a producer's channel and in a
/// boundary's lane, as `$name::channel` and `$name::boundary`.
macro_rules! where_events_wait {
    ($name:ident) => {
        mod $name {
            #[tokio::test(start_paused = true)]
            async fn channel() {
                super::$name(super::Via::Channel).await
            }

            #[tokio::test(start_paused = true)]
            async fn boundary() {
                super::$name(super::Via::Boundary).await
            }
        }
    };
}

/// A nexus fed through `via`, ranked by priority, whose handler works `WORK` per event and
/// notes when the event with id `watched` was dispatched.
async fn nexus_with(
    via: Via,
    max_wait: Duration,
    watched: u64,
) -> (AsyncEventNexus, Feed, Probe, Arc<Mutex<Option<Instant>>>) {
    let nexus = AsyncEventNexus::new();
    let feed = match via {
        Via::Channel => {
            let (producer, sender) =
                ChannelProducer::with_priority(CAPACITY, Overflow::Wait, max_wait);
            nexus.add_producer(producer).unwrap();
            Feed::Channel(sender)
        }
        Via::Boundary => {
            let boundary = AsyncEventBoundary::with_priority(CAPACITY, max_wait);
            nexus.add_producer(boundary.producer()).unwrap();
            let upstream = AsyncEventNexus::new();
            upstream.add_consumer(1, boundary.handler()).unwrap();
            // Its loop runs on by itself; its handle is not needed.
            drop(running(&upstream).await);
            Feed::Boundary(upstream)
        }
    };
    let (probe, at) = (Probe::new(), Arc::new(Mutex::new(None)));
    let seen = Arc::clone(&at);
    let work = move |e: Event, _q: EventQueue| {
        if e.id == watched {
            *seen.lock().unwrap() = Some(Instant::now());
        }
        async {
            tokio::time::sleep(WORK).await;
            Ok::<(), Infallible>(())
        }
    };
    nexus.add_handler(1, probe.wrap("work", work)).unwrap();
    (nexus, feed, probe, at)
}

/// Ten urgent events, then a low one, then 9,990 urgent ones (the sender waiting for room):
/// when the low one was dispatched, after how long, and at which place.
async fn flood(via: Via, max_wait: Duration) -> (Duration, usize) {
    const LOW_ID: u64 = 10;
    let (nexus, feed, probe, at) = nexus_with(via, max_wait, LOW_ID).await;
    for id in 0..10 {
        feed.send(Event::new(id, 1, URGENT, ())).await;
    }
    feed.send(Event::new(LOW_ID, 1, LOW, ())).await;
    let sent = Instant::now();
    let rest = tokio::spawn(async move {
        for id in 11..10_001 {
            feed.send(Event::new(id, 1, URGENT, ())).await;
        }
    });
    let task = nexus.start().unwrap();
    rest.await.unwrap();
    probe
        .until_count("work", 10_001, Duration::from_secs(60))
        .await;
    nexus.stop();
    task.await.unwrap().unwrap();
    let waited = at.lock().unwrap().expect("the low event was dispatched") - sent;
    let place = probe.ids("work").iter().position(|&id| id == LOW_ID);
    (waited, place.expect("dispatched"))
}

where_events_wait!(
    a_low_priority_event_is_dispatched_within_its_bound_however_many_urgent_ones_come
);
async fn a_low_priority_event_is_dispatched_within_its_bound_however_many_urgent_ones_come(
    via: Via,
) {
    let max_wait = Duration::from_millis(100);
    let (waited, place) = flood(via, max_wait).await;
    // Its bound: `max_wait`, then the overdue events sent before it (at most the capacity).
    let bound = max_wait + WORK * (CAPACITY as u32 + 1);
    assert!(waited <= bound, "waited {waited:?}, bound {bound:?}");
    assert!(
        waited >= max_wait,
        "it went first only once overdue: {waited:?}"
    );
    assert!(place < 200, "dispatched {place}th of 10,001");
}

where_events_wait!(without_aging_the_urgent_flood_goes_first);
async fn without_aging_the_urgent_flood_goes_first(via: Via) {
    // The same flood with a bound longer than the run: the low event is dispatched last, which
    // is what the bound above prevents.
    let (waited, place) = flood(via, Duration::from_secs(3600)).await;
    assert_eq!(place, 10_000);
    assert!(waited >= WORK * 10_000, "{waited:?}");
}

where_events_wait!(urgent_first_and_equal_priorities_in_the_order_sent);
async fn urgent_first_and_equal_priorities_in_the_order_sent(via: Via) {
    let (nexus, feed, probe, _) = nexus_with(via, Duration::from_secs(3600), u64::MAX).await;
    let priorities = [2, 0, 1, 0, 2, 1, 0];
    for (id, priority) in priorities.into_iter().enumerate() {
        feed.send(Event::new(id as u64, 1, priority, ())).await;
    }
    let _task = nexus.start().unwrap();
    probe.until_count("work", 7, Duration::from_secs(10)).await;
    assert_eq!(probe.ids("work"), [1, 3, 6, 2, 5, 0, 4]);
}

where_events_wait!(with_equal_priorities_the_order_is_unchanged);
async fn with_equal_priorities_the_order_is_unchanged(via: Via) {
    let (nexus, feed, probe, _) = nexus_with(via, Duration::from_millis(5), u64::MAX).await;
    let _task = nexus.start().unwrap();
    let mut rng = fastrand::Rng::with_seed(5);
    for id in 0..2_000 {
        feed.send(Event::new(id, 1, 3, ())).await;
        if rng.u8(..) < 16 {
            // Now and then the sender pauses, so that some events wait past their bound.
            tokio::time::sleep(Duration::from_millis(rng.u64(1..20))).await;
        }
    }
    probe
        .until_count("work", 2_000, Duration::from_secs(60))
        .await;
    assert_eq!(probe.ids("work"), (0..2_000).collect::<Vec<_>>());
}

/// A nexus whose handler of type 1 queues, as secondary events of type 2, one event per
/// priority given (ids from 100); type 2 takes `WORK * 10` each.
fn queueing(nexus: &AsyncEventNexus, priorities: &'static [i32]) -> Probe {
    nexus
        .add_handler(1, move |_e: Event, q: EventQueue| {
            for (i, &priority) in priorities.iter().enumerate() {
                q.put(Event::new(100 + i as u64, 2, priority, ())).unwrap();
            }
        })
        .unwrap();
    let probe = Probe::new();
    let slow = |_e: Event, _q: EventQueue| async {
        tokio::time::sleep(WORK * 10).await;
        Ok::<(), Infallible>(())
    };
    nexus.add_handler(2, probe.wrap("secondary", slow)).unwrap();
    probe
}

#[tokio::test(start_paused = true)]
async fn secondary_events_by_priority_with_aging_when_the_nexus_asks_for_it() {
    const PRIORITIES: &[i32] = &[9, 0, 0, 0, 2, 0, 0, 0, 0, 0];
    // In the order queued, by default, as the original.
    let plain = AsyncEventNexus::new();
    let in_order = queueing(&plain, PRIORITIES);
    let _p = plain.start().unwrap();
    tokio::task::yield_now().await;
    plain.ingest(Event::new(1, 1, 0, ())).await.unwrap();
    assert_eq!(in_order.ids("secondary"), (100..110).collect::<Vec<_>>());

    // By priority: the low one (100) waits 25 ms at most, then goes before the rest.
    let ranked = AsyncEventNexus::builder()
        .priority(Duration::from_millis(25))
        .build();
    let by_priority = queueing(&ranked, PRIORITIES);
    let _r = ranked.start().unwrap();
    tokio::task::yield_now().await;
    ranked.ingest(Event::new(1, 1, 0, ())).await.unwrap();
    assert_eq!(
        by_priority.ids("secondary"),
        [101, 102, 103, 100, 104, 105, 106, 107, 108, 109],
        "urgent first; 100 once overdue (at 30 ms); then every event is overdue, so they go in \
         the order queued"
    );
}

//! `ingest_all`: a batch of events dispatched in order under one hold of the gate, and every
//! event accounted for when the batch is cut short by a failure, a stop, a cancellation, a
//! panic in the caller's iterator, another task waiting for the gate, or a call from a handler.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::FutureExt;

use crate::support::{assert_balanced, running};
use nexus::testing::{Probe, WrappedFuture};
use nexus::{AsyncEventNexus, Event, EventQueue, NexusError};

/// Events of type 1 with the ids `ids`, in order.
fn ones(ids: std::ops::Range<u64>) -> VecDeque<Event> {
    ids.map(|id| Event::new(id, 1, 0, ())).collect()
}

/// Each event and the secondary events it leads to are dispatched before the next event of the
/// batch, as a loop of `ingest` would dispatch them.
#[tokio::test]
async fn every_event_is_dispatched_in_order_each_before_the_next_with_its_secondary_events() {
    let nexus = AsyncEventNexus::new();
    let probe = Probe::new();
    let first = probe.handler("first");
    nexus
        .add_handler(1, move |event: Event, queue: EventQueue| {
            first(event.clone(), queue.clone());
            queue
                .put(Event::new(100 + event.id, 2, 0, ()))
                .expect("room on the queue");
        })
        .unwrap();
    nexus.add_handler(2, probe.handler("second")).unwrap();
    let _task = running(&nexus).await;
    let mut batch = ones(0..4).into_iter();
    nexus.ingest_all(&mut batch).await.unwrap();
    assert_eq!(
        probe.handled(),
        [
            ("first", 0),
            ("second", 100),
            ("first", 1),
            ("second", 101),
            ("first", 2),
            ("second", 102),
            ("first", 3),
            ("second", 103),
        ]
    );
    assert_balanced(&nexus.stats(), 8);
    assert_eq!(nexus.stats().dispatched, 8);
}

/// A failing event ends the batch with its error; the events after it were never taken from
/// the caller's iterator, and a second call goes on with them.
#[tokio::test]
async fn the_events_after_a_failed_one_stay_with_the_caller() {
    let nexus = AsyncEventNexus::new();
    let probe = Probe::new();
    let failing = |event: Event, _queue: EventQueue| async move {
        match event.id {
            2 => Err("event 2 is bad"),
            _ => Ok(()),
        }
    };
    nexus.add_handler(1, probe.wrap("seen", failing)).unwrap();
    let _task = running(&nexus).await;
    let mut batch = ones(0..5);
    let mut events = std::iter::from_fn(|| batch.pop_front());
    let err = nexus.ingest_all(&mut events).await.unwrap_err();
    assert!(
        matches!(err, NexusError::Handler { id: 2, .. }),
        "the error names the failed event: {err}"
    );
    assert_eq!(probe.ids("seen"), [0, 1, 2]);
    let left: Vec<u64> = batch.iter().map(|e| e.id).collect();
    assert_eq!(left, [3, 4]);
    nexus
        .ingest_all(&mut std::iter::from_fn(|| batch.pop_front()))
        .await
        .unwrap();
    assert_eq!(probe.ids("seen"), [0, 1, 2, 3, 4]);
    let stats = nexus.stats();
    assert_balanced(&stats, 5);
    assert_eq!((stats.dispatched, stats.failed), (4, 1), "{stats:?}");
}

/// A nexus stopped by a handler midway refuses the next event, handing it back in the error,
/// and leaves the ones after it in the caller's iterator.
#[tokio::test]
async fn a_stop_midway_hands_back_the_next_event_and_leaves_the_rest() {
    let nexus = AsyncEventNexus::new();
    let probe = Probe::new();
    let weak = nexus.downgrade();
    let seen = probe.handler("seen");
    nexus
        .add_handler(1, move |event: Event, queue: EventQueue| {
            if event.id == 1
                && let Some(nexus) = weak.upgrade()
            {
                nexus.stop();
            }
            seen(event, queue);
        })
        .unwrap();
    let task = running(&nexus).await;
    let mut events = ones(0..5).into_iter();
    let err = nexus.ingest_all(&mut events).await.unwrap_err();
    let NexusError::NotRunning { event, .. } = err else {
        panic!("expected NotRunning, got {err}");
    };
    assert_eq!(event.id, 2, "the refused event is handed back");
    assert_eq!(events.map(|e| e.id).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(probe.ids("seen"), [0, 1]);
    let stats = nexus.stats();
    assert_balanced(&stats, 3);
    assert_eq!((stats.dispatched, stats.returned), (2, 1), "{stats:?}");
    task.await.unwrap().unwrap();
}

/// Before the loop starts, the first event is handed back and nothing else is taken.
#[tokio::test]
async fn a_nexus_not_running_takes_nothing_but_the_refused_event() {
    let nexus = AsyncEventNexus::new();
    nexus.add_handler(1, |_: Event, _: EventQueue| {}).unwrap();
    let mut events = ones(0..3).into_iter();
    let err = nexus.ingest_all(&mut events).await.unwrap_err();
    assert!(
        matches!(&err, NexusError::NotRunning { event, .. } if event.id == 0),
        "{err}"
    );
    assert_eq!(events.len(), 2);
}

/// Dropped while an event waits in its handler (at the batch's await point), the batch counts
/// that event as cancelled; those after it were never taken from the caller's iterator.
#[tokio::test(start_paused = true)]
async fn a_batch_dropped_midway_holds_only_the_event_it_was_dispatching() {
    let nexus = AsyncEventNexus::new();
    let probe = Probe::new();
    let stuck = |event: Event, _queue: EventQueue| async move {
        if event.id == 1 {
            std::future::pending::<()>().await;
        }
        Ok::<(), NexusError>(())
    };
    nexus.add_handler(1, probe.wrap("seen", stuck)).unwrap();
    let _task = running(&nexus).await;
    let mut events = ones(0..5).into_iter();
    let batch = nexus.ingest_all(&mut events);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), batch)
            .await
            .is_err(),
        "the batch should wait on event 1"
    );
    assert_eq!(events.map(|e| e.id).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(probe.ids("seen"), [0, 1]);
    let stats = nexus.stats();
    assert_balanced(&stats, 2);
    assert_eq!((stats.dispatched, stats.cancelled), (1, 1), "{stats:?}");
    // The gate was given back: the nexus takes events again.
    nexus.ingest(Event::new(9, 1, 0, ())).await.unwrap();
    assert_eq!(probe.ids("seen"), [0, 1, 9]);
}

/// A task that waits for the gate while a batch holds it goes next, between two events of the
/// batch, rather than after the whole batch.
#[tokio::test(start_paused = true)]
async fn a_task_waiting_for_the_gate_goes_between_two_events_of_a_batch() {
    let nexus = AsyncEventNexus::new();
    let probe = Probe::new();
    let (open, held) = held_until_opened(&probe, 0);
    nexus.add_handler(1, held).unwrap();
    let _task = running(&nexus).await;
    let batch = {
        let nexus = nexus.clone();
        tokio::spawn(async move { nexus.ingest_all(&mut ones(0..4).into_iter()).await })
    };
    probe_wait(&probe, 1).await;
    let other = {
        let nexus = nexus.clone();
        tokio::spawn(async move { nexus.ingest(Event::new(100, 1, 0, ())).await })
    };
    // Lets the other task find the gate held and wait for it.
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
    assert_eq!(probe.ids("seen"), [0], "event 0 holds the gate");
    open.send(true).unwrap();
    batch.await.unwrap().unwrap();
    other.await.unwrap().unwrap();
    assert_eq!(probe.ids("seen"), [0, 100, 1, 2, 3]);
    assert_balanced(&nexus.stats(), 5);
}

/// A handler recorded by `probe` as `"seen"`, whose call for the event `id` waits until the
/// test opens it (sends `true`).
fn held_until_opened(
    probe: &Probe,
    id: u64,
) -> (
    tokio::sync::watch::Sender<bool>,
    impl Fn(Event, EventQueue) -> WrappedFuture<NexusError> + Send + Sync + 'static,
) {
    let (open, opened) = tokio::sync::watch::channel(false);
    let held = probe.wrap("seen", move |event: Event, _queue: EventQueue| {
        let mut opened = opened.clone();
        async move {
            if event.id == id {
                opened
                    .wait_for(|open| *open)
                    .await
                    .expect("the test holds the sender");
            }
            Ok::<(), NexusError>(())
        }
    });
    (open, held)
}

/// Waits until `probe` has recorded `calls` calls.
async fn probe_wait(probe: &Probe, calls: usize) {
    while probe.records().len() < calls {
        tokio::task::yield_now().await;
    }
}

/// A panic in the caller's iterator unwinds to the caller; the nexus has given its gate back,
/// the events before the panic were dispatched and counted, and it takes events as before.
#[tokio::test]
async fn a_panic_in_the_iterator_leaves_the_nexus_as_after_the_event_before() {
    let nexus = AsyncEventNexus::new();
    let probe = Probe::new();
    nexus.add_handler(1, probe.handler("seen")).unwrap();
    let _task = running(&nexus).await;
    let panicked = {
        let nexus = nexus.clone();
        tokio::spawn(async move {
            let mut events = (0..5_u64).map(|id| {
                assert!(id != 3, "the caller's own bug");
                Event::new(id, 1, 0, ())
            });
            nexus.ingest_all(&mut events).await
        })
        .await
        .unwrap_err()
    };
    assert!(panicked.is_panic());
    crate::support::assert_going_on_after_a_panic_at_3(&nexus, &probe).await;
}

/// A handler that gives a batch to its own nexus does not wait for the gate it holds: each
/// event of the batch is queued as a secondary event, dispatched after the handler's own.
#[tokio::test]
async fn a_batch_from_a_handler_of_the_same_nexus_is_queued() {
    let nexus = AsyncEventNexus::new();
    let probe = Probe::new();
    let weak = nexus.downgrade();
    let first = probe.handler("first");
    nexus
        .add_handler(1, move |event: Event, queue: EventQueue| {
            let weak = weak.clone();
            first(event, queue);
            async move {
                let nexus = weak.upgrade().expect("the nexus is alive");
                let mut twos = (10..13).map(|id| Event::new(id, 2, 0, ()));
                nexus.ingest_all(&mut twos).await
            }
        })
        .unwrap();
    nexus.add_handler(2, probe.handler("second")).unwrap();
    let _task = running(&nexus).await;
    tokio::time::timeout(
        Duration::from_secs(5),
        nexus.ingest_all(&mut ones(0..1).into_iter()),
    )
    .await
    .expect("a handler's batch waited for the gate its own dispatch holds")
    .unwrap();
    assert_eq!(
        probe.handled(),
        [("first", 0), ("second", 10), ("second", 11), ("second", 12)]
    );
    assert_balanced(&nexus.stats(), 4);
}

/// Filters see every event of a batch as they see an `ingest`'s: one consumes an event, one
/// waits before passing another, one fails on a third (under `Continue`, which goes on); the
/// handler gets the rest, in order.
#[tokio::test(start_paused = true)]
async fn filters_consume_wait_and_fail_within_a_batch_as_within_an_ingest() {
    let nexus = AsyncEventNexus::builder()
        .error_policy(nexus::ErrorPolicy::Continue)
        .build();
    let probe = Probe::new();
    nexus.add_filter(|event: &Event, _queue: &EventQueue| {
        let id = event.id;
        async move {
            if id == 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            match id {
                3 => Err("filter failed on 3"),
                _ => Ok(id == 1),
            }
        }
    });
    nexus.add_handler(1, probe.handler("seen")).unwrap();
    let _task = running(&nexus).await;
    let mut events = ones(0..6).into_iter();
    nexus.ingest_all(&mut events).await.unwrap();
    assert_eq!(probe.ids("seen"), [0, 2, 4, 5]);
    let stats = nexus.stats();
    assert_balanced(&stats, 6);
    assert_eq!(
        (stats.dispatched, stats.filtered, stats.failed),
        (4, 1, 1),
        "{stats:?}"
    );
}

/// Dropped while it waits for the gate another task holds (its other await point), the batch
/// counts the event it was to begin with as cancelled; the rest were never taken.
#[tokio::test(start_paused = true)]
async fn a_batch_dropped_while_waiting_for_the_gate_holds_only_its_first_event() {
    let nexus = AsyncEventNexus::new();
    let probe = Probe::new();
    let (open, held) = held_until_opened(&probe, 100);
    nexus.add_handler(1, held).unwrap();
    let _task = running(&nexus).await;
    let holder = {
        let nexus = nexus.clone();
        tokio::spawn(async move { nexus.ingest(Event::new(100, 1, 0, ())).await })
    };
    probe_wait(&probe, 1).await;
    let mut events = ones(0..4).into_iter();
    assert!(
        nexus.ingest_all(&mut events).now_or_never().is_none(),
        "the batch waits for the gate"
    );
    assert_eq!(events.map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3]);
    open.send(true).unwrap();
    holder.await.unwrap().unwrap();
    assert_eq!(probe.ids("seen"), [100]);
    let stats = nexus.stats();
    assert_balanced(&stats, 2);
    assert_eq!((stats.dispatched, stats.cancelled), (1, 1), "{stats:?}");
}

/// Four tasks on two threads give batches to one nexus at once: the gate passes from one batch
/// to another as they come to wait for it, each batch's events are dispatched in their order,
/// and every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_from_four_tasks_at_once_each_keep_their_order() {
    const TASKS: u64 = 4;
    const EACH: u64 = 20_000;
    let nexus = AsyncEventNexus::new();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    nexus
        .add_handler(1, move |event: Event, _queue: EventQueue| {
            record.lock().unwrap().push(event.id);
        })
        .unwrap();
    let _task = running(&nexus).await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let nexus = nexus.clone();
            tokio::spawn(async move {
                let mut events = (0..EACH)
                    .map(|n| Event::new(task * EACH + n, 1, 0, ()))
                    .peekable();
                while events.peek().is_some() {
                    let mut batch = events.by_ref().take(64);
                    nexus.ingest_all(&mut batch).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len() as u64, TASKS * EACH);
    for task in 0..TASKS {
        let own: Vec<u64> = seen
            .iter()
            .copied()
            .filter(|id| id / EACH == task)
            .collect();
        let expected: Vec<u64> = (task * EACH..(task + 1) * EACH).collect();
        assert!(
            own == expected,
            "task {task}'s events out of order or missing"
        );
    }
    let interleaved = seen
        .windows(2)
        .filter(|w| w[0] / EACH != w[1] / EACH)
        .count();
    assert!(interleaved > 0, "the batches never took turns");
    assert_balanced(&nexus.stats(), TASKS * EACH);
}

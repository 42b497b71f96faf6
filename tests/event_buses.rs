//! The guide's "Event buses" section: a fanout, a discarder, boundaries between event domains,
//! and one producer registered with several nexuses (in `event_sources.rs`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{Make, running, with_both_lanes};
use nexus::bus::{EventDiscarder, EventFanout};
use nexus::testing::Probe;
use nexus::{AsyncEventNexus, Event, EventQueue, Handler, NexusError};

#[tokio::test]
async fn a_fanout_copies_each_event_to_every_handler_in_order() {
    let nexus = AsyncEventNexus::new();
    let probe = Probe::new();
    let fanout = EventFanout::new();
    let a = fanout.register(Handler::new(probe.handler("a")));
    fanout.register(Handler::new(probe.handler("b")));
    fanout.register(Handler::new(probe.handler("c")));
    nexus.add_consumer(100, fanout.clone()).unwrap();
    let _task = running(&nexus).await;

    nexus.ingest(Event::new(1, 100, 0, "ping")).await.unwrap();
    assert_eq!(probe.handled(), [("a", 1), ("b", 1), ("c", 1)]);

    assert!(fanout.deregister(a));
    assert!(!fanout.deregister(a), "already gone");
    nexus.ingest(Event::new(2, 100, 0, "ping")).await.unwrap();
    assert_eq!(probe.handled()[3..], [("b", 2), ("c", 2)]);
    assert_eq!(fanout.len(), 2);
}

#[tokio::test]
async fn an_empty_fanout_is_a_misconfigured_consumer() {
    let nexus = AsyncEventNexus::new();
    nexus.add_consumer(100, EventFanout::new()).unwrap();
    let _task = running(&nexus).await;
    let err = nexus.ingest(Event::new(1, 100, 0, ())).await.unwrap_err();
    assert!(
        matches!(err, NexusError::MisconfiguredEventConsumer { .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "misconfigured event consumer EventFanout: no handler registered"
    );
    assert!(err.is_bad_call());
}

#[tokio::test]
async fn a_failing_fanout_handler_does_not_deprive_the_others() {
    let nexus = AsyncEventNexus::new();
    let probe = Probe::new();
    let fanout = EventFanout::new();
    fanout.register(Handler::new(|_e: Event, _q: EventQueue| {
        Err::<(), _>("broken")
    }));
    fanout.register(Handler::new(probe.handler("after")));
    nexus.add_consumer(100, fanout).unwrap();
    let _task = running(&nexus).await;
    let err = nexus.ingest(Event::new(5, 100, 0, ())).await.unwrap_err();
    assert!(matches!(err, NexusError::Handler { id: 5, .. }), "{err}");
    assert_eq!(probe.handled(), [("after", 5)]);
}

#[tokio::test]
async fn a_discarder_consumes_what_it_gets() {
    let nexus = AsyncEventNexus::new();
    nexus.add_consumer(1000..=1999, EventDiscarder).unwrap();
    let _task = running(&nexus).await;
    nexus
        .ingest(Event::new(1, 1500, 0, "useless"))
        .await
        .unwrap();
    let err = nexus
        .ingest(Event::new(2, 2000, 0, "other"))
        .await
        .unwrap_err();
    assert!(matches!(err, NexusError::UnhandledEvent { .. }));
}

const LOG: i64 = 500;
const OTHER: i64 = 501;
const ACK: i64 = 502;

/// Two domains, `app` and `logging`, joined by a boundary of `capacity` (made by `make`) that
/// carries type `LOG` from `app` to `logging`.
fn joined(
    make: Make,
    capacity: usize,
) -> (
    AsyncEventNexus,
    AsyncEventNexus,
    nexus::bus::AsyncEventBoundary,
) {
    let (app, logging) = (AsyncEventNexus::new(), AsyncEventNexus::new());
    let boundary = make(capacity);
    app.add_consumer(LOG, boundary.handler()).unwrap();
    logging.add_producer(boundary.producer()).unwrap();
    (app, logging, boundary)
}

with_both_lanes! { #[tokio::test] a_boundary_forwards_only_the_types_it_is_registered_for }
async fn a_boundary_forwards_only_the_types_it_is_registered_for(make: Make) {
    let (app, logging, boundary) = joined(make, 8);
    let probe = Probe::new();
    app.add_handler(OTHER, probe.handler("app")).unwrap();
    logging.add_handler(LOG, probe.handler("logged")).unwrap();
    logging
        .add_handler(-1, probe.handler("unexpected"))
        .unwrap();
    let _l = running(&logging).await;
    let _a = running(&app).await;

    for id in 0..10 {
        let event_type = if id % 2 == 0 { LOG } else { OTHER };
        app.ingest(Event::new(id, event_type, 0, ())).await.unwrap();
    }
    boundary.close().await.unwrap();
    assert_eq!(probe.ids("logged"), [0, 2, 4, 6, 8]);
    assert_eq!(
        probe.ids("app"),
        [1, 3, 5, 7, 9],
        "other types stay in their domain"
    );
    assert_eq!(probe.count("unexpected"), 0);
}

with_both_lanes! { #[tokio::test] a_closed_boundary_refuses_events_and_hands_them_back }
async fn a_closed_boundary_refuses_events_and_hands_them_back(make: Make) {
    let (app, logging, boundary) = joined(make, 8);
    logging
        .add_handler(LOG, Probe::new().handler("logged"))
        .unwrap();
    let _l = running(&logging).await;
    let _a = running(&app).await;
    boundary.close().await.unwrap();
    assert!(boundary.is_closed());
    let err = app.ingest(Event::new(9, LOG, 0, "late")).await.unwrap_err();
    assert!(err.is_bad_call(), "{err}");
    assert_eq!(
        err.to_string(),
        "event 9 of type 500 refused: event boundary is closed"
    );
    assert_eq!(err.into_event().map(|e| e.id), Some(9));
}

with_both_lanes! { #[tokio::test(flavor = "multi_thread", worker_threads = 2)] closing_a_boundary_loses_none_of_ten_thousand_queued_events }
async fn closing_a_boundary_loses_none_of_ten_thousand_queued_events(make: Make) {
    let (app, logging, boundary) = joined(make, 16);
    let probe = Probe::new();
    let slower = |_e: Event, _q: EventQueue| async {
        tokio::task::yield_now().await; // the receiving side is the slower one
        Ok::<(), Infallible>(())
    };
    logging
        .add_handler(LOG, probe.wrap("logged", slower))
        .unwrap();
    let _l = running(&logging).await;
    let _a = running(&app).await;
    for id in 0..10_000 {
        app.ingest(Event::new(id, LOG, 0, ())).await.unwrap();
    }
    boundary.close().await.unwrap();
    let every: Vec<(&str, u64)> = (0..10_000).map(|id| ("logged", id)).collect();
    assert_eq!(probe.handled(), every, "every event, in order");
}

with_both_lanes! { #[tokio::test(start_paused = true)] a_crossing_that_waits_for_room_and_is_given_up_is_not_waited_for_by_close }
async fn a_crossing_that_waits_for_room_and_is_given_up_is_not_waited_for_by_close(make: Make) {
    let (app, logging, boundary) = joined(make, 1);
    // The logging domain's handler holds each event until it is let go.
    let go = Arc::new(tokio::sync::Semaphore::new(0));
    let (probe, g) = (Probe::new(), go.clone());
    let held = move |_e: Event, _q: EventQueue| {
        let go = g.clone();
        async move { go.acquire().await.map(drop) }
    };
    logging
        .add_handler(LOG, probe.wrap("logged", held))
        .unwrap();
    let _l = running(&logging).await;
    let _a = running(&app).await;

    // The first is taken by the logging domain, the second waits in the queue (room for one).
    app.ingest(Event::new(1, LOG, 0, "first")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    app.ingest(Event::new(2, LOG, 0, "second")).await.unwrap();
    // The third has to wait for room, and is given up.
    let third = tokio::time::timeout(
        Duration::from_millis(50),
        app.ingest(Event::new(3, LOG, 0, "third")),
    )
    .await;
    assert!(third.is_err(), "the third crossing should have waited");

    go.add_permits(3);
    tokio::time::timeout(Duration::from_secs(5), boundary.close())
        .await
        .expect("close must not wait for a crossing that was given up")
        .unwrap();
    assert_eq!(probe.handled(), [("logged", 1), ("logged", 2)]);
}

with_both_lanes! { #[tokio::test] closing_hands_back_what_no_producer_can_deliver }
async fn closing_hands_back_what_no_producer_can_deliver(make: Make) {
    let app = AsyncEventNexus::new();
    let boundary = make(8);
    app.add_consumer(LOG, boundary.handler()).unwrap();
    let _a = running(&app).await;
    for id in 0..3 {
        app.ingest(Event::new(id, LOG, 0, ())).await.unwrap();
    }
    let err = tokio::time::timeout(Duration::from_secs(5), boundary.close())
        .await
        .expect("close must not hang without a producer")
        .unwrap_err();
    let NexusError::CloseFailed { failures } = err else {
        panic!("{err}")
    };
    let ids: Vec<u64> = failures
        .into_iter()
        .filter_map(|f| f.into_event())
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, [0, 1, 2]);
}

with_both_lanes! { #[tokio::test] an_event_failing_amid_the_waiting_ones_is_settled_with_its_own_error }
/// Five events wait in the lane when the far loop starts, and go in one run. The third fails
/// (under `Propagate`, which ends the far loop): close reports that failure for it, and hands
/// back the two after it, refused by the stopped nexus; the two before it were delivered.
async fn an_event_failing_amid_the_waiting_ones_is_settled_with_its_own_error(make: Make) {
    let (app, logging, boundary) = joined(make, 8);
    let probe = Probe::new();
    let third_fails =
        |e: Event, _q: EventQueue| async move { if e.id == 2 { Err("the third") } else { Ok(()) } };
    logging
        .add_handler(LOG, probe.wrap("logged", third_fails))
        .unwrap();
    let _a = running(&app).await;
    for id in 0..5 {
        app.ingest(Event::new(id, LOG, 0, ())).await.unwrap();
    }
    let far = logging.start().unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), boundary.close())
        .await
        .expect("close")
        .unwrap_err();
    let ended = far.await.unwrap().unwrap_err();
    assert!(
        matches!(ended, NexusError::Handler { id: 2, .. }),
        "{ended}"
    );
    assert_eq!(probe.ids("logged"), [0, 1, 2]);
    let NexusError::CloseFailed { failures } = err else {
        panic!("{err}")
    };
    let (failed, handed_back): (Vec<_>, Vec<_>) = failures
        .into_iter()
        .partition(|f| matches!(f, NexusError::LoopEnded { .. }));
    let handed_back: Vec<u64> = handed_back
        .into_iter()
        .filter_map(|f| f.into_event().map(|e| e.id))
        .collect();
    assert_eq!(handed_back, [3, 4]);
    assert_eq!(failed.len(), 1, "{failed:?}");
}

with_both_lanes! { #[tokio::test] replies_from_the_far_domain_reach_the_sending_domain }
async fn replies_from_the_far_domain_reach_the_sending_domain(make: Make) {
    let (app, logging) = (AsyncEventNexus::new(), AsyncEventNexus::new());
    let boundary = make(8);
    // Requests cross from app to logging...
    app.add_consumer(LOG, boundary.handler()).unwrap();
    logging.add_producer(boundary.producer()).unwrap();
    // ...where a handler answers each with an ACK, which crosses back.
    logging
        .add_handler(LOG, |e: Event, q: EventQueue| {
            q.put(Event::new(e.id, ACK, 0, format!("logged {}", e.id)))
        })
        .unwrap();
    logging.add_consumer(ACK, boundary.reply_handler()).unwrap();
    app.add_producer(boundary.reply_producer()).unwrap();
    let probe = Probe::new();
    app.add_handler(ACK, probe.handler("acks")).unwrap();
    let _l = running(&logging).await;
    let _a = running(&app).await;

    for id in 1..=3 {
        app.ingest(Event::new(id, LOG, 0, ())).await.unwrap();
    }
    boundary.close().await.unwrap();
    let acks: Vec<String> = probe
        .events("acks")
        .iter()
        .map(|e| e.payload.to_string())
        .collect();
    assert_eq!(acks, ["logged 1", "logged 2", "logged 3"]);
}

/// Through a nexus, each of a fanout's handlers is called as one of the nexus's own: one that
/// has to wait is resumed where it left off, one that panics is a failure of that handler only,
/// and every handler gets its copy either way. With `after`, the fanout is not the last
/// handler of its type.
async fn fanout_resumes_waiting_handlers_and_survives_a_panicking_one(after: bool) {
    let nexus = AsyncEventNexus::builder().multiple(true).build();
    let probe = Probe::new();
    let fanout = EventFanout::new();
    fanout.register(Handler::new(probe.handler("a")));
    let waits = |_e: Event, _q: EventQueue| async {
        tokio::task::yield_now().await;
        Ok::<(), Infallible>(())
    };
    fanout.register(Handler::new(probe.wrap("waited", waits)));
    fanout.register(
        Handler::new(|e: Event, _q: EventQueue| {
            if e.id == 2 {
                panic!("fanout handler gave up on {}", e.id);
            }
        })
        .named("panicky"),
    );
    fanout.register(Handler::new(probe.handler("c")));
    nexus.add_consumer(100, fanout).unwrap();
    if after {
        nexus.add_handler(100, probe.handler("after")).unwrap();
    }
    let _task = running(&nexus).await;

    nexus.ingest(Event::new(1, 100, 0, ())).await.unwrap();
    let err = nexus.ingest(Event::new(2, 100, 0, ())).await.unwrap_err();
    assert!(
        matches!(
            err,
            NexusError::HandlerPanicked {
                id: 2,
                handler: "panicky",
                ..
            }
        ),
        "{err}"
    );
    let mut expected = vec![("a", 1), ("waited", 1), ("c", 1)];
    if after {
        expected.push(("after", 1));
    }
    expected.extend([("a", 2), ("waited", 2), ("c", 2)]);
    assert_eq!(
        probe.handled(),
        expected,
        "a failed fanout fails the event: later handlers of its type are not called"
    );
    let stats = nexus.stats();
    assert_eq!((stats.dispatched, stats.failed), (1, 1));
}

#[tokio::test]
async fn a_fanout_in_a_nexus_resumes_waiting_handlers_and_survives_a_panicking_one() {
    fanout_resumes_waiting_handlers_and_survives_a_panicking_one(true).await;
}

#[tokio::test]
async fn a_fanout_alone_for_its_type_resumes_waiting_handlers_and_survives_a_panicking_one() {
    fanout_resumes_waiting_handlers_and_survives_a_panicking_one(false).await;
}

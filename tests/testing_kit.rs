//! `nexus::testing`: the probe records what was dispatched, to which handler or filter, in which
//! order and how it ended; its waits run on the paused clock and fail with what was seen; a
//! recorded sequence fed back into another nexus is dispatched the same.

use std::time::Duration;

use crate::support::running;
use nexus::testing::{Outcome, Probe, replay};
use nexus::{AsyncEventNexus, Event, EventQueue, NexusError};

#[tokio::test]
async fn the_probe_records_order_handler_and_outcome_of_every_call() {
    let nexus = AsyncEventNexus::new();
    let probe = Probe::new();
    nexus.add_filter(probe.filter("odd ids out", |e: &Event| e.id % 2 == 1 && e.id > 3));
    nexus.add_handler(1, probe.handler("ones")).unwrap();
    nexus
        .add_handler(
            2,
            probe.wrap("twos", |e: Event, _q: EventQueue| async move {
                match e.id {
                    2 => Err(format!("no {}", e.id)),
                    3 => panic!("twos gave up"),
                    _ => Ok(()),
                }
            }),
        )
        .unwrap();
    let _task = running(&nexus).await;
    nexus.ingest(Event::new(1, 1, 0, ())).await.unwrap();
    assert!(nexus.ingest(Event::new(2, 2, 0, ())).await.is_err());
    assert!(matches!(
        nexus.ingest(Event::new(3, 2, 0, ())).await,
        Err(NexusError::HandlerPanicked { id: 3, .. })
    ));
    nexus.ingest(Event::new(4, 2, 0, ())).await.unwrap();
    nexus.ingest(Event::new(5, 1, 0, ())).await.unwrap();

    let calls: Vec<(usize, &str, u64, Outcome)> = probe
        .records()
        .into_iter()
        .map(|r| (r.seq, r.name, r.event.id, r.outcome))
        .collect();
    let (passed, consumed) = (Outcome::Passed, Outcome::Consumed);
    assert_eq!(
        calls,
        [
            (0, "odd ids out", 1, passed.clone()),
            (1, "ones", 1, Outcome::Handled),
            (2, "odd ids out", 2, passed.clone()),
            (3, "twos", 2, Outcome::Failed("no 2".into())),
            (4, "odd ids out", 3, passed.clone()),
            (5, "twos", 3, Outcome::Unfinished),
            (6, "odd ids out", 4, passed),
            (7, "twos", 4, Outcome::Handled),
            (8, "odd ids out", 5, consumed),
        ]
    );
    assert_eq!(probe.handled(), [("ones", 1), ("twos", 4)]);
    assert_eq!(probe.ids("twos"), [2, 3, 4]);
    assert_eq!(probe.count("odd ids out"), 5);
    assert_eq!(probe.outcome_of("ones", 5), None, "consumed before it");
    probe.clear();
    assert!(probe.records().is_empty());
}

/// Events that arrive a minute apart on a paused clock: the waits see them without a real
/// minute passing.
#[tokio::test(start_paused = true)]
async fn waits_follow_the_paused_clock() {
    let nexus = AsyncEventNexus::new();
    let probe = Probe::new();
    nexus.add_handler(1, probe.handler("slow")).unwrap();
    let _task = running(&nexus).await;
    let feeder = nexus.clone();
    tokio::spawn(async move {
        for id in 1..=3 {
            tokio::time::sleep(Duration::from_secs(60)).await;
            feeder.ingest(Event::new(id, 1, 0, ())).await.unwrap();
        }
    });
    let started = tokio::time::Instant::now();
    let record = probe.until_event("slow", 2, Duration::from_secs(300)).await;
    assert_eq!((record.event.id, record.outcome), (2, Outcome::Handled));
    probe.until_count("slow", 3, Duration::from_secs(300)).await;
    assert_eq!(started.elapsed(), Duration::from_secs(180));
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "waited 5s for 2 calls of late; recorded: [late got event 1 (Handled)]")]
async fn a_wait_past_its_limit_fails_saying_what_was_recorded() {
    let nexus = AsyncEventNexus::new();
    let probe = Probe::new();
    nexus.add_handler(1, probe.handler("late")).unwrap();
    let _task = running(&nexus).await;
    nexus.ingest(Event::new(1, 1, 0, ())).await.unwrap();
    probe.until_count("late", 2, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_recorded_sequence_replayed_into_another_nexus_is_dispatched_the_same() {
    let (first, second) = (AsyncEventNexus::new(), AsyncEventNexus::new());
    let (recorded, replayed) = (Probe::new(), Probe::new());
    for (nexus, probe) in [(&first, &recorded), (&second, &replayed)] {
        nexus.add_handler(1..=3, probe.handler("any")).unwrap();
    }
    let _t1 = running(&first).await;
    let _t2 = running(&second).await;
    let mut rng = fastrand::Rng::with_seed(17);
    for id in 0..200 {
        let t = rng.i64(1..=3);
        first
            .ingest(Event::new(id, t, 0, format!("item {id}")))
            .await
            .unwrap();
    }
    let events = recorded.events("any");
    assert_eq!(replay(&second, events.clone()).await.unwrap(), 200);
    assert_eq!(replayed.events("any"), events);
    assert_eq!(replayed.handled(), recorded.handled());

    // A replay stops at the first refusal.
    second.stop();
    let err = replay(&second, events).await.unwrap_err();
    assert!(matches!(err, NexusError::NotRunning { .. }), "{err}");
}

//! The guide's "Event Sources" section: simple converters, generator converters, producers and
//! the Timer.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/event_sources.rs"]
mod seed;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{Log, running};
use futures_util::StreamExt;
use nexus::sources::{Timer, TimerKind};
use nexus::{
    AsyncEventNexus, BoxStream, Event, EventConverter, EventFactory, EventProducer, EventQueue,
    EventSource, LoopState, NexusError, ProducerLink, SimpleEventConverter, async_trait,
};
use seed::{MyEventConverter, MyEventProducer};
use tokio::time::Instant;

/// The guide's converter, exhausted after `left` more events.
struct Limited {
    inner: MyEventConverter,
    left: u32,
}

impl EventSource for Limited {}

#[async_trait]
impl SimpleEventConverter for Limited {
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        if self.left == 0 {
            return Err(NexusError::NoMoreEvents);
        }
        self.left -= 1;
        self.inner.obtain_event().await
    }
}

/// A generator converter numbering its events from the nexus's sequence.
struct Counter {
    count: i64,
}

impl EventSource for Counter {}

impl EventConverter for Counter {
    fn event_generator(&mut self, factory: EventFactory) -> BoxStream<'_, Event> {
        Box::pin(async_stream::stream! {
            for n in 0..self.count {
                tokio::time::sleep(Duration::from_millis(300)).await;
                yield factory.create_event(n, 60);
            }
        })
    }
}

/// What a recording handler saw: (type, id, when).
type Seen = Arc<Mutex<Vec<(i64, u64, Instant)>>>;

fn record_types(nexus: &AsyncEventNexus) -> Seen {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    nexus
        .add_handler(-1, move |e: Event, _q: EventQueue| {
            s.lock()
                .unwrap()
                .push((e.event_type.as_int().unwrap(), e.id, Instant::now()));
        })
        .unwrap();
    seen
}

#[tokio::test(start_paused = true)]
async fn exhausted_converters_are_dropped_while_the_others_go_on() {
    let nexus = AsyncEventNexus::new();
    let seen = record_types(&nexus);
    let seed_converter = MyEventConverter { id: 1000 };
    nexus
        .register(Limited {
            inner: seed_converter,
            left: 2,
        })
        .unwrap();
    nexus.register(Counter { count: 4 }).unwrap();
    assert_eq!(nexus.source_count(), 2);
    let task = running(&nexus).await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen: Vec<(i64, u64)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(t, id, _)| (*t, *id))
        .collect();
    let simple: Vec<u64> = seen
        .iter()
        .filter(|(t, _)| *t == 50)
        .map(|(_, id)| *id)
        .collect();
    let generated: Vec<u64> = seen
        .iter()
        .filter(|(t, _)| *t == 60)
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(
        simple,
        [1001, 1002],
        "the simple converter's events, in order"
    );
    assert_eq!(
        generated,
        [1, 2, 3, 4],
        "the generator's ids come from the nexus"
    );
    nexus.stop();
    task.await.unwrap().unwrap();
    assert_eq!(nexus.source_count(), 0, "both were exhausted and dropped");
}

#[tokio::test(start_paused = true)]
async fn stopping_keeps_unexhausted_converters_for_cleanup() {
    let nexus = AsyncEventNexus::new();
    let _seen = record_types(&nexus);
    nexus.register(MyEventConverter { id: 1000 }).unwrap();
    let task = running(&nexus).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    nexus.stop();
    task.await.unwrap().unwrap();
    assert_eq!(nexus.source_count(), 1);
    nexus.cleanup().await.unwrap();
    assert_eq!(nexus.source_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_converter_whose_event_is_unhandled_ends_the_loop_with_that_error() {
    let nexus = AsyncEventNexus::new();
    nexus.register(MyEventConverter { id: 1000 }).unwrap();
    let err = nexus.loop_forever().await.unwrap_err();
    assert!(
        matches!(&err, NexusError::UnhandledEvent { event } if event.id == 1001),
        "{err}"
    );
    assert_eq!(nexus.state(), LoopState::Stopped);
}

struct Broken;

impl EventSource for Broken {}

#[async_trait]
impl SimpleEventConverter for Broken {
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        Err(NexusError::source(
            "Broken",
            "obtain_event",
            "sensor offline",
        ))
    }
}

#[tokio::test]
async fn a_failing_converter_ends_the_loop_with_its_error() {
    let nexus = AsyncEventNexus::new();
    nexus.register(Broken).unwrap();
    let err = nexus.loop_forever().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "event source Broken failed in obtain_event"
    );
}

#[tokio::test]
async fn a_producer_pushes_through_its_link_with_the_nexus_ids() {
    let nexus = AsyncEventNexus::new();
    let seen = record_types(&nexus);
    nexus
        .register(MyEventProducer {
            count: 3,
            ..Default::default()
        })
        .unwrap();
    let _task = running(&nexus).await;
    while seen.lock().unwrap().len() < 3 {
        tokio::task::yield_now().await;
    }
    let ids: Vec<u64> = seen.lock().unwrap().iter().map(|(_, id, _)| *id).collect();
    assert_eq!(ids, [1, 2, 3]);
}

#[tokio::test]
async fn a_producer_reaches_every_nexus_it_is_registered_with() {
    let (a, b) = (AsyncEventNexus::new(), AsyncEventNexus::new());
    let (seen_a, seen_b) = (record_types(&a), record_types(&b));
    let producer = MyEventProducer {
        count: 2,
        ..Default::default()
    };
    producer.link().add_nexus(&b);
    a.add_producer(producer).unwrap();
    let _tb = running(&b).await;
    let _ta = running(&a).await;
    while seen_a.lock().unwrap().len() < 2 || seen_b.lock().unwrap().len() < 2 {
        tokio::task::yield_now().await;
    }
    let ids = |s: &Seen| -> Vec<u64> { s.lock().unwrap().iter().map(|(_, id, _)| *id).collect() };
    assert_eq!(ids(&seen_a), [1, 2]);
    assert_eq!(
        ids(&seen_b),
        [1, 2],
        "the same events reached the second nexus"
    );
}

/// A channel producer delivers what waits in its channel in one hold of the nexus's gate, but
/// not past another caller: an `ingest` that comes to wait for the gate goes before the rest of
/// the run.
#[tokio::test(start_paused = true)]
async fn an_ingest_waiting_for_the_gate_goes_before_the_rest_of_a_producers_run() {
    let nexus = AsyncEventNexus::new();
    let probe = nexus::testing::Probe::new();
    let go = Arc::new(tokio::sync::Notify::new());
    let told = Arc::clone(&go);
    nexus
        .add_handler(
            1,
            probe.wrap("seen", move |e: Event, _q: EventQueue| {
                let told = Arc::clone(&told);
                async move {
                    if e.id == 2 {
                        // While this call waits, another task comes to ingest.
                        told.notify_one();
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Ok::<(), NexusError>(())
                }
            }),
        )
        .unwrap();
    let (producer, sender) = nexus::sources::ChannelProducer::new(8);
    nexus.add_producer(producer).unwrap();
    for id in 1..=5 {
        sender.send(Event::new(id, 1, 0, ())).await.unwrap();
    }
    let outside = {
        let nexus = nexus.clone();
        tokio::spawn(async move {
            go.notified().await;
            nexus.ingest(Event::new(100, 1, 0, ())).await
        })
    };
    let _task = running(&nexus).await;
    probe.until_count("seen", 6, Duration::from_secs(5)).await;
    outside.await.unwrap().unwrap();
    assert_eq!(probe.ids("seen"), [1, 2, 100, 3, 4, 5]);
}

#[tokio::test]
async fn producers_refuse_to_start_or_emit_without_a_nexus() {
    let link = ProducerLink::new();
    let err = link.begin("Lonely").unwrap_err();
    assert_eq!(
        err.to_string(),
        "misconfigured event producer Lonely: no nexus registered"
    );
    assert!(err.is_bad_call());

    let err = link
        .distribute_event(Event::new(1, 1, 0, ()))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("distribute_event called before start"),
        "{err}"
    );

    let mut timer = Timer::new(Duration::from_secs(1), TimerKind::OneShot, 1).unwrap();
    let err = timer.start().await.unwrap_err();
    assert!(
        matches!(err, NexusError::MisconfiguredEventProducer { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_producer_whose_nexus_was_dropped_has_its_event_handed_back() {
    let nexus = AsyncEventNexus::new();
    let producer = MyEventProducer::default();
    let link = producer.link().clone();
    nexus.add_producer(producer).unwrap();
    let task = running(&nexus).await;
    nexus.stop();
    task.await.unwrap().unwrap();
    drop(nexus);
    let err = link
        .distribute_event(Event::new(1, 70, 0, ()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NexusError::Closed { event, .. } if event.id == 1),
        "{err}"
    );
}

#[tokio::test]
async fn a_producer_does_not_emit_before_start() {
    let nexus = AsyncEventNexus::new();
    let producer = MyEventProducer::default();
    let link = producer.link().clone();
    nexus.add_producer(producer).unwrap();
    let err = link
        .distribute_event(Event::new(1, 70, 0, ()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, NexusError::MisconfiguredEventProducer { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_dropped_nexus_is_not_kept_alive_by_its_producers() {
    let nexus = AsyncEventNexus::new();
    let producer = MyEventProducer::default();
    let link = producer.link().clone();
    nexus.add_producer(producer).unwrap();
    let weak = nexus.downgrade();
    assert_eq!(link.nexus_count(), 1);
    drop(nexus);
    assert!(!weak.is_alive(), "the producer kept the nexus alive");
    assert_eq!(link.nexus_count(), 0);
}

// ----- the Timer ----------------------------------------------------------------------------

async fn timer_payloads(kind: TimerKind, run_for: Duration) -> Vec<i64> {
    let nexus = AsyncEventNexus::new();
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let s = seen.clone();
    nexus
        .add_handler(98, move |e: Event, _q: EventQueue| {
            s.lock().unwrap().push(e.payload.as_int().unwrap());
        })
        .unwrap();
    nexus
        .add_producer(Timer::new(Duration::from_millis(1500), kind, 98).unwrap())
        .unwrap();
    let task = running(&nexus).await;
    tokio::time::sleep(run_for).await;
    nexus.stop();
    task.await.unwrap().unwrap();
    nexus.cleanup().await.unwrap();
    seen.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn timer_count_down_emits_n_minus_1_to_0() {
    let got = timer_payloads(TimerKind::CountDown(5), Duration::from_secs(60)).await;
    assert_eq!(got, [4, 3, 2, 1, 0]);
}

#[tokio::test(start_paused = true)]
async fn timer_count_up_emits_1_to_n() {
    let got = timer_payloads(TimerKind::CountUp(5), Duration::from_secs(60)).await;
    assert_eq!(got, [1, 2, 3, 4, 5]);
}

#[tokio::test(start_paused = true)]
async fn timer_ongoing_counts_until_stopped() {
    // 1.5 s interval: by 10 s it fired at 1.5, 3, 4.5, 6, 7.5, 9.
    let got = timer_payloads(TimerKind::Ongoing, Duration::from_secs(10)).await;
    assert_eq!(got, [1, 2, 3, 4, 5, 6]);
}

#[tokio::test(start_paused = true)]
async fn timer_one_shot_emits_1_once() {
    let got = timer_payloads(TimerKind::OneShot, Duration::from_secs(60)).await;
    assert_eq!(got, [1]);
}

#[test]
fn timer_counts_of_zero_are_refused() {
    for kind in [TimerKind::CountDown(0), TimerKind::CountUp(0)] {
        let err = Timer::new(Duration::from_secs(1), kind, 1).unwrap_err();
        assert!(matches!(err, NexusError::InvalidArgument { .. }), "{err}");
        assert!(err.to_string().contains(&format!("{kind:?}")), "{err}");
    }
    let err = Timer::new(Duration::ZERO, TimerKind::Ongoing, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid interval of Timer: the interval must be longer than zero"
    );
}

#[tokio::test(start_paused = true)]
async fn timer_firings_keep_to_their_schedule_without_drift() {
    let nexus = AsyncEventNexus::new();
    let fired: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let f = fired.clone();
    // Each handler takes 40% of the interval: a timer that slept after each firing would drift
    // by that much every time.
    nexus
        .add_handler(1, move |_e: Event, _q: EventQueue| {
            f.lock().unwrap().push(Instant::now());
            tokio::time::sleep(Duration::from_millis(400))
        })
        .unwrap();
    let timer = Timer::new(Duration::from_secs(1), TimerKind::CountUp(20), 1).unwrap();
    nexus.add_producer(timer).unwrap();
    let start = Instant::now();
    let task = running(&nexus).await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    let fired = fired.lock().unwrap().clone();
    assert_eq!(fired.len(), 20);
    for (k, at) in fired.iter().enumerate() {
        let expected = start + Duration::from_secs(k as u64 + 1);
        assert_eq!(
            at.duration_since(start),
            expected.duration_since(start),
            "firing {k} drifted"
        );
    }
    nexus.stop();
    task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn timer_stop_says_whether_it_cancelled_or_had_finished() {
    let never = Timer::new(Duration::from_secs(1), TimerKind::OneShot, 1).unwrap();
    assert!(never.stop(), "never started: true");

    let nexus = AsyncEventNexus::new();
    nexus
        .add_handler(-1, |_e: Event, _q: EventQueue| {})
        .unwrap();
    let short = Timer::new(Duration::from_secs(1), TimerKind::OneShot, 1).unwrap();
    let long = Timer::new(Duration::from_secs(1), TimerKind::Ongoing, 2).unwrap();
    nexus.add_producer(short.clone()).unwrap();
    nexus.add_producer(long.clone()).unwrap();
    let _task = running(&nexus).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!short.is_running());
    assert!(long.is_running());
    assert!(!short.stop(), "finished by itself: false");
    assert!(long.stop(), "cancelled while running: true");
    assert!(!long.is_running());
    assert!(long.stop(), "stopped again: nothing left to cancel");
}

#[tokio::test(start_paused = true)]
async fn starting_a_running_timer_is_multiple_start() {
    let nexus = AsyncEventNexus::new();
    nexus
        .add_handler(-1, |_e: Event, _q: EventQueue| {})
        .unwrap();
    let timer = Timer::new(Duration::from_secs(1), TimerKind::Ongoing, 1).unwrap();
    nexus.add_producer(timer.clone()).unwrap();
    let _task = running(&nexus).await;
    let mut again = timer.clone();
    let err = again.start().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Timer was started twice: stop it before starting it again"
    );
    timer.stop();
    again
        .start()
        .await
        .expect("a stopped timer may start again");
}

#[tokio::test(start_paused = true)]
async fn the_timer_hook_chooses_each_firing_event_or_none() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    let l = log.clone();
    nexus
        .add_handler(5, move |e: Event, _q: EventQueue| {
            l.push(e.payload.to_string())
        })
        .unwrap();
    let timer = Timer::new(Duration::from_secs(1), TimerKind::CountUp(6), 5)
        .unwrap()
        .on_fire(|n, factory| (n % 2 == 0).then(|| factory.create_event(format!("even {n}"), 5)));
    nexus.add_producer(timer).unwrap();
    let _task = running(&nexus).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(log.lines(), ["even 2", "even 4", "even 6"]);
}

#[tokio::test(start_paused = true)]
async fn a_timer_with_its_own_factory_numbers_from_it() {
    let nexus = AsyncEventNexus::new();
    let seen = record_types(&nexus);
    let factory = EventFactory::new();
    for _ in 0..100 {
        factory.next_id();
    }
    let timer = Timer::new(Duration::from_secs(1), TimerKind::CountUp(2), 3)
        .unwrap()
        .with_factory(factory);
    nexus.add_producer(timer).unwrap();
    let _task = running(&nexus).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids: Vec<u64> = seen.lock().unwrap().iter().map(|(_, id, _)| *id).collect();
    assert_eq!(ids, [101, 102]);
}

#[tokio::test(start_paused = true)]
async fn generator_converters_accept_any_async_stream() {
    struct Ticks;
    impl EventSource for Ticks {}
    impl EventConverter for Ticks {
        fn event_generator(&mut self, factory: EventFactory) -> BoxStream<'_, Event> {
            futures_util::stream::iter(0..3)
                .map(move |n| factory.create_event(n, 80))
                .boxed()
        }
    }
    let nexus = AsyncEventNexus::new();
    let seen = record_types(&nexus);
    nexus.register(Ticks).unwrap();
    let _task = running(&nexus).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(seen.lock().unwrap().len(), 3);
}

// ----- adapters: sources from streams, closures and channels ---------------------------------

#[tokio::test(start_paused = true)]
async fn stream_and_closure_converters_feed_in_order_and_are_dropped_when_exhausted() {
    use nexus::sources::{StreamConverter, converter_fn, generator};

    let nexus = AsyncEventNexus::new();
    let seen = record_types(&nexus);
    let stream = futures_util::stream::iter((1..=3).map(|id| Event::new(id, 91, 0, ())));
    nexus.register(StreamConverter::new(stream)).unwrap();
    nexus
        .register(generator(|factory| {
            async_stream::stream! {
                for n in 0..3 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    yield factory.create_event(n, 92);
                }
            }
        }))
        .unwrap();
    let mut next_id = 10;
    nexus
        .register(converter_fn(move || {
            next_id += 1;
            let event = (next_id <= 13).then(|| Event::new(next_id, 93, 0, ()));
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                event
            }
        }))
        .unwrap();
    assert_eq!(nexus.source_count(), 3);
    nexus.loop_until_exhausted().await.unwrap();

    let seen = seen.lock().unwrap();
    let ids_of = |t: i64| -> Vec<u64> {
        seen.iter()
            .filter(|(ty, _, _)| *ty == t)
            .map(|(_, id, _)| *id)
            .collect()
    };
    assert_eq!(ids_of(91), [1, 2, 3], "the stream, in order");
    assert_eq!(
        ids_of(92),
        [1, 2, 3],
        "the generator numbers from the nexus"
    );
    assert_eq!(ids_of(93), [11, 12, 13], "the closure, in order");
    assert_eq!(
        nexus.source_count(),
        0,
        "all three were exhausted and dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_producer_delivers_from_other_threads_and_tasks() {
    use nexus::sources::ChannelProducer;

    let nexus = AsyncEventNexus::new();
    let seen = record_types(&nexus);
    let (producer, sender) = ChannelProducer::new(4);
    nexus.add_producer(producer).unwrap();
    let from_thread = sender.clone();
    let thread = std::thread::spawn(move || {
        for id in 0..100 {
            from_thread.blocking_send(Event::new(id, 1, 0, ())).unwrap();
        }
    });
    let from_task = sender.clone();
    let task = tokio::spawn(async move {
        for id in 0..100 {
            from_task.send(Event::new(id, 2, 0, ())).await.unwrap();
        }
    });
    drop(sender);
    let running = tokio::spawn({
        let nexus = nexus.clone();
        async move { nexus.loop_until_exhausted().await }
    });
    thread.join().unwrap();
    task.await.unwrap();
    running.await.unwrap().unwrap(); // ends once every sender is gone and all was delivered

    let seen = seen.lock().unwrap();
    for source in [1, 2] {
        let ids: Vec<u64> = seen
            .iter()
            .filter(|(t, _, _)| *t == source)
            .map(|(_, id, _)| *id)
            .collect();
        assert_eq!(
            ids,
            (0..100).collect::<Vec<_>>(),
            "sender {source}: all, in order"
        );
    }
}

#[tokio::test]
async fn a_channel_sender_gets_its_event_back_when_the_producer_is_gone() {
    use nexus::sources::ChannelProducer;

    let (producer, sender) = ChannelProducer::new(1);
    sender.try_send(Event::new(1, 1, 0, ())).unwrap();
    let err = sender.try_send(Event::new(2, 1, 0, ())).unwrap_err();
    assert!(matches!(err, NexusError::QueueFull { .. }), "{err}");
    drop(producer);
    let err = sender.send(Event::new(3, 1, 0, ())).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "event 3 of type 1 refused: channel producer is closed"
    );
}

#[tokio::test(start_paused = true)]
async fn the_guide_s_sources_run_as_the_example_shows() {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = lines.clone();
    seed::run(Arc::new(move |line| l.lock().unwrap().push(line)))
        .await
        .unwrap();
    let lines = lines.lock().unwrap().clone();
    let of = |t: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.contains(&format!("type={t},")))
            .cloned()
            .collect()
    };
    // MyEventConverter: every 0.2 s for 1.1 s, ids from 1001.
    let converted = of("50");
    assert_eq!(converted.len(), 5, "{lines:#?}");
    assert!(
        converted[0].starts_with("Event(id=1001,") && converted[4].starts_with("Event(id=1005,")
    );
    // The generator and the producer number their events from the nexus's one sequence.
    assert_eq!(of("60").len(), 3);
    assert_eq!(of("70").len(), 3);
}

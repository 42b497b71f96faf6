//! Event domains joined through a real `nats-server` (started here on a loopback port): types
//! filtered by subject, JetStream's at-least-once delivery without double dispatch, restarts of
//! the receiving side and of the server, and bad input skipped.

mod support;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/distributed.rs"]
mod distributed;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/traced.rs"]
mod traced;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus::bus::nats::{NatsBoundary, NatsSubscriber};
use nexus::{AsyncEventNexus, Event, EventQueue, Malformed, NexusError};
use support::{NatsServer, Trial, running, trial};

const PREFIX: &str = "test.events";

/// The (type, id) of each event a recorder dispatched.
type Seen = Arc<Mutex<Vec<(i64, u64)>>>;

/// A nexus recording the (type, id) of what it dispatches.
fn recorder() -> (AsyncEventNexus, Seen) {
    let nexus = AsyncEventNexus::new();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    nexus
        .add_handler(-1, move |e: Event, _q: EventQueue| {
            s.lock()
                .unwrap()
                .push((e.event_type.as_int().unwrap_or(-99), e.id));
        })
        .unwrap();
    (nexus, seen)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// A boundary over plain NATS on `server`, on a connection of its own.
async fn plain(server: &NatsServer) -> NatsBoundary {
    let client = async_nats::connect(server.url()).await.unwrap();
    NatsBoundary::with_client(client, PREFIX)
}

/// A boundary with JetStream on `server`.
async fn jetstream(server: &NatsServer) -> NatsBoundary {
    NatsBoundary::connect(&server.url(), PREFIX)
        .await
        .unwrap()
        .jetstream("TEST")
        .await
        .unwrap()
}

/// A sending domain publishing every event it ingests through `nats`.
async fn sender(nats: &NatsBoundary) -> AsyncEventNexus {
    let nexus = AsyncEventNexus::new();
    nexus.add_consumer(-1, nats.publisher()).unwrap();
    // The loop task runs on by itself; its handle is not needed.
    drop(running(&nexus).await);
    nexus
}

async fn events_cross_between_nexuses_filtered_by_subject() {
    let server = NatsServer::start();
    // Plain NATS delivers at most once: both sides are connected before anything is sent.
    let (out, into) = (plain(&server).await, plain(&server).await);
    let (receiver, seen) = recorder();
    receiver.add_producer(into.subscriber(2)).unwrap();
    let _r = running(&receiver).await;
    let app = sender(&out).await;

    for id in 0..30 {
        app.ingest(Event::new(id, 1 + (id % 3) as i64, 0, "x"))
            .await
            .unwrap();
    }
    until("type 2 events", || seen.lock().unwrap().len() >= 10).await;
    tokio::time::sleep(Duration::from_millis(100)).await; // nothing else comes
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().all(|(t, _)| *t == 2),
        "only type 2 was subscribed: {seen:?}"
    );
    assert_eq!(
        seen.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
        (1..30).step_by(3).collect::<Vec<_>>()
    );
}

/// Orders (type 1) ingested into a shop whose handler queues an invoice (type 2) for each,
/// published through `out`; the billing side receives invoices through `into` (plain or
/// durable) and answers each with a receipt (type 3), whose cause it records.
async fn causes_cross(out: &NatsBoundary, subscriber: nexus::bus::nats::NatsSubscriber) {
    let shop = AsyncEventNexus::new();
    shop.add_handler(1, |e: Event, q: EventQueue| {
        q.put(Event::new(e.id + 100, 2, 0, "invoice"))
    })
    .unwrap();
    shop.add_consumer(2, out.publisher()).unwrap();
    let billing = AsyncEventNexus::new();
    let probe = nexus::testing::Probe::new();
    billing.add_producer(subscriber).unwrap();
    let answer = probe.wrap("invoice", |e: Event, q: EventQueue| async move {
        q.put(Event::new(e.id + 100, 3, 0, "receipt"))
    });
    billing.add_handler(2, answer).unwrap();
    billing.add_handler(3, probe.handler("receipt")).unwrap();
    let _b = running(&billing).await;
    let _s = running(&shop).await;
    for id in 1..=5 {
        shop.ingest(Event::new(id, 1, 0, "order")).await.unwrap();
    }
    probe
        .until_count("receipt", 5, Duration::from_secs(20))
        .await;
    let cause = |id, root| Some(nexus::Cause { id, root });
    let seen = |name| -> Vec<(u64, Option<nexus::Cause>)> {
        probe
            .events(name)
            .into_iter()
            .map(|e| (e.id, e.cause))
            .collect()
    };
    assert_eq!(
        seen("invoice"),
        (1..=5)
            .map(|id| (id + 100, cause(id, id)))
            .collect::<Vec<_>>(),
        "each invoice arrived saying which order led to it"
    );
    assert_eq!(
        seen("receipt"),
        (1..=5)
            .map(|id| (id + 200, cause(id + 100, id)))
            .collect::<Vec<_>>(),
        "each receipt, made on the far side, names its invoice and the order at the root"
    );
}

/// A burst of events published faster than the receiving nexus dispatches them: every one
/// arrives, in order, however many are waiting at once on the subscriber's side.
async fn a_burst_on_plain_nats_arrives_whole_and_in_order() {
    const BURST: u64 = 5_000;
    let server = NatsServer::start();
    let out = plain(&server).await;
    let (_receiver, seen) = roomy_receiver(&server, 2 * BURST as usize).await;
    burst_arrives_in_order(&sender(&out).await, &seen, BURST).await;
}

/// Ingests events `0..n` of type 4 into `app`; waits until `seen` holds as many, and checks that
/// they are those, in order.
async fn burst_arrives_in_order(app: &AsyncEventNexus, seen: &Mutex<Vec<u64>>, n: u64) {
    for id in 0..n {
        app.ingest(Event::new(id, 4, 0, "burst")).await.unwrap();
    }
    until("the whole burst", || seen.lock().unwrap().len() as u64 >= n).await;
    assert_eq!(*seen.lock().unwrap(), (0..n).collect::<Vec<_>>());
}

/// A burst in which every third event has a cause (sent in headers, and dispatched alone) and
/// the others none (dispatched in runs, several to one hold of the nexus): every event arrives,
/// in the order published, with its own cause.
async fn a_burst_mixing_caused_and_uncaused_events_arrives_in_order_with_each_cause() {
    const BURST: u64 = 3_000;
    let server = NatsServer::start();
    let out = plain(&server).await;
    let receiver = AsyncEventNexus::new();
    // The id and cause of each event dispatched.
    let seen: Arc<Mutex<Vec<_>>> = Arc::default();
    let s = seen.clone();
    receiver
        .add_handler(4, move |e: Event, _q: EventQueue| {
            s.lock().unwrap().push((e.id, e.cause))
        })
        .unwrap();
    receive_roomy(&server, 2 * BURST as usize, &receiver).await;
    let cause_of = |id: u64| {
        id.is_multiple_of(3).then_some(nexus::Cause {
            id: id + BURST,
            root: 1,
        })
    };
    let app = sender(&out).await;
    for id in 0..BURST {
        let mut event = Event::new(id, 4, 0, "burst");
        event.cause = cause_of(id);
        app.ingest(event).await.unwrap();
    }
    until("the whole burst", || {
        seen.lock().unwrap().len() as u64 >= BURST
    })
    .await;
    assert_eq!(
        *seen.lock().unwrap(),
        (0..BURST).map(|id| (id, cause_of(id))).collect::<Vec<_>>()
    );
    assert_eq!(receiver.stats().dispatched, BURST);
}

/// A receiving nexus on plain NATS whose handler records the ids of the events of type 4 and
/// holds the first event's call until `release` is notified; a burst of `BURST` events sent to
/// it. Returns once the rest of the burst has had time to reach the subscriber behind the held
/// call.
struct HeldBurst {
    receiver: AsyncEventNexus,
    task: tokio::task::JoinHandle<Result<(), NexusError>>,
    seen: Arc<Mutex<Vec<u64>>>,
    release: Arc<tokio::sync::Notify>,
    _server: NatsServer,
}

const BURST: u64 = 50;

async fn held_burst() -> HeldBurst {
    let server = NatsServer::start();
    let out = plain(&server).await;
    let receiver = AsyncEventNexus::new();
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (entered_tx, entered) = tokio::sync::oneshot::channel();
    let entered_tx = Mutex::new(Some(entered_tx));
    let release = Arc::new(tokio::sync::Notify::new());
    let (s, r) = (seen.clone(), release.clone());
    receiver
        .add_handler(4, move |e: Event, _q: EventQueue| {
            s.lock().unwrap().push(e.id);
            let first = entered_tx.lock().unwrap().take();
            let r = r.clone();
            async move {
                if let Some(entered) = first {
                    let _ = entered.send(());
                    r.notified().await;
                }
            }
        })
        .unwrap();
    receiver
        .add_producer(roomy_subscriber(&server, 2 * BURST as usize).await)
        .unwrap();
    let task = running(&receiver).await;
    let app = sender(&out).await;
    for id in 0..BURST {
        app.ingest(Event::new(id, 4, 0, "burst")).await.unwrap();
    }
    out.flush().await.unwrap();
    entered.await.unwrap();
    // The rest of the burst reaches the subscriber while its first event's call waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    HeldBurst {
        receiver,
        task,
        seen,
        release,
        _server: server,
    }
}

/// A shutdown while a plain subscriber's run dispatches its first event, with the rest of a
/// burst received behind it: the subscriber drains, delivering every event it had received, and
/// the shutdown's report says it completed with nothing left.
async fn a_shutdown_delivers_what_a_plain_nats_subscriber_had_received() {
    let burst = held_burst().await;
    let (receiver, task, seen, release) =
        (&burst.receiver, burst.task, &burst.seen, &burst.release);
    let shutting = receiver.clone();
    let shutdown = tokio::spawn(async move { shutting.shutdown(Duration::from_secs(20)).await });
    // The shutdown drains its producers while the subscriber's first call still waits.
    until("the loop ended", || task.is_finished()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.notify_one();
    let report = shutdown.await.unwrap().unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(*seen.lock().unwrap(), (0..BURST).collect::<Vec<_>>());
    assert!(report.undelivered.is_empty(), "{:?}", report.undelivered);
    assert!(report.completed, "{report:?}");
    let stats = receiver.stats();
    assert_eq!((stats.dispatched, stats.dropped), (BURST, 0));
}

/// As above, but the first call outlasts the shutdown's deadline: the drain is given up, the
/// call cut short (its event counted as cancelled and named as interrupted), and every event
/// received and not dispatched handed back in the report and counted as dropped.
async fn a_shutdown_whose_deadline_passes_hands_back_what_a_plain_nats_subscriber_held() {
    let burst = held_burst().await;
    let (receiver, task, seen, release) =
        (&burst.receiver, burst.task, &burst.seen, &burst.release);
    let shutdown = receiver.shutdown(Duration::from_millis(500));
    let report = tokio::time::timeout(Duration::from_secs(20), shutdown)
        .await
        .expect("the shutdown ends once its deadline has passed")
        .unwrap();
    release.notify_one();
    task.await.unwrap().unwrap();
    assert_eq!(*seen.lock().unwrap(), [0]);
    assert_eq!(report.interrupted, [0]);
    let left: Vec<u64> = report.undelivered.iter().map(|e| e.id).collect();
    assert_eq!(left, (1..BURST).collect::<Vec<_>>());
    assert!(!report.completed);
    let stats = receiver.stats();
    assert_eq!((stats.cancelled, stats.dropped), (1, BURST - 1));
}

/// A plain subscriber closed (a nexus's `cleanup`, without a shutdown's drain) while its first
/// call waits: it stops after that call, and leaves every event it had received and not
/// dispatched undelivered, counted as dropped.
async fn closing_a_plain_nats_subscriber_leaves_what_it_had_not_dispatched() {
    let burst = held_burst().await;
    let (receiver, task, seen, release) =
        (&burst.receiver, burst.task, &burst.seen, &burst.release);
    receiver.stop();
    until("the loop ended", || task.is_finished()).await;
    let closing = receiver.clone();
    let cleanup = tokio::spawn(async move { closing.cleanup().await });
    // The subscriber is asked to stop while its first call still waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.notify_one();
    cleanup.await.unwrap().unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(*seen.lock().unwrap(), [0]);
    let stats = receiver.stats();
    assert_eq!((stats.dispatched, stats.dropped), (1, BURST - 1));
}

/// A shutdown while the server is frozen (SIGSTOP: the connection stays open, nothing sent is
/// read), so that the subscriber's drain cannot be answered: the shutdown still ends by its
/// deadline, with every event the subscriber had delivered before.
async fn a_shutdown_ends_by_its_deadline_while_the_server_of_a_plain_subscriber_is_frozen() {
    let server = NatsServer::start();
    let out = plain(&server).await;
    let (receiver, seen) = roomy_receiver(&server, 64).await;
    burst_arrives_in_order(&sender(&out).await, &seen, 10).await;
    server.pause();
    let shutdown = receiver.shutdown(Duration::from_millis(500));
    let report = tokio::time::timeout(Duration::from_secs(20), shutdown).await;
    server.resume();
    let report = report
        .expect("the shutdown ends once its deadline has passed")
        .unwrap();
    assert!(report.undelivered.is_empty(), "{:?}", report.undelivered);
    assert_eq!(receiver.stats().dispatched, 10);
    assert_eq!(receiver.state(), nexus::LoopState::Stopped);
}

/// A handler of a plain subscriber's event shuts its nexus down: the shutdown's drain of that
/// subscriber, called from the subscriber's own task, which cannot wait for itself, fails and
/// says so, and the shutdown returns rather than hang.
async fn a_handler_fed_by_a_plain_nats_subscriber_can_shut_its_nexus_down() {
    let server = NatsServer::start();
    let out = plain(&server).await;
    let receiver = AsyncEventNexus::new();
    let weak = receiver.downgrade();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let done_tx = Arc::new(Mutex::new(Some(done_tx)));
    receiver
        .add_handler(4, move |e: Event, _q: EventQueue| {
            let (weak, done_tx) = (weak.clone(), done_tx.clone());
            async move {
                if e.id == 2
                    && let Some(nexus) = weak.upgrade()
                {
                    let report = nexus.shutdown(Duration::from_millis(10)).await.unwrap();
                    let failures: Vec<String> =
                        report.failures.iter().map(ToString::to_string).collect();
                    if let Some(tx) = done_tx.lock().unwrap().take() {
                        let _ = tx.send((report.completed, failures));
                    }
                }
            }
        })
        .unwrap();
    receiver
        .add_producer(roomy_subscriber(&server, 16).await)
        .unwrap();
    let _task = running(&receiver).await;
    let app = sender(&out).await;
    for id in 1..=3 {
        app.ingest(Event::new(id, 4, 0, "shut")).await.unwrap();
    }
    out.flush().await.unwrap();
    let shut = tokio::time::timeout(Duration::from_secs(20), done_rx)
        .await
        .expect("the shutdown from inside the subscriber's task hung")
        .unwrap();
    assert_eq!(
        shut,
        (
            false,
            vec!["event source NatsSubscriber failed in drain".to_owned()]
        )
    );
    assert_eq!(receiver.state(), nexus::LoopState::Stopped);
}

/// Events whose handler fails, in the middle of a burst, are counted as
/// failed; the subscriber goes on with the events after each, and every event arrives.
async fn failing_events_on_plain_nats_do_not_stop_the_ones_after_them() {
    const BURST: u64 = 2_000;
    let server = NatsServer::start();
    let out = plain(&server).await;
    let receiver = AsyncEventNexus::new();
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let s = seen.clone();
    receiver
        .add_handler(4, move |e: Event, _q: EventQueue| {
            s.lock().unwrap().push(e.id);
            if e.id % 7 == 3 {
                Err(format!("event {} refused", e.id))
            } else {
                Ok(())
            }
        })
        .unwrap();
    receive_roomy(&server, 2 * BURST as usize, &receiver).await;
    burst_arrives_in_order(&sender(&out).await, &seen, BURST).await;
    let stats = receiver.stats();
    let failing = (0..BURST).filter(|id| id % 7 == 3).count() as u64;
    assert_eq!((stats.failed, stats.dispatched), (failing, BURST - failing));
    assert_eq!(receiver.state(), nexus::LoopState::Looping);
}

/// A running nexus recording the ids of the events of type 4 it receives over plain NATS, through
/// a [`roomy_subscriber`].
async fn roomy_receiver(
    server: &NatsServer,
    room: usize,
) -> (AsyncEventNexus, Arc<Mutex<Vec<u64>>>) {
    let (receiver, seen) = recorder_of(4);
    receive_roomy(server, room, &receiver).await;
    (receiver, seen)
}

/// Feeds `receiver` from a [`roomy_subscriber`] with room for `room` messages, and runs it.
async fn receive_roomy(server: &NatsServer, room: usize, receiver: &AsyncEventNexus) {
    receiver
        .add_producer(roomy_subscriber(server, room).await)
        .unwrap();
    // The loop runs on by itself; its handle is not needed.
    drop(running(receiver).await);
}

/// A subscriber to the events of type 4 over plain NATS, on a connection with room for `room`
/// messages waiting (plain NATS drops what does not fit).
async fn roomy_subscriber(server: &NatsServer, room: usize) -> NatsSubscriber {
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(room)
        .connect(server.url())
        .await
        .unwrap();
    NatsBoundary::with_client(client, PREFIX).subscriber(4)
}

/// How many events the `burst` peer publishes on plain NATS before it ends.
const LAST_BURST: u64 = 2_000;

/// The `burst` peer: connects, says so, and at the word `go` on its input, publishes
/// `LAST_BURST` events on plain NATS, says so, flushes, and ends the process at once.
async fn burst_then_exit(url: String) -> ! {
    use std::io::Write;
    let out = NatsBoundary::connect(&url, PREFIX).await.unwrap();
    let app = sender(&out).await;
    let say = |line: &str| {
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .unwrap();
    };
    say("connected");
    tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
        .await
        .unwrap()
        .unwrap();
    let payload = "x".repeat(16 * 1024);
    for id in 0..LAST_BURST {
        app.ingest(Event::new(id, 4, 0, payload.clone()))
            .await
            .unwrap();
    }
    say("published");
    out.flush().await.unwrap();
    std::process::exit(0)
}

/// What a process published on plain NATS right before it ended arrives whole, once it
/// flushed. The server is frozen while the process publishes, so that every message is still
/// in the client when the last publish returns: without the flush, all of them are lost.
fn what_a_process_published_and_flushed_before_it_ended_arrives() {
    use std::io::{BufRead, Write};
    let server = NatsServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_receiver, seen) = runtime.block_on(roomy_receiver(&server, 2 * LAST_BURST as usize));
    let mut peer = std::process::Command::new(std::env::current_exe().unwrap())
        .env("NEXUS_NATS_BURST_TO", server.url())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = std::io::BufReader::new(peer.stdout.take().unwrap()).lines();
    let mut next_line = || said.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(next_line(), "connected");
    server.pause();
    writeln!(peer.stdin.take().unwrap(), "go").unwrap();
    let published = next_line();
    server.resume();
    assert_eq!(published, "published");
    assert!(
        peer.wait().unwrap().success(),
        "the publishing process failed"
    );
    runtime.block_on(until("the whole burst", || {
        seen.lock().unwrap().len() as u64 >= LAST_BURST
    }));
    assert_eq!(*seen.lock().unwrap(), (0..LAST_BURST).collect::<Vec<_>>());
}

async fn causes_cross_plain_nats_in_headers() {
    let server = NatsServer::start();
    let (out, into) = (plain(&server).await, plain(&server).await);
    causes_cross(&out, into.subscriber(2)).await;
}

async fn causes_cross_jetstream_in_headers() {
    let server = NatsServer::start();
    let (out, into) = (jetstream(&server).await, jetstream(&server).await);
    causes_cross(&out, into.durable_subscriber(2, "billing")).await;
}

async fn a_restarted_receiver_dispatches_what_was_published_meanwhile_exactly_once() {
    let server = NatsServer::start();
    let out = jetstream(&server).await;
    let app = sender(&out).await;

    // The receiving side runs, takes the first 20 events, then is killed: its tasks end and its
    // connection closes. What it had fetched but not acknowledged comes again after `ack_wait`.
    let into = jetstream(&server).await;
    let (receiver, first) = recorder();
    let durable = into
        .durable_subscriber(7, "logging")
        .ack_wait(Duration::from_secs(1));
    receiver.add_producer(durable).unwrap();
    let task = running(&receiver).await;
    for id in 0..20 {
        app.ingest(Event::new(id, 7, 0, "before")).await.unwrap();
    }
    until("the first 20", || first.lock().unwrap().len() >= 20).await;
    task.abort();
    receiver.cleanup().await.unwrap();
    drop((receiver, into));

    // Published while nobody receives.
    for id in 20..120 {
        app.ingest(Event::new(id, 7, 0, "meanwhile")).await.unwrap();
    }

    // A new receiving side with the same durable name resumes where the old one stopped.
    let into = jetstream(&server).await;
    let (receiver, second) = recorder();
    receiver
        .add_producer(into.durable_subscriber(7, "logging"))
        .unwrap();
    let _task = running(&receiver).await;
    until("the 100 published meanwhile", || {
        second.lock().unwrap().len() >= 100
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // and nothing more, even redelivered
    let mut ids: Vec<u64> = second.lock().unwrap().iter().map(|(_, id)| *id).collect();
    // One that the killed side had fetched may come after the others: order across a crash is
    // not kept, but nothing is lost or doubled.
    ids.sort_unstable();
    assert_eq!(ids, (20..120).collect::<Vec<_>>(), "each exactly once");
}

async fn publishing_resumes_after_the_server_restarts_without_losing_stored_events() {
    let mut server = NatsServer::start();
    let out = jetstream(&server).await;
    let app = sender(&out).await;
    for id in 0..50 {
        app.ingest(Event::new(id, 3, 0, "stored before"))
            .await
            .unwrap(); // returns once stored
    }

    server.restart();
    for id in 50..100 {
        app.ingest(Event::new(id, 3, 0, "after")).await.unwrap(); // waits for the server
    }

    let into = jetstream(&server).await;
    let (receiver, seen) = recorder();
    receiver
        .add_producer(into.durable_subscriber(3, "reader"))
        .unwrap();
    let _task = running(&receiver).await;
    until("all 100", || seen.lock().unwrap().len() >= 100).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ids: Vec<u64> = seen.lock().unwrap().iter().map(|(_, id)| *id).collect();
    assert_eq!(ids, (0..100).collect::<Vec<_>>());
}

async fn an_event_delivered_again_is_not_dispatched_twice() {
    let server = NatsServer::start();
    let out = jetstream(&server).await;
    let app = sender(&out).await;

    let into = jetstream(&server).await;
    let receiver = AsyncEventNexus::new();
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let s = seen.clone();
    // The first dispatch outlasts the acknowledgement wait, so JetStream delivers the event again.
    receiver
        .add_handler(5, move |e: Event, _q: EventQueue| {
            let s = s.clone();
            async move {
                let first = s.lock().unwrap().is_empty();
                s.lock().unwrap().push(e.id);
                if first {
                    tokio::time::sleep(Duration::from_millis(2500)).await;
                }
            }
        })
        .unwrap();
    receiver
        .add_producer(
            into.durable_subscriber(5, "slow")
                .ack_wait(Duration::from_secs(1)),
        )
        .unwrap();
    let _task = running(&receiver).await;
    app.ingest(Event::new(1, 5, 0, "slow")).await.unwrap();
    app.ingest(Event::new(2, 5, 0, "quick")).await.unwrap();
    until("both events", || seen.lock().unwrap().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // time for a third delivery
    assert_eq!(
        *seen.lock().unwrap(),
        [1, 2],
        "event 1 came again but was dispatched once"
    );
}

async fn malformed_messages_are_skipped_and_counted_while_good_ones_arrive() {
    let server = NatsServer::start();
    let into = jetstream(&server).await;
    let subscriber = into.durable_subscriber(1..=9, "strict").max_bytes(256);
    let stats = subscriber.stats();
    let (receiver, seen) = recorder();
    receiver.add_producer(subscriber).unwrap();
    let _task = running(&receiver).await;

    let raw = async_nats::connect(server.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(raw);
    let messages: Vec<(&str, Vec<u8>)> = vec![
        (
            "1",
            br#"{"id": 1, "type": 1, "priority": 0, "payload": "good"}"#.to_vec(),
        ),
        ("2", b"not json at all".to_vec()),
        (
            "2",
            br#"{"id": 2, "type": 2, "priority": 0, "payload": "good"}"#.to_vec(),
        ),
        ("3", br#"{"id": [3], "type": 3, "payload": null}"#.to_vec()),
        (
            "4",
            format!(
                r#"{{"id": 4, "type": 4, "payload": "{}"}}"#,
                "x".repeat(400)
            )
            .into_bytes(),
        ),
        (
            "5",
            br#"{"id": 5, "type": 50, "payload": "type outside 1..=9"}"#.to_vec(),
        ),
        (
            "6",
            br#"{"id": 6, "type": 6, "priority": 0, "payload": "good"}"#.to_vec(),
        ),
    ];
    for (subject, bytes) in messages {
        jetstream
            .publish(format!("{PREFIX}.{subject}"), bytes.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    until("the good events", || seen.lock().unwrap().len() >= 3).await;
    let ids: Vec<u64> = seen.lock().unwrap().iter().map(|(_, id)| *id).collect();
    assert_eq!(ids, [1, 2, 6]);
    let counts = [
        Malformed::NotJson,
        Malformed::WrongField,
        Malformed::TooLarge,
        Malformed::UnknownType,
    ]
    .map(|k| stats.malformed(k));
    assert_eq!(counts, [1, 1, 1, 1]);
    assert_eq!(
        receiver.state(),
        nexus::LoopState::Looping,
        "the nexus keeps running"
    );
}

async fn the_distributed_example_ships_every_order_once() {
    let server = NatsServer::start();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = lines.clone();
    let out: distributed::Out = Arc::new(move |line| l.lock().unwrap().push(line));
    tokio::time::timeout(
        Duration::from_secs(30),
        distributed::run(distributed::Role::Both, &server.url(), out),
    )
    .await
    .expect("the example ends by itself")
    .unwrap();
    let lines = lines.lock().unwrap();
    let shipped: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("shipping: order"))
        .collect();
    assert_eq!(shipped.len(), distributed::ORDERS as usize, "{lines:#?}");
    assert_eq!(lines.last().unwrap(), "both: 10 orders shipped");
}

/// A nexus recording the ids of the events of type `t` it dispatches, with nothing for others.
fn recorder_of(t: i64) -> (AsyncEventNexus, Arc<Mutex<Vec<u64>>>) {
    let nexus = AsyncEventNexus::new();
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let s = seen.clone();
    nexus
        .add_handler(t, move |e: Event, _q: EventQueue| {
            s.lock().unwrap().push(e.id)
        })
        .unwrap();
    (nexus, seen)
}

async fn a_publisher_started_again_with_the_same_origin_loses_nothing() {
    let server = NatsServer::start();
    let into = jetstream(&server).await;
    let (receiver, seen) = recorder_of(3);
    receiver
        .add_producer(into.durable_subscriber(3, "shipping"))
        .unwrap();
    let _task = running(&receiver).await;
    // Two runs of one publishing program: each numbers its events from 1.
    for run in 0..2 {
        let out = jetstream(&server).await;
        let publisher = out.publisher().origin("ordering");
        for id in 1..=100 {
            publisher
                .publish(&Event::new(id, 3, 0, format!("run {run}")))
                .await
                .unwrap();
        }
        assert_eq!(publisher.stats().stored, 100, "run {run}");
        assert_eq!(publisher.stats().duplicates, 0);
    }
    until("both runs' events", || seen.lock().unwrap().len() >= 200).await;
    let mut ids = seen.lock().unwrap().clone();
    ids.sort_unstable();
    let expected: Vec<u64> = (1..=100).flat_map(|id| [id, id]).collect();
    assert_eq!(ids, expected, "every event of both runs, once each");
}

async fn a_duplicate_publish_is_surfaced_never_a_silent_success() {
    use nexus::bus::nats::OnDuplicate;
    let server = NatsServer::start();
    let out = jetstream(&server).await;
    let publisher = out.publisher().origin("orders");
    let event = Event::new(7, 3, 0, "once");
    publisher.publish(&event).await.unwrap();
    let err = publisher.publish(&event).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "event 7 of type 3 not stored again: the broker already holds message {} (a duplicate)",
            publisher.message_id(&event)
        )
    );
    assert_eq!(publisher.stats().duplicates, 1);

    let lenient = publisher.clone().on_duplicate(OnDuplicate::Warn);
    lenient.publish(&event).await.unwrap();
    assert_eq!(lenient.stats().duplicates, 2, "counted all the same");
    assert_eq!(lenient.stats().stored, 1);
}

async fn what_one_receiver_dispatched_is_not_dispatched_again_by_the_next_when_acks_are_lost() {
    let server = NatsServer::start();
    let out = jetstream(&server).await;
    let app = sender(&out).await;

    let into = jetstream(&server).await;
    let (first, seen_first) = recorder_of(4);
    first
        .add_producer(into.durable_subscriber(4, "audit"))
        .unwrap();
    let task = running(&first).await;
    for id in 1..=50 {
        app.ingest(Event::new(id, 4, 0, "first")).await.unwrap();
    }
    until("the first 50", || seen_first.lock().unwrap().len() >= 50).await;
    first.stop();
    task.await.unwrap().unwrap();
    first.cleanup().await.unwrap();

    // The server forgets every acknowledgement of the consumer, as a server stopped at the
    // wrong moment can: its consumer is gone, and the next one is given every event again.
    let raw = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    raw.get_stream("TEST")
        .await
        .unwrap()
        .delete_consumer("audit")
        .await
        .unwrap();

    let into = jetstream(&server).await;
    let (second, seen_second) = recorder_of(4);
    let subscriber = into.durable_subscriber(4, "audit");
    let deliveries = subscriber.deliveries();
    second.add_producer(subscriber).unwrap();
    let _task = running(&second).await;
    for id in 51..=60 {
        app.ingest(Event::new(id, 4, 0, "second")).await.unwrap();
    }
    until("the 10 new events", || {
        seen_second.lock().unwrap().len() >= 10
    })
    .await;
    until("the 50 old ones skipped", || {
        deliveries.now().duplicates >= 50
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        *seen_second.lock().unwrap(),
        (51..=60).collect::<Vec<_>>(),
        "nothing dispatched twice"
    );
    assert_eq!(deliveries.now().duplicates, 50);
}

async fn a_flood_of_poison_events_is_set_aside_and_good_events_keep_flowing() {
    let server = NatsServer::start();
    let out = jetstream(&server).await;
    let publisher = out.publisher().origin("flood");
    let into = jetstream(&server).await;
    // Type 2 reaches the nexus, but nothing handles it: each such event fails.
    let (receiver, good) = recorder_of(1);
    let subscriber = into
        .durable_subscriber(1..=2, "flooded")
        .max_deliveries(2)
        .ack_wait(Duration::from_secs(2));
    let deliveries = subscriber.deliveries();
    receiver.add_producer(subscriber).unwrap();
    let _task = running(&receiver).await;
    for id in 1..=1_000 {
        publisher
            .publish(&Event::new(id, 2, 0, "poison"))
            .await
            .unwrap();
    }
    for id in 1_001..=1_010 {
        publisher
            .publish(&Event::new(id, 1, 0, "good"))
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while good.lock().unwrap().len() < 10 || deliveries.now().dead_lettered < 1_000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "stuck: {:?}, {} good",
            deliveries.now(),
            good.lock().unwrap().len()
        )
    });
    assert_eq!(*good.lock().unwrap(), (1_001..=1_010).collect::<Vec<_>>());
    let stats = deliveries.now();
    assert_eq!(
        (stats.received, stats.redelivered, stats.dead_lettered),
        (1_010, 1_000, 1_000),
        "redeliveries counted apart from new events: {stats:?}"
    );
    // Each one is kept, with its error, on the dead-letter stream.
    let raw = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let mut dead = raw.get_stream("TEST_DEAD_LETTER").await.unwrap();
    assert_eq!(dead.info().await.unwrap().state.messages, 1_000);
    let first = dead.get_raw_message(1).await.unwrap();
    let error = first.headers.get("Nexus-Error").unwrap().to_string();
    assert!(error.starts_with("unhandled event 1 of type 2"), "{error}");
    assert_eq!(receiver.state(), nexus::LoopState::Looping);
}

async fn the_distributed_example_ships_every_order_of_two_ordering_runs() {
    let server = NatsServer::start();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = lines.clone();
    let out: distributed::Out = Arc::new(move |line| l.lock().unwrap().push(line));
    let url = server.url();
    let shipping = tokio::spawn({
        let (url, out) = (url.clone(), out.clone());
        async move { distributed::shipping(&url, Some(2 * distributed::ORDERS), out).await }
    });
    // The ordering program run twice: each run numbers its orders' events from 1 again.
    for _ in 0..2 {
        tokio::time::timeout(
            Duration::from_secs(30),
            distributed::ordering(&url, out.clone()),
        )
        .await
        .expect("an ordering run ends by itself")
        .unwrap();
    }
    let shipped = tokio::time::timeout(Duration::from_secs(30), shipping)
        .await
        .expect("shipping ships both runs' orders")
        .unwrap()
        .unwrap();
    assert_eq!(
        shipped,
        2 * distributed::ORDERS,
        "{:#?}",
        lines.lock().unwrap()
    );
}

/// Plain NATS delivers at most once, to the subscriptions the server has: a subscriber whose
/// nexus is running has its subscription in place at the server, so an event published on
/// another connection right after it started is received. Repeated, as the race is narrow.
async fn a_started_subscriber_receives_what_is_published_right_after() {
    let server = NatsServer::start();
    let out = plain(&server).await;
    let publisher = out.publisher();
    for round in 0..200u64 {
        let into = plain(&server).await;
        let (receiver, seen) = recorder();
        receiver.add_producer(into.subscriber(7)).unwrap();
        let task = running(&receiver).await;
        nexus::EventConsumer::handle(
            &publisher,
            Event::new(round, 7, 0, "x"),
            receiver.queue().clone(),
        )
        .await
        .unwrap();
        let arrived = tokio::time::timeout(Duration::from_secs(5), async {
            while seen.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(
            arrived.is_ok(),
            "round {round}: the event published after start was lost"
        );
        receiver.stop();
        task.await.unwrap().unwrap();
        receiver.cleanup().await.unwrap();
    }
}

/// The traced example's `role`, run by this binary started again with `NEXUS_TRACED_ROLE`.
fn traced_peer(role: &str) -> std::process::ExitCode {
    let role = match role {
        "near" => traced::Role::Near,
        "far" => traced::Role::Far,
        other => panic!("unknown traced role {other}"),
    };
    let url = std::env::var("NATS_URL").expect("NATS_URL");
    let plain = std::env::var_os("NEXUS_TRACED_PLAIN").is_some();
    let provider = traced::install_tracing();
    let out: traced::Out = Arc::new(|line| println!("{line}"));
    let ran = block_on_result(traced::run(role, &url, plain, out));
    let _ = provider.shutdown();
    match ran {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{err}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn block_on_result<T>(run: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(run)
}

/// One side of the traced example, in a process of its own, its lines read as they come.
struct TracedSide {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    said: Vec<String>,
}

impl TracedSide {
    fn start(role: &str, server: &NatsServer, plain: bool) -> Self {
        use std::io::BufRead;
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .env("NEXUS_TRACED_ROLE", role)
            .env("NATS_URL", server.url())
            .stdout(std::process::Stdio::piped());
        if plain {
            command.env("NEXUS_TRACED_PLAIN", "1");
        }
        let mut child = command.spawn().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        Self {
            child,
            lines,
            said: Vec::new(),
        }
    }

    /// Reads lines until `last` (or the end of its output, or 60 s), and returns all read so
    /// far.
    fn until(&mut self, last: &str) -> &[String] {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.said.last().is_none_or(|line| line != last) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.said.push(line),
                Err(_) => break,
            }
        }
        &self.said
    }

    /// Waits for the process to end well, and returns everything it said.
    fn finish(mut self) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                self.said.extend(self.lines.try_iter());
                panic!("the traced side did not finish: {:#?}", self.said);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.said.extend(self.lines.try_iter());
        assert!(status.success(), "{status}: {:#?}", self.said);
        self.said
    }
}

/// The trace id that lines starting with `prefix` and naming `order` give.
fn trace_in(lines: &[String], prefix: &str, order: u64) -> String {
    let wanted = format!("{prefix} {order} ");
    let line = lines
        .iter()
        .find(|line| line.starts_with(&wanted))
        .unwrap_or_else(|| panic!("no line {wanted:?} in {lines:#?}"));
    line.rsplit(' ').next().unwrap().to_owned()
}

/// The near side ingests each order in a span of its own; the far side, another process,
/// handles it, and the near side handles its receipt. Each order's trace id is read in all
/// three places.
fn one_trace_spans_both_processes(plain: bool) {
    let server = NatsServer::start();
    let mut far = TracedSide::start("far", &server, plain);
    // Plain NATS keeps nothing for a subscriber not there yet.
    let ready = far.until("far: ready");
    assert_eq!(
        ready.last().map(String::as_str),
        Some("far: ready"),
        "{ready:#?}"
    );
    let near = TracedSide::start("near", &server, plain).finish();
    let far = far.finish();
    let mut traces = std::collections::HashSet::new();
    for order in 1..=traced::ORDERS {
        let sent = trace_in(&near, "near: order", order);
        assert_eq!(sent.len(), 32, "a trace id: {sent}");
        assert_eq!(trace_in(&far, "far: order", order), sent, "far: {far:#?}");
        assert_eq!(
            trace_in(&near, "near: receipt for order", order),
            sent,
            "near: {near:#?}"
        );
        traces.insert(sent);
    }
    assert_eq!(traces.len() as u64, traced::ORDERS, "a trace per order");
}

fn main() -> std::process::ExitCode {
    if let Ok(role) = std::env::var("NEXUS_TRACED_ROLE") {
        return traced_peer(&role);
    }
    if let Ok(url) = std::env::var("NEXUS_NATS_BURST_TO") {
        block_on_result(burst_then_exit(url));
    }
    let trials = vec![
        Trial::needing(
            "what_a_process_published_and_flushed_before_it_ended_arrives",
            what_a_process_published_and_flushed_before_it_ended_arrives,
        ),
        Trial::needing("one_trace_spans_both_processes_over_jetstream", || {
            one_trace_spans_both_processes(false)
        }),
        Trial::needing("one_trace_spans_both_processes_over_plain_nats", || {
            one_trace_spans_both_processes(true)
        }),
        trial!(
            needing,
            a_started_subscriber_receives_what_is_published_right_after
        ),
        trial!(needing, events_cross_between_nexuses_filtered_by_subject),
        trial!(needing, a_burst_on_plain_nats_arrives_whole_and_in_order),
        trial!(
            needing,
            a_burst_mixing_caused_and_uncaused_events_arrives_in_order_with_each_cause
        ),
        trial!(
            needing,
            a_shutdown_delivers_what_a_plain_nats_subscriber_had_received
        ),
        trial!(
            needing,
            a_shutdown_whose_deadline_passes_hands_back_what_a_plain_nats_subscriber_held
        ),
        trial!(
            needing,
            a_shutdown_ends_by_its_deadline_while_the_server_of_a_plain_subscriber_is_frozen
        ),
        trial!(
            needing,
            a_handler_fed_by_a_plain_nats_subscriber_can_shut_its_nexus_down
        ),
        trial!(
            needing,
            closing_a_plain_nats_subscriber_leaves_what_it_had_not_dispatched
        ),
        trial!(
            needing,
            failing_events_on_plain_nats_do_not_stop_the_ones_after_them
        ),
        trial!(needing, causes_cross_plain_nats_in_headers),
        trial!(needing, causes_cross_jetstream_in_headers),
        trial!(
            needing,
            a_restarted_receiver_dispatches_what_was_published_meanwhile_exactly_once
        ),
        trial!(
            needing,
            publishing_resumes_after_the_server_restarts_without_losing_stored_events
        ),
        trial!(needing, an_event_delivered_again_is_not_dispatched_twice),
        trial!(
            needing,
            malformed_messages_are_skipped_and_counted_while_good_ones_arrive
        ),
        trial!(needing, the_distributed_example_ships_every_order_once),
        trial!(
            needing,
            a_publisher_started_again_with_the_same_origin_loses_nothing
        ),
        trial!(
            needing,
            a_duplicate_publish_is_surfaced_never_a_silent_success
        ),
        trial!(
            needing,
            what_one_receiver_dispatched_is_not_dispatched_again_by_the_next_when_acks_are_lost
        ),
        trial!(
            needing,
            a_flood_of_poison_events_is_set_aside_and_good_events_keep_flowing
        ),
        trial!(
            needing,
            the_distributed_example_ships_every_order_of_two_ordering_runs
        ),
    ];
    support::run_trials(
        "nats-server",
        "install the Debian package nats-server",
        support::nats_server_problem(),
        trials,
    )
}

//! Events per second through a NATS boundary (publisher in one nexus, subscriber in another,
//! separate connections), beside raw `async-nats` doing the same with the same bytes, in the same
//! run: plain NATS beside publish/subscribe, and JetStream (publish waiting for the server's
//! acknowledgement, a durable subscriber recording and acknowledging each event) beside
//! publish-with-ack and a pull consumer acknowledging each message. Starts its own `nats-server`
//! with JetStream on a loopback port.
//!
//! ```text
//! cargo bench --manifest-path bench/Cargo.toml --bench nats
//! ```
//!
//! Plain NATS delivers at most once: a side of a round that has not finished within 30 s (some of
//! its messages did not arrive) is printed with how far it got and left out of the medians, and
//! the summary counts such sides (`nats_sides_stalled`). Each side's subscription is in place at
//! the server before its first message is published, so none is lost for want of one.
//!
//! `NEXUS_NATS_ONLY=nexus` (or `raw`) runs the plain case of that side alone, to profile it.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use nexus::bus::nats::NatsBoundary;
use nexus::{AsyncEventNexus, Event, EventQueue, LoopState};

const N: u64 = 100_000;
/// Events per JetStream round: each is stored, and acknowledged, one after the other.
const N_JS: u64 = 10_000;
/// Plain NATS rounds: the ratio is of medians, and the server shares the machine's two cores, so
/// that one round's ratio ranges from about 0.6 to 1.1. A round takes about a quarter of a
/// second; the medians of 11 rounds gave ratios from 0.66 to 0.88 in three runs of the same
/// code, the 33 rounds together 0.875.
const ROUNDS: usize = 33;
/// JetStream rounds: each takes some seconds, and its rounds range less.
const JS_ROUNDS: usize = 11;
/// How long one side of a round may take before it is reported as stalled and left out: plain
/// NATS delivers at most once, so a round whose messages do not all arrive must still end.
const STALL: Duration = Duration::from_secs(30);

/// How far the side being timed has got: events sent, and events that arrived. Each count has
/// one writer at a time, and is written with plain stores.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    arrived: AtomicU64,
}

impl Progress {
    fn sent(&self, count: u64) {
        self.sent.store(count, Ordering::Relaxed);
    }

    fn arrived(&self, count: u64) {
        self.arrived.store(count, Ordering::Relaxed);
    }

    /// Counts one arrival from a handler: the count so far. A nexus calls its handlers for one
    /// event at a time, each call after the last one's end, so the count is read and written
    /// back with plain instructions, as the raw side counts, and not with a locked one.
    fn arrive(&self) -> u64 {
        let count = self.arrived.load(Ordering::Relaxed) + 1;
        self.arrived.store(count, Ordering::Relaxed);
        count
    }
}

fn start_server() -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let store = std::env::temp_dir().join(format!("nexus-bench-nats-{}", std::process::id()));
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server (Debian package nats-server) must be installed");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

fn event(i: u64) -> Event {
    Event::new(i, 7, 0, format!("order {i}"))
}

/// A receiving nexus that says when its handler has seen `n` events, fed by `producer`; and a
/// sending nexus publishing through `publisher`. Both running.
async fn pair(
    n: u64,
    progress: Arc<Progress>,
    producer: nexus::bus::nats::NatsSubscriber,
    publisher: nexus::bus::nats::NatsPublisher,
) -> (
    AsyncEventNexus,
    AsyncEventNexus,
    tokio::sync::oneshot::Receiver<Instant>,
) {
    let receiver = AsyncEventNexus::new();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let done_tx = std::sync::Mutex::new(Some(done_tx));
    receiver
        .add_handler(7, move |_e: Event, _q: EventQueue| {
            if progress.arrive() == n
                && let Some(tx) = done_tx.lock().unwrap().take()
            {
                let _ = tx.send(Instant::now());
            }
        })
        .unwrap();
    receiver.add_producer(producer).unwrap();
    let sender = AsyncEventNexus::new();
    sender.add_consumer(7, publisher).unwrap();
    let (_r, _s) = (receiver.start().unwrap(), sender.start().unwrap());
    while receiver.state() != LoopState::Looping || sender.state() != LoopState::Looping {
        tokio::task::yield_now().await;
    }
    (sender, receiver, done_rx)
}

/// Ingests `n` events into `sender`; the time until the receiving side has handled them all.
async fn time_pair(
    n: u64,
    progress: &Progress,
    (sender, receiver, done): (
        AsyncEventNexus,
        AsyncEventNexus,
        tokio::sync::oneshot::Receiver<Instant>,
    ),
) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        sender.ingest(event(i)).await.unwrap();
        progress.sent(i + 1);
    }
    let end = done.await.unwrap();
    receiver.stop();
    sender.stop();
    end - start
}

/// Time for N events from one nexus's `ingest` to the other nexus's handler.
async fn through_nexus(url: &str, round: usize, progress: Arc<Progress>) -> Duration {
    let prefix = format!("bench.nexus.{round}");
    let out = NatsBoundary::connect(url, &prefix).await.unwrap();
    // Plain NATS drops what a subscription's buffer cannot hold: room for the whole run.
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(2 * N as usize)
        .connect(url)
        .await
        .unwrap();
    let into = NatsBoundary::with_client(client, &prefix);
    let ends = pair(N, progress.clone(), into.subscriber(7), out.publisher()).await;
    time_pair(N, &progress, ends).await
}

/// Returns once the server has processed what `client` sent before, its subscription among
/// it, as the nexus subscriber waits before it starts: a message to an inbox of its own comes
/// back only then. (`flush` only writes to the socket: the first messages of a round published
/// right after it could reach the server before the subscription, and be dropped there.)
async fn in_place(client: &async_nats::Client) {
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await.unwrap();
    client.publish(inbox, bytes::Bytes::new()).await.unwrap();
    client.flush().await.unwrap();
    echo.next().await.expect("the echo comes back");
}

/// Time for N messages of the same bytes, published and received with `async-nats` alone, each
/// encoded as the nexus publisher encodes it.
async fn raw(url: &str, round: usize, progress: Arc<Progress>) -> Duration {
    let subject = format!("bench.raw.{round}");
    let publisher = async_nats::connect(url).await.unwrap();
    let subscriber = async_nats::ConnectOptions::new()
        .subscription_capacity(2 * N as usize)
        .connect(url)
        .await
        .unwrap();
    let mut messages = subscriber.subscribe(subject.clone()).await.unwrap();
    in_place(&subscriber).await;
    let arrivals = progress.clone();
    let received = tokio::spawn(async move {
        let mut n = 0;
        while messages.next().await.is_some() {
            n += 1;
            arrivals.arrived(n);
            if n == N {
                break;
            }
        }
        Instant::now()
    });
    let start = Instant::now();
    // The subject as a literal would give it: handed to the client without a copy or a count.
    let subject: &'static str = Box::leak(subject.into_boxed_str());
    // Encoded as the nexus publisher encodes them: each into a vector, then copied after the last
    // one into a buffer, each message a slice of it, so that they take one allocation between
    // them.
    let mut out = BytesMut::new();
    let mut scratch = Vec::with_capacity(256);
    for i in 0..N {
        if out.capacity() < 256 {
            out = BytesMut::with_capacity(16 * 1024);
        }
        scratch.clear();
        nexus::wire::encode_to(&event(i), &mut scratch).unwrap();
        out.extend_from_slice(&scratch);
        publisher
            .publish(subject, out.split().freeze())
            .await
            .unwrap();
        progress.sent(i + 1);
    }
    received.await.unwrap() - start
}

/// Time for `N_JS` events from one nexus's `ingest` to the other nexus's handler, through
/// JetStream.
async fn through_jetstream(url: &str, round: usize, progress: Arc<Progress>) -> Duration {
    let prefix = format!("bench.js.{round}");
    let stream = format!("BENCH_JS_{round}");
    let connect = || async {
        NatsBoundary::connect(url, &prefix)
            .await
            .unwrap()
            .jetstream(&stream)
            .await
            .unwrap()
    };
    let (out, into) = (connect().await, connect().await);
    let subscriber = into.durable_subscriber(7, "bench");
    let ends = pair(N_JS, progress.clone(), subscriber, out.publisher()).await;
    time_pair(N_JS, &progress, ends).await
}

/// Time for `N_JS` messages of the same bytes with `async-nats` alone: each published with a
/// message id and its acknowledgement awaited, each consumed by a durable pull consumer and
/// acknowledged (waiting for the server's confirmation).
async fn raw_jetstream(url: &str, round: usize, progress: Arc<Progress>) -> Duration {
    use async_nats::jetstream::{self, consumer::pull, stream};
    let subject = format!("bench.rawjs.{round}.7");
    let context = jetstream::new(async_nats::connect(url).await.unwrap());
    let stream = context
        .get_or_create_stream(stream::Config {
            name: format!("BENCH_RAW_JS_{round}"),
            subjects: vec![format!("bench.rawjs.{round}.>")],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer = stream
        .get_or_create_consumer(
            "bench",
            pull::Config {
                durable_name: Some("bench".to_owned()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let arrivals = progress.clone();
    let received = tokio::spawn(async move {
        let mut n = 0;
        while let Some(message) = messages.next().await {
            message.unwrap().double_ack().await.unwrap();
            n += 1;
            arrivals.arrived(n);
            if n == N_JS {
                break;
            }
        }
        Instant::now()
    });
    let publisher = jetstream::new(async_nats::connect(url).await.unwrap());
    let start = Instant::now();
    for i in 0..N_JS {
        let bytes = nexus::wire::encode(&event(i)).unwrap();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("raw-{round}-{i}").as_str());
        publisher
            .publish_with_headers(subject.clone(), headers, bytes.into())
            .await
            .unwrap()
            .await
            .unwrap();
        progress.sent(i + 1);
    }
    received.await.unwrap() - start
}

/// The median of `xs`; NaN when there are none.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks; nothing to list
    }
    let installed = Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !installed {
        println!("nats: skipped, nats-server is not on the PATH (Debian package nats-server)");
        return;
    }
    let (server, port) = start_server();
    let url = format!("nats://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // `NEXUS_NATS_ONLY=nexus` or `=raw`: the plain case of one side only, to profile it.
    if let Ok(only) = std::env::var("NEXUS_NATS_ONLY") {
        for round in 0..ROUNDS {
            let rate = match only.as_str() {
                "raw" => side(&rt, round, "plain raw", N, |p| raw(&url, round, p)),
                _ => side(&rt, round, "plain nexus", N, |p| {
                    through_nexus(&url, round, p)
                }),
            };
            if let Some(rate) = rate {
                println!("{only}: {rate:.0} events/s");
            }
        }
        stop_server(server);
        return;
    }
    let mut rates: [Vec<f64>; 4] = Default::default();
    let mut stalled = 0;
    let shown = |rate: Option<f64>| rate.map_or("stalled".to_owned(), |r| format!("{r:.0}"));
    let mut keep = |rates: &mut Vec<f64>, rate: Option<f64>| match rate {
        Some(rate) => rates.push(rate),
        None => stalled += 1,
    };
    for round in 0..ROUNDS {
        // Each side goes first in every other round, so that neither always meets the server
        // as the other left it.
        let (n, r) = in_order(
            round % 2 == 0,
            || {
                side(&rt, round, "plain nexus", N, |p| {
                    through_nexus(&url, round, p)
                })
            },
            || side(&rt, round, "plain raw", N, |p| raw(&url, round, p)),
        );
        println!(
            "round {round}: plain: nexus {:>9} events/s, raw async-nats {:>9} messages/s",
            shown(n),
            shown(r),
        );
        let [nexus, raw, ..] = &mut rates;
        keep(nexus, n);
        keep(raw, r);
    }
    for round in 0..JS_ROUNDS {
        let (j, rj) = in_order(
            round % 2 == 0,
            || {
                side(&rt, round, "JetStream nexus", N_JS, |p| {
                    through_jetstream(&url, round, p)
                })
            },
            || {
                side(&rt, round, "JetStream raw", N_JS, |p| {
                    raw_jetstream(&url, round, p)
                })
            },
        );
        println!(
            "round {round}: JetStream: nexus {:>7} events/s, raw async-nats {:>7} messages/s",
            shown(j),
            shown(rj),
        );
        let [.., js, raw_js] = &mut rates;
        keep(js, j);
        keep(raw_js, rj);
    }
    let [nexus, raw, js, raw_js] = rates.map(median);
    // Three digits: with two, 0.797 would read as the 0.80 it falls short of.
    println!(
        "\nmedians: plain ({ROUNDS} rounds of {N} events): nexus {nexus:.0}/s, raw {raw:.0}/s, \
         nexus/raw {:.3}; JetStream ({JS_ROUNDS} rounds of {N_JS} events): nexus {js:.0}/s, \
         raw {raw_js:.0}/s, \
         nexus/raw {:.3}; sides stalled and left out: {stalled}",
        nexus / raw,
        js / raw_js
    );
    println!(
        "summary: nats_boundary_per_s={nexus:.0} raw_nats_per_s={raw:.0} \
         nats_vs_raw={:.3} jetstream_boundary_per_s={js:.0} raw_jetstream_per_s={raw_js:.0} \
         jetstream_vs_raw={:.3} nats_sides_stalled={stalled}",
        nexus / raw,
        js / raw_js
    );
    stop_server(server);
}

/// Runs one side of a round, `n` events: its events per second, or `None` when it has not
/// finished within `STALL`, saying how far it got.
fn side<F: Future<Output = Duration>>(
    rt: &tokio::runtime::Runtime,
    round: usize,
    what: &str,
    n: u64,
    run: impl FnOnce(Arc<Progress>) -> F,
) -> Option<f64> {
    let progress = Arc::new(Progress::default());
    let run = run(progress.clone());
    match rt.block_on(async { tokio::time::timeout(STALL, run).await }) {
        Ok(took) => Some(n as f64 / took.as_secs_f64()),
        Err(_) => {
            println!(
                "round {round}: {what} stalled: {} of {n} sent, {} arrived after {STALL:?}; \
                 left out of the medians",
                progress.sent.load(Ordering::Relaxed),
                progress.arrived.load(Ordering::Relaxed),
            );
            None
        }
    }
}

/// Runs `a` and `b`, `a` first if `a_first`; their results in the order `(a, b)`.
fn in_order<A, B>(a_first: bool, a: impl FnOnce() -> A, b: impl FnOnce() -> B) -> (A, B) {
    if a_first {
        let a = a();
        (a, b())
    } else {
        let b = b();
        (a(), b)
    }
}

/// Stops the server of `start_server` and removes its store.
fn stop_server(mut server: Child) {
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("nexus-bench-nats-{}", std::process::id())),
    );
}

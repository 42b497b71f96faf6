//! Events per second through a NATS boundary (plain NATS: publisher in one nexus, subscriber in
//! another, separate connections), beside raw `async-nats` publish/subscribe of the same bytes,
//! in the same run. Starts its own `nats-server` on a loopback port.
//!
//! ```text
//! cargo bench --features nats --bench nats
//! ```

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use nexus::bus::nats::NatsBoundary;
use nexus::{AsyncEventNexus, Event, EventQueue, LoopState};

const N: u64 = 100_000;
const ROUNDS: usize = 5;

fn start_server() -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
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

/// Time for N events from one nexus's `ingest` to the other nexus's handler.
async fn through_nexus(url: &str, round: usize) -> Duration {
    let prefix = format!("bench.nexus.{round}");
    let out = NatsBoundary::connect(url, &prefix).await.unwrap();
    let into = NatsBoundary::connect(url, &prefix).await.unwrap();
    let receiver = AsyncEventNexus::new();
    let count = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let done_tx = std::sync::Mutex::new(Some(done_tx));
    let c = count.clone();
    receiver
        .add_handler(7, move |_e: Event, _q: EventQueue| {
            if c.fetch_add(1, Ordering::Relaxed) + 1 == N
                && let Some(tx) = done_tx.lock().unwrap().take()
            {
                let _ = tx.send(Instant::now());
            }
        })
        .unwrap();
    receiver.add_producer(into.subscriber(7)).unwrap();
    let sender = AsyncEventNexus::new();
    sender.add_consumer(7, out.publisher()).unwrap();
    let (_r, _s) = (receiver.start().unwrap(), sender.start().unwrap());
    while receiver.state() != LoopState::Looping || sender.state() != LoopState::Looping {
        tokio::task::yield_now().await;
    }
    let start = Instant::now();
    for i in 0..N {
        sender.ingest(event(i)).await.unwrap();
    }
    let end = done_rx.await.unwrap();
    receiver.stop();
    sender.stop();
    end - start
}

/// Time for N messages of the same bytes, published and received with `async-nats` alone.
async fn raw(url: &str, round: usize) -> Duration {
    let subject = format!("bench.raw.{round}");
    let publisher = async_nats::connect(url).await.unwrap();
    let subscriber = async_nats::connect(url).await.unwrap();
    let mut messages = subscriber.subscribe(subject.clone()).await.unwrap();
    subscriber.flush().await.unwrap();
    let received = tokio::spawn(async move {
        let mut n = 0;
        while messages.next().await.is_some() {
            n += 1;
            if n == N {
                break;
            }
        }
        Instant::now()
    });
    let start = Instant::now();
    for i in 0..N {
        let bytes = nexus::wire::encode(&event(i)).unwrap();
        publisher
            .publish(subject.clone(), bytes.into())
            .await
            .unwrap();
    }
    received.await.unwrap() - start
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks; nothing to list
    }
    let (mut server, port) = start_server();
    let url = format!("nats://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut nexus_rates, mut raw_rates) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let n = rt.block_on(through_nexus(&url, round));
        let r = rt.block_on(raw(&url, round));
        nexus_rates.push(N as f64 / n.as_secs_f64());
        raw_rates.push(N as f64 / r.as_secs_f64());
        println!(
            "round {round}: nexus {:>9.0} events/s, raw async-nats {:>9.0} messages/s",
            N as f64 / n.as_secs_f64(),
            N as f64 / r.as_secs_f64()
        );
    }
    let (nexus, raw) = (median(nexus_rates), median(raw_rates));
    println!("\nmedians of {ROUNDS} rounds of {N}: nexus {nexus:.0}/s, raw {raw:.0}/s");
    println!(
        "summary: nats_boundary_per_s={nexus:.0} raw_nats_per_s={raw:.0} nats_ratio={:.2}",
        raw / nexus
    );
    let _ = server.kill();
}

//! Two event domains in different processes (or on different machines) joined through NATS
//! JetStream: an ordering domain whose timer makes an order every 200 ms, and a shipping domain
//! that handles them. Each has its own nexus; only `ORDER` events cross, on the subject
//! `shop.events.10`.
//!
//! Start a server with JetStream (`nats-server -js`), then, in two terminals:
//!
//! ```text
//! cargo run --features nats --example distributed -- --role shipping
//! cargo run --features nats --example distributed -- --role ordering
//! ```
//!
//! or both domains as two tasks of one process: `-- --role both`. `--url` picks the server
//! (default `$NATS_URL`, else `nats://127.0.0.1:4222`). Stop the shipping side with Ctrl-C and
//! start it again: it resumes where it stopped, and no order is handled twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nexus::bus::nats::NatsBoundary;
use nexus::sources::{Timer, TimerKind};
use nexus::{AsyncEventNexus, Event, EventQueue, NexusError};

/// An order, from the ordering domain to the shipping domain.
pub const ORDER: i64 = 10;
/// How many orders the ordering domain makes.
pub const ORDERS: u64 = 10;
const PREFIX: &str = "shop.events";
const STREAM: &str = "SHOP";

/// Which domain (or both) this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Makes orders and publishes them.
    Ordering,
    /// Handles the orders.
    Shipping,
    /// Both, as two tasks.
    Both,
}

/// Where the example's lines go: stdout when run, a buffer when tested.
pub type Out = Arc<dyn Fn(String) + Send + Sync>;

async fn boundary(url: &str) -> Result<NatsBoundary, NexusError> {
    NatsBoundary::connect(url, PREFIX)
        .await?
        .jetstream(STREAM)
        .await
}

/// The ordering domain: runs until its timer has made every order and each was stored.
pub async fn ordering(url: &str, out: Out) -> Result<(), NexusError> {
    let nats = boundary(url).await?;
    let nexus = AsyncEventNexus::new();
    let timer = Timer::new(
        Duration::from_millis(200),
        TimerKind::CountUp(ORDERS),
        ORDER,
    )?;
    nexus.add_producer(timer)?;
    nexus.add_consumer(ORDER, nats.publisher().origin("ordering"))?;
    out(format!("ordering: publishing {ORDERS} orders to {url}"));
    nexus.loop_until_exhausted().await?;
    out("ordering: every order is stored".to_owned());
    nexus.cleanup().await
}

/// The shipping domain: handles orders until `stop_after` of them arrived (or, with `None`,
/// until Ctrl-C or SIGTERM). Returns how many it handled.
pub async fn shipping(url: &str, stop_after: Option<u64>, out: Out) -> Result<u64, NexusError> {
    let nats = boundary(url).await?;
    let nexus = AsyncEventNexus::new();
    nexus.add_producer(nats.durable_subscriber(ORDER, "shipping"))?;
    let handled = Arc::new(AtomicU64::new(0));
    let (count, weak) = (handled.clone(), nexus.downgrade());
    nexus.add_handler(ORDER, move |event: Event, _queue: EventQueue| {
        out(format!(
            "shipping: order {} (event {})",
            event.payload, event.id
        ));
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        if Some(n) == stop_after
            && let Some(nexus) = weak.upgrade()
        {
            nexus.stop();
        }
    })?;
    nexus.stop_on_signals();
    nexus.loop_forever().await?;
    nexus.cleanup().await?;
    Ok(handled.load(Ordering::SeqCst))
}

/// Runs `role`; with `Both`, the shipping side stops once every order arrived.
pub async fn run(role: Role, url: &str, out: Out) -> Result<(), NexusError> {
    match role {
        Role::Ordering => ordering(url, out).await,
        Role::Shipping => shipping(url, None, out).await.map(drop),
        Role::Both => {
            let shipped = tokio::spawn({
                let (url, out) = (url.to_owned(), out.clone());
                async move { shipping(&url, Some(ORDERS), out).await }
            });
            ordering(url, out.clone()).await?;
            let handled = shipped.await.expect("shipping task")?;
            out(format!("both: {handled} orders shipped"));
            Ok(())
        }
    }
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), NexusError> {
    let mut role = Role::Both;
    let mut url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().as_deref()) {
            ("--role", Some("ordering")) => role = Role::Ordering,
            ("--role", Some("shipping")) => role = Role::Shipping,
            ("--role", Some("both")) => role = Role::Both,
            ("--url", Some(value)) => url = value.to_owned(),
            _ => {
                eprintln!(
                    "usage: distributed [--role ordering|shipping|both] [--url nats://HOST:PORT]"
                );
                std::process::exit(2);
            }
        }
    }
    run(role, &url, Arc::new(|line| println!("{line}"))).await
}

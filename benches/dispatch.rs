//! Ingest into one handler, beside the floor: the same handler body, boxed, looked up by type in
//! a `HashMap` and awaited inline with no nexus at all.
//!
//! ```text
//! cargo bench --bench dispatch
//! ```
//!
//! Prints criterion's figures, then one line per path with the median ns per event and the
//! ratio to the floor.

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use nexus::{AsyncEventNexus, Event, EventQueue, Payload};

type BoxedHandler =
    Box<dyn Fn(Event, EventQueue) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The work every handler does: read the payload.
fn body(event: &Event) {
    black_box(event.payload.as_int());
    black_box(event.payload.as_str());
}

fn payload(i: u64, text: bool) -> Payload {
    if text {
        Payload::from(format!("event {i}"))
    } else {
        Payload::from(i as i64)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn bench_ingest(c: &mut Criterion) {
    let rt = runtime();
    for (label, text) in [("int_payload", false), ("text_payload", true)] {
        let mut group = c.benchmark_group(format!("ingest_one_handler/{label}"));
        group.throughput(Throughput::Elements(1));
        group.measurement_time(Duration::from_secs(3));

        let nexus = AsyncEventNexus::new();
        nexus
            .add_handler(99, |event: Event, _queue: EventQueue| async move {
                body(&event)
            })
            .expect("handler");
        let _loop = rt.block_on(async { nexus.start() }).expect("start");
        group.bench_function("nexus", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let nexus = nexus.clone();
                async move {
                    let start = Instant::now();
                    for i in 0..iters {
                        let event = Event::new(i, 99, 0, payload(i, text));
                        nexus.ingest(event).await.expect("ingest");
                    }
                    start.elapsed()
                }
            })
        });

        let mut table: HashMap<i64, BoxedHandler> = HashMap::new();
        table.insert(
            99,
            Box::new(|event: Event, _queue: EventQueue| Box::pin(async move { body(&event) })),
        );
        let queue = nexus.queue().clone();
        group.bench_function("floor", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (table, queue) = (&table, queue.clone());
                async move {
                    let start = Instant::now();
                    for i in 0..iters {
                        let event = Event::new(i, 99, 0, payload(i, text));
                        let key = event.event_type.as_int().expect("int type");
                        let handler = table.get(&key).expect("handler");
                        handler(event, queue.clone()).await;
                    }
                    start.elapsed()
                }
            })
        });
        group.finish();
        nexus.stop();
    }
}

/// The median of one benchmark, from criterion's saved estimates, in ns.
fn median_ns(group: &str, function: &str) -> Option<f64> {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned());
    let path = format!("{target}/criterion/{group}/{function}/new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_ingest(&mut criterion);
    criterion.final_summary();

    println!("\npath                               ns/event   floor ns   ratio");
    for label in ["int_payload", "text_payload"] {
        let group = format!("ingest_one_handler_{label}");
        if let (Some(n), Some(f)) = (median_ns(&group, "nexus"), median_ns(&group, "floor")) {
            println!(
                "ingest -> one handler ({label:<12}) {n:>8.1}   {f:>8.1}   {:.2}x",
                n / f
            );
        }
    }
}

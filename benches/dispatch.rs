//! Ingest into one handler, beside the floor: the same handler body, boxed, looked up by type in
//! a `HashMap` and awaited inline with no nexus at all.
//!
//! ```text
//! cargo bench --bench dispatch
//! ```
//!
//! Prints criterion's figures, then one line per path with the median ns per event and the
//! ratio to the floor, the heap allocations per event of each (a counting global allocator),
//! then how long a Timer takes for 1000 ticks of 1 ms beside `tokio::time::interval` (the
//! schedule both should keep: 1.000 s).
#![allow(unsafe_code)] // the counting global allocator below

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use nexus::sources::{Timer, TimerKind};
use nexus::{AsyncEventNexus, Event, EventQueue, Payload};

/// Counts heap allocations, then leaves the work to the system allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so it keeps
// all of `System`'s guarantees; counting touches only an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, which is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`; the caller's contract for `realloc` is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations per event, nexus and floor, with an integer payload.
fn allocations_per_event(events: u64) -> (f64, f64) {
    let rt = runtime();
    rt.block_on(async {
        let nexus = AsyncEventNexus::new();
        nexus
            .add_handler(99, |event: Event, _queue: EventQueue| async move {
                body(&event)
            })
            .expect("handler");
        let _loop = nexus.start().expect("start");
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for i in 0..events {
            nexus
                .ingest(Event::new(i, 99, 0, payload(i, false)))
                .await
                .expect("ingest");
        }
        let through_nexus = ALLOCATIONS.load(Ordering::Relaxed) - before;

        let handler: BoxedHandler =
            Box::new(|event: Event, _queue: EventQueue| Box::pin(async move { body(&event) }));
        let queue = nexus.queue().clone();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for i in 0..events {
            handler(Event::new(i, 99, 0, payload(i, false)), queue.clone()).await;
        }
        let floor = ALLOCATIONS.load(Ordering::Relaxed) - before;
        nexus.stop();
        (
            through_nexus as f64 / events as f64,
            floor as f64 / events as f64,
        )
    })
}

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

/// Real time for `ticks` firings of a 1 ms Timer into a nexus, and for as many ticks of a tokio
/// interval.
fn timer_schedule(ticks: u64) -> (Duration, Duration) {
    let rt = runtime();
    rt.block_on(async {
        let nexus = AsyncEventNexus::new();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let done_tx = std::sync::Mutex::new(Some(done_tx));
        nexus
            .add_handler(1, move |event: Event, _queue: EventQueue| {
                if event.payload.as_int() == Some(ticks as i64)
                    && let Some(tx) = done_tx.lock().expect("lock").take()
                {
                    let _ = tx.send(Instant::now());
                }
            })
            .expect("handler");
        let timer = Timer::new(Duration::from_millis(1), TimerKind::CountUp(ticks), 1);
        nexus.add_producer(timer.expect("timer")).expect("producer");
        let start = Instant::now();
        let running = nexus.start().expect("start");
        let end = done_rx.await.expect("last tick");
        nexus.stop();
        running.await.expect("loop task").expect("loop");
        let timer_took = end - start;

        let start = Instant::now();
        let mut interval = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_millis(1),
            Duration::from_millis(1),
        );
        for _ in 0..ticks {
            interval.tick().await;
        }
        (timer_took, start.elapsed())
    })
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
    let (nexus_allocs, floor_allocs) = allocations_per_event(100_000);
    println!(
        "heap allocations per event (integer payload): nexus {nexus_allocs:.2}, floor {floor_allocs:.2}"
    );
    let (timer, interval) = timer_schedule(1000);
    println!(
        "Timer, 1000 ticks of 1 ms: {:.4} s (tokio interval: {:.4} s; schedule 1.0000 s)",
        timer.as_secs_f64(),
        interval.as_secs_f64()
    );
}

//! Heap allocations per event on each dispatch path whose handlers and filters complete at once,
//! counted in a process of its own (this bench), so that no timed case runs under the counting
//! allocator. Ends with one `summary:` line.
//!
//! ```text
//! cargo bench --manifest-path bench/Cargo.toml --bench allocations
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use nexus::bus::EventFanout;
use nexus::{AsyncEventNexus, Event, EventQueue, Handler};

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

const TYPE: i64 = 99;
const EVENTS: u64 = 100_000;

fn handler() -> impl Fn(Event, EventQueue) -> std::future::Ready<()> + Send + Sync + 'static {
    |event: Event, _queue: EventQueue| {
        black_box(event.payload.as_int());
        std::future::ready(())
    }
}

/// Allocations per event for `EVENTS` ingests into `nexus` (events made before counting).
fn per_event(nexus: AsyncEventNexus, make: impl Fn(u64) -> Event) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let running = nexus.start().expect("start");
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        // Warm up: the nexus keeps the memory of its first calls for the next.
        for i in 0..100 {
            nexus.ingest(make(i)).await.expect("ingest");
        }
        let ready: Vec<Event> = (0..EVENTS).map(&make).collect();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for event in ready {
            nexus.ingest(event).await.expect("ingest");
        }
        let counted = ALLOCATIONS.load(Ordering::Relaxed) - before;
        nexus.stop();
        let _ = running.await;
        counted as f64 / EVENTS as f64
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let event = |i: u64| Event::new(i, TYPE, 0, i as i64);

    let single = {
        let nexus = AsyncEventNexus::new();
        nexus
            .add_handler(TYPE, |event: Event, _queue: EventQueue| async move {
                black_box(event.payload.as_int());
            })
            .expect("handler");
        per_event(nexus, event)
    };
    let plain = {
        let nexus = AsyncEventNexus::new();
        nexus.add_handler(TYPE, handler()).expect("handler");
        per_event(nexus, event)
    };
    let filters = {
        let nexus = AsyncEventNexus::new();
        for _ in 0..4 {
            nexus.add_filter(|event: &Event, _queue: &EventQueue| {
                let value = event.payload.as_int();
                async move { black_box(value) == Some(-1) }
            });
        }
        nexus.add_handler(TYPE, handler()).expect("handler");
        per_event(nexus, event)
    };
    let fanout = {
        let nexus = AsyncEventNexus::new();
        let fanout = EventFanout::new();
        for _ in 0..8 {
            fanout.register(Handler::new(handler()));
        }
        nexus.add_consumer(TYPE, fanout).expect("fanout");
        per_event(nexus, event)
    };
    println!("heap allocations per event, handlers and filters completing at once:");
    println!("  ingest into one async handler   {single:.3}");
    println!("  ingest into one plain handler   {plain:.3}");
    println!("  four filters, then the handler  {filters:.3}");
    println!("  fanout to eight handlers        {fanout:.3}");
    println!(
        "summary: allocs_per_event={single:.3} allocs_per_event_plain={plain:.3} allocs_per_event_filters4={filters:.3} allocs_per_event_fanout8={fanout:.3}"
    );
}

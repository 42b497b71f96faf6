//! The dispatch path allocates nothing for a call that completes when first polled: a handler's
//! or filter's future is placed in memory the nexus keeps between calls. Only a call that has to
//! wait gets a box of its own.
//!
//! Reading a message (`wire::decode`) allocates once for each text the event keeps, and nothing
//! else.
//!
//! This binary installs a counting allocator, so it holds these tests alone. It counts the
//! allocations of the thread a test runs on: the nexus runs on a current-thread runtime there,
//! so every part of a dispatch does too, while the test harness's own thread allocates at times
//! of its own (a few allocations, now and then, inside the measured loop). The `allocations`
//! bench counts a whole process of its own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use nexus::bus::EventFanout;
use nexus::{AsyncEventNexus, Event, EventQueue, Handler, filter, handler};

struct Counting;

thread_local! {
    /// This thread's allocations. Const-initialised and without a destructor, so that reading
    /// it never allocates.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged, only counting.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // A thread being torn down may allocate after its locals are gone: not counted.
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// How many allocations this thread has made.
fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Registered by attribute: a nexus built by `nexus::registered()` has it, the others do not.
#[handler(event_type = 4)]
async fn by_attribute(event: Event, _queue: EventQueue) {
    std::hint::black_box(event.payload.as_int());
}

/// Registered by attribute; its future borrows the event and the queue handle.
#[filter]
async fn filter_by_attribute(event: &Event, _queue: &EventQueue) -> bool {
    event.id == u64::MAX
}

/// Allocations per event over 10,000 ingests of `make`'s events, after 100 to set up what the
/// nexus keeps.
async fn allocations_per_event(nexus: &AsyncEventNexus, make: impl Fn(u64) -> Event) -> f64 {
    for i in 0..100 {
        nexus.ingest(make(i)).await.unwrap();
    }
    let before = allocations();
    for i in 0..10_000 {
        nexus.ingest(make(i)).await.unwrap();
    }
    (allocations() - before) as f64 / 10_000.0
}

/// An async handler for type 1, and one for type 2 that queues an event of type 1.
fn with_handlers_for_1_and_2(nexus: &AsyncEventNexus) {
    nexus
        .add_handler(1, |event: Event, _queue: EventQueue| async move {
            std::hint::black_box(event.payload.as_int());
        })
        .unwrap();
    nexus
        .add_handler(2, |event: Event, queue: EventQueue| async move {
            // A secondary event for type 1: dispatched before `ingest` returns.
            queue.put(Event::new(event.id, 1, 0, 7))
        })
        .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn async_handlers_and_filters_that_complete_at_once_allocate_nothing_per_event() {
    let nexus = AsyncEventNexus::new();
    // Two filters and two handlers of different future sizes, all async.
    nexus.add_filter(|event: &Event, _queue: &EventQueue| {
        let id = event.id;
        async move { id == u64::MAX }
    });
    nexus.add_filter(|event: &Event, _queue: &EventQueue| {
        let big = [event.id; 16];
        async move { big[3] == u64::MAX }
    });
    with_handlers_for_1_and_2(&nexus);
    let _running = nexus.start().unwrap();
    tokio::task::yield_now().await;

    // The first events set up what is kept (the handler table's snapshot, the memory blocks).
    let per_event =
        allocations_per_event(&nexus, |i| Event::new(i, 1 + (i % 2) as i64, 0, 1)).await;
    assert_eq!(per_event, 0.0, "allocations per event");
    assert_eq!(nexus.stats().dispatched, 100 + 10_000 + (100 + 10_000) / 2);

    // The same of a handler and a filter registered by attribute.
    let registered = nexus::registered().build().unwrap();
    let _registered_running = registered.start().unwrap();
    tokio::task::yield_now().await;
    let per_event = allocations_per_event(&registered, |i| Event::new(i, 4, 0, 1)).await;
    assert_eq!(per_event, 0.0, "allocations per event, by attribute");
    assert_eq!(registered.stats().dispatched, 100 + 10_000);

    // With no filter: an event whose one handler is all there is to it, one whose handler
    // queues a secondary event, and one handed to a fanout of two handlers.
    let plain = AsyncEventNexus::new();
    with_handlers_for_1_and_2(&plain);
    let fanout = EventFanout::new();
    for _ in 0..2 {
        fanout.register(Handler::new(
            |event: Event, _queue: EventQueue| async move {
                std::hint::black_box(event.payload.as_int());
            },
        ));
    }
    plain.add_consumer(3, fanout).unwrap();
    let _plain_running = plain.start().unwrap();
    tokio::task::yield_now().await;
    let per_event =
        allocations_per_event(&plain, |i| Event::new(i, 1 + (i % 3) as i64, 0, 1)).await;
    assert_eq!(per_event, 0.0, "allocations per event, no filter");
    // Each event is dispatched, and each of type 2 leads to one more.
    let dispatched = |n: u64| n + (0..n).filter(|i| i % 3 == 1).count() as u64;
    assert_eq!(
        plain.stats().dispatched,
        dispatched(100) + dispatched(10_000)
    );

    // The same events given to `ingest_all`, ten at a time, to the nexus with filters and to
    // the one without.
    for (nexus, kinds) in [(&nexus, 2), (&plain, 3)] {
        let before = allocations();
        for batch in 0..1_000 {
            let mut events =
                (batch * 10..batch * 10 + 10).map(|i| Event::new(i, 1 + (i % kinds) as i64, 0, 1));
            nexus.ingest_all(&mut events).await.unwrap();
        }
        let per_event = (allocations() - before) as f64 / 10_000.0;
        assert_eq!(
            per_event, 0.0,
            "allocations per event, ingest_all ({kinds} types)"
        );
    }
    assert_eq!(
        plain.stats().dispatched,
        dispatched(100) + 2 * dispatched(10_000)
    );

    // Two handlers of one type in `multiple` mode.
    let several = AsyncEventNexus::builder().multiple(true).build();
    for _ in 0..2 {
        several
            .add_handler(1, |event: Event, _queue: EventQueue| async move {
                std::hint::black_box(event.payload.as_int());
            })
            .unwrap();
    }
    let _several_running = several.start().unwrap();
    tokio::task::yield_now().await;
    let per_event = allocations_per_event(&several, |i| Event::new(i, 1, 0, 1)).await;
    assert_eq!(per_event, 0.0, "allocations per event, multiple mode");
    assert_eq!(several.stats().dispatched, 100 + 10_000);

    // A call that waits still works, and costs two boxes: its future's and the dispatch's note
    // of where it stopped.
    nexus
        .add_handler(3, |_event: Event, _queue: EventQueue| async move {
            tokio::task::yield_now().await;
        })
        .unwrap();
    nexus.ingest(Event::new(1, 3, 0, 0)).await.unwrap();
    let before = allocations();
    for i in 0..100 {
        nexus.ingest(Event::new(i, 3, 0, 0)).await.unwrap();
    }
    let per_event = (allocations() - before) as f64 / 100.0;
    assert!(per_event <= 2.0, "{per_event} allocations per waiting call");
}

/// Reading a message allocates once for each text the event keeps (a named type, a text
/// payload), each copied once into the shared text that keeps it, and nothing else: with the
/// keys in the order `encode` writes them, in another order, and with escapes (read by
/// `serde_json`, whose scratch buffer is the one allocation more). The wire format comes with the
/// transports' features.
#[cfg(any(feature = "zmq", feature = "nats"))]
#[test]
fn reading_a_message_allocates_once_for_each_text_the_event_keeps() {
    let cases: [(&[u8], u64); 6] = [
        (
            br#"{"id": 1, "type": 7, "priority": 0, "payload": null}"#,
            0,
        ),
        (
            br#"{"id": 1, "type": 7, "priority": 0, "payload": "order 1"}"#,
            1,
        ),
        (
            br#"{"id": 1, "type": "order.placed", "priority": 0, "payload": 5}"#,
            1,
        ),
        (
            br#"{"id": 1, "type": "order.placed", "priority": 0, "payload": "order 1"}"#,
            2,
        ),
        (
            br#"{"payload": "order 1", "priority": 0, "type": "order.placed", "id": 1}"#,
            2,
        ),
        (
            br#"{"id": 1, "type": "caf\u00e9", "priority": 0, "payload": 5}"#,
            2,
        ),
    ];
    for (message, expected) in cases {
        let before = allocations();
        let event = nexus::wire::decode(message, Default::default()).unwrap();
        let made = allocations() - before;
        assert_ne!(event.event_type, nexus::EventType::Int(0));
        assert_eq!(made, expected, "{}", String::from_utf8_lossy(message));
    }
}

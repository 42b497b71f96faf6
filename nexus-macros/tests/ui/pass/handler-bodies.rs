//! A handler as any `async fn` may be written: an inner attribute, an item of its own (a `static`
//! shared by every call), a parameter declared `mut`, one left unnamed, one destructured, an early
//! `return`, `?`, and an `.await`. Each compiles as written and runs through a nexus. And a call
//! keeps its event whole until its future ends, as an `async fn`'s does, though the body reads
//! only one field.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nexus_core::{Event, EventQueue, NexusError, Payload, handler};

#[handler(event_type = 1)]
async fn counts(mut event: Event, queue: EventQueue) -> Result<(), NexusError> {
    #![allow(clippy::needless_return)]
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let calls = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    event.priority = 5;
    if event.id == 0 {
        return Ok(());
    }
    tokio::task::yield_now().await;
    queue.put(Event::new(calls, 2, event.priority, ()))?;
    Ok(())
}

static SECONDARY: AtomicU64 = AtomicU64::new(0);

#[handler(event_type = 2)]
async fn secondary(Event { id, priority, .. }: Event, _: EventQueue) {
    assert_eq!(priority, 5, "the first handler's change to its own event");
    tokio::task::yield_now().await;
    SECONDARY.fetch_add(id, Ordering::SeqCst);
}

static DROPPED: AtomicBool = AtomicBool::new(false);

/// Says when the payload holding it is dropped.
#[derive(Debug)]
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        DROPPED.store(true, Ordering::SeqCst);
    }
}

#[handler(event_type = 3)]
async fn reads_the_id(event: Event, _queue: EventQueue) {
    assert!(
        !DROPPED.load(Ordering::SeqCst),
        "the payload was dropped before the body ran"
    );
    assert_eq!(event.id, 7);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let nexus = nexus_core::registered().build().unwrap();
        let _loop = nexus.start().unwrap();
        for id in 0..3 {
            nexus.ingest(Event::new(id, 1, 0, ())).await.unwrap();
        }
        // Calls 2 and 3 put one event each, numbered by the count the body's `static` kept
        // across calls.
        assert_eq!(SECONDARY.load(Ordering::SeqCst), 2 + 3);
        let call = reads_the_id(
            Event::new(7, 3, 0, Payload::value(Guard)),
            nexus.queue().clone(),
        );
        assert!(!DROPPED.load(Ordering::SeqCst), "dropped as the call was made");
        call.await;
        assert!(DROPPED.load(Ordering::SeqCst), "dropped with the call's future");
        nexus.stop();
    });
}

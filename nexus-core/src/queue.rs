//! The bounded queue of secondary events that handlers are given: [`EventQueue`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::NexusError;
use crate::event::Event;

/// The default capacity of a nexus's secondary event queue, as in the original.
pub const DEFAULT_QUEUE_CAPACITY: usize = 50;

/// The queue a handler puts secondary events on.
///
/// Events put here while an event is being dispatched are dispatched in turn, first in first out,
/// before the `ingest` of the original event returns. The queue is bounded: [`EventQueue::put`]
/// on a full queue fails at once with [`NexusError::QueueFull`], handing the event back, and
/// nothing already queued is lost. It never waits, so a handler cannot deadlock on its own queue.
///
/// # Examples
///
/// ```
/// use nexus_core::{AsyncEventNexus, Event, EventQueue, NexusError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), NexusError> {
/// let nexus = AsyncEventNexus::new();
/// nexus.add_handler(1, |event: Event, queue: EventQueue| async move {
///     // Answer each event of type 1 with an event of type 2.
///     queue.put(Event::new(event.id + 100, 2, 0, "reply"))
/// })?;
/// nexus.add_handler(2, |event: Event, _queue: EventQueue| println!("{event}"))?;
/// # let _ = nexus.start()?;
/// # tokio::task::yield_now().await;
/// nexus.ingest(Event::new(1, 1, 0, "question")).await?; // prints the reply before returning
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct EventQueue {
    shared: Arc<Shared>,
}

struct Shared {
    /// Mirrors `items.len()` so the dispatch path can see an empty queue without locking.
    len: AtomicUsize,
    /// Events ever put on the queue (written under the lock, read at any time).
    accepted: AtomicU64,
    items: Mutex<VecDeque<Event>>,
    capacity: usize,
}

impl EventQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                len: AtomicUsize::new(0),
                accepted: AtomicU64::new(0),
                items: Mutex::new(VecDeque::with_capacity(capacity)),
                capacity,
            }),
        }
    }

    /// Puts a secondary event on the queue.
    ///
    /// # Errors
    ///
    /// [`NexusError::QueueFull`] when the queue already holds [`capacity`](Self::capacity)
    /// events; the error hands the event back.
    pub fn put(&self, event: Event) -> Result<(), NexusError> {
        let mut items = self.lock();
        if items.len() >= self.shared.capacity {
            return Err(NexusError::QueueFull {
                event: Box::new(event),
                capacity: self.shared.capacity,
            });
        }
        items.push_back(event);
        self.shared.len.store(items.len(), Ordering::Release);
        let accepted = &self.shared.accepted;
        accepted.store(accepted.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        Ok(())
    }

    /// How many events are waiting.
    #[inline]
    pub fn len(&self) -> usize {
        self.shared.len.load(Ordering::Acquire)
    }

    /// Whether no event is waiting.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many events the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Takes the oldest waiting event. Only the dispatcher takes events.
    /// How many events were ever put on the queue.
    pub(crate) fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn pop(&self) -> Option<Event> {
        if self.is_empty() {
            return None;
        }
        let mut items = self.lock();
        let event = items.pop_front();
        self.shared.len.store(items.len(), Ordering::Release);
        event
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Event>> {
        // A panic cannot leave the deque half-changed, so a poisoned lock is still sound.
        self.shared
            .items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for EventQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventQueue")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_hands_the_event_back_and_keeps_the_rest() {
        let queue = EventQueue::new(2);
        queue.put(Event::new(1, 1, 0, ())).unwrap();
        queue.put(Event::new(2, 1, 0, ())).unwrap();
        let err = queue.put(Event::new(3, 1, 0, ())).unwrap_err();
        assert_eq!(err.into_event().map(|e| e.id), Some(3));
        assert_eq!(queue.pop().map(|e| e.id), Some(1));
        assert_eq!(queue.pop().map(|e| e.id), Some(2));
        assert!(queue.pop().is_none());
    }
}

//! The bounded queue of secondary events that handlers are given: [`EventQueue`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::error::NexusError;
use crate::event::Event;
use crate::waiting::Waiting;

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
///
/// # A handle without a reference count
///
/// An `EventQueue` is a plain copy of where its nexus's queue lives: handing one to a handler,
/// cloning or dropping it costs no atomic operation. A handler may keep it, clone it and `put`
/// into it after its call, from any thread. Once its nexus is dropped, `put` fails with
/// [`NexusError::Closed`], handing the event back, and the queue reads as empty.
#[derive(Clone)]
pub struct EventQueue {
    slot: &'static Slot,
    /// Which lease of `slot` this handle belongs to.
    lease: u64,
    capacity: usize,
    /// Whether its nexus is in bit mode, where only powers of two are event types.
    bit_mode: bool,
}

/// Where a nexus's queue lives. Slots are never freed: a dropped nexus's slot is emptied, its
/// lease count moved on (so that the handles of the old lease see it closed), and reused by the
/// next nexus made.
struct Slot {
    /// The lease in force; changed only under `items`' lock, by the owner's drop.
    lease: AtomicU64,
    /// Mirrors `items.len()` so the dispatch path can see an empty queue without locking.
    len: AtomicUsize,
    /// Events ever put on the queue in this lease (written under the lock, read at any time).
    accepted: AtomicU64,
    items: Mutex<Waiting<Event>>,
}

/// Slots whose nexus was dropped, ready for the next one.
static FREE: Mutex<Vec<&'static Slot>> = Mutex::new(Vec::new());

/// The queue of one nexus, owned by it: gives its slot back when dropped.
pub(crate) struct OwnedQueue(EventQueue);

impl OwnedQueue {
    /// The queue of a new nexus: `capacity` events at most; only powers of two as types in bit
    /// mode; by priority, with aging after `priority` when it is given.
    pub(crate) fn new(capacity: usize, bit_mode: bool, priority: Option<Duration>) -> Self {
        let reused = FREE.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let slot = reused.unwrap_or_else(|| {
            Box::leak(Box::new(Slot {
                lease: AtomicU64::new(0),
                len: AtomicUsize::new(0),
                accepted: AtomicU64::new(0),
                items: Mutex::new(Waiting::default()),
            }))
        });
        let lease = {
            let mut items = slot.items.lock().unwrap_or_else(PoisonError::into_inner);
            *items = match priority {
                None => Waiting::Fifo(VecDeque::with_capacity(capacity.min(1024))),
                Some(max_wait) => {
                    Waiting::ranked(max_wait, |event: &Event| i64::from(event.priority))
                }
            };
            slot.lease.load(Ordering::Relaxed)
        };
        Self(EventQueue {
            slot,
            lease,
            capacity,
            bit_mode,
        })
    }
}

impl std::ops::Deref for OwnedQueue {
    type Target = EventQueue;

    fn deref(&self) -> &EventQueue {
        &self.0
    }
}

impl Drop for OwnedQueue {
    fn drop(&mut self) {
        let slot = self.0.slot;
        let left = {
            let mut items = self.0.lock();
            // Under the lock, so that no `put` of the old lease lands after this.
            slot.lease
                .store(self.0.lease.wrapping_add(1), Ordering::Release);
            slot.len.store(0, Ordering::Release);
            slot.accepted.store(0, Ordering::Relaxed);
            std::mem::take(&mut *items)
        };
        FREE.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(slot);
        // Events left behind are dropped last, outside every lock: a panic in a payload's
        // drop cannot keep the slot from being reused.
        drop(left);
    }
}

impl EventQueue {
    /// Whether this handle's nexus still owns the slot.
    #[inline]
    fn live(&self) -> bool {
        self.slot.lease.load(Ordering::Acquire) == self.lease
    }

    /// Puts a secondary event on the queue. Put by a handler during its call, an event with no
    /// [`cause`](Event::cause) is given the handled event as its cause.
    ///
    /// # Errors
    ///
    /// [`NexusError::QueueFull`] when the queue already holds [`capacity`](Self::capacity)
    /// events; [`NexusError::Closed`] when its nexus was dropped; [`NexusError::NotABit`] when
    /// its nexus is in bit mode and the event's type is not a power of two. Each error hands
    /// the event back.
    pub fn put(&self, mut event: Event) -> Result<(), NexusError> {
        event.inherit_cause();
        if self.bit_mode && !event.event_type.is_bit() {
            return Err(NexusError::NotABit {
                event: Box::new(event),
            });
        }
        let mut items = self.lock();
        if !self.live() {
            return Err(NexusError::Closed {
                what: "the event queue of a dropped nexus".to_owned(),
                event: Box::new(event),
            });
        }
        if items.len() >= self.capacity {
            return Err(NexusError::QueueFull {
                event: Box::new(event),
                capacity: self.capacity,
            });
        }
        items.push(event);
        self.slot.len.store(items.len(), Ordering::Release);
        let accepted = &self.slot.accepted;
        accepted.store(accepted.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        Ok(())
    }

    /// How many events are waiting (none once its nexus was dropped).
    #[inline]
    pub fn len(&self) -> usize {
        let len = self.slot.len.load(Ordering::Acquire);
        // Read after the length: a slot handed to another nexus in between reads as closed.
        if self.live() { len } else { 0 }
    }

    /// Whether no event is waiting.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many events the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many events were ever put on the queue.
    pub(crate) fn accepted(&self) -> u64 {
        self.slot.accepted.load(Ordering::Relaxed)
    }

    /// Takes the oldest waiting event. Only the dispatcher, which owns the queue, takes events.
    #[inline]
    pub(crate) fn pop(&self) -> Option<Event> {
        let mut event = None;
        self.pop_into(&mut event);
        event
    }

    /// Moves the oldest waiting event into `slot`, dropping what was left there first, and says
    /// whether there was one: the event is written where the dispatch keeps it, rather than
    /// handed back through a return and copied again.
    #[inline(always)]
    pub(crate) fn pop_into(&self, slot: &mut Option<Event>) -> bool {
        if slot.is_some() {
            // Dropped before the lock is taken: its drop may run a user's code, which may put
            // on this queue.
            *slot = None;
        }
        if self.slot.len.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut items = self.lock();
        *slot = items.pop();
        self.slot.len.store(items.len(), Ordering::Release);
        slot.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting<Event>> {
        // A panic cannot leave the deque half-changed, so a poisoned lock is still sound.
        self.slot
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
        let queue = OwnedQueue::new(2, false, None);
        queue.put(Event::new(1, 1, 0, ())).unwrap();
        queue.put(Event::new(2, 1, 0, ())).unwrap();
        let err = queue.put(Event::new(3, 1, 0, ())).unwrap_err();
        assert_eq!(err.into_event().map(|e| e.id), Some(3));
        assert_eq!(queue.pop().map(|e| e.id), Some(1));
        assert_eq!(queue.pop().map(|e| e.id), Some(2));
        assert!(queue.pop().is_none());
    }

    #[test]
    fn a_handle_kept_past_its_nexus_is_closed_and_hands_the_event_back() {
        let owner = OwnedQueue::new(4, false, None);
        let kept = owner.clone();
        kept.put(Event::new(1, 1, 0, ())).unwrap();
        assert_eq!(kept.len(), 1);
        drop(owner);
        assert_eq!(kept.len(), 0, "the queue of a dropped nexus reads as empty");
        let err = kept.put(Event::new(2, 1, 0, ())).unwrap_err();
        assert!(matches!(err, NexusError::Closed { .. }), "{err}");
        assert!(err.to_string().contains("dropped nexus"), "{err}");
        assert_eq!(err.into_event().map(|e| e.id), Some(2));
    }

    #[test]
    fn a_reused_slot_is_not_reachable_through_an_old_handle() {
        // Many owners made and dropped in turn, each checked against every earlier handle: a
        // slot handed on must not take or show events through a handle of an earlier lease.
        let mut old: Vec<EventQueue> = Vec::new();
        for round in 0..64u64 {
            let owner = OwnedQueue::new(8, false, None);
            owner.put(Event::new(round, 1, 0, ())).unwrap();
            for stale in &old {
                assert!(stale.put(Event::new(1000 + round, 1, 0, ())).is_err());
                assert_eq!(stale.len(), 0);
            }
            assert_eq!(
                owner.len(),
                1,
                "round {round}: nothing of an old lease got in"
            );
            assert_eq!(owner.accepted(), 1);
            assert_eq!(owner.pop().map(|e| e.id), Some(round));
            old.push(owner.clone());
        }
    }

    #[test]
    fn a_slot_given_back_with_events_in_it_starts_empty_for_the_next_owner() {
        for _ in 0..16 {
            let owner = OwnedQueue::new(3, false, None);
            owner.put(Event::new(1, 1, 0, ())).unwrap();
            owner.put(Event::new(2, 1, 0, ())).unwrap();
            drop(owner);
            let next = OwnedQueue::new(3, false, None);
            assert!(next.is_empty());
            assert_eq!(next.accepted(), 0);
            assert!(next.pop().is_none());
        }
    }
}

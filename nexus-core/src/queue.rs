//! The bounded queue of secondary events that handlers are given: [`EventQueue`].
//!
//! Events put from anywhere wait on a queue behind a lock. Events a handler puts during its
//! call, while nothing waits there, are kept beside it instead, in a list that only the
//! dispatch holding the nexus's gate reaches, without a lock: that is the common case (a handler
//! answering its event), and it spares each such event a lock taken and given back twice.
//!
//! One of the crate's four `unsafe` modules (with `nexus::gate`, `spare` and `early`): the list
//! beside the queue is reached through an `UnsafeCell`, by the holder of the gate alone.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    /// Whether the owner's handlers may put beside the queue, into `near` (first-in-first-out
    /// queues only); set with the lease, under `items`' lock.
    near_open: AtomicBool,
    /// How many events are in `near`; written only by the owner's dispatch (see `near`).
    near_len: AtomicUsize,
    /// Events ever put into `near` in this lease; written only as `near_len` is.
    near_accepted: AtomicU64,
    /// Events put by a handler of the owner while it is being polled, with nothing on the
    /// locked queue: they are ahead of everything there, and taken first. Only the owner's
    /// dispatch reaches it, without a lock: it holds the owner's gate, and polls the handlers
    /// that put here on its own thread (see [`Slot::with_near`]).
    near: UnsafeCell<Near>,
}

/// The events beside the queue, first in first out. The oldest has a place of its own, filled
/// only when no other is there, so that the common course (a handler puts one event, which is
/// taken before the next is put) writes and reads it without a ring's index arithmetic; the
/// others wait behind it in a ring, all newer than it.
#[derive(Default)]
struct Near {
    first: Option<Event>,
    rest: VecDeque<Event>,
}

impl Near {
    #[inline(always)]
    fn push_back(&mut self, event: Event) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(event);
        } else {
            self.rest.push_back(event);
        }
    }

    #[inline(always)]
    fn pop_front(&mut self) -> Option<Event> {
        match self.first.take() {
            Some(event) => Some(event),
            None => self.rest.pop_front(),
        }
    }
}

// SAFETY: every field but `near` is `Sync` (`Event` is `Send`). `near` is reached only through
// `with_near`, whose callers hold the gate of the slot's owner (one dispatch at a time, polled
// by one thread at a time), or own the slot alone (its owner's drop).
unsafe impl Sync for Slot {}

impl Slot {
    /// Runs `f` on the events beside the queue.
    ///
    /// # Safety
    ///
    /// The caller is the dispatch that holds the gate of the slot's owner, and runs on the
    /// thread polling it: it takes events under the gate, or is a handler of the owner put
    /// under the owner's mark, innermost on this thread (`crate::nexus::innermost_is`), which
    /// only that dispatch sets while it polls its handlers. Or the caller owns the slot alone
    /// (its owner's drop, once no dispatch of it can be). `f` runs no code of a user.
    #[inline]
    unsafe fn with_near<R>(&self, f: impl FnOnce(&mut Near) -> R) -> R {
        // SAFETY: by the caller's promise, no other thread reaches `near` now, and no other
        // reference to it is live on this one (`f` calls nothing that could make one).
        f(unsafe { &mut *self.near.get() })
    }
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
                near_open: AtomicBool::new(false),
                near_len: AtomicUsize::new(0),
                near_accepted: AtomicU64::new(0),
                near: UnsafeCell::new(Near::default()),
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
            // Events ranked by priority all go through the lock, where they are ranked.
            slot.near_open.store(priority.is_none(), Ordering::Relaxed);
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
            slot.near_open.store(false, Ordering::Relaxed);
            slot.near_len.store(0, Ordering::Release);
            slot.near_accepted.store(0, Ordering::Relaxed);
            // SAFETY: the owner is being dropped, so no dispatch of it is left to reach `near`;
            // the slot is not handed on before this drop gives it back below.
            let near = unsafe { slot.with_near(std::mem::take) };
            (std::mem::take(&mut *items), near)
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

    /// What tells this queue's nexus from every other one alive: the address of its slot.
    #[inline]
    pub(crate) fn key(&self) -> usize {
        std::ptr::from_ref(self.slot) as usize
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
        if self.reserve_near() {
            // SAFETY: `reserve_near` found a handler of this queue's nexus being polled on this
            // thread, innermost, with a handle of the lease in force: the dispatch holding the
            // nexus's gate polls it here, and nothing else reaches `near` meanwhile.
            unsafe { self.slot.with_near(|events| events.push_back(event)) };
            let accepted = &self.slot.near_accepted;
            accepted.store(accepted.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            return Ok(());
        }
        self.put_locked(event)
    }

    /// Whether an event may be put beside the queue, without its lock: when a handler of its own
    /// nexus puts it during its call (the common case), the queue is first in first out, and
    /// nothing is on the locked queue (so that the event is behind nothing put there). When it
    /// may, its place is counted. Whenever the event might be refused, the locked course
    /// decides.
    #[inline(always)]
    fn reserve_near(&self) -> bool {
        let slot = self.slot;
        if !slot.near_open.load(Ordering::Relaxed)
            || !crate::nexus::innermost_is(self.key())
            || !self.live()
        {
            return false;
        }
        let near = slot.near_len.load(Ordering::Relaxed);
        if near >= self.capacity {
            return false;
        }
        // Counted before it is looked whether the locked queue is empty, as `put_locked` counts
        // its own before it looks at this count (both sequentially consistent): of a put here
        // and one there at the same time, at least one sees the other, so the two never take
        // the last place in the queue together.
        slot.near_len.store(near + 1, Ordering::SeqCst);
        if slot.len.load(Ordering::SeqCst) != 0 {
            slot.near_len.store(near, Ordering::Release);
            return false;
        }
        true
    }

    /// Puts `event` on the locked queue.
    #[inline(never)]
    fn put_locked(&self, event: Event) -> Result<(), NexusError> {
        let mut items = self.lock();
        if !self.live() {
            return Err(NexusError::Closed {
                what: "the event queue of a dropped nexus".to_owned(),
                event: Box::new(event),
            });
        }
        let len = items.len();
        let full = len >= self.capacity || {
            // See `reserve_near`.
            self.slot.len.store(len + 1, Ordering::SeqCst);
            len + 1 + self.slot.near_len.load(Ordering::SeqCst) > self.capacity
        };
        if full {
            self.slot.len.store(len, Ordering::Release);
            return Err(NexusError::QueueFull {
                event: Box::new(event),
                capacity: self.capacity,
            });
        }
        items.push(event);
        let accepted = &self.slot.accepted;
        accepted.store(accepted.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        Ok(())
    }

    /// How many events are waiting (none once its nexus was dropped).
    #[inline]
    pub fn len(&self) -> usize {
        let len =
            self.slot.near_len.load(Ordering::Acquire) + self.slot.len.load(Ordering::Acquire);
        // Read after the length: a slot handed to another nexus in between reads as closed.
        if self.live() { len } else { 0 }
    }

    /// Whether no event is waiting.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether an event is waiting, asked by the dispatcher, which owns the queue (so the lease
    /// is its own).
    #[inline(always)]
    pub(crate) fn any(&self) -> bool {
        (self.slot.near_len.load(Ordering::Acquire) | self.slot.len.load(Ordering::Acquire)) != 0
    }

    /// How many events the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many events were ever put on the queue.
    pub(crate) fn accepted(&self) -> u64 {
        self.slot.near_accepted.load(Ordering::Relaxed) + self.slot.accepted.load(Ordering::Relaxed)
    }

    /// Takes the oldest waiting event.
    ///
    /// # Safety
    ///
    /// The caller holds the gate of this queue's nexus (it is the dispatcher, which alone takes
    /// events), or is the only user of a queue no nexus owns.
    #[inline]
    pub(crate) unsafe fn pop(&self) -> Option<Event> {
        let mut event = None;
        // SAFETY: by the caller's promise, as `pop_into` asks.
        unsafe { self.pop_into(&mut event) };
        event
    }

    /// Moves the oldest waiting event into `slot` (what was left there is dropped first), and
    /// says whether there was one: the event is written where the dispatch keeps it, not handed
    /// back through a return.
    ///
    /// # Safety
    ///
    /// As for [`pop`](Self::pop).
    #[inline(always)]
    pub(crate) unsafe fn pop_into(&self, slot: &mut Option<Event>) -> bool {
        if slot.is_some() {
            // An event left there is dropped first: its drop may run a user's code, which may
            // put events, and `with_near` runs none.
            *slot = None;
        }
        let near = self.slot.near_len.load(Ordering::Relaxed);
        if near != 0 {
            // SAFETY: by the caller's promise, as `with_near` asks.
            unsafe { self.slot.with_near(|events| *slot = events.pop_front()) };
            self.slot.near_len.store(near - 1, Ordering::Release);
            return slot.is_some();
        }
        if self.slot.len.load(Ordering::Acquire) == 0 {
            return false;
        }
        *slot = self.pop_locked();
        slot.is_some()
    }

    /// Takes the oldest event of the locked queue.
    #[inline(never)]
    fn pop_locked(&self) -> Option<Event> {
        let mut items = self.lock();
        let event = items.pop();
        self.slot.len.store(items.len(), Ordering::Release);
        event
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

    /// Takes the oldest event of a queue no nexus owns.
    fn pop(queue: &EventQueue) -> Option<Event> {
        // SAFETY: these queues belong to no nexus, and each test is their only user.
        unsafe { queue.pop() }
    }

    proptest::proptest! {
        /// The events beside the queue come out in the order they went in, whatever the mix of
        /// puts and takes: as a ring alone would give them.
        #[test]
        fn events_beside_the_queue_are_first_in_first_out(
            puts in proptest::collection::vec(proptest::bool::ANY, 0..64)
        ) {
            let mut near = Near::default();
            let mut ring = VecDeque::new();
            for (id, put) in (0u64..).zip(puts) {
                if put {
                    near.push_back(Event::new(id, 1, 0, ()));
                    ring.push_back(id);
                } else {
                    proptest::prop_assert_eq!(near.pop_front().map(|e| e.id), ring.pop_front());
                }
            }
            while let Some(id) = ring.pop_front() {
                proptest::prop_assert_eq!(near.pop_front().map(|e| e.id), Some(id));
            }
            proptest::prop_assert!(near.pop_front().is_none());
        }
    }

    #[test]
    fn full_queue_hands_the_event_back_and_keeps_the_rest() {
        let queue = OwnedQueue::new(2, false, None);
        queue.put(Event::new(1, 1, 0, ())).unwrap();
        queue.put(Event::new(2, 1, 0, ())).unwrap();
        let err = queue.put(Event::new(3, 1, 0, ())).unwrap_err();
        assert_eq!(err.into_event().map(|e| e.id), Some(3));
        assert_eq!(pop(&queue).map(|e| e.id), Some(1));
        assert_eq!(pop(&queue).map(|e| e.id), Some(2));
        assert!(pop(&queue).is_none());
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
            assert_eq!(pop(&owner).map(|e| e.id), Some(round));
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
            assert!(pop(&next).is_none());
        }
    }
}

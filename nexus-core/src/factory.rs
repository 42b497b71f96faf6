//! Creating events and their ids: [`EventFactory`] and [`EventId`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::event::{Event, EventType, Payload};

/// How [`EventFactory::create_event_with`] chooses an event's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventId {
    /// The next sequential id ([`EventFactory::next_id`]).
    Auto,
    /// A non-sequential id ([`EventFactory::random_id`]).
    Random,
    /// This id.
    Given(u64),
}

impl From<u64> for EventId {
    fn from(id: u64) -> Self {
        Self::Given(id)
    }
}

/// Creates event ids and whole events.
///
/// A cheap cloneable handle: clones share one sequence, so ids stay unique across every task
/// that holds one. Every [`AsyncEventNexus`](crate::AsyncEventNexus) has one
/// ([`AsyncEventNexus::event_factory`](crate::AsyncEventNexus::event_factory)), and sources that
/// are given it number their events from the nexus's sequence without keeping the nexus alive.
///
/// # Examples
///
/// ```
/// use nexus_core::{EventFactory, EventId};
///
/// let factory = EventFactory::new();
/// assert_eq!(factory.next_id(), 1);
/// let event = factory.create_event("hello", 42);
/// assert_eq!((event.id, event.priority), (2, 0));
/// let urgent = factory.create_event_with(5, 42, EventId::Given(900), -1);
/// assert_eq!((urgent.id, urgent.priority), (900, -1));
/// ```
#[derive(Clone, Debug, Default)]
pub struct EventFactory {
    issued: Arc<AtomicU64>,
}

impl EventFactory {
    /// A factory whose first sequential id is 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next sequential id: 1, 2, 3, ... Safe to call from many tasks at once.
    pub fn next_id(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A non-sequential id, never 0.
    pub fn random_id(&self) -> u64 {
        fastrand::u64(1..)
    }

    /// Creates an event with the next sequential id and priority 0.
    pub fn create_event(
        &self,
        payload: impl Into<Payload>,
        event_type: impl Into<EventType>,
    ) -> Event {
        self.create_event_with(payload, event_type, EventId::Auto, 0)
    }

    /// Creates an event, choosing its id as `id` says and giving it `priority`.
    pub fn create_event_with(
        &self,
        payload: impl Into<Payload>,
        event_type: impl Into<EventType>,
        id: EventId,
        priority: i32,
    ) -> Event {
        let id = match id {
            EventId::Auto => self.next_id(),
            EventId::Random => self.random_id(),
            EventId::Given(id) => id,
        };
        Event::new(id, event_type, priority, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_across_threads() {
        let factory = EventFactory::new();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let f = factory.clone();
                std::thread::spawn(move || (0..10_000).map(|_| f.next_id()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for t in threads {
            for id in t.join().unwrap() {
                assert!(all.insert(id), "id {id} issued twice");
            }
        }
        assert_eq!(all.len(), 40_000);
        assert_eq!(*all.iter().max().unwrap(), 40_000);
    }

    #[test]
    fn random_ids_are_not_sequential() {
        let factory = EventFactory::new();
        let ids: Vec<u64> = (0..100).map(|_| factory.random_id()).collect();
        assert!(ids.iter().all(|&id| id != 0));
        assert!(ids.windows(2).any(|w| w[1] != w[0] + 1));
        assert_eq!(
            factory.next_id(),
            1,
            "random ids do not consume the sequence"
        );
    }
}

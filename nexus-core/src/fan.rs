//! [`FanList`]: the handlers a fanning consumer calls in turn, shown to a nexus so that it can
//! call them itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::handler::Handler;

/// Numbers the states of every fan list, so that no two states share one.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

/// The handlers of a consumer that does nothing but call each of them in turn with a copy of
/// the event, as [`EventConsumer::fan_out`](crate::EventConsumer::fan_out) shows them to a
/// nexus.
///
/// Each change replaces the list whole and gives it a new generation. A nexus keeps its own
/// copy of the list and, per event, only reads the generation to see that the copy is still
/// current: no lock and no reference count on the dispatch path.
///
/// # Examples
///
/// ```
/// use nexus_core::__private::FanList;
/// use nexus_core::{Event, EventQueue, Handler};
///
/// let list = FanList::new();
/// list.update(|handlers| handlers.push(Handler::new(|e: Event, _q: EventQueue| println!("{e}"))));
/// assert_eq!(list.snapshot().len(), 1);
/// ```
#[derive(Debug)]
pub struct FanList {
    /// The generation of the current list; changed (inside the lock) with each change.
    generation: AtomicU64,
    handlers: Mutex<Arc<Vec<Handler>>>,
}

impl Default for FanList {
    fn default() -> Self {
        Self::new()
    }
}

impl FanList {
    /// An empty list.
    pub fn new() -> Self {
        Self {
            generation: AtomicU64::new(next_generation()),
            handlers: Mutex::new(Arc::default()),
        }
    }

    /// The handlers as they are now.
    pub fn snapshot(&self) -> Arc<Vec<Handler>> {
        Arc::clone(&self.lock())
    }

    /// Changes the handlers with `change`, which is given a copy of them; calls already under
    /// way keep the list they started with.
    pub fn update<R>(&self, change: impl FnOnce(&mut Vec<Handler>) -> R) -> R {
        let mut current = self.lock();
        let mut handlers = Vec::clone(&current);
        let result = change(&mut handlers);
        *current = Arc::new(handlers);
        self.generation.store(next_generation(), Ordering::Release);
        result
    }

    /// The generation of the list as it is now.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The list and its generation, read together.
    fn current(&self) -> (u64, Arc<Vec<Handler>>) {
        let handlers = self.lock();
        (self.generation(), Arc::clone(&handlers))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<Vec<Handler>>> {
        // Replacing an `Arc` cannot be left half done, so a poisoned lock is still sound.
        self.handlers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A dispatcher's copies of the fan lists it has met, each with the generation it was taken at.
///
/// A list is told by its address, compared, never followed. Generations are unique to each state
/// of each list, so a list that reuses a dropped one's address cannot be mistaken for it.
#[derive(Default)]
pub(crate) struct FanCopies {
    kept: Vec<Kept>,
}

/// One list's copy.
struct Kept {
    address: usize,
    generation: u64,
    handlers: Arc<Vec<Handler>>,
    /// Whether the list has a handler, and none with a time limit or fanning out itself: each
    /// is then called as a nexus calls a handler that is all there is to call.
    plain: bool,
}

impl FanCopies {
    /// The current handlers of `list`, from the copy kept of it when that is current, and
    /// whether they are plain: the list has a handler, and none with a time limit or fanning
    /// out itself.
    #[inline(always)]
    pub(crate) fn handlers(&mut self, list: &FanList) -> (&Arc<Vec<Handler>>, bool) {
        let at = self.current(list);
        let copy = &self.kept[at];
        (&copy.handlers, copy.plain)
    }

    /// The index of the current copy of `list`.
    #[inline(always)]
    fn current(&mut self, list: &FanList) -> usize {
        let address = std::ptr::from_ref(list) as usize;
        let generation = list.generation();
        match self
            .kept
            .iter()
            .position(|copy| copy.address == address && copy.generation == generation)
        {
            Some(at) => at,
            None => self.take(list, address),
        }
    }

    /// Takes a copy of `list` as it is now, in place of an older one. Out of line: a list's
    /// copy is taken once per change of it.
    #[cold]
    #[inline(never)]
    fn take(&mut self, list: &FanList, address: usize) -> usize {
        let (generation, handlers) = list.current();
        let plain = !handlers.is_empty() && handlers.iter().all(Handler::is_plain);
        let copy = Kept {
            address,
            generation,
            handlers,
            plain,
        };
        match self.kept.iter().position(|kept| kept.address == address) {
            Some(at) => {
                self.kept[at] = copy;
                at
            }
            None => {
                self.kept.push(copy);
                self.kept.len() - 1
            }
        }
    }

    /// Forgets every copy (when the handler table changes, the lists it held may be gone).
    pub(crate) fn clear(&mut self) {
        self.kept.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, EventQueue};

    fn handler() -> Handler {
        Handler::new(|_e: Event, _q: EventQueue| {})
    }

    #[test]
    fn a_copy_is_reused_until_the_list_changes() {
        let list = FanList::new();
        list.update(|h| h.push(handler()));
        let mut copies = FanCopies::default();
        let first = Arc::clone(copies.handlers(&list).0);
        assert_eq!(first.len(), 1);
        // Unchanged: the very same copy.
        assert!(Arc::ptr_eq(&first, copies.handlers(&list).0));
        list.update(|h| h.push(handler()));
        let second = copies.handlers(&list).0;
        assert_eq!(second.len(), 2);
        assert!(!Arc::ptr_eq(&first, second));
    }

    #[test]
    fn copies_of_two_lists_are_kept_apart() {
        let (a, b) = (FanList::new(), FanList::new());
        a.update(|h| h.push(handler()));
        let mut copies = FanCopies::default();
        assert_eq!(copies.handlers(&a).0.len(), 1);
        assert_eq!(copies.handlers(&b).0.len(), 0);
        assert_eq!(copies.handlers(&a).0.len(), 1);
    }

    #[test]
    fn a_list_is_plain_with_a_handler_and_none_timed_or_fanning_out() {
        let list = FanList::new();
        let mut copies = FanCopies::default();
        let mut plain = |list: &FanList| copies.handlers(list).1;
        assert!(!plain(&list), "an empty list");
        list.update(|h| h.push(handler()));
        assert!(plain(&list));
        list.update(|h| h.push(handler().timeout(std::time::Duration::from_secs(1))));
        assert!(!plain(&list), "a handler with a time limit");
        list.update(|h| h.truncate(1));
        assert!(plain(&list));
        let inner = FanList::new();
        inner.update(|h| h.push(handler()));
        list.update(|h| h.push(Handler::consumer(Fans(inner))));
        assert!(!plain(&list), "a handler that fans out");
    }

    /// A consumer fanning out to its own list.
    struct Fans(FanList);

    #[async_trait::async_trait]
    impl crate::EventConsumer for Fans {
        async fn handle(&self, _event: Event, _queue: EventQueue) -> Result<(), crate::BoxError> {
            Ok(())
        }

        fn fan_out(&self) -> Option<&FanList> {
            Some(&self.0)
        }
    }

    #[test]
    fn every_state_of_every_list_has_a_generation_of_its_own() {
        let (a, b) = (FanList::new(), FanList::new());
        let before = (a.generation(), b.generation());
        assert_ne!(before.0, before.1);
        a.update(|_| ());
        assert_ne!(a.generation(), before.0);
        assert_ne!(a.generation(), b.generation());
    }
}

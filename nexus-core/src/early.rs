//! [`Early`]: a value its owner may drop before the owner itself is dropped.
//!
//! A future that has finished its work drops what it held right then; dropping the future
//! afterwards is a test of one flag, small enough to happen where the future was awaited. Without
//! this, the whole drop of what the future may hold is a call after every `.await`, and the
//! future's output is copied aside to live across that call.
//!
//! It may also start empty and be given its value later ([`Early::set`]), so that an owner that
//! usually finishes without it never writes it.
//!
//! One of the crate's four `unsafe` modules (with `nexus::gate`, `spare` and `queue`): the value
//! is in a `MaybeUninit`, there exactly while the flag is set, and dropped at most once.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

/// A value that is dropped by [`drop_now`](Self::drop_now), or else with its owner.
pub(crate) struct Early<T> {
    value: MaybeUninit<T>,
    /// Whether `value` is there to use and to drop.
    live: bool,
}

impl<T> Early<T> {
    #[cfg(test)]
    pub(crate) fn new(value: T) -> Self {
        Self {
            value: MaybeUninit::new(value),
            live: true,
        }
    }

    /// No value yet: nothing is written but the flag.
    #[inline(always)]
    pub(crate) fn empty() -> Self {
        Self {
            value: MaybeUninit::uninit(),
            live: false,
        }
    }

    /// Gives it `value` (dropping the one it had, if any); the value, to use.
    #[inline(always)]
    pub(crate) fn set(&mut self, value: T) -> &mut T {
        self.drop_now();
        let value = self.value.write(value);
        self.live = true;
        value
    }

    /// The value, unless it was dropped.
    #[inline]
    pub(crate) fn get_mut(&mut self) -> Option<&mut T> {
        if self.live {
            // SAFETY: the flag is set only while the value is there (`new`, `set`), and cleared
            // before it is dropped.
            Some(unsafe { self.value.assume_init_mut() })
        } else {
            None
        }
    }

    /// Drops the value now, if it was not dropped yet. The flag is cleared where this is
    /// called, so that the compiler sees there that nothing is left to drop; the drop itself is
    /// out of line.
    #[inline(always)]
    pub(crate) fn drop_now(&mut self) {
        if self.live {
            // Cleared first: should the value's drop panic, it is not dropped again.
            self.live = false;
            drop_value(&mut self.value);
            // And again: the compiler cannot tell that the call left the flag alone, and seeing
            // it cleared here spares the owner's drop a test and a call.
            self.live = false;
        }
    }

    /// Drops the value now, if it was not dropped yet, in line: for a caller that is itself out
    /// of line, where the drop costs no call of its own. A later [`drop_now`](Self::drop_now)
    /// finds the flag cleared.
    #[inline(always)]
    pub(crate) fn drop_here(&mut self) {
        if self.live {
            self.live = false;
            // SAFETY: the flag was set, so the value is there and was never dropped; cleared
            // first, it is never dropped again, even should this drop panic.
            unsafe { self.value.assume_init_drop() };
        }
    }
}

/// Drops a value whose flag was just cleared (see [`Early::drop_now`]).
#[inline(never)]
fn drop_value<T>(value: &mut MaybeUninit<T>) {
    // SAFETY: called only by `drop_now`, right after it cleared the flag that was set: the value
    // is there, was never dropped, and is never used again.
    unsafe { value.assume_init_drop() };
}

impl<T> Drop for Early<T> {
    #[inline(always)]
    fn drop(&mut self) {
        self.drop_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn dropped_once_whether_early_or_with_its_owner() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut early = Early::new(Counted(drops.clone()));
        assert!(early.get_mut().is_some());
        early.drop_now();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(early.get_mut().is_none());
        early.drop_now();
        drop(early);
        assert_eq!(drops.load(Ordering::SeqCst), 1);

        let late = Early::new(Counted(drops.clone()));
        drop(late);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_panicking_drop_is_not_run_twice() {
        struct Panics(Arc<AtomicUsize>);
        impl Drop for Panics {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
                panic!("drop failed");
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let mut early = Early::new(Panics(drops.clone()));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| early.drop_now()));
        assert!(caught.is_err());
        drop(early);
        assert_eq!(drops.load(Ordering::SeqCst), 1);

        let mut early = Early::new(Panics(drops.clone()));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| early.drop_here()));
        assert!(caught.is_err());
        early.drop_now();
        early.drop_here();
        drop(early);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn an_empty_one_drops_nothing_until_given_a_value() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut early: Early<Counted> = Early::empty();
        assert!(early.get_mut().is_none());
        early.drop_now();
        early.drop_here();
        early.set(Counted(drops.clone()));
        assert!(early.get_mut().is_some());
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        // Given another, it drops the one it had.
        early.set(Counted(drops.clone()));
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        drop(early);
        assert_eq!(drops.load(Ordering::SeqCst), 2);

        let mut early: Early<Counted> = Early::empty();
        early.set(Counted(drops.clone()));
        early.drop_here();
        assert_eq!(drops.load(Ordering::SeqCst), 3);
        drop(early);
        assert_eq!(drops.load(Ordering::SeqCst), 3);
        drop(Early::<Counted>::empty());
        assert_eq!(drops.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn dropped_in_line_once_then_never_again() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut early = Early::new(Counted(drops.clone()));
        early.drop_here();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(early.get_mut().is_none());
        early.drop_here();
        early.drop_now();
        drop(early);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
}

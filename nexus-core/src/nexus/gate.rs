//! The one-at-a-time gate of a nexus: an async lock whose uncontended acquire is one
//! compare-and-swap and whose uncontended release is one swap and one load.
//!
//! Waiters park on a `tokio::sync::Notify`. A release that sees waiters hands the lock over to
//! the one it wakes instead of unlocking, so a task that dispatches in a tight loop cannot starve
//! the others: waiters are served first in, first out.
//!
//! One of the crate's three `unsafe` modules (with `spare` and `early`): the value is reached
//! through an `UnsafeCell` while the gate is held, which the lock protocol below makes
//! exclusive.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};

use tokio::sync::Notify;

pub(crate) struct Gate<T> {
    locked: AtomicBool,
    /// Set by a release that hands the lock to a waiter; taken by whoever gets it.
    handoff: AtomicBool,
    waiters: AtomicUsize,
    notify: Notify,
    value: UnsafeCell<T>,
}

// SAFETY: the gate hands out access to `value` only through a `GateGuard`, and at most one guard
// exists at a time (see `try_lock`, `lock` and `unlock`), so sharing the gate between threads
// only ever moves the exclusive use of `T` from one thread to another: `T: Send` suffices, as for
// `std::sync::Mutex`.
unsafe impl<T: Send> Sync for Gate<T> {}
// SAFETY: as above; the gate owns its `T`.
unsafe impl<T: Send> Send for Gate<T> {}

pub(crate) struct GateGuard<'a, T> {
    gate: &'a Gate<T>,
    /// Gives the guard the auto traits of `&mut T`.
    _value: PhantomData<&'a mut T>,
}

impl<T> Gate<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            handoff: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
            notify: Notify::new(),
            value: UnsafeCell::new(value),
        }
    }

    #[inline]
    pub(crate) fn try_lock(&self) -> Option<GateGuard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Acquire, Relaxed)
            .is_ok()
            .then(|| self.guard())
    }

    pub(crate) async fn lock(&self) -> GateGuard<'_, T> {
        if let Some(guard) = self.try_lock() {
            return guard;
        }
        let _waiting = Waiting::new(&self.waiters);
        let notified = self.notify.notified();
        let mut notified = std::pin::pin!(notified);
        loop {
            notified.as_mut().enable();
            if self
                .locked
                .compare_exchange(false, true, SeqCst, Relaxed)
                .is_ok()
            {
                return self.guard();
            }
            notified.as_mut().await;
            // Only a woken waiter may take a handed-over lock: a task that just arrived queues
            // behind those already waiting.
            if self.handoff.swap(false, AcqRel) {
                return self.guard();
            }
            notified.set(self.notify.notified());
        }
    }

    /// Wraps a successful acquisition; called only by the one task that acquired the gate.
    fn guard(&self) -> GateGuard<'_, T> {
        GateGuard {
            gate: self,
            _value: PhantomData,
        }
    }

    #[inline]
    fn unlock(&self) {
        if self.waiters.load(SeqCst) != 0 {
            // Hand over: the lock stays taken and the woken waiter owns it.
            self.handoff.store(true, Release);
            self.notify.notify_one();
            return;
        }
        self.locked.store(false, SeqCst);
        // A waiter may have counted itself between the load above and the store: it saw the
        // lock taken and is about to wait, so wake one to try again.
        if self.waiters.load(SeqCst) != 0 {
            self.notify.notify_one();
        }
    }
}

impl<T> Deref for GateGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one, so nothing else reaches the value while it lives.
        unsafe { &*self.gate.value.get() }
    }
}

impl<T> DerefMut for GateGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only borrow through the guard.
        unsafe { &mut *self.gate.value.get() }
    }
}

impl<T> GateGuard<'_, T> {
    /// Whether another task waits for the gate. A hint for a holder that could go on: one that
    /// counts itself just after this is still served when the gate is released.
    #[inline]
    pub(crate) fn others_wait(&self) -> bool {
        self.gate.waiters.load(Relaxed) != 0
    }
}

impl<T> Drop for GateGuard<'_, T> {
    fn drop(&mut self) {
        self.gate.unlock();
    }
}

/// Counts a task among the waiters while it waits, also when its future is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn excludes_and_never_hangs_under_contention_and_cancellation() {
        let gate = Arc::new(Gate::new(0u64));
        let inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for t in 0..8 {
            let (gate, inside) = (gate.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let mut done = 0;
                for i in 0..2_000u32 {
                    // Some waits are abandoned part-way, as a dropped `ingest` would.
                    let wait = gate.lock();
                    let guard = if (i + t) % 7 == 0 {
                        match tokio::time::timeout(Duration::from_micros(1), wait).await {
                            Ok(guard) => guard,
                            Err(_) => continue,
                        }
                    } else {
                        wait.await
                    };
                    let mut guard = guard;
                    assert_eq!(inside.fetch_add(1, SeqCst), 0, "two holders at once");
                    *guard += 1;
                    if i % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                    inside.fetch_sub(1, SeqCst);
                    done += 1;
                }
                done
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the gate hung")
                .unwrap();
        }
        assert_eq!(*gate.lock().await, total);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_served_before_a_looping_holder_takes_it_again() {
        let gate = Arc::new(Gate::new(Vec::new()));
        let first = gate.lock().await;
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.lock().await.push("waiter") })
        };
        tokio::task::yield_now().await; // the waiter parks
        drop(first);
        // A holder that takes the gate again at once must queue behind the waiter.
        gate.lock().await.push("looper");
        waiter.await.unwrap();
        assert_eq!(*gate.lock().await, ["waiter", "looper"]);
    }
}

//! The one-at-a-time gate of a nexus: an async lock whose uncontended acquire is one
//! compare-and-swap and whose uncontended release is one swap and one load.
//!
//! Waiters park on a `tokio::sync::Notify`. A release that sees waiters hands the lock over to
//! the one it wakes instead of unlocking, so a task that dispatches in a tight loop cannot starve
//! the others: waiters are served first in, first out.
//!
//! One of the crate's four `unsafe` modules (with `spare`, `early` and `queue`): the value is
//! reached through an `UnsafeCell` while the gate is held, which the lock protocol below makes
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
        let mut waiting = Waiting::new(self);
        let notified = self.notify.notified();
        let mut notified = std::pin::pin!(notified);
        loop {
            notified.as_mut().enable();
            if self
                .locked
                .compare_exchange(false, true, SeqCst, Relaxed)
                .is_ok()
            {
                waiting.served = true;
                return self.guard();
            }
            notified.as_mut().await;
            // Only a woken waiter may take a handed-over lock: a task that just arrived queues
            // behind those already waiting.
            if self.handoff.swap(false, SeqCst) {
                waiting.served = true;
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
            self.handoff.store(true, SeqCst);
            self.notify.notify_one();
            // Every waiter may have gone since it was counted (a wait dropped, as a cancelled
            // `ingest` drops it): one that goes after this store takes the handover as it goes
            // (`Waiting`'s drop); if all went before it, nobody will, and it is taken back here.
            if self.waiters.load(SeqCst) != 0 || !self.handoff.swap(false, SeqCst) {
                return;
            }
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

/// Counts a task among the waiters while it waits, also when its future is dropped. A wait
/// dropped before it was served may have had the gate handed over to it: it then takes the
/// handover and releases the gate again (to the next waiter, if any), so that a handover never
/// outlives every wait it was for, leaving the gate held by no one.
struct Waiting<'a, T> {
    gate: &'a Gate<T>,
    served: bool,
}

impl<'a, T> Waiting<'a, T> {
    fn new(gate: &'a Gate<T>) -> Self {
        gate.waiters.fetch_add(1, SeqCst);
        Self {
            gate,
            served: false,
        }
    }
}

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        self.gate.waiters.fetch_sub(1, SeqCst);
        // The handover may have been meant for another waiter, still counted: releasing hands
        // it over again, and that waiter takes it.
        if !self.served && self.gate.handoff.swap(false, SeqCst) {
            self.gate.unlock();
        }
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
        // Under Miri 50 rounds take about 16 s: fewer rounds keep it inside the timeout.
        let rounds = if cfg!(miri) { 50 } else { 2_000u32 };
        let mut tasks = Vec::new();
        for t in 0..8 {
            let (gate, inside) = (gate.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let mut done = 0;
                for i in 0..rounds {
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
        // Free, not merely to be had by a waiter: no handover outlived the waits it was for.
        assert!(
            gate.try_lock().is_some(),
            "the gate was left held by no one"
        );
        assert_eq!(*gate.lock().await, total);
    }

    /// Polls `future` once.
    async fn poll_once<F: std::future::Future + Unpin>(
        future: &mut F,
    ) -> std::task::Poll<F::Output> {
        std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx)))
            .await
    }

    #[tokio::test]
    async fn a_wait_dropped_after_the_gate_was_handed_to_it_leaves_the_gate_free() {
        let gate = Gate::new(());
        let holder = gate.try_lock().expect("free");
        let mut waiter = Box::pin(gate.lock());
        assert!(
            poll_once(&mut waiter).await.is_pending(),
            "the waiter parks"
        );
        // Released while the waiter is counted: handed over to it.
        drop(holder);
        // The wait is dropped before it takes the gate (a cancelled `ingest`).
        drop(waiter);
        assert!(
            gate.try_lock().is_some(),
            "the gate was left held by no one"
        );
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

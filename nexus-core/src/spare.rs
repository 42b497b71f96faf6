//! Memory a dispatcher keeps between handler calls, so that a call that completes when first
//! polled allocates nothing.
//!
//! A handler's future is built in a block of memory the size of its type, kept in a [`Spare`]
//! (or made there on the first call of that size), and polled in place. When it completes, it is
//! dropped in place and the block stays where it is, free for the next call of that size: a call
//! that completes at once writes nothing to the `Spare`. When it has to wait, the block leaves
//! the `Spare` and becomes the future's box (it was allocated exactly as a `Box` of that type
//! would be), so a waiting call costs what it always did.
//!
//! One of the crate's four `unsafe` modules (with `nexus::gate`, `early` and `queue`): it places
//! values in raw memory and hands that memory to a `Box`.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// How many sizes of future a `Spare` keeps a block for.
const SLOTS: usize = 4;

/// Blocks of memory, each of a known layout and free between calls, kept for the next handler
/// call.
///
/// Not public API: it appears only in hidden methods of [`HandlerReturn`](crate::HandlerReturn)
/// and [`FilterReturn`](crate::FilterReturn).
#[doc(hidden)]
pub struct Spare {
    slots: [Kept; SLOTS],
}

/// One slot of a [`Spare`]: a free block and its layout, or nothing (`key` 0).
#[derive(Clone, Copy)]
struct Kept {
    /// The block's layout as one word ([`key`]), so that a call finds its block with one compare.
    key: usize,
    layout: Layout,
    block: NonNull<u8>,
}

impl Kept {
    const EMPTY: Self = Self {
        key: 0,
        layout: Layout::new::<()>(),
        block: NonNull::dangling(),
    };

    fn is_empty(&self) -> bool {
        self.key == 0
    }
}

/// A layout as one word, distinct for every layout kept: its size above, the base-2 logarithm of
/// its alignment (at most 29) in the low six bits. `None` for a zero size (nothing to keep) and
/// for sizes too large to shift (such futures are boxed as they are).
const fn key(layout: Layout) -> Option<usize> {
    let size = layout.size();
    if size == 0 || size > usize::MAX >> 6 {
        return None;
    }
    Some(size << 6 | layout.align().trailing_zeros() as usize)
}

// SAFETY: a `Spare` owns its blocks, which hold no value between calls; moving it to another
// thread moves that ownership, as moving a `Vec<u8>` would.
unsafe impl Send for Spare {}

impl Default for Spare {
    fn default() -> Self {
        Self {
            slots: [Kept::EMPTY; SLOTS],
        }
    }
}

impl std::fmt::Debug for Spare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept: Vec<usize> = self
            .slots
            .iter()
            .filter(|kept| !kept.is_empty())
            .map(|kept| kept.layout.size())
            .collect();
        f.debug_struct("Spare").field("kept", &kept).finish()
    }
}

impl Spare {
    /// The kept block of the layout whose key is `key`, and its slot: one is kept, or made now
    /// while a slot is free; `None` when every slot holds a block of another layout.
    #[inline(always)]
    fn block(&mut self, key: usize, layout: Layout) -> Option<(usize, NonNull<u8>)> {
        match self.slots.iter().position(|kept| kept.key == key) {
            Some(at) => Some((at, self.slots[at].block)),
            None => self.make(key, layout),
        }
    }

    /// Makes a block of `layout` in a free slot, if there is one. Kept out of line, so that the
    /// call that finds its block has no call to save its registers around.
    #[cold]
    #[inline(never)]
    fn make(&mut self, key: usize, layout: Layout) -> Option<(usize, NonNull<u8>)> {
        let at = self.slots.iter().position(Kept::is_empty)?;
        let block = fresh(layout);
        self.slots[at] = Kept { key, layout, block };
        Some((at, block))
    }

    /// How many blocks are kept.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.slots.iter().filter(|kept| !kept.is_empty()).count()
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        for kept in self.slots.iter().filter(|kept| !kept.is_empty()) {
            // SAFETY: the block was allocated by the global allocator with `layout`, and holds no
            // value: a `Spare` is borrowed whole while a call runs in one of its blocks.
            unsafe { alloc::dealloc(kept.block.as_ptr(), kept.layout) };
        }
    }
}

/// A new block of `layout`.
fn fresh(layout: Layout) -> NonNull<u8> {
    // SAFETY: `layout` has a non-zero size: the one caller, `Spare::make`, is given only layouts
    // that have a key, and `key` gives none for a zero size.
    let raw = unsafe { alloc::alloc(layout) };
    NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout))
}

/// A future placed in a block: dropped, should what polls it unwind.
struct Placed<F> {
    at: NonNull<F>,
}

impl<F> Drop for Placed<F> {
    fn drop(&mut self) {
        // SAFETY: a `Placed` lives only while the block holds a value of `F` that nothing else
        // drops; it is forgotten wherever the value is dropped or handed on otherwise.
        unsafe { std::ptr::drop_in_place(self.at.as_ptr()) };
    }
}

/// Makes a future with `make` in a block from `spare` and polls it once: its output when it
/// completes at once, the block staying in `spare`; otherwise the future itself, pinned in a
/// `Box` made of that block, which leaves `spare`. With every slot of `spare` taken by other
/// sizes, the future is boxed as a `Box` of its own.
///
/// A panic in `make` leaves the block free; a panic while polling drops the future before it
/// unwinds on, and leaves the block free.
#[inline(always)]
pub(crate) fn start<F: Future>(
    make: impl FnOnce() -> F,
    cx: &mut Context<'_>,
    spare: &mut Spare,
) -> Result<F::Output, Pin<Box<F>>> {
    let layout = Layout::new::<F>();
    let found = match key(layout) {
        Some(key) => spare.block(key, layout),
        None => None,
    };
    let Some((slot, block)) = found else {
        // Zero-sized (a box of it owns no memory), too large to keep, or no slot left: boxed as
        // it is.
        let mut boxed = Box::pin(make());
        return match boxed.as_mut().poll(cx) {
            Poll::Ready(output) => Ok(output),
            Poll::Pending => Err(boxed),
        };
    };
    let at = block.cast::<F>();
    // SAFETY: the block is valid for writes of `F` (allocated with its layout) and holds no
    // value: it is free between calls, and `spare` is borrowed here until the call is over. The
    // future is made straight into it; should `make` panic, nothing was written.
    unsafe { at.as_ptr().write(make()) };
    let placed = Placed { at };
    // SAFETY: the future is not moved again until it is dropped: in place below, by `Placed` on
    // unwinding, or as the `Box` it becomes.
    let pinned = unsafe { Pin::new_unchecked(&mut *at.as_ptr()) };
    match pinned.poll(cx) {
        Poll::Ready(output) => {
            // Should the drop panic, the block is left as it is: free, and still kept.
            std::mem::forget(placed);
            // SAFETY: the future is live, and never used again.
            unsafe { std::ptr::drop_in_place(at.as_ptr()) };
            Ok(output)
        }
        Poll::Pending => {
            std::mem::forget(placed);
            spare.slots[slot] = Kept::EMPTY;
            // SAFETY: the block was allocated by the global allocator with `Layout::new::<F>()`
            // and holds a live `F`, which is exactly what a `Box<F>` owns; it has left `spare`,
            // so nothing else frees or reuses it. The future was pinned, and stays pinned in the
            // box.
            Err(unsafe { Pin::new_unchecked(Box::from_raw(at.as_ptr())) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Waker;

    /// Counts its drops; holds some bytes so that it has a size.
    struct Counted(Arc<AtomicUsize>, [u64; 4]);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn a_future_that_completes_at_once_is_dropped_and_its_block_kept_for_the_next() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut spare = Spare::default();
        for round in 1..=3 {
            let held = Counted(drops.clone(), [round; 4]);
            let out = start(
                || async move {
                    let held = held;
                    held.1[0] * 2
                },
                &mut cx(),
                &mut spare,
            );
            assert_eq!(out.ok(), Some(round * 2));
            assert_eq!(drops.load(Ordering::SeqCst), round as usize);
            // One block, reused: not one per call.
            assert_eq!(spare.kept(), 1);
        }
    }

    #[test]
    fn a_future_that_waits_is_handed_back_boxed_and_runs_on_from_where_it_stopped() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut spare = Spare::default();
        let held = Counted(drops.clone(), [7; 4]);
        let mut first = true;
        let future = std::future::poll_fn(move |_| {
            if std::mem::take(&mut first) {
                Poll::Pending
            } else {
                let held = &held;
                Poll::Ready(held.1[0])
            }
        });
        let Err(mut waiting) = start(|| future, &mut cx(), &mut spare) else {
            panic!("the future should have waited");
        };
        // Its block went with it.
        assert_eq!(spare.kept(), 0);
        assert_eq!(waiting.as_mut().poll(&mut cx()), Poll::Ready(7));
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(waiting);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_waiting_future_keeps_its_block_while_the_next_call_of_its_size_gets_another() {
        fn once_pending(value: [u64; 4]) -> impl Future<Output = u64> {
            let mut first = true;
            std::future::poll_fn(move |_| {
                if std::mem::take(&mut first) {
                    Poll::Pending
                } else {
                    Poll::Ready(value[0])
                }
            })
        }
        let mut spare = Spare::default();
        // A block of this size is kept from a call that completed.
        let mut done = once_pending([0; 4]);
        let _ = std::pin::pin!(&mut done).poll(&mut cx());
        assert!(start(|| done, &mut cx(), &mut spare).is_ok());
        assert_eq!(spare.kept(), 1);
        let Err(mut first) = start(|| once_pending([1; 4]), &mut cx(), &mut spare) else {
            panic!("the first call should have waited");
        };
        let Err(mut second) = start(|| once_pending([2; 4]), &mut cx(), &mut spare) else {
            panic!("the second call should have waited");
        };
        assert_ne!(
            std::ptr::from_ref(&*first).addr(),
            std::ptr::from_ref(&*second).addr()
        );
        assert_eq!(second.as_mut().poll(&mut cx()), Poll::Ready(2));
        assert_eq!(first.as_mut().poll(&mut cx()), Poll::Ready(1));
    }

    #[test]
    fn a_panic_while_polling_drops_the_future_and_unwinds() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut spare = Spare::default();
        let held = Counted(drops.clone(), [1; 4]);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            start(
                || async move {
                    let _held = held;
                    panic!("handler failed");
                },
                &mut cx(),
                &mut spare,
            )
            .ok()
        }));
        assert!(caught.is_err());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        // The block is free again, and kept.
        assert_eq!(spare.kept(), 1);
        // The spare still works.
        assert_eq!(start(|| async { 5 }, &mut cx(), &mut spare).ok(), Some(5));
    }

    #[test]
    fn a_panic_while_making_the_future_leaves_its_block_free_for_the_next_call() {
        let mut spare = Spare::default();
        assert!(start(|| std::future::ready([1u64; 4]), &mut cx(), &mut spare).is_ok());
        assert_eq!(spare.kept(), 1);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            start(
                || -> std::future::Ready<[u64; 4]> { panic!("no future") },
                &mut cx(),
                &mut spare,
            )
            .is_ok()
        }));
        assert!(caught.is_err());
        // The kept block of that size holds nothing, and serves the next call.
        assert_eq!(spare.kept(), 1);
        assert_eq!(
            start(|| std::future::ready([2u64; 4]), &mut cx(), &mut spare).ok(),
            Some([2; 4])
        );
        assert_eq!(spare.kept(), 1);
    }

    #[test]
    fn every_layout_kept_has_a_key_of_its_own() {
        let layout = |size, align| Layout::from_size_align(size, align).unwrap();
        let mut seen = std::collections::HashSet::new();
        for size in [1, 2, 8, 16, 24, 64, 1 << 20, usize::MAX >> 6] {
            for shift in 0..30 {
                let align = 1usize << shift;
                let Ok(l) = Layout::from_size_align(size, align) else {
                    continue;
                };
                let key = key(l).expect("kept");
                assert_ne!(key, 0, "an empty slot's key");
                assert!(seen.insert(key), "{l:?} shares its key");
            }
        }
        assert_eq!(key(layout(0, 1)), None);
        assert_eq!(key(layout(0, 16)), None);
        assert_eq!(key(layout((usize::MAX >> 6) + 1, 1)), None);
        // Same size, other alignment: another block.
        let mut spare = Spare::default();
        assert!(start(|| std::future::ready(1u64), &mut cx(), &mut spare).is_ok());
        assert!(start(|| std::future::ready([1u8; 15]), &mut cx(), &mut spare).is_ok());
        assert_eq!(spare.kept(), 2);
    }

    #[test]
    fn futures_of_other_sizes_each_keep_a_block_up_to_the_slots() {
        let mut spare = Spare::default();
        let a = [1u8; 8];
        let b = [2u16; 8];
        let c = [3u32; 8];
        let d = [4u64; 8];
        let e = [5u128; 8];
        assert!(start(|| async move { a[0] }, &mut cx(), &mut spare).is_ok());
        assert!(start(|| async move { b[0] }, &mut cx(), &mut spare).is_ok());
        assert!(start(|| async move { c[0] }, &mut cx(), &mut spare).is_ok());
        assert!(start(|| async move { d[0] }, &mut cx(), &mut spare).is_ok());
        assert_eq!(spare.kept(), 4);
        // A fifth size finds no slot: its future is boxed as it is, and nothing is kept for it.
        assert!(start(|| async move { e[0] }, &mut cx(), &mut spare).is_ok());
        assert_eq!(spare.kept(), 4);
        // A zero-sized future takes no block.
        struct Now;
        impl Future for Now {
            type Output = u8;
            fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<u8> {
                Poll::Ready(9)
            }
        }
        let mut spare = Spare::default();
        assert_eq!(start(|| Now, &mut cx(), &mut spare).ok(), Some(9));
        assert_eq!(spare.kept(), 0);
    }
}

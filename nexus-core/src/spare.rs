//! Memory a dispatcher keeps between handler calls, so that a call that completes when first
//! polled allocates nothing.
//!
//! A handler's future is built in a block of memory the size of its type, taken from a
//! [`Spare`] when one is kept there, and polled in place. When it completes, it is dropped in
//! place and the block goes back to the `Spare` for the next call of that size. When it has to
//! wait, the block becomes the future's box (it was allocated exactly as a `Box` of that type
//! would be), so a waiting call costs what it always did.
//!
//! One of the crate's three `unsafe` modules (with `nexus::gate` and `early`): it places values
//! in raw memory and hands that memory to a `Box`.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// How many sizes of future a `Spare` keeps a block for.
const SLOTS: usize = 4;

/// Blocks of memory, each free and of a known layout, kept for the next handler call.
///
/// Not public API: it appears only in hidden methods of [`HandlerReturn`](crate::HandlerReturn)
/// and [`FilterReturn`](crate::FilterReturn).
#[doc(hidden)]
pub struct Spare {
    slots: [Option<(Layout, NonNull<u8>)>; SLOTS],
}

// SAFETY: a `Spare` owns its blocks, which hold no value; moving it to another thread moves that
// ownership, as moving a `Vec<u8>` would.
unsafe impl Send for Spare {}

impl Default for Spare {
    fn default() -> Self {
        Self {
            slots: [None; SLOTS],
        }
    }
}

impl std::fmt::Debug for Spare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept: Vec<usize> = self.slots.iter().flatten().map(|(l, _)| l.size()).collect();
        f.debug_struct("Spare").field("kept", &kept).finish()
    }
}

impl Spare {
    /// A kept block of exactly `layout`, if there is one.
    #[inline(always)]
    fn take(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.slots
            .iter_mut()
            .find(|slot| matches!(slot, Some((kept, _)) if *kept == layout))
            .and_then(Option::take)
            .map(|(_, block)| block)
    }

    /// A free block of `layout`: a kept one, or a new one.
    #[inline(always)]
    fn block(&mut self, layout: Layout) -> NonNull<u8> {
        match self.take(layout) {
            Some(block) => block,
            None => fresh(layout),
        }
    }

    /// Keeps a free block of `layout`, or frees it when every slot is taken.
    #[inline(always)]
    fn keep(&mut self, layout: Layout, block: NonNull<u8>) {
        match self.slots.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some((layout, block)),
            // SAFETY: the block was allocated by the global allocator with `layout` and holds no
            // value.
            None => unsafe { alloc::dealloc(block.as_ptr(), layout) },
        }
    }

    /// How many blocks are kept.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        for (layout, block) in self.slots.iter_mut().filter_map(Option::take) {
            // SAFETY: as in `keep`.
            unsafe { alloc::dealloc(block.as_ptr(), layout) };
        }
    }
}

/// A new block of `layout`. Kept out of line, so that the call that reuses a block has no call
/// to save its registers around.
#[cold]
#[inline(never)]
fn fresh(layout: Layout) -> NonNull<u8> {
    // SAFETY: `layout` has a non-zero size (the one caller, `start`, makes sure of it).
    let raw = unsafe { alloc::alloc(layout) };
    NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout))
}

/// A future placed in a block: on unwinding, drops it (while `live`) and frees the block.
struct Placed<F> {
    at: NonNull<F>,
    live: bool,
}

impl<F> Drop for Placed<F> {
    fn drop(&mut self) {
        if self.live {
            // SAFETY: while `live`, the block holds a value of `F` that nothing else drops.
            unsafe { std::ptr::drop_in_place(self.at.as_ptr()) };
        }
        // SAFETY: the block was allocated by the global allocator with `F`'s layout.
        unsafe { alloc::dealloc(self.at.as_ptr().cast(), Layout::new::<F>()) };
    }
}

/// Makes a future with `make` in a block from `spare` (or a new one) and polls it once: its
/// output when it completes at once, the block returned to `spare`; otherwise the future itself,
/// pinned in a `Box` made of that block.
///
/// A panic in `make` frees the block; a panic while polling drops the future and frees its block
/// before it unwinds on.
#[inline(always)]
pub(crate) fn start<F: Future>(
    make: impl FnOnce() -> F,
    cx: &mut Context<'_>,
    spare: &mut Spare,
) -> Result<F::Output, Pin<Box<F>>> {
    let layout = Layout::new::<F>();
    if layout.size() == 0 {
        // Nothing to allocate: a box of a zero-sized type owns no memory.
        let mut boxed = Box::pin(make());
        return match boxed.as_mut().poll(cx) {
            Poll::Ready(output) => Ok(output),
            Poll::Pending => Err(boxed),
        };
    }
    let block = spare.block(layout);
    let at = block.cast::<F>();
    let mut placed = Placed { at, live: false };
    // SAFETY: the block is valid for writes of `F` (allocated with its layout) and holds no value.
    // The future is made straight into it; should `make` panic, `Placed` frees the block.
    unsafe { at.as_ptr().write(make()) };
    placed.live = true;
    // SAFETY: the future is not moved again until it is dropped: in place below, by `Placed` on
    // unwinding, or as the `Box` it becomes.
    let pinned = unsafe { Pin::new_unchecked(&mut *at.as_ptr()) };
    match pinned.poll(cx) {
        Poll::Ready(output) => {
            // Should the drop panic, `Placed` only frees the block.
            placed.live = false;
            // SAFETY: the future is live, and never used again.
            unsafe { std::ptr::drop_in_place(at.as_ptr()) };
            std::mem::forget(placed);
            spare.keep(layout, block);
            Ok(output)
        }
        Poll::Pending => {
            std::mem::forget(placed);
            // SAFETY: the block was allocated by the global allocator with `Layout::new::<F>()`
            // and holds a live `F`, which is exactly what a `Box<F>` owns; the future was
            // pinned, and stays pinned in the box.
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
        assert_eq!(spare.kept(), 0);
        // The spare still works.
        assert_eq!(start(|| async { 5 }, &mut cx(), &mut spare).ok(), Some(5));
    }

    #[test]
    fn a_panic_while_making_the_future_frees_its_block() {
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
        // The kept block of that size was taken, and freed with the panic.
        assert_eq!(spare.kept(), 0);
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
        // A fifth size finds no slot: its block is freed, not kept.
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

//! A bounded channel that says what happens when it is full: [`Overflow`]. The channel
//! producers and boundaries of nexus are built on it, so no buffer of theirs is unbounded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::waiting::Waiting;

/// What a full bounded channel does with one more item.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// The sender waits for room: backpressure, nothing lost. The default.
    #[default]
    Wait,
    /// The oldest waiting item is dropped to make room, counted and reported.
    DropOldest,
    /// The new item is dropped, counted and reported.
    DropNewest,
}

/// A bounded multi-producer, single-consumer channel with an [`Overflow`] choice and a count of
/// what it dropped. Cheap to clone; clones share the channel.
///
/// ```
/// use nexus_core::channel::{Bounded, Overflow};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let channel = Bounded::new(2, Overflow::DropOldest);
/// for n in 1..=3 {
///     channel.send(n).await.unwrap();
/// }
/// assert_eq!(channel.dropped(), 1); // 1 made room for 3
/// assert_eq!(channel.recv().await, Some(2));
/// # }
/// ```
#[derive(Debug)]
pub struct Bounded<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Bounded<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    overflow: Overflow,
    dropped: AtomicU64,
    items: Notify,
    room: Notify,
}

#[derive(Debug)]
struct State<T> {
    queue: Waiting<T>,
    closed: bool,
}

/// Why [`Bounded::try_send`] handed an item back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The channel is full, and its [`Overflow`] is to wait.
    Full(T),
    /// The channel is closed.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The item handed back.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(item) | Self::Closed(item) => item,
        }
    }
}

/// What [`Bounded::send`] did with a full channel under a dropping [`Overflow`].
#[derive(Debug, PartialEq, Eq)]
pub enum Sent<T> {
    /// The item is in the channel; nothing was dropped.
    Queued,
    /// The item is in the channel; the oldest item was dropped to make room (here it is).
    DroppedOldest(T),
    /// The channel was full: the item itself was dropped (here it is).
    DroppedNewest(T),
}

/// What [`Bounded::offer`] did with its item.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Offered {
    Queued,
    DroppedOldest,
    DroppedNewest,
    Full,
    Closed,
}

impl Offered {
    /// A send's outcome, from this and the item `offer` left behind, if any (there is one for
    /// every outcome but `Queued`).
    #[inline]
    fn into_sent<T>(self, back: Option<T>) -> Result<Sent<T>, T> {
        match (self, back) {
            (Self::DroppedOldest, Some(item)) => Ok(Sent::DroppedOldest(item)),
            (Self::DroppedNewest, Some(item)) => Ok(Sent::DroppedNewest(item)),
            (Self::Full | Self::Closed, Some(item)) => Err(item),
            (Self::Queued, back) => {
                debug_assert!(back.is_none(), "a queued item leaves nothing behind");
                Ok(Sent::Queued)
            }
            // `offer` leaves an item behind for every other outcome.
            (_, None) => {
                debug_assert!(false, "{self:?} left no item behind");
                Ok(Sent::Queued)
            }
        }
    }
}

impl<T> Bounded<T> {
    /// A channel holding `capacity` items (at least 1).
    pub fn new(capacity: usize, overflow: Overflow) -> Self {
        Self::with_waiting(capacity, overflow, Waiting::Fifo(VecDeque::new()))
    }

    /// A channel holding `capacity` items (at least 1) that hands out first the item of the
    /// lowest `rank`, and among equal ranks the oldest, with aging: an item that has waited
    /// `max_wait` (on tokio's clock) goes before every item younger than it, whatever their
    /// ranks. So an item waits at most `max_wait`, then for the overdue items older than it
    /// (at most `capacity`), however many items of lower rank arrive.
    ///
    /// ```
    /// use std::time::Duration;
    /// use nexus_core::channel::{Bounded, Overflow};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let channel = Bounded::ranked(8, Overflow::Wait, Duration::from_secs(1), |n: &i64| *n);
    /// for n in [5, 3, 9, 3] {
    ///     channel.send(n).await.unwrap();
    /// }
    /// assert_eq!(channel.recv().await, Some(3));
    /// tokio::time::sleep(Duration::from_secs(1)).await; // 5 and 9 are overdue now
    /// assert_eq!(channel.recv().await, Some(5), "oldest overdue first");
    /// assert_eq!(channel.recv().await, Some(9));
    /// assert_eq!(channel.recv().await, Some(3));
    /// # }
    /// ```
    pub fn ranked(
        capacity: usize,
        overflow: Overflow,
        max_wait: Duration,
        rank: fn(&T) -> i64,
    ) -> Self {
        Self::with_waiting(capacity, overflow, Waiting::ranked(max_wait, rank))
    }

    /// Whether items go out by rank ([`ranked`](Self::ranked)) rather than in arrival order.
    pub fn is_ranked(&self) -> bool {
        matches!(self.lock().queue, Waiting::Ranked(_))
    }

    fn with_waiting(capacity: usize, overflow: Overflow, queue: Waiting<T>) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue,
                    closed: false,
                }),
                capacity: capacity.max(1),
                overflow,
                dropped: AtomicU64::new(0),
                items: Notify::new(),
                room: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `item` in, drops one as the overflow choice says, or refuses it (full under
    /// [`Overflow::Wait`], or closed). An item dropped or refused is left in `back`: the common
    /// outcome, queued, returns one word in a register, where a `Result` holding an item was
    /// returned in memory and copied whole by the caller.
    fn offer(&self, item: T, back: &mut Option<T>) -> Offered {
        let mut state = self.lock();
        if state.closed {
            *back = Some(item);
            return Offered::Closed;
        }
        // Only an item into an empty channel wakes a receiver: one waiting saw the channel
        // empty, so the item that ended that was announced; one that takes an item and leaves
        // others passes the wake-up on (`pass_on`).
        let was_empty = state.queue.len() == 0;
        let offered = if state.queue.len() < self.shared.capacity {
            state.queue.push(item);
            Offered::Queued
        } else {
            match self.shared.overflow {
                Overflow::Wait => {
                    *back = Some(item);
                    return Offered::Full;
                }
                Overflow::DropNewest => {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    *back = Some(item);
                    return Offered::DroppedNewest;
                }
                Overflow::DropOldest => {
                    *back = state.queue.pop_oldest();
                    state.queue.push(item);
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    if back.is_some() {
                        Offered::DroppedOldest
                    } else {
                        Offered::Queued
                    }
                }
            }
        };
        drop(state);
        if was_empty {
            self.shared.items.notify_one();
        }
        offered
    }

    /// After a receiver took items under `state`: if some are left, another receiver waiting
    /// may have had its wake-up spent on what this one took, so one is woken.
    #[inline]
    fn pass_on(&self, state: std::sync::MutexGuard<'_, State<T>>) {
        let left = state.queue.len() != 0;
        drop(state);
        if left {
            self.shared.items.notify_one();
        }
    }

    /// Sends `item`: waits while the channel is full, or drops an item, as its [`Overflow`]
    /// says.
    ///
    /// # Errors
    ///
    /// Hands `item` back when the channel is closed.
    #[allow(
        clippy::manual_async_fn,
        reason = "an `async fn` copies its arguments into its body when first polled"
    )]
    pub fn send(&self, item: T) -> impl Future<Output = Result<Sent<T>, T>> + '_ {
        // A block rather than an `async fn`, whose first poll would copy `item` from where the
        // caller wrote it into the future's body: a copy that waits for the caller's stores.
        async move {
            let mut back = None;
            // Room is the common case: only a full channel registers for a wake-up.
            let mut offered = self.offer(item, &mut back);
            loop {
                match (offered, back.take()) {
                    (Offered::Full, Some(full)) => {
                        let room = self.shared.room.notified();
                        let mut room = std::pin::pin!(room);
                        room.as_mut().enable();
                        offered = self.offer(full, &mut back);
                        if offered == Offered::Full {
                            room.await;
                        }
                    }
                    (offered, back) => return offered.into_sent(back),
                }
            }
        }
    }

    /// Sends from outside the async runtime (a plain thread, or a closure given to
    /// `tokio::task::spawn_blocking`), blocking the thread while it must wait. Inside an async
    /// task use [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Panics
    ///
    /// When called from a thread that is running async tasks (a runtime's worker, or inside
    /// `block_on`): waiting there could block forever the very task that would make room, so
    /// tokio refuses it, as its own channels' `blocking_send` does.
    pub fn blocking_send(&self, item: T) -> Result<Sent<T>, T> {
        match tokio::runtime::Handle::try_current() {
            // tokio checks that this thread may block: it may in `spawn_blocking`, not on a
            // worker.
            Ok(runtime) => runtime.block_on(self.send(item)),
            Err(_) => block_on(self.send(item)),
        }
    }

    /// Sends `item` if there is room now (or a dropping [`Overflow`] makes room).
    ///
    /// # Errors
    ///
    /// Hands `item` back, saying why: [`TrySendError::Full`] under [`Overflow::Wait`],
    /// [`TrySendError::Closed`] once the channel is closed.
    pub fn try_send(&self, item: T) -> Result<Sent<T>, TrySendError<T>> {
        let mut back = None;
        let offered = self.offer(item, &mut back);
        match (offered, back) {
            (Offered::Full, Some(item)) => Err(TrySendError::Full(item)),
            (Offered::Closed, Some(item)) => Err(TrySendError::Closed(item)),
            (offered, back) => offered.into_sent(back).map_err(TrySendError::Closed),
        }
    }

    /// Waits for the next item; `None` once the channel is closed and empty.
    pub async fn recv(&self) -> Option<T> {
        // An item waiting is the common case under load: only an empty channel registers for a
        // wake-up.
        if let Some(item) = self.try_recv() {
            return Some(item);
        }
        loop {
            let items = self.shared.items.notified();
            let mut items = std::pin::pin!(items);
            items.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(item) = state.queue.pop() {
                    self.pass_on(state);
                    self.shared.room.notify_one();
                    return Some(item);
                }
                if state.closed {
                    return None;
                }
            }
            items.await;
        }
    }

    /// Waits for items, then moves those waiting, up to `limit` (at least 1), to the back of
    /// `buffer`, in order: one lock and one wake-up of waiting senders for them all. Returns how
    /// many it moved; 0 once the channel is closed and empty.
    ///
    /// ```
    /// use std::collections::VecDeque;
    /// use nexus_core::channel::{Bounded, Overflow};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let channel = Bounded::new(8, Overflow::Wait);
    /// for n in 1..=5 {
    ///     channel.send(n).await.unwrap();
    /// }
    /// channel.close();
    /// let mut taken = VecDeque::new();
    /// assert_eq!(channel.recv_many(&mut taken, 3).await, 3);
    /// assert_eq!(channel.recv_many(&mut taken, 3).await, 2);
    /// assert_eq!(channel.recv_many(&mut taken, 3).await, 0); // closed and empty
    /// assert_eq!(taken, [1, 2, 3, 4, 5]);
    /// # }
    /// ```
    pub async fn recv_many(&self, buffer: &mut VecDeque<T>, limit: usize) -> usize {
        // As in `recv`: only an empty channel registers for a wake-up.
        if let Some(moved) = self.take_many(buffer, limit) {
            return moved;
        }
        loop {
            let items = self.shared.items.notified();
            let mut items = std::pin::pin!(items);
            items.as_mut().enable();
            if let Some(moved) = self.take_many(buffer, limit) {
                return moved;
            }
            items.await;
        }
    }

    /// Moves up to `limit` waiting items to `buffer`: how many, or `None` when there were none
    /// and the channel is open.
    fn take_many(&self, buffer: &mut VecDeque<T>, limit: usize) -> Option<usize> {
        let mut state = self.lock();
        let moved = limit.max(1).min(state.queue.len());
        if moved == 0 {
            return state.closed.then_some(0);
        }
        state.queue.take_into(buffer, moved);
        self.pass_on(state);
        // A sender waiting for room registered before it last found the channel full, so
        // waking those registered reaches every one of them.
        self.shared.room.notify_waiters();
        Some(moved)
    }

    /// The next item if there is one now.
    pub fn try_recv(&self) -> Option<T> {
        let mut state = self.lock();
        let item = state.queue.pop();
        if item.is_some() {
            self.pass_on(state);
            self.shared.room.notify_one();
        }
        item
    }

    /// Refuses further items; those already in it can still be received. Sends check for
    /// room and put in under the same lock as the close, so once it returns no send gets an
    /// item in: receiving until empty then takes every item that will ever be in it.
    pub fn close(&self) {
        self.lock().closed = true;
        self.shared.items.notify_waiters();
        self.shared.room.notify_waiters();
    }

    /// Whether it is closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// How many items are waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether no item is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many items it holds at most.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// How many items it dropped under its [`Overflow`].
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// Wakes a parked thread.
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` on this thread, parking it while the future waits.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each send says what became of its item, and hands back the one dropped or refused.
    #[tokio::test]
    async fn each_send_says_what_it_dropped_or_hands_its_item_back() {
        for (overflow, made, dropped) in [
            (
                Overflow::DropNewest,
                Sent::DroppedNewest as fn(i32) -> Sent<i32>,
                [3, 4, 5],
            ),
            (Overflow::DropOldest, Sent::DroppedOldest, [1, 2, 3]),
        ] {
            let channel = Bounded::new(2, overflow);
            let mut sent = Vec::new();
            for n in 1..=4 {
                sent.push(channel.send(n).await);
            }
            sent.push(channel.try_send(5).map_err(|_| 5));
            let mut expected = vec![Ok(Sent::Queued), Ok(Sent::Queued)];
            expected.extend(dropped.map(|item| Ok(made(item))));
            assert_eq!(sent, expected, "{overflow:?}");
            channel.close();
            assert_eq!(channel.send(6).await, Err(6), "closed: handed back");
        }
        let wait = Bounded::new(1, Overflow::Wait);
        wait.close();
        assert_eq!(wait.send(7).await, Err(7));
    }

    #[tokio::test]
    async fn each_overflow_choice_counts_what_it_drops() {
        let newest = Bounded::new(2, Overflow::DropNewest);
        for n in 1..=4 {
            newest.send(n).await.unwrap();
        }
        assert_eq!(
            (newest.dropped(), newest.try_recv(), newest.try_recv()),
            (2, Some(1), Some(2))
        );

        let oldest = Bounded::new(2, Overflow::DropOldest);
        for n in 1..=4 {
            oldest.send(n).await.unwrap();
        }
        assert_eq!(
            (oldest.dropped(), oldest.try_recv(), oldest.try_recv()),
            (2, Some(3), Some(4))
        );

        let wait = Bounded::new(1, Overflow::Wait);
        wait.send(1).await.unwrap();
        assert_eq!(
            wait.try_send(2),
            Err(TrySendError::Full(2)),
            "full: the sender would wait"
        );
        wait.close();
        assert_eq!(wait.try_send(3), Err(TrySendError::Closed(3)));
        assert_eq!(wait.dropped(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn taking_many_makes_room_for_every_waiting_sender() {
        let channel = Bounded::new(2, Overflow::Wait);
        channel.send(1).await.unwrap();
        channel.send(2).await.unwrap();
        let senders: Vec<_> = (3..=4)
            .map(|n| {
                let channel = channel.clone();
                tokio::spawn(async move { channel.send(n).await })
            })
            .collect();
        tokio::task::yield_now().await; // both senders wait for room
        let mut taken = VecDeque::new();
        assert_eq!(channel.recv_many(&mut taken, 8).await, 2);
        for sender in senders {
            let sent = tokio::time::timeout(std::time::Duration::from_secs(5), sender)
                .await
                .expect("a waiting sender was not woken");
            assert_eq!(sent.unwrap(), Ok(Sent::Queued));
        }
        assert_eq!(channel.recv_many(&mut taken, 8).await, 2);
        assert_eq!(taken, [1, 2, 3, 4]);
    }

    /// Only the first of items sent at once wakes a receiver: one that takes an item and leaves
    /// others passes the wake-up on, so every receiver waiting gets one, whichever way it takes.
    #[tokio::test(start_paused = true)]
    async fn items_sent_at_once_reach_every_waiting_receiver() {
        for take_many in [false, true] {
            let channel = Bounded::new(8, Overflow::Wait);
            let receivers: Vec<_> = (0..3)
                .map(|_| {
                    let channel = channel.clone();
                    tokio::spawn(async move {
                        if take_many {
                            let mut taken = VecDeque::new();
                            channel.recv_many(&mut taken, 1).await;
                            taken.pop_front()
                        } else {
                            channel.recv().await
                        }
                    })
                })
                .collect();
            tokio::task::yield_now().await; // all three wait on an empty channel
            for n in 1..=3 {
                channel.try_send(n).unwrap();
            }
            let mut got = Vec::new();
            for receiver in receivers {
                let item = tokio::time::timeout(std::time::Duration::from_secs(5), receiver)
                    .await
                    .unwrap_or_else(|_| panic!("a receiver waited on (take_many: {take_many})"));
                got.extend(item.unwrap());
            }
            got.sort_unstable();
            assert_eq!(got, [1, 2, 3], "take_many: {take_many}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_sender_gets_room_and_a_thread_can_block() {
        let channel = Bounded::new(1, Overflow::Wait);
        let sender = channel.clone();
        let thread = std::thread::spawn(move || {
            for n in 0..100 {
                sender.blocking_send(n).unwrap();
            }
            sender.close();
        });
        let mut got = Vec::new();
        while let Some(n) = channel.recv().await {
            got.push(n);
        }
        thread.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(channel.send(7).await, Err(7), "closed");
    }
}

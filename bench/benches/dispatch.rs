//! Every nexus path beside its floors and beside the event buses a user might pick instead, in
//! one process, on one current-thread tokio runtime.
//!
//! ```text
//! cargo bench --manifest-path bench/Cargo.toml
//! ```
//!
//! Each path has three floors, each doing the same work as the nexus path:
//!
//! - `static`: a `match` on the type and a direct call of an async handler, nothing boxed or
//!   looked up: the tightest code a program with its handlers known at compile time would write.
//!   Its handlers are functions returning an `async move` block, as the nexus cases' handlers
//!   are: written as `async fn`s, the same floor took about twice as long (see
//!   `direct_handler`);
//! - `dynamic`: handlers chosen at run time from a fast map (`FxHashMap`) of `dyn Fn`, called
//!   without a future: the tightest code for handlers registered at run time;
//! - `naive`: a SipHash `HashMap` of boxed handlers, each call's future boxed.
//!
//! Each floor clones the queue handle for each call, as a nexus hands one to each handler. The
//! single path has one reference more, `dynamic_locked`: the dynamic floor with its table behind
//! a `std::sync::Mutex` locked for each event, what one-at-a-time dispatch from any thread adds
//! at least (an uncontended lock and unlock, two locked instructions). The single, filter and
//! fanout paths have `static_serialized` (and the single path `dynamic_serialized`): that floor
//! with each event dispatched under the cheapest lock there is, taken with one compare-and-swap
//! and given back with a plain store, as a spin lock is: the least that ingest of one event at a
//! time, from any thread, costs beside the floor, whatever else it keeps. The single, filter, chain
//! and fanout paths have one more, `static_guarded`: the static floor with what a nexus keeps
//! for each event (the running check, the gate, the counts, the queue looked at, the thread's
//! cause and mark, each call guarded against a panic; on the chain, each secondary event put and
//! taken as a nexus's queue puts and takes a handler's events), each step as tight as it can be
//! written, its calls polled once within one poll: what those guarantees cost at least, and how
//! far nexus is from code that keeps them. The single, filter and fanout paths have one more
//! again, `dynamic_guarded`: the guarded floor with its handlers and filters registered at run
//! time, found in a fast map and called through a `dyn` pointer, each call making its future on
//! its own stack and polling it once (a fanout's copies made in the call): what keeping those
//! guarantees for handlers chosen at run time costs at least, written as tightly as the bench
//! knows how (it takes every call to complete at once, having nowhere to keep one that waits).
//! And nexus has one case more on the single and filter paths,
//! `nexus_plain`: its handler (or filters) plain closures, as the dynamic floor's are, where
//! `nexus` and the static floor call async ones; and one more on the single path,
//! `nexus_async_fn`: its handler an `async fn` given to `add_handler`; and `nexus_macro`: its
//! handler an `async fn` under `#[handler]`. The single, filter and fanout paths have
//! `nexus_all` too: the same events given to one `ingest_all`, which takes the gate once for
//! the whole batch where each `ingest` takes it once an event.
//!
//! The `named` path is ingest into one handler with the event's type a name made at run time,
//! as names read off the wire are (shared text, a reference counted for each event's copy),
//! beside its static floor.
//!
//! The `gate` path is the gate's two locked instructions alone, an uncontended take and give-back
//! per event as a nexus's gate does them: what a locked instruction costs on the machine at the
//! time of the run, which every guarded floor and every nexus path pays twice an event.
//!
//! The `decode` path reads messages as a network receiver does (`wire::decode`), beside
//! `serde_json` reading them into a struct of the same fields with its `Deserialize` derived.
//!
//! Each round runs every case once, so that machine noise falls on all of them alike, each
//! case's future placed in its box at the next of sixteen offsets a page apart in all (`shifted`),
//! so that no case's median rests on where its state happened to lie; the table
//! gives the median over the rounds of the nanoseconds per event, and each ratio is taken between
//! medians of the same run. Peers are timed to the completion of their handlers, not to the
//! return of `publish`, and compared with nexus's inline path (`ingest`) and with its cross-task
//! path (a producer task feeding the nexus), which is what they do. Each peer's case runs in a
//! child process of its own each round (once to warm up, then timed), so that threads a peer
//! leaves behind do not slow the cases after it. The run also times a Timer
//! of 1000 ticks of 1 ms, compares the peak memory of runs of 100,000 and 10,000,000 events
//! (each in a child process), writes `bench/dispatch.svg`, and ends with one `summary:` line of
//! `name=value` pairs. No counting allocator is installed here: allocations are counted by the
//! `allocations` bench, a process of its own.
//!
//! Environment: `NEXUS_BENCH_EVENTS` (default 200000; the runs of nexuses on more than one core
//! take ten times as many), `NEXUS_BENCH_ROUNDS` (default 15),
//! `NEXUS_BENCH_QUICK=1` (few events and rounds, no memory run: to check that it works),
//! `NEXUS_BENCH_ONLY=single,fanout8/nexus` (only these paths, or one side of a path),
//! `NEXUS_BENCH_CASES_ONLY=1` (the cases and their table, and nothing after them: for counting
//! instructions per event with callgrind, as the difference of two runs with different
//! `NEXUS_BENCH_EVENTS`),
//! `NEXUS_PYTHON` and `NEXUS_PYTHON_REFERENCE` (an interpreter with async-nexus installed and
//! the path of `python_reference.py`: the original is then measured in the same run).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::hint::black_box;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use nexus::bus::{AsyncEventBoundary, EventFanout};
use nexus::channel::Overflow;
use nexus::sources::{ChannelProducer, EventSender, Timer, TimerKind};
use nexus::{AsyncEventNexus, Cause, Event, EventQueue, Handler};
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

// ----- what every handler does ---------------------------------------------------------------

/// The event type of the benchmark's events.
const TYPE: i64 = 99;
/// The cases that are floors or references, not nexus or a peer: no ratio of their own, grey in
/// the chart.
const FLOORS: [&str; 10] = [
    "naive",
    "dynamic",
    "static",
    "dynamic_locked",
    "static_serialized",
    "dynamic_serialized",
    "static_guarded",
    "dynamic_guarded",
    "floor_mpsc",
    "serde_derive",
];
/// How many secondary events a chain dispatches per ingest (the first included).
const CHAIN: i64 = 10;
/// How many handlers a fanout calls.
const FANOUT: usize = 8;
/// The capacity of every channel between two tasks (the nexus's default queue capacity).
const CAPACITY: usize = 50;

/// The work of a handler that runs inline: read the payload.
#[inline]
fn body(event: &Event) {
    black_box(event.payload.as_int());
}

fn event(i: u64) -> Event {
    Event::new(i, TYPE, 0, i as i64)
}

/// Counts handled events and wakes the timer when the expected number is reached: the body of
/// handlers that run in another task (and of every peer's), whose end the timer must wait for.
#[derive(Default)]
struct Tally {
    seen: AtomicU64,
    target: AtomicU64,
    done: Notify,
}

impl Tally {
    fn expect(self: &Arc<Self>, n: u64) {
        self.seen.store(0, Ordering::SeqCst);
        self.target.store(n, Ordering::SeqCst);
    }

    #[inline]
    fn hit(&self) {
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.target.load(Ordering::Relaxed) {
            self.done.notify_one();
        }
    }

    async fn wait(&self) {
        self.done.notified().await;
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type BoxedHandler = Box<dyn Fn(Event, EventQueue) -> BoxFuture + Send + Sync>;
type BoxedFilter = Box<dyn Fn(&Event) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

fn boxed_handler() -> BoxedHandler {
    Box::new(|event: Event, _queue: EventQueue| Box::pin(async move { body(&event) }))
}

/// A filter as the benchmark's filters are: async, reads the payload, lets the event pass.
fn passing_filter(event: &Event) -> impl Future<Output = bool> + Send + use<> {
    let value = event.payload.as_int();
    async move {
        black_box(value);
        false
    }
}

fn running_nexus(
    nexus: &AsyncEventNexus,
) -> tokio::task::JoinHandle<Result<(), nexus::NexusError>> {
    nexus.start().expect("start")
}

async fn settle() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

/// Starts `nexus`, times `body`, then stops it.
async fn timed_running(nexus: &AsyncEventNexus, body: impl AsyncFnOnce()) -> Duration {
    let running = running_nexus(nexus);
    settle().await;
    let start = Instant::now();
    body().await;
    let took = start.elapsed();
    nexus.stop();
    let _ = running.await;
    took
}

/// Starts `nexus`, times `ingests` ingests of the events `make` gives, then stops it.
async fn timed_ingests(
    nexus: &AsyncEventNexus,
    ingests: u64,
    make: impl Fn(u64) -> Event,
) -> Duration {
    timed_running(nexus, async || {
        for i in 0..ingests {
            nexus.ingest(make(i)).await.expect("ingest");
        }
    })
    .await
}

// ----- nexus paths and their floors ---------------------------------------------------------

/// Starts `nexus`, times one `ingest_all` of `ingests` events made by `make`, then stops it.
async fn timed_ingest_all(
    nexus: &AsyncEventNexus,
    ingests: u64,
    make: impl Fn(u64) -> Event + Send,
) -> Duration {
    timed_running(nexus, async || {
        let mut events = (0..ingests).map(make);
        nexus.ingest_all(&mut events).await.expect("ingest_all");
    })
    .await
}

fn single_nexus() -> AsyncEventNexus {
    let nexus = AsyncEventNexus::new();
    nexus
        .add_handler(TYPE, |event: Event, _queue: EventQueue| async move {
            body(&event)
        })
        .expect("handler");
    nexus
}

async fn nexus_single(n: u64) -> Duration {
    timed_ingests(&single_nexus(), n, event).await
}

/// The single path's events given to one `ingest_all`.
async fn nexus_single_all(n: u64) -> Duration {
    timed_ingest_all(&single_nexus(), n, event).await
}

/// The benchmark's handler as an `async fn`.
async fn async_fn_handler(event: Event, _queue: EventQueue) {
    body(&event)
}

/// The single path with the handler an `async fn` given to `add_handler`: the function itself,
/// its call the function's own future.
async fn nexus_single_async_fn(n: u64) -> Duration {
    let nexus = AsyncEventNexus::new();
    nexus.add_handler(TYPE, async_fn_handler).expect("handler");
    timed_ingests(&nexus, n, event).await
}

/// The benchmark's handler as an `async fn` under `#[handler]`, the only one this binary
/// registers so.
#[nexus::handler(event_type = TYPE as i64)]
async fn macro_handler(event: Event, _queue: EventQueue) {
    body(&event)
}

/// The single path with the handler registered by `#[handler]`, in a nexus built from what the
/// binary registered.
async fn nexus_single_macro(n: u64) -> Duration {
    let nexus = nexus::registered().build().expect("registered");
    timed_ingests(&nexus, n, event).await
}

/// The single path with a plain (not async) handler, the kind of handler the dynamic floor calls.
async fn nexus_single_plain(n: u64) -> Duration {
    let nexus = AsyncEventNexus::new();
    nexus
        .add_handler(TYPE, |event: Event, _queue: EventQueue| body(&event))
        .expect("handler");
    timed_ingests(&nexus, n, event).await
}

async fn floor_single(n: u64) -> Duration {
    let mut table: HashMap<i64, BoxedHandler> = HashMap::new();
    table.insert(TYPE, boxed_handler());
    let queue = AsyncEventNexus::new().queue().clone();
    let start = Instant::now();
    for i in 0..n {
        let event = event(i);
        let handler = table
            .get(&event.event_type.as_int().unwrap_or_default())
            .expect("handler");
        handler(event, queue.clone()).await;
    }
    start.elapsed()
}

/// The static floor's handler: called by name, its future never boxed. It has the shape of the
/// handlers the nexus cases register, a function returning an `async move` block. Written as an
/// `async fn`, the same floor took about twice as long (single: 24 ns against 12; fanout: 127
/// against 60): in the machine code, such a future copies its arguments into its body when first
/// polled, reading the event, just written field by field, in wider pieces than it was written.
#[allow(
    clippy::manual_async_fn,
    reason = "as an `async fn`, twice as slow: see the doc comment"
)]
#[inline]
fn direct_handler(event: Event, _queue: EventQueue) -> impl Future<Output = ()> + Send + use<> {
    async move { body(&event) }
}

/// A named event type made at run time, as one read off the wire is: its name is shared text,
/// whose clone counts a reference (a locked instruction).
fn name_made_at_run_time() -> nexus::EventType {
    nexus::EventType::name(String::from("bench.named"))
}

/// Ingest into one handler, the event's type a name made at run time: the name looked up by
/// hashing, and each event's copy of it counted as it is made and dropped.
async fn nexus_named(n: u64) -> Duration {
    let nexus = AsyncEventNexus::new();
    let name = name_made_at_run_time();
    nexus
        .add_handler(
            name.clone(),
            |event: Event, _queue: EventQueue| async move { body(&event) },
        )
        .expect("handler");
    timed_ingests(&nexus, n, |i| Event::new(i, name.clone(), 0, i as i64)).await
}

/// The static floor of the named path: a `match` on the name and a direct call, each event
/// made and dropped as the nexus case's are.
async fn static_named(n: u64) -> Duration {
    let queue = AsyncEventNexus::new().queue().clone();
    let name = name_made_at_run_time();
    let start = Instant::now();
    for i in 0..n {
        let event = Event::new(i, name.clone(), 0, i as i64);
        match event.event_type.as_name() {
            Some("bench.named") => direct_handler(event, queue.clone()).await,
            _ => unreachable!("one type"),
        }
    }
    start.elapsed()
}

/// The static floor: a `match` on the type and a direct call of an async handler, with the queue
/// handle cloned for each call as a nexus hands one over. Nothing is boxed or looked up.
async fn static_single(n: u64) -> Duration {
    let queue = AsyncEventNexus::new().queue().clone();
    let start = Instant::now();
    for i in 0..n {
        let event = event(i);
        match event.event_type.as_int() {
            Some(TYPE) => direct_handler(event, queue.clone()).await,
            _ => unreachable!("one type"),
        }
    }
    start.elapsed()
}

/// What the guarded floor keeps for each event, as a nexus keeps it: whether it runs, its gate
/// (and whether another task waits for it), its counts, and its queue's length.
struct Guards {
    running: AtomicBool,
    gate: AtomicBool,
    waiters: AtomicUsize,
    arrived: AtomicU64,
    dispatched: AtomicU64,
    queued: AtomicUsize,
}

thread_local! {
    /// The guarded floor's cause of events made now: the event being handled, and its root.
    static GUARDED_CAUSE: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
    /// The guarded floor's mark of the dispatcher whose handler runs now, that a call back
    /// into it is told by.
    static GUARDED_INSIDE: Cell<usize> = const { Cell::new(0) };
}

impl Guards {
    /// Takes the gate for an event, as a nexus does before calling its handler.
    #[inline(always)]
    fn enter(&self) {
        if !self.running.load(Ordering::Acquire) {
            unreachable!("running throughout");
        }
        if self
            .gate
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            unreachable!("one task");
        }
        let arrived = self.arrived.load(Ordering::Relaxed);
        self.arrived.store(arrived + 1, Ordering::Relaxed);
        if self.queued.load(Ordering::Acquire) != 0 {
            unreachable!("nothing queued");
        }
    }

    /// Counts an event dispatched, as a nexus counts each event's outcome.
    #[inline(always)]
    fn dispatched(&self) {
        let dispatched = self.dispatched.load(Ordering::Relaxed);
        self.dispatched.store(dispatched + 1, Ordering::Relaxed);
    }

    /// Gives the gate back after an event's handlers, as a nexus does.
    #[inline(always)]
    fn leave(&self) {
        if self.queued.load(Ordering::Acquire) != 0 {
            unreachable!("nothing queued");
        }
        self.gate.store(false, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) != 0 {
            unreachable!("no task waits");
        }
    }

    /// Sets the thread's cause of events made now (`event`) and its mark of the dispatcher
    /// whose handlers run, as a nexus does around its handlers' calls; the values before.
    #[inline(always)]
    fn mark(&self, event: &Event) -> (Option<(u64, u64)>, usize) {
        (
            GUARDED_CAUSE.replace(Some((event.id, event.id))),
            GUARDED_INSIDE.replace(std::ptr::from_ref(self) as usize),
        )
    }

    /// Gives back the thread's cause and mark that [`mark`](Self::mark) found.
    #[inline(always)]
    fn unmark((cause, inside): (Option<(u64, u64)>, usize)) {
        GUARDED_INSIDE.set(inside);
        GUARDED_CAUSE.set(cause);
    }

    fn new() -> Self {
        Self {
            running: AtomicBool::new(true),
            gate: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
            arrived: AtomicU64::new(0),
            dispatched: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
        }
    }

    /// Holds that `arrived` events arrived and `dispatched` were dispatched.
    fn check(self, arrived: u64, dispatched: u64) {
        assert_eq!(
            (self.arrived.into_inner(), self.dispatched.into_inner()),
            (arrived, dispatched)
        );
    }
}

/// `call` polled once, guarded against a panic, as a nexus calls each handler and filter: its
/// output (the guarded floors' calls complete at once).
#[inline(always)]
fn guarded<F: Future>(call: F, cx: &mut Context<'_>) -> F::Output {
    let mut call = std::pin::pin!(call);
    match std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
        Ok(Poll::Ready(output)) => output,
        Ok(Poll::Pending) => unreachable!("completes at once"),
        Err(_) => unreachable!("no panic"),
    }
}

/// Times `n` events through a guarded floor: each made, then dispatched by `$dispatch` (the
/// event, the queue handle and the context, its filters and handlers polled once) within one
/// poll, with what a nexus keeps for each event around it. A macro, so that each floor is
/// compiled as if written out: as a function taking the dispatch as a closure, the single
/// floor took 18 instructions per event more.
macro_rules! guarded_floor {
    ($n:expr, |$event:ident, $queue:ident, $cx:ident| $dispatch:expr) => {{
        let guards = Guards::new();
        let $queue = AsyncEventNexus::new().queue().clone();
        let start = Instant::now();
        for i in 0..$n {
            std::future::poll_fn(|$cx| {
                let $event = event(i);
                guards.enter();
                let before = guards.mark(&$event);
                $dispatch;
                guards.dispatched();
                Guards::unmark(before);
                guards.leave();
                Poll::Ready(())
            })
            .await;
        }
        let took = start.elapsed();
        guards.check($n, $n);
        took
    }};
}

/// The guarded floor: the static floor with what a nexus keeps for each event, each step as
/// tight as it can be written: whether it runs (a load), its gate taken and given back (a
/// compare-and-swap, then a swap and a load: the two locked instructions), the event counted as
/// it arrives and as it ends, its queue looked at before the call and after it, the cause that
/// events made by the handler get and the mark that tells a call back from the handler (two
/// thread-locals set, then given back), and the call guarded against a panic. Nothing is looked
/// up at run time: its difference from the static floor is what those guarantees cost at
/// least, and a nexus's difference from it is the rest.
async fn guarded_single(n: u64) -> Duration {
    guarded_floor!(n, |event, queue, cx| match event.event_type.as_int() {
        Some(TYPE) => guarded(direct_handler(event, queue.clone()), cx),
        _ => unreachable!("one type"),
    })
}

type SyncHandler = Box<dyn Fn(Event, EventQueue) + Send + Sync>;

/// A handler registered at run time, called as tightly as it can be: through a `dyn` pointer,
/// its future made on the callee's stack and polled once there.
type PolledHandler = Box<dyn Fn(Event, EventQueue, &mut Context<'_>) -> Poll<()> + Send + Sync>;

fn polled<F, Fut>(handler: F) -> PolledHandler
where
    F: Fn(Event, EventQueue) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()>,
{
    Box::new(move |event, queue, cx| std::pin::pin!(handler(event, queue)).poll(cx))
}

/// A handler registered at run time, called with a copy of an event, made in the call where the
/// handler's future keeps it.
type CopyingHandler = Box<dyn Fn(&Event, EventQueue, &mut Context<'_>) -> Poll<()> + Send + Sync>;

/// A [`PolledHandler`] that can also be called as a [`CopyingHandler`].
struct Polled {
    handler: PolledHandler,
    copy: CopyingHandler,
}

fn polled_both<F, Fut>(handler: F) -> Polled
where
    F: Fn(Event, EventQueue) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()>,
{
    let copying = handler.clone();
    Polled {
        handler: polled(handler),
        copy: Box::new(move |event, queue, cx| {
            std::pin::pin!(copying(event.clone(), queue)).poll(cx)
        }),
    }
}

/// Calls a [`PolledHandler`], guarded against a panic.
#[inline]
fn call_polled(handler: &PolledHandler, event: Event, queue: EventQueue, cx: &mut Context<'_>) {
    match std::panic::catch_unwind(AssertUnwindSafe(|| handler(event, queue, cx))) {
        Ok(Poll::Ready(())) => {}
        Ok(Poll::Pending) => unreachable!("completes at once"),
        Err(_) => unreachable!("no panic"),
    }
}

/// A filter registered at run time, called as a [`PolledHandler`] is.
type PolledFilter = Box<dyn Fn(&Event, &mut Context<'_>) -> Poll<bool> + Send + Sync>;

fn polled_filter() -> PolledFilter {
    Box::new(|event, cx| std::pin::pin!(passing_filter(event)).poll(cx))
}

/// Calls a [`PolledFilter`], guarded against a panic: whether it consumed the event.
#[inline]
fn call_polled_filter(filter: &PolledFilter, event: &Event, cx: &mut Context<'_>) -> bool {
    match std::panic::catch_unwind(AssertUnwindSafe(|| filter(event, cx))) {
        Ok(Poll::Ready(consumed)) => consumed,
        Ok(Poll::Pending) => unreachable!("completes at once"),
        Err(_) => unreachable!("no panic"),
    }
}

/// The guarded floor with its handler registered at run time: found in a fast map and called
/// through its `dyn` pointer, its future made and polled once in that call, guarded. It has
/// nowhere to keep a call that has to wait (a future polled on the callee's stack cannot be moved
/// after its first poll), so it takes every call to complete at once; a nexus makes each future
/// in memory it keeps, which becomes the future's box should the call wait.
async fn dynamic_guarded_single(n: u64) -> Duration {
    let mut table: FxHashMap<i64, PolledHandler> = FxHashMap::default();
    table.insert(TYPE, polled(direct_handler));
    guarded_floor!(n, |event, queue, cx| {
        let handler = table
            .get(&event.event_type.as_int().unwrap_or_default())
            .expect("handler");
        call_polled(handler, event, queue.clone(), cx);
    })
}

/// The dynamic floor: handlers chosen at run time from a fast map of `dyn Fn`, called without a
/// future, the queue handle cloned for each call.
async fn dynamic_single(n: u64) -> Duration {
    let mut table: FxHashMap<i64, SyncHandler> = FxHashMap::default();
    table.insert(
        TYPE,
        Box::new(|event: Event, _queue: EventQueue| body(&event)),
    );
    let queue = AsyncEventNexus::new().queue().clone();
    let start = Instant::now();
    for i in 0..n {
        let event = event(i);
        let handler = table
            .get(&event.event_type.as_int().unwrap_or_default())
            .expect("handler");
        handler(event, queue.clone());
    }
    start.elapsed()
}

/// The dynamic floor with its table behind a `std::sync::Mutex`, locked for each event: what
/// any dispatcher that may be called from many threads but dispatches one event at a time pays
/// at least (an uncontended lock and unlock: two locked instructions).
async fn locked_single(n: u64) -> Duration {
    let mut table: FxHashMap<i64, SyncHandler> = FxHashMap::default();
    table.insert(
        TYPE,
        Box::new(|event: Event, _queue: EventQueue| body(&event)),
    );
    let table = Mutex::new(table);
    let queue = AsyncEventNexus::new().queue().clone();
    let start = Instant::now();
    for i in 0..n {
        let event = event(i);
        let table = table.lock().expect("not poisoned");
        let handler = table
            .get(&event.event_type.as_int().unwrap_or_default())
            .expect("handler");
        handler(event, queue.clone());
    }
    start.elapsed()
}

/// Takes `lock`, the cheapest lock that keeps events from any thread one at a time: with one
/// compare-and-swap, a locked instruction on x86. A dispatcher that may be called from
/// several threads at once and dispatches their events one at a time must, for each event, take
/// something of the kind: a lock's taking needs an atomic read-modify-write or a full fence
/// (Attiya, Guerraoui, Hendler, Kuznetsov, Michael and Vechev, "Laws of Order", POPL 2011).
#[inline(always)]
fn take(lock: &AtomicBool) {
    if black_box(lock)
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        unreachable!("one task");
    }
}

/// Gives `lock` back with a plain store, as a spin lock does: its waiters would spin rather than
/// be woken, so that the release needs no locked instruction. (A nexus's gate wakes its waiters,
/// and its release is a locked `xchg` for that; see the `gate` path.)
#[inline(always)]
fn give_back(lock: &AtomicBool) {
    black_box(lock).store(false, Ordering::Release);
}

/// The static floor, each event dispatched under the cheapest lock ([`take`], [`give_back`]): the
/// least that ingest of one event at a time, from any thread, costs on this machine beside the
/// static floor. Written out beside [`static_single`] rather than sharing its code: made one
/// function generic over the lock with it, the static floor's machine code moved, and it lost its
/// faster speed (see [`shifted`]; 10.0 ns in its fastest round where it had taken 5.8).
async fn serialized_single(n: u64) -> Duration {
    let queue = AsyncEventNexus::new().queue().clone();
    let lock = AtomicBool::new(false);
    let start = Instant::now();
    for i in 0..n {
        let event = event(i);
        take(&lock);
        match event.event_type.as_int() {
            Some(TYPE) => direct_handler(event, queue.clone()).await,
            _ => unreachable!("one type"),
        }
        give_back(&lock);
    }
    start.elapsed()
}

/// The dynamic floor under the cheapest lock, taken for each event (see [`serialized_single`]).
async fn dynamic_serialized_single(n: u64) -> Duration {
    let mut table: FxHashMap<i64, SyncHandler> = FxHashMap::default();
    table.insert(
        TYPE,
        Box::new(|event: Event, _queue: EventQueue| body(&event)),
    );
    let queue = AsyncEventNexus::new().queue().clone();
    let lock = AtomicBool::new(false);
    let start = Instant::now();
    for i in 0..n {
        let event = event(i);
        take(&lock);
        let handler = table
            .get(&event.event_type.as_int().unwrap_or_default())
            .expect("handler");
        handler(event, queue.clone());
        give_back(&lock);
    }
    start.elapsed()
}

fn filters_nexus() -> AsyncEventNexus {
    let nexus = AsyncEventNexus::new();
    for _ in 0..4 {
        nexus.add_filter(|event: &Event, _queue: &EventQueue| passing_filter(event));
    }
    nexus
        .add_handler(TYPE, |event: Event, _queue: EventQueue| async move {
            body(&event)
        })
        .expect("handler");
    nexus
}

async fn nexus_filters(n: u64) -> Duration {
    timed_ingests(&filters_nexus(), n, event).await
}

/// The filter path's events given to one `ingest_all`.
async fn nexus_filters_all(n: u64) -> Duration {
    timed_ingest_all(&filters_nexus(), n, event).await
}

/// The filter path with plain (not async) filters and handler, the kind the dynamic floor calls.
async fn nexus_filters_plain(n: u64) -> Duration {
    let nexus = AsyncEventNexus::new();
    for _ in 0..4 {
        nexus.add_filter(|event: &Event, _queue: &EventQueue| {
            black_box(event.payload.as_int());
            false
        });
    }
    nexus
        .add_handler(TYPE, |event: Event, _queue: EventQueue| body(&event))
        .expect("handler");
    timed_ingests(&nexus, n, event).await
}

async fn floor_filters(n: u64) -> Duration {
    let filters: Vec<BoxedFilter> = (0..4)
        .map(|_| {
            Box::new(
                |event: &Event| -> Pin<Box<dyn Future<Output = bool> + Send>> {
                    Box::pin(passing_filter(event))
                },
            ) as BoxedFilter
        })
        .collect();
    let mut table: HashMap<i64, BoxedHandler> = HashMap::new();
    table.insert(TYPE, boxed_handler());
    let queue = AsyncEventNexus::new().queue().clone();
    let start = Instant::now();
    'events: for i in 0..n {
        let event = event(i);
        for filter in &filters {
            if filter(&event).await {
                continue 'events;
            }
        }
        let handler = table
            .get(&event.event_type.as_int().unwrap_or_default())
            .expect("handler");
        handler(event, queue.clone()).await;
    }
    start.elapsed()
}

async fn static_filters(n: u64) -> Duration {
    let queue = AsyncEventNexus::new().queue().clone();
    let start = Instant::now();
    for i in 0..n {
        let event = event(i);
        if passing_filter(&event).await
            || passing_filter(&event).await
            || passing_filter(&event).await
            || passing_filter(&event).await
        {
            continue;
        }
        match event.event_type.as_int() {
            Some(TYPE) => direct_handler(event, queue.clone()).await,
            _ => unreachable!("one type"),
        }
    }
    start.elapsed()
}

/// The static floor of four filters under the cheapest lock, taken for each event (see
/// [`serialized_single`]).
async fn serialized_filters(n: u64) -> Duration {
    let queue = AsyncEventNexus::new().queue().clone();
    let lock = AtomicBool::new(false);
    let start = Instant::now();
    for i in 0..n {
        let event = event(i);
        take(&lock);
        let consumed = passing_filter(&event).await
            || passing_filter(&event).await
            || passing_filter(&event).await
            || passing_filter(&event).await;
        if !consumed {
            match event.event_type.as_int() {
                Some(TYPE) => direct_handler(event, queue.clone()).await,
                _ => unreachable!("one type"),
            }
        }
        give_back(&lock);
    }
    start.elapsed()
}

/// The static floor of four filters with what a nexus keeps for each event (see
/// [`guarded_single`]), each filter's call guarded against a panic as the handler's is.
async fn guarded_filters(n: u64) -> Duration {
    guarded_floor!(n, |event, queue, cx| {
        let consumed = guarded(passing_filter(&event), cx)
            || guarded(passing_filter(&event), cx)
            || guarded(passing_filter(&event), cx)
            || guarded(passing_filter(&event), cx);
        if !consumed {
            match event.event_type.as_int() {
                Some(TYPE) => guarded(direct_handler(event, queue.clone()), cx),
                _ => unreachable!("one type"),
            }
        }
    })
}

/// The guarded floor of the filter path with its filters and handler registered at run time,
/// each called as [`dynamic_guarded_single`] calls its handler.
async fn dynamic_guarded_filters(n: u64) -> Duration {
    let filters: Vec<PolledFilter> = (0..4).map(|_| polled_filter()).collect();
    let mut table: FxHashMap<i64, PolledHandler> = FxHashMap::default();
    table.insert(TYPE, polled(direct_handler));
    guarded_floor!(n, |event, queue, cx| {
        if !filters
            .iter()
            .any(|filter| call_polled_filter(filter, &event, cx))
        {
            let handler = table
                .get(&event.event_type.as_int().unwrap_or_default())
                .expect("handler");
            call_polled(handler, event, queue.clone(), cx);
        }
    })
}

type SyncFilter = Box<dyn Fn(&Event) -> bool + Send + Sync>;

async fn dynamic_filters(n: u64) -> Duration {
    let filters: Vec<SyncFilter> = (0..4)
        .map(|_| {
            Box::new(|event: &Event| {
                black_box(event.payload.as_int());
                false
            }) as SyncFilter
        })
        .collect();
    let mut table: FxHashMap<i64, SyncHandler> = FxHashMap::default();
    table.insert(
        TYPE,
        Box::new(|event: Event, _queue: EventQueue| body(&event)),
    );
    let queue = AsyncEventNexus::new().queue().clone();
    let start = Instant::now();
    for i in 0..n {
        let event = event(i);
        if filters.iter().any(|filter| filter(&event)) {
            continue;
        }
        let handler = table
            .get(&event.event_type.as_int().unwrap_or_default())
            .expect("handler");
        handler(event, queue.clone());
    }
    start.elapsed()
}

async fn nexus_chain(n: u64) -> Duration {
    let nexus = AsyncEventNexus::new();
    for t in 1..=CHAIN {
        nexus
            .add_handler(t, |event: Event, queue: EventQueue| async move {
                body(&event);
                let next = event.event_type.as_int().unwrap_or(CHAIN) + 1;
                if next <= CHAIN {
                    queue
                        .put(Event::new(event.id, next, 0, event.payload))
                        .expect("queue");
                }
            })
            .expect("handler");
    }
    timed_ingests(&nexus, n / CHAIN as u64, |i| Event::new(i, 1, 0, i as i64)).await
}

/// The chain's floor: boxed handlers by type, each putting the next event on a bounded queue
/// behind a mutex, taken in turn until it is empty.
async fn floor_chain(n: u64) -> Duration {
    type Queue = Arc<Mutex<VecDeque<Event>>>;
    type ChainHandler = Box<dyn Fn(Event, Queue) -> BoxFuture + Send + Sync>;
    let mut table: HashMap<i64, ChainHandler> = HashMap::new();
    for t in 1..=CHAIN {
        table.insert(
            t,
            Box::new(|event: Event, queue: Queue| {
                Box::pin(async move {
                    body(&event);
                    let next = event.event_type.as_int().unwrap_or(CHAIN) + 1;
                    if next <= CHAIN {
                        let mut queue = queue.lock().expect("queue");
                        assert!(queue.len() < CAPACITY, "queue full");
                        queue.push_back(Event::new(event.id, next, 0, event.payload));
                    }
                })
            }),
        );
    }
    let queue: Queue = Arc::new(Mutex::new(VecDeque::with_capacity(CAPACITY)));
    let start = Instant::now();
    for i in 0..n / CHAIN as u64 {
        let mut next = Some(Event::new(i, 1, 0, i as i64));
        while let Some(event) = next {
            let handler = table
                .get(&event.event_type.as_int().unwrap_or_default())
                .expect("handler");
            handler(event, Arc::clone(&queue)).await;
            next = queue.lock().expect("queue").pop_front();
        }
    }
    start.elapsed()
}

/// A chain handler of the static floor: reads the event and puts the next one on the queue.
/// Shaped as [`direct_handler`] is.
#[allow(
    clippy::manual_async_fn,
    reason = "slower as an `async fn`: see `direct_handler`"
)]
#[inline]
fn direct_chain_handler(
    event: Event,
    _queue: EventQueue,
    next: &mut VecDeque<Event>,
) -> impl Future<Output = ()> + Send + use<'_> {
    async move {
        body(&event);
        let t = event.event_type.as_int().unwrap_or(CHAIN) + 1;
        if t <= CHAIN {
            assert!(next.len() < CAPACITY, "queue full");
            next.push_back(Event::new(event.id, t, 0, event.payload));
        }
    }
}

async fn static_chain(n: u64) -> Duration {
    let queue = AsyncEventNexus::new().queue().clone();
    let mut next: VecDeque<Event> = VecDeque::with_capacity(CAPACITY);
    let start = Instant::now();
    for i in 0..n / CHAIN as u64 {
        let mut current = Some(Event::new(i, 1, 0, i as i64));
        while let Some(event) = current {
            match event.event_type.as_int() {
                Some(1..=CHAIN) => direct_chain_handler(event, queue.clone(), &mut next).await,
                _ => unreachable!("ten types"),
            }
            current = next.pop_front();
        }
    }
    start.elapsed()
}

/// What the guarded chain floor's queue keeps as a nexus's queue keeps it for a handler's
/// events: whether events may go beside the locked queue, the lease of the handle, the count of
/// those beside it and of those on the locked queue (read by puts from other threads, and theirs
/// read here, both sequentially consistent, so that two puts never take the last place
/// together), and the events accepted. Its capacity is the bench's, `CAPACITY`.
struct GuardedQueue {
    open: AtomicBool,
    lease: AtomicU64,
    near: AtomicUsize,
    locked: AtomicUsize,
    accepted: AtomicU64,
}

impl GuardedQueue {
    fn new() -> Self {
        Self {
            open: AtomicBool::new(true),
            lease: AtomicU64::new(1),
            near: AtomicUsize::new(0),
            locked: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
        }
    }

    /// Puts a handler's `event` beside the queue as a nexus's queue does: the cause of the
    /// event being handled given to it, the caller found to be a handler of the dispatcher
    /// whose gate is held, the lease and the room checked, the place counted.
    #[inline(always)]
    fn put(&self, guards: &Guards, events: &mut VecDeque<Event>, mut event: Event) {
        if event.cause.is_none()
            && let Some((id, root)) = GUARDED_CAUSE.get()
            && id != event.id
        {
            event.cause = Some(Cause { id, root });
        }
        if !self.open.load(Ordering::Relaxed)
            || GUARDED_INSIDE.get() != std::ptr::from_ref(guards) as usize
            || self.lease.load(Ordering::Acquire) != 1
        {
            unreachable!("a handler's put");
        }
        let near = self.near.load(Ordering::Relaxed);
        if near >= CAPACITY {
            unreachable!("room");
        }
        self.near.store(near + 1, Ordering::SeqCst);
        if self.locked.load(Ordering::SeqCst) != 0 {
            unreachable!("nothing on the locked queue");
        }
        events.push_back(event);
        let accepted = self.accepted.load(Ordering::Relaxed);
        self.accepted.store(accepted + 1, Ordering::Relaxed);
    }

    /// Takes the next event from beside the queue, as a nexus's dispatcher does.
    #[inline(always)]
    fn pop(&self, events: &mut VecDeque<Event>) -> Option<Event> {
        let near = self.near.load(Ordering::Relaxed);
        if near == 0 {
            if self.locked.load(Ordering::Acquire) != 0 {
                unreachable!("nothing on the locked queue");
            }
            return None;
        }
        let event = events.pop_front();
        self.near.store(near - 1, Ordering::Release);
        event
    }
}

/// The static floor's chain handler, putting the next event as a nexus's queue does.
#[allow(
    clippy::manual_async_fn,
    reason = "slower as an `async fn`: see `direct_handler`"
)]
#[inline]
fn guarded_chain_handler<'a>(
    event: Event,
    _queue: EventQueue,
    (guards, queue, events): (&'a Guards, &'a GuardedQueue, &'a mut VecDeque<Event>),
) -> impl Future<Output = ()> + Send + use<'a> {
    async move {
        body(&event);
        let t = event.event_type.as_int().unwrap_or(CHAIN) + 1;
        if t <= CHAIN {
            queue.put(guards, events, Event::new(event.id, t, 0, event.payload));
        }
    }
}

/// The static floor of the chain with what a nexus keeps for each event (see
/// [`guarded_single`]) and for each event its handlers put: the gate and the thread's mark held
/// for the whole chain, each event's cause set as it is dispatched and each dispatch counted,
/// each call guarded against a panic, and each secondary event put and taken as a nexus's queue
/// puts and takes a handler's events ([`GuardedQueue`]).
async fn guarded_chain(n: u64) -> Duration {
    let guards = Guards::new();
    let queue = AsyncEventNexus::new().queue().clone();
    let beside = GuardedQueue::new();
    let mut events: VecDeque<Event> = VecDeque::with_capacity(CAPACITY);
    let start = Instant::now();
    for i in 0..n / CHAIN as u64 {
        std::future::poll_fn(|cx| {
            let first = Event::new(i, 1, 0, i as i64);
            guards.enter();
            let before = guards.mark(&first);
            let mut current = Some(first);
            while let Some(event) = current {
                GUARDED_CAUSE.set(Some((event.id, event.root())));
                match event.event_type.as_int() {
                    Some(1..=CHAIN) => guarded(
                        guarded_chain_handler(
                            event,
                            queue.clone(),
                            (&guards, &beside, &mut events),
                        ),
                        cx,
                    ),
                    _ => unreachable!("ten types"),
                }
                guards.dispatched();
                current = beside.pop(&mut events);
            }
            Guards::unmark(before);
            guards.leave();
            Poll::Ready(())
        })
        .await;
    }
    let took = start.elapsed();
    let ingests = n / CHAIN as u64;
    assert_eq!(beside.accepted.into_inner(), ingests * (CHAIN as u64 - 1));
    guards.check(ingests, ingests * CHAIN as u64);
    took
}

type SyncChainHandler = Box<dyn Fn(Event, EventQueue, &mut VecDeque<Event>) + Send + Sync>;

async fn dynamic_chain(n: u64) -> Duration {
    let mut table: FxHashMap<i64, SyncChainHandler> = FxHashMap::default();
    for t in 1..=CHAIN {
        table.insert(
            t,
            Box::new(
                |event: Event, _queue: EventQueue, next: &mut VecDeque<Event>| {
                    body(&event);
                    let t = event.event_type.as_int().unwrap_or(CHAIN) + 1;
                    if t <= CHAIN {
                        assert!(next.len() < CAPACITY, "queue full");
                        next.push_back(Event::new(event.id, t, 0, event.payload));
                    }
                },
            ),
        );
    }
    let queue = AsyncEventNexus::new().queue().clone();
    let mut next: VecDeque<Event> = VecDeque::with_capacity(CAPACITY);
    let start = Instant::now();
    for i in 0..n / CHAIN as u64 {
        let mut current = Some(Event::new(i, 1, 0, i as i64));
        while let Some(event) = current {
            let handler = table
                .get(&event.event_type.as_int().unwrap_or_default())
                .expect("handler");
            handler(event, queue.clone(), &mut next);
            current = next.pop_front();
        }
    }
    start.elapsed()
}

/// The gate's two locked instructions alone, taken and given back for each event as a nexus's
/// gate does when no task waits (a compare-and-swap; the waiter count loaded, a sequentially
/// consistent store, which is a locked `xchg` on x86, and the waiter count loaded again), with
/// nothing else: what one-at-a-time dispatch from any thread costs each event at least, on this
/// machine at the time of the run. Every guarded floor and every nexus path pays it; no other
/// floor does.
async fn gate_alone(n: u64) -> Duration {
    let locked = AtomicBool::new(false);
    let waiters = AtomicUsize::new(0);
    let start = Instant::now();
    for _ in 0..n {
        let (locked, waiters) = (black_box(&locked), black_box(&waiters));
        if locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
            || waiters.load(Ordering::SeqCst) != 0
        {
            unreachable!("one task, nothing waits");
        }
        locked.store(false, Ordering::SeqCst);
        if waiters.load(Ordering::SeqCst) != 0 {
            unreachable!("nothing waits");
        }
    }
    start.elapsed()
}

fn fanout_nexus() -> AsyncEventNexus {
    let nexus = AsyncEventNexus::new();
    let fanout = EventFanout::new();
    for _ in 0..FANOUT {
        fanout.register(Handler::new(
            |event: Event, _queue: EventQueue| async move { body(&event) },
        ));
    }
    nexus.add_consumer(TYPE, fanout).expect("fanout");
    nexus
}

async fn nexus_fanout(n: u64) -> Duration {
    timed_ingests(&fanout_nexus(), n, event).await
}

/// The fanout path's events given to one `ingest_all`.
async fn nexus_fanout_all(n: u64) -> Duration {
    timed_ingest_all(&fanout_nexus(), n, event).await
}

async fn nexus_multiple(n: u64) -> Duration {
    let nexus = AsyncEventNexus::builder().multiple(true).build();
    for _ in 0..FANOUT {
        nexus
            .add_handler(TYPE, |event: Event, _queue: EventQueue| async move {
                body(&event)
            })
            .expect("handler");
    }
    timed_ingests(&nexus, n, event).await
}

/// Eight boxed handlers awaited in turn, each with a copy of the event but the last.
async fn floor_fanout(n: u64) -> Duration {
    let handlers: Vec<BoxedHandler> = (0..FANOUT).map(|_| boxed_handler()).collect();
    let queue = AsyncEventNexus::new().queue().clone();
    let start = Instant::now();
    for i in 0..n {
        let event = event(i);
        let (last, rest) = handlers.split_last().expect("handlers");
        for handler in rest {
            handler(event.clone(), queue.clone()).await;
        }
        last(event, queue.clone()).await;
    }
    start.elapsed()
}

async fn static_fanout(n: u64) -> Duration {
    let queue = AsyncEventNexus::new().queue().clone();
    let start = Instant::now();
    for i in 0..n {
        let event = event(i);
        match event.event_type.as_int() {
            Some(TYPE) => {
                for _ in 1..FANOUT {
                    direct_handler(event.clone(), queue.clone()).await;
                }
                direct_handler(event, queue.clone()).await;
            }
            _ => unreachable!("one type"),
        }
    }
    start.elapsed()
}

/// The static floor of the fanout under the cheapest lock, taken for each event (see
/// [`serialized_single`]).
async fn serialized_fanout(n: u64) -> Duration {
    let queue = AsyncEventNexus::new().queue().clone();
    let lock = AtomicBool::new(false);
    let start = Instant::now();
    for i in 0..n {
        let event = event(i);
        take(&lock);
        match event.event_type.as_int() {
            Some(TYPE) => {
                for _ in 1..FANOUT {
                    direct_handler(event.clone(), queue.clone()).await;
                }
                direct_handler(event, queue.clone()).await;
            }
            _ => unreachable!("one type"),
        }
        give_back(&lock);
    }
    start.elapsed()
}

/// The static floor of a fanout to eight with what a nexus keeps for each event (see
/// [`guarded_single`]), each handler's call guarded against a panic.
async fn guarded_fanout(n: u64) -> Duration {
    guarded_floor!(n, |event, queue, cx| match event.event_type.as_int() {
        Some(TYPE) => {
            for _ in 1..FANOUT {
                guarded(direct_handler(event.clone(), queue.clone()), cx);
            }
            guarded(direct_handler(event, queue.clone()), cx);
        }
        _ => unreachable!("one type"),
    })
}

/// The guarded floor of the fanout with its eight handlers registered at run time, each called
/// as [`dynamic_guarded_single`] calls its handler, each but the last with a copy of the event.
async fn dynamic_guarded_fanout(n: u64) -> Duration {
    let mut table: FxHashMap<i64, Vec<Polled>> = FxHashMap::default();
    table.insert(
        TYPE,
        (0..FANOUT).map(|_| polled_both(direct_handler)).collect(),
    );
    guarded_floor!(n, |event, queue, cx| {
        let handlers = table
            .get(&event.event_type.as_int().unwrap_or_default())
            .expect("handlers");
        let (last, rest) = handlers.split_last().expect("handlers");
        for handler in rest {
            match std::panic::catch_unwind(AssertUnwindSafe(|| {
                (handler.copy)(&event, queue.clone(), cx)
            })) {
                Ok(Poll::Ready(())) => {}
                Ok(Poll::Pending) => unreachable!("completes at once"),
                Err(_) => unreachable!("no panic"),
            }
        }
        call_polled(&last.handler, event, queue.clone(), cx);
    })
}

async fn dynamic_fanout(n: u64) -> Duration {
    let mut table: FxHashMap<i64, Vec<SyncHandler>> = FxHashMap::default();
    table.insert(
        TYPE,
        (0..FANOUT)
            .map(|_| Box::new(|event: Event, _queue: EventQueue| body(&event)) as SyncHandler)
            .collect(),
    );
    let queue = AsyncEventNexus::new().queue().clone();
    let start = Instant::now();
    for i in 0..n {
        let event = event(i);
        let handlers = table
            .get(&event.event_type.as_int().unwrap_or_default())
            .expect("handlers");
        let (last, rest) = handlers.split_last().expect("handlers");
        for handler in rest {
            handler(event.clone(), queue.clone());
        }
        last(event, queue.clone());
    }
    start.elapsed()
}

/// A `ChannelProducer` ranking by priority, every event of the same priority: what turning
/// priority on costs where it changes nothing.
async fn nexus_producer_ranked(n: u64) -> Duration {
    let (producer, sender) =
        ChannelProducer::with_priority(CAPACITY, Overflow::Wait, Duration::from_millis(100));
    producer_path(n, producer, sender).await
}

async fn nexus_producer(n: u64) -> Duration {
    let (producer, sender) = ChannelProducer::new(CAPACITY);
    producer_path(n, producer, sender).await
}

/// A task sends `n` events through `producer`'s channel into a nexus whose handler counts them.
async fn producer_path(n: u64, producer: ChannelProducer, sender: EventSender) -> Duration {
    let tally = Arc::new(Tally::default());
    tally.expect(n);
    let nexus = AsyncEventNexus::new();
    let seen = Arc::clone(&tally);
    nexus
        .add_handler(TYPE, move |event: Event, _queue: EventQueue| {
            body(&event);
            seen.hit();
        })
        .expect("handler");
    nexus.add_producer(producer).expect("producer");
    let running = running_nexus(&nexus);
    settle().await;
    let start = Instant::now();
    let feeding = tokio::spawn(async move {
        for i in 0..n {
            sender.send(event(i)).await.expect("send");
        }
    });
    tally.wait().await;
    let took = start.elapsed();
    feeding.await.expect("feeder");
    nexus.stop();
    let _ = running.await;
    took
}

/// A bounded tokio mpsc from a producer task to a task that looks up a boxed handler by type and
/// awaits it.
async fn floor_mpsc(n: u64) -> Duration {
    let tally = Arc::new(Tally::default());
    tally.expect(n);
    let mut table: HashMap<i64, BoxedHandler> = HashMap::new();
    let seen = Arc::clone(&tally);
    table.insert(
        TYPE,
        Box::new(move |event: Event, _queue: EventQueue| {
            let seen = Arc::clone(&seen);
            Box::pin(async move {
                body(&event);
                seen.hit();
            })
        }),
    );
    let queue = AsyncEventNexus::new().queue().clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(CAPACITY);
    let dispatching = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let handler = table
                .get(&event.event_type.as_int().unwrap_or_default())
                .expect("handler");
            handler(event, queue.clone()).await;
        }
    });
    settle().await;
    let start = Instant::now();
    let feeding = tokio::spawn(async move {
        for i in 0..n {
            tx.send(event(i)).await.expect("send");
        }
    });
    tally.wait().await;
    let took = start.elapsed();
    feeding.await.expect("feeder");
    dispatching.await.expect("dispatcher");
    took
}

/// Messages as a network receiver reads them: events as `wire::encode` writes them, each with an
/// id and a text of its own.
fn messages() -> Vec<Vec<u8>> {
    (0..1024_u64)
        .map(|i| {
            let event = Event::new(i * 7919, TYPE, 0, format!("order {i}"));
            nexus::wire::encode(&event).expect("encode")
        })
        .collect()
}

/// Reads each of `n` messages into an event with `wire::decode`, as a network receiver does.
async fn nexus_decode(n: u64) -> Duration {
    let messages = messages();
    let start = Instant::now();
    for message in messages.iter().cycle().take(n as usize) {
        let event = nexus::wire::decode(black_box(message), Default::default()).expect("decode");
        black_box(&event);
    }
    start.elapsed()
}

/// The same messages read by `serde_json` into a struct of the same fields, its
/// `Deserialize` derived: what a program reading only this one shape would write.
#[derive(serde::Deserialize)]
struct Wire {
    id: u64,
    #[serde(rename = "type")]
    event_type: i64,
    priority: i32,
    payload: String,
}

async fn serde_decode(n: u64) -> Duration {
    let messages = messages();
    let start = Instant::now();
    for message in messages.iter().cycle().take(n as usize) {
        let wire: Wire = serde_json::from_slice(black_box(message)).expect("decode");
        black_box((&wire.id, &wire.event_type, &wire.priority, &wire.payload));
    }
    start.elapsed()
}

/// Events ingested into one nexus cross an AsyncEventBoundary into a second, whose handler
/// counts them.
async fn nexus_boundary(n: u64) -> Duration {
    boundary_path(n, AsyncEventBoundary::new(CAPACITY)).await
}

/// As `nexus_boundary`, its lanes ranking by priority, every event of the same priority.
async fn nexus_boundary_ranked(n: u64) -> Duration {
    boundary_path(
        n,
        AsyncEventBoundary::with_priority(CAPACITY, Duration::from_millis(100)),
    )
    .await
}

async fn boundary_path(n: u64, boundary: AsyncEventBoundary) -> Duration {
    let tally = Arc::new(Tally::default());
    tally.expect(n);
    let sending = AsyncEventNexus::new();
    sending
        .add_consumer(TYPE, boundary.handler())
        .expect("boundary handler");
    let receiving = AsyncEventNexus::new();
    receiving
        .add_producer(boundary.producer())
        .expect("boundary producer");
    let seen = Arc::clone(&tally);
    receiving
        .add_handler(TYPE, move |event: Event, _queue: EventQueue| {
            body(&event);
            seen.hit();
        })
        .expect("handler");
    let running = (running_nexus(&sending), running_nexus(&receiving));
    settle().await;
    let start = Instant::now();
    let feeding = {
        let sending = sending.clone();
        tokio::spawn(async move {
            for i in 0..n {
                sending.ingest(event(i)).await.expect("ingest");
            }
        })
    };
    tally.wait().await;
    let took = start.elapsed();
    feeding.await.expect("feeder");
    boundary.close().await.expect("close");
    sending.stop();
    receiving.stop();
    let _ = running.0.await;
    let _ = running.1.await;
    took
}

// ----- peers ---------------------------------------------------------------------------------

/// The peers' event: an id and a value, as the nexus's events carry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, tokio_events::Event)]
struct PeerEvent {
    id: u64,
    value: i64,
}

async fn tokio_events(n: u64, subscribers: usize) -> Duration {
    use tokio_events::prelude::*;
    let tally = Arc::new(Tally::default());
    tally.expect(n * subscribers as u64);
    let bus = EventBusBuilder::new()
        .build()
        .await
        .expect("tokio-events bus");
    let mut handles = Vec::new();
    for _ in 0..subscribers {
        let seen = Arc::clone(&tally);
        let handle = bus
            .subscribe(move |event: PeerEvent| {
                let seen = Arc::clone(&seen);
                async move {
                    black_box(event.value);
                    seen.hit();
                }
            })
            .await
            .expect("subscribe");
        handles.push(handle);
    }
    settle().await;
    let start = Instant::now();
    for i in 0..n {
        bus.publish(PeerEvent {
            id: i,
            value: i as i64,
        })
        .await
        .expect("publish");
    }
    tally.wait().await;
    let took = start.elapsed();
    drop(handles);
    let _ = bus.shutdown().await;
    took
}

struct JaebHandler(Arc<Tally>);

impl jaeb::EventHandler<PeerEvent> for JaebHandler {
    async fn handle(&self, event: &PeerEvent, _bus: &jaeb::EventBus) -> jaeb::HandlerResult {
        black_box(event.value);
        self.0.hit();
        Ok(())
    }
}

async fn jaeb(n: u64, subscribers: usize) -> Duration {
    let tally = Arc::new(Tally::default());
    tally.expect(n * subscribers as u64);
    let bus = jaeb::EventBus::builder().build().await.expect("jaeb bus");
    let mut subscriptions = Vec::new();
    for _ in 0..subscribers {
        let subscription = bus
            .subscribe::<PeerEvent, _, _>(JaebHandler(Arc::clone(&tally)))
            .await
            .expect("subscribe");
        subscriptions.push(subscription);
    }
    settle().await;
    let start = Instant::now();
    for i in 0..n {
        bus.publish(PeerEvent {
            id: i,
            value: i as i64,
        })
        .await
        .expect("publish");
    }
    tally.wait().await;
    let took = start.elapsed();
    drop(subscriptions);
    let _ = bus.shutdown().await;
    took
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct AbxResult {}

abxbus::event! {
    struct AbxEvent {
        value: i64,
        event_result_type: AbxResult,
        event_type: "AbxEvent",
    }
}

async fn abxbus(n: u64, subscribers: usize) -> Duration {
    use abxbus::event_bus::{EventBus, EventBusOptions};
    let tally = Arc::new(Tally::default());
    tally.expect(n * subscribers as u64);
    let bus = EventBus::new_with_options(
        Some("NexusBench".to_owned()),
        EventBusOptions {
            max_history_size: Some(1024),
            max_history_drop: true,
            event_handler_detect_file_paths: false,
            ..EventBusOptions::default()
        },
    );
    for _ in 0..subscribers {
        let seen = Arc::clone(&tally);
        bus.on(AbxEvent, move |event: AbxEvent| {
            let seen = Arc::clone(&seen);
            async move {
                black_box(event.value);
                seen.hit();
                Ok(AbxResult {})
            }
        });
    }
    let start = Instant::now();
    for i in 0..n {
        bus.emit(AbxEvent {
            value: i as i64,
            ..Default::default()
        });
    }
    tally.wait().await;
    let took = start.elapsed();
    bus.destroy();
    took
}

// ----- the run -------------------------------------------------------------------------------

/// A case: its events, and the step of the run (its round), which places its future.
type Run = Box<dyn Fn(u64, usize) -> Pin<Box<dyn Future<Output = Duration>>>>;

/// How far apart, in bytes, the offsets at which the rounds place a case's future in its box
/// are: `SHIFTS` of them, a page in all.
const SHIFT: usize = 256;
/// How many offsets the rounds place a case's future at, one after the other.
const SHIFTS: usize = 16;

pin_project_lite::pin_project! {
    /// A case's future after `pad` in its box: where its state lies within its page.
    #[repr(C)]
    struct Shifted<P, F> {
        pad: P,
        #[pin]
        future: F,
    }
}

impl<P, F: Future<Output = Duration>> Future for Shifted<P, F> {
    type Output = Duration;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Duration> {
        // Polled through an opaque `dyn` pointer, as an unshifted case is by the runtime, so
        // that no shift inlines the case's code into its own copy of this call.
        let future: Pin<&mut dyn Future<Output = Duration>> = self.project().future;
        black_box(future).poll(cx)
    }
}

/// `future` boxed after `step` (modulo [`SHIFTS`]) times [`SHIFT`] bytes. Where a case's state
/// lies can decide its time by itself: the single path's static floor took 9.7 to 11 ns an event
/// at some offsets and 5.8 to 6.3 at others, without a change in its code (on the machine of the
/// README's latest run), and when every round used one box, which offset it got followed from the
/// cases run before it. Each round places every case's future at the next offset, so that a
/// case's median is taken over offsets, and the summary gives that floor's fastest round too.
fn shifted<F>(future: F, step: usize) -> Pin<Box<dyn Future<Output = Duration>>>
where
    F: Future<Output = Duration> + 'static,
{
    fn at<const N: usize, F>(future: F) -> Pin<Box<dyn Future<Output = Duration>>>
    where
        F: Future<Output = Duration> + 'static,
    {
        Box::pin(Shifted {
            pad: [0u8; N],
            future,
        })
    }
    match step % SHIFTS {
        0 => at::<0, F>(future),
        1 => at::<SHIFT, F>(future),
        2 => at::<{ 2 * SHIFT }, F>(future),
        3 => at::<{ 3 * SHIFT }, F>(future),
        4 => at::<{ 4 * SHIFT }, F>(future),
        5 => at::<{ 5 * SHIFT }, F>(future),
        6 => at::<{ 6 * SHIFT }, F>(future),
        7 => at::<{ 7 * SHIFT }, F>(future),
        8 => at::<{ 8 * SHIFT }, F>(future),
        9 => at::<{ 9 * SHIFT }, F>(future),
        10 => at::<{ 10 * SHIFT }, F>(future),
        11 => at::<{ 11 * SHIFT }, F>(future),
        12 => at::<{ 12 * SHIFT }, F>(future),
        13 => at::<{ 13 * SHIFT }, F>(future),
        14 => at::<{ 14 * SHIFT }, F>(future),
        _ => at::<{ 15 * SHIFT }, F>(future),
    }
}

/// One measured case: `events` events per round.
struct Case {
    name: &'static str,
    /// The nexus path, floor or peer it measures.
    what: &'static str,
    events: u64,
    run: Run,
    samples: Vec<f64>,
}

fn case<F, Fut>(name: &'static str, what: &'static str, events: u64, run: F) -> Case
where
    F: Fn(u64) -> Fut + 'static,
    Fut: Future<Output = Duration> + 'static,
{
    Case {
        name,
        what,
        events,
        run: Box::new(move |n, step| shifted(run(n), step)),
        samples: Vec::new(),
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => sorted[len / 2],
        len => (sorted[len / 2 - 1] + sorted[len / 2]) / 2.0,
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Real time from a Timer's start to its handler seeing the last of `ticks` ticks of 1 ms, and
/// for as many ticks of a tokio interval.
fn timer_schedule(ticks: u64) -> (Duration, Duration) {
    runtime().block_on(async {
        let nexus = AsyncEventNexus::new();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let done_tx = Mutex::new(Some(done_tx));
        nexus
            .add_handler(1, move |event: Event, _queue: EventQueue| {
                if event.payload.as_int() == Some(ticks as i64)
                    && let Some(tx) = done_tx.lock().expect("lock").take()
                {
                    let _ = tx.send(Instant::now());
                }
            })
            .expect("handler");
        let timer = Timer::new(Duration::from_millis(1), TimerKind::CountUp(ticks), 1);
        nexus.add_producer(timer.expect("timer")).expect("producer");
        let start = Instant::now();
        let running = nexus.start().expect("start");
        let end = done_rx.await.expect("last tick");
        nexus.stop();
        let _ = running.await;
        let timer_took = end - start;

        let start = Instant::now();
        let mut interval = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_millis(1),
            Duration::from_millis(1),
        );
        for _ in 0..ticks {
            interval.tick().await;
        }
        (timer_took, start.elapsed())
    })
}

/// The peak resident memory of this process so far, in KiB (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// In a child process: moves `events` events through a nexus, both by `ingest` and from a
/// producer task, then prints the peak RSS.
fn memory_child(events: u64) {
    runtime().block_on(async {
        let half = events / 2;
        let _ = nexus_single(half).await;
        let _ = nexus_producer(events - half).await;
    });
    println!("peak_rss_kib={}", peak_rss_kib().unwrap_or(0));
}

/// Peak RSS in KiB of a child run of `events` events.
/// The environment variable that makes this program a child running one peer's case once.
const CHILD_CASE: &str = "NEXUS_BENCH_CHILD_CASE";

/// Runs a peer's case once in a child process, and gives its nanoseconds per event (NaN, after
/// printing why, if the child failed). A peer may leave threads behind (abxbus leaves about thirty, each waking
/// now and then, after its bus is destroyed), which would take the processor from every case
/// run after it in the same process; they end with the child.
fn peer_in_child(c: &Case) -> f64 {
    let wanted = format!("{}/{}", c.name, c.what);
    let out = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .env(CHILD_CASE, &wanted)
            .output()
    });
    let parsed = out.as_ref().ok().and_then(|out| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("ns_per_event="))
            .and_then(|v| v.trim().parse().ok())
    });
    parsed.unwrap_or_else(|| {
        eprintln!("{wanted}: the child process failed: {out:?}");
        f64::NAN
    })
}

fn memory_run(events: u64) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe)
        .env("NEXUS_BENCH_MEMORY_CHILD", events.to_string())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("peak_rss_kib="))
        .and_then(|v| v.trim().parse().ok())
}

/// The Python original's ns per event for ingest into one handler, measured now with its
/// reference script, when an interpreter and the script are named.
fn python_single_ns() -> Option<f64> {
    let script = std::env::var("NEXUS_PYTHON_REFERENCE").ok()?;
    let python = std::env::var("NEXUS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let json = std::env::temp_dir().join(format!("nexus-bench-python-{}.json", std::process::id()));
    let status = std::process::Command::new(python)
        .arg(&script)
        .args([
            "-n", "200000", "--rounds", "3", "--only", "single", "--json",
        ])
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        eprintln!("python reference: {script} exited with {status}");
        return None;
    }
    let text = std::fs::read_to_string(&json).ok()?;
    let _ = std::fs::remove_file(&json);
    python_median(&text)
}

/// The median ns per event of the `single` scenario in the reference script's JSON
/// (`samples.single.<event loop>[].seconds / events`).
fn python_median(text: &str) -> Option<f64> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let loops = value.get("samples")?.get("single")?.as_object()?;
    let found: Vec<f64> = loops
        .values()
        .filter_map(serde_json::Value::as_array)
        .flatten()
        .filter_map(|run| {
            let seconds = run.get("seconds")?.as_f64()?;
            let events = run.get("events")?.as_f64()?;
            Some(seconds * 1e9 / events)
        })
        .collect();
    (!found.is_empty()).then(|| median(&found))
}

fn main() {
    if let Ok(events) = std::env::var("NEXUS_BENCH_MEMORY_CHILD") {
        memory_child(events.parse().unwrap_or(100_000));
        return;
    }
    // `cargo bench` passes `--bench`; a filter or `--list` from a harness is not used here.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::var("NEXUS_BENCH_QUICK").is_ok_and(|v| v == "1");
    let n = env_u64("NEXUS_BENCH_EVENTS", if quick { 2_000 } else { 200_000 });
    let rounds = env_u64("NEXUS_BENCH_ROUNDS", if quick { 1 } else { 15 }).max(1);
    let child = std::env::var(CHILD_CASE).ok();
    // Peers are 10 to 1000 times slower: fewer events keep each round to about a second.
    let peer_n = (n / 10).max(100);
    let slow_n = (n / 200).max(50);

    let mut cases = vec![
        case("single", "nexus", n, nexus_single),
        case("single", "nexus_all", n, nexus_single_all),
        case("single", "nexus_plain", n, nexus_single_plain),
        case("single", "nexus_async_fn", n, nexus_single_async_fn),
        case("single", "nexus_macro", n, nexus_single_macro),
        case("single", "naive", n, floor_single),
        case("single", "dynamic", n, dynamic_single),
        case("single", "static", n, static_single),
        case("single", "dynamic_locked", n, locked_single),
        case("single", "static_serialized", n, serialized_single),
        case("single", "dynamic_serialized", n, dynamic_serialized_single),
        case("single", "static_guarded", n, guarded_single),
        case("single", "dynamic_guarded", n, dynamic_guarded_single),
        case("gate", "locked_pair", n, gate_alone),
        case("named", "nexus", n, nexus_named),
        case("named", "static", n, static_named),
        case("filters4", "nexus", n, nexus_filters),
        case("filters4", "nexus_all", n, nexus_filters_all),
        case("filters4", "nexus_plain", n, nexus_filters_plain),
        case("filters4", "naive", n, floor_filters),
        case("filters4", "dynamic", n, dynamic_filters),
        case("filters4", "static", n, static_filters),
        case("filters4", "static_serialized", n, serialized_filters),
        case("filters4", "static_guarded", n, guarded_filters),
        case("filters4", "dynamic_guarded", n, dynamic_guarded_filters),
        case("chain10", "nexus", n, nexus_chain),
        case("chain10", "naive", n, floor_chain),
        case("chain10", "dynamic", n, dynamic_chain),
        case("chain10", "static", n, static_chain),
        case("chain10", "static_guarded", n, guarded_chain),
        case("fanout8", "nexus", n, nexus_fanout),
        case("fanout8", "nexus_all", n, nexus_fanout_all),
        case("fanout8", "nexus_multiple", n, nexus_multiple),
        case("fanout8", "naive", n, floor_fanout),
        case("fanout8", "dynamic", n, dynamic_fanout),
        case("fanout8", "static", n, static_fanout),
        case("fanout8", "static_serialized", n, serialized_fanout),
        case("fanout8", "static_guarded", n, guarded_fanout),
        case("fanout8", "dynamic_guarded", n, dynamic_guarded_fanout),
        case("producer", "nexus", n, nexus_producer),
        case("producer", "nexus_ranked", n, nexus_producer_ranked),
        case("producer", "floor_mpsc", n, floor_mpsc),
        case("boundary", "nexus", n, nexus_boundary),
        case("boundary", "nexus_ranked", n, nexus_boundary_ranked),
        case("decode", "nexus", n, nexus_decode),
        case("decode", "serde_derive", n, serde_decode),
        case("peers1", "tokio_events", peer_n, |n| tokio_events(n, 1)),
        case("peers8", "tokio_events", peer_n, |n| {
            tokio_events(n, FANOUT)
        }),
        case("peers1", "jaeb", peer_n, |n| jaeb(n, 1)),
        case("peers8", "jaeb", peer_n, |n| jaeb(n, FANOUT)),
        case("peers1", "abxbus", slow_n, |n| abxbus(n, 1)),
        case("peers8", "abxbus", slow_n, |n| abxbus(n, FANOUT)),
    ];
    if let Some(wanted) = &child {
        // A peer's case, run in this child process: its time on stdout.
        let Some(c) = cases
            .iter()
            .find(|c| format!("{}/{}", c.name, c.what) == *wanted)
        else {
            eprintln!("no case {wanted}");
            std::process::exit(2);
        };
        // Once to warm up, as the cases in the parent are warm from the rounds before, then
        // timed.
        let _ = runtime().block_on((c.run)(c.events, 0));
        let took = runtime().block_on((c.run)(c.events, 0));
        println!("ns_per_event={}", took.as_nanos() as f64 / c.events as f64);
        return;
    }
    if let Ok(only) = std::env::var("NEXUS_BENCH_ONLY") {
        let wanted: Vec<&str> = only.split(',').map(str::trim).collect();
        cases.retain(|c| {
            wanted
                .iter()
                .any(|w| *w == c.name || *w == format!("{}/{}", c.name, c.what))
        });
    }

    eprintln!(
        "{} cases, {rounds} rounds, {n} events per nexus case",
        cases.len()
    );
    for round in 0..rounds {
        for c in &mut cases {
            let ns = if c.name.starts_with("peers") {
                peer_in_child(c)
            } else {
                let took = runtime().block_on((c.run)(c.events, round as usize));
                took.as_nanos() as f64 / c.events as f64
            };
            // A failed child gives no sample (and says so); its case's median is NaN if none.
            if ns.is_finite() {
                c.samples.push(ns);
            }
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }

    let ns = |name: &str, what: &str| {
        cases
            .iter()
            .find(|c| c.name == name && c.what == what)
            .map_or(f64::NAN, |c| median(&c.samples))
    };
    let single = ns("single", "nexus");
    let fanout = ns("fanout8", "nexus");
    let mpsc = ns("producer", "floor_mpsc");
    let producer = ns("producer", "nexus");
    let mut summary: Vec<(String, String)> = Vec::new();
    let mut push = |key: &str, value: f64, digits: usize| {
        summary.push((key.to_owned(), format!("{value:.digits$}")));
    };

    println!();
    println!(
        "{:<10} {:<16} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "path", "what", "ns/event", "/naive", "/dynamic", "/static", "/other"
    );
    let mut rows = Vec::new();
    for c in &cases {
        let value = median(&c.samples);
        let ratio = |base: f64| {
            let r = value / base;
            if r.is_nan() || FLOORS.contains(&c.what) {
                String::new()
            } else {
                format!("{r:.2}x")
            }
        };
        let other = match (c.name, c.what) {
            ("producer" | "boundary", "nexus") => format!("{} mpsc", ratio(mpsc)),
            ("producer" | "boundary", "nexus_ranked") => {
                format!("{} in order", ratio(ns(c.name, "nexus")))
            }
            ("peers1", _) => format!("{} inline, {} producer", ratio(single), ratio(producer)),
            ("peers8", _) => format!("{} nexus 8", ratio(fanout)),
            ("decode", "nexus") => format!("{} serde_derive", ratio(ns("decode", "serde_derive"))),
            ("gate", _) => format!(
                "{:.2}x the single path's static floor",
                value / ns("single", "static")
            ),
            ("single", "dynamic_locked" | "dynamic_serialized") => {
                format!("{:.2}x dynamic", value / ns("single", "dynamic"))
            }
            (_, "static_serialized") => {
                format!("{:.2}x static", value / ns(c.name, "static"))
            }
            (_, "static_guarded" | "dynamic_guarded") => {
                format!("{:.2}x static", value / ns(c.name, "static"))
            }
            ("chain10", _) if c.what.starts_with("nexus") => {
                format!("{} guarded", ratio(ns(c.name, "static_guarded")))
            }
            ("single" | "filters4" | "fanout8", _) if c.what.starts_with("nexus") => {
                format!(
                    "{} guarded, {} dynamic guarded",
                    ratio(ns(c.name, "static_guarded")),
                    ratio(ns(c.name, "dynamic_guarded"))
                )
            }
            _ => String::new(),
        };
        println!(
            "{:<10} {:<16} {:>10.1} {:>9} {:>9} {:>9} {other}",
            c.name,
            c.what,
            value,
            ratio(ns(c.name, "naive")),
            ratio(ns(c.name, "dynamic")),
            ratio(ns(c.name, "static")),
        );
        rows.push((c.name, c.what, value));
    }

    for (name, what) in [
        ("single", "nexus"),
        ("single", "nexus_all"),
        ("single", "nexus_plain"),
        ("single", "nexus_async_fn"),
        ("single", "nexus_macro"),
        ("filters4", "nexus"),
        ("filters4", "nexus_all"),
        ("filters4", "nexus_plain"),
        ("chain10", "nexus"),
        ("fanout8", "nexus"),
        ("fanout8", "nexus_all"),
        ("fanout8", "nexus_multiple"),
    ] {
        let prefix = if what == "nexus" {
            name.to_owned()
        } else {
            format!("{name}_{what}")
        };
        for floor in ["naive", "dynamic", "static", "static_guarded"] {
            push(
                &format!("{prefix}_vs_{floor}"),
                ns(name, what) / ns(name, floor),
                3,
            );
        }
    }
    // What an uncontended lock around each event adds to the dynamic floor: the least a
    // dispatcher that takes events from any thread, one at a time, pays on top of it.
    push(
        "single_dynamic_locked_vs_dynamic",
        ns("single", "dynamic_locked") / ns("single", "dynamic"),
        3,
    );
    // The single path's static floor in its fastest round: each round places the case's future at
    // another offset (`shifted`), and this floor's time depends on it (about 6 ns an event at
    // some offsets, about 10 at others, on the machine of the README's latest run).
    let fastest = cases
        .iter()
        .find(|c| c.name == "single" && c.what == "static")
        .and_then(|c| c.samples.iter().copied().min_by(f64::total_cmp))
        .unwrap_or(f64::NAN);
    push("single_static_fastest_ns", fastest, 1);
    for (key, what) in [
        ("single_vs_static_fastest", "nexus"),
        ("single_nexus_all_vs_static_fastest", "nexus_all"),
        (
            "single_static_serialized_vs_static_fastest",
            "static_serialized",
        ),
    ] {
        push(key, ns("single", what) / fastest, 3);
    }
    // What the cheapest lock around each event adds to the static and dynamic floors: the least
    // that ingest of one event at a time, from any thread, costs beside them, whatever else it
    // keeps.
    for name in ["single", "filters4", "fanout8"] {
        push(
            &format!("{name}_static_serialized_vs_static"),
            ns(name, "static_serialized") / ns(name, "static"),
            3,
        );
    }
    push(
        "single_dynamic_serialized_vs_dynamic",
        ns("single", "dynamic_serialized") / ns("single", "dynamic"),
        3,
    );
    // What the guarantees a nexus keeps for each event cost the static floor at least.
    for name in ["single", "filters4", "chain10", "fanout8"] {
        push(
            &format!("{name}_static_guarded_vs_static"),
            ns(name, "static_guarded") / ns(name, "static"),
            3,
        );
    }
    // The same with handlers (and filters) registered at run time, and nexus beside that.
    for name in ["single", "filters4", "fanout8"] {
        for floor in ["static", "dynamic"] {
            push(
                &format!("{name}_dynamic_guarded_vs_{floor}"),
                ns(name, "dynamic_guarded") / ns(name, floor),
                3,
            );
        }
        push(
            &format!("{name}_vs_dynamic_guarded"),
            ns(name, "nexus") / ns(name, "dynamic_guarded"),
            3,
        );
    }
    push(
        "named_vs_static",
        ns("named", "nexus") / ns("named", "static"),
        3,
    );
    push("producer_vs_mpsc", ns("producer", "nexus") / mpsc, 3);
    push(
        "decode_vs_serde_derive",
        ns("decode", "nexus") / ns("decode", "serde_derive"),
        3,
    );
    push("boundary_vs_mpsc", ns("boundary", "nexus") / mpsc, 3);
    // Priority on, every priority equal, beside the same path in arrival order.
    for name in ["producer", "boundary"] {
        push(
            &format!("{name}_ranked_vs_in_order"),
            ns(name, "nexus_ranked") / ns(name, "nexus"),
            3,
        );
    }
    for peer in ["tokio_events", "jaeb", "abxbus"] {
        push(
            &format!("{peer}1_over_nexus"),
            ns("peers1", peer) / single,
            1,
        );
        // Peers deliver across tasks: beside nexus's own cross-task path, a producer's.
        push(
            &format!("{peer}1_over_nexus_producer"),
            ns("peers1", peer) / producer,
            1,
        );
        push(
            &format!("{peer}8_over_nexus"),
            ns("peers8", peer) / fanout,
            1,
        );
        push(
            &format!("{peer}8_over_nexus_multiple"),
            ns("peers8", peer) / ns("fanout8", "nexus_multiple"),
            1,
        );
    }
    for (name, what, value) in &rows {
        push(&format!("{name}_{what}_ns"), *value, 1);
    }

    if std::env::var_os("NEXUS_BENCH_CASES_ONLY").is_some() {
        return;
    }
    // Taken in turns within each round, each round starting with the next, so that a noisy
    // spell falls on every figure alike rather than on one of them.
    // One nexus also on a runtime of one worker, where its producer task and the task feeding it
    // never hand events from one core to the other: what one core moves at best. And two such
    // runtimes, one nexus each, on threads of their own: a runtime per core.
    let runs: [fn(u64) -> f64; 4] = [
        |n| parallel_nexuses(1, 2, n),
        |n| parallel_nexuses(2, 2, n),
        |n| parallel_nexuses(1, 1, n),
        nexuses_apart,
    ];
    // Ten times the cases' events: at 200,000, one nexus moves them in about 20 ms, short enough
    // for one spell of noise to decide a round (two nexuses against one on one worker ranged from
    // 1.75x to 1.92x in three runs of this part alone; at 2,000,000, from 1.90x to 1.93x).
    let cores_n = 10 * n;
    let [one, two, one_alone, two_apart] = in_turns(rounds, runs.map(|run| move || run(cores_n)));
    println!(
        "\ntwo-worker runtime, producer-fed nexuses: one {one:.0} events/s, two at once {two:.0} \
         events/s ({:.2}x); one on a one-worker runtime {one_alone:.0} events/s (two at once \
         {:.2}x that); two, each on a one-worker runtime of its own thread, {two_apart:.0} \
         events/s ({:.2}x one on one worker)",
        two / one,
        two / one_alone,
        two_apart / one_alone,
    );
    push("one_nexus_eps", one, 0);
    push("two_nexuses_eps", two, 0);
    push("two_nexuses_speedup", two / one, 2);
    push("one_nexus_one_worker_eps", one_alone, 0);
    push("two_nexuses_vs_one_worker", two / one_alone, 2);
    push("two_nexuses_apart_eps", two_apart, 0);
    push("two_nexuses_apart_vs_one_worker", two_apart / one_alone, 2);
    let mut line = String::from("one nexus fed through one ChannelProducer by plain threads:");
    let senders = in_turns(
        rounds,
        [1, 2, 4, 8].map(|threads| move || many_senders(threads, n)),
    );
    for (threads, eps) in [1, 2, 4, 8].into_iter().zip(senders) {
        let _ = write!(line, " {threads}: {eps:.0} events/s;");
        push(&format!("senders{threads}_eps"), eps, 0);
    }
    println!("{}", line.trim_end_matches(';'));

    let (timer, interval) = timer_schedule(1000);
    println!(
        "Timer, 1000 ticks of 1 ms: {:.4} s (tokio interval: {:.4} s; schedule 1.0000 s)",
        timer.as_secs_f64(),
        interval.as_secs_f64()
    );
    push("timer_1000x1ms_s", timer.as_secs_f64(), 4);

    if !quick {
        match (memory_run(100_000), memory_run(10_000_000)) {
            (Some(small), Some(large)) => {
                let growth = large as f64 / small as f64;
                println!(
                    "peak RSS: {small} KiB after 100,000 events, {large} KiB after 10,000,000 ({growth:.3}x)"
                );
                push("rss_100k_kib", small as f64, 0);
                push("rss_10m_kib", large as f64, 0);
                push("rss_growth", growth, 3);
            }
            _ => println!("peak RSS: not measured (no /proc/self/status or no child process)"),
        }
    }

    match python_single_ns() {
        Some(python) => {
            println!(
                "Python original (async-nexus), ingest into one handler: {python:.0} ns/event, {:.1}x nexus",
                python / single
            );
            push("python_single_ns", python, 0);
            push("python_over_nexus", python / single, 1);
        }
        None => println!(
            "Python original: not measured (set NEXUS_PYTHON_REFERENCE to python_reference.py and NEXUS_PYTHON to an interpreter with async-nexus)"
        ),
    }

    let chart = chart(&rows);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dispatch.svg");
    match std::fs::write(&path, chart) {
        Ok(()) => println!("chart: {}", path.display()),
        Err(err) => println!("chart: not written to {}: {err}", path.display()),
    }

    let mut line = String::from("summary:");
    for (key, value) in &summary {
        let _ = write!(line, " {key}={value}");
    }
    println!("{line}");
}

// ----- more than one core ----------------------------------------------------------------------

fn workers(count: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(count)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A nexus whose handler counts into `tally`, fed by a `ChannelProducer`; returns the nexus, its
/// loop task and the sender.
fn counted_nexus(
    tally: &Arc<Tally>,
) -> (
    AsyncEventNexus,
    tokio::task::JoinHandle<Result<(), nexus::NexusError>>,
    nexus::sources::EventSender,
) {
    let nexus = AsyncEventNexus::new();
    let seen = Arc::clone(tally);
    nexus
        .add_handler(TYPE, move |event: Event, _queue: EventQueue| {
            body(&event);
            seen.hit();
        })
        .expect("handler");
    let (producer, sender) = ChannelProducer::new(CAPACITY);
    nexus.add_producer(producer).expect("producer");
    let running = running_nexus(&nexus);
    (nexus, running, sender)
}

/// Events per second through `nexuses` nexuses at once on a runtime of `worker_threads`
/// workers, each fed by a producer task of its own with `n` events.
fn parallel_nexuses(nexuses: usize, worker_threads: usize, n: u64) -> f64 {
    let took = workers(worker_threads).block_on(feed_nexuses(nexuses, n, None));
    (nexuses as u64 * n) as f64 / took.as_secs_f64()
}

/// Events per second through two nexuses, each with the task feeding it on a one-worker
/// runtime of its own thread (a runtime per core), the two started together.
fn nexuses_apart(n: u64) -> f64 {
    let start_together = std::sync::Barrier::new(2);
    let took = std::thread::scope(|scope| {
        let sides: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| workers(1).block_on(feed_nexuses(1, n, Some(&start_together)))))
            .collect();
        sides
            .into_iter()
            .map(|side| side.join().expect("a runtime's thread"))
            .max()
            .unwrap_or_default()
    });
    (2 * n) as f64 / took.as_secs_f64()
}

/// Feeds `n` events into each of `nexuses` nexuses, each through a producer task of its own
/// from a task of its own, once every side is set up (and `start_together` passed, when
/// given): the time until every handler has seen its last event.
async fn feed_nexuses(
    nexuses: usize,
    n: u64,
    start_together: Option<&std::sync::Barrier>,
) -> Duration {
    let mut sides = Vec::new();
    for _ in 0..nexuses {
        let tally = Arc::new(Tally::default());
        tally.expect(n);
        let (nexus, running, sender) = counted_nexus(&tally);
        sides.push((tally, nexus, running, sender));
    }
    settle().await;
    if let Some(barrier) = start_together {
        // This runtime's tasks run on its worker meanwhile, not on the thread waiting here.
        barrier.wait();
    }
    let start = Instant::now();
    let feeders: Vec<_> = sides
        .iter()
        .map(|(_, _, _, sender)| {
            let sender = sender.clone();
            tokio::spawn(async move {
                for i in 0..n {
                    sender.send(event(i)).await.expect("send");
                }
            })
        })
        .collect();
    for (tally, ..) in &sides {
        tally.wait().await;
    }
    let took = start.elapsed();
    for feeder in feeders {
        feeder.await.expect("feeder");
    }
    for (_, nexus, running, _) in sides {
        nexus.stop();
        let _ = running.await;
    }
    took
}

/// Events per second into one nexus from `threads` plain threads sending through one
/// `ChannelProducer` (`blocking_send`), `n` events in all.
fn many_senders(threads: u64, n: u64) -> f64 {
    let rt = workers(2);
    let tally = Arc::new(Tally::default());
    tally.expect(n / threads * threads);
    let (nexus, running, sender) = rt.block_on(async {
        let sides = counted_nexus(&tally);
        settle().await;
        sides
    });
    let start = Instant::now();
    let senders: Vec<_> = (0..threads)
        .map(|t| {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for i in 0..n / threads {
                    sender
                        .blocking_send(event(t * n + i))
                        .expect("blocking send");
                }
            })
        })
        .collect();
    rt.block_on(tally.wait());
    let took = start.elapsed();
    for s in senders {
        s.join().expect("sender thread");
    }
    rt.block_on(async {
        nexus.stop();
        let _ = running.await;
    });
    (n / threads * threads) as f64 / took.as_secs_f64()
}

/// Runs each of `runs` once per round, in turns, round `r` starting with run `r % K`; the
/// median of each run's results.
fn in_turns<const K: usize>(rounds: u64, runs: [impl Fn() -> f64; K]) -> [f64; K] {
    let mut samples: [Vec<f64>; K] = std::array::from_fn(|_| Vec::new());
    for round in 0..rounds as usize {
        for k in 0..K {
            let at = (round + k) % K;
            samples[at].push(runs[at]());
        }
    }
    samples.map(|s| median(&s))
}

/// A bar chart of ns per event (log scale), one group per path.
fn chart(rows: &[(&str, &str, f64)]) -> String {
    let bar_h = 16.0;
    let gap = 10.0;
    let left = 230.0;
    let width = 560.0;
    let max = rows.iter().map(|r| r.2).fold(1.0_f64, f64::max);
    let min = 10.0_f64;
    let scale = |v: f64| ((v.max(min) / min).log10() / (max / min).log10()) * width;
    let mut y = 40.0;
    let mut body = String::new();
    let mut last_group = "";
    for (name, what, value) in rows {
        if *name != last_group {
            if !last_group.is_empty() {
                y += gap;
            }
            last_group = name;
        }
        let colour = match *what {
            w if w.starts_with("nexus") => "#2b6cb0",
            w if FLOORS.contains(&w) => "#718096",
            _ => "#c05621",
        };
        let _ = write!(
            body,
            r##"<text x="{tx}" y="{ty}" text-anchor="end" font-size="12">{name} · {what}</text><rect x="{left}" y="{y}" width="{w:.1}" height="{bar_h}" fill="{colour}"/><text x="{vx:.1}" y="{ty}" font-size="11">{value:.0} ns</text>"##,
            tx = left - 8.0,
            ty = y + 12.0,
            w = scale(*value),
            vx = left + scale(*value) + 6.0,
        );
        y += bar_h + 4.0;
    }
    let height = y + 30.0;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="{height}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/><text x="10" y="22" font-size="14">ns per event, log scale (blue: nexus, grey: floor, orange: peer crates)</text>{body}</svg>"##,
        total = left + width + 90.0,
    )
}

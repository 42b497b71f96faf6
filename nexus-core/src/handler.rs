//! What consumes events: handler functions and closures, [`EventConsumer`] objects, filters, and
//! the [`Selector`] that says which events a handler takes.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::{Range, RangeInclusive};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;

use crate::error::{BoxError, NexusError};
use crate::event::{Event, EventType, Kind};
use crate::fan::FanList;
use crate::queue::EventQueue;
use crate::spare::{self, Spare};

/// Which events a handler is registered for.
///
/// Built from what [`AsyncEventNexus::add_handler`](crate::AsyncEventNexus::add_handler) is given:
///
/// | written | selects |
/// |---|---|
/// | `99` | events of type 99 |
/// | `-1` or `Selector::Default` | events no other handler takes (the default handler) |
/// | `Selector::of::<Ping>()` | events of the named type `Ping` states ([`EventKind`](crate::EventKind)), checked: one name, one type |
/// | `EventType::of::<Ping>()`, `"name"` | events of that named type |
/// | `1000..=1999`, `1000..2000` | events whose integer type is in the range |
/// | `[1, 2, 3]`, a `Vec` | each of the listed selectors |
/// | `Selector::Mask(0b0110)` | in bit mode, events whose type is one of the mask's bits (2, 4) |
///
/// A handler registered for an exact type wins over one for a range that holds it; a range
/// handler wins over the default handler. In bit mode a mask handler comes between the exact
/// type and the ranges (see [`NexusBuilder::bit_mode`](crate::NexusBuilder::bit_mode)).
///
/// ```
/// use nexus_core::{EventType, Selector};
///
/// assert_eq!(Selector::from(-1), Selector::Default);
/// assert_eq!(Selector::from(99), Selector::Type(EventType::Int(99)));
/// assert_eq!(Selector::from(10..=20), Selector::Range(10, 20));
/// assert_eq!(Selector::from(10..20), Selector::Range(10, 19));
/// assert_eq!(Selector::from([1, 2]).to_string(), "[1, 2]");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Events of one type.
    Type(EventType),
    /// Events whose integer type lies in `start..=end`.
    Range(i64, i64),
    /// Events that no filter consumed and no type or range handler takes.
    Default,
    /// Each of these selectors.
    List(Vec<Selector>),
    /// Events of the named type a Rust type states ([`EventKind`](crate::EventKind)). It selects
    /// what `Type` of the same name selects; registering it also claims the name for that Rust
    /// type, so that two types under one name are an error.
    Kind(Kind),
    /// In bit mode ([`NexusBuilder::bit_mode`](crate::NexusBuilder::bit_mode)), events whose
    /// type is a bit the mask holds: `Mask(0b101)` selects types 1 and 4. Bits 0 to 62, as
    /// event types are `i64`; a nexus not in bit mode refuses a mask.
    Mask(u64),
}

impl Selector {
    /// The selector of the named event type `T` (see [`Selector::Kind`]).
    pub fn of<T: crate::EventKind>() -> Self {
        Self::Kind(Kind::of::<T>())
    }

    /// Whether an event of `event_type` is one this selector names. `Default` matches every
    /// type.
    ///
    /// ```
    /// use nexus_core::{EventType, Selector};
    ///
    /// assert!(Selector::from(1000..=1999).matches(&EventType::Int(1500)));
    /// assert!(Selector::from([1, 2]).matches(&EventType::Int(2)));
    /// assert!(!Selector::from("log").matches(&EventType::Int(2)));
    /// ```
    pub fn matches(&self, event_type: &EventType) -> bool {
        match self {
            Self::Type(t) => t == event_type,
            Self::Range(start, end) => event_type
                .as_int()
                .is_some_and(|i| (*start..=*end).contains(&i)),
            Self::Default => true,
            Self::List(items) => items.iter().any(|s| s.matches(event_type)),
            Self::Kind(kind) => event_type.as_name() == Some(kind.name()),
            Self::Mask(mask) => crate::event::bit_of(event_type).is_some_and(|bit| mask & bit != 0),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Type(t) => write!(f, "{t}"),
            Self::Kind(kind) => f.write_str(kind.name()),
            Self::Range(a, b) => write!(f, "{a}..={b}"),
            Self::Default => f.write_str("default (-1)"),
            Self::Mask(mask) => write!(f, "mask {mask:#b}"),
            Self::List(items) => {
                f.write_str("[")?;
                for (i, s) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{s}")?;
                }
                f.write_str("]")
            }
        }
    }
}

impl From<Kind> for Selector {
    fn from(kind: Kind) -> Self {
        Self::Kind(kind)
    }
}

impl From<EventType> for Selector {
    fn from(t: EventType) -> Self {
        match t {
            EventType::Int(-1) => Self::Default,
            t => Self::Type(t),
        }
    }
}

macro_rules! selector_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Selector {
            fn from(i: $t) -> Self {
                Self::from(EventType::from(i))
            }
        }
        impl From<RangeInclusive<$t>> for Selector {
            fn from(r: RangeInclusive<$t>) -> Self {
                Self::Range(i64::from(*r.start()), i64::from(*r.end()))
            }
        }
        impl From<Range<$t>> for Selector {
            fn from(r: Range<$t>) -> Self {
                Self::Range(i64::from(r.start), i64::from(r.end) - 1)
            }
        }
    )*};
}
selector_from!(i8, i16, i32, i64, u8, u16, u32);

impl From<&'static str> for Selector {
    fn from(name: &'static str) -> Self {
        Self::Type(EventType::from(name))
    }
}

impl From<String> for Selector {
    fn from(name: String) -> Self {
        Self::Type(EventType::from(name))
    }
}

impl<T: Into<Selector>, const N: usize> From<[T; N]> for Selector {
    fn from(items: [T; N]) -> Self {
        Self::List(items.into_iter().map(Into::into).collect())
    }
}

impl<T: Into<Selector>> From<Vec<T>> for Selector {
    fn from(items: Vec<T>) -> Self {
        Self::List(items.into_iter().map(Into::into).collect())
    }
}

/// A handler written as an object: the original's `EventConsumer`.
///
/// Register one with [`AsyncEventNexus::add_consumer`](crate::AsyncEventNexus::add_consumer).
/// The nexus dispatches one event at a time, so `handle` is never called twice at once by one
/// nexus; state behind `&self` still needs a `Mutex` or an atomic for Rust's sake, but it is
/// never contended by the nexus.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use nexus_core::{async_trait, AsyncEventNexus, BoxError, Event, EventConsumer, EventQueue};
///
/// #[derive(Default)]
/// struct Counter(AtomicU64);
///
/// #[async_trait]
/// impl EventConsumer for Counter {
///     async fn handle(&self, _event: Event, _queue: EventQueue) -> Result<(), BoxError> {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         Ok(())
///     }
/// }
///
/// let nexus = AsyncEventNexus::new();
/// nexus.add_consumer(5, Counter::default()).unwrap();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event consumer",
    label = "this needs `impl EventConsumer for {Self}`",
    note = "functions and closures are registered with `add_handler`, objects with `add_consumer`"
)]
#[async_trait]
pub trait EventConsumer: Send + Sync + 'static {
    /// Handles one event. Secondary events go on `queue`.
    ///
    /// # Errors
    ///
    /// Whatever the consumer reports; the nexus wraps it in [`NexusError::Handler`], naming the
    /// event and the consumer.
    async fn handle(&self, event: Event, queue: EventQueue) -> Result<(), BoxError>;

    /// Handles one event with the consumer shared by the call: what a nexus calls, so that the
    /// call owns all it uses.
    ///
    /// The default boxes a future that awaits [`handle`](Self::handle). A consumer whose
    /// handling can be written as one future owning an `Arc` of it may return that instead,
    /// saving an allocation per event.
    fn handle_shared(self: Arc<Self>, event: Event, queue: EventQueue) -> ConsumerFuture
    where
        Self: Sized,
    {
        Box::pin(async move { self.handle(event, queue).await })
    }

    /// The handlers this consumer does nothing but call in turn, each with a copy of the event,
    /// as a fanout does. A nexus then calls them itself, each guarded and timed as one of its
    /// own handlers, keeping the fanout's rules: every handler is called even if one fails, and
    /// the first error is the event's. The default, `None`, has the nexus call
    /// [`handle`](Self::handle); so does an empty list.
    ///
    /// Whether a consumer fans out is asked once, when it is registered.
    #[doc(hidden)]
    fn fan_out(&self) -> Option<&FanList> {
        None
    }

    /// This consumer as a function handler, when it can be written as one: a nexus then
    /// registers that handler in its place, named after the consumer's type. A function
    /// handler's future is made in memory the nexus keeps between calls, so a call that
    /// completes at once allocates nothing; a consumer's call is boxed. The default, `None`,
    /// has the nexus call [`handle_shared`](Self::handle_shared).
    ///
    /// Asked once, when the consumer is registered.
    fn as_handler(&self) -> Option<Handler> {
        None
    }
}

/// The future of one call of a consumer, as [`EventConsumer::handle_shared`] returns it.
pub type ConsumerFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'static>>;

#[async_trait]
impl<C: EventConsumer + ?Sized> EventConsumer for Arc<C> {
    async fn handle(&self, event: Event, queue: EventQueue) -> Result<(), BoxError> {
        (**self).handle(event, queue).await
    }

    fn fan_out(&self) -> Option<&FanList> {
        (**self).fan_out()
    }

    fn as_handler(&self) -> Option<Handler> {
        (**self).as_handler()
    }
}

/// Markers that tell the kinds of handler and filter functions apart; never named by users.
pub mod marker {
    /// A function that returns its result at once (a plain closure).
    #[derive(Debug)]
    pub struct Immediate;
    /// A function that returns a future (an `async fn` or async closure).
    #[derive(Debug)]
    pub struct Deferred;
}

/// What a handler may return: `()` or `Result<(), E>` for any error `E`.
#[diagnostic::on_unimplemented(
    message = "a handler returns `()` or `Result<(), E>`, not `{Self}`",
    label = "return `()` or `Result<(), E>` here"
)]
pub trait HandlerOutput: Sized {
    /// Converts to the nexus's result.
    fn into_result(self) -> Result<(), BoxError>;

    #[doc(hidden)]
    /// Boxes a future of this output as one call.
    fn boxed<F>(future: F) -> Call<'static, Result<(), BoxError>>
    where
        F: Future<Output = Self> + Send + 'static;

    #[doc(hidden)]
    /// Makes one call of a future of this output that is boxed already.
    fn pinned<F>(future: Pin<Box<F>>) -> Call<'static, Result<(), BoxError>>
    where
        F: Future<Output = Self> + Send + 'static,
    {
        Self::boxed(future)
    }
}

impl HandlerOutput for () {
    fn into_result(self) -> Result<(), BoxError> {
        Ok(())
    }

    fn boxed<F>(future: F) -> Call<'static, Result<(), BoxError>>
    where
        F: Future<Output = Self> + Send + 'static,
    {
        // No wrapper: the most common handler output needs no conversion.
        Call::Unit(Box::pin(future))
    }

    fn pinned<F>(future: Pin<Box<F>>) -> Call<'static, Result<(), BoxError>>
    where
        F: Future<Output = Self> + Send + 'static,
    {
        Call::Unit(future)
    }
}

impl<E: Into<BoxError>> HandlerOutput for Result<(), E> {
    fn into_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }

    fn boxed<F>(future: F) -> Call<'static, Result<(), BoxError>>
    where
        F: Future<Output = Self> + Send + 'static,
    {
        Call::Boxed(Box::pin(async move { future.await.into_result() }))
    }
}

/// What a handler function may return: a [`HandlerOutput`] at once, or a future of one.
///
/// The marker `M` lets one `add_handler` take plain closures and async functions alike.
pub trait HandlerReturn<M>: Send + 'static {
    #[doc(hidden)]
    fn into_call(self) -> Call<'static, Result<(), BoxError>>;

    #[doc(hidden)]
    /// Makes the call and polls it once, with memory for its future taken from `spare` (and
    /// the future made in place there).
    fn start(
        make: impl FnOnce() -> Self,
        cx: &mut Context<'_>,
        spare: &mut Spare,
    ) -> Started<Result<(), BoxError>>
    where
        Self: Sized;
}

impl<R: HandlerOutput + Send + 'static> HandlerReturn<marker::Immediate> for R {
    fn into_call(self) -> Call<'static, Result<(), BoxError>> {
        Call::Ready(Some(self.into_result()))
    }

    #[inline(always)]
    fn start(
        make: impl FnOnce() -> Self,
        _cx: &mut Context<'_>,
        _spare: &mut Spare,
    ) -> Started<Result<(), BoxError>> {
        Started::Done(make().into_result())
    }
}

impl<F> HandlerReturn<marker::Deferred> for F
where
    F: Future + Send + 'static,
    F::Output: HandlerOutput,
{
    fn into_call(self) -> Call<'static, Result<(), BoxError>> {
        F::Output::boxed(self)
    }

    #[inline(always)]
    fn start(
        make: impl FnOnce() -> Self,
        cx: &mut Context<'_>,
        spare: &mut Spare,
    ) -> Started<Result<(), BoxError>> {
        match spare::start(make, cx, spare) {
            Ok(output) => Started::Done(output.into_result()),
            Err(waiting) => Started::Waiting(F::Output::pinned(waiting)),
        }
    }
}

/// What a filter may return: `bool` or `Result<bool, E>`, at once or as a future.
pub trait FilterReturn<M>: Send + 'static {
    #[doc(hidden)]
    /// Makes the call and polls it once, as [`HandlerReturn`] does.
    fn start(
        make: impl FnOnce() -> Self,
        cx: &mut Context<'_>,
        spare: &mut Spare,
    ) -> Started<Result<bool, BoxError>>
    where
        Self: Sized;
}

/// A filter's answer: `true` when it consumed the event.
#[diagnostic::on_unimplemented(
    message = "a filter returns `bool` or `Result<bool, E>`, not `{Self}`",
    label = "return `bool` (`true`: the event is consumed) here"
)]
pub trait FilterOutput {
    /// Converts to the nexus's result.
    fn into_result(self) -> Result<bool, BoxError>;

    #[doc(hidden)]
    /// Boxes a future of this output as one call.
    fn boxed<F>(future: F) -> Call<'static, Result<bool, BoxError>>
    where
        F: Future<Output = Self> + Send + 'static,
        Self: Sized,
    {
        Call::Boxed(Box::pin(async move { future.await.into_result() }))
    }

    #[doc(hidden)]
    /// Makes one call of a future of this output that is boxed already.
    fn pinned<F>(future: Pin<Box<F>>) -> Call<'static, Result<bool, BoxError>>
    where
        F: Future<Output = Self> + Send + 'static,
        Self: Sized,
    {
        Self::boxed(future)
    }
}

impl FilterOutput for bool {
    fn into_result(self) -> Result<bool, BoxError> {
        Ok(self)
    }

    fn boxed<F>(future: F) -> Call<'static, Result<bool, BoxError>>
    where
        F: Future<Output = Self> + Send + 'static,
    {
        // No wrapper: the most common filter output needs no conversion.
        Call::Flag(Box::pin(future))
    }

    fn pinned<F>(future: Pin<Box<F>>) -> Call<'static, Result<bool, BoxError>>
    where
        F: Future<Output = Self> + Send + 'static,
    {
        Call::Flag(future)
    }
}

impl<E: Into<BoxError>> FilterOutput for Result<bool, E> {
    fn into_result(self) -> Result<bool, BoxError> {
        self.map_err(Into::into)
    }
}

impl<R: FilterOutput + Send + 'static> FilterReturn<marker::Immediate> for R {
    #[inline(always)]
    fn start(
        make: impl FnOnce() -> Self,
        _cx: &mut Context<'_>,
        _spare: &mut Spare,
    ) -> Started<Result<bool, BoxError>> {
        Started::Done(make().into_result())
    }
}

impl<F> FilterReturn<marker::Deferred> for F
where
    F: Future + Send + 'static,
    F::Output: FilterOutput,
{
    #[inline(always)]
    fn start(
        make: impl FnOnce() -> Self,
        cx: &mut Context<'_>,
        spare: &mut Spare,
    ) -> Started<Result<bool, BoxError>> {
        match spare::start(make, cx, spare) {
            Ok(output) => Started::Done(output.into_result()),
            Err(waiting) => Started::Waiting(F::Output::pinned(waiting)),
        }
    }
}

/// One call of a handler or filter: ready at once (no allocation) or a boxed future.
#[doc(hidden)]
pub enum Call<'a, T> {
    Ready(Option<T>),
    Boxed(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
    /// A handler's future of `()`.
    Unit(Pin<Box<dyn Future<Output = ()> + Send + 'a>>),
    /// A filter's future of `bool`.
    Flag(Pin<Box<dyn Future<Output = bool> + Send + 'a>>),
}

/// How a call went when first polled: done, or waiting (then kept as a [`Call`]).
#[doc(hidden)]
#[derive(Debug)]
pub enum Started<T> {
    Done(T),
    Waiting(Call<'static, T>),
}

impl<T: Unpin> Started<T>
where
    Call<'static, T>: Future<Output = T>,
{
    /// Polls `call` once.
    #[inline]
    fn poll(mut call: Call<'static, T>, cx: &mut Context<'_>) -> Self {
        match Pin::new(&mut call).poll(cx) {
            Poll::Ready(done) => Self::Done(done),
            Poll::Pending => Self::Waiting(call),
        }
    }
}

/// A filter's outcome as one word, returned in a register: [`PASSED`], [`CONSUMED`], or
/// [`ASIDE`]. A `bool` or a `Result` returned in memory would be written and read back on every
/// call.
pub(crate) type Verdict = usize;
/// The filter let the event pass.
pub(crate) const PASSED: Verdict = 0;
/// The filter consumed the event.
pub(crate) const CONSUMED: Verdict = 1;
/// The call failed or has to wait: what it left is in the place it was given ([`Aside`]).
pub(crate) const ASIDE: Verdict = 2;

/// What a filter's call that gave no verdict at once left behind.
pub(crate) enum Aside {
    /// The filter's error.
    Failed(BoxError),
    /// The call itself, which has to wait.
    Waiting(Call<'static, Result<bool, BoxError>>),
}

impl Started<Result<bool, BoxError>> {
    /// The verdict of a filter's call; a failure or a call that has to wait is put in `aside`.
    #[inline(always)]
    fn verdict(self, aside: &mut Option<Aside>) -> Verdict {
        match self {
            Started::Done(Ok(consumed)) => Verdict::from(consumed),
            Started::Done(Err(err)) => {
                *aside = Some(Aside::Failed(err));
                ASIDE
            }
            Started::Waiting(call) => {
                *aside = Some(Aside::Waiting(call));
                ASIDE
            }
        }
    }
}

/// What a call's successful result is made of: `()` for a handler, `bool` for a filter.
#[doc(hidden)]
pub trait Outcome: Unpin + Default {
    /// The result of a filter's `bool` (a handler's calls never give one).
    fn from_flag(flag: bool) -> Self;
}

impl Outcome for () {
    fn from_flag(_flag: bool) -> Self {}
}

impl Outcome for bool {
    fn from_flag(flag: bool) -> Self {
        flag
    }
}

impl<T: Outcome> Future for Call<'_, Result<T, BoxError>> {
    type Output = Result<T, BoxError>;
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            // Taken once: a `Call` is never polled again after it is ready.
            Call::Ready(value) => Poll::Ready(value.take().unwrap_or(Ok(T::default()))),
            Call::Boxed(fut) => fut.as_mut().poll(cx),
            Call::Unit(fut) => fut.as_mut().poll(cx).map(|()| Ok(T::default())),
            Call::Flag(fut) => fut.as_mut().poll(cx).map(|flag| Ok(T::from_flag(flag))),
        }
    }
}

impl<T> fmt::Debug for Call<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Ready(_) => "Call::Ready",
            Call::Boxed(_) => "Call::Boxed",
            Call::Unit(_) => "Call::Unit",
            Call::Flag(_) => "Call::Flag",
        })
    }
}

/// A registered handler with its kind erased. A call owns all it uses, so the dispatcher can
/// keep it across a suspension without keeping the handler table borrowed.
pub(crate) trait ErasedHandler: Send + Sync + 'static {
    fn call(&self, event: Event, queue: EventQueue) -> Call<'static, Result<(), BoxError>>;

    /// Calls with the event taken from `slot` and polls once, the future placed in memory from
    /// `spare` when it has a type of its own. Taking the event from its slot in the call itself
    /// moves it once, straight into the call's future.
    fn start_in(
        &self,
        slot: &mut Option<Event>,
        queue: &EventQueue,
        cx: &mut Context<'_>,
        _spare: &mut Spare,
    ) -> Started<Result<(), BoxError>> {
        match slot.take() {
            Some(event) => Started::poll(self.call(event, queue.clone()), cx),
            None => Started::Done(Ok(())),
        }
    }

    /// As [`start_in`](Self::start_in), with a copy of `event`: the copy is made in the call
    /// itself, so that it is written once, where the call's future keeps it.
    fn start_copy(
        &self,
        event: &Event,
        queue: &EventQueue,
        cx: &mut Context<'_>,
        spare: &mut Spare,
    ) -> Started<Result<(), BoxError>> {
        self.start_in(&mut Some(event.clone()), queue, cx, spare)
    }

    /// See [`EventConsumer::fan_out`].
    fn fan_out(&self) -> Option<&FanList> {
        None
    }
}

pub(crate) struct FnHandler<F, M> {
    f: F,
    _marker: PhantomData<fn() -> M>,
}

impl<F, M> FnHandler<F, M> {
    pub(crate) fn new(f: F) -> Self {
        Self {
            f,
            _marker: PhantomData,
        }
    }
}

impl<F, R, M> ErasedHandler for FnHandler<F, (R, M)>
where
    F: Fn(Event, EventQueue) -> R + Send + Sync + 'static,
    R: HandlerReturn<M>,
    M: 'static,
{
    fn call(&self, event: Event, queue: EventQueue) -> Call<'static, Result<(), BoxError>> {
        (self.f)(event, queue).into_call()
    }

    #[inline]
    fn start_in(
        &self,
        slot: &mut Option<Event>,
        queue: &EventQueue,
        cx: &mut Context<'_>,
        spare: &mut Spare,
    ) -> Started<Result<(), BoxError>> {
        if slot.is_none() {
            return Started::Done(Ok(()));
        }
        // Taken (and the queue handle cloned) inside the call's making: the making then holds
        // only references, which stay in registers, and the event moves straight from its slot
        // into the call.
        R::start(
            || (self.f)(slot.take().expect("checked just above"), queue.clone()),
            cx,
            spare,
        )
    }

    #[inline]
    fn start_copy(
        &self,
        event: &Event,
        queue: &EventQueue,
        cx: &mut Context<'_>,
        spare: &mut Spare,
    ) -> Started<Result<(), BoxError>> {
        R::start(|| (self.f)(event.clone(), queue.clone()), cx, spare)
    }
}

/// A consumer object; each call holds a reference count of it.
pub(crate) struct ConsumerHandler<C>(pub(crate) Arc<C>);

impl<C: EventConsumer> ErasedHandler for ConsumerHandler<C> {
    fn call(&self, event: Event, queue: EventQueue) -> Call<'static, Result<(), BoxError>> {
        Call::Boxed(C::handle_shared(Arc::clone(&self.0), event, queue))
    }

    fn fan_out(&self) -> Option<&FanList> {
        C::fan_out(&self.0)
    }
}

/// A handler of any kind, ready to call: a function or closure ([`Handler::new`]) or an
/// [`EventConsumer`] ([`Handler::consumer`]), with the name its errors carry.
///
/// This is what a nexus keeps for each registration, and what buses such as a fanout hold.
/// Cloning it is cheap.
///
/// ```
/// use nexus_core::{AsyncEventNexus, Event, EventQueue, Handler};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nexus_core::NexusError> {
/// let handler = Handler::new(|event: Event, _queue: EventQueue| println!("{event}"));
/// let queue = AsyncEventNexus::new().queue().clone();
/// handler.call(Event::new(1, 2, 0, "direct"), queue).await
/// # }
/// ```
#[derive(Clone)]
pub struct Handler {
    /// A `Box` inside the `Arc`, so that a call finds the handler at a fixed place: reaching the
    /// value in an `Arc<dyn _>` takes its alignment from the vtable and rounds an offset with
    /// it, on every call.
    inner: Arc<Box<dyn ErasedHandler>>,
    name: &'static str,
    limit: Option<std::time::Duration>,
    /// Whether it is a consumer that fans out ([`EventConsumer::fan_out`]).
    fans_out: bool,
}

/// Any [`EventConsumer`] is a handler, named after its type:
/// [`AsyncEventNexus::add_consumer`](crate::AsyncEventNexus::add_consumer) takes either.
impl<C: EventConsumer> From<C> for Handler {
    fn from(consumer: C) -> Self {
        Self::consumer(consumer)
    }
}

impl Handler {
    /// A handler from a function or closure, as
    /// [`AsyncEventNexus::add_handler`](crate::AsyncEventNexus::add_handler) takes it.
    pub fn new<F, R, M>(handler: F) -> Self
    where
        F: Fn(Event, EventQueue) -> R + Send + Sync + 'static,
        R: HandlerReturn<M>,
        M: 'static,
    {
        Self {
            inner: Arc::new(Box::new(FnHandler::<F, (R, M)>::new(handler))),
            name: std::any::type_name::<F>(),
            limit: None,
            fans_out: false,
        }
    }

    /// A handler from an [`EventConsumer`] object (or the function handler it stands for, see
    /// [`EventConsumer::as_handler`]).
    pub fn consumer<C: EventConsumer>(consumer: C) -> Self {
        if let Some(handler) = consumer.as_handler() {
            return handler.named(std::any::type_name::<C>());
        }
        Self {
            fans_out: consumer.fan_out().is_some(),
            inner: Arc::new(Box::new(ConsumerHandler(Arc::new(consumer)))),
            name: std::any::type_name::<C>(),
            limit: None,
        }
    }

    /// The same handler, named `name` in errors.
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// The same handler, cancelled when one call runs longer than `limit`; a call that times
    /// out counts as failed ([`NexusError::HandlerTimedOut`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use nexus_core::{AsyncEventNexus, Event, EventQueue, Handler};
    ///
    /// let nexus = AsyncEventNexus::new();
    /// let slow = Handler::new(|_e: Event, _q: EventQueue| tokio::time::sleep(Duration::from_secs(60)));
    /// nexus.add_consumer(7, slow.timeout(Duration::from_secs(1)))?;
    /// # Ok::<(), nexus_core::NexusError>(())
    /// ```
    pub fn timeout(mut self, limit: std::time::Duration) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Its time limit, if any.
    #[inline]
    pub fn time_limit(&self) -> Option<std::time::Duration> {
        self.limit
    }

    /// The name its errors carry: a function's or type's path unless [`named`](Self::named).
    #[inline]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Handles `event`.
    ///
    /// # Errors
    ///
    /// The handler's own error as [`NexusError::Handler`], naming the event and this handler
    /// (a [`NexusError`] it returned passes through as it is).
    #[inline]
    pub fn call(
        &self,
        event: Event,
        queue: EventQueue,
    ) -> impl Future<Output = Result<(), NexusError>> + Send + 'static {
        self.handler_call(event, queue)
    }

    fn handler_call(&self, event: Event, queue: EventQueue) -> HandlerCall {
        let (id, event_type) = (event.id, event.event_type.clone());
        let limit = self
            .limit
            .map(|limit| (limit, tokio::time::Instant::now() + limit, None));
        HandlerCall {
            call: self.start(event, queue),
            id,
            event_type,
            name: self.name,
            limit,
        }
    }

    /// Calls each of `handlers` in turn with a copy of `event` (the last one with the event
    /// itself), as a fanout does. Every handler is called even if an earlier one fails.
    ///
    /// A call that completes at once costs no more than the handler's own future; only a call
    /// that has to wait is kept (boxed) until it is done.
    ///
    /// # Errors
    ///
    /// The first handler's error, as [`call`](Self::call) gives it; later errors are logged.
    ///
    /// ```
    /// use nexus_core::{AsyncEventNexus, Event, EventQueue, Handler};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), nexus_core::NexusError> {
    /// let handlers = [
    ///     Handler::new(|e: Event, _q: EventQueue| println!("first: {e}")),
    ///     Handler::new(|e: Event, _q: EventQueue| async move { println!("second: {e}") }),
    /// ];
    /// let queue = AsyncEventNexus::new().queue().clone();
    /// Handler::call_all(&handlers, Event::new(1, 2, 0, "to both"), queue).await
    /// # }
    /// ```
    pub fn call_all(
        handlers: &[Handler],
        event: Event,
        queue: EventQueue,
    ) -> impl Future<Output = Result<(), NexusError>> + Send + '_ {
        CallAll {
            handlers,
            event: Some(event),
            queue,
            next: 0,
            waiting: None,
            first_error: None,
        }
    }

    /// Whether a call of it is one call: it has no time limit and does not fan out.
    #[inline(always)]
    pub(crate) fn is_plain(&self) -> bool {
        !self.fans_out && self.limit.is_none()
    }

    /// The handlers a fanout consumer calls in turn, for the dispatcher to call itself: only
    /// for a fanout without a time limit of its own (a limit covers the whole fanout call).
    #[inline]
    pub(crate) fn fan_out(&self) -> Option<&FanList> {
        if !self.fans_out || self.limit.is_some() {
            return None;
        }
        self.inner.fan_out()
    }

    /// Starts a call without wrapping its error (the dispatch path does that itself).
    #[inline]
    pub(crate) fn start(
        &self,
        event: Event,
        queue: EventQueue,
    ) -> Call<'static, Result<(), BoxError>> {
        self.inner.call(event, queue)
    }

    /// Starts a call with the event taken from `slot` and polls it once, its future placed in
    /// memory from `spare`; without wrapping its error. An empty slot is a call done at once.
    #[inline]
    pub(crate) fn start_in(
        &self,
        slot: &mut Option<Event>,
        queue: &EventQueue,
        cx: &mut Context<'_>,
        spare: &mut Spare,
    ) -> Started<Result<(), BoxError>> {
        self.inner.start_in(slot, queue, cx, spare)
    }

    /// As [`start_in`](Self::start_in), with a copy of `event` made in the call itself.
    #[inline]
    pub(crate) fn start_copy(
        &self,
        event: &Event,
        queue: &EventQueue,
        cx: &mut Context<'_>,
        spare: &mut Spare,
    ) -> Started<Result<(), BoxError>> {
        self.inner.start_copy(event, queue, cx, spare)
    }
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Handler").field(&self.name).finish()
    }
}

/// One call of a [`Handler`], naming the event and the handler in its error, and cancelled at
/// the handler's time limit (a timer is set only if the call has to wait).
struct HandlerCall {
    call: Call<'static, Result<(), BoxError>>,
    id: u64,
    event_type: EventType,
    name: &'static str,
    limit: Option<CallLimit>,
}

/// The future of [`Handler::call_all`].
struct CallAll<'a> {
    handlers: &'a [Handler],
    /// The event, until the last handler takes it.
    event: Option<Event>,
    queue: EventQueue,
    /// The index of the next handler to call.
    next: usize,
    /// A call that has to wait.
    waiting: Option<Box<HandlerCall>>,
    first_error: Option<Box<NexusError>>,
}

impl CallAll<'_> {
    fn note(&mut self, outcome: Result<(), NexusError>) {
        if let Err(err) = outcome {
            match self.first_error {
                None => self.first_error = Some(Box::new(err)),
                Some(_) => tracing::error!(error = %err, "handler failed"),
            }
        }
    }
}

impl Future for CallAll<'_> {
    type Output = Result<(), NexusError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if let Some(waiting) = &mut this.waiting {
                let outcome = std::task::ready!(Pin::new(&mut **waiting).poll(cx));
                this.waiting = None;
                this.note(outcome);
            }
            let Some(handler) = this.handlers.get(this.next) else {
                let Some(err) = this.first_error.take() else {
                    return Poll::Ready(Ok(()));
                };
                return Poll::Ready(Err(*err));
            };
            this.next += 1;
            let event = if this.next == this.handlers.len() {
                this.event.take()
            } else {
                this.event.clone()
            };
            let Some(event) = event else { continue };
            let mut call = handler.handler_call(event, this.queue.clone());
            match Pin::new(&mut call).poll(cx) {
                Poll::Ready(outcome) => this.note(outcome),
                Poll::Pending => {
                    this.waiting = Some(Box::new(call));
                    return Poll::Pending;
                }
            }
        }
    }
}

/// A call's time limit, its deadline, and the timer set once the call has to wait.
type CallLimit = (
    std::time::Duration,
    tokio::time::Instant,
    Option<Pin<Box<tokio::time::Sleep>>>,
);

impl Future for HandlerCall {
    type Output = Result<(), NexusError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(outcome) = Pin::new(&mut this.call).poll(cx) {
            return Poll::Ready(
                outcome.map_err(|err| handler_error(err, this.id, &this.event_type, this.name)),
            );
        }
        if let Some((limit, deadline, sleep)) = &mut this.limit {
            let deadline = *deadline;
            let sleep = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(NexusError::HandlerTimedOut {
                    id: this.id,
                    event_type: this.event_type.clone(),
                    handler: this.name,
                    limit: *limit,
                }));
            }
        }
        Poll::Pending
    }
}

/// A registered filter with its kind erased. As for handlers, a call owns all it uses.
pub(crate) trait ErasedFilter: Send + Sync + 'static {
    /// Calls and polls once, as [`ErasedHandler::start_in`] does: the filter's [`Verdict`]. A
    /// failure, or a call that has to wait, is put in `aside` ([`ASIDE`] returned).
    fn start_in(
        &self,
        event: &Event,
        queue: &EventQueue,
        cx: &mut Context<'_>,
        spare: &mut Spare,
        aside: &mut Option<Aside>,
    ) -> Verdict;
}

impl<F, R, M> ErasedFilter for FnHandler<F, (R, M)>
where
    F: Fn(&Event, &EventQueue) -> R + Send + Sync + 'static,
    R: FilterReturn<M>,
    M: 'static,
{
    #[inline]
    fn start_in(
        &self,
        event: &Event,
        queue: &EventQueue,
        cx: &mut Context<'_>,
        spare: &mut Spare,
        aside: &mut Option<Aside>,
    ) -> Verdict {
        R::start(|| (self.f)(event, queue), cx, spare).verdict(aside)
    }
}

/// Converts a handler's error into the nexus's, naming the event and the handler. A
/// [`NexusError`] returned by a handler (such as `QueueFull` from `queue.put(..)?`) passes through
/// as it is.
pub(crate) fn handler_error(
    error: BoxError,
    id: u64,
    event_type: &EventType,
    handler: &'static str,
) -> NexusError {
    match error.downcast::<NexusError>() {
        Ok(own) => *own,
        Err(source) => NexusError::Handler {
            id,
            event_type: event_type.clone(),
            handler,
            source,
        },
    }
}

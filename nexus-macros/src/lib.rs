//! Attributes for nexus: register handlers, filters and event sources where they are written,
//! then build and run a nexus from all of them with `nexus_core::run_registered()`.
//!
//! Use them through `nexus` or `nexus-core`, which re-export them; this crate is their
//! implementation. The generated code names only the crate you reached them through
//! (`::nexus` or `::nexus_core`) and `::core`, so you need no dependency on `inventory` or
//! `async-trait`. Where you reach nexus under another name (a renamed dependency, a
//! re-export), say so with `crate = "name"` in any of the three attributes.
//!
//! Registration happens at link time: the items of a library crate register only if the binary
//! links that crate, so refer to something in it from the binary.
#![doc(test(attr(deny(warnings))))]

mod args;
mod expand;
mod selector;

use proc_macro::TokenStream;

/// Registers a free `async fn(event: Event, queue: EventQueue)` as the handler for the event
/// types `event_type` names: an integer (`99`), `-1` for the default handler, a name (`"log"`),
/// a named type (`Ping`, which states its name with `EventKind`), an integer constant
/// (`Demo::Ping as i64`), a range (`1000..=1999`) or a list (`[1, 2, 3]`). It returns `()` or
/// `Result<(), E>`.
///
/// The function stays an ordinary function, callable directly and awaited as before. It is
/// emitted as a function of the same name, parameters and output that returns an `async move`
/// block of its body: an `async fn`'s future copies its parameters into its body when first
/// polled, where the block's reads the event where the call put it. The block keeps the whole
/// event until its future ends, as an `async fn`'s future does, whichever of its fields the body
/// reads. Each call is that future, made in memory the nexus keeps: nothing is allocated for a
/// call that completes when first polled.
///
/// ```
/// use nexus_core::{Event, EventQueue, NexusError, handler};
///
/// #[handler(event_type = 99)]
/// async fn teapot_handler(event: Event, _queue: EventQueue) {
///     println!("teapot ID: {}", event.id);
/// }
///
/// #[handler(event_type = 1000..=1999)]
/// async fn thousands(event: Event, queue: EventQueue) -> Result<(), NexusError> {
///     queue.put(Event::new(event.id, 99, 0, "forwarded"))
/// }
///
/// let listing = nexus_core::registrations();
/// assert_eq!(listing.handlers.len(), 2);
/// ```
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::handler(args.into(), item.into(), expand::Via::Core).into()
}

/// Registers a free `async fn(event: &Event, queue: &EventQueue) -> bool` as a filter: it sees
/// every event before the handlers and returns `true` when it consumed it. Filters run in the
/// order of their `order` key (default 0), then of their paths.
///
/// Each call owns a copy of the event and of the queue handle, which the function's future
/// borrows, and is made in memory the nexus keeps: nothing is allocated for a call that completes
/// when first polled.
///
/// ```
/// use nexus_core::{Event, EventQueue, filter};
///
/// #[filter(order = 1)]
/// async fn low_id(event: &Event, _queue: &EventQueue) -> bool {
///     event.id < 10
/// }
///
/// assert_eq!(nexus_core::registrations().filters.len(), 1);
/// ```
#[proc_macro_attribute]
pub fn filter(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::filter(args.into(), item.into(), expand::Via::Core).into()
}

/// Registers an instance of the struct as an event source: a `SimpleEventConverter`, an
/// `EventConverter` or an `EventProducer`, whichever it implements. The instance is made with
/// `Default`, or with the expression given as `new`.
///
/// ```
/// use nexus_core::{async_trait, event_source, Event, EventSource, NexusError, SimpleEventConverter};
///
/// #[event_source(new = MyEventConverter { id: 1000 })]
/// struct MyEventConverter {
///     id: u64,
/// }
///
/// impl EventSource for MyEventConverter {}
///
/// #[async_trait]
/// impl SimpleEventConverter for MyEventConverter {
///     async fn obtain_event(&mut self) -> Result<Event, NexusError> {
///         self.id += 1;
///         Ok(Event::new(self.id, 50, 0, "hi"))
///     }
/// }
///
/// let nexus = nexus_core::registered().build()?;
/// assert_eq!(nexus.source_count(), 1);
/// # Ok::<(), NexusError>(())
/// ```
#[proc_macro_attribute]
pub fn event_source(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::event_source(args.into(), item.into(), expand::Via::Core).into()
}

/// `#[handler]` as the `nexus` facade re-exports it: the generated code names `::nexus`.
#[doc(hidden)]
#[proc_macro_attribute]
pub fn facade_handler(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::handler(args.into(), item.into(), expand::Via::Facade).into()
}

/// `#[filter]` as the `nexus` facade re-exports it: the generated code names `::nexus`.
#[doc(hidden)]
#[proc_macro_attribute]
pub fn facade_filter(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::filter(args.into(), item.into(), expand::Via::Facade).into()
}

/// `#[event_source]` as the `nexus` facade re-exports it: the generated code names `::nexus`.
#[doc(hidden)]
#[proc_macro_attribute]
pub fn facade_event_source(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::event_source(args.into(), item.into(), expand::Via::Facade).into()
}

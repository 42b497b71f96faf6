//! The heart of nexus: events, event sources, handlers, and the [`AsyncEventNexus`] that
//! directs each event from the sources to the handlers.
//!
//! Sources of events are written apart from the handlers of events; the nexus in the middle
//! sends each event where it needs to go, one at a time. Applications usually depend on the
//! `nexus` facade crate, which re-exports this crate with the ready-made sources; this crate is
//! for libraries that only need the core.
//!
//! # A tour
//!
//! ```
//! use std::time::Duration;
//! use nexus_core::{AsyncEventNexus, Event, EventQueue, NexusError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), NexusError> {
//! let nexus = AsyncEventNexus::new();
//!
//! // Handlers: one per event type, and a default for the rest.
//! nexus.add_handler(99, |event: Event, _queue: EventQueue| async move {
//!     println!("teapot ID: {}", event.id);
//! })?;
//! nexus.add_handler(-1, |event: Event, _queue: EventQueue| println!("{event}"))?;
//!
//! // The simplest source: a task holding the nexus.
//! let teapot = {
//!     let nexus = nexus.clone();
//!     tokio::spawn(async move {
//!         tokio::time::sleep(Duration::from_millis(10)).await;
//!         nexus.ingest(Event::new(1001, 99, 0, "TEAPOT!")).await
//!     })
//! };
//!
//! let running = nexus.start()?;
//! teapot.await.expect("teapot task")?;
//! nexus.stop();
//! running.await.expect("loop task")?;
//! nexus.cleanup().await
//! # }
//! ```
//!
//! See the crate-level docs of each item for the details: [`Event`], [`EventFactory`],
//! [`EventSource`] and its kinds, [`EventConsumer`], [`EventQueue`], [`NexusError`].
#![doc(test(attr(deny(warnings))))]

mod error;
mod event;
mod factory;
mod handler;
mod nexus;
mod queue;
mod source;

pub use async_trait::async_trait;
pub use futures_core::stream::{BoxStream, Stream};

pub use error::{BoxError, LoopState, NexusError};
pub use event::{AnyValue, Event, EventType, Payload, Text};
pub use factory::{EventFactory, EventId};
pub use handler::{
    Call, EventConsumer, FilterFuture, FilterOutput, FilterReturn, HandlerOutput, HandlerReturn,
    Selector, marker,
};
pub use nexus::{AsyncEventNexus, NexusBuilder, WeakNexus};
pub use queue::{DEFAULT_QUEUE_CAPACITY, EventQueue};
pub use source::{
    EventConverter, EventProducer, EventSource, IntoSource, ProducerLink, SimpleEventConverter,
    SourceBoxPublic, source_marker,
};

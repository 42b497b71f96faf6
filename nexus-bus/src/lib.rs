//! Buses for nexus: ways to send events to more than one place.
//!
//! - [`EventFanout`]: a consumer that hands a copy of each event to every handler registered with
//!   it, in order, without queues or tasks.
//! - [`EventDiscarder`]: a consumer for useless events.
//! - [`AsyncEventBoundary`]: joins two event domains, each with its own nexus: chosen events cross
//!   from one to the other through a bounded queue, and replies can come back.
//!
//! Across processes and machines, with the `nats` feature: [`nats::NatsBoundary`] joins domains
//! through a NATS server, with JetStream for at-least-once delivery that survives restarts. With
//! the `otel` feature, a message carries the OpenTelemetry context of the `tracing` span it was
//! published in, and the far side dispatches it in a span of the same trace.
//!
//! A fourth way needs nothing from this crate: one producer registered with several nexuses
//! (see [`ProducerLink::add_nexus`](nexus_core::ProducerLink::add_nexus)).
//!
//! Applications usually reach this crate through the `nexus` facade as `nexus::bus`.
#![doc(test(attr(deny(warnings))))]

mod boundary;
mod fanout;
#[cfg(feature = "nats")]
pub mod nats;

pub use boundary::{AsyncEventBoundary, BoundaryHandler, BoundaryProducer};
pub use fanout::{EventDiscarder, EventFanout, FanoutKey};

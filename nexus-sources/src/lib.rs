//! Ready-made event sources for nexus.
//!
//! [`Timer`] emits an event per interval: counting down, counting up, forever, or once. The
//! adapters turn what a program already has into a source, so that few sources need writing by
//! hand: a stream ([`StreamConverter`]), a generator ([`generator`]), a closure
//! ([`converter_fn`]), or a channel any task or thread can send into ([`ChannelProducer`]).
//! Applications usually reach this crate through the `nexus` facade as `nexus::sources`.
#![doc(test(attr(deny(warnings))))]

mod adapters;
mod timer;
#[cfg(feature = "zmq")]
pub mod zmq;

pub use adapters::{
    ChannelProducer, EventSender, FnConverter, GeneratorConverter, StreamConverter, converter_fn,
    generator,
};
pub use timer::{Timer, TimerKind};

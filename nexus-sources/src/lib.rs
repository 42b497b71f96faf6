//! Ready-made event sources for nexus.
//!
//! [`Timer`] emits an event per interval: counting down, counting up, forever, or once.
//! Applications usually reach this crate through the `nexus` facade as `nexus::sources`.
#![doc(test(attr(deny(warnings))))]

mod timer;

pub use timer::{Timer, TimerKind};

//! nexus: async event dispatch for tokio.
//!
//! Sources of events are written apart from the handlers of events; an [`AsyncEventNexus`] in
//! the middle sends each event where it needs to go. This crate gathers the family:
//! everything of [`nexus_core`] at the root, the ready-made sources under [`sources`], and the
//! buses under [`bus`].
//!
//! nexus is the Rust successor of [Async Nexus](https://pypi.org/project/async-nexus/), an
//! asyncio library for Python: the same model and names. Where these docs say "the original",
//! they mean that library.
//!
//! ```
//! use std::time::Duration;
//! use nexus::sources::{Timer, TimerKind};
//! use nexus::{AsyncEventNexus, Event, EventQueue};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), nexus::NexusError> {
//! let nexus = AsyncEventNexus::new();
//! nexus.add_producer(Timer::new(Duration::from_secs(1), TimerKind::CountUp(3), 7)?)?;
//! nexus.add_handler(7, |e: Event, _q: EventQueue| println!("tick {}", e.payload))?;
//! let running = nexus.start()?;
//! tokio::time::sleep(Duration::from_millis(3500)).await;
//! nexus.stop();
//! running.await.expect("loop task")?;
//! nexus.cleanup().await
//! # }
//! ```
#![doc(test(attr(deny(warnings))))]

pub use nexus_core::*;

/// `#[handler]`, `#[filter]` and `#[event_source]` (see [`nexus_core::handler`]): the same
/// attributes, whose generated code names this crate, `::nexus`. Under another name (a renamed
/// dependency), say so with `crate = "name"`, as in `#[handler(event_type = 1, crate = "events")]`.
pub use nexus_macros::{
    facade_event_source as event_source, facade_filter as filter, facade_handler as handler,
};

/// Ready-made event sources: the [`Timer`](sources::Timer), and adapters from streams,
/// closures and channels.
pub mod sources {
    pub use nexus_sources::*;
}

/// Buses: [`EventFanout`](bus::EventFanout), [`EventDiscarder`](bus::EventDiscarder),
/// [`AsyncEventBoundary`](bus::AsyncEventBoundary).
pub mod bus {
    pub use nexus_bus::*;
}

/// The README's examples, compiled as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

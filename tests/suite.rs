//! Behaviour within one process, one module per section of the original's guide, then faults,
//! properties and the README's own examples. One binary, so that the suite builds and links once.

mod support;

mod api_properties;
mod async_events;
mod bit_mode;
mod boundary;
mod causes;
mod context_managers;
mod docs;
mod event_buses;
mod event_handlers;
mod event_names;
mod event_sources;
mod faults;
mod ingest_all;
mod life_cycle;
mod priority;
mod reliability;
mod send_sync;
mod testing_kit;
mod usage;

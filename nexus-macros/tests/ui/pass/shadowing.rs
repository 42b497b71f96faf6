//! The expansion names nothing that a user's own items could shadow.
#![allow(dead_code, non_camel_case_types)]

mod core {}
mod std {}
mod inventory {}
struct Option;
struct Result;
struct Box;
struct Vec;
struct Some;
struct Ok;
struct Default;

use nexus_core::{Event, EventQueue, NexusError, filter, handler};

#[handler(event_type = [1, 2])]
async fn listed(_event: Event, _queue: EventQueue) {}

#[handler(event_type = 10..20)]
async fn ranged(_event: Event, _queue: EventQueue) -> ::core::result::Result<(), NexusError> {
    ::core::result::Result::Ok(())
}

#[filter(order = -1)]
async fn first(_event: &Event, _queue: &EventQueue) -> bool {
    false
}

// Functions named as the expansion's own bindings.
#[handler(event_type = 30)]
async fn event(_event: Event, _queue: EventQueue) {}

#[filter]
async fn queue(_event: &Event, _queue: &EventQueue) -> bool {
    false
}

#[handler(event_type = 31)]
async fn nexus(_event: Event, _queue: EventQueue) {}

mod filters {
    use nexus_core::{Event, EventQueue, filter};

    #[filter(order = 1)]
    async fn nexus(_event: &Event, _queue: &EventQueue) -> bool {
        false
    }
}

mod sources {
    use nexus_core::{EventProducer, EventSource, ProducerLink, event_source};

    fn nexus() -> ProducerLink {
        ProducerLink::new()
    }

    // `nexus` here is the function above, not the expansion's own binding.
    #[event_source(new = Producer { link: nexus() })]
    struct Producer {
        link: ProducerLink,
    }

    impl EventSource for Producer {}

    impl EventProducer for Producer {
        fn link(&self) -> &ProducerLink {
            &self.link
        }
    }
}

fn main() {
    ::std::assert_eq!(nexus_core::registrations().handlers.len(), 4);
    ::std::assert_eq!(nexus_core::registrations().filters.len(), 3);
    ::std::assert_eq!(nexus_core::registrations().sources.len(), 1);
}

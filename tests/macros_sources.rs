//! `#[event_source]` on each kind of source; `run_registered`-style runs until exhausted.
#![deny(warnings)]

use std::sync::Mutex;

use nexus::{
    BoxStream, Event, EventConverter, EventFactory, EventProducer, EventSource, NexusError,
    ProducerLink, SimpleEventConverter, async_trait, event_source, handler,
};

static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A simple converter giving three events of type 10, made by `Default`.
#[event_source]
#[derive(Default)]
struct Simple {
    given: u64,
}

impl EventSource for Simple {}

#[async_trait]
impl SimpleEventConverter for Simple {
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        if self.given == 3 {
            return Err(NexusError::NoMoreEvents);
        }
        self.given += 1;
        Ok(Event::new(self.given, 10, 0, "simple"))
    }
}

/// A generator converter giving three events of type 20, made by the `new` expression.
#[event_source(new = Generator { count: 3 })]
struct Generator {
    count: i64,
}

impl EventSource for Generator {}

impl EventConverter for Generator {
    fn event_generator(&mut self, factory: EventFactory) -> BoxStream<'_, Event> {
        let count = self.count;
        Box::pin(async_stream::stream! {
            for n in 0..count {
                yield factory.create_event(n, 20);
            }
        })
    }
}

/// A producer pushing three events of type 30, then saying it has finished.
#[event_source]
#[derive(Default)]
struct Producer {
    link: ProducerLink,
}

#[async_trait]
impl EventSource for Producer {
    async fn start(&mut self) -> Result<(), NexusError> {
        let link = self.link.clone();
        tokio::spawn(async move {
            for n in 0..3 {
                let event = link.create_event(n, 30);
                link.distribute_event(event).await.expect("distribute");
            }
            link.finish();
        });
        Ok(())
    }
}

impl EventProducer for Producer {
    fn link(&self) -> &ProducerLink {
        &self.link
    }
}

#[handler(event_type = [10, 20, 30])]
async fn record(event: Event, _queue: nexus::EventQueue) {
    SEEN.lock()
        .unwrap()
        .push(format!("{}:{}", event.event_type, event.payload));
}

#[tokio::test]
async fn every_kind_of_source_is_started_and_drained() {
    nexus::registered()
        .until_exhausted(true)
        .stop_on_signals(false)
        .run()
        .await
        .unwrap();
    let mut seen = SEEN.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            "10:simple",
            "10:simple",
            "10:simple",
            "20:0",
            "20:1",
            "20:2",
            "30:0",
            "30:1",
            "30:2"
        ]
    );
    let sources = nexus::registrations().sources;
    let here = module_path!();
    assert_eq!(
        sources,
        [
            format!("{here}::Generator"),
            format!("{here}::Producer"),
            format!("{here}::Simple")
        ]
    );
}

//! The guide's "Event Sources" section: its `MyEventConverter` (pull mode, state in a field), a
//! generator converter (state in the generator, ids from the nexus), and a producer (push mode)
//! that creates its events through its event factory.
//!
//! ```text
//! cargo run --example event_sources
//! ```

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use nexus::sources::generator;
use nexus::{
    AsyncEventNexus, Event, EventProducer, EventQueue, EventSource, NexusError, ProducerLink,
    SimpleEventConverter, async_trait,
};

/// Where the example's lines go: stdout when run, a buffer when tested.
pub type Out = Arc<dyn Fn(String) + Send + Sync>;

/// The guide's `MyEventConverter`: an event source used in pull mode. The sleep mimics some
/// processing rather than making events as fast as possible.
#[derive(Debug)]
pub struct MyEventConverter {
    /// The last id given out.
    pub id: u64,
}

impl EventSource for MyEventConverter {}

#[async_trait]
impl SimpleEventConverter for MyEventConverter {
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.id += 1;
        Ok(Event::new(self.id, 50, 0, "hi"))
    }
}

/// A producer: it has its own flow of control (a task), creates events through its event
/// factory, and emits them with `distribute_event` once started; then it has finished.
#[derive(Debug, Default)]
pub struct MyEventProducer {
    /// The producer's link to its nexuses, and its event factory.
    pub link: ProducerLink,
    /// How many events it emits.
    pub count: u64,
}

#[async_trait]
impl EventSource for MyEventProducer {
    async fn start(&mut self) -> Result<(), NexusError> {
        let (link, count) = (self.link.clone(), self.count);
        tokio::spawn(async move {
            for n in 0..count {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let event = link.create_event(format!("produced {n}"), 70);
                if let Err(err) = link.distribute_event(event).await {
                    eprintln!("MyEventProducer could not deliver: {err}");
                    break;
                }
            }
            link.finish();
        });
        Ok(())
    }
}

impl EventProducer for MyEventProducer {
    fn link(&self) -> &ProducerLink {
        &self.link
    }
}

/// Runs the three sources for a second, printing what each one sends.
pub async fn run(out: Out) -> Result<(), NexusError> {
    let nexus = AsyncEventNexus::new();
    nexus.register(MyEventConverter { id: 1000 })?;
    nexus.register(generator(|factory| {
        // An async generator: one word every 250 ms (`async_stream::stream!` reads the same).
        futures_util::stream::iter(["one", "two", "three"]).then(move |word| {
            let factory = factory.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(250)).await;
                factory.create_event(word, 60)
            }
        })
    }))?;
    nexus.register(MyEventProducer {
        count: 3,
        ..MyEventProducer::default()
    })?;
    nexus.add_handler(-1, move |event: Event, _queue: EventQueue| {
        out(event.to_string())
    })?;
    let running = nexus.start()?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    nexus.stop();
    running.await.expect("nexus task")?;
    nexus.cleanup().await
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), NexusError> {
    run(Arc::new(|line| println!("{line}"))).await
}

//! The original library's demo, in Rust: every kind of source, a filter, a fanout, a named event
//! type and the teapot and treacle tasks, all feeding one nexus for about seven seconds.
//!
//! ```text
//! cargo run --example async_events
//! ```

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use nexus::bus::EventFanout;
use nexus::sources::{Timer, TimerKind, generator};
use nexus::{
    AsyncEventNexus, Event, EventKind, EventProducer, EventQueue, EventSource, EventType, Handler,
    NexusError, ProducerLink, Selector, SimpleEventConverter, async_trait,
};

/// Where the demo's lines go: stdout when run, a buffer when tested.
pub type Out = Arc<dyn Fn(String) + Send + Sync>;

/// How long the demo runs.
pub const RUN_FOR: Duration = Duration::from_secs(7);

/// The demo's integer event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum DemoEvent {
    /// From the simple converter.
    Hi = 50,
    /// From the generator converter.
    Word = 60,
    /// Fanned out to the ping handler and the default handler.
    Ping = 100,
    /// A random event of the producer.
    Pong = 101,
    /// A random event of the producer.
    Alert = 102,
    /// The timer that fires every 4 s.
    Tick = 200,
    /// The timer that counts up to 7 every 1.5 s.
    Count = 201,
    /// The teapot task's event.
    Teapot = 99,
}

impl From<DemoEvent> for EventType {
    fn from(kind: DemoEvent) -> Self {
        EventType::Int(kind as i64)
    }
}

impl From<DemoEvent> for Selector {
    fn from(kind: DemoEvent) -> Self {
        Selector::Type(kind.into())
    }
}

/// A named event type: a Rust type that states its event name.
#[derive(Debug)]
pub struct Treacle {
    /// How sweet.
    pub sweetness: u32,
}

impl EventKind for Treacle {
    const NAME: &'static str = "treacle";
}

/// A producer that emits a random demo event every 0.5 s (a seeded generator, so a run can be
/// repeated).
#[derive(Debug)]
pub struct RandomProducer {
    link: ProducerLink,
    seed: u64,
    task: Option<tokio::task::JoinHandle<()>>,
}

#[async_trait]
impl EventSource for RandomProducer {
    async fn start(&mut self) -> Result<(), NexusError> {
        let (link, mut rng) = (self.link.clone(), fastrand::Rng::with_seed(self.seed));
        self.task = Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(500));
            ticks.tick().await; // the first tick is immediate
            loop {
                ticks.tick().await;
                let kind = [DemoEvent::Ping, DemoEvent::Pong, DemoEvent::Alert][rng.usize(..3)];
                let event = link.create_event("random", kind);
                if link.distribute_event(event).await.is_err() {
                    break; // the nexus stopped
                }
            }
        }));
        Ok(())
    }

    async fn close(&mut self) -> Result<(), NexusError> {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        Ok(())
    }
}

impl EventProducer for RandomProducer {
    fn link(&self) -> &ProducerLink {
        &self.link
    }
}

/// The guide's simple converter: counts ids from 1000, one event a second.
#[derive(Debug)]
pub struct MyEventConverter {
    id: u64,
}

impl EventSource for MyEventConverter {}

#[async_trait]
impl SimpleEventConverter for MyEventConverter {
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.id += 1;
        Ok(Event::new(self.id, DemoEvent::Hi, 0, "hi"))
    }
}

/// Builds the demo's nexus: sources, a filter, handlers and a fanout.
pub fn build(out: Out, seed: u64) -> Result<AsyncEventNexus, NexusError> {
    let nexus = AsyncEventNexus::new();

    // Sources: a producer, a generator converter, a simple converter and two timers.
    nexus.register(RandomProducer {
        link: ProducerLink::new(),
        seed,
        task: None,
    })?;
    nexus.register(generator(|factory| {
        // An async generator: one word every 2 s (`async_stream::stream!` reads the same).
        futures_util::stream::iter(["alpha", "beta", "gamma"]).then(move |word| {
            let factory = factory.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                factory.create_event(word, DemoEvent::Word)
            }
        })
    }))?;
    nexus.register(MyEventConverter { id: 1000 })?;
    nexus.add_producer(Timer::new(
        Duration::from_secs(4),
        TimerKind::Ongoing,
        DemoEvent::Tick,
    )?)?;
    nexus.add_producer(Timer::new(
        Duration::from_millis(1500),
        TimerKind::CountUp(7),
        DemoEvent::Count,
    )?)?;

    // A filter: the first events are consumed before any handler sees them.
    let o = out.clone();
    nexus.add_filter(move |event: &Event, _queue: &EventQueue| {
        let low = event.id <= 2;
        if low {
            o(format!("filter: consumed low id {}", event.id));
        }
        low
    });

    // A fanout on Ping: the ping handler, then the default handler.
    let o = out.clone();
    let default_handler =
        Handler::new(move |event: Event, _queue: EventQueue| o(format!("default: {event}")));
    let o = out.clone();
    let fanout = EventFanout::new();
    fanout.register(Handler::new(move |event: Event, _queue: EventQueue| {
        o(format!("ping handler: ping {}", event.id))
    }));
    fanout.register(default_handler.clone());
    nexus.add_consumer(DemoEvent::Ping, fanout)?;

    let o = out.clone();
    nexus.add_handler(
        DemoEvent::Teapot,
        move |event: Event, _queue: EventQueue| o(format!("teapot ID: {}", event.id)),
    )?;
    let o = out.clone();
    nexus.add_handler(
        Selector::of::<Treacle>(),
        move |event: Event, _queue: EventQueue| {
            let sweetness = event.payload.get::<Treacle>().map_or(0, |t| t.sweetness);
            o(format!("treacle ID: {} (sweetness {sweetness})", event.id))
        },
    )?;
    let o = out;
    nexus.add_handler(
        [DemoEvent::Tick, DemoEvent::Count],
        move |event: Event, _queue: EventQueue| {
            o(format!("timer {}: {}", event.event_type, event.payload))
        },
    )?;
    nexus.add_consumer(-1, default_handler)?;
    Ok(nexus)
}

/// Runs the demo for [`RUN_FOR`], then stops and cleans up.
pub async fn run(out: Out, seed: u64) -> Result<(), NexusError> {
    let nexus = build(out, seed)?;
    let teapot = {
        let nexus = nexus.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            nexus
                .ingest(Event::new(1001, DemoEvent::Teapot, 0, "TEAPOT!"))
                .await
        })
    };
    let treacle = {
        let nexus = nexus.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let event = Event::named(nexus.next_id(), Treacle { sweetness: 11 });
            nexus.ingest(event).await
        })
    };
    let running = nexus.start()?;
    tokio::time::sleep(RUN_FOR).await;
    nexus.stop();
    running.await.expect("nexus task")?;
    teapot.await.expect("teapot task")?;
    treacle.await.expect("treacle task")?;
    nexus.cleanup().await
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), NexusError> {
    let out: Out = Arc::new(|line| println!("{line}"));
    run(out, 7).await
}

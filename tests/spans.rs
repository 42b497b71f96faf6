//! Each handler call runs in a `tracing` span `dispatch` with the event's id and type and the
//! handler's name.
//!
//! This binary sets a subscriber of its own for the test's thread, so it holds this one test
//! alone: `tracing` caches, for each place a span is made, whether any subscriber wants it, and
//! tests running at once on other threads with no subscriber make that answer a race.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nexus::bus::EventFanout;
use nexus::{AsyncEventNexus, Event, EventQueue, Handler, LoopState};
use tracing_subscriber::layer::SubscriberExt as _;

/// Records, for each span made, its name and fields, by its id.
struct SpanRecorder(Arc<Mutex<HashMap<u64, String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanRecorder {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        let mut fields = Fields(attrs.metadata().name().to_owned());
        attrs.record(&mut fields);
        self.0.lock().unwrap().insert(id.into_u64(), fields.0);
    }
}

/// An event with one handler and nothing else to do, one that passes a filter first, one whose
/// handler is a fanout, and one with two handlers in `multiple` mode.
#[tokio::test]
async fn each_handler_call_runs_in_a_dispatch_span_naming_the_event_and_the_handler() {
    let spans = Arc::new(Mutex::new(HashMap::new()));
    let subscriber = tracing_subscriber::registry().with(SpanRecorder(spans.clone()));
    let _default = tracing::subscriber::set_default(subscriber);

    let nexus = AsyncEventNexus::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (in_handler, known) = (seen.clone(), spans.clone());
    let handler = Handler::new(move |_e: Event, _q: EventQueue| {
        let span = tracing::Span::current()
            .id()
            .and_then(|id| known.lock().unwrap().get(&id.into_u64()).cloned());
        in_handler.lock().unwrap().push(span);
    });
    nexus
        .add_consumer(5, handler.clone().named("lone"))
        .unwrap();
    let fanout = EventFanout::new();
    fanout.register(handler.clone().named("fanned 1"));
    fanout.register(handler.clone().named("fanned 2"));
    nexus.add_consumer(6, fanout).unwrap();
    let running = nexus.start().unwrap();
    while nexus.state() != LoopState::Looping {
        tokio::task::yield_now().await;
    }

    nexus.ingest(Event::new(1, 5, 0, ())).await.unwrap();
    nexus.add_filter(|_e: &Event, _q: &EventQueue| false);
    nexus.ingest(Event::new(2, 5, 0, ())).await.unwrap();
    nexus.ingest(Event::new(3, 6, 0, ())).await.unwrap();

    let several = AsyncEventNexus::builder().multiple(true).build();
    several
        .add_consumer(7, handler.clone().named("first"))
        .unwrap();
    several.add_consumer(7, handler.named("second")).unwrap();
    let running_several = several.start().unwrap();
    while several.state() != LoopState::Looping {
        tokio::task::yield_now().await;
    }
    several.ingest(Event::new(4, 7, 0, ())).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Some(r#"dispatch id=1 event_type=5 handler="lone""#.to_owned()),
            Some(r#"dispatch id=2 event_type=5 handler="lone""#.to_owned()),
            Some(r#"dispatch id=3 event_type=6 handler="fanned 1""#.to_owned()),
            Some(r#"dispatch id=3 event_type=6 handler="fanned 2""#.to_owned()),
            Some(r#"dispatch id=4 event_type=7 handler="first""#.to_owned()),
            Some(r#"dispatch id=4 event_type=7 handler="second""#.to_owned()),
        ]
    );
    nexus.stop();
    several.stop();
    running.await.unwrap().unwrap();
    running_several.await.unwrap().unwrap();
}

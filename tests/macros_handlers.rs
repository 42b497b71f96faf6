//! `#[handler]` and `#[filter]`: every selector form, filters first and in order, the listing.
#![deny(warnings)]

use std::sync::Mutex;

use nexus::{Event, EventQueue, EventType, NexusError, Selector, filter, handler};

static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn seen(line: String) {
    SEEN.lock().unwrap().push(line);
}

#[derive(Debug)]
struct Ping;

impl nexus::EventKind for Ping {
    const NAME: &'static str = "ping";
}

mod kinds {
    pub(crate) const ALARM: i64 = 40;
}

#[handler(event_type = 1)]
async fn one(event: Event, _queue: EventQueue) {
    seen(format!("one:{}", event.id));
}

#[handler(event_type = -1)]
async fn fallback(event: Event, _queue: EventQueue) {
    seen(format!("default:{}", event.id));
}

#[handler(event_type = "log")]
async fn log(event: Event, _queue: EventQueue) {
    seen(format!("log:{}", event.id));
}

#[handler(event_type = Ping)]
async fn ping(event: Event, _queue: EventQueue) -> Result<(), NexusError> {
    seen(format!("ping:{}", event.id));
    Ok(())
}

#[handler(event_type = kinds::ALARM as i64)]
async fn alarm(event: Event, _queue: EventQueue) {
    seen(format!("alarm:{}", event.id));
}

/// Waits first, so that its call outlives the dispatch's first poll.
#[handler(event_type = 1000..=1999)]
async fn thousands(event: Event, queue: EventQueue) -> Result<(), NexusError> {
    tokio::task::yield_now().await;
    seen(format!("thousands:{}", event.id));
    if event.id == 7 {
        queue.put(Event::new(8, 2, 0, "secondary"))?;
    }
    Ok(())
}

#[handler(event_type = [2, 3])]
async fn two_or_three(event: Event, _queue: EventQueue) {
    seen(format!("two_or_three:{}", event.id));
}

#[filter(order = 2)]
async fn drops_empty(event: &Event, _queue: &EventQueue) -> bool {
    seen(format!("drops_empty:{}", event.id));
    event.payload.is_empty()
}

/// Waits before it reads the event, so that its call outlives the dispatch's first poll and
/// reads a copy the call owns. Fails on the payload "refused".
#[filter(order = 1)]
async fn waits_then_reads(event: &Event, _queue: &EventQueue) -> Result<bool, &'static str> {
    tokio::task::yield_now().await;
    seen(format!("waits_then_reads:{}", event.id));
    if event.payload.as_str() == Some("refused") {
        return Err("refused");
    }
    Ok(false)
}

#[filter]
async fn first_filter(event: &Event, _queue: &EventQueue) -> bool {
    seen(format!("first_filter:{}", event.id));
    false
}

#[tokio::test]
async fn every_selector_form_receives_its_events_after_the_filters_in_order() {
    let nexus = nexus::registered().build().unwrap();
    let _loop = nexus.start().unwrap();
    let events = [
        Event::new(1, 1, 0, "x"),
        Event::new(2, 99, 0, "x"),
        Event::new(3, "log", 0, "x"),
        Event::named(4, Ping),
        Event::new(5, kinds::ALARM, 0, "x"),
        Event::new(6, 1500, 0, "x"),
        Event::new(7, 1999, 0, "x"),
        Event::new(9, 3, 0, "x"),
        Event::new(10, 1, 0, ()),
    ];
    for event in events {
        SEEN.lock().unwrap().clear();
        let id = event.id;
        nexus.ingest(event).await.unwrap();
        let lines = SEEN.lock().unwrap().clone();
        let expected_handler = match id {
            1 => vec!["one:1"],
            2 => vec!["default:2"],
            3 => vec!["log:3"],
            4 => vec!["ping:4"],
            5 => vec!["alarm:5"],
            6 => vec!["thousands:6"],
            7 => vec![
                "thousands:7",
                "first_filter:8",
                "waits_then_reads:8",
                "drops_empty:8",
                "two_or_three:8",
            ],
            9 => vec!["two_or_three:9"],
            10 => vec![],
            _ => unreachable!(),
        };
        let mut expected = vec![
            format!("first_filter:{id}"),
            format!("waits_then_reads:{id}"),
            format!("drops_empty:{id}"),
        ];
        expected.extend(expected_handler.into_iter().map(String::from));
        assert_eq!(lines, expected, "event {id}");
    }
    // A filter's error names the filter by its path, and the event.
    let failed = nexus.ingest(Event::new(11, 1, 0, "refused")).await;
    match failed {
        Err(NexusError::Handler {
            handler, id: 11, ..
        }) => assert_eq!(handler, format!("{}::waits_then_reads", module_path!())),
        other => panic!("expected the filter's error, got {other:?}"),
    }
    nexus.stop();

    // The attributes leave the functions callable as they are.
    SEEN.lock().unwrap().clear();
    let queue = nexus.queue().clone();
    one(Event::new(77, 1, 0, ()), queue.clone()).await;
    assert!(drops_empty(&Event::new(78, 1, 0, ()), &queue).await);
    assert_eq!(*SEEN.lock().unwrap(), ["one:77", "drops_empty:78"]);
}

#[test]
fn the_listing_shows_everything_registered() {
    let listing = nexus::registrations();
    let here = module_path!();
    let handler = |selector: Selector, name: &str| (selector, format!("{here}::{name}"));
    let handlers: Vec<(Selector, String)> = listing
        .handlers
        .iter()
        .map(|(s, p)| (s.clone(), p.to_string()))
        .collect();
    assert_eq!(
        handlers,
        [
            handler(Selector::Type(EventType::Int(40)), "alarm"),
            handler(Selector::Default, "fallback"),
            handler(Selector::from("log"), "log"),
            handler(Selector::from(1), "one"),
            handler(Selector::of::<Ping>(), "ping"),
            handler(Selector::Range(1000, 1999), "thousands"),
            handler(Selector::from([2, 3]), "two_or_three"),
        ]
    );
    let filters: Vec<String> = listing
        .filters
        .iter()
        .map(|(o, p)| format!("{o} {p}"))
        .collect();
    assert_eq!(
        filters,
        [
            format!("0 {here}::first_filter"),
            format!("1 {here}::waits_then_reads"),
            format!("2 {here}::drops_empty")
        ]
    );
    assert!(listing.sources.is_empty());
    let text = listing.to_string();
    assert!(
        text.contains(&format!("handler 1000..=1999 -> {here}::thousands\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("filter 2 -> {here}::drops_empty\n")),
        "{text}"
    );
}

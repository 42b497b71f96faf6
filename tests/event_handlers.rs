//! The guide's "Event Handlers" section: filters, type handlers, the default handler,
//! `UnhandledEvent`, the queue of secondary events, and what nexus adds (ranges, `multiple`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{Log, running};
use nexus::{
    AsyncEventNexus, BoxError, Event, EventConsumer, EventKind, EventQueue, EventType, NexusError,
    Selector, async_trait,
};

#[tokio::test]
async fn filters_run_in_registration_order_and_the_first_true_consumes() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    nexus.add_filter(log.passing_filter("f1"));
    let l = log.clone();
    nexus.add_filter(move |e: &Event, _q: &EventQueue| {
        l.push(format!("f2:{}", e.id));
        e.id.is_multiple_of(2) // consumes even ids
    });
    nexus.add_filter(log.passing_filter("f3"));
    nexus.add_handler(5, log.handler("h")).unwrap();
    let _task = running(&nexus).await;

    nexus.ingest(Event::new(2, 5, 0, ())).await.unwrap();
    nexus.ingest(Event::new(3, 5, 0, ())).await.unwrap();
    assert_eq!(log.lines(), ["f1:2", "f2:2", "f1:3", "f2:3", "f3:3", "h:3"]);
}

#[tokio::test]
async fn async_filters_are_awaited() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    nexus.add_filter(|e: &Event, _q: &EventQueue| {
        let id = e.id;
        async move {
            tokio::task::yield_now().await;
            id > 100
        }
    });
    nexus.add_handler(1, log.handler("h")).unwrap();
    let _task = running(&nexus).await;
    nexus.ingest(Event::new(500, 1, 0, ())).await.unwrap();
    nexus.ingest(Event::new(5, 1, 0, ())).await.unwrap();
    assert_eq!(log.lines(), ["h:5"]);
}

#[tokio::test]
async fn a_filter_that_waits_is_resumed_and_the_filters_after_it_run_once() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    nexus.add_filter(log.passing_filter("f1"));
    let l = log.clone();
    nexus.add_filter(move |e: &Event, _q: &EventQueue| {
        let (l, id) = (l.clone(), e.id);
        async move {
            l.push(format!("f2 begins:{id}"));
            tokio::task::yield_now().await;
            l.push(format!("f2 ends:{id}"));
            id == 7 // consumes 7
        }
    });
    nexus.add_filter(log.passing_filter("f3"));
    nexus.add_handler(1, log.handler("h")).unwrap();
    let _task = running(&nexus).await;
    nexus.ingest(Event::new(6, 1, 0, ())).await.unwrap();
    nexus.ingest(Event::new(7, 1, 0, ())).await.unwrap();
    assert_eq!(
        log.lines(),
        [
            "f1:6",
            "f2 begins:6",
            "f2 ends:6",
            "f3:6",
            "h:6",
            "f1:7",
            "f2 begins:7",
            "f2 ends:7"
        ]
    );
}

#[tokio::test]
async fn a_failing_filter_names_itself_and_the_event() {
    let nexus = AsyncEventNexus::new();
    nexus.add_filter(|_e: &Event, _q: &EventQueue| Err::<bool, _>("payload unreadable"));
    nexus
        .add_handler(-1, |_e: Event, _q: EventQueue| {})
        .unwrap();
    let _task = running(&nexus).await;
    let err = nexus.ingest(Event::new(8, 4, 0, ())).await.unwrap_err();
    let NexusError::Handler {
        id,
        event_type,
        handler,
        source,
    } = &err
    else {
        panic!("expected a handler error, got {err:?}");
    };
    assert_eq!((*id, event_type), (8, &EventType::Int(4)));
    assert!(
        handler.contains("a_failing_filter_names_itself"),
        "{handler}"
    );
    assert_eq!(source.to_string(), "payload unreadable");
}

#[tokio::test]
async fn type_handler_then_default_then_unhandled() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    nexus.add_handler(99, log.handler("teapot")).unwrap();
    let _task = running(&nexus).await;

    let err = nexus.ingest(Event::new(7, 42, 0, "x")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "unhandled event 7 of type 42: no filter consumed it and no handler is registered for \
         its type or as default"
    );
    assert_eq!(
        err.into_event().map(|e| e.id),
        Some(7),
        "the event is handed back"
    );

    nexus.add_handler(-1, log.handler("default")).unwrap();
    nexus.ingest(Event::new(1, 99, 0, "x")).await.unwrap();
    nexus.ingest(Event::new(2, 42, 0, "x")).await.unwrap();
    assert_eq!(log.lines(), ["teapot:1", "default:2"]);
}

#[tokio::test]
async fn a_filter_that_consumes_keeps_the_event_from_every_handler() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    nexus.add_filter(|e: &Event, _q: &EventQueue| e.payload.as_str() == Some("invalid"));
    nexus.add_handler(1, log.handler("h")).unwrap();
    nexus.add_handler(-1, log.handler("default")).unwrap();
    let _task = running(&nexus).await;
    nexus.ingest(Event::new(1, 1, 0, "invalid")).await.unwrap();
    nexus.ingest(Event::new(2, 7, 0, "invalid")).await.unwrap();
    nexus.ingest(Event::new(3, 1, 0, "valid")).await.unwrap();
    assert_eq!(log.lines(), ["h:3"]);
}

#[test]
fn a_second_handler_for_a_type_is_an_error_naming_the_type() {
    let nexus = AsyncEventNexus::new();
    nexus
        .add_handler(99, |_e: Event, _q: EventQueue| {})
        .unwrap();
    let err = nexus
        .add_handler(99, |_e: Event, _q: EventQueue| {})
        .unwrap_err();
    assert!(matches!(err, NexusError::DuplicateHandler { .. }));
    assert_eq!(
        err.to_string(),
        "a handler for event type 99 is already registered"
    );

    nexus
        .add_handler(-1, |_e: Event, _q: EventQueue| {})
        .unwrap();
    let err = nexus
        .add_handler(-1, |_e: Event, _q: EventQueue| {})
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a handler for event type default (-1) is already registered"
    );

    nexus
        .add_handler("ping", |_e: Event, _q: EventQueue| {})
        .unwrap();
    let err = nexus
        .add_handler("ping", |_e: Event, _q: EventQueue| {})
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a handler for event type ping is already registered"
    );
}

#[tokio::test]
async fn a_list_registers_for_each_type_or_for_none() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    nexus.add_handler(3, log.handler("three")).unwrap();
    let err = nexus
        .add_handler([1, 2, 3], log.handler("list"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a handler for event type 3 is already registered"
    );
    nexus.add_handler([1, 2], log.handler("list")).unwrap();
    let err = nexus
        .add_handler(vec![4, 4], log.handler("again"))
        .unwrap_err();
    assert!(matches!(err, NexusError::DuplicateHandler { .. }));

    let _task = running(&nexus).await;
    for (id, ty) in [(1, 1), (2, 2), (3, 3)] {
        nexus.ingest(Event::new(id, ty, 0, ())).await.unwrap();
    }
    assert_eq!(log.lines(), ["list:1", "list:2", "three:3"]);
    let err = nexus.ingest(Event::new(4, 4, 0, ())).await.unwrap_err();
    assert!(
        matches!(err, NexusError::UnhandledEvent { .. }),
        "failed list registered nothing"
    );
}

#[tokio::test]
async fn ranges_of_integer_types() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    nexus
        .add_handler(1000..=1999, log.handler("range"))
        .unwrap();
    nexus.add_handler(1500, log.handler("exact")).unwrap();
    nexus.add_handler(-1, log.handler("default")).unwrap();
    let err = nexus
        .add_handler(1900..2100, log.handler("overlap"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a handler for event type 1900..=2099 is already registered"
    );
    let err = nexus
        .add_handler(Selector::Range(5, 4), log.handler("empty"))
        .unwrap_err();
    assert!(matches!(err, NexusError::InvalidArgument { .. }));

    let _task = running(&nexus).await;
    for (id, ty) in [(1, 1000), (2, 1999), (3, 1500), (4, 2000), (5, 999)] {
        nexus.ingest(Event::new(id, ty, 0, ())).await.unwrap();
    }
    assert_eq!(
        log.lines(),
        ["range:1", "range:2", "exact:3", "default:4", "default:5"]
    );
}

#[tokio::test]
async fn multiple_mode_runs_every_handler_of_a_type_in_registration_order() {
    let nexus = AsyncEventNexus::builder().multiple(true).build();
    let log = Log::default();
    nexus.add_handler(1, log.handler("a")).unwrap();
    nexus.add_handler(1, log.handler("b")).unwrap();
    nexus.add_handler(-1, log.handler("d1")).unwrap();
    nexus.add_handler(-1, log.handler("d2")).unwrap();
    let _task = running(&nexus).await;
    nexus.ingest(Event::new(1, 1, 0, ())).await.unwrap();
    nexus.ingest(Event::new(2, 2, 0, ())).await.unwrap();
    assert_eq!(log.lines(), ["a:1", "b:1", "d1:2", "d2:2"]);
}

#[tokio::test]
async fn in_multiple_mode_a_failing_handler_ends_the_event_before_the_next() {
    let nexus = AsyncEventNexus::builder().multiple(true).build();
    let log = Log::default();
    nexus.add_handler(1, log.handler("a")).unwrap();
    let failing = log.handler("b");
    nexus
        .add_handler(1, move |e: Event, q: EventQueue| {
            failing(e, q);
            Err::<(), _>("b failed")
        })
        .unwrap();
    nexus.add_handler(1, log.handler("c")).unwrap();
    let _task = running(&nexus).await;
    let err = nexus.ingest(Event::new(1, 1, 0, ())).await.unwrap_err();
    assert!(matches!(err, NexusError::Handler { id: 1, .. }), "{err}");
    assert_eq!(log.lines(), ["a:1", "b:1"]);
    let stats = nexus.stats();
    assert_eq!((stats.dispatched, stats.failed), (0, 1));
}

async fn async_fn_handler(event: Event, _queue: EventQueue) -> Result<(), std::io::Error> {
    if event.payload.as_str() == Some("fail") {
        return Err(std::io::Error::other("kettle boiled dry"));
    }
    Ok(())
}

struct CountingConsumer(AtomicUsize);

#[async_trait]
impl EventConsumer for CountingConsumer {
    async fn handle(&self, _event: Event, _queue: EventQueue) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn every_kind_of_handler_is_registrable() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    // an async fn
    nexus.add_handler(1, async_fn_handler).unwrap();
    // an async closure (one that captures nothing is `Fn`)
    static ASYNC_CLOSURE_CALLS: AtomicUsize = AtomicUsize::new(0);
    nexus
        .add_handler(2, async |_e: Event, _q: EventQueue| {
            ASYNC_CLOSURE_CALLS.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    // a closure returning a future
    let l = log.clone();
    nexus
        .add_handler(3, move |e: Event, _q: EventQueue| {
            let l = l.clone();
            async move { l.push(format!("future:{}", e.id)) }
        })
        .unwrap();
    // a plain closure, like the seed's `lambda e, q: print(e)`
    let l = log.clone();
    nexus
        .add_handler(4, move |e, _q| l.push(format!("plain:{}", e.id)))
        .unwrap();
    // an EventConsumer object, kept shared to read its count
    let consumer = Arc::new(CountingConsumer(AtomicUsize::new(0)));
    nexus.add_consumer(5, consumer.clone()).unwrap();

    let _task = running(&nexus).await;
    for ty in 1..=5 {
        nexus
            .ingest(Event::new(ty as u64, ty, 0, "ok"))
            .await
            .unwrap();
    }
    assert_eq!(log.lines(), ["future:3", "plain:4"]);
    assert_eq!(ASYNC_CLOSURE_CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(consumer.0.load(Ordering::SeqCst), 1);

    let err = nexus
        .ingest(Event::new(77, 1, 0, "fail"))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("handler "), "{err}");
    assert!(
        err.to_string()
            .ends_with("async_fn_handler failed on event 77 of type 1"),
        "{err}"
    );
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "kettle boiled dry"
    );
}

#[tokio::test]
async fn secondary_events_are_dispatched_in_order_before_ingest_returns() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    let l = log.clone();
    nexus
        .add_handler(1, move |e: Event, q: EventQueue| {
            l.push(format!("1:{}", e.id));
            q.put(Event::new(2, 2, 0, ()))?;
            q.put(Event::new(3, 3, 0, ()))
        })
        .unwrap();
    let l = log.clone();
    nexus
        .add_handler(2, move |e: Event, q: EventQueue| {
            l.push(format!("2:{}", e.id));
            q.put(Event::new(4, 4, 0, ()))
        })
        .unwrap();
    nexus.add_handler([3, 4], log.handler("n")).unwrap();
    let _task = running(&nexus).await;
    nexus.ingest(Event::new(1, 1, 0, ())).await.unwrap();
    assert_eq!(log.lines(), ["1:1", "2:2", "n:3", "n:4"]);
    assert!(nexus.queue().is_empty());
}

#[tokio::test]
async fn an_overfilled_queue_fails_at_once_and_loses_nothing() {
    let nexus = AsyncEventNexus::builder().queue_capacity(3).build();
    let log = Log::default();
    let refused = Log::default();
    let r = refused.clone();
    nexus
        .add_handler(1, move |_e: Event, q: EventQueue| {
            let mut first_error = None;
            for id in 10..15 {
                if let Err(err) = q.put(Event::new(id, 2, 0, ())) {
                    r.push(err.to_string());
                    first_error.get_or_insert(err);
                }
            }
            first_error.map_or(Ok(()), Err)
        })
        .unwrap();
    nexus.add_handler(2, log.handler("secondary")).unwrap();
    let _task = running(&nexus).await;

    let err = nexus.ingest(Event::new(1, 1, 0, ())).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "secondary event 13 of type 2 refused: the event queue is full (3 events)"
    );
    assert_eq!(
        err.into_event().map(|e| e.id),
        Some(13),
        "the refused event is handed back"
    );
    assert_eq!(
        refused.len(),
        2,
        "ids 13 and 14 were handed back to the handler"
    );
    assert_eq!(
        log.lines(),
        ["secondary:10", "secondary:11", "secondary:12"]
    );
}

#[tokio::test(start_paused = true)]
async fn one_event_at_a_time_per_nexus() {
    let nexus = AsyncEventNexus::new();
    let busy = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (b, m) = (busy.clone(), most.clone());
    nexus
        .add_handler(1, move |_e: Event, _q: EventQueue| {
            let (b, m) = (b.clone(), m.clone());
            async move {
                let now = b.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                b.fetch_sub(1, Ordering::SeqCst);
            }
        })
        .unwrap();
    let _task = running(&nexus).await;
    let senders: Vec<_> = (0..8)
        .map(|i| {
            let nexus = nexus.clone();
            tokio::spawn(async move { nexus.ingest(Event::new(i, 1, 0, ())).await })
        })
        .collect();
    for s in senders {
        s.await.unwrap().unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "two handlers ran at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_source_keep_their_order_under_contention() {
    let nexus = AsyncEventNexus::new();
    let seen: Arc<std::sync::Mutex<Vec<(i64, u64)>>> = Arc::default();
    let s = seen.clone();
    nexus
        .add_handler(-1, move |e: Event, _q: EventQueue| {
            s.lock()
                .unwrap()
                .push((e.event_type.as_int().unwrap(), e.id));
        })
        .unwrap();
    let _task = running(&nexus).await;
    let sources: Vec<_> = (0..4)
        .map(|source| {
            let nexus = nexus.clone();
            tokio::spawn(async move {
                for id in 0..2_000 {
                    nexus.ingest(Event::new(id, source, 0, ())).await.unwrap();
                }
            })
        })
        .collect();
    for s in sources {
        s.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 8_000);
    for source in 0..4 {
        let ids: Vec<u64> = seen
            .iter()
            .filter(|(s, _)| *s == source)
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(
            ids,
            (0..2_000).collect::<Vec<_>>(),
            "source {source} out of order"
        );
    }
}

#[tokio::test]
async fn a_handler_ingesting_into_its_own_nexus_does_not_deadlock() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    let weak = nexus.downgrade();
    let l = log.clone();
    nexus
        .add_handler(1, move |e: Event, _q: EventQueue| {
            let (weak, l) = (weak.clone(), l.clone());
            async move {
                let nexus = weak.upgrade().expect("nexus alive");
                nexus.ingest(Event::new(e.id + 1, 2, 0, ())).await?;
                l.push("handler 1 done");
                Ok::<(), NexusError>(())
            }
        })
        .unwrap();
    nexus.add_handler(2, log.handler("2")).unwrap();
    let _task = running(&nexus).await;
    tokio::time::timeout(
        Duration::from_secs(5),
        nexus.ingest(Event::new(1, 1, 0, ())),
    )
    .await
    .expect("re-entrant ingest must not hang")
    .unwrap();
    assert_eq!(log.lines(), ["handler 1 done", "2:2"]);
}

#[tokio::test]
async fn handlers_added_while_running_take_the_next_event() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    nexus.add_handler(-1, log.handler("default")).unwrap();
    let _task = running(&nexus).await;
    nexus.ingest(Event::new(1, 9, 0, ())).await.unwrap();
    nexus.add_handler(9, log.handler("nine")).unwrap();
    nexus.ingest(Event::new(2, 9, 0, ())).await.unwrap();
    assert_eq!(log.lines(), ["default:1", "nine:2"]);
}

#[derive(Debug, PartialEq)]
struct Ping(u32);

impl EventKind for Ping {
    const NAME: &'static str = "ping";
}

#[tokio::test]
async fn named_event_types_route_by_the_name_they_state() {
    let nexus = AsyncEventNexus::builder()
        .error_policy(nexus::ErrorPolicy::Continue)
        .build();
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    nexus
        .add_handler(Selector::of::<Ping>(), move |e: Event, _q: EventQueue| {
            g.lock()
                .unwrap()
                .push((e.id, e.payload.get::<Ping>().map(|p| p.0)));
        })
        .unwrap();
    let _task = running(&nexus).await;
    nexus.ingest(Event::named(1, Ping(42))).await.unwrap();
    // From another process, the name alone arrives.
    nexus
        .ingest(Event::new(2, "ping", 0, "text"))
        .await
        .unwrap();
    // The type's path is not its name.
    let by_path = Event::new(3, std::any::type_name::<Ping>().to_string(), 0, "text");
    nexus.ingest(by_path).await.unwrap();
    assert_eq!(*got.lock().unwrap(), [(1, Some(42)), (2, None)]);
    assert_eq!(nexus.stats().unhandled, 1);
}

/// Filters and handlers that have to wait (here: they yield to the runtime once) resume where
/// they left off: no filter or handler runs twice or is skipped, copies go to every handler, and
/// the secondary events follow in order.
#[tokio::test]
async fn calls_that_wait_resume_where_they_left_off() {
    let nexus = AsyncEventNexus::builder().multiple(true).build();
    let log = Log::default();
    for name in ["f1", "f2"] {
        let l = log.clone();
        nexus.add_filter(move |e: &Event, _q: &EventQueue| {
            let (l, id) = (l.clone(), e.id);
            async move {
                tokio::task::yield_now().await;
                l.push(format!("{name}:{id}"));
                false
            }
        });
    }
    for name in ["h1", "h2", "h3"] {
        let l = log.clone();
        nexus
            .add_handler(5, move |e: Event, q: EventQueue| {
                let l = l.clone();
                async move {
                    if name == "h2" {
                        tokio::task::yield_now().await;
                    }
                    l.push(format!("{name}:{}", e.id));
                    if name == "h3" && e.id < 3 {
                        q.put(Event::new(e.id + 1, 5, 0, ()))?;
                    }
                    Ok::<(), NexusError>(())
                }
            })
            .unwrap();
    }
    let _task = running(&nexus).await;

    nexus.ingest(Event::new(1, 5, 0, ())).await.unwrap();
    let expected: Vec<String> = (1..=3)
        .flat_map(|id| ["f1", "f2", "h1", "h2", "h3"].map(|n| format!("{n}:{id}")))
        .collect();
    assert_eq!(log.lines(), expected);
    assert_eq!(nexus.stats().dispatched, 3);
}

/// A consumer that is a function handler in disguise: its `handle` is never to be called.
struct Disguised;

#[async_trait]
impl EventConsumer for Disguised {
    async fn handle(&self, _event: Event, _queue: EventQueue) -> Result<(), BoxError> {
        panic!("the nexus should call the handler this consumer stands for");
    }

    fn as_handler(&self) -> Option<nexus::Handler> {
        Some(nexus::Handler::new(
            |event: Event, _queue: EventQueue| async move {
                match event.payload.as_str() {
                    Some("fail") => Err(std::io::Error::other("disguise slipped")),
                    _ => Ok(()),
                }
            },
        ))
    }
}

#[tokio::test]
async fn a_consumer_standing_for_a_function_handler_is_called_as_one_and_named_as_itself() {
    let nexus = AsyncEventNexus::new();
    nexus.add_consumer(7, Disguised).unwrap();
    let _task = running(&nexus).await;
    nexus.ingest(Event::new(1, 7, 0, "fine")).await.unwrap();
    let err = nexus.ingest(Event::new(2, 7, 0, "fail")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "handler {} failed on event 2 of type 7",
            std::any::type_name::<Disguised>()
        )
    );
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert_eq!(source.as_deref(), Some("disguise slipped"));
    assert_eq!(nexus.stats().dispatched, 1);
}

//! Causes that travel: an event queued or ingested by a handler says which event led to it and
//! which was the first of the chain, without the handler saying so; a boundary crossing and the
//! reply coming back keep them.

use std::time::Duration;

use crate::support::running;
use nexus::bus::AsyncEventBoundary;
use nexus::sources::ChannelProducer;
use nexus::testing::Probe;
use nexus::{AsyncEventNexus, Cause, Event, EventQueue};

const ORDER: i64 = 1;
const INVOICE: i64 = 2;
const RECEIPT: i64 = 3;
const AUDIT: i64 = 4;

/// The id and cause of each event `probe` recorded under `name`, in order.
fn causes(probe: &Probe, name: &str) -> Vec<(u64, Option<Cause>)> {
    probe
        .events(name)
        .into_iter()
        .map(|e| (e.id, e.cause))
        .collect()
}

#[tokio::test]
async fn a_secondary_event_a_crossing_and_a_reply_carry_their_cause_and_root() {
    let (shop, billing) = (AsyncEventNexus::new(), AsyncEventNexus::new());
    let boundary = AsyncEventBoundary::new(8);
    let probe = Probe::new();

    // The shop: an order queues an invoice, which crosses to billing.
    shop.add_handler(ORDER, |e: Event, q: EventQueue| {
        q.put(Event::new(e.id + 100, INVOICE, 0, "invoice"))
    })
    .unwrap();
    shop.add_consumer(INVOICE, boundary.handler()).unwrap();
    // Billing: each invoice is answered with a receipt, which crosses back.
    billing.add_producer(boundary.producer()).unwrap();
    let answer = probe.wrap("invoice", |e: Event, q: EventQueue| async move {
        q.put(Event::new(e.id + 100, RECEIPT, 0, "receipt"))
    });
    billing.add_handler(INVOICE, answer).unwrap();
    billing
        .add_consumer(RECEIPT, boundary.reply_handler())
        .unwrap();
    shop.add_producer(boundary.reply_producer()).unwrap();
    // Back in the shop, a receipt leads to an audit record ingested into a third nexus.
    let audit = AsyncEventNexus::new();
    audit.add_handler(AUDIT, probe.handler("audit")).unwrap();
    let to_audit = audit.clone();
    let receipt = probe.wrap("receipt", move |e: Event, _q: EventQueue| {
        let audit = to_audit.clone();
        async move {
            audit
                .ingest(Event::new(e.id + 100, AUDIT, 0, "audit"))
                .await
        }
    });
    shop.add_handler(RECEIPT, receipt).unwrap();

    let _b = running(&billing).await;
    let _s = running(&shop).await;
    let _a = running(&audit).await;
    for id in [1, 2] {
        shop.ingest(Event::new(id, ORDER, 0, "order"))
            .await
            .unwrap();
    }
    probe.until_count("audit", 2, Duration::from_secs(10)).await;

    let cause = |id, root| Some(Cause { id, root });
    let seen = |name| causes(&probe, name);
    // The invoice crossed with the cause it was queued with: its order.
    assert_eq!(seen("invoice"), [(101, cause(1, 1)), (102, cause(2, 2))]);
    // The receipt, made on the far side, came back saying which invoice led to it.
    assert_eq!(
        seen("receipt"),
        [(201, cause(101, 1)), (202, cause(102, 2))]
    );
    // Ingested by a handler into another nexus: caused by the receipt, same root.
    assert_eq!(seen("audit"), [(301, cause(201, 1)), (302, cause(202, 2))]);
}

#[tokio::test]
async fn each_secondary_event_of_a_chain_is_caused_by_the_one_whose_handler_queued_it() {
    let nexus = AsyncEventNexus::new();
    let probe = Probe::new();
    // An order queues an invoice, whose handler queues a receipt: three generations.
    nexus
        .add_handler(ORDER, |e: Event, q: EventQueue| {
            q.put(Event::new(e.id + 10, INVOICE, 0, ()))
        })
        .unwrap();
    let invoice = probe.wrap("invoice", |e: Event, q: EventQueue| async move {
        q.put(Event::new(e.id + 10, RECEIPT, 0, ()))
    });
    nexus.add_handler(INVOICE, invoice).unwrap();
    nexus
        .add_handler(RECEIPT, probe.handler("receipt"))
        .unwrap();
    let _task = running(&nexus).await;
    for id in [1, 5] {
        nexus.ingest(Event::new(id, ORDER, 0, ())).await.unwrap();
    }
    let cause = |id, root| Some(Cause { id, root });
    assert_eq!(
        causes(&probe, "invoice"),
        [(11, cause(1, 1)), (15, cause(5, 5))]
    );
    assert_eq!(
        causes(&probe, "receipt"),
        [(21, cause(11, 1)), (25, cause(15, 5))]
    );
}

#[tokio::test]
async fn an_event_from_outside_a_handler_has_no_cause_and_a_stated_one_is_kept() {
    let nexus = AsyncEventNexus::new();
    let probe = Probe::new();
    nexus.add_handler(1, probe.handler("one")).unwrap();
    nexus
        .add_handler(2, |e: Event, q: EventQueue| {
            // Stated by hand: kept. Queued from another thread after the call: not guessed.
            q.put(Event::new(e.id + 1, 1, 0, ()).caused_by(&Event::new(77, 9, 0, ())))?;
            let later = q.clone();
            std::thread::spawn(move || later.put(Event::new(50, 1, 0, ())))
                .join()
                .unwrap()
        })
        .unwrap();
    let _task = running(&nexus).await;
    nexus.ingest(Event::new(1, 1, 0, ())).await.unwrap();
    nexus.ingest(Event::new(10, 2, 0, ())).await.unwrap();
    nexus.ingest(Event::new(20, 1, 0, ())).await.unwrap();
    assert_eq!(
        causes(&probe, "one"),
        [
            (1, None),
            (11, Some(Cause { id: 77, root: 77 })),
            (50, None),
            (20, None),
        ]
    );
}

#[tokio::test]
async fn a_handler_forwarding_its_own_event_does_not_make_it_its_own_cause() {
    let (first, second) = (AsyncEventNexus::new(), AsyncEventNexus::new());
    let probe = Probe::new();
    second.add_handler(5, probe.handler("second")).unwrap();
    let onward = second.clone();
    first
        .add_handler(5, move |e: Event, _q: EventQueue| {
            let onward = onward.clone();
            async move { onward.ingest(e).await }
        })
        .unwrap();
    let _s = running(&second).await;
    let _f = running(&first).await;
    first.ingest(Event::new(8, 5, 0, ())).await.unwrap();
    assert_eq!(probe.events("second")[0].cause, None);
}

/// A producer delivers what is waiting in one run of the nexus's gate: each event of the run
/// still has the cause it had when sent (none, or the one stated), not the event before it.
#[tokio::test]
async fn a_producers_events_delivered_in_one_run_are_not_each_others_cause() {
    let nexus = AsyncEventNexus::new();
    let probe = Probe::new();
    nexus
        .add_handler(
            ORDER,
            probe.wrap("order", |e: Event, q: EventQueue| async move {
                q.put(Event::new(e.id + 100, INVOICE, 0, ()))
            }),
        )
        .unwrap();
    nexus
        .add_handler(INVOICE, probe.handler("invoice"))
        .unwrap();
    let (producer, sender) = ChannelProducer::new(8);
    nexus.add_producer(producer).unwrap();
    for id in 1..=5 {
        let order = Event::new(id, ORDER, 0, ());
        let order = if id == 3 {
            order.caused_by(&Event::new(77, AUDIT, 0, ()))
        } else {
            order
        };
        sender.send(order).await.unwrap();
    }
    // All five wait in the channel when the loop starts: one run takes them.
    let _task = running(&nexus).await;
    probe
        .until_count("invoice", 5, Duration::from_secs(5))
        .await;
    let stated = Some(Cause { id: 77, root: 77 });
    assert_eq!(
        causes(&probe, "order"),
        [(1, None), (2, None), (3, stated), (4, None), (5, None)]
    );
    let invoice = |id, root| (id + 100, Some(Cause { id, root }));
    assert_eq!(
        causes(&probe, "invoice"),
        [
            invoice(1, 1),
            invoice(2, 2),
            invoice(3, 77),
            invoice(4, 4),
            invoice(5, 5)
        ]
    );
}

//! ZeroMQ with the original library itself (async-nexus 1.0.2 from PyPI, with pyzmq): events
//! sent by either side reach the other with every field intact.
//!
//! The Python interpreter is `$NEXUS_PYTHON`, else `python3`; `.ci/run` installs the peer.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus::sources::zmq::{self, Socket};
use nexus::sources::zmq::{ZmqEventReceiver, ZmqEventSender};
use nexus::wire::{self, DecodeLimits};
use nexus::{AsyncEventNexus, Event, EventQueue, EventType, Payload};
use serde_json::json;
use support::trial;

const N: usize = 1_000;
const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/zmq_peer.py");

fn python() -> String {
    std::env::var("NEXUS_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Why the Python peer cannot run here, if it cannot.
fn peer_problem() -> Option<String> {
    support::probe(&python(), &["-c", "import zmq, async_nexus.zmq"])
}

/// Event `i`, by the same rule as `zmq_peer.py`'s `event(i)`.
fn event(i: usize) -> Event {
    let event_type = if i.is_multiple_of(5) {
        EventType::name("named.type")
    } else {
        EventType::Int(100 + (i % 7) as i64)
    };
    let priority = (i % 3) as i32 - 1;
    let payload = match i % 4 {
        0 => Payload::from(format!("text {i} caf\u{e9} \u{2713}")),
        1 => Payload::Int(i as i64 * 1000),
        2 => Payload::value(json!({"n": i, "list": [1, 2.5, "x"], "nested": {"ok": true}})),
        _ => Payload::Empty,
    };
    Event::new(i as u64 + 1, event_type, priority, payload)
}

/// Field by field, reading a JSON payload as JSON.
fn assert_same(got: &Event, expected: &Event) {
    assert_eq!(
        (got.id, &got.event_type, got.priority),
        (expected.id, &expected.event_type, expected.priority)
    );
    match (&got.payload, &expected.payload) {
        (Payload::Value(a), Payload::Value(b)) => assert_eq!(
            a.downcast_ref::<serde_json::Value>(),
            b.downcast_ref::<serde_json::Value>(),
            "event {}",
            got.id
        ),
        (a, b) => assert_eq!(a, b, "event {}", got.id),
    }
}

async fn events_sent_by_the_original_reach_a_rust_nexus_intact() {
    let mut socket = zmq::PullSocket::new();
    let endpoint = socket.bind("tcp://127.0.0.1:0").await.unwrap();
    let port = endpoint.to_string().rsplit(':').next().unwrap().to_owned();

    let nexus = AsyncEventNexus::new();
    let received: Arc<Mutex<Vec<Event>>> = Arc::default();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let done_tx = Mutex::new(Some(done_tx));
    let r = received.clone();
    nexus
        .add_handler(-1, move |e: Event, _q: EventQueue| {
            let mut received = r.lock().unwrap();
            received.push(e);
            if received.len() == N
                && let Some(tx) = done_tx.lock().unwrap().take()
            {
                let _ = tx.send(());
            }
        })
        .unwrap();
    let receiver = ZmqEventReceiver::new(socket);
    let stats = receiver.stats();
    nexus.register(receiver).unwrap();
    let running = nexus.start().unwrap();

    let status = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .args([PEER, "send", &port, &N.to_string()])
            .status()
    })
    .await
    .unwrap()
    .expect("the Python peer runs");
    assert!(status.success(), "the Python sender failed");
    tokio::time::timeout(Duration::from_secs(30), done_rx)
        .await
        .expect("every event arrives")
        .unwrap();
    nexus.stop();
    running.await.unwrap().unwrap();

    let received = received.lock().unwrap();
    for (i, got) in received.iter().enumerate() {
        assert_same(got, &event(i));
    }
    assert_eq!((stats.events(), stats.malformed_total()), (N as u64, 0));
}

async fn events_sent_by_a_rust_nexus_reach_the_original_intact() {
    let mut child = Command::new(python())
        .args([PEER, "receive", &N.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the Python peer runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = tokio::task::block_in_place(|| lines.next().unwrap().unwrap());

    let mut socket = zmq::PushSocket::new();
    socket
        .connect(&format!("tcp://127.0.0.1:{port}"))
        .await
        .unwrap();
    let nexus = AsyncEventNexus::new();
    nexus.add_consumer(-1, ZmqEventSender::new(socket)).unwrap();
    let running = nexus.start().unwrap();
    for i in 0..N {
        nexus.ingest(event(i)).await.unwrap();
    }

    let printed = tokio::task::spawn_blocking(move || {
        let printed: Vec<String> = lines.map(Result::unwrap).collect();
        let status = child.wait().unwrap();
        (printed, status)
    });
    let (printed, status) = tokio::time::timeout(Duration::from_secs(60), printed)
        .await
        .expect("the Python receiver finishes")
        .unwrap();
    assert!(status.success(), "the Python receiver failed");
    assert_eq!(printed.len(), N);
    for (i, line) in printed.iter().enumerate() {
        let got = wire::decode(line.as_bytes(), DecodeLimits::default()).unwrap();
        assert_same(&got, &event(i));
    }
    nexus.stop();
    running.await.unwrap().unwrap();
}

async fn a_payload_without_a_json_form_is_an_error_at_the_sender() {
    #[derive(Debug)]
    struct Opaque;
    let mut socket = zmq::PushSocket::new();
    socket.bind("tcp://127.0.0.1:0").await.unwrap();
    let sender = ZmqEventSender::new(socket);
    let err = sender
        .send(&Event::new(3, 8, 0, Payload::value(Opaque)))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("event 3 of type 8 cannot be encoded"),
        "{err}"
    );
}

/// What a sender writes for an event with a cause: the original's JSON exactly, unless it is
/// told its peers are nexus too; then the cause and root travel, and a nexus reads them back.
async fn causes_cross_zeromq_only_when_the_sender_is_told_to_send_them() {
    let order = Event::new(1, 5, 0, "order");
    let invoice = Event::new(2, 5, 0, "invoice").caused_by(&order);
    let mut sent = Vec::new();
    for with_causes in [false, true] {
        let mut pull = zmq::PullSocket::new();
        let endpoint = pull.bind("tcp://127.0.0.1:0").await.unwrap();
        let mut push = zmq::PushSocket::new();
        push.connect(&endpoint.to_string()).await.unwrap();
        let sender = ZmqEventSender::new(push).with_causes(with_causes);
        sender.send(&invoice).await.unwrap();
        let message = zmq::SocketRecv::recv(&mut pull).await.unwrap();
        sent.push(message.get(0).expect("one frame").to_vec());
    }
    assert_eq!(
        String::from_utf8_lossy(&sent[0]),
        r#"{"id":2,"type":5,"priority":0,"payload":"invoice"}"#,
        "the original's form, which its receiver takes"
    );
    assert_eq!(
        String::from_utf8_lossy(&sent[1]),
        r#"{"id":2,"type":5,"priority":0,"payload":"invoice","cause":1,"root":1}"#
    );
    let back = nexus::wire::decode(&sent[1], nexus::wire::DecodeLimits::default()).unwrap();
    assert_eq!(back.cause, invoice.cause);
}

async fn malformed_messages_are_skipped_and_counted_while_good_ones_arrive() {
    let mut pull = zmq::PullSocket::new();
    let endpoint = pull.bind("tcp://127.0.0.1:0").await.unwrap();
    let receiver = ZmqEventReceiver::new(pull).only(1..=9).max_bytes(256);
    let stats = receiver.stats();
    let nexus = AsyncEventNexus::new();
    let got: Arc<Mutex<Vec<u64>>> = Arc::default();
    let g = got.clone();
    nexus
        .add_handler(-1, move |e: Event, _q: EventQueue| {
            g.lock().unwrap().push(e.id)
        })
        .unwrap();
    nexus.register(receiver).unwrap();
    let running = nexus.start().unwrap();

    let mut push = zmq::PushSocket::new();
    push.connect(&endpoint.to_string()).await.unwrap();
    let messages: Vec<Vec<u8>> = vec![
        br#"{"id": 1, "type": 1, "priority": 0, "payload": "good"}"#.to_vec(),
        b"this is not json".to_vec(),
        br#"{"id": 2, "type": 2, "priority": 0, "payload": "good"}"#.to_vec(),
        br#"{"id": "three", "type": 3, "priority": 0, "payload": null}"#.to_vec(),
        format!(
            r#"{{"id": 4, "type": 4, "priority": 0, "payload": "{}"}}"#,
            "x".repeat(300)
        )
        .into_bytes(),
        br#"{"id": 5, "type": 42, "priority": 0, "payload": "outside 1..=9"}"#.to_vec(),
        vec![0xff, 0xfe, 0x00],
        br#"{"id": 6, "type": 6, "priority": 0, "payload": "good"}"#.to_vec(),
    ];
    for message in messages {
        zmq::SocketSend::send(&mut push, message.into())
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while got.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the good events arrive");
    assert_eq!(*got.lock().unwrap(), [1, 2, 6]);
    assert_eq!(
        nexus.state(),
        nexus::LoopState::Looping,
        "the nexus keeps running"
    );
    use nexus::Malformed::*;
    let counts = [NotJson, WrongField, TooLarge, UnknownType].map(|k| stats.malformed(k));
    assert_eq!(
        counts,
        [2, 1, 1, 1],
        "not JSON (twice), wrong field, too large, unknown type"
    );
    nexus.stop();
    running.await.unwrap().unwrap();
}

async fn strings_from_a_sub_socket_become_events_of_a_set_type_after_the_rewrite_hook() {
    use nexus::sources::zmq::ZmqEventConverter;

    let mut publisher = zmq::PubSocket::new();
    let endpoint = publisher.bind("tcp://127.0.0.1:0").await.unwrap();
    let mut subscriber = zmq::SubSocket::new();
    subscriber.connect(&endpoint.to_string()).await.unwrap();
    subscriber.subscribe("").await.unwrap();

    let nexus = AsyncEventNexus::new();
    let converter = ZmqEventConverter::new(subscriber, 42, nexus.event_factory())
        .rewrite(|text| text.strip_prefix("RX ").map(str::to_owned)); // others are skipped
    let got: Arc<Mutex<Vec<Event>>> = Arc::default();
    let g = got.clone();
    nexus
        .add_handler(42, move |e: Event, _q: EventQueue| {
            g.lock().unwrap().push(e)
        })
        .unwrap();
    nexus.register(converter).unwrap();
    let running = nexus.start().unwrap();

    // A SUB socket misses what was published before it joined: publish until three arrive.
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut n = 0;
        while got.lock().unwrap().len() < 3 {
            let text = if n % 2 == 0 {
                format!("RX hello {n}")
            } else {
                format!("noise {n}")
            };
            zmq::SocketSend::send(&mut publisher, text.into())
                .await
                .unwrap();
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("strings arrive");
    nexus.stop();
    running.await.unwrap().unwrap();

    let got = got.lock().unwrap();
    let ids: Vec<u64> = got.iter().map(|e| e.id).collect();
    assert_eq!(ids[..3], [1, 2, 3], "ids from the nexus's factory");
    for event in got.iter() {
        assert_eq!(event.event_type, EventType::Int(42));
        let text = event.payload.as_str().unwrap();
        assert!(
            text.starts_with("hello "),
            "prefix stripped, noise skipped: {text}"
        );
    }
}

fn main() -> std::process::ExitCode {
    let trials = vec![
        trial!(
            needing,
            events_sent_by_the_original_reach_a_rust_nexus_intact
        ),
        trial!(
            needing,
            events_sent_by_a_rust_nexus_reach_the_original_intact
        ),
        trial!(
            anywhere,
            a_payload_without_a_json_form_is_an_error_at_the_sender
        ),
        trial!(
            anywhere,
            causes_cross_zeromq_only_when_the_sender_is_told_to_send_them
        ),
        trial!(
            anywhere,
            malformed_messages_are_skipped_and_counted_while_good_ones_arrive
        ),
        trial!(
            anywhere,
            strings_from_a_sub_socket_become_events_of_a_set_type_after_the_rewrite_hook
        ),
    ];
    support::run_trials(
        "the Python original",
        "run `pip install async-nexus==1.0.2 pyzmq` and set $NEXUS_PYTHON to that python",
        peer_problem(),
        trials,
    )
}

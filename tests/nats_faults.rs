//! The NATS JetStream boundary under faults, with real processes: a receiving process killed with
//! SIGKILL three times mid-stream, stopped with SIGTERM; nats-server stopped with SIGTERM and with
//! SIGKILL and started again; a publishing process started again with the same origin; the server
//! and the receiver stopped together and started again. Each scenario moves 10,000 events and
//! prints one line: sent, acknowledged, dispatched, duplicates, lost, time.
//!
//! The publishing and receiving processes are this very test binary, run again with the role in
//! `NEXUS_NATS_PEER`: it has a `main` of its own (`harness = false`), which runs the peer when
//! asked to, and the suite otherwise. Where nats-server is missing (outside CI) it says so and
//! ends with an `ignored` summary line. Every wait is bounded.

mod support;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexus::bus::nats::NatsBoundary;
use nexus::{AsyncEventNexus, Event, EventQueue};
use support::{NatsServer, terminate};

const PREFIX: &str = "faults.events";
const STREAM: &str = "FAULTS";
const TYPE: i64 = 9;
const EVENTS: u64 = 10_000;

// ----- the peers, run as child processes ----------------------------------------------------

/// A peer process: `receiver` or `publisher`, as `role` says.
async fn peer(role: String) {
    let url = std::env::var("NEXUS_NATS_URL").expect("NEXUS_NATS_URL");
    let out = PathBuf::from(std::env::var("NEXUS_NATS_OUT").expect("NEXUS_NATS_OUT"));
    let nats = NatsBoundary::connect(&url, PREFIX)
        .await
        .unwrap()
        .jetstream(STREAM)
        .await
        .unwrap();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out)
        .unwrap();
    let file = Arc::new(Mutex::new(file));
    match role.as_str() {
        "receiver" => {
            // Writes each dispatched event's payload, one line each, before it is recorded and
            // acknowledged.
            let nexus = AsyncEventNexus::new();
            let f = file.clone();
            nexus
                .add_handler(TYPE, move |e: Event, _q: EventQueue| {
                    write_line(&f, &e.payload.to_string());
                })
                .unwrap();
            nexus
                .add_producer(
                    nats.durable_subscriber(TYPE, "faults")
                        .ack_wait(Duration::from_secs(2)),
                )
                .unwrap();
            nexus.stop_on_signals();
            nexus.loop_forever().await.unwrap();
            nexus.shutdown(Duration::from_secs(10)).await.unwrap();
        }
        "publisher" => {
            // Writes each event's payload once the server has acknowledged it.
            let tag = std::env::var("NEXUS_NATS_TAG").unwrap();
            let publisher = nats
                .publisher()
                .origin("faults")
                .publish_timeout(Duration::from_secs(60));
            for id in 1..=EVENTS {
                let payload = format!("{tag}-{id}");
                publisher
                    .publish(&Event::new(id, TYPE, 0, payload.clone()))
                    .await
                    .unwrap();
                write_line(&file, &payload);
            }
        }
        other => panic!("unknown peer role {other}"),
    }
}

/// Appends `line` and its newline in one write: a peer killed with SIGKILL leaves either the
/// whole line or nothing, never a part that the next process's first line would run on from.
fn write_line(file: &Mutex<std::fs::File>, line: &str) {
    file.lock()
        .unwrap()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
}

/// Starts this test binary again as a peer; what it says goes to `<role>.log` beside `out`.
fn spawn_peer(role: &str, url: &str, out: &Path, tag: &str) -> Child {
    let said = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.with_file_name(format!("{role}.log")))
        .unwrap();
    Command::new(std::env::current_exe().unwrap())
        .env("NEXUS_NATS_PEER", role)
        .env("NEXUS_NATS_URL", url)
        .env("NEXUS_NATS_OUT", out)
        .env("NEXUS_NATS_TAG", tag)
        .stdout(Stdio::null())
        .stderr(said)
        .spawn()
        .unwrap()
}

// ----- the scenarios ------------------------------------------------------------------------

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits, at most `limit`, until `done` holds; says what it waited for otherwise, with what the
/// peers of the scenario in `dir` said.
fn wait_until(dir: &Path, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            let said: String = ["publisher", "receiver"]
                .iter()
                .map(|role| {
                    let log = std::fs::read_to_string(dir.join(format!("{role}.log")));
                    format!("--- {role}:\n{}\n", log.unwrap_or_default())
                })
                .collect();
            panic!("timed out waiting for {what}\n{said}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A scenario's files and processes.
struct Run {
    name: &'static str,
    dir: PathBuf,
    started: Instant,
    sent: u64,
}

impl Run {
    fn new(name: &'static str) -> Self {
        let dir = std::env::temp_dir().join(format!("nexus-faults-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            name,
            dir,
            started: Instant::now(),
            sent: 0,
        }
    }

    fn dispatched(&self) -> PathBuf {
        self.dir.join("dispatched")
    }

    fn acked(&self) -> PathBuf {
        self.dir.join("acked")
    }

    fn receiver(&self, url: &str) -> Child {
        spawn_peer("receiver", url, &self.dispatched(), "")
    }

    fn publisher(&mut self, url: &str, tag: &str) -> Child {
        self.sent += EVENTS;
        spawn_peer("publisher", url, &self.acked(), tag)
    }

    fn dispatched_count(&self) -> usize {
        lines(&self.dispatched()).len()
    }

    /// Waits until every acknowledged event was dispatched, then a little longer for late
    /// redeliveries, then ends the receiver; prints the scenario's line and checks it.
    fn finish(self, receiver: &mut Child, allowed_duplicates: u64) {
        let acked = lines(&self.acked());
        wait_until(
            &self.dir,
            &format!("{}: every acknowledged event dispatched", self.name),
            Duration::from_secs(120),
            || {
                let dispatched: std::collections::HashSet<String> =
                    lines(&self.dispatched()).into_iter().collect();
                acked.iter().all(|a| dispatched.contains(a))
            },
        );
        // Longer than the ack wait: anything delivered again would be dispatched by now.
        std::thread::sleep(Duration::from_secs(3));
        terminate(receiver);
        let mut counts: HashMap<String, u64> = HashMap::new();
        for line in lines(&self.dispatched()) {
            *counts.entry(line).or_default() += 1;
        }
        let dispatched: u64 = counts.values().sum();
        let duplicates: u64 = counts.values().map(|n| n - 1).sum();
        let lost = acked.iter().filter(|a| !counts.contains_key(*a)).count();
        // Straight to the stream, which the test harness does not capture: the line is seen in
        // the test run's output.
        let _ = writeln!(
            std::io::stderr(),
            "{}: sent {}, acknowledged {}, dispatched {dispatched}, duplicates {duplicates}, lost {lost}, time {:.1} s",
            self.name,
            self.sent,
            acked.len(),
            self.started.elapsed().as_secs_f64()
        );
        assert_eq!(lost, 0, "{}: acknowledged events were lost", self.name);
        assert!(
            duplicates <= allowed_duplicates,
            "{}: {duplicates} dispatched twice, more than the {allowed_duplicates} allowed",
            self.name
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_exit(child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{what} failed: {status}");
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The receiving process killed with SIGKILL three times mid-stream: at most one event per
/// crash is dispatched twice (its dispatch finished, its record not yet written).
fn receiver_killed_three_times(server: &NatsServer) {
    let url = server.url();
    let mut run = Run::new("receiver SIGKILL x3");
    let mut receiver = run.receiver(&url);
    let mut publisher = run.publisher(&url, "a");
    for crash in 1..=3 {
        wait_until(
            &run.dir,
            "the stream to move",
            Duration::from_secs(120),
            || run.dispatched_count() >= crash * 2_500,
        );
        receiver.kill().unwrap();
        receiver.wait().unwrap();
        receiver = run.receiver(&url);
    }
    wait_exit(&mut publisher, "the publisher");
    run.finish(&mut receiver, 3);
}

/// The receiving process stopped with SIGTERM mid-stream and started again: nothing twice.
fn receiver_terminated(server: &NatsServer) {
    let url = server.url();
    let mut run = Run::new("receiver SIGTERM");
    let mut receiver = run.receiver(&url);
    let mut publisher = run.publisher(&url, "b");
    wait_until(
        &run.dir,
        "the stream to move",
        Duration::from_secs(120),
        || run.dispatched_count() >= 5_000,
    );
    terminate(&mut receiver);
    receiver = run.receiver(&url);
    wait_exit(&mut publisher, "the publisher");
    run.finish(&mut receiver, 0);
}

/// nats-server stopped (SIGTERM, or SIGKILL) mid-stream and started again while both peers run.
fn server_restarted(server: &mut NatsServer, kill: bool) {
    let url = server.url();
    let mut run = Run::new(if kill {
        "nats-server SIGKILL"
    } else {
        "nats-server SIGTERM"
    });
    let mut receiver = run.receiver(&url);
    let mut publisher = run.publisher(&url, if kill { "d" } else { "c" });
    wait_until(
        &run.dir,
        "the stream to move",
        Duration::from_secs(120),
        || run.dispatched_count() >= 3_000,
    );
    if kill {
        server.stop();
    } else {
        server.terminate();
    }
    std::thread::sleep(Duration::from_millis(500));
    server.start_again();
    wait_exit(&mut publisher, "the publisher");
    run.finish(&mut receiver, 0);
}

/// The publishing process killed mid-stream and started again with the same origin: its new
/// events (numbered from 1 again) are not taken for the old ones.
fn publisher_restarted(server: &NatsServer) {
    let url = server.url();
    let mut run = Run::new("publisher restarted, same origin");
    let mut receiver = run.receiver(&url);
    let mut first = run.publisher(&url, "e1");
    wait_until(
        &run.dir,
        "half of the first run",
        Duration::from_secs(120),
        || lines(&run.acked()).len() >= 5_000,
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // What the first run sent: what it had published when it was killed, at most one more
    // unacknowledged.
    run.sent = lines(&run.acked()).len() as u64;
    let mut second = run.publisher(&url, "e2");
    wait_exit(&mut second, "the second publisher");
    run.finish(&mut receiver, 0);
}

/// The server stopped while the receiver works through a backlog, then the receiver stopped
/// with SIGTERM; both started again. At most one event twice: the one the receiver had just
/// dispatched when the server went, whose record it could not write before it was stopped.
fn server_and_receiver_restarted(server: &mut NatsServer) {
    let url = server.url();
    let mut run = Run::new("nats-server and receiver restarted");
    let mut publisher = run.publisher(&url, "f");
    wait_exit(&mut publisher, "the publisher");
    let mut receiver = run.receiver(&url);
    wait_until(
        &run.dir,
        "the backlog to move",
        Duration::from_secs(120),
        || run.dispatched_count() >= 3_000,
    );
    server.terminate();
    terminate(&mut receiver);
    server.start_again();
    let mut receiver = run.receiver(&url);
    run.finish(&mut receiver, 1);
}

const SUITE: &str = "jetstream_keeps_every_acknowledged_event_through_crashes_and_restarts";

fn main() {
    if let Ok(role) = std::env::var("NEXUS_NATS_PEER") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        return runtime.block_on(peer(role));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{SUITE}: test");
        return;
    }
    // A name filter (the first argument that is not a flag) that does not match: nothing to run.
    if let Some(filter) = args.iter().find(|a| !a.starts_with('-'))
        && !SUITE.contains(filter.as_str())
    {
        println!("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out");
        return;
    }
    println!("running 1 test");
    match support::nats_server_problem() {
        Some(problem) if !support::in_ci() => {
            println!("test {SUITE} ... ignored, needs nats-server ({problem}); CI runs it");
            println!("test result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out");
            return;
        }
        Some(problem) => panic!("nats-server is required in CI: {problem}"),
        None => {}
    }
    let mut server = NatsServer::start();
    let started = Instant::now();
    receiver_killed_three_times(&server);
    receiver_terminated(&server);
    server_restarted(&mut server, false);
    server_restarted(&mut server, true);
    publisher_restarted(&server);
    server_and_receiver_restarted(&mut server);
    println!("test {SUITE} ... ok");
    println!(
        "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s",
        started.elapsed().as_secs_f64()
    );
}

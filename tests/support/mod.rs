//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

use nexus::{AsyncEventNexus, Event, EventQueue, LoopState};

/// A list of what happened, in order, shared between handlers and the test.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, line: impl Into<String>) {
        self.0.lock().unwrap().push(line.into());
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// A handler that logs `"{tag}:{id}"` for each event it gets.
    pub fn handler(&self, tag: &'static str) -> impl Fn(Event, EventQueue) + Send + Sync + 'static {
        let log = self.clone();
        move |event: Event, _queue: EventQueue| log.push(format!("{tag}:{}", event.id))
    }
}

/// Starts the loop in the background and waits until it is `LOOPING`.
pub async fn running(
    nexus: &AsyncEventNexus,
) -> tokio::task::JoinHandle<Result<(), nexus::NexusError>> {
    let task = nexus.start().expect("start");
    while nexus.state() != LoopState::Looping {
        tokio::task::yield_now().await;
    }
    task
}

/// Whether a test that needs an outside program may run. In CI (`CI=true`) it must: a missing
/// program fails the test. Elsewhere the test is skipped, saying why.
pub fn outside_program_available(what: &str, problem: Option<String>) -> bool {
    let Some(problem) = problem else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is required in CI but unavailable: {problem}");
    }
    eprintln!("skipped: {what} unavailable here ({problem}); CI runs this test");
    false
}

/// A `nats-server` with JetStream on a free loopback port, storing in a directory of its own;
/// killed (and its directory removed) when dropped.
pub struct NatsServer {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl NatsServer {
    /// Starts one, or says why it cannot (see [`outside_program_available`]).
    pub fn start() -> Option<Self> {
        let probe = std::process::Command::new("nats-server")
            .arg("--version")
            .output();
        let problem = match probe {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            Err(err) => Some(format!("nats-server: {err}")),
        };
        if !outside_program_available("nats-server (Debian package nats-server)", problem) {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("nexus-nats-{}-{port}", std::process::id()));
        let child = Self::spawn(port, &dir);
        Some(Self { child, port, dir })
    }

    fn spawn(port: u16, dir: &std::path::Path) -> std::process::Child {
        let child = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not listen in time"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child
    }

    /// The URL to connect to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its store stays).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port, with the same store.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.port, &self.dir);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

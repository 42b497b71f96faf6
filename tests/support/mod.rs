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
        if task.is_finished() {
            let ended = task.await.expect("the loop task");
            panic!("the loop ended before it ran: {ended:?}");
        }
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
        // A port found free can be taken again before the server binds it (tests run in
        // parallel, and a restarted server leaves its port free for a moment): then the server
        // exits, and another test's server would answer. Each server has a name of its own, and
        // a start counts only once that server answers.
        for _ in 0..10 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let dir =
                std::env::temp_dir().join(format!("nexus-nats-{}-{port}", std::process::id()));
            if let Ok(child) = Self::spawn(port, &dir) {
                return Some(Self { child, port, dir });
            }
        }
        panic!("nats-server did not start on any of ten free ports");
    }

    fn name(port: u16) -> String {
        format!("nexus-test-{}-{port}", std::process::id())
    }

    /// Starts a server on `port` and waits until it answers with its own name; an error when it
    /// exits first (the port was taken).
    fn spawn(port: u16, dir: &std::path::Path) -> Result<std::process::Child, String> {
        use std::io::BufRead;
        let name = Self::name(port);
        let mut child = std::process::Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-n",
                &name,
                "-js",
                "-sd",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("nats-server on port {port} exited: {status}"));
            }
            let answered = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|stream| {
                stream.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
                let mut info = String::new();
                std::io::BufReader::new(stream).read_line(&mut info)?;
                Ok(info)
            });
            if let Ok(info) = answered
                && info.contains(&name)
            {
                return Ok(child);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("nats-server on port {port} did not answer in time"));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
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

    /// Stops the server with SIGTERM, as a service manager would, and waits for it to exit.
    pub fn terminate(&mut self) {
        terminate(&mut self.child);
    }

    /// Starts it again on the same port, with the same store (after `stop` or `terminate`).
    pub fn start_again(&mut self) {
        self.child = Self::spawn(self.port, &self.dir)
            .unwrap_or_else(|err| panic!("restarting nats-server: {err}"));
    }

    /// Starts it again on the same port, with the same store.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.port, &self.dir)
            .unwrap_or_else(|err| panic!("restarting nats-server: {err}"));
    }
}

/// Sends SIGTERM to `child` and waits for it to exit (SIGKILL after 30 s).
pub fn terminate(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

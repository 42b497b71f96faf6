//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

use nexus::{AsyncEventNexus, Event, EventQueue, LoopState, NexusStats};

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

    /// A filter that logs `"{tag}:{id}"` for each event it sees, and lets it pass.
    pub fn passing_filter(
        &self,
        tag: &'static str,
    ) -> impl Fn(&Event, &EventQueue) -> bool + Send + Sync + 'static {
        let log = self.clone();
        move |event: &Event, _queue: &EventQueue| {
            log.push(format!("{tag}:{}", event.id));
            false
        }
    }
}

/// How a test's boundary is made: with lanes in arrival order, or ranked by priority (where
/// events of equal priority must behave just the same, closing and shutdown included).
pub type Make = fn(usize) -> nexus::bus::AsyncEventBoundary;

/// A boundary whose lanes are ranked by priority, with a bound on waiting no test reaches.
pub fn ranked(capacity: usize) -> nexus::bus::AsyncEventBoundary {
    nexus::bus::AsyncEventBoundary::with_priority(capacity, std::time::Duration::from_secs(3600))
}

/// Runs the boundary test `$name`, an `async fn(Make)`, with both kinds of lanes, as
/// `$name::in_order` and `$name::ranked`.
#[allow(unused_macros)] // by the suite only
macro_rules! with_both_lanes {
    ($(#[$attr:meta])* $name:ident) => {
        mod $name {
            $(#[$attr])*
            async fn in_order() {
                super::$name(nexus::bus::AsyncEventBoundary::new).await
            }

            $(#[$attr])*
            async fn ranked() {
                super::$name(crate::support::ranked).await
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use with_both_lanes;

/// The counts balance, and `ingested` is exactly what the test sent.
pub fn assert_balanced(stats: &NexusStats, sent: u64) {
    assert!(stats.balanced(), "the counts do not balance: {stats:?}");
    assert_eq!(stats.ingested, sent, "{stats:?}");
}

/// After a panic in whatever fed it events 0 to 4 (of type 1, seen by `probe`'s handler
/// `"seen"`), as event 3 was to be taken: events 0 to 2 were dispatched, the gate was given
/// back, and the nexus takes the next event as before.
pub async fn assert_going_on_after_a_panic_at_3(
    nexus: &AsyncEventNexus,
    probe: &nexus::testing::Probe,
) {
    assert_eq!(probe.ids("seen"), [0, 1, 2]);
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        nexus.ingest(Event::new(9, 1, 0, ())),
    )
    .await
    .expect("the gate was left held")
    .unwrap();
    assert_eq!(probe.ids("seen"), [0, 1, 2, 9]);
    assert_balanced(&nexus.stats(), 4);
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

/// Whether we are in CI (`CI=true`), where a test that needs another program must run, and
/// fails if the program is missing.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Why `program --version` (or the given probe arguments) does not work here, if it does not.
pub fn probe(program: &str, args: &[&str]) -> Option<String> {
    match std::process::Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(err) => Some(format!("{program}: {err}")),
    }
}

/// Why nats-server cannot run here, if it cannot.
pub fn nats_server_problem() -> Option<String> {
    probe("nats-server", &["--version"])
}

/// One test of a binary with a harness of its own (see [`run_trials`]).
pub struct Trial {
    name: &'static str,
    needs_program: bool,
    run: Box<dyn FnOnce() + Send>,
}

impl Trial {
    /// A test that needs the outside program of its binary.
    pub fn needing(name: &'static str, run: impl FnOnce() + Send + 'static) -> Self {
        Self {
            name,
            needs_program: true,
            run: Box::new(run),
        }
    }

    /// A test that runs anywhere.
    pub fn anywhere(name: &'static str, run: impl FnOnce() + Send + 'static) -> Self {
        Self {
            name,
            needs_program: false,
            run: Box::new(run),
        }
    }
}

/// A [`Trial`] of the async test function `$test`, made by `Trial::$kind` (`needing` or
/// `anywhere`), named after the function and run with [`block_on`]: the name a trial reports
/// is always its function's.
#[allow(
    unused_macros,
    reason = "not every binary that has this module runs trials"
)]
macro_rules! trial {
    ($kind:ident, $test:ident) => {
        $crate::support::Trial::$kind(stringify!($test), || $crate::support::block_on($test()))
    };
}
#[allow(
    unused_imports,
    reason = "not every binary that has this module runs trials"
)]
pub(crate) use trial;

/// Runs an async test on a two-worker runtime (the tests of these binaries talk to other
/// processes, in real time).
pub fn block_on(test: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(test)
}

/// The main of a test binary whose tests need an outside program (`program`, installed as
/// `install` says, with `problem` saying why it cannot run here, if it cannot): with the program missing, those tests show as
/// ignored with the reason, except in CI (`CI=true`), where they fail with it.
pub fn run_trials(
    program: &str,
    install: &str,
    problem: Option<String>,
    trials: Vec<Trial>,
) -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let missing = problem.is_some() && !in_ci();
    if let Some(problem) = &problem
        && missing
        && !args.list
    {
        println!(
            "ignored: the tests marked [needs {program}] ({problem}); {install}, or see \
             .ci/run, which runs them"
        );
    }
    let trials = trials
        .into_iter()
        .map(|trial| {
            let run = trial.run;
            let problem = problem.clone().filter(|_| trial.needs_program);
            let required = format!("{program} is required in CI");
            let test = libtest_mimic::Trial::test(trial.name, move || match problem {
                Some(problem) => Err(format!("{required}: {problem}").into()),
                None => {
                    run();
                    Ok(())
                }
            });
            if trial.needs_program {
                test.with_kind(format!("needs {program}"))
                    .with_ignored_flag(missing)
            } else {
                test
            }
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// A `nats-server` with JetStream on a free loopback port, storing in a directory of its own;
/// killed (and its directory removed) when dropped.
pub struct NatsServer {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl NatsServer {
    /// Starts one (the harness has checked that nats-server is installed).
    pub fn start() -> Self {
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
                return Self { child, port, dir };
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

    /// Freezes the server (SIGSTOP): connections stay open, and nothing sent is read.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} nats-server: {sent}");
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

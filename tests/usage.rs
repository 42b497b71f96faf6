//! The guide's "Usage" section, as `examples/usage.rs` runs it.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/usage.rs"]
mod example;

use std::sync::{Arc, Mutex};

fn capture() -> (example::Out, Arc<Mutex<Vec<String>>>) {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = lines.clone();
    (Arc::new(move |line| l.lock().unwrap().push(line)), lines)
}

const EXPECTED: [&str; 6] = [
    "Event(id=1, type=98, priority=0, payload=4)",
    "Event(id=2, type=98, priority=0, payload=3)",
    "teapot ID: 1001",
    "Event(id=3, type=98, priority=0, payload=2)",
    "Event(id=4, type=98, priority=0, payload=1)",
    "Event(id=5, type=98, priority=0, payload=0)",
];

#[tokio::test(start_paused = true)]
async fn blocking_mode_counts_down_serves_the_teapot_and_ends() {
    let (out, lines) = capture();
    example::run_blocking(out).await.unwrap();
    let lines = lines.lock().unwrap();
    assert_eq!(lines[0], "-- loop_forever (blocking mode)");
    assert_eq!(lines[1..], EXPECTED);
}

#[tokio::test(start_paused = true)]
async fn background_mode_does_the_same_from_a_task() {
    let (out, lines) = capture();
    example::run_background(out).await.unwrap();
    let lines = lines.lock().unwrap();
    assert_eq!(lines[0], "-- start (background task)");
    assert_eq!(lines[1..], EXPECTED);
}

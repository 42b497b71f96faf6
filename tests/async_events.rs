//! `examples/async_events.rs`, the demo, run on a paused clock: every part shows in its output.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/async_events.rs"]
mod demo;

use std::sync::{Arc, Mutex};

async fn run_demo(seed: u64) -> Vec<String> {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = lines.clone();
    let out: demo::Out = Arc::new(move |line| l.lock().unwrap().push(line));
    demo::run(out, seed).await.unwrap();
    lines.lock().unwrap().clone()
}

fn count(lines: &[String], prefix: &str) -> usize {
    lines.iter().filter(|l| l.starts_with(prefix)).count()
}

#[tokio::test(start_paused = true)]
async fn the_demo_shows_every_source_filter_and_handler_then_ends() {
    let lines = run_demo(7).await;
    // The filter consumed the first two ids.
    assert_eq!(count(&lines, "filter: consumed low id"), 2, "{lines:#?}");
    // The two timers: every 4 s (once in 7 s), and counting up every 1.5 s (1..=4 in 7 s).
    assert_eq!(count(&lines, "timer 200: "), 1);
    let counts: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("timer 201: "))
        .collect();
    assert_eq!(
        counts,
        [
            "timer 201: 1",
            "timer 201: 2",
            "timer 201: 3",
            "timer 201: 4"
        ]
    );
    // The simple converter, once a second, and the generator's three words.
    assert_eq!(count(&lines, "default: Event(id=100"), 6, "ids 1001..=1006");
    for word in ["alpha", "beta", "gamma"] {
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with(&format!("payload={word})"))),
            "{word}"
        );
    }
    // The teapot and treacle tasks, and the named event type.
    assert!(lines.contains(&"teapot ID: 1001".to_owned()));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("treacle ID: ") && l.ends_with("(sweetness 11)"))
    );
    // The random producer, every 0.5 s from 0.5 s to 6.5 s: 13 events, of which the first two
    // (ids 1 and 2) were filtered out.
    let random = lines
        .iter()
        .filter(|l| l.starts_with("default:") && l.contains("payload=random"));
    assert_eq!(random.count(), 11, "{lines:#?}");
    let pings = count(&lines, "ping handler: ping ");
    // The fanout: each ping reached the ping handler, then the default handler.
    for (i, line) in lines.iter().enumerate() {
        if let Some(id) = line.strip_prefix("ping handler: ping ") {
            assert!(lines[i + 1].starts_with(&format!("default: Event(id={id}, type=100")));
        }
    }
    assert!(pings > 0);
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_run() {
    assert_eq!(run_demo(3).await, run_demo(3).await);
}

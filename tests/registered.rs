//! `examples/registered.rs`, written with attributes, prints what `examples/usage.rs` prints.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/registered.rs"]
mod registered;
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/usage.rs"]
mod usage;

use std::sync::{Arc, Mutex};

#[tokio::test(start_paused = true)]
async fn the_attribute_version_prints_the_same_lines_as_the_usage_example() {
    let usage_lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = usage_lines.clone();
    let out: usage::Out = Arc::new(move |line| l.lock().unwrap().push(line));
    usage::run_blocking(out.clone()).await.unwrap();
    usage::run_background(out).await.unwrap();

    *registered::COLLECTED.lock().unwrap() = Some(Vec::new());
    registered::run().await.unwrap();
    let registered_lines = registered::COLLECTED.lock().unwrap().take().unwrap();

    let usage_lines = usage_lines.lock().unwrap().clone();
    assert_eq!(usage_lines.len(), 14);
    assert_eq!(registered_lines, usage_lines);

    // The test kit builds a nexus of the same registered items for one test, to which a probe
    // can be added: it sees every event, and the handlers print what they printed before.
    *registered::COLLECTED.lock().unwrap() = Some(Vec::new());
    let nexus = nexus::testing::registered_nexus().unwrap();
    let probe = nexus::testing::Probe::new();
    nexus.add_filter(probe.filter("every event", |_e: &nexus::Event| false));
    nexus.loop_until_exhausted().await.unwrap();
    nexus.cleanup().await.unwrap();
    assert_eq!(probe.ids("every event"), [1, 2, 1001, 3, 4, 5]);
    let lines = registered::COLLECTED.lock().unwrap().take().unwrap();
    assert_eq!(lines, usage_lines[1..7]);
}

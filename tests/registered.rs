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
}

//! `examples/boundary.rs`: a logging domain fed by two domains through boundaries, run on a
//! paused clock.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/boundary.rs"]
mod example;

use std::sync::{Arc, Mutex};

#[tokio::test(start_paused = true)]
async fn the_logging_domain_gets_every_record_and_errors_are_acknowledged_to_their_sender() {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = lines.clone();
    example::run(Arc::new(move |line| l.lock().unwrap().push(line)))
        .await
        .unwrap();
    let lines = lines.lock().unwrap().clone();
    let of = |prefix: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    };
    assert_eq!(
        of("log [web]"),
        [
            "log [web] info: job 1 done",
            "log [web] info: job 2 done",
            "log [web] error: job 3 failed",
            "log [web] info: job 4 done",
            "log [web] info: job 5 done",
            "log [web] error: job 6 failed",
        ]
    );
    assert_eq!(
        of("log [db]"),
        [
            "log [db] info: job 1 done",
            "log [db] info: job 2 done",
            "log [db] error: job 3 failed",
            "log [db] info: job 4 done",
        ]
    );
    assert_eq!(
        of("web: acknowledged"),
        [
            "web: acknowledged: job 3 failed (web)",
            "web: acknowledged: job 6 failed (web)"
        ]
    );
    assert_eq!(
        of("db: acknowledged"),
        ["db: acknowledged: job 3 failed (db)"]
    );
}

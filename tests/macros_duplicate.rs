//! Two registered handlers for one event type stop start-up with an error naming both.
#![deny(warnings)]

use nexus::{Event, EventQueue, NexusError, handler};

#[handler(event_type = 5)]
async fn first(_event: Event, _queue: EventQueue) {}

#[handler(event_type = [4, 5])]
async fn second(_event: Event, _queue: EventQueue) {}

#[tokio::test]
async fn the_error_names_both_functions() {
    let err = nexus::registered().build().unwrap_err();
    let here = module_path!();
    let NexusError::DuplicateRegisteredHandler { first, second, .. } = &err else {
        panic!("expected a duplicate error, got {err}");
    };
    assert_eq!(
        (*first, *second),
        (&*format!("{here}::first"), &*format!("{here}::second"))
    );
    assert_eq!(
        err.to_string(),
        format!(
            "handlers {here}::first and {here}::second are both registered for event type \
             [4, 5]: keep one, or build the nexus in `multiple` mode"
        )
    );
    let err = nexus::run_registered().await.unwrap_err();
    assert!(matches!(err, NexusError::DuplicateRegisteredHandler { .. }));
}

#[tokio::test]
async fn multiple_mode_takes_both() {
    let nexus = nexus::registered().multiple(true).build().unwrap();
    assert!(!nexus.has_no_consumers());
}

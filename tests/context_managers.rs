//! The guide's "Context Managers" section: `scope` always runs cleanup.

use crate::support::Log;
use nexus::{
    AsyncEventNexus, Event, EventProducer, EventQueue, EventSource, NexusError, ProducerLink,
    async_trait,
};

struct Closes {
    log: Log,
    link: ProducerLink,
}

#[async_trait]
impl EventSource for Closes {
    async fn close(&mut self) -> Result<(), NexusError> {
        self.log.push("closed");
        Ok(())
    }
}

impl EventProducer for Closes {
    fn link(&self) -> &ProducerLink {
        &self.link
    }
}

fn with_source(nexus: &AsyncEventNexus, log: &Log) -> Result<(), NexusError> {
    nexus.add_producer(Closes {
        log: log.clone(),
        link: ProducerLink::new(),
    })?;
    nexus.add_handler(-1, |_e: Event, _q: EventQueue| {})
}

#[tokio::test]
async fn scope_cleans_up_after_success() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    let value = nexus
        .scope(|nexus| {
            let log = log.clone();
            async move {
                with_source(&nexus, &log)?;
                Ok(42)
            }
        })
        .await
        .unwrap();
    assert_eq!(value, 42);
    assert_eq!(log.lines(), ["closed"]);
    assert!(nexus.has_no_consumers());
}

#[tokio::test]
async fn scope_cleans_up_after_an_error_and_returns_it() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    let err = nexus
        .scope(|nexus| {
            let log = log.clone();
            async move {
                with_source(&nexus, &log)?;
                let task = nexus.start()?;
                nexus.stop();
                task.await.expect("loop task")?;
                nexus.ingest(Event::new(1, 1, 0, ())).await // refused: stopped
            }
        })
        .await
        .unwrap_err();
    assert!(matches!(err, NexusError::NotRunning { .. }), "{err}");
    assert_eq!(log.lines(), ["closed"]);
}

#[tokio::test]
async fn scope_cleans_up_after_a_panic_and_goes_on_unwinding() {
    let nexus = AsyncEventNexus::new();
    let log = Log::default();
    let (n, l) = (nexus.clone(), log.clone());
    let outcome = tokio::spawn(async move {
        n.scope(|nexus| async move {
            with_source(&nexus, &l)?;
            panic!("handler code blew up");
            #[allow(unreachable_code)]
            Ok(())
        })
        .await
    })
    .await;
    assert!(outcome.unwrap_err().is_panic());
    assert_eq!(log.lines(), ["closed"]);
}

#[tokio::test]
async fn scope_refuses_a_used_nexus() {
    let with_sources = AsyncEventNexus::new();
    with_source(&with_sources, &Log::default()).unwrap();
    let err = with_sources.scope(|_| async { Ok(()) }).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "scope entered with a used nexus: it already has event sources"
    );
    assert!(err.is_bad_call());

    let stopped = AsyncEventNexus::new();
    stopped.stop();
    let err = stopped.scope(|_| async { Ok(()) }).await.unwrap_err();
    assert!(matches!(err, NexusError::NotPristine { .. }), "{err}");
}

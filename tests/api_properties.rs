//! Random sequences of API calls (registration, start, stop, cleanup, shutdown, ingest from
//! many tasks) never panic and never hang; misuse gives the documented errors.

use std::time::Duration;

use nexus::{
    AsyncEventNexus, ErrorPolicy, Event, EventQueue, EventSource, NexusError, SimpleEventConverter,
    async_trait,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    AddHandler(i64),
    AddFilter,
    RegisterConverter(u8),
    Start,
    LoopBriefly,
    Stop,
    Cleanup,
    Shutdown,
    Ingest { event_type: i64, tasks: u8 },
    Scope,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (-1i64..4).prop_map(Op::AddHandler),
        Just(Op::AddFilter),
        (0u8..5).prop_map(Op::RegisterConverter),
        Just(Op::Start),
        Just(Op::LoopBriefly),
        Just(Op::Stop),
        Just(Op::Cleanup),
        Just(Op::Shutdown),
        (0i64..5, 1u8..4).prop_map(|(event_type, tasks)| Op::Ingest { event_type, tasks }),
        Just(Op::Scope),
    ]
}

/// `n` events, then exhausted.
struct Few(u8);

impl EventSource for Few {}

#[async_trait]
impl SimpleEventConverter for Few {
    async fn obtain_event(&mut self) -> Result<Event, NexusError> {
        if self.0 == 0 {
            return Err(NexusError::NoMoreEvents);
        }
        self.0 -= 1;
        tokio::task::yield_now().await;
        Ok(Event::new(u64::from(self.0), i64::from(self.0 % 4), 0, ()))
    }
}

/// Whether `err` is one the API documents for misuse or for the events involved.
fn documented(err: &NexusError) -> bool {
    err.is_bad_call()
        || matches!(
            err,
            NexusError::DuplicateHandler { .. }
                | NexusError::UnhandledEvent { .. }
                | NexusError::Handler { .. }
                | NexusError::QueueFull { .. }
        )
}

async fn run(ops: Vec<Op>, policy: ErrorPolicy) {
    let nexus = AsyncEventNexus::builder().error_policy(policy).build();
    let mut loops = Vec::new();
    for op in ops {
        let result: Result<(), NexusError> = match op {
            Op::AddHandler(t) => nexus.add_handler(t, |_e: Event, _q: EventQueue| {}),
            Op::AddFilter => {
                nexus.add_filter(|e: &Event, _q: &EventQueue| e.id.is_multiple_of(5));
                Ok(())
            }
            Op::RegisterConverter(n) => nexus.register(Few(n)),
            Op::Start => nexus.start().map(|task| loops.push(task)),
            Op::LoopBriefly => {
                let brief = tokio::time::timeout(Duration::from_millis(5), nexus.loop_forever());
                match brief.await {
                    Ok(result) => result,
                    Err(_) => Ok(()), // still running when the time was up: cancelled
                }
            }
            Op::Stop => {
                nexus.stop();
                Ok(())
            }
            Op::Cleanup => nexus.cleanup().await,
            Op::Shutdown => nexus.shutdown(Duration::from_millis(50)).await.map(drop),
            Op::Ingest { event_type, tasks } => {
                let senders: Vec<_> = (0..tasks)
                    .map(|i| {
                        let nexus = nexus.clone();
                        tokio::spawn(async move {
                            nexus
                                .ingest(Event::new(u64::from(i), event_type, 0, ()))
                                .await
                        })
                    })
                    .collect();
                let mut first = Ok(());
                for sender in senders {
                    let result = sender.await.expect("an ingest task panicked");
                    if first.is_ok() {
                        first = result;
                    }
                }
                first
            }
            Op::Scope => nexus.scope(|_| async { Ok(()) }).await,
        };
        if let Err(err) = result {
            assert!(documented(&err), "undocumented error: {err:?}");
        }
    }
    nexus.stop();
    for task in loops {
        let ended = task.await.expect("the loop task panicked");
        if let Err(err) = ended {
            assert!(documented(&err), "undocumented loop error: {err:?}");
        }
    }
    nexus.cleanup().await.expect("cleanup at the end");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_api_sequences_never_panic_or_hang(ops in prop::collection::vec(op(), 1..24), continue_policy in any::<bool>()) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let policy = if continue_policy { ErrorPolicy::Continue } else { ErrorPolicy::Propagate };
        let outcome = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), run(ops, policy)).await
        });
        prop_assert!(outcome.is_ok(), "the sequence hung");
    }
}

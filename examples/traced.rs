//! One OpenTelemetry trace across two processes joined through NATS: the `tracing` span in
//! which the near domain ingests an order, the far domain's dispatch of that order, and the
//! receipt the far domain sends back, dispatched in the near domain again.
//!
//! Each process installs `tracing-opentelemetry` over an OpenTelemetry SDK tracer, and the W3C
//! trace-context propagator. nexus, built with its feature `otel`, writes the context of the
//! span an event is published in into the message's headers, and dispatches a received event in
//! a `nexus.receive` span of that trace. Here each handler prints the trace id it runs in; a
//! service gives the tracer provider an exporter (OTLP, for instance) instead.
//!
//! Start a server with JetStream (`nats-server -js`), then, in two terminals:
//!
//! ```text
//! cargo run -p nexus-tests --features nats --example traced -- --role far
//! cargo run -p nexus-tests --features nats --example traced -- --role near
//! ```
//!
//! `--plain` uses plain NATS instead of JetStream; then start the far side first, since plain
//! NATS keeps nothing for a subscriber that is not there yet. `--url` picks the server
//! (default `$NATS_URL`, else `nats://127.0.0.1:4222`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nexus::bus::nats::NatsBoundary;
use nexus::{AsyncEventNexus, Event, EventQueue, LoopState, NexusError};
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// An order, from the near domain to the far one.
pub const ORDER: i64 = 10;
/// A receipt for an order, back from the far domain.
pub const RECEIPT: i64 = 11;
/// How many orders the near domain sends.
pub const ORDERS: u64 = 3;
const PREFIX: &str = "traced.events";
const STREAM: &str = "TRACED";

/// Which side this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sends orders, each in a span of its own, and takes their receipts.
    Near,
    /// Handles orders and answers each with a receipt.
    Far,
}

/// Where the example's lines go: stdout when run, a buffer when tested.
pub type Out = Arc<dyn Fn(String) + Send + Sync>;

/// Sends this process's `tracing` spans to OpenTelemetry, and installs the W3C propagator that
/// nexus writes and reads message headers with. Keep the provider for the life of the process.
pub fn install_tracing() -> SdkTracerProvider {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder().build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("traced"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("no other tracing subscriber in this process");
    provider
}

/// The trace id of `span`, in hex; `none` when it is in no trace.
pub fn trace_of(span: &tracing::Span) -> String {
    let context = span.context();
    let span = context.span();
    let span = span.span_context();
    if span.is_valid() {
        span.trace_id().to_string()
    } else {
        "none".to_owned()
    }
}

async fn boundary(url: &str, plain: bool) -> Result<NatsBoundary, NexusError> {
    let nats = NatsBoundary::connect(url, PREFIX).await?;
    if plain {
        Ok(nats)
    } else {
        nats.jetstream(STREAM).await
    }
}

/// Adds a subscriber for `event_type`: durable under `name` with JetStream.
fn subscribe(
    nexus: &AsyncEventNexus,
    nats: &NatsBoundary,
    plain: bool,
    event_type: i64,
    name: &str,
) -> Result<(), NexusError> {
    if plain {
        nexus.add_producer(nats.subscriber(event_type))
    } else {
        nexus.add_producer(nats.durable_subscriber(event_type, name))
    }
}

/// Starts `nexus`'s loop and returns once it runs (its subscribers are in place).
async fn started(
    nexus: &AsyncEventNexus,
) -> Result<tokio::task::JoinHandle<Result<(), NexusError>>, NexusError> {
    let task = nexus.start()?;
    while nexus.state() != LoopState::Looping && !task.is_finished() {
        tokio::task::yield_now().await;
    }
    Ok(task)
}

/// Ends `nexus` once its loop, stopped by a handler, has returned, and before the process
/// ends, makes sure the server has what was published on plain NATS.
async fn finished(
    nexus: AsyncEventNexus,
    task: tokio::task::JoinHandle<Result<(), NexusError>>,
    nats: &NatsBoundary,
) -> Result<(), NexusError> {
    task.await.expect("the loop task")?;
    nexus.cleanup().await?;
    nats.flush().await
}

/// One side: a nexus that takes `takes` from NATS and publishes `sends` to it as `name`; and a
/// count to call for each event handled, which stops the nexus at the `ORDERS`th.
async fn side(
    url: &str,
    plain: bool,
    (takes, sends, name): (i64, i64, &str),
) -> Result<
    (
        NatsBoundary,
        AsyncEventNexus,
        impl Fn() + Send + Sync + 'static,
    ),
    NexusError,
> {
    let nats = boundary(url, plain).await?;
    let nexus = AsyncEventNexus::new();
    subscribe(&nexus, &nats, plain, takes, name)?;
    nexus.add_consumer(sends, nats.publisher().origin(name))?;
    let (handled, weak) = (AtomicU64::new(0), nexus.downgrade());
    let count = move || {
        if handled.fetch_add(1, Ordering::SeqCst) + 1 == ORDERS
            && let Some(nexus) = weak.upgrade()
        {
            nexus.stop();
        }
    };
    Ok((nats, nexus, count))
}

/// The far domain: handles `ORDERS` orders, answering each with a receipt, then returns.
pub async fn far(url: &str, plain: bool, out: Out) -> Result<(), NexusError> {
    let (nats, nexus, count) = side(url, plain, (ORDER, RECEIPT, "far")).await?;
    let say = out.clone();
    nexus.add_handler(ORDER, move |order: Event, queue: EventQueue| {
        let trace = trace_of(&tracing::Span::current());
        say(format!(
            "far: order {} handled in trace {trace}",
            order.payload
        ));
        // Its cause is the order, and it is published in this dispatch's span.
        let receipt = Event::new(fastrand::u64(..), RECEIPT, 0, order.payload.to_string());
        queue.put(receipt)?;
        count();
        Ok::<(), NexusError>(())
    })?;
    let task = started(&nexus).await?;
    out("far: ready".to_owned());
    finished(nexus, task, &nats).await
}

/// The near domain: sends `ORDERS` orders, each ingested in a span of its own, and returns once
/// every receipt came back.
pub async fn near(url: &str, plain: bool, out: Out) -> Result<(), NexusError> {
    let (nats, nexus, count) = side(url, plain, (RECEIPT, ORDER, "near")).await?;
    let say = out.clone();
    nexus.add_handler(RECEIPT, move |receipt: Event, _queue: EventQueue| {
        let trace = trace_of(&tracing::Span::current());
        say(format!(
            "near: receipt for order {} in trace {trace}",
            receipt.payload
        ));
        count();
    })?;
    let task = started(&nexus).await?;
    for number in 1..=ORDERS {
        let span = tracing::info_span!("order", number);
        out(format!(
            "near: order {number} sent in trace {}",
            trace_of(&span)
        ));
        let order = Event::new(fastrand::u64(..), ORDER, 0, number.to_string());
        nexus.ingest(order).instrument(span).await?;
    }
    finished(nexus, task, &nats).await
}

/// Runs `role`, with plain NATS or JetStream.
pub async fn run(role: Role, url: &str, plain: bool, out: Out) -> Result<(), NexusError> {
    match role {
        Role::Near => near(url, plain, out).await,
        Role::Far => far(url, plain, out).await,
    }
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), NexusError> {
    let usage = || -> ! {
        eprintln!("usage: traced --role near|far [--plain] [--url nats://HOST:PORT]");
        std::process::exit(2)
    };
    let (mut role, mut plain) = (None, false);
    let mut url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--plain" => plain = true,
            "--role" => {
                role = match args.next().as_deref() {
                    Some("near") => Some(Role::Near),
                    Some("far") => Some(Role::Far),
                    _ => usage(),
                }
            }
            "--url" => url = args.next().unwrap_or_else(|| usage()),
            _ => usage(),
        }
    }
    let Some(role) = role else { usage() };
    let provider = install_tracing();
    let ran = run(role, &url, plain, Arc::new(|line| println!("{line}"))).await;
    let _ = provider.shutdown();
    ran
}

//! A logging domain with its own nexus, fed by two other domains through event boundaries.
//!
//! A web domain and a database domain each run their own nexus and do their own work; whenever
//! they have something to log, their handlers queue a `LOG` event. Only `LOG` events cross their
//! boundary into the logging domain, whose nexus stays internal to it: the other domains see
//! nothing but the boundary's handler. The logging domain acknowledges errors, and the
//! acknowledgements travel back through the same boundary.
//!
//! ```text
//! cargo run --example boundary
//! ```

use std::sync::Arc;
use std::time::Duration;

use nexus::bus::AsyncEventBoundary;
use nexus::sources::{Timer, TimerKind};
use nexus::{AsyncEventNexus, Event, EventQueue, NexusError};

/// Where the example's lines go: stdout when run, a buffer when tested.
pub type Out = Arc<dyn Fn(String) + Send + Sync>;

/// A unit of work in the web or database domain.
pub const WORK: i64 = 1;
/// A log record, on its way to the logging domain.
pub const LOG: i64 = 500;
/// The logging domain's answer to an error record of the web domain.
pub const ACK_WEB: i64 = 501;
/// The logging domain's answer to an error record of the database domain.
pub const ACK_DB: i64 = 502;

/// The type of the acknowledgements for a domain's records.
fn ack_type(domain: &str) -> i64 {
    if domain == "web" { ACK_WEB } else { ACK_DB }
}

/// The log record of one domain: `"<domain>: <level>: <text>"`.
#[derive(Debug)]
pub struct Record {
    /// Which domain wrote it.
    pub domain: &'static str,
    /// `info` or `error`.
    pub level: &'static str,
    /// What happened.
    pub text: String,
}

/// A working domain: a timer gives it `ticks` units of work; every third one fails and is
/// logged as an error, the others as info. Acknowledgements come back through its boundary.
fn working_domain(
    name: &'static str,
    interval: Duration,
    ticks: u64,
    logging: &AsyncEventBoundary,
    out: Out,
) -> Result<AsyncEventNexus, NexusError> {
    let nexus = AsyncEventNexus::new();
    nexus.add_producer(Timer::new(interval, TimerKind::CountUp(ticks), WORK)?)?;
    nexus.add_handler(WORK, move |event: Event, queue: EventQueue| {
        let n = event.payload.as_int().unwrap_or_default();
        let (level, text) = if n % 3 == 0 {
            ("error", format!("job {n} failed"))
        } else {
            ("info", format!("job {n} done"))
        };
        let record = Record {
            domain: name,
            level,
            text,
        };
        queue.put(Event::new(event.id, LOG, 0, nexus::Payload::value(record)))
    })?;
    nexus.add_consumer(LOG, logging.handler())?;
    nexus.add_producer(logging.reply_producer())?;
    nexus.add_handler(ack_type(name), move |event: Event, _queue: EventQueue| {
        out(format!("{name}: acknowledged: {}", event.payload))
    })?;
    Ok(nexus)
}

/// The logging domain: prints each record, and acknowledges errors to the domain that sent
/// them, each through its own boundary.
fn logging_domain(
    web: &AsyncEventBoundary,
    db: &AsyncEventBoundary,
    out: Out,
) -> Result<AsyncEventNexus, NexusError> {
    let nexus = AsyncEventNexus::new();
    nexus.add_producer(web.producer())?;
    nexus.add_producer(db.producer())?;
    nexus.add_consumer(ACK_WEB, web.reply_handler())?;
    nexus.add_consumer(ACK_DB, db.reply_handler())?;
    nexus.add_handler(LOG, move |event: Event, queue: EventQueue| {
        let Some(record) = event.payload.get::<Record>() else {
            return Ok(());
        };
        out(format!(
            "log [{}] {}: {}",
            record.domain, record.level, record.text
        ));
        if record.level == "error" {
            let ack = format!("{} ({})", record.text, record.domain);
            queue.put(Event::new(event.id, ack_type(record.domain), 0, ack))?;
        }
        Ok::<(), NexusError>(())
    })?;
    Ok(nexus)
}

/// Runs the three domains until the work is done, then closes the boundaries and stops.
pub async fn run(out: Out) -> Result<(), NexusError> {
    let (web_log, db_log) = (AsyncEventBoundary::new(32), AsyncEventBoundary::new(32));
    let logging = logging_domain(&web_log, &db_log, out.clone())?;
    let web = working_domain("web", Duration::from_millis(200), 6, &web_log, out.clone())?;
    let db = working_domain("db", Duration::from_millis(300), 4, &db_log, out)?;

    let domains = [&logging, &web, &db];
    let mut running = Vec::new();
    for nexus in domains {
        running.push(nexus.start()?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // all the work is done by then
    web_log.close().await?;
    db_log.close().await?;
    for nexus in domains {
        nexus.stop();
    }
    for task in running {
        task.await.expect("nexus task")?;
    }
    for nexus in domains {
        nexus.cleanup().await?;
    }
    Ok(())
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), NexusError> {
    run(Arc::new(|line| println!("{line}"))).await
}

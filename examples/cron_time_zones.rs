//! Cron schedules in time zones: a crontab with `tz=` lines, and a
//! `#[task(cron = ..., tz = ...)]` schedule (feature `tz` of the
//! `graphile-worker` crate).
//!
//! ```sh
//! cargo run --example cron_time_zones
//! ```
//!
//! The program prints when each schedule fires next, in UTC and in its own
//! zone, then runs a worker until the every-minute schedule has added and
//! run its first job (at most about a minute) and exits. No database needs
//! to be configured (a throwaway PostgreSQL, or `DATABASE_URL`).
//!
//! A zone's clock changes are handled: a local time skipped in spring fires
//! once at the first minute after the gap, and a repeated one in autumn
//! fires in its first pass only.

use std::time::Duration;

use chrono::Utc;
use graphile_worker::{JobContext, Worker, parse_crontab, task};
use tokio::sync::mpsc;

/// Nine o'clock on weekdays in Paris, whatever the offset from UTC.
#[task(cron = "0 9 * * 1-5", tz = "Europe/Paris")]
async fn morning_report(ctx: JobContext) {
    println!("  morning report (job {})", ctx.job_id());
}

/// Runs every minute from the crontab below.
#[task]
async fn tick(ctx: JobContext, zone: String) -> Result<(), String> {
    let ticks = ctx
        .data::<mpsc::UnboundedSender<String>>()
        .map_err(|e| e.to_string())?;
    ticks
        .send(format!("tick in {zone} (job {})", ctx.job_id()))
        .map_err(|e| e.to_string())
}

/// Lines: pattern, task, options after `?` (`tz=` is the zone, `id=` the
/// schedule's name), then a JSON5 payload.
const CRONTAB: &str = "\
# Every minute, read in India's zone (UTC+05:30): the same minutes as UTC.
* * * * * tick ?id=tick_kolkata&tz=Asia/Kolkata {zone: 'Asia/Kolkata'}
# Half past one at night in New York: skipped by the spring change, so it
# fires at 03:00 local that day; in November it fires once, not twice.
30 1 * * * tick ?id=nightly_new_york&tz=America/New_York {zone: 'America/New_York'}
";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = graphile_worker_dev::fresh_database().await;
    let (ticks, mut ticked) = mpsc::unbounded_channel::<String>();
    let worker = Worker::from_registry()
        .database_url(&db.url)
        .crontab(CRONTAB)
        .data(ticks)
        .handle_signals(false)
        .init()
        .await?;

    let now = Utc::now();
    println!("Next firings after {}:", now.format("%Y-%m-%d %H:%M UTC"));
    for item in worker.cron_items() {
        let zone = item
            .options
            .time_zone
            .as_ref()
            .map(|z| z.to_string())
            .unwrap_or_else(|| "UTC".into());
        let mut after = now;
        let mut next = Vec::new();
        for _ in 0..3 {
            let Some(at) = item.next_fire_after(after) else {
                break;
            };
            next.push(at.format("%Y-%m-%d %H:%M UTC").to_string());
            after = at;
        }
        println!("  {} ({zone}): {}", item.identifier, next.join(", "));
    }
    // Parsing alone, without a worker, reports bad lines with their number.
    let bad = parse_crontab("0 25 * * * tick").unwrap_err();
    println!("A bad line is refused: {bad}");

    let running = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run().await }
    });
    println!("Waiting for the next minute's tick...");
    let tick = tokio::time::timeout(Duration::from_secs(90), ticked.recv())
        .await?
        .ok_or("the worker stopped")?;
    println!("  {tick}");
    worker.shutdown_handle().shutdown();
    running.await??;
    Ok(())
}

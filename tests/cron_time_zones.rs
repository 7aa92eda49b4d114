//! Cron in local time against a real database: the scheduler, on a manual
//! clock, adds the jobs of a `?tz=Europe/Paris` line at Paris times through
//! both daylight-saving changes of 2025, live and in backfill; a task's
//! `#[task(cron, tz)]` reaches the worker's schedules; an unknown zone stops
//! the worker at start with the task's name.

mod common;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, TimeZone, Utc};
use common::migrated;
use graphile_worker::testing::{Clock, CronEvent, ManualClock, run_scheduler_for_tests};
use graphile_worker::{JobContext, TaskError, Worker, parse_crontab, task};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

const SCHEMA: &str = "graphile_worker";
const WAIT: Duration = Duration::from_secs(20);

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

struct Scheduler {
    events: mpsc::UnboundedReceiver<CronEvent>,
    clock: ManualClock,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Scheduler {
    async fn start(pool: &PgPool, crontab: &str, now: DateTime<Utc>) -> Scheduler {
        let items = parse_crontab(crontab).unwrap();
        let clock = ManualClock::new(now);
        let (events_tx, events) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (pool, manual) = (pool.clone(), Clock::Manual(clock.clone()));
        let task = tokio::spawn(async move {
            run_scheduler_for_tests(pool, SCHEMA, items, manual, shutdown_rx, events_tx)
                .await
                .unwrap();
        });
        let mut scheduler = Scheduler {
            events,
            clock,
            shutdown,
            task,
        };
        scheduler
            .wait_for("start", |e| matches!(e, CronEvent::Started { .. }))
            .await;
        scheduler
    }

    async fn wait_for(&mut self, what: &str, mut pick: impl FnMut(&CronEvent) -> bool) {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let event = self.events.recv().await.expect("scheduler stopped");
                let hit = pick(&event);
                seen.push(event);
                if hit {
                    return;
                }
            }
        })
        .await;
        if found.is_err() {
            panic!("timed out waiting for {what}; saw {seen:#?}");
        }
    }

    /// Moves the clock minute by minute from `from` to `to` (inclusive),
    /// waiting for the scheduler to process each (a `* * * * *` line makes
    /// every minute due).
    async fn live_through(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) {
        let mut minute = from;
        while minute <= to {
            self.clock.set(minute + TimeDelta::milliseconds(1));
            self.wait_for(
                &format!("minute {minute}"),
                |e| matches!(e, CronEvent::Scheduled { minute: m, .. } if *m == minute),
            )
            .await;
            minute += TimeDelta::minutes(1);
        }
    }

    async fn stop(self) {
        self.shutdown.send_replace(true);
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("scheduler stops")
            .expect("scheduler task");
    }
}

/// `(run_at, _cron.ts, _cron.backfilled)` of each job of `task`, oldest
/// first.
async fn jobs_of(pool: &PgPool, task: &str) -> Vec<(DateTime<Utc>, String, bool)> {
    let rows: Vec<(DateTime<Utc>, serde_json::Value)> = sqlx::query_as(
        "select j.run_at, j.payload from graphile_worker._private_jobs j \
         join graphile_worker._private_tasks t on t.id = j.task_id \
         where t.identifier = $1 order by j.run_at, j.id",
    )
    .bind(task)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(run_at, payload)| {
            let ts = payload["_cron"]["ts"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let backfilled = payload["_cron"]["backfilled"].as_bool().unwrap_or_default();
            (run_at, ts, backfilled)
        })
        .collect()
}

fn live(at: DateTime<Utc>) -> (DateTime<Utc>, String, bool) {
    (at, at.to_rfc3339_opts(SecondsFormat::Millis, true), false)
}

const PARIS: &str = "* * * * * tick\n\
                     30 2 * * * half_past_two ?tz=Europe%2FParis\n\
                     */15 2 * * * quarters_of_two ?tz=Europe/Paris\n\
                     0 4 * * * four ?tz=Europe/Paris\n\
                     30 * * * * utc_half_hours\n";

#[tokio::test]
async fn the_skipped_hour_of_spring_fires_once_at_three() {
    let (_db, pool, _utils) = migrated().await;
    // 2025-03-30: at 01:00 UTC Paris goes from 02:00 CET to 03:00 CEST.
    let mut scheduler = Scheduler::start(&pool, PARIS, utc(2025, 3, 30, 0, 28)).await;
    scheduler
        .live_through(utc(2025, 3, 30, 0, 29), utc(2025, 3, 30, 2, 1))
        .await;
    scheduler.stop().await;

    // 02:30 never happens in Paris that night: it runs once, at 03:00 local.
    let at_three = live(utc(2025, 3, 30, 1, 0));
    assert_eq!(
        jobs_of(&pool, "half_past_two").await,
        std::slice::from_ref(&at_three)
    );
    // Four quarters fall in the gap, and make one run.
    assert_eq!(jobs_of(&pool, "quarters_of_two").await, [at_three]);
    // 04:00 CEST is 02:00 UTC (it was 03:00 UTC the day before).
    assert_eq!(jobs_of(&pool, "four").await, [live(utc(2025, 3, 30, 2, 0))]);
    // A line without tz= keeps UTC.
    assert_eq!(
        jobs_of(&pool, "utc_half_hours").await,
        [live(utc(2025, 3, 30, 0, 30)), live(utc(2025, 3, 30, 1, 30))]
    );
}

#[tokio::test]
async fn the_repeated_hour_of_autumn_fires_once_in_its_first_pass() {
    let (_db, pool, _utils) = migrated().await;
    // 2025-10-26: at 01:00 UTC Paris goes from 03:00 CEST back to 02:00 CET,
    // so 02:00-02:59 local happens twice.
    let mut scheduler = Scheduler::start(&pool, PARIS, utc(2025, 10, 25, 23, 58)).await;
    scheduler
        .live_through(utc(2025, 10, 25, 23, 59), utc(2025, 10, 26, 3, 1))
        .await;
    scheduler.stop().await;

    assert_eq!(
        jobs_of(&pool, "half_past_two").await,
        [live(utc(2025, 10, 26, 0, 30))]
    );
    assert_eq!(
        jobs_of(&pool, "quarters_of_two").await,
        [0, 15, 30, 45].map(|m| live(utc(2025, 10, 26, 0, m)))
    );
    // 04:00 CET is 03:00 UTC.
    assert_eq!(
        jobs_of(&pool, "four").await,
        [live(utc(2025, 10, 26, 3, 0))]
    );
    assert_eq!(jobs_of(&pool, "utc_half_hours").await.len(), 3);
}

#[tokio::test]
async fn backfill_reads_the_zone_too() {
    let (_db, pool, _utils) = migrated().await;
    let crontab = "30 2 * * * filled ?tz=Europe/Paris&fill=2h\n\
                   30 2 * * * filled_utc ?fill=2h\n";
    // Known from 00:10 UTC on 2025-03-30; the workers are down until 02:50.
    Scheduler::start(&pool, crontab, utc(2025, 3, 30, 0, 10))
        .await
        .stop()
        .await;
    Scheduler::start(&pool, crontab, utc(2025, 3, 30, 2, 50))
        .await
        .stop()
        .await;

    let at = utc(2025, 3, 30, 1, 0);
    assert_eq!(
        jobs_of(&pool, "filled").await,
        [(at, at.to_rfc3339_opts(SecondsFormat::Millis, true), true)]
    );
    let at = utc(2025, 3, 30, 2, 30);
    assert_eq!(
        jobs_of(&pool, "filled_utc").await,
        [(at, at.to_rfc3339_opts(SecondsFormat::Millis, true), true)]
    );
}

/// Runs at nine in Tokyo, on weekdays.
#[task(cron = "0 9 * * 1-5", tz = "Asia/Tokyo")]
async fn tokyo_standup(_ctx: JobContext) -> Result<(), TaskError> {
    Ok(())
}

/// Names a zone that does not exist.
#[task(cron = "0 9 * * *", tz = "Asia/Atlantis")]
async fn lost_city(_ctx: JobContext) -> Result<(), TaskError> {
    Ok(())
}

#[tokio::test]
async fn a_task_attribute_zone_reaches_the_workers_schedules() {
    let (_db, pool, _utils) = migrated().await;
    let worker = Worker::from_registry()
        .only(&["tokyo_standup"])
        .pg_pool(pool.clone())
        .handle_signals(false)
        .init()
        .await
        .unwrap();
    let items = worker.cron_items();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].identifier, "tokyo_standup");
    let zone = items[0].options.time_zone.expect("a time zone");
    assert_eq!(zone.name(), "Asia/Tokyo");
    // Friday 2025-06-06 12:00 UTC is 21:00 in Tokyo: next is Monday 09:00
    // JST, Monday 00:00 UTC.
    assert_eq!(
        items[0].next_fire_after(utc(2025, 6, 6, 12, 0)),
        Some(utc(2025, 6, 9, 0, 0))
    );

    let err = Worker::from_registry()
        .only(&["lost_city"])
        .pg_pool(pool.clone())
        .handle_signals(false)
        .init()
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("task `lost_city` (defined at tests/cron_time_zones.rs:"),
        "{message}"
    );
    assert!(
        message.ends_with(
            "has an unusable cron time zone: unknown time zone \"Asia/Atlantis\": use an IANA name such as \"Europe/Paris\" or \"UTC\" (names are case-sensitive); fix its #[task(tz = ...)]"
        ),
        "{message}"
    );
}

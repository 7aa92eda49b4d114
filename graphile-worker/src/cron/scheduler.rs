//! The cron scheduler: records which identifiers it knows, backfills missed
//! minutes at start, then schedules every minute as it comes.
//!
//! Coordination is graphile-worker's: one row per identifier in
//! `_private_known_crontabs`, and one statement per minute that advances the
//! row's `last_execution` only if it is older than that minute and adds jobs
//! only for the identifiers it advanced. Whoever gets there first, Node or
//! Rust, schedules the minute; everyone else adds nothing.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};

use super::clock::Clock;
use super::crontab::CronItem;
use super::pattern::floor_to_minute;
use crate::error::Error;
use crate::events::{Events, WorkerEvent};
use crate::schema::Schema;
use crate::sql::Db;

const ONE_MINUTE: TimeDelta = TimeDelta::minutes(1);
/// Timers fire this long after the minute, so the clock shows the new
/// minute when they do.
const TIMER_SLACK: TimeDelta = TimeDelta::milliseconds(1);
/// Restart delays after an error: 200 ms growing by half each time, capped
/// at a minute, then scaled by a random factor in [0.5, 1.5).
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// What the scheduler is doing, for tests and diagnostics.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CronEvent {
    /// A cycle starts (at start-up and after each error).
    Starting {
        /// The clock at the start of the cycle.
        start: DateTime<Utc>,
    },
    /// Registration and backfill are done; the minute loop begins.
    Started {
        /// The clock at the start of the cycle.
        start: DateTime<Utc>,
    },
    /// A minute was processed, live or backfilled.
    Scheduled {
        /// The minute.
        minute: DateTime<Utc>,
        /// Whether it was a backfill.
        backfilled: bool,
        /// Identifiers due in that minute.
        due: Vec<String>,
        /// Identifiers for which this scheduler added a job (the others had
        /// already been scheduled by someone).
        added: Vec<String>,
    },
    /// The timer fired before its minute (the clock went backwards).
    PrematureTimer {
        /// The minute the timer was for.
        expected: DateTime<Utc>,
        /// The clock when it fired.
        now: DateTime<Utc>,
    },
    /// The timer fired after its minute had passed; missed minutes follow.
    OverdueTimer {
        /// The minute the timer was for.
        expected: DateTime<Utc>,
        /// The clock when it fired.
        now: DateTime<Utc>,
    },
    /// A cycle failed and restarts after `delay`.
    Error {
        /// Consecutive failures so far.
        attempt: u32,
        /// The wait before the restart.
        delay: Duration,
        /// The error.
        message: String,
    },
}

/// Runs cron for `items` until `shutdown` becomes true (or its sender is
/// dropped). Never returns an error and never gives up: any failure is
/// logged and the whole cycle, backfill included, restarts after a growing
/// delay (200 ms × 1.5ⁿ, at most 60 s, with jitter).
pub(crate) async fn run_scheduler(
    db: Db,
    items: Vec<CronItem>,
    clock: Clock,
    shutdown: watch::Receiver<bool>,
    observers: Events,
) {
    let mut scheduler = Scheduler::new(db, items, clock, None);
    scheduler.observers = observers;
    scheduler.run(shutdown).await;
}

#[cfg_attr(not(feature = "testing"), allow(dead_code))]
/// Runs the scheduler as the worker does, for integration tests: checks
/// the schema name, and reports [`CronEvent`]s on `events`.
pub async fn run_scheduler_for_tests(
    pool: PgPool,
    schema: &str,
    items: Vec<CronItem>,
    clock: Clock,
    shutdown: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<CronEvent>,
) -> Result<(), Error> {
    let schema = Schema::new(schema);
    schema.validate()?;
    Scheduler::new(Db::new(pool, schema), items, clock, Some(events))
        .run(shutdown)
        .await;
    Ok(())
}

struct Scheduler {
    db: Db,
    items: Vec<CronItem>,
    clock: Clock,
    events: Option<mpsc::UnboundedSender<CronEvent>>,
    /// The worker's lifecycle observers.
    observers: Events,
}

/// Why a cycle ended.
enum Stop {
    Shutdown,
    Failed(sqlx::Error),
}

impl From<sqlx::Error> for Stop {
    fn from(e: sqlx::Error) -> Self {
        Stop::Failed(e)
    }
}

impl Scheduler {
    fn new(
        db: Db,
        mut items: Vec<CronItem>,
        clock: Clock,
        events: Option<mpsc::UnboundedSender<CronEvent>>,
    ) -> Self {
        // Callers refuse duplicate identifiers up front; if one slips
        // through, scheduling it twice in one statement would fail every
        // minute, so only its first item is kept.
        let mut seen = HashSet::new();
        items.retain(|item| {
            let first = seen.insert(item.identifier.clone());
            if !first {
                tracing::error!(
                    identifier = %item.identifier,
                    task = %item.task,
                    "two cron items share this identifier; only the first one is scheduled"
                );
            }
            first
        });
        Scheduler {
            db,
            items,
            clock,
            events,
            observers: Events::default(),
        }
    }

    fn emit(&self, event: CronEvent) {
        if let Some(events) = &self.events {
            // A test that stopped listening is not our problem.
            let _ = events.send(event);
        }
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        if self.items.is_empty() {
            return;
        }
        let mut failures: u32 = 0;
        loop {
            match self.cycle(&mut failures, &mut shutdown).await {
                Stop::Shutdown => return,
                Stop::Failed(error) => {
                    failures = failures.saturating_add(1);
                    let delay = retry_delay(failures - 1);
                    tracing::error!(
                        %error,
                        attempt = failures,
                        delay_ms = delay.as_millis() as u64,
                        "cron hit an error; restarting"
                    );
                    self.emit(CronEvent::Error {
                        attempt: failures,
                        delay,
                        message: error.to_string(),
                    });
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown_requested(&mut shutdown) => return,
                    }
                }
            }
        }
    }

    /// One cycle: register, backfill, then the minute loop until shutdown or
    /// an error.
    async fn cycle(&self, failures: &mut u32, shutdown: &mut watch::Receiver<bool>) -> Stop {
        if *shutdown.borrow() {
            return Stop::Shutdown;
        }
        let start = self.clock.now();
        self.emit(CronEvent::Starting { start });
        // Statements are raced with shutdown so that stopping is prompt even
        // when the database hangs. That is safe: each statement is atomic,
        // and one that did commit is not repeated by anyone.
        tokio::select! {
            result = self.register_and_backfill(start) => {
                if let Err(e) = result {
                    return Stop::Failed(e);
                }
            }
            () = shutdown_requested(shutdown) => return Stop::Shutdown,
        }
        self.emit(CronEvent::Started { start });

        let mut next = round_up_to_minute(start);
        loop {
            let Some(fire_at) = next.checked_add_signed(TIMER_SLACK) else {
                // The end of time: nothing left to schedule.
                shutdown_requested(shutdown).await;
                return Stop::Shutdown;
            };
            tokio::select! {
                () = self.clock.sleep_until(fire_at) => {}
                () = shutdown_requested(shutdown) => return Stop::Shutdown,
            }
            let now = self.clock.now();
            let current = floor_to_minute(now);
            if current < next {
                tracing::debug!(%next, %now, "cron timer fired early (clock moved back?); re-arming");
                self.emit(CronEvent::PrematureTimer {
                    expected: next,
                    now,
                });
                continue;
            }
            if current > next {
                tracing::debug!(%next, %now, "cron timer fired late; catching up minute by minute");
                self.emit(CronEvent::OverdueTimer {
                    expected: next,
                    now,
                });
            }
            let due: Vec<&CronItem> = self
                .items
                .iter()
                .filter(|item| item.fires_at(next))
                .collect();
            if !due.is_empty() {
                tokio::select! {
                    result = self.schedule(next, &due, false) => {
                        if let Err(e) = result {
                            return Stop::Failed(e);
                        }
                    }
                    () = shutdown_requested(shutdown) => return Stop::Shutdown,
                }
            }
            *failures = 0;
            next += ONE_MINUTE;
        }
    }

    /// Marks identifiers seen for the first time as known from `start`, and
    /// schedules the minutes missed by the already known ones within their
    /// `fill`.
    async fn register_and_backfill(&self, start: DateTime<Utc>) -> Result<(), sqlx::Error> {
        let identifiers: Vec<&str> = self.items.iter().map(|i| i.identifier.as_str()).collect();
        let rows: Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)> =
            sqlx::query_as(self.db.sql.cron.select_known.clone())
                .bind(&identifiers)
                .fetch_all(self.db.exec())
                .await?;
        let known: HashMap<String, DateTime<Utc>> = rows
            .into_iter()
            .map(|(id, known_since, last)| (id, last.unwrap_or(known_since)))
            .collect();
        let unknown: Vec<&str> = identifiers
            .iter()
            .copied()
            .filter(|id| !known.contains_key(*id))
            .collect();
        if !unknown.is_empty() {
            sqlx::query(self.db.sql.cron.insert_known.clone())
                .bind(&unknown)
                .bind(start)
                .execute(self.db.exec())
                .await?;
        }

        // Only identifiers already known are backfilled, each from its last
        // run (or from when it became known), within its own fill.
        let candidates: Vec<(&CronItem, DateTime<Utc>)> = self
            .items
            .iter()
            .filter(|item| !item.options.fill.is_zero())
            .filter_map(|item| known.get(&item.identifier).map(|&since| (item, since)))
            .collect();
        let Some(largest) = candidates.iter().map(|(i, _)| i.options.fill).max() else {
            return Ok(());
        };
        let Some(earliest) = candidates.iter().map(|&(_, since)| since).min() else {
            return Ok(());
        };
        // Walk every minute from start - largest fill (rounded up) that
        // could be due; minutes before every candidate's `since` cannot be.
        let from = TimeDelta::from_std(largest)
            .ok()
            .and_then(|fill| start.checked_sub_signed(fill))
            .map_or(earliest, |from| from.max(earliest));
        let mut minute = round_up_to_minute(from);
        while minute < start {
            let age = (start - minute).to_std().unwrap_or(Duration::ZERO);
            let due: Vec<&CronItem> = candidates
                .iter()
                .filter(|(item, since)| {
                    item.options.fill >= age && minute >= *since && item.fires_at(minute)
                })
                .map(|&(item, _)| item)
                .collect();
            if !due.is_empty() {
                self.schedule(minute, &due, true).await?;
            }
            minute += ONE_MINUTE;
        }
        Ok(())
    }

    /// Schedules `due` for `minute` in one statement; returns nothing but
    /// reports which identifiers it added jobs for.
    async fn schedule(
        &self,
        minute: DateTime<Utc>,
        due: &[&CronItem],
        backfilled: bool,
    ) -> Result<(), sqlx::Error> {
        let ts = minute.to_rfc3339_opts(SecondsFormat::Millis, true);
        let cron = json!({ "ts": ts, "backfilled": backfilled });
        let mut identifiers = Vec::with_capacity(due.len());
        let mut tasks = Vec::with_capacity(due.len());
        let mut payloads = Vec::with_capacity(due.len());
        let mut queues = Vec::with_capacity(due.len());
        let mut max_attempts = Vec::with_capacity(due.len());
        let mut priorities = Vec::with_capacity(due.len());
        let mut keys = Vec::with_capacity(due.len());
        let mut modes = Vec::with_capacity(due.len());
        for item in due {
            let mut payload = item.payload.clone();
            payload.insert("_cron".to_owned(), cron.clone());
            identifiers.push(item.identifier.as_str());
            tasks.push(item.task.as_str());
            payloads.push(Value::Object(payload).to_string());
            queues.push(item.options.queue_name.as_deref());
            max_attempts.push(item.options.max_attempts.map(i32::from));
            priorities.push(item.options.priority.map(i32::from));
            keys.push(item.options.job_key.as_deref());
            modes.push(
                item.options
                    .job_key
                    .as_ref()
                    .map(|_| item.options.job_key_mode.as_str()),
            );
        }
        let rows: Vec<(String, Option<i64>)> = sqlx::query_as(self.db.sql.cron.schedule.clone())
            .bind(&identifiers)
            .bind(&tasks)
            .bind(&payloads)
            .bind(&queues)
            .bind(&max_attempts)
            .bind(&priorities)
            .bind(&keys)
            .bind(&modes)
            .bind(minute)
            .fetch_all(self.db.exec())
            .await?;
        let added: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
        tracing::debug!(%ts, backfilled, ?added, "cron scheduled");
        for identifier in &added {
            self.observers.emit(|| WorkerEvent::CronJobScheduled {
                identifier: identifier.clone(),
                fire_time: minute,
                backfill: backfilled,
            });
        }
        self.emit(CronEvent::Scheduled {
            minute,
            backfilled,
            due: identifiers.iter().map(|id| (*id).to_owned()).collect(),
            added,
        });
        Ok(())
    }
}

/// Resolves once shutdown is requested or can no longer be requested.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn round_up_to_minute(time: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_to_minute(time);
    if floor == time {
        time
    } else {
        floor.checked_add_signed(ONE_MINUTE).unwrap_or(floor)
    }
}

/// The wait before restart number `previous + 1`.
fn retry_delay(previous: u32) -> Duration {
    let base = RETRY_MIN.as_secs_f64() * 1.5f64.powi(previous.min(64) as i32);
    let capped = base.min(RETRY_MAX.as_secs_f64());
    Duration::from_secs_f64(capped * (0.5 + crate::backoff::random_fraction()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn retry_delays_grow_to_a_minute_with_jitter() {
        for _ in 0..100 {
            let first = retry_delay(0);
            assert!(first >= Duration::from_millis(100) && first < Duration::from_millis(300));
            let second = retry_delay(1);
            assert!(second >= Duration::from_millis(150) && second < Duration::from_millis(450));
            let late = retry_delay(1000);
            assert!(late >= Duration::from_secs(30) && late < Duration::from_secs(90));
        }
    }

    #[test]
    fn rounds_up_to_whole_minutes() {
        let t = Utc.with_ymd_and_hms(2024, 1, 1, 4, 0, 0).unwrap();
        assert_eq!(round_up_to_minute(t), t);
        assert_eq!(
            round_up_to_minute(t + TimeDelta::milliseconds(1)),
            t + ONE_MINUTE
        );
        assert_eq!(floor_to_minute(t + TimeDelta::seconds(59)), t);
    }

    #[test]
    fn cron_timestamps_have_milliseconds() {
        let t = Utc.with_ymd_and_hms(2024, 1, 1, 4, 0, 0).unwrap();
        assert_eq!(
            t.to_rfc3339_opts(SecondsFormat::Millis, true),
            "2024-01-01T04:00:00.000Z"
        );
    }
}

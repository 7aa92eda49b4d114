//! Worker processes draining one backlog: peak memory of one process as the
//! backlog grows, and the total rate of 1, 2 and 4 processes together with
//! the share of their database time spent waiting on locks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::{ConnectOptions, Connection};

use crate::child::{self, Mode};
use crate::oneshot::{Statistics, backlog};
use crate::setup::{drop_database, jobs_left};
use crate::{Metric, Result, Results, Settings, Side, progress};

/// Backlogs the memory case drains with one process.
pub(crate) const MEMORY_SIZES: [usize; 2] = [20_000, 200_000];
/// Process counts of the several-processes case.
pub(crate) const PROCESSES: [usize; 3] = [1, 2, 4];

/// The backlog the several-processes case drains.
pub(crate) fn processes_backlog(settings: &Settings) -> usize {
    if settings.quick { 100_000 } else { 200_000 }
}

/// One drain by worker processes of their own.
struct Drained {
    rate: f64,
    /// Of the backends' active time, the share spent waiting on row locks.
    lock_wait_share: f64,
    /// The share spent by claims waiting on row locks.
    claim_lock_wait_share: f64,
    peak_rss_mb: f64,
    /// CPU time of the worker processes together.
    cpu_ms: f64,
    /// What the backends waited for most, as a share of their active time.
    top_waits: String,
}

pub(crate) async fn measure(settings: &Settings, run: usize, results: &mut Results) -> Result<()> {
    for side in settings.sides(Side::PAIR, run) {
        for size in MEMORY_SIZES
            .into_iter()
            .filter(|_| settings.wants("memory"))
        {
            let drained = drain(side, 1, size).await?;
            progress(
                &format!("peak RSS draining {size}, {}", side.mode()),
                drained.peak_rss_mb,
                "MB",
            );
            results.push(Metric::PeakRssMb(side, size), drained.peak_rss_mb);
            results.push(
                Metric::DrainCpuUs(side, size),
                drained.cpu_ms * 1e3 / size as f64,
            );
        }
        for n in PROCESSES
            .into_iter()
            .filter(|_| settings.wants("processes"))
        {
            let drained = drain(side, n, processes_backlog(settings)).await?;
            progress(
                &format!("{n} processes, {}", side.mode()),
                drained.rate,
                &format!(
                    "jobs/s ({:.1}% row-lock wait; waits: {})",
                    drained.lock_wait_share * 100.0,
                    drained.top_waits
                ),
            );
            results.push(Metric::ProcessesRate(side, n), drained.rate);
            results.push(
                Metric::ProcessesLockWaitPct(side, n),
                drained.lock_wait_share * 100.0,
            );
            results.push(
                Metric::ProcessesClaimLockWaitPct(side, n),
                drained.claim_lock_wait_share * 100.0,
            );
        }
    }
    Ok(())
}

/// `processes` worker processes for `side` draining `count` jobs, begun
/// together; timed from the first one's start to the last one's end.
async fn drain(side: Side, processes: usize, count: usize) -> Result<Drained> {
    let (db, pool) = backlog(count, Statistics::Analyzed).await?;
    let mut children = Vec::with_capacity(processes);
    for _ in 0..processes {
        children.push(child::spawn(side, Mode::Drain, &db.url).await?);
    }
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_waits(
        db.url.clone(),
        db.name.clone(),
        sampling.clone(),
    ));
    for child in &mut children {
        child.signal().await?;
    }
    let mut reports = Vec::with_capacity(processes);
    for child in children {
        reports.push(child.report().await?);
    }
    sampling.store(false, Ordering::Relaxed);
    let waits = sampler.await??;
    let left = jobs_left(&pool).await?;
    pool.close().await;
    drop_database(db).await?;
    if left != 0 {
        return Err(format!("{processes} {} processes left {left} jobs", side.mode()).into());
    }
    let field = |key: &str| -> Result<Vec<f64>> {
        reports
            .iter()
            .map(|r| {
                r[key]
                    .as_f64()
                    .ok_or_else(|| format!("no {key} reported").into())
            })
            .collect()
    };
    let start = field("start_us")?.into_iter().fold(f64::INFINITY, f64::min);
    let end = field("end_us")?.into_iter().fold(0.0, f64::max);
    let rss_kb = field("max_rss_kb")?.into_iter().fold(0.0, f64::max);
    let cpu_ms = field("cpu_ms")?.into_iter().sum();
    Ok(Drained {
        rate: count as f64 / ((end - start) / 1e6),
        lock_wait_share: waits.row_lock_share(),
        claim_lock_wait_share: waits.claim_row_lock_share(),
        top_waits: waits.top(),
        peak_rss_mb: rss_kb / 1024.0,
        cpu_ms,
    })
}

/// Samples `pg_stat_activity` every 5 ms while `on`: the database's
/// backends running a statement, and what those were waiting for
/// (`wait_event_type:wait_event`). Returns the active count and the waits.
async fn sample_waits(url: String, database: String, on: Arc<AtomicBool>) -> Result<Waits> {
    let mut conn = url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .connect()
        .await?;
    let mut waits = Waits::default();
    while on.load(Ordering::Relaxed) {
        // Claims are told apart by their text: ours begins `with
        // candidates`, Node's `with j_raw`.
        let rows: Vec<(bool, Option<String>, i64)> = sqlx::query_as(
            "select query like 'with candidates%' or query like 'with j_raw%', \
               wait_event_type || ':' || wait_event, count(*) \
             from pg_stat_activity \
             where datname = $1 and state = 'active' and pid <> pg_backend_pid() \
             group by 1, 2",
        )
        .bind(&database)
        .fetch_all(&mut conn)
        .await?;
        for (claim, event, count) in rows {
            let count = u64::try_from(count)?;
            waits.active += count;
            if let Some(event) = event {
                if claim && ROW_LOCK_WAITS.contains(&event.as_str()) {
                    waits.claims_on_row_locks += count;
                }
                *waits.by_event.entry(event).or_default() += count;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    conn.close().await?;
    Ok(waits)
}

/// Waits on a row lock: on the tuple, or on the transaction holding it.
const ROW_LOCK_WAITS: [&str; 2] = ["Lock:tuple", "Lock:transactionid"];

/// Samples of backends running a statement, and of what they waited for.
#[derive(Default)]
struct Waits {
    active: u64,
    by_event: BTreeMap<String, u64>,
    /// Samples of a claim waiting on a row lock.
    claims_on_row_locks: u64,
}

impl Waits {
    /// The share of active samples waiting on a row lock: a tuple, or the
    /// transaction holding one.
    fn row_lock_share(&self) -> f64 {
        let row_locks: u64 = ROW_LOCK_WAITS
            .iter()
            .filter_map(|e| self.by_event.get(*e))
            .sum();
        if self.active == 0 {
            0.0
        } else {
            row_locks as f64 / self.active as f64
        }
    }

    /// The share of active samples that were a claim waiting on a row lock.
    fn claim_row_lock_share(&self) -> f64 {
        self.claims_on_row_locks as f64 / self.active.max(1) as f64
    }

    /// The three most sampled waits, for the progress line.
    fn top(&self) -> String {
        let mut waits: Vec<_> = self.by_event.iter().collect();
        waits.sort_by(|a, b| b.1.cmp(a.1));
        waits
            .iter()
            .take(3)
            .map(|(event, n)| {
                format!(
                    "{event} {:.1}%",
                    **n as f64 / self.active.max(1) as f64 * 100.0
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

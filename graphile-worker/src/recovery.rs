//! Dead-worker recovery: jobs locked by registered workers whose heartbeat
//! went stale are unlocked and retried (their attempt counts), then those
//! workers are forgotten. Locks held by ids that never registered (Node
//! workers, older versions) are left to the 4-hour rule.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use tokio::sync::watch;

use crate::backoff::random_fraction;
use crate::events::{Events, WorkerEvent};
use crate::heartbeat::Health;
use crate::sql::Db;

/// What one recovery pass did.
///
/// ```
/// let report = graphile_worker::RecoveryReport::default();
/// assert!(report.workers.is_empty() && report.jobs == 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Pool ids of the workers found dead.
    pub workers: Vec<String>,
    /// Jobs released for retry.
    pub jobs: i64,
}

/// Finds workers whose heartbeat is older than `threshold` and recovers
/// their jobs. Only one process at a time does this (a transaction-scoped
/// advisory lock per schema); the others return an empty report.
pub(crate) async fn recover_stale(
    db: &Db,
    threshold: Duration,
    delay: Duration,
    own_id: Option<&str>,
) -> Result<RecoveryReport, sqlx::Error> {
    let sql = &db.sql;
    let mut conn = db.pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let locked: bool = sqlx::query_scalar(sql.workers.recovery_lock.clone())
        .bind(format!("graphile_worker.recovery:{}", db.schema.name()))
        .fetch_one(db.within(&mut *tx))
        .await?;
    if !locked {
        return Ok(RecoveryReport::default());
    }
    // The rows stay locked until this transaction ends, so a heartbeat
    // cannot land between finding a worker stale and forgetting it; one that
    // landed before is seen by the lock's re-check. A worker never recovers
    // its own jobs: if its own heartbeat looks stale, it is the one cut off,
    // and it stops its jobs instead.
    let workers: Vec<String> = sqlx::query_scalar(sql.workers.lock_stale_workers.clone())
        .bind(threshold.as_secs_f64())
        .bind(own_id)
        .fetch_all(db.within(&mut *tx))
        .await?;
    if workers.is_empty() {
        return Ok(RecoveryReport::default());
    }
    let jobs: i32 = sqlx::query_scalar(sql.workers.recover_dead_worker_jobs.clone())
        .bind(&workers)
        .bind(delay.as_secs_f64())
        .fetch_one(db.within(&mut *tx))
        .await?;
    sqlx::query(sql.workers.delete_stale_workers.clone())
        .bind(&workers)
        .execute(db.within(&mut *tx))
        .await?;
    if jobs > 0 {
        sqlx::query(sql.workers.notify_jobs.clone())
            .bind(jobs)
            .execute(db.within(&mut *tx))
            .await?;
    }
    tx.commit().await?;
    tracing::warn!(
        workers = ?workers,
        jobs,
        "recovered jobs of workers that stopped heartbeating"
    );
    Ok(RecoveryReport {
        workers,
        jobs: i64::from(jobs),
    })
}

pub(crate) struct Sweeper {
    pub(crate) db: Db,
    pub(crate) interval: Duration,
    pub(crate) threshold: Duration,
    pub(crate) delay: Duration,
    pub(crate) own_id: String,
    pub(crate) health: Arc<Health>,
    pub(crate) events: Events,
}

impl Sweeper {
    /// Sweeps every `interval` (jittered ±25%) until `stop` turns true,
    /// surviving database errors.
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            let wait = self.interval.mul_f64(0.75 + random_fraction() / 2.0);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            // A worker whose own heartbeats fail cannot tell who is dead.
            if !self.health.may_sweep() {
                continue;
            }
            match recover_stale(&self.db, self.threshold, self.delay, Some(&self.own_id)).await {
                Ok(report) if !report.workers.is_empty() => {
                    self.events.emit(|| WorkerEvent::WorkersRecovered {
                        workers: report.workers.clone(),
                        jobs: report.jobs,
                    });
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "dead-worker sweep failed; will try again"),
            }
        }
    }
}

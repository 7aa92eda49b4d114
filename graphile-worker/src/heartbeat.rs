//! Heartbeats: the worker registers in `_private_workers`, refreshes its row
//! and the locks of the jobs it holds every `heartbeat_interval`, and
//! deregisters on a clean shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::watch;

use crate::completion::{HeldJobs, lock_held};
use crate::listen::Wakeups;
use crate::sql::Statements;

/// Whether this worker may claim: false once heartbeats have failed for
/// longer than the stale threshold (others may already treat it as dead).
#[derive(Debug)]
pub(crate) struct Health {
    healthy: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            healthy: AtomicBool::new(true),
        }
    }
}

impl Health {
    pub(crate) fn may_claim(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// A beat just succeeded: claiming may resume. True if it had stopped.
    pub(crate) fn mark_healthy(&self) -> bool {
        !self.healthy.swap(true, Ordering::Relaxed)
    }
}

pub(crate) struct Heartbeat {
    pub(crate) pool: PgPool,
    pub(crate) sql: Arc<Statements>,
    pub(crate) pool_id: String,
    pub(crate) metadata: serde_json::Value,
    pub(crate) held: HeldJobs,
    pub(crate) interval: Duration,
    pub(crate) stale_threshold: Duration,
    pub(crate) health: Arc<Health>,
    pub(crate) wakeups: Arc<Wakeups>,
}

impl Heartbeat {
    /// Beats once. With `with_metadata` the worker's metadata is stored too
    /// (also re-creating the row if a sweeper removed it).
    pub(crate) async fn beat(&self, with_metadata: bool) -> Result<(), sqlx::Error> {
        let ids: Vec<i64> = lock_held(&self.held).ids();
        let metadata = with_metadata.then(|| self.metadata.to_string());
        sqlx::query(self.sql.heartbeat.clone())
            .bind(&self.pool_id)
            .bind(metadata)
            .bind(&ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Beats until `stop` turns true, then deregisters. Database errors and
    /// beats that hang are logged and retried; after failing for longer than
    /// the stale threshold the worker stops claiming until a beat succeeds.
    /// `registered` says the caller's own first beat just succeeded.
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>, mut registered: bool) {
        let mut last_ok = Instant::now();
        // Just registered: the next beat is due after one interval.
        if registered {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
        while !*stop.borrow() {
            // A beat that hangs (a lock, a half-open connection) counts as a
            // failure after half the stale threshold; a merely slow one
            // (a busy server) still gets through.
            let limit = self.interval.max(self.stale_threshold / 2);
            let outcome = match tokio::time::timeout(limit, self.beat(true)).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {limit:?}")),
            };
            match outcome {
                Ok(()) => {
                    registered = true;
                    last_ok = Instant::now();
                    if self.health.mark_healthy() {
                        // The dispatcher stopped claiming; wake it.
                        self.wakeups.notify.notify_one();
                        tracing::info!("heartbeats resumed; claiming jobs again");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat failed; will retry");
                    if last_ok.elapsed() > self.stale_threshold
                        && self.health.healthy.swap(false, Ordering::Relaxed)
                    {
                        tracing::error!(
                            "no heartbeat for longer than the stale threshold; not claiming new jobs until heartbeats resume"
                        );
                    }
                }
            }
            // Retry sooner after a failure.
            let wait = if registered && last_ok.elapsed() < self.interval {
                self.interval
            } else {
                self.interval.min(Duration::from_secs(1))
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        if let Err(e) = sqlx::query(self.sql.deregister.clone())
            .bind(&self.pool_id)
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, "could not deregister the worker; it will be swept as stale");
        }
    }
}

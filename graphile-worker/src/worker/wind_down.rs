//! Winding down a run: claims in flight awaited and their jobs handed back,
//! waiting jobs handed back, the last outcomes written, stray locks
//! released, and only then the worker deregistered.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::Inner;
use super::dispatch::Claimed;
use super::local_queue::Waiting;
use crate::backoff::Backoff;
use crate::outcome::{ClaimRef, Completer, HeldJobs, Outcome, give_back_claimed, settle_rejects};

/// Winding down a run, in the order that keeps every promise.
pub(super) struct WindDown {
    pub(super) inner: Arc<Inner>,
    pub(super) held: HeldJobs,
    pub(super) completer: Option<Completer>,
    pub(super) writer: Option<JoinHandle<()>>,
    pub(super) claims: JoinSet<Claimed>,
    pub(super) buffer: VecDeque<Waiting>,
    pub(super) stop_background: watch::Sender<bool>,
    pub(super) heartbeat_done: Option<oneshot::Receiver<()>>,
    pub(super) refresher: Option<JoinHandle<()>>,
    pub(super) strays_possible: bool,
}

impl WindDown {
    fn handed_back(&self, count: usize) {
        if count > 0 {
            self.inner
                .events
                .emit(|| crate::events::WorkerEvent::JobsHandedBack { count });
        }
    }

    pub(super) async fn run(mut self) {
        if let Some(completer) = self.completer.take() {
            // Claims in flight may lock jobs: take them back too.
            while let Some(claimed) = self.claims.join_next().await {
                match claimed {
                    Ok(Claimed::Jobs { batch, .. }) => {
                        settle_rejects(&self.held, &completer, &batch);
                        let count = batch.jobs.len() + batch.give_back.len();
                        give_back_claimed(&self.held, &completer, batch.jobs);
                        self.handed_back(count);
                    }
                    Ok(Claimed::Failed {
                        may_have_locked: true,
                        ..
                    }) => self.strays_possible = true,
                    _ => {}
                }
            }
            let count = self.buffer.len();
            for (job, _) in self.buffer.drain(..) {
                completer.send(ClaimRef::of(&job), Outcome::Returned, true);
            }
            self.handed_back(count);
        }
        // The writer ends once every sender is gone (the running jobs' too)
        // and every outcome is written.
        if let Some(writer) = self.writer.take() {
            let _ = writer.await;
        }
        let inner = &self.inner;
        let sql = &inner.db.sql;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        for attempt in 1..=5 {
            let result = if self.strays_possible {
                reconcile(inner, &[]).await
            } else {
                sqlx::query(sql.claims.unlock_own_queues.clone())
                    .bind(&inner.pool_id)
                    .execute(inner.db.exec())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            match result {
                Ok(()) => break,
                Err(e) if attempt == 5 => {
                    tracing::warn!(error = %e, "could not release this worker's remaining locks; dead-worker recovery will")
                }
                Err(_) => tokio::time::sleep(backoff.next_delay()).await,
            }
        }
        // Only now may the worker look gone: its last outcome is written.
        self.stop_background.send_replace(true);
        if let Some(refresher) = self.refresher.take() {
            let _ = refresher.await;
        }
        if let Some(done) = self.heartbeat_done.take() {
            let _ = done.await;
        }
        inner.end_run();
    }
}

/// Hands back the jobs locked by this worker that it does not hold (`held`
/// lists those it does), and unlocks its queues that hold none of them.
pub(super) async fn reconcile(inner: &Inner, held: &[i64]) -> Result<(), String> {
    let (jobs, queues): (i64, i64) = sqlx::query_as(inner.db.sql.claims.return_strays.clone())
        .bind(&inner.pool_id)
        .bind(held)
        .fetch_one(inner.db.exec())
        .await
        .map_err(|e| e.to_string())?;
    if jobs + queues > 0 {
        tracing::warn!(
            jobs,
            queues,
            "handed back jobs and queues this worker had locked without knowing it (a claim whose answer was lost)"
        );
    }
    Ok(())
}

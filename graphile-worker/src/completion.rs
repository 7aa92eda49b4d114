//! Recording job outcomes in batches: completions, failures and returned
//! jobs are collected while the previous write is in flight and written with
//! one statement per kind, so under load many jobs share one round trip and
//! an idle worker writes each outcome at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::listen::Wakeups;
use crate::sql::Statements;

/// What happened to a claimed job.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The task succeeded: delete the job.
    Completed,
    /// The task failed: record the message and back off. `interrupted` jobs
    /// (stopped by a shutdown) get their attempt back and no backoff.
    Failed { message: String, interrupted: bool },
    /// The job never started: unlock it and refund the attempt.
    Returned,
}

/// Jobs this pool holds locks on (claimed and not yet written back), for the
/// heartbeat to keep their locks fresh.
pub(crate) type HeldJobs = Arc<Mutex<Held>>;

pub(crate) fn lock_held(held: &HeldJobs) -> std::sync::MutexGuard<'_, Held> {
    held.lock().unwrap_or_else(|p| p.into_inner())
}

/// Claimed job ids, counted: a job handed back can be claimed again before
/// the hand-back is written, and writing it must not drop the new claim.
#[derive(Debug, Default)]
pub(crate) struct Held(HashMap<i64, u32>);

impl Held {
    /// Counts a claim of each of `ids`.
    pub(crate) fn extend(&mut self, ids: impl IntoIterator<Item = i64>) {
        for id in ids {
            *self.0.entry(id).or_default() += 1;
        }
    }

    /// Forgets one claim of `id`, once its outcome is written.
    pub(crate) fn release(&mut self, id: i64) {
        if let Some(count) = self.0.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                self.0.remove(&id);
            }
        }
    }

    /// Every held id.
    pub(crate) fn ids(&self) -> Vec<i64> {
        self.0.keys().copied().collect()
    }
}

/// Sends outcomes to the writer task.
#[derive(Clone, Debug)]
pub(crate) struct Completer {
    tx: mpsc::UnboundedSender<Report>,
    progress: Arc<Progress>,
}

/// Counts of outcomes sent and written, to tell when all are written.
#[derive(Debug, Default)]
struct Progress {
    sent: AtomicU64,
    written: AtomicU64,
    changed: Notify,
}

impl Completer {
    /// Starts the writer. It ends once every `Completer` clone is dropped and
    /// the remaining outcomes are written.
    pub(crate) fn start(
        pool: PgPool,
        sql: Arc<Statements>,
        pool_id: String,
        held: HeldJobs,
        wakeups: Arc<Wakeups>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let progress = Arc::new(Progress::default());
        let writer = Writer {
            pool,
            sql,
            pool_id,
            held,
            wakeups,
            progress: progress.clone(),
        };
        let handle = tokio::spawn(writer.run(rx));
        (Self { tx, progress }, handle)
    }

    /// How many outcomes have been written so far.
    pub(crate) fn written(&self) -> u64 {
        self.progress.written.load(Ordering::Acquire)
    }

    /// Waits until every outcome sent so far is written; true if any was
    /// written after `mark` (a value of [`written`](Self::written)).
    pub(crate) async fn settled_since(&self, mark: u64) -> bool {
        loop {
            let notified = self.progress.changed.notified();
            let written = self.progress.written.load(Ordering::Acquire);
            if written >= self.progress.sent.load(Ordering::Acquire) {
                return written != mark;
            }
            notified.await;
        }
    }

    /// Queues an outcome for writing. `frees_work` says whether writing it
    /// can make a job runnable at once (its named queue unlocks, or the job
    /// itself goes back): then the dispatcher is woken to look again.
    pub(crate) fn send(&self, job_id: i64, outcome: Outcome, frees_work: bool) {
        self.progress.sent.fetch_add(1, Ordering::AcqRel);
        let report = Report {
            job_id,
            outcome,
            frees_work,
        };
        if self.tx.send(report).is_err() {
            // Only after the writer stopped, which happens after every
            // sender is gone; the job stays locked for recovery.
            tracing::error!(
                job_id,
                "outcome writer is gone; job left locked for recovery"
            );
        }
    }
}

const MAX_BATCH: usize = 5000;

/// One outcome on its way to the writer.
#[derive(Debug)]
struct Report {
    job_id: i64,
    outcome: Outcome,
    frees_work: bool,
}

struct Writer {
    pool: PgPool,
    sql: Arc<Statements>,
    pool_id: String,
    held: HeldJobs,
    wakeups: Arc<Wakeups>,
    progress: Arc<Progress>,
}

impl Writer {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Report>) {
        let mut batch = Vec::with_capacity(256);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            write_batch(&self.pool, &self.sql, &self.pool_id, &batch).await;
            {
                let mut held = lock_held(&self.held);
                for report in &batch {
                    held.release(report.job_id);
                }
            }
            let count = u64::try_from(batch.len()).unwrap_or(u64::MAX);
            self.progress.written.fetch_add(count, Ordering::AcqRel);
            self.progress.changed.notify_waiters();
            // An unlocked queue may hold the next runnable job, and a
            // returned job can run again.
            if batch.iter().any(|r| r.frees_work) {
                self.wakeups.notify.notify_one();
            }
            batch.clear();
        }
    }
}

async fn write_batch(pool: &PgPool, sql: &Statements, pool_id: &str, batch: &[Report]) {
    let mut completed = Vec::new();
    let mut returned = Vec::new();
    let mut failed_ids = Vec::new();
    let mut failed_messages = Vec::new();
    let mut failed_interrupted = Vec::new();
    for Report {
        job_id: id,
        outcome,
        ..
    } in batch
    {
        match outcome {
            Outcome::Completed => completed.push(*id),
            Outcome::Returned => returned.push(*id),
            Outcome::Failed {
                message,
                interrupted,
            } => {
                failed_ids.push(*id);
                failed_messages.push(message.as_str());
                failed_interrupted.push(*interrupted);
            }
        }
    }
    if !completed.is_empty() {
        retry("complete jobs", || {
            sqlx::query(sql.complete_own_jobs.clone())
                .bind(&completed)
                .bind(pool_id)
                .execute(pool)
        })
        .await;
    }
    if !failed_ids.is_empty() {
        retry("fail jobs", || {
            sqlx::query(sql.fail_own_jobs.clone())
                .bind(&failed_ids)
                .bind(&failed_messages)
                .bind(pool_id)
                .bind(&failed_interrupted)
                .execute(pool)
        })
        .await;
    }
    if !returned.is_empty() {
        retry("return jobs", || {
            sqlx::query(sql.return_own_jobs.clone())
                .bind(&returned)
                .bind(pool_id)
                .execute(pool)
        })
        .await;
    }
}

/// Retries a write on any database error, with growing delays, for about a
/// minute. If it still fails the jobs stay locked by this pool, and dead-worker
/// recovery or the stale-lock sweep brings them back.
async fn retry<F, Fut, T>(what: &str, mut op: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    for attempt in 1..=25 {
        match op().await {
            Ok(_) => return,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(attempt, error = %e, "could not {what}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
            }
        }
    }
    tracing::error!("giving up: could not {what}; the jobs stay locked until recovered");
}

//! The outcome writer: recording job outcomes in batches: completions, failures and returned
//! jobs are collected while the previous write is in flight and written with
//! one statement per kind, so under load many jobs share one round trip and
//! an idle worker writes each outcome at once.
//!
//! What the writer promises:
//!
//! - **Every outcome lands, or is dropped for a reason that retrying cannot
//!   fix.** Failed writes are retried with backoff for as long as the worker
//!   lives (a database restart, a failover, a standby answering "read-only"),
//!   and the job stays held, its lock refreshed, until written. An error no
//!   retry can fix (bad data) splits the batch so the other rows still land.
//! - **A write only touches the claim it belongs to.** Each outcome carries
//!   the `updated_at` its claim stamped; a failure or hand-back retried after
//!   an ambiguous commit cannot unlock or refund a later claim of the same
//!   job, and an attempt is refunded only to a job nobody changed meanwhile
//!   (a job disarmed by `remove_job` or key replacement stays dead). A
//!   completion deletes the row, which no retry can get wrong.
//! - **Messages are storable**: NUL characters are replaced and the length
//!   is bounded before they reach PostgreSQL.
//! - **Rows locked by other transactions do not hold failures back**: they
//!   are skipped and retried shortly after, alone. Completions wait for such
//!   a lock instead (skipping costs a row lock each, about 15% of the drain
//!   rate); their jobs stay held, and backpressure bounds what waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::{ClaimRef, Failure, HeldJobs, Outcome, lock_held, storable_message};
use crate::backoff::Backoff;
use crate::events::{Events, WorkerEvent};
use crate::listen::Wakeups;
use crate::sql::Db;

/// Sends outcomes to the writer task.
#[derive(Clone, Debug)]
pub(crate) struct Completer {
    tx: mpsc::UnboundedSender<Report>,
    progress: Arc<Progress>,
}

/// Counts of outcomes sent and settled (written, or dropped for good), to
/// tell when all are settled and how many wait.
#[derive(Debug, Default)]
struct Progress {
    sent: AtomicU64,
    written: AtomicU64,
    changed: Notify,
    /// A permit for the dispatcher, stored if it is not waiting yet, so a
    /// worker held back by unwritten outcomes never misses their landing.
    landed: Notify,
}

impl Completer {
    /// Starts the writer. It ends once every `Completer` clone is dropped and
    /// the remaining outcomes are written.
    pub(crate) fn start(
        db: Db,
        pool_id: String,
        held: HeldJobs,
        wakeups: Arc<Wakeups>,
        events: Events,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let progress = Arc::new(Progress::default());
        let writer = Writer {
            db,
            pool_id,
            held,
            wakeups,
            progress: progress.clone(),
            events,
        };
        let handle = tokio::spawn(writer.run(rx));
        (Self { tx, progress }, handle)
    }

    /// How many outcomes have been settled so far.
    pub(crate) fn written(&self) -> u64 {
        self.progress.written.load(Ordering::Acquire)
    }

    /// How many outcomes were sent and are not settled yet.
    pub(crate) fn unwritten(&self) -> u64 {
        let sent = self.progress.sent.load(Ordering::Acquire);
        sent.saturating_sub(self.written())
    }

    /// Completes when outcomes have landed since the last call.
    pub(crate) async fn landed(&self) {
        self.progress.landed.notified().await;
    }

    /// Waits until every outcome sent so far is settled; true if any was
    /// settled after `mark` (a value of [`written`](Self::written)).
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
    pub(crate) fn send(&self, claim: ClaimRef, outcome: Outcome, frees_work: bool) {
        self.progress.sent.fetch_add(1, Ordering::AcqRel);
        let report = Report {
            claim,
            outcome,
            frees_work,
        };
        if self.tx.send(report).is_err() {
            // Only after the writer stopped, which happens after every
            // sender is gone; the job stays locked for recovery.
            tracing::error!(
                job_id = claim.id,
                "outcome writer is gone; job left locked for recovery"
            );
        }
    }
}

const MAX_BATCH: usize = 5000;

/// How long outcomes for rows locked by another transaction wait before
/// they are tried again: at first briefly (the usual holder is a claim in
/// flight that locked the row while checking it, and lets go within
/// milliseconds), then up to [`BUSY_RETRY_MAX`] for an application
/// transaction that holds it longer.
const BUSY_RETRY_MIN: Duration = Duration::from_millis(2);
const BUSY_RETRY_MAX: Duration = Duration::from_millis(250);

/// One outcome on its way to the writer.
#[derive(Debug)]
struct Report {
    claim: ClaimRef,
    outcome: Outcome,
    frees_work: bool,
}

struct Writer {
    db: Db,
    pool_id: String,
    held: HeldJobs,
    wakeups: Arc<Wakeups>,
    progress: Arc<Progress>,
    events: Events,
}

impl Writer {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Report>) {
        let mut batch: Vec<Report> = Vec::with_capacity(256);
        // Outcomes of rows that another transaction had locked.
        let mut busy: Vec<Report> = Vec::new();
        let mut retry_busy_at = tokio::time::Instant::now();
        let mut busy_delay = BUSY_RETRY_MIN;
        let mut closed = false;
        loop {
            if !busy.is_empty() && tokio::time::Instant::now() >= retry_busy_at {
                batch.append(&mut busy);
            }
            if batch.is_empty() {
                match (busy.is_empty(), closed) {
                    (true, true) => break,
                    (true, false) => match rx.recv().await {
                        Some(report) => batch.push(report),
                        None => break,
                    },
                    (false, true) => {
                        tokio::time::sleep_until(retry_busy_at).await;
                        continue;
                    }
                    (false, false) => {
                        tokio::select! {
                            report = rx.recv() => match report {
                                Some(report) => batch.push(report),
                                None => closed = true,
                            },
                            _ = tokio::time::sleep_until(retry_busy_at) => {}
                        }
                        continue;
                    }
                }
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(report) => batch.push(report),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            let started = std::time::Instant::now();
            let still_busy = self.write(&batch).await;
            self.settle(&batch, &still_busy);
            let count = batch.len() - still_busy.len();
            if count > 0 {
                self.events.emit(|| WorkerEvent::OutcomesWritten {
                    count,
                    duration: started.elapsed(),
                });
            }
            if still_busy.is_empty() {
                if busy.is_empty() {
                    busy_delay = BUSY_RETRY_MIN;
                }
            } else {
                if busy.is_empty() {
                    retry_busy_at = tokio::time::Instant::now() + busy_delay;
                    busy_delay = (busy_delay * 2).min(BUSY_RETRY_MAX);
                }
                let (wait, done): (Vec<Report>, Vec<Report>) =
                    batch.drain(..).partition(|r| still_busy.contains(&r.claim));
                drop(done);
                busy.extend(wait);
            }
            batch.clear();
        }
    }

    /// The outcomes of `batch` that landed (all but `still_busy`): their
    /// jobs are no longer held, and whoever waits for written outcomes or
    /// for work is told.
    fn settle(&self, batch: &[Report], still_busy: &[ClaimRef]) {
        let settled: Vec<&Report> = batch
            .iter()
            .filter(|r| !still_busy.contains(&r.claim))
            .collect();
        {
            let mut held = lock_held(&self.held);
            for report in &settled {
                held.release(report.claim.id);
            }
        }
        let frees_work = settled.iter().any(|r| r.frees_work);
        let count = u64::try_from(settled.len()).unwrap_or(u64::MAX);
        self.progress.written.fetch_add(count, Ordering::AcqRel);
        self.progress.changed.notify_waiters();
        self.progress.landed.notify_one();
        // An unlocked queue may hold the next runnable job, and a
        // returned job can run again.
        if frees_work {
            self.wakeups.notify.notify_one();
        }
    }

    /// Writes `batch`, one statement per kind of outcome, retrying what can
    /// be retried until it lands. Returns the claims whose rows another
    /// transaction had locked, to try again later.
    async fn write(&self, batch: &[Report]) -> Vec<ClaimRef> {
        let mut busy = Vec::new();
        for kind in [Kind::Complete, Kind::Fail] {
            let reports: Vec<&Report> = batch.iter().filter(|r| kind.matches(r)).collect();
            if !reports.is_empty() {
                busy.extend(self.write_kind(kind, &reports).await);
            }
        }
        busy
    }

    /// Writes the reports of one kind; on an error that retrying cannot fix,
    /// writes them one at a time so that only the bad row is lost.
    async fn write_kind(&self, kind: Kind, reports: &[&Report]) -> Vec<ClaimRef> {
        match self.write_retrying(kind, reports).await {
            Ok(busy) => busy,
            Err(e) if reports.len() > 1 => {
                tracing::warn!(error = %e, "could not {} as a batch; writing them one at a time", kind.verb());
                let mut busy = Vec::new();
                for report in reports {
                    match self
                        .write_retrying(kind, std::slice::from_ref(report))
                        .await
                    {
                        Ok(b) => busy.extend(b),
                        Err(e) => log_dropped(kind, report, &e),
                    }
                }
                busy
            }
            Err(e) => {
                if let Some(report) = reports.first() {
                    log_dropped(kind, report, &e);
                }
                Vec::new()
            }
        }
    }

    /// Retries retryable errors until the write lands; returns the busy
    /// claims, or the first error retrying cannot fix.
    async fn write_retrying(
        &self,
        kind: Kind,
        reports: &[&Report],
    ) -> Result<Vec<ClaimRef>, sqlx::Error> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let mut attempt: u32 = 0;
        loop {
            match self.write_once(kind, reports).await {
                Ok(busy) => {
                    if attempt > 0 {
                        tracing::info!(attempt, "wrote job outcomes after retrying");
                    }
                    return Ok(busy);
                }
                Err(e) if is_retryable(&e) => {
                    attempt += 1;
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        attempt,
                        error = %e,
                        jobs = reports.len(),
                        "could not {}; retrying in {delay:?} (the jobs stay held until written)",
                        kind.verb()
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One try: the write itself, then, if it touched fewer rows than asked,
    /// which of the rest are still this claim's (locked by another
    /// transaction: busy). The others were taken from this worker (by
    /// recovery or a sweep) and have nothing left to write.
    async fn write_once(
        &self,
        kind: Kind,
        reports: &[&Report],
    ) -> Result<Vec<ClaimRef>, sqlx::Error> {
        let ids: Vec<i64> = reports.iter().map(|r| r.claim.id).collect();
        let claimed: Vec<Option<DateTime<Utc>>> =
            reports.iter().map(|r| r.claim.claimed_at).collect();
        let written: i64 = match kind {
            Kind::Complete => {
                sqlx::query_scalar(self.db.sql.outcomes.complete_own_jobs.clone())
                    .bind(&ids)
                    .bind(&self.pool_id)
                    .fetch_one(self.db.exec())
                    .await?
            }
            Kind::Fail => {
                // A hand-back is a failure without a message: interrupted
                // before it began. A snooze is one with a delay.
                let mut messages = Vec::with_capacity(reports.len());
                let mut interrupted = Vec::with_capacity(reports.len());
                let mut permanent = Vec::with_capacity(reports.len());
                let mut delays = Vec::with_capacity(reports.len());
                let mut payloads: Vec<Option<&str>> = Vec::with_capacity(reports.len());
                for report in reports {
                    payloads.push(match &report.outcome {
                        Outcome::Failed { payload, .. } => payload.as_deref(),
                        _ => None,
                    });
                    let (message, how, delay) = match &report.outcome {
                        Outcome::Failed { message, how, .. } => {
                            let delay = match how {
                                Failure::RetryAfter(delay) => Some(delay.as_secs_f64()),
                                _ => None,
                            };
                            (Some(storable_message(message)), *how, delay)
                        }
                        Outcome::Snoozed(delay) => {
                            (None, Failure::Interrupted, Some(delay.as_secs_f64()))
                        }
                        Outcome::Returned | Outcome::Completed => {
                            (None, Failure::Interrupted, None)
                        }
                    };
                    messages.push(message);
                    interrupted.push(how == Failure::Interrupted);
                    permanent.push(how == Failure::Permanent);
                    delays.push(delay);
                }
                sqlx::query_scalar(self.db.sql.outcomes.fail_own_jobs.clone())
                    .bind(&ids)
                    .bind(&messages)
                    .bind(&self.pool_id)
                    .bind(&interrupted)
                    .bind(&claimed)
                    .bind(&permanent)
                    .bind(&delays)
                    .bind(&payloads)
                    .fetch_one(self.db.exec())
                    .await?
            }
        };
        if usize::try_from(written).unwrap_or(0) >= reports.len() {
            return Ok(Vec::new());
        }
        // Completions are not fenced (see `complete_own_jobs`).
        let fence = match kind {
            Kind::Complete => vec![None; claimed.len()],
            Kind::Fail => claimed,
        };
        let still_mine: Vec<i64> = sqlx::query_scalar(self.db.sql.outcomes.still_held.clone())
            .bind(&ids)
            .bind(&self.pool_id)
            .bind(&fence)
            .fetch_all(self.db.exec())
            .await?;
        Ok(reports
            .iter()
            .map(|r| r.claim)
            .filter(|c| still_mine.contains(&c.id))
            .collect())
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Completions: the job is deleted.
    Complete,
    /// Failures and hand-backs: the job is unlocked.
    Fail,
}

impl Kind {
    fn matches(self, report: &Report) -> bool {
        match self {
            Kind::Complete => matches!(report.outcome, Outcome::Completed),
            Kind::Fail => !matches!(report.outcome, Outcome::Completed),
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Kind::Complete => "complete jobs",
            Kind::Fail => "record job failures and hand-backs",
        }
    }
}

fn log_dropped(kind: Kind, report: &Report, error: &sqlx::Error) {
    tracing::error!(
        job_id = report.claim.id,
        error = %error,
        "could not {} and retrying cannot help; the job stays locked until the 4-hour sweep frees it",
        kind.verb()
    );
}

/// Whether an error may go away by itself: connection trouble, a server
/// starting up, shutting down or read-only during a failover, lock and
/// serialization conflicts, exhausted resources. Errors in the data or the
/// statement (SQLSTATE classes 22, 23, 42, 0A, …) never do.
pub(crate) fn is_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code();
            let class = code.as_deref().map(|c| c.get(..2).unwrap_or(c));
            !matches!(
                class,
                Some(
                    "0A" | "21"
                        | "22"
                        | "23"
                        | "27"
                        | "28"
                        | "2B"
                        | "2F"
                        | "39"
                        | "3F"
                        | "42"
                        | "44"
                        | "P0"
                )
            )
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

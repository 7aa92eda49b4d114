//! Controlling jobs and queues from outside a worker: cancelling a job
//! ([`WorkerUtils::cancel_job`]) and pausing a named queue
//! ([`WorkerUtils::pause_queue`], [`WorkerUtils::resume_queue`]).

use serde::Serialize;

use crate::cancel::{bounded_reason, cancelled_message};
use crate::error::Error;
use crate::worker_utils::WorkerUtils;

/// What [`WorkerUtils::cancel_job`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CancelOutcome {
    /// No worker held the job: it is now permanently failed with
    /// `cancelled: <reason>`.
    Failed,
    /// A registered (Rust) worker is running it and was told: its task
    /// sees [`CancelReason::Cancelled`](crate::CancelReason::Cancelled),
    /// gets the worker's cancel grace period, and the job ends permanently
    /// failed with `cancelled: <reason>`.
    Signalled {
        /// The worker's pool id.
        locked_by: String,
    },
    /// A worker that cannot be interrupted holds it: a Node worker (Node
    /// graphile-worker has no way to stop a running task), or one not in
    /// the worker registry. The job runs to its end: if it succeeds it is
    /// deleted as usual; if it fails, it is not retried.
    NotInterruptible {
        /// The holder's pool id.
        locked_by: String,
    },
    /// The job had already failed permanently; nothing changed.
    AlreadyFailed,
    /// No job has this id (it may have completed already).
    NotFound,
}

impl WorkerUtils {
    /// Cancels job `id`, recording `cancelled: <reason>` as its last error
    /// (a reason over 1,000 characters is cut there).
    ///
    /// - A job no one holds is failed permanently now (it stays in the
    ///   table, like any permanently failed job, until cleaned up).
    /// - A job a Rust worker is running cannot be retried any more, and
    ///   that worker is told through a notification: the task sees
    ///   cancellation through its [`JobContext`](crate::JobContext)
    ///   ([`CancelReason::Cancelled`](crate::CancelReason::Cancelled),
    ///   distinct from shutdown), has the worker's cancel grace period to
    ///   return, and is then dropped; the job ends permanently failed with
    ///   that message. A job waiting in that worker's local queue never
    ///   starts.
    /// - A job a Node worker is running cannot be interrupted
    ///   ([`CancelOutcome::NotInterruptible`]): it runs to its end and is
    ///   not retried if it fails.
    ///
    /// A worker whose listening connection is down when the notification
    /// is sent misses it; its job then runs to its end, and is not retried.
    ///
    /// ```no_run
    /// use graphile_worker::{CancelOutcome, WorkerUtils};
    /// # async fn example(utils: WorkerUtils) -> Result<(), graphile_worker::Error> {
    /// match utils.cancel_job(42, "the customer closed their account").await? {
    ///     CancelOutcome::Failed | CancelOutcome::Signalled { .. } => println!("cancelled"),
    ///     CancelOutcome::NotInterruptible { locked_by } => {
    ///         println!("{locked_by} runs it to its end; it will not be retried")
    ///     }
    ///     other => println!("nothing to cancel: {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cancel_job(&self, id: i64, reason: &str) -> Result<CancelOutcome, Error> {
        let reason = bounded_reason(reason);
        let row: Option<(Option<String>, bool, bool, bool, i64)> =
            sqlx::query_as(self.db().sql.control.cancel_job.clone())
                .bind(id)
                .bind(cancelled_message(&reason))
                .bind(self.db().schema.name())
                .bind(&reason)
                .fetch_optional(self.db().exec())
                .await?;
        Ok(match row {
            None => CancelOutcome::NotFound,
            Some((locked_by, true, _, registered, _)) => {
                let locked_by = locked_by.unwrap_or_default();
                if registered {
                    CancelOutcome::Signalled { locked_by }
                } else {
                    CancelOutcome::NotInterruptible { locked_by }
                }
            }
            Some((_, false, true, _, _)) => CancelOutcome::AlreadyFailed,
            Some((_, false, false, _, _)) => CancelOutcome::Failed,
        })
    }

    /// Pauses the named queue: from now on no worker, Rust or Node 0.18,
    /// starts a job of it; jobs added meanwhile wait. A job of the queue
    /// that is already running finishes. Returns false if the queue was
    /// paused already. A queue that does not exist yet is created paused.
    ///
    /// The pause is stored in the queue's own row (`locked_by = 'paused'`,
    /// with a `locked_at` far in the future), which every worker's claim
    /// already respects and which neither the 4-hour stale-lock sweep nor
    /// heartbeats undo; no schema change is involved. Node's
    /// `force_unlock_workers(['paused'])` also resumes it.
    ///
    /// ```no_run
    /// # async fn example(utils: graphile_worker::WorkerUtils) -> Result<(), graphile_worker::Error> {
    /// utils.pause_queue("emails").await?;
    /// // ... the mail provider is down ...
    /// utils.resume_queue("emails").await?;
    /// # Ok(()) }
    /// ```
    pub async fn pause_queue(&self, name: &str) -> Result<bool, Error> {
        check_queue_name(name)?;
        let was_paused: bool = sqlx::query_scalar(self.db().sql.control.pause_queue.clone())
            .bind(name)
            .fetch_one(self.db().exec())
            .await?;
        Ok(!was_paused)
    }

    /// Resumes a paused queue, and wakes running workers so its jobs start
    /// at once. Returns false if the queue was not paused.
    pub async fn resume_queue(&self, name: &str) -> Result<bool, Error> {
        check_queue_name(name)?;
        let resumed: Option<i32> = sqlx::query_scalar(self.db().sql.control.resume_queue.clone())
            .bind(name)
            .fetch_optional(self.db().exec())
            .await?;
        if resumed.is_some() {
            sqlx::query(self.db().sql.control.notify_jobs.clone())
                .execute(self.db().exec())
                .await?;
        }
        Ok(resumed.is_some())
    }
}

/// The database's rule for queue names: 1 to 128 characters.
fn check_queue_name(name: &str) -> Result<(), Error> {
    let chars = name.chars().count();
    let reason = if chars == 0 {
        "it is empty"
    } else if chars > 128 {
        "it is longer than 128 characters"
    } else {
        return Ok(());
    };
    Err(Error::InvalidQueueName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    })
}

//! One home for a job's outcome: what happened to a claimed job
//! ([`Outcome`]), the claim it belongs to ([`ClaimRef`]), every message the
//! worker itself writes on a job, the guard that makes sure a running job
//! always reports, and the writer that records outcomes in the database
//! ([`writer`]). The jobs a worker holds until their outcome is written are
//! counted in [`held`].
//!
//! A job's path: claimed (`claim.rs`), waiting (`worker/local_queue.rs`),
//! run (`execute.rs`, which turns the task's result into an [`Outcome`]),
//! reported by its [`OutcomeGuard`], written here.

use chrono::{DateTime, Utc};

use crate::claim::ClaimBatch;
use crate::job::Job;

pub(crate) mod held;
pub(crate) mod writer;

pub(crate) use held::{HeldJobs, lock_held};
pub(crate) use writer::{Completer, is_retryable};

/// What happened to a claimed job.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The task succeeded: delete the job.
    Completed,
    /// The task failed: record the message, and retry the job as `how`
    /// says.
    Failed {
        message: String,
        how: Failure,
        /// A batch job's failed elements (a JSON array), which replace its
        /// payload so that only they are retried.
        payload: Option<String>,
    },
    /// The job never started: unlock it and refund the attempt.
    Returned,
    /// The task asked to run again after this long: not a failure; the
    /// attempt is refunded and `last_error` kept.
    Snoozed(std::time::Duration),
}

/// What a failure does to the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Back off and retry while attempts are left.
    Retry,
    /// Retry after this long while attempts are left (a retry policy, or
    /// the task's own delay).
    RetryAfter(std::time::Duration),
    /// No retry can fix it: fail the job permanently now.
    Permanent,
    /// Stopped by a shutdown or a lost heartbeat before it finished: the
    /// attempt is given back and the job may run again at once.
    Interrupted,
}

impl Failure {
    /// Whether the job may run again (if it has attempts left).
    pub(crate) fn retries(self) -> bool {
        matches!(self, Failure::Retry | Failure::RetryAfter(_))
    }
}

/// The claim an outcome belongs to: the job id and the `updated_at` the
/// claim stamped (unknown only for a claimed row that could not be read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClaimRef {
    pub(crate) id: i64,
    pub(crate) claimed_at: Option<DateTime<Utc>>,
}

impl ClaimRef {
    pub(crate) fn of(job: &crate::Job) -> Self {
        Self {
            id: job.id,
            claimed_at: Some(job.updated_at),
        }
    }
}

/// Message stored on jobs that a shutdown interrupted.
pub(crate) const SHUTDOWN_MESSAGE: &str =
    "worker shutting down: the job was interrupted before it finished and will be retried";

/// Message stored on jobs stopped because their worker lost its heartbeat
/// (peers may have taken, or may soon take, its jobs).
pub(crate) const HEARTBEAT_LOST_MESSAGE: &str = "worker lost its heartbeat: the job was stopped before it finished, so that it does not run twice, and will be retried";

/// Stored on a job whose task panicked; `detail` is what
/// [`panics::catch`](crate::panics::catch) returned (` at file:line:col:
/// message`, or `: message` when the location is unknown).
pub(crate) fn task_panicked(detail: &str) -> String {
    format!("task panicked{detail}")
}

/// Stored on a job of a task this worker does not run (claimed anyway: its
/// identifier was registered when the claim was prepared).
pub(crate) fn unknown_task(identifier: &str) -> String {
    format!("no task called `{identifier}` is registered on this worker")
}

/// Stored on a claimed job whose row could not be read.
pub(crate) fn unreadable_row(error: &dyn std::fmt::Display) -> String {
    format!("the job could not be read from the database: {error}")
}

/// Stored on a job whose payload does not decode into its task's type.
pub(crate) fn undecodable_payload(task: &str, error: &dyn std::fmt::Display) -> String {
    format!("could not decode the payload for task `{task}`: {error}")
}

/// Stored on a job whose worker panicked outside the task's own future.
pub(crate) const WORKER_PANICKED_MESSAGE: &str = "the worker panicked while running this job";

/// The longest failure message stored, in bytes.
const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// A failure message PostgreSQL can store: NUL characters (which `text`
/// cannot hold) become U+FFFD, and the length is bounded.
pub(crate) fn storable_message(message: &str) -> String {
    let mut out = if message.contains('\0') {
        message.replace('\0', "\u{FFFD}")
    } else {
        message.to_owned()
    };
    if out.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("… (truncated)");
    }
    out
}

/// Sends a running job's outcome, or, if the job's task ends without one (a
/// panic outside the task's own future, or the task being dropped), a
/// failure, so that no claimed job is left locked while the worker lives.
pub(crate) struct OutcomeGuard {
    pub(crate) claim: ClaimRef,
    pub(crate) queued: bool,
    pub(crate) completer: Option<Completer>,
}

impl OutcomeGuard {
    pub(crate) fn send(mut self, outcome: Outcome) {
        if let Some(completer) = self.completer.take() {
            // A finished queued job unlocks its queue; an interrupted one
            // can run again at once.
            let frees_work = self.queued
                || matches!(
                    outcome,
                    Outcome::Failed {
                        how: Failure::Interrupted,
                        ..
                    }
                );
            completer.send(self.claim, outcome, frees_work);
        }
    }
}

impl Drop for OutcomeGuard {
    fn drop(&mut self) {
        let Some(completer) = self.completer.take() else {
            return;
        };
        let outcome = if std::thread::panicking() {
            Outcome::Failed {
                message: WORKER_PANICKED_MESSAGE.into(),
                how: Failure::Retry,
                payload: None,
            }
        } else {
            Outcome::Failed {
                message: SHUTDOWN_MESSAGE.into(),
                how: Failure::Interrupted,
                payload: None,
            }
        };
        completer.send(self.claim, outcome, true);
    }
}

/// Fails the claimed jobs that could not be read and hands back those to be
/// given back; both stay in `held` until written.
pub(crate) fn settle_rejects(held: &HeldJobs, completer: &Completer, batch: &ClaimBatch) {
    if batch.unreadable.is_empty() && batch.give_back.is_empty() {
        return;
    }
    {
        let mut held = lock_held(held);
        held.extend(batch.unreadable.iter().map(|(claim, _)| claim.id));
        held.extend(batch.give_back.iter().map(|claim| claim.id));
    }
    for (claim, message) in &batch.unreadable {
        tracing::error!(job_id = claim.id, "{message}");
        let outcome = Outcome::Failed {
            message: message.clone(),
            how: Failure::Retry,
            payload: None,
        };
        // It may have held its named queue, which unlocks now.
        completer.send(*claim, outcome, true);
    }
    for claim in &batch.give_back {
        completer.send(*claim, Outcome::Returned, true);
    }
}

/// Hands back, through the writer, jobs claimed but never to be started.
pub(crate) fn give_back_claimed(held: &HeldJobs, completer: &Completer, jobs: Vec<Job>) {
    lock_held(held).extend(jobs.iter().map(|j| j.id));
    for job in jobs {
        completer.send(ClaimRef::of(&job), Outcome::Returned, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_lose_nul_and_excess_length() {
        assert_eq!(storable_message("bad\0byte"), "bad\u{FFFD}byte");
        assert_eq!(storable_message("fine"), "fine");
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let stored = storable_message(&long);
        assert!(stored.len() <= MAX_MESSAGE_BYTES + "… (truncated)".len());
        assert!(stored.ends_with("… (truncated)"));
    }
}

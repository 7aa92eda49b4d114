//! What a running task can see: its job, the utilities, and shutdown.

use std::sync::Arc;

use tokio::sync::watch;

use crate::job::Job;
use crate::worker_utils::WorkerUtils;

/// Handed to every task run: the job being run, a [`WorkerUtils`] for
/// enqueueing follow-up jobs, and a signal that fires when the worker shuts
/// down.
///
/// ```no_run
/// use graphile_worker::{task, JobContext};
///
/// #[task]
/// async fn crunch(ctx: JobContext, rounds: u32) {
///     for _ in 0..rounds {
///         if ctx.is_cancelled() {
///             return; // the worker is shutting down; stop early
///         }
///         // ... one round of work ...
///     }
/// }
/// ```
#[derive(Clone, Debug)]
pub struct JobContext {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    job: Job,
    utils: WorkerUtils,
    cancel: watch::Receiver<bool>,
}

impl JobContext {
    pub(crate) fn new(job: Job, utils: WorkerUtils, cancel: watch::Receiver<bool>) -> Self {
        Self {
            inner: Arc::new(Inner { job, utils, cancel }),
        }
    }

    /// The job being run (id, attempts, queue, key, run_at, payload, ...).
    pub fn job(&self) -> &Job {
        &self.inner.job
    }

    /// The job id.
    pub fn job_id(&self) -> i64 {
        self.inner.job.id
    }

    /// This attempt's number, starting at 1.
    pub fn attempts(&self) -> i16 {
        self.inner.job.attempts
    }

    /// Attempts allowed in all.
    pub fn max_attempts(&self) -> i16 {
        self.inner.job.max_attempts
    }

    /// Utilities bound to the worker's pool and schema, for follow-up jobs.
    pub fn utils(&self) -> &WorkerUtils {
        &self.inner.utils
    }

    /// Whether the worker has asked running tasks to stop.
    pub fn is_cancelled(&self) -> bool {
        *self.inner.cancel.borrow()
    }

    /// Completes when the worker starts shutting down. Running tasks then
    /// have the shutdown grace period to finish; use this in
    /// `tokio::select!` to stop early. A task that returns an error after
    /// this fired is recorded as interrupted: it keeps its attempt and is
    /// retried.
    pub async fn cancelled(&self) {
        let mut rx = self.inner.cancel.clone();
        // An error means the sender is gone, which also means "stop".
        let _ = rx.wait_for(|cancelled| *cancelled).await;
    }
}

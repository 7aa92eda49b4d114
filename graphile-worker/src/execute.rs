//! Running one claimed job: decode, run, catch panics, report the outcome.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::watch;
use tracing::Instrument;

use crate::context::JobContext;
use crate::job::Job;
use crate::outcome::{self, Outcome, SHUTDOWN_MESSAGE};
use crate::registry::{Handler, TaskFuture};
use crate::task::TaskError;
use crate::worker_utils::WorkerUtils;

/// What stops a task at once: the message to record when it fires (the
/// shutdown grace period is over, or the worker lost its heartbeat), and a
/// second shutdown signal.
pub(crate) type Aborts = (watch::Receiver<Option<&'static str>>, watch::Receiver<bool>);

/// Runs `job` and returns what to record; logs the outcome inside the
/// job's span.
pub(crate) async fn run_job(job: Job, with: RunWith) -> Outcome {
    let span = tracing::info_span!(
        "job",
        job.id = job.id,
        job.task = %job.task_identifier,
        job.queue = job.queue_name.as_deref().unwrap_or(""),
        job.attempt = job.attempts,
        job.outcome = tracing::field::Empty,
        job.duration_ms = tracing::field::Empty,
    );
    let started = Instant::now();
    let about = About {
        id: job.id,
        identifier: job.task_identifier.clone(),
        attempts: job.attempts,
        max_attempts: job.max_attempts,
    };
    let outcome = run_task(job, with).instrument(span.clone()).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    span.record("job.duration_ms", ms);
    span.record("job.outcome", outcome_label(&about, &outcome));
    let _entered = span.enter();
    log_outcome(&about, &outcome, ms);
    outcome
}

/// What a job runs with, besides itself.
pub(crate) struct RunWith {
    /// The task's handler; `None` for a task this worker does not have.
    pub(crate) handler: Option<Handler>,
    pub(crate) utils: WorkerUtils,
    /// What the task sees through [`JobContext`]: stop when you can.
    pub(crate) cancel: watch::Receiver<bool>,
    /// Stop now (the task is dropped at its current await).
    pub(crate) aborts: Aborts,
}

/// What the log lines say about a job.
struct About {
    id: i64,
    identifier: String,
    attempts: i16,
    max_attempts: i16,
}

/// Decodes the payload, runs the task, catches panics, and stops the task
/// when told to.
async fn run_task(job: Job, with: RunWith) -> Outcome {
    let RunWith {
        handler,
        utils,
        cancel,
        aborts,
    } = with;
    let failed = |message: String| Outcome::Failed {
        message,
        interrupted: false,
    };
    let Some(handler) = handler else {
        return failed(outcome::unknown_task(&job.task_identifier));
    };
    let ctx = JobContext::new(job, utils, cancel.clone());
    // Decoding the payload and any synchronous start of the task run here,
    // before its future exists: a panic there fails the job too.
    let future = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(ctx))) {
        Ok(Ok(future)) => future,
        Ok(Err(e)) => return failed(e.to_string()),
        Err(panic) => return failed(outcome::task_panicked(&panic_message(panic))),
    };
    // The task runs inside this job's own tokio task; a panic in it is
    // caught here and becomes the job's failure.
    tokio::select! {
        result = CatchUnwind(future) => match result {
            Ok(Ok(())) => Outcome::Completed,
            Ok(Err(e)) => Outcome::Failed {
                message: e.to_string(),
                // An error returned after shutdown began is the task
                // honouring the cancellation: it keeps its attempt.
                interrupted: *cancel.borrow(),
            },
            Err(panic) => failed(outcome::task_panicked(&panic_message(panic))),
        },
        // Dropping the task's future stops it at its current await.
        message = aborted(aborts) => {
            Outcome::Failed { message: message.to_string(), interrupted: true }
        }
    }
}

/// The job span's `job.outcome` field.
fn outcome_label(about: &About, outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Completed => "success",
        Outcome::Failed {
            interrupted: true, ..
        } => "interrupted",
        Outcome::Failed { .. } if about.attempts >= about.max_attempts => "permanently_failed",
        Outcome::Failed { .. } => "failed",
        Outcome::Returned => "returned",
    }
}

/// Logs a job's outcome in Node's words.
fn log_outcome(about: &About, outcome: &Outcome, ms: f64) {
    let About {
        id,
        identifier,
        attempts,
        max_attempts,
    } = about;
    match outcome {
        Outcome::Completed => {
            tracing::info!(
                "Completed task {id} ({identifier}, {ms:.2}ms, attempt {attempts} of {max_attempts}) with success"
            );
        }
        Outcome::Failed {
            message,
            interrupted: true,
        } => {
            tracing::warn!("Interrupted task {id} ({identifier}, {ms:.2}ms): '{message}'");
        }
        Outcome::Failed { message, .. } if attempts >= max_attempts => {
            tracing::error!(
                "Failed task {id} ({identifier}, {ms:.2}ms, attempt {attempts} of {max_attempts}) with error '{message}'; no attempts left"
            );
        }
        Outcome::Failed { message, .. } => {
            tracing::warn!(
                "Failed task {id} ({identifier}, {ms:.2}ms, attempt {attempts} of {max_attempts}) with error '{message}'; will retry"
            );
        }
        Outcome::Returned => {}
    }
}

/// Completes, with the message to record, when either receiver fires (a
/// closed channel never does: its sender is only dropped once nobody can
/// abort any more).
async fn aborted((mut why, mut now): Aborts) -> &'static str {
    async fn reason(rx: &mut watch::Receiver<Option<&'static str>>) -> &'static str {
        let fired = rx.wait_for(|v| v.is_some()).await.map(|v| *v);
        match fired {
            Ok(message) => message.unwrap_or(SHUTDOWN_MESSAGE),
            Err(_) => std::future::pending().await,
        }
    }
    async fn fired(rx: &mut watch::Receiver<bool>) -> &'static str {
        if rx.wait_for(|v| *v).await.is_err() {
            std::future::pending::<()>().await;
        }
        SHUTDOWN_MESSAGE
    }
    tokio::select! {
        message = reason(&mut why) => message,
        message = fired(&mut now) => message,
    }
}

/// Polls a task future, turning a panic during a poll into an error.
struct CatchUnwind(TaskFuture);

impl Future for CatchUnwind {
    type Output = Result<Result<(), TaskError>, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

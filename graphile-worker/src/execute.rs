//! Running one claimed job: decode, run, catch panics, report the outcome.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::watch;
use tracing::Instrument;

use crate::completion::Outcome;
use crate::context::JobContext;
use crate::job::Job;
use crate::registry::{Handler, TaskFuture};
use crate::task::TaskError;
use crate::worker_utils::WorkerUtils;

/// Message stored on jobs that a shutdown interrupted.
pub(crate) const SHUTDOWN_MESSAGE: &str =
    "worker shutting down: the job was interrupted before it finished and will be retried";

/// Runs `job` with `handler` and returns what to record.
///
/// `cancel` is what the task sees through [`JobContext`]; either of `aborts`
/// fires when the task must stop now (the shutdown grace period is over, a
/// second shutdown signal came, or the worker lost its heartbeat).
pub(crate) async fn run_job(
    job: Job,
    handler: Option<Handler>,
    utils: WorkerUtils,
    cancel: watch::Receiver<bool>,
    aborts: [watch::Receiver<bool>; 2],
) -> Outcome {
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
    let id = job.id;
    let identifier = job.task_identifier.clone();
    let (attempts, max_attempts) = (job.attempts, job.max_attempts);

    let outcome = async {
        let Some(handler) = handler else {
            return Outcome::Failed {
                message: format!("no task called `{identifier}` is registered on this worker"),
                interrupted: false,
            };
        };
        let ctx = JobContext::new(job, utils, cancel.clone());
        // Decoding the payload and any synchronous start of the task run
        // here, before its future exists: a panic there fails the job too.
        let future = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(ctx))) {
            Ok(Ok(future)) => future,
            Ok(Err(e)) => {
                return Outcome::Failed {
                    message: e.to_string(),
                    interrupted: false,
                };
            }
            Err(panic) => {
                return Outcome::Failed {
                    message: format!("task panicked: {}", panic_message(panic)),
                    interrupted: false,
                };
            }
        };
        // The task runs inside this job's own tokio task; a panic in it is
        // caught here and becomes the job's failure.
        let task = CatchUnwind(future);
        tokio::select! {
            result = task => match result {
                Ok(Ok(())) => Outcome::Completed,
                Ok(Err(e)) => Outcome::Failed {
                    message: e.to_string(),
                    // An error returned after shutdown began is the task
                    // honouring the cancellation: it keeps its attempt.
                    interrupted: *cancel.borrow(),
                },
                Err(panic) => Outcome::Failed {
                    message: format!("task panicked: {}", panic_message(panic)),
                    interrupted: false,
                },
            },
            // Dropping the task's future stops it at its current await.
            _ = aborted(aborts) => {
                Outcome::Failed { message: SHUTDOWN_MESSAGE.to_string(), interrupted: true }
            }
        }
    }
    .instrument(span.clone())
    .await;

    let ms = started.elapsed().as_secs_f64() * 1000.0;
    span.record("job.duration_ms", ms);
    let _entered = span.enter();
    match &outcome {
        Outcome::Completed => {
            span.record("job.outcome", "success");
            tracing::info!(
                "Completed task {id} ({identifier}, {ms:.2}ms, attempt {attempts} of {max_attempts}) with success"
            );
        }
        Outcome::Failed {
            message,
            interrupted: true,
        } => {
            span.record("job.outcome", "interrupted");
            tracing::warn!(
                "Interrupted task {id} ({identifier}, {ms:.2}ms) by shutdown: '{message}'; it will be retried"
            );
        }
        Outcome::Failed { message, .. } => {
            if attempts >= max_attempts {
                span.record("job.outcome", "permanently_failed");
                tracing::error!(
                    "Failed task {id} ({identifier}, {ms:.2}ms, attempt {attempts} of {max_attempts}) with error '{message}'; no attempts left"
                );
            } else {
                span.record("job.outcome", "failed");
                tracing::warn!(
                    "Failed task {id} ({identifier}, {ms:.2}ms, attempt {attempts} of {max_attempts}) with error '{message}'; will retry"
                );
            }
        }
        Outcome::Returned => {}
    }
    outcome
}

/// Completes when either receiver turns true (a closed channel never does:
/// its sender is only dropped once nobody can abort any more).
async fn aborted([mut a, mut b]: [watch::Receiver<bool>; 2]) {
    async fn fired(rx: &mut watch::Receiver<bool>) {
        if rx.wait_for(|v| *v).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
    tokio::select! {
        _ = fired(&mut a) => {}
        _ = fired(&mut b) => {}
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

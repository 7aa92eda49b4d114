//! Running one claimed job: decode, run, catch panics, report the outcome.

use std::time::Instant;

use tokio::sync::watch;
use tracing::Instrument;

use crate::completion::Outcome;
use crate::context::JobContext;
use crate::job::Job;
use crate::registry::Handler;
use crate::worker_utils::WorkerUtils;

/// Message stored on jobs that a shutdown interrupted.
pub(crate) const SHUTDOWN_MESSAGE: &str =
    "worker shutting down: the job was interrupted before it finished and will be retried";

/// Runs `job` with `handler` and returns what to record.
///
/// `cancel` is what the task sees through [`JobContext`]; `abort` fires when
/// the shutdown grace period is over and the task must stop now.
pub(crate) async fn run_job(
    job: Job,
    handler: Option<Handler>,
    utils: WorkerUtils,
    cancel: watch::Receiver<bool>,
    mut abort: watch::Receiver<bool>,
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
        let future = match handler(ctx) {
            Ok(future) => future,
            Err(e) => {
                return Outcome::Failed {
                    message: e.to_string(),
                    interrupted: false,
                };
            }
        };
        let mut task = tokio::spawn(future.in_current_span());
        tokio::select! {
            joined = &mut task => match joined {
                Ok(Ok(())) => Outcome::Completed,
                Ok(Err(e)) => Outcome::Failed {
                    message: e.to_string(),
                    // An error returned after shutdown began is the task
                    // honouring the cancellation: it keeps its attempt.
                    interrupted: *cancel.borrow(),
                },
                Err(e) if e.is_panic() => Outcome::Failed {
                    message: format!("task panicked: {}", panic_message(e.into_panic())),
                    interrupted: false,
                },
                Err(_) => Outcome::Failed {
                    message: SHUTDOWN_MESSAGE.to_string(),
                    interrupted: true,
                },
            },
            _ = abort.wait_for(|a| *a) => {
                task.abort();
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

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

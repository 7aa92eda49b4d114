//! Running one claimed job: decode, run, catch panics, report the outcome.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::watch;
use tracing::Instrument;

use crate::context::JobContext;
use crate::data::DataMap;
use crate::events::{Events, JobEvent, WorkerEvent};
use crate::job::Job;
use crate::outcome::{self, Failure, Outcome, SHUTDOWN_MESSAGE};
use crate::panics;
use crate::registry::{Chain, Handler, MiddlewareFn, Next, TaskFuture};
use crate::task::TaskError;
use crate::worker_utils::WorkerUtils;

/// What stops a task at once: the message to record when it fires (the
/// shutdown grace period is over, or the worker lost its heartbeat), and a
/// second shutdown signal.
pub(crate) type Aborts = (watch::Receiver<Option<&'static str>>, watch::Receiver<bool>);

/// Runs `job` and returns what to record; logs the outcome inside the
/// job's span.
pub(crate) async fn run_job(job: Job, mut with: RunWith) -> Outcome {
    let span = tracing::info_span!(
        "job",
        job.id = job.id,
        job.task = %job.task_identifier,
        job.queue = job.queue_name.as_deref().unwrap_or(""),
        job.attempt = job.attempts,
        job.outcome = tracing::field::Empty,
        job.duration_ms = tracing::field::Empty,
    );
    #[cfg(feature = "opentelemetry")]
    crate::otel::continue_trace(&span, &job);
    let started = Instant::now();
    let events = std::mem::take(&mut with.events);
    let observed = events
        .enabled()
        .then(|| JobEvent::of(&job, chrono::Utc::now()));
    if let Some(job) = &observed {
        events.emit(|| WorkerEvent::JobStarted { job: job.clone() });
    }
    let about = About {
        id: job.id,
        identifier: job.task_identifier.clone(),
        attempts: job.attempts,
        max_attempts: job.max_attempts,
    };
    let outcome = run_task(job, with).instrument(span.clone()).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    // Tenths of a millisecond: finer is noise, coarser hides fast jobs.
    span.record("job.duration_ms", (ms * 10.0).round() / 10.0);
    span.record("job.outcome", outcome_label(&about, &outcome));
    let _entered = span.enter();
    log_outcome(&about, &outcome, ms);
    if let Some(job) = observed {
        events.emit(|| ended(job, &outcome, started.elapsed()));
    }
    outcome
}

/// The event for a job that ended with `outcome`.
fn ended(job: JobEvent, outcome: &Outcome, duration: std::time::Duration) -> WorkerEvent {
    match outcome {
        Outcome::Completed => WorkerEvent::JobCompleted { job, duration },
        Outcome::Failed {
            how: Failure::Interrupted,
            ..
        }
        | Outcome::Returned => WorkerEvent::JobInterrupted { job, duration },
        Outcome::Failed { message, how } => WorkerEvent::JobFailed {
            will_retry: *how == Failure::Retry && job.attempt < job.max_attempts,
            job,
            duration,
            error: message.clone(),
        },
    }
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
    /// The worker's shared values.
    pub(crate) data: Arc<DataMap>,
    /// A payload that does not decode fails the job for a retry rather
    /// than permanently.
    pub(crate) retry_undecodable: bool,
    /// Who observes the job's start and end.
    pub(crate) events: Events,
    /// Wraps the job's run, outermost first.
    pub(crate) middleware: Chain,
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
        data,
        retry_undecodable,
        events: _,
        middleware,
    } = with;
    let failed = |message: String, how: Failure| Outcome::Failed { message, how };
    let Some(handler) = handler else {
        return failed(outcome::unknown_task(&job.task_identifier), Failure::Retry);
    };
    let ctx = JobContext::new(job, utils, cancel.clone(), data);
    // Decoding the payload and any synchronous start of the task run here,
    // before its future exists: a panic there fails the job too. A payload
    // that does not decode cannot decode on a retry either, unless a deploy
    // changes the type (`retry_undecodable`).
    let future = if middleware.0.is_empty() {
        match panics::catch(|| handler.start(ctx)) {
            Ok(Ok(future)) => future,
            Ok(Err(e)) if retry_undecodable => return failed(e.to_string(), Failure::Retry),
            Ok(Err(e)) => return failed(e.to_string(), Failure::Permanent),
            Err(detail) => return failed(outcome::task_panicked(&detail), Failure::Retry),
        }
    } else {
        match panics::catch(|| wrapped(handler, &middleware.0, retry_undecodable)(ctx)) {
            Ok(future) => future,
            Err(detail) => return failed(outcome::task_panicked(&detail), Failure::Retry),
        }
    };
    // The task runs inside this job's own tokio task; a panic in it is
    // caught here and becomes the job's failure.
    tokio::select! {
        result = CatchUnwind(future) => match result {
            Ok(Ok(())) => Outcome::Completed,
            Ok(Err(e)) => {
                let how = if e.is_permanent() {
                    Failure::Permanent
                } else if *cancel.borrow() {
                    // An error returned after shutdown began is the task
                    // honouring the cancellation: it keeps its attempt.
                    Failure::Interrupted
                } else {
                    Failure::Retry
                };
                failed(e.message().to_owned(), how)
            }
            Err(detail) => failed(outcome::task_panicked(&detail), Failure::Retry),
        },
        // Dropping the task's future stops it at its current await.
        message = aborted(aborts) => failed(message.to_owned(), Failure::Interrupted),
    }
}

/// The job's run inside its middleware: the innermost step decodes the
/// payload and starts the task; a payload that does not decode becomes the
/// task's error (permanent unless `retry_undecodable`).
fn wrapped(
    handler: Handler,
    middleware: &[Arc<MiddlewareFn>],
    retry_undecodable: bool,
) -> Box<dyn FnOnce(JobContext) -> TaskFuture + Send> {
    let mut next: Box<dyn FnOnce(JobContext) -> TaskFuture + Send> =
        Box::new(move |ctx| match handler.start(ctx) {
            Ok(future) => future,
            Err(e) => {
                let e = if retry_undecodable {
                    e
                } else {
                    TaskError::permanent(e.message())
                };
                Box::pin(std::future::ready(Err(e)))
            }
        });
    for around in middleware.iter().rev() {
        let around = around.clone();
        let rest = next;
        next = Box::new(move |ctx| around(ctx, Next::new(rest)));
    }
    next
}

/// The job span's `job.outcome` field.
fn outcome_label(about: &About, outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Completed => "success",
        Outcome::Failed {
            how: Failure::Interrupted,
            ..
        } => "interrupted",
        Outcome::Failed {
            how: Failure::Permanent,
            ..
        } => "permanently_failed",
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
            how: Failure::Interrupted,
        } => {
            tracing::warn!("Interrupted task {id} ({identifier}, {ms:.2}ms): '{message}'");
        }
        Outcome::Failed {
            message,
            how: Failure::Permanent,
        } => {
            tracing::error!(
                "Failed task {id} ({identifier}, {ms:.2}ms, attempt {attempts} of {max_attempts}) with error '{message}'; failed permanently, it will not be retried"
            );
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

/// Polls a task future, turning a panic during a poll into an error (the
/// text [`panics::catch`] gives).
struct CatchUnwind(TaskFuture);

impl Future for CatchUnwind {
    type Output = Result<Result<(), TaskError>, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = &mut self.0;
        match panics::catch(|| future.as_mut().poll(cx)) {
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(detail) => Poll::Ready(Err(detail)),
        }
    }
}

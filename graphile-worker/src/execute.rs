//! Running one claimed job: decode, run, catch panics, report the outcome.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::Instrument;

use crate::cancel::{Running, cancelled_message};
use crate::context::{CancelReason, JobContext};
use crate::data::DataMap;
use crate::events::{Events, JobEvent, WorkerEvent};
use crate::job::Job;
use crate::outcome::{self, Failure, Outcome, SHUTDOWN_MESSAGE};
use crate::panics;
use crate::policy::RetryPolicy;
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
        Outcome::Snoozed(delay) => WorkerEvent::JobSnoozed {
            job,
            duration,
            delay: *delay,
        },
        Outcome::Failed { message, how, .. } => WorkerEvent::JobFailed {
            will_retry: how.retries() && job.attempt < job.max_attempts,
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
    /// The task's time limit and retry policy.
    pub(crate) limits: JobLimits,
    /// Fires with the reason when the job is cancelled; registered while
    /// the job runs.
    pub(crate) cancellation: Option<(watch::Receiver<Option<String>>, Running)>,
}

/// What the task's policy says about one run.
#[derive(Clone, Debug, Default)]
pub(crate) struct JobLimits {
    /// Stop the task after this long.
    pub(crate) timeout: Option<Duration>,
    /// Delays between attempts; `None` keeps Node's formula.
    pub(crate) retry: Option<RetryPolicy>,
    /// How long a task told to stop (time limit, cancellation) has before
    /// it is dropped.
    pub(crate) grace: Duration,
}

/// What the log lines say about a job.
struct About {
    id: i64,
    identifier: String,
    attempts: i16,
    max_attempts: i16,
}

/// Decodes the payload, runs the task, catches panics, and stops the task
/// when told to; a retry waits as the task's retry policy says.
async fn run_task(job: Job, with: RunWith) -> Outcome {
    let attempts = job.attempts;
    let retry = with.limits.retry.clone();
    match run_task_inner(job, with).await {
        Outcome::Failed {
            message,
            how: Failure::Retry,
            payload,
        } if retry.is_some() => {
            let delay = retry
                .map(|p| p.jittered_delay(attempts))
                .unwrap_or_default();
            Outcome::Failed {
                message,
                how: Failure::RetryAfter(delay),
                payload,
            }
        }
        outcome => outcome,
    }
}

async fn run_task_inner(job: Job, with: RunWith) -> Outcome {
    let RunWith {
        handler,
        utils,
        cancel,
        aborts,
        data,
        retry_undecodable,
        events: _,
        middleware,
        limits,
        cancellation,
    } = with;
    let failed = |message: String, how: Failure| Outcome::Failed {
        message,
        how,
        payload: None,
    };
    let Some(handler) = handler else {
        return failed(outcome::unknown_task(&job.task_identifier), Failure::Retry);
    };
    // Kept until the outcome is known: the job stays cancellable.
    let (mut requested, _running) = match cancellation {
        Some((rx, running)) => (Some(rx), Some(running)),
        None => (None, None),
    };
    // Cancelled while it waited in the local queue: never started.
    if let Some(reason) = requested.as_ref().and_then(|rx| rx.borrow().clone()) {
        return failed(cancelled_message(&reason), Failure::Permanent);
    }
    let (stop, stopped) = watch::channel(None);
    let ctx = JobContext::new(job, utils, cancel.clone(), stopped, data);
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
    let mut future = CatchUnwind(future);
    let aborted = aborted(aborts);
    tokio::pin!(aborted);
    let reason = tokio::select! {
        result = &mut future => return finished(result, &cancel),
        // Dropping the task's future stops it at its current await.
        message = &mut aborted => return failed(message.to_owned(), Failure::Interrupted),
        after = time_limit(limits.timeout) => CancelReason::TimedOut { after },
        reason = cancel_requested(requested.as_mut()) => CancelReason::Cancelled { reason },
    };
    // Told to stop: what is recorded no longer depends on what the task
    // returns; it has the grace period to return before it is dropped.
    let outcome = match &reason {
        CancelReason::Cancelled { reason } => failed(cancelled_message(reason), Failure::Permanent),
        other => failed(other.to_string(), Failure::Retry),
    };
    tracing::debug!("{reason}; the task has {:?} to stop", limits.grace);
    stop.send_replace(Some(reason));
    tokio::select! {
        _ = &mut future => {}
        () = tokio::time::sleep(limits.grace) => {
            tracing::warn!("the task did not stop within {:?}; dropped", limits.grace);
        }
        _ = &mut aborted => {}
    }
    outcome
}

/// The outcome of a task that returned (or panicked) by itself.
fn finished(
    result: Result<Result<(), TaskError>, String>,
    cancel: &watch::Receiver<bool>,
) -> Outcome {
    let failed = |message: String, how: Failure| Outcome::Failed {
        message,
        how,
        payload: None,
    };
    match result {
        Ok(Ok(())) => Outcome::Completed,
        Ok(Err(e)) => {
            if let Some(delay) = e.snoozed_for() {
                return Outcome::Snoozed(delay);
            }
            let how = if e.is_permanent() {
                Failure::Permanent
            } else if *cancel.borrow() {
                // An error returned after shutdown began is the task
                // honouring the cancellation: it keeps its attempt.
                Failure::Interrupted
            } else if let Some(delay) = e.retry_delay() {
                Failure::RetryAfter(delay)
            } else {
                Failure::Retry
            };
            Outcome::Failed {
                message: e.message().to_owned(),
                how,
                payload: e.replacement_payload().map(str::to_owned),
            }
        }
        Err(detail) => failed(outcome::task_panicked(&detail), Failure::Retry),
    }
}

/// Completes when the time limit, if any, has passed; returns the limit.
async fn time_limit(limit: Option<Duration>) -> Duration {
    match limit {
        Some(limit) => {
            tokio::time::sleep(limit).await;
            limit
        }
        None => std::future::pending().await,
    }
}

/// Completes with the reason when the job is cancelled.
async fn cancel_requested(requested: Option<&mut watch::Receiver<Option<String>>>) -> String {
    if let Some(rx) = requested
        && let Ok(reason) = rx.wait_for(|r| r.is_some()).await
        && let Some(reason) = reason.clone()
    {
        return reason;
    }
    std::future::pending().await
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
        Outcome::Snoozed(_) => "snoozed",
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
            ..
        } => {
            tracing::warn!("Interrupted task {id} ({identifier}, {ms:.2}ms): '{message}'");
        }
        Outcome::Failed {
            message,
            how: Failure::Permanent,
            ..
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
        Outcome::Snoozed(delay) => {
            tracing::info!(
                "Snoozed task {id} ({identifier}, {ms:.2}ms); it runs again in {}",
                crate::policy::human_duration(*delay)
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

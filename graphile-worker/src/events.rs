//! Lifecycle events: what a worker does, delivered to the observers
//! registered with [`WorkerOptions::on_event`](crate::WorkerOptions::on_event).
//!
//! An observer is called on the engine's own task, synchronously, as the
//! event happens: keep it quick (count, record, or send to a channel). A
//! worker with no observer builds no event.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::job::Job;

/// Something that happened in a worker. Node graphile-worker's nearest
/// event name is given for each, for code being ported.
///
/// ```
/// use graphile_worker::WorkerEvent;
///
/// fn describe(event: &WorkerEvent) -> Option<String> {
///     match event {
///         WorkerEvent::JobCompleted { job, duration } => {
///             Some(format!("job {} ({}) took {duration:?}", job.id, job.task))
///         }
///         WorkerEvent::JobFailed { job, will_retry: false, error, .. } => {
///             Some(format!("job {} failed for good: {error}", job.id))
///         }
///         _ => None,
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum WorkerEvent {
    /// A run began (`run` or `run_once`). Node: `worker:create`.
    WorkerStarted {
        /// The worker's pool id (the `locked_by` of its jobs).
        worker_id: String,
    },
    /// A run ended, every job's outcome written. Node: `worker:stop`.
    WorkerStopped {
        /// The worker's pool id.
        worker_id: String,
    },
    /// A job started. Node: `job:start`.
    JobStarted {
        /// The job.
        job: JobEvent,
    },
    /// A job succeeded. Node: `job:success`.
    JobCompleted {
        /// The job.
        job: JobEvent,
        /// How long it ran.
        duration: Duration,
    },
    /// A job failed (returned an error or panicked). Node: `job:error`,
    /// and `job:failed` when it will not be retried.
    JobFailed {
        /// The job.
        job: JobEvent,
        /// How long it ran.
        duration: Duration,
        /// The message stored as its `last_error`.
        error: String,
        /// Whether it runs again (attempts left and not permanent).
        will_retry: bool,
    },
    /// A job stopped by shutdown (or a lost heartbeat); it keeps its
    /// attempt and runs again.
    JobInterrupted {
        /// The job.
        job: JobEvent,
        /// How long it ran.
        duration: Duration,
    },
    /// A task snoozed ([`TaskError::snooze`](crate::TaskError::snooze)):
    /// not a failure; the job runs again after `delay`.
    JobSnoozed {
        /// The job.
        job: JobEvent,
        /// How long it ran.
        duration: Duration,
        /// How long it is put off.
        delay: Duration,
    },
    /// Claimed jobs given back unstarted (they waited too long in the local
    /// queue, or the run ended before they started).
    JobsHandedBack {
        /// How many.
        count: usize,
    },
    /// A claim came back. Node: `localQueue:getJobs:complete`.
    JobsClaimed {
        /// How many jobs it brought.
        count: usize,
        /// How long the claim took.
        duration: Duration,
    },
    /// A batch of outcomes was written.
    OutcomesWritten {
        /// How many jobs' outcomes.
        count: usize,
        /// How long the write took.
        duration: Duration,
    },
    /// A heartbeat did not reach the database.
    HeartbeatFailed {
        /// Why.
        error: String,
    },
    /// This worker recovered the jobs of workers whose heartbeat went
    /// stale.
    WorkersRecovered {
        /// The dead workers' pool ids.
        workers: Vec<String>,
        /// Jobs released for retry.
        jobs: i64,
    },
    /// Cron enqueued a job for one fire time. Node: `cron:schedule`
    /// (`cron:backfill` when `backfill`).
    CronJobScheduled {
        /// The schedule's identifier.
        identifier: String,
        /// The fire time.
        fire_time: DateTime<Utc>,
        /// A missed fire time, caught up.
        backfill: bool,
    },
    /// The LISTEN connection is up. Node: `pool:listen:success`.
    ListenerConnected,
    /// The LISTEN connection was lost; the worker polls until it is back.
    /// Node: `pool:listen:error`.
    ListenerDisconnected {
        /// Why.
        error: String,
    },
}

/// The job an event is about.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct JobEvent {
    /// The job's id.
    pub id: i64,
    /// Its task identifier.
    pub task: String,
    /// Its named queue, if any.
    pub queue: Option<String>,
    /// This attempt's number (1 for the first).
    pub attempt: i16,
    /// Attempts allowed.
    pub max_attempts: i16,
    /// When it was due.
    pub run_at: DateTime<Utc>,
    /// How long it waited past `run_at` before it started.
    pub waited: Duration,
}

impl JobEvent {
    pub(crate) fn of(job: &Job, started: DateTime<Utc>) -> Self {
        JobEvent {
            id: job.id,
            task: job.task_identifier.clone(),
            queue: job.queue_name.clone(),
            attempt: job.attempts,
            max_attempts: job.max_attempts,
            run_at: job.run_at,
            waited: (started - job.run_at).to_std().unwrap_or_default(),
        }
    }
}

/// An observer of [`WorkerEvent`]s.
pub(crate) type Observer = Arc<dyn Fn(&WorkerEvent) + Send + Sync>;

/// The observers of one worker; cheap to clone and to call when empty.
#[derive(Clone, Default)]
pub(crate) struct Events {
    observers: Arc<[Observer]>,
}

impl Events {
    /// These observers and one more.
    pub(crate) fn with(&self, observer: Observer) -> Self {
        let mut observers = self.observers.to_vec();
        observers.push(observer);
        Self {
            observers: observers.into(),
        }
    }

    /// Whether anyone listens (so callers can skip preparing an event).
    pub(crate) fn enabled(&self) -> bool {
        !self.observers.is_empty()
    }

    /// Builds the event only if someone listens, and gives it to each
    /// observer. An observer that panics is logged and the engine goes on.
    pub(crate) fn emit(&self, make: impl FnOnce() -> WorkerEvent) {
        if self.observers.is_empty() {
            return;
        }
        let event = make();
        for observer in self.observers.iter() {
            let call = std::panic::AssertUnwindSafe(|| observer(&event));
            if std::panic::catch_unwind(call).is_err() {
                tracing::error!(?event, "an event observer panicked; the worker goes on");
            }
        }
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Events({} observers)", self.observers.len())
    }
}

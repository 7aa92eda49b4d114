//! What a running task can see: its job, the utilities, the worker's
//! shared values, and being asked to stop (shutdown, its time limit, or a
//! cancellation).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::data::{Data, DataMap, missing};
use crate::job::Job;
use crate::task::TaskError;
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
///             return; // asked to stop: shutdown, time limit or cancellation
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
    /// The worker is stopping.
    cancel: watch::Receiver<bool>,
    /// This job was told to stop, and why.
    stop: watch::Receiver<Option<CancelReason>>,
    data: Arc<DataMap>,
    /// Keeps both signals open in a context built for a test.
    _never_cancelled: Option<Arc<TestSignals>>,
}

/// The senders of a test context's signals, never used.
#[derive(Debug)]
struct TestSignals {
    _cancel: watch::Sender<bool>,
    _stop: watch::Sender<Option<CancelReason>>,
}

/// Why a running task is asked to stop; see [`JobContext::cancel_reason`].
///
/// ```
/// use graphile_worker::CancelReason;
/// let reason = CancelReason::Cancelled { reason: "customer asked".into() };
/// assert_eq!(reason.to_string(), "cancelled: customer asked");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelReason {
    /// The worker is shutting down (or lost its heartbeat): the job is
    /// given back and will run again.
    Shutdown,
    /// The job's time limit passed: it fails with `timed out after …` and
    /// is retried by its retry policy.
    TimedOut {
        /// The limit.
        after: Duration,
    },
    /// [`WorkerUtils::cancel_job`](crate::WorkerUtils::cancel_job) was
    /// called: the job fails permanently with `cancelled: <reason>`.
    Cancelled {
        /// What the caller gave.
        reason: String,
    },
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CancelReason::Shutdown => f.write_str("the worker is shutting down"),
            CancelReason::TimedOut { after } => {
                f.write_str(&crate::policy::timed_out_message(*after))
            }
            CancelReason::Cancelled { reason } => write!(f, "cancelled: {reason}"),
        }
    }
}

impl JobContext {
    pub(crate) fn new(
        job: Job,
        utils: WorkerUtils,
        cancel: watch::Receiver<bool>,
        stop: watch::Receiver<Option<CancelReason>>,
        data: Arc<DataMap>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                job,
                utils,
                cancel,
                stop,
                data,
                _never_cancelled: None,
            }),
        }
    }

    /// A context for calling a task function directly in a unit test, with
    /// no worker and no database: `job` is what the task sees (see
    /// [`Job::new`]), shared values are added with
    /// [`JobContextBuilder::data`], and the context is never cancelled.
    ///
    /// [`utils`](Self::utils) of such a context is bound to a pool that
    /// connects on first use (to `PGHOST`/`localhost` unless
    /// [`JobContextBuilder::utils`] gives real ones), so a task that only
    /// enqueues in some branches can still be called.
    ///
    /// ```
    /// use graphile_worker::{Job, JobContext};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let ctx = JobContext::builder(Job::new("send_email", serde_json::json!({"to": "a@example.com"})))
    ///     .data(String::from("noreply@example.com"))
    ///     .build();
    /// assert_eq!(ctx.job().task_identifier, "send_email");
    /// assert_eq!(&*ctx.data::<String>().unwrap(), "noreply@example.com");
    /// assert!(!ctx.is_cancelled());
    /// # }
    /// ```
    pub fn builder(job: Job) -> JobContextBuilder {
        JobContextBuilder {
            job,
            utils: None,
            data: DataMap::default(),
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

    /// The value of type `T` registered on the worker with
    /// [`WorkerOptions::data`](crate::WorkerOptions::data), for tasks
    /// written by hand (a `#[task]` function takes a `Data<T>` parameter
    /// instead). The error, when no such value was registered, says so and
    /// fails the job; list `T` in
    /// [`Task::required_data`](crate::Task::required_data) to have the
    /// worker refuse to start instead.
    ///
    /// ```
    /// use graphile_worker::{DataRequirement, JobContext, Task, TaskError};
    /// use serde::{Deserialize, Serialize};
    ///
    /// struct Config { greeting: String }
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Greet { name: String }
    ///
    /// impl Task for Greet {
    ///     const IDENTIFIER: &'static str = "greet";
    ///     async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
    ///         let config = ctx.data::<Config>()?;
    ///         println!("{}, {}", config.greeting, self.name);
    ///         Ok(())
    ///     }
    ///     fn required_data() -> Vec<DataRequirement> {
    ///         vec![DataRequirement::of::<Config>()]
    ///     }
    /// }
    /// ```
    pub fn data<T: Send + Sync + 'static>(&self) -> Result<Data<T>, TaskError> {
        self.inner
            .data
            .get::<T>()
            .ok_or_else(|| TaskError::new(missing(std::any::type_name::<T>())))
    }

    /// This context with `value` added for this job only: the task (and
    /// later middleware) read it with [`data`](Self::data), as a value the
    /// worker shares. For [`WorkerOptions::middleware`](crate::WorkerOptions::middleware)
    /// that derives something per job (a tenant, a trace parent). Unlike
    /// the worker's own values, it cannot be a `Data<T>` parameter of a
    /// `#[task]` (those are checked when the worker starts).
    ///
    /// ```
    /// use graphile_worker::{Job, JobContext};
    /// struct Tenant(&'static str);
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let ctx = JobContext::builder(Job::new("bill", serde_json::json!({}))).build();
    /// let ctx = ctx.with_data(Tenant("acme"));
    /// assert_eq!(ctx.data::<Tenant>().unwrap().0, "acme");
    /// # }
    /// ```
    pub fn with_data<T: Send + Sync + 'static>(self, value: T) -> JobContext {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            job: shared.job.clone(),
            utils: shared.utils.clone(),
            cancel: shared.cancel.clone(),
            stop: shared.stop.clone(),
            data: shared.data.clone(),
            _never_cancelled: shared._never_cancelled.clone(),
        });
        Arc::make_mut(&mut inner.data).insert(Arc::new(value));
        JobContext {
            inner: Arc::new(inner),
        }
    }

    /// Whether this task has been asked to stop: the worker is shutting
    /// down, the job's time limit passed, or the job was cancelled
    /// ([`cancel_reason`](Self::cancel_reason) says which).
    pub fn is_cancelled(&self) -> bool {
        *self.inner.cancel.borrow() || self.inner.stop.borrow().is_some()
    }

    /// Why this task is asked to stop, or `None` while it may go on. A
    /// time limit or a cancellation of this job comes first when the worker
    /// is also shutting down.
    ///
    /// ```
    /// use graphile_worker::{task, CancelReason, JobContext, TaskError};
    ///
    /// #[task]
    /// async fn export(ctx: JobContext, rows: u32) -> Result<(), TaskError> {
    ///     for _ in 0..rows {
    ///         match ctx.cancel_reason() {
    ///             None => {}
    ///             Some(CancelReason::Shutdown) => return Err(TaskError::new("stopped; will resume")),
    ///             Some(other) => return Err(TaskError::new(other.to_string())),
    ///         }
    ///         // ... one row ...
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        if let Some(reason) = self.inner.stop.borrow().clone() {
            return Some(reason);
        }
        (*self.inner.cancel.borrow()).then_some(CancelReason::Shutdown)
    }

    /// Completes when this task is asked to stop (see
    /// [`is_cancelled`](Self::is_cancelled)); use it in `tokio::select!`
    /// to stop early. The task then has a grace period (the worker's
    /// shutdown grace period, or its cancel grace period for a time limit
    /// or a cancellation) before it is dropped at its current await.
    ///
    /// What is recorded does not depend on what the task returns then: a
    /// job stopped by shutdown is given back (an error keeps its attempt),
    /// a timed-out job fails with `timed out after …` and a cancelled one
    /// with `cancelled: …`. A task that returns `Ok` during a shutdown
    /// completes its job.
    pub async fn cancelled(&self) {
        let mut cancel = self.inner.cancel.clone();
        let mut stop = self.inner.stop.clone();
        // An error means the sender is gone, which also means "stop".
        tokio::select! {
            _ = cancel.wait_for(|cancelled| *cancelled) => {}
            _ = stop.wait_for(|reason| reason.is_some()) => {}
        }
    }
}

/// Builds a [`JobContext`] for a unit test; see [`JobContext::builder`].
#[derive(Debug)]
pub struct JobContextBuilder {
    job: Job,
    utils: Option<WorkerUtils>,
    data: DataMap,
}

impl JobContextBuilder {
    /// Adds a shared value, as [`WorkerOptions::data`](crate::WorkerOptions::data) does.
    pub fn data<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.data.insert(Arc::new(value));
        self
    }

    /// The utilities the task sees (for a test database).
    pub fn utils(mut self, utils: WorkerUtils) -> Self {
        self.utils = Some(utils);
        self
    }

    /// The context.
    pub fn build(self) -> JobContext {
        let utils = self.utils.unwrap_or_else(|| {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .connect_lazy_with(sqlx::postgres::PgConnectOptions::new());
            WorkerUtils::new(pool, "graphile_worker")
        });
        let (never_cancelled, cancel) = watch::channel(false);
        let (never_stopped, stop) = watch::channel(None);
        JobContext {
            inner: Arc::new(Inner {
                job: self.job,
                utils,
                cancel,
                stop,
                data: Arc::new(self.data),
                _never_cancelled: Some(Arc::new(TestSignals {
                    _cancel: never_cancelled,
                    _stop: never_stopped,
                })),
            }),
        }
    }
}

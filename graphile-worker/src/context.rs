//! What a running task can see: its job, the utilities, the worker's
//! shared values, and shutdown.

use std::sync::Arc;

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
    data: Arc<DataMap>,
    /// Keeps `cancel` open in a context built for a test.
    _never_cancelled: Option<Arc<watch::Sender<bool>>>,
}

impl JobContext {
    pub(crate) fn new(
        job: Job,
        utils: WorkerUtils,
        cancel: watch::Receiver<bool>,
        data: Arc<DataMap>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                job,
                utils,
                cancel,
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
            data: shared.data.clone(),
            _never_cancelled: shared._never_cancelled.clone(),
        });
        Arc::make_mut(&mut inner.data).insert(Arc::new(value));
        JobContext {
            inner: Arc::new(inner),
        }
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
        JobContext {
            inner: Arc::new(Inner {
                job: self.job,
                utils,
                cancel,
                data: Arc::new(self.data),
                _never_cancelled: Some(Arc::new(never_cancelled)),
            }),
        }
    }
}

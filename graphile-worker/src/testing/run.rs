//! Running jobs inside a test, through the real claim and outcome
//! statements, with a report of what ran.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::database::TestDb;
use crate::claim::ClaimScope;
use crate::events::WorkerEvent;
use crate::spec::JobSpec;
use crate::task::Task;
use crate::worker::{ShutdownHandle, WorkerOptions};

/// How a job run by the helpers ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunOutcome {
    /// It succeeded and was deleted.
    Completed,
    /// It failed with `error` (its `last_error`); `will_retry` says whether
    /// it has attempts left.
    Failed {
        /// The message stored as `last_error`.
        error: String,
        /// Whether it will run again.
        will_retry: bool,
    },
    /// It snoozed for `delay`.
    Snoozed {
        /// How long it is put off.
        delay: Duration,
    },
    /// It was stopped before it finished (the run hit its job bound).
    Interrupted,
}

/// One job a run started, and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RanJob {
    /// The job's id.
    pub id: i64,
    /// Its task identifier.
    pub task: String,
    /// Its named queue.
    pub queue: Option<String>,
    /// Which attempt this was (1 for the first).
    pub attempt: i16,
    /// How it ended.
    pub outcome: RunOutcome,
}

impl RanJob {
    /// Whether it completed.
    pub fn completed(&self) -> bool {
        self.outcome == RunOutcome::Completed
    }

    /// The error it failed with, if it failed.
    pub fn error(&self) -> Option<&str> {
        match &self.outcome {
            RunOutcome::Failed { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl std::fmt::Display for RanJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "job {} `{}` (attempt {}): ",
            self.id, self.task, self.attempt
        )?;
        match &self.outcome {
            RunOutcome::Completed => f.write_str("completed"),
            RunOutcome::Failed { error, will_retry } => write!(
                f,
                "failed: {error}{}",
                if *will_retry { " (will retry)" } else { "" }
            ),
            RunOutcome::Snoozed { delay } => write!(f, "snoozed for {delay:?}"),
            RunOutcome::Interrupted => f.write_str("interrupted"),
        }
    }
}

/// What [`TestDb::run_jobs`] ran, in the order the runs ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunReport {
    /// Every run, one entry per attempt.
    pub jobs: Vec<RanJob>,
}

impl RunReport {
    /// The runs that completed.
    pub fn completed(&self) -> Vec<&RanJob> {
        self.jobs.iter().filter(|j| j.completed()).collect()
    }

    /// The runs that failed.
    pub fn failed(&self) -> Vec<&RanJob> {
        self.jobs.iter().filter(|j| j.error().is_some()).collect()
    }

    /// The runs of task `identifier`.
    pub fn of_task(&self, identifier: &str) -> Vec<&RanJob> {
        self.jobs.iter().filter(|j| j.task == identifier).collect()
    }

    /// Panics, listing the runs, unless every run completed.
    pub fn assert_all_completed(&self) {
        if self.jobs.iter().any(|j| !j.completed()) {
            panic!(
                "expected every job to complete, but {} of {} runs did not:\n{self}",
                self.jobs.iter().filter(|j| !j.completed()).count(),
                self.jobs.len()
            );
        }
    }
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.jobs.is_empty() {
            return f.write_str("  (no job ran)");
        }
        for (n, job) in self.jobs.iter().enumerate() {
            if n > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  {job}")?;
        }
        Ok(())
    }
}

/// A run of the due jobs, set up with its builder methods and started by
/// `.await`; see [`TestDb::run_jobs`].
#[must_use = "a run does nothing until it is awaited"]
pub struct RunJobs<'a> {
    db: &'a TestDb,
    options: Option<WorkerOptions>,
    include_scheduled: bool,
    task: Option<String>,
    queue: Option<String>,
    max_jobs: usize,
}

impl TestDb {
    /// Runs the due jobs of the registered tasks to completion, including
    /// the jobs they enqueue, and reports what ran. Jobs are claimed,
    /// completed and failed by a real worker on this database, as in
    /// production; failures are retried only when they are due again
    /// (see [`RunJobs::include_scheduled`]).
    ///
    /// ```
    /// use graphile_worker::task;
    /// use graphile_worker::testing::TestDb;
    ///
    /// #[task]
    /// async fn greet(name: String) -> Result<(), String> {
    ///     if name.is_empty() { Err("no name".into()) } else { Ok(()) }
    /// }
    ///
    /// # #[tokio::main] async fn main() {
    /// let db = TestDb::new().await;
    /// Greet::enqueue(db.utils(), Greet { name: "Ada".into() }).await.unwrap();
    /// Greet::enqueue(db.utils(), Greet { name: "".into() }).await.unwrap();
    /// // Every #[task] of the program runs with `db.run_jobs()`; here only
    /// // this one, registered by hand.
    /// let worker = graphile_worker::Worker::options().register::<Greet>();
    /// let report = db.run_jobs().worker(worker).await;
    /// assert_eq!(report.completed().len(), 1);
    /// assert_eq!(report.failed()[0].error(), Some("no name"));
    /// # }
    /// ```
    pub fn run_jobs(&self) -> RunJobs<'_> {
        RunJobs {
            db: self,
            options: None,
            include_scheduled: false,
            task: None,
            queue: None,
            max_jobs: 1_000,
        }
    }

    /// Enqueues `payload` (with its task's defaults), runs that one job
    /// through its task with a worker of every registered task, and returns
    /// how it ended. Other jobs are left alone.
    ///
    /// # Panics
    ///
    /// If the job cannot be added or did not run (its task is not
    /// registered: use [`run_job_with`](Self::run_job_with)).
    pub async fn run_job<T: Task>(&self, payload: T) -> RanJob {
        self.run_job_with(crate::Worker::from_registry(), payload)
            .await
    }

    /// [`run_job`](Self::run_job) with a worker built from `options`
    /// (hand-registered tasks, `.data(..)`); the database, schema and
    /// signal handling are set here.
    pub async fn run_job_with<T: Task>(&self, options: WorkerOptions, payload: T) -> RanJob {
        let job = self
            .utils()
            .add_job(payload, JobSpec::default())
            .await
            .unwrap_or_else(|e| panic!("graphile_worker::testing: run_job: enqueue: {e}"));
        let sql = format!(
            "update {}._private_jobs set run_at = now() where id = $1 and run_at > now()",
            crate::schema::Schema::new(self.schema()).quoted()
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(job.id)
            .execute(self.pool())
            .await
            .unwrap_or_else(|e| panic!("graphile_worker::testing: run_job: {e}"));
        let scope = ClaimScope {
            queues: None,
            job_ids: Some(vec![job.id]),
        };
        let options = options.only(&[T::IDENTIFIER]).concurrency(1);
        let report = run(self, options, scope, None, 1).await;
        report
            .jobs
            .into_iter()
            .find(|ran| ran.id == job.id)
            .unwrap_or_else(|| {
                panic!(
                    "graphile_worker::testing: job {} of `{}` did not run",
                    job.id,
                    T::IDENTIFIER
                )
            })
    }
}

impl<'a> RunJobs<'a> {
    /// Runs with a worker built from `options` (for `.data(..)`,
    /// hand-registered tasks, `concurrency`, ...) instead of every
    /// registered task; the database, schema and signal handling are set
    /// here.
    pub fn worker(mut self, options: WorkerOptions) -> Self {
        self.options = Some(options);
        self
    }

    /// Also runs jobs scheduled in the future and failed jobs waiting for
    /// their retry, making them due as the run goes (a job that keeps
    /// failing runs until its attempts are used up).
    pub fn include_scheduled(mut self) -> Self {
        self.include_scheduled = true;
        self
    }

    /// Only jobs of this task.
    pub fn task(mut self, identifier: &str) -> Self {
        self.task = Some(identifier.to_owned());
        self
    }

    /// Only jobs of this named queue.
    pub fn queue(mut self, name: &str) -> Self {
        self.queue = Some(name.to_owned());
        self
    }

    /// At most this many jobs are started (default 1,000): when one more
    /// is due the run stops and panics, so a task that enqueues itself
    /// forever is a test failure, not a hang.
    pub fn max_jobs(mut self, jobs: usize) -> Self {
        self.max_jobs = jobs.max(1);
        self
    }
}

impl<'a> IntoFuture for RunJobs<'a> {
    type Output = RunReport;
    type IntoFuture = Pin<Box<dyn Future<Output = RunReport> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut options = self.options.unwrap_or_else(crate::Worker::from_registry);
            if let Some(task) = &self.task {
                options = options.only(&[task.as_str()]);
            }
            let scope = ClaimScope {
                queues: self.queue.clone().map(|q| vec![q]),
                job_ids: None,
            };
            let due = self.include_scheduled.then_some(Due {
                task: self.task.clone(),
                queue: self.queue.clone(),
            });
            run(self.db, options, scope, due, self.max_jobs).await
        })
    }
}

/// Which scheduled jobs to make due between rounds.
struct Due {
    task: Option<String>,
    queue: Option<String>,
}

/// Rounds of `run_once` until nothing (matching) is due, at most
/// `max_jobs` jobs started.
async fn run(
    db: &TestDb,
    options: WorkerOptions,
    scope: ClaimScope,
    due: Option<Due>,
    max_jobs: usize,
) -> RunReport {
    let log: Arc<Mutex<Vec<RanJob>>> = Arc::default();
    let started = Arc::new(AtomicUsize::new(0));
    let over = Arc::new(AtomicBool::new(false));
    let stop: Arc<OnceLock<ShutdownHandle>> = Arc::default();
    let observer = {
        let (log, started, over, stop) = (log.clone(), started.clone(), over.clone(), stop.clone());
        move |event: &WorkerEvent| {
            let (job, outcome) = match event {
                WorkerEvent::JobStarted { .. } => {
                    // One job past the bound shows there was more to do.
                    if started.fetch_add(1, Ordering::SeqCst) + 1 > max_jobs {
                        over.store(true, Ordering::SeqCst);
                        if let Some(stop) = stop.get() {
                            stop.shutdown();
                        }
                    }
                    return;
                }
                WorkerEvent::JobCompleted { job, .. } => (job, RunOutcome::Completed),
                WorkerEvent::JobFailed {
                    job,
                    error,
                    will_retry,
                    ..
                } => (
                    job,
                    RunOutcome::Failed {
                        error: error.clone(),
                        will_retry: *will_retry,
                    },
                ),
                WorkerEvent::JobSnoozed { job, delay, .. } => {
                    (job, RunOutcome::Snoozed { delay: *delay })
                }
                WorkerEvent::JobInterrupted { job, .. } => (job, RunOutcome::Interrupted),
                _ => return,
            };
            if let Ok(mut log) = log.lock() {
                log.push(RanJob {
                    id: job.id,
                    task: job.task.clone(),
                    queue: job.queue.clone(),
                    attempt: job.attempt,
                    outcome,
                });
            }
        }
    };
    let worker = match db
        .configure(options)
        .claim_scope(scope)
        .on_event(observer)
        .init()
        .await
    {
        Ok(worker) => worker,
        Err(crate::Error::UnknownTask(task)) => panic!(
            "graphile_worker::testing: the worker has no task `{task}`: define it with #[task] in a crate linked into the test, or give a worker that registers it (run_job_with, or run_jobs().worker(..) with WorkerOptions::register::<T>())"
        ),
        Err(e) => panic!("graphile_worker::testing: the worker did not start: {e}"),
    };
    let _ = stop.set(worker.shutdown_handle());
    let tasks = worker.task_identifiers();
    loop {
        if let Some(due) = &due {
            make_due(db, due, &tasks).await;
        }
        worker
            .run_once()
            .await
            .unwrap_or_else(|e| panic!("graphile_worker::testing: the run failed: {e}"));
        if over.load(Ordering::SeqCst) {
            break;
        }
        match &due {
            Some(due) if scheduled_left(db, due, &tasks).await => continue,
            _ => break,
        }
    }
    let report = RunReport {
        jobs: log.lock().map(|log| log.clone()).unwrap_or_default(),
    };
    if over.load(Ordering::SeqCst) {
        panic!(
            "graphile_worker::testing: the run started {max_jobs} jobs, its bound, and stopped with more to do (a task may be enqueueing jobs forever; raise .max_jobs(n) if not):\n{report}"
        );
    }
    report
}

/// The unlocked, not yet failed jobs of the run's task and queue among the
/// worker's tasks (`$3`), in the `jobs` view aliased `v`.
const MATCHING: &str = "v.locked_at is null and v.attempts < v.max_attempts \
    and ($1::text is null or v.task_identifier = $1) \
    and ($2::text is null or v.queue_name = $2) \
    and v.task_identifier = any($3::text[])";

async fn make_due(db: &TestDb, due: &Due, tasks: &[String]) {
    let sql = format!(
        "update {s}._private_jobs as j set run_at = now() \
         from {s}.jobs as v where v.id = j.id and v.run_at > now() and {MATCHING}",
        s = crate::schema::Schema::new(db.schema()).quoted()
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&due.task)
        .bind(&due.queue)
        .bind(tasks)
        .execute(db.pool())
        .await
        .unwrap_or_else(|e| panic!("graphile_worker::testing: making jobs due: {e}"));
}

async fn scheduled_left(db: &TestDb, due: &Due, tasks: &[String]) -> bool {
    let sql = format!(
        "select exists (select 1 from {s}.jobs as v where v.run_at > now() and {MATCHING})",
        s = crate::schema::Schema::new(db.schema()).quoted()
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(&due.task)
        .bind(&due.queue)
        .bind(tasks)
        .fetch_one(db.pool())
        .await
        .unwrap_or_else(|e| panic!("graphile_worker::testing: reading scheduled jobs: {e}"))
}

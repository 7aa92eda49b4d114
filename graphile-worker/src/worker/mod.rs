//! The worker: what a [`Worker`] is made of and how a run starts and ends.
//!
//! | file | owns |
//! |---|---|
//! | `options.rs` | [`WorkerOptions`], their validation, and `init` |
//! | `dispatch.rs` | the loop of one run: claim, start, react to events |
//! | `planner.rs` | when to claim and how many (a pure function) |
//! | `local_queue.rs` | claimed jobs waiting for a slot, and the pace that sizes them |
//! | `wind_down.rs` | ending a run in the order that keeps every promise |
//! | `task_limits.rs` | per-task concurrency limits |
//! | `signals.rs` | SIGINT/SIGTERM |

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::claim::Claimer;
use crate::cron::{Clock, CronItem, run_scheduler};
use crate::data::DataMap;
use crate::error::Error;
use crate::events::{Events, WorkerEvent};
use crate::heartbeat::Health;
use crate::listen::{Wakeups, listen};
use crate::recovery::Sweeper;
use crate::registry::TaskSet;
use crate::sql::{Db, StatementMode};
use crate::stranded::warn_stranded;
use crate::sweep::sweep_stale_locks;
use crate::worker_utils::WorkerUtils;

mod connect;
mod dispatch;
mod local_queue;
mod options;
mod planner;
mod signals;
mod task_limits;
mod wind_down;

use dispatch::dispatch;
pub use options::WorkerOptions;
use signals::watch_signals;
pub(crate) use task_limits::Slots;

/// A worker pool: claims jobs of its tasks and runs them.
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool) -> Result<(), graphile_worker::Error> {
/// let worker = graphile_worker::Worker::from_registry().pg_pool(pool).init().await?;
/// let stop = worker.shutdown_handle();
/// tokio::spawn(async move {
///     tokio::time::sleep(std::time::Duration::from_secs(60)).await;
///     stop.shutdown();
/// });
/// worker.run().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Worker {
    inner: Arc<Inner>,
}

/// What a worker is made of, shared by its runs.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) db: Db,
    /// The same handle, as tasks receive it.
    pub(crate) utils: WorkerUtils,
    /// Where the listener connects (the pool, or a direct URL beside
    /// PgBouncer); `None`: no listening, polling only.
    listener: Option<sqlx::PgPool>,
    pub(crate) pool_id: String,
    pub(crate) tasks: TaskSet,
    /// Values tasks take as `Data<T>`.
    pub(crate) data: Arc<DataMap>,
    pub(crate) retry_undecodable: bool,
    pub(crate) claimer: Claimer,
    pub(crate) concurrency: usize,
    pub(crate) local_queue_size: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) shutdown_grace: Duration,
    handle_signals: bool,
    pub(crate) shutdown: Arc<watch::Sender<bool>>,
    pub(crate) abort: Arc<watch::Sender<bool>>,
    pub(crate) wakeups: Arc<Wakeups>,
    pub(crate) recovery: bool,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) stale_worker_threshold: Duration,
    recovery_sweep_interval: Duration,
    recovery_delay: Duration,
    pub(crate) metadata: serde_json::Value,
    cron_items: Vec<CronItem>,
    pub(crate) health: Arc<Health>,
    /// A run (or its wind-down) is in progress.
    run_active: AtomicBool,
    /// Who observes this worker's lifecycle events.
    pub(crate) events: Events,
    /// Wraps every job's run, outermost first.
    pub(crate) middleware: crate::registry::Chain,
    /// How often to refresh the schema-wide metrics gauges, if at all.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) queue_gauges_every: Option<Duration>,
    /// The time limit of jobs whose task sets none.
    pub(crate) job_timeout: Option<Duration>,
    /// How long a timed-out or cancelled task has to stop.
    pub(crate) cancel_grace: Duration,
    /// The running jobs `cancel_job` can reach.
    pub(crate) cancellations: Arc<crate::cancel::Cancellations>,
}

impl Inner {
    /// The direct connection's options when a `listen_url` is given beside
    /// PgBouncer (the listener is then not the pool): heartbeats try it
    /// first, so a saturated PgBouncer cannot delay them.
    pub(crate) fn direct(&self) -> Option<Arc<sqlx::postgres::PgConnectOptions>> {
        match self.db.mode {
            StatementMode::Unnamed => self.listener.as_ref().map(|l| l.connect_options()),
            StatementMode::Prepared => None,
        }
    }

    /// Called when a run has fully wound down.
    pub(crate) fn end_run(&self) {
        self.run_active.store(false, Ordering::Release);
    }

    /// Forgets a shutdown request once the run it stopped has returned.
    fn reset_shutdown(&self) {
        self.shutdown.send_replace(false);
        self.abort.send_replace(false);
    }
}

/// What a worker says about itself in `_private_workers.metadata`.
fn metadata(tasks: &[String]) -> serde_json::Value {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    serde_json::json!({
        "host": host,
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
        "runtime": "rust",
        "tasks": tasks,
    })
}

/// Asks a running [`Worker`] to stop: no new jobs are claimed, running jobs
/// get the grace period to finish.
///
/// ```no_run
/// # async fn example(worker: graphile_worker::Worker) {
/// let handle = worker.shutdown_handle();
/// handle.shutdown();
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    shutdown: Arc<watch::Sender<bool>>,
    abort: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Stops at once: running jobs are interrupted and retried later.
    pub fn shutdown_now(&self) {
        self.shutdown.send_replace(true);
        self.abort.send_replace(true);
    }
}

impl Worker {
    /// Options for a worker running every task registered with `#[task]` in
    /// the crates linked into this program.
    pub fn from_registry() -> WorkerOptions {
        WorkerOptions::with_registry()
    }

    /// Options for a worker running only the tasks you
    /// [`register`](WorkerOptions::register).
    pub fn options() -> WorkerOptions {
        WorkerOptions::default()
    }

    /// The pool id written to `locked_by` of the jobs this worker holds.
    pub fn pool_id(&self) -> &str {
        &self.inner.pool_id
    }

    /// The identifiers of the tasks this worker runs.
    #[cfg(feature = "testing")]
    pub(crate) fn task_identifiers(&self) -> Vec<String> {
        self.inner.tasks.identifiers()
    }

    /// How many jobs this worker runs at once.
    pub fn concurrency(&self) -> usize {
        self.inner.concurrency
    }

    /// How often this worker looks for jobs when no notification comes.
    pub fn poll_interval(&self) -> Duration {
        self.inner.poll_interval
    }

    /// Utilities on the worker's pool and schema.
    pub fn utils(&self) -> &WorkerUtils {
        &self.inner.utils
    }

    /// The cron schedules this worker runs: from its crontabs, its
    /// [`cron_items`](crate::WorkerOptions::cron_items) and its tasks'
    /// `#[task(cron = ...)]`, each with its time zone. Use
    /// [`CronItem::next_fire_after`] to show when each fires next.
    ///
    /// ```no_run
    /// # async fn demo(pool: sqlx::PgPool) -> Result<(), graphile_worker::Error> {
    /// use graphile_worker::Worker;
    /// let worker = Worker::from_registry().pg_pool(pool).crontab("0 4 * * * nightly").init().await?;
    /// for item in worker.cron_items() {
    ///     println!("{} next at {:?}", item.identifier, item.next_fire_after(chrono::Utc::now()));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn cron_items(&self) -> &[CronItem] {
        &self.inner.cron_items
    }

    /// A handle that stops this worker.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shutdown: self.inner.shutdown.clone(),
            abort: self.inner.abort.clone(),
        }
    }

    /// Runs jobs until shutdown is requested (handle, SIGINT/SIGTERM, or a
    /// breaking migration by another process, reported as
    /// [`Error::BreakingMigration`]).
    pub async fn run(&self) -> Result<(), Error> {
        let inner = &self.inner;
        let mut background = JoinSet::new();
        if inner.handle_signals {
            background.spawn(watch_signals(self.shutdown_handle()));
        }
        let handle = self.shutdown_handle();
        if let Some(listener) = inner.listener.clone() {
            background.spawn(listen(
            listener,
            inner.wakeups.clone(),
            (
                inner.cancellations.clone(),
                inner.db.schema.name().to_owned(),
            ),
            inner.shutdown.subscribe(),
            move |number| {
                tracing::error!(
                    "detected breaking migration {number} to the database schema; it would be unsafe to continue, so shutting down"
                );
                handle.shutdown();
            },
            inner.events.clone(),
        ));
        }
        background.spawn(warn_stranded(
            inner.db.clone(),
            inner.tasks.identifiers(),
            inner.shutdown.subscribe(),
        ));
        background.spawn(sweep_stale_locks(
            inner.db.clone(),
            inner.shutdown.subscribe(),
        ));
        if !inner.cron_items.is_empty() {
            background.spawn(run_scheduler(
                inner.db.clone(),
                inner.cron_items.clone(),
                Clock::System,
                inner.shutdown.subscribe(),
                inner.events.clone(),
            ));
        }
        #[cfg(feature = "metrics")]
        if let Some(every) = inner.queue_gauges_every {
            background.spawn(crate::metrics::queue_gauges(
                inner.db.clone(),
                inner.pool_id.clone(),
                every,
                inner.stale_worker_threshold,
                inner.shutdown.subscribe(),
            ));
        }
        if inner.recovery {
            let sweeper = Sweeper {
                db: inner.db.clone(),
                interval: inner.recovery_sweep_interval,
                threshold: inner.stale_worker_threshold,
                delay: inner.recovery_delay,
                own_id: inner.pool_id.clone(),
                health: inner.health.clone(),
                events: inner.events.clone(),
            };
            background.spawn(sweeper.run(inner.shutdown.subscribe()));
        }

        let result = self.spawn_dispatch(false).await;
        inner.shutdown.send_replace(true);
        background.shutdown().await;
        // A later run starts afresh.
        inner.reset_shutdown();
        result?;
        match inner.wakeups.breaking_migration.load(Ordering::Relaxed) {
            0 => Ok(()),
            number => Err(Error::BreakingMigration(number)),
        }
    }

    /// Whether this worker can do its work now: a run is in progress, the
    /// database answers (`select 1` within 2 s), no shutdown was asked for,
    /// and, unless [recovery](WorkerOptions::recovery) is off, its
    /// heartbeats reach the database (so it is registered and its jobs are
    /// safe). For a
    /// readiness probe; the `graphile-worker` command serves it at
    /// `/readyz`.
    ///
    /// ```no_run
    /// # async fn example(worker: graphile_worker::Worker) {
    /// match worker.readiness().await {
    ///     graphile_worker::Readiness::Ready => println!("ready"),
    ///     graphile_worker::Readiness::NotReady(why) => println!("not ready: {why}"),
    ///     _ => println!("not ready"),
    /// }
    /// # }
    /// ```
    pub async fn readiness(&self) -> Readiness {
        let inner = &self.inner;
        if !inner.run_active.load(Ordering::Acquire) {
            return Readiness::NotReady("the worker is not running".into());
        }
        if *inner.shutdown.borrow() {
            return Readiness::NotReady("the worker is shutting down".into());
        }
        let ping = tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("select 1").execute(inner.db.exec()),
        )
        .await;
        match ping {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Readiness::NotReady(format!("the database is unreachable: {e}"));
            }
            Err(_) => {
                return Readiness::NotReady("the database did not answer within 2 s".to_owned());
            }
        }
        match (inner.health.last_beat_age(), inner.health.late_after()) {
            (None, _) => Readiness::NotReady(
                "no heartbeat has reached the database yet (not registered)".into(),
            ),
            (Some(age), Some(late)) if age > late => Readiness::NotReady(format!(
                "the last heartbeat reached the database {} s ago",
                age.as_secs()
            )),
            _ => Readiness::Ready,
        }
    }

    /// Runs every job that is ready now (including ones that become ready
    /// while it runs, such as the next job of a named queue), then returns.
    pub async fn run_once(&self) -> Result<(), Error> {
        let result = self.spawn_dispatch(true).await;
        self.inner.reset_shutdown();
        result
    }

    /// Runs the dispatch loop on the runtime's worker threads rather than
    /// the caller's (often `main`'s `block_on`): jobs it starts then go to
    /// a worker's local queue instead of waking a thread for each. Dropping
    /// the caller's future still stops the loop, as if it ran inline.
    async fn spawn_dispatch(&self, once: bool) -> Result<(), Error> {
        if self.inner.run_active.swap(true, Ordering::AcqRel) {
            return Err(Error::Config(
                "this worker is already running (or still winding down an earlier run); wait for that run to end, or build another worker with init()".into(),
            ));
        }
        // A finished run's last beat must not make this one look ready.
        self.inner.health.reset();
        let worker_id = || self.inner.pool_id.clone();
        self.inner.events.emit(|| WorkerEvent::WorkerStarted {
            worker_id: worker_id(),
        });
        let mut task = AbortOnDrop(tokio::spawn(dispatch(self.inner.clone(), once)));
        let result = match (&mut task.0).await {
            Ok(result) => result,
            Err(e) => Err(Error::Internal(format!("the dispatch loop failed: {e}"))),
        };
        self.inner.events.emit(|| WorkerEvent::WorkerStopped {
            worker_id: worker_id(),
        });
        result
    }
}

/// What [`Worker::readiness`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Readiness {
    /// Running, connected, heartbeats landing.
    Ready,
    /// Not ready, and why.
    NotReady(String),
}

/// Aborts a task when dropped (a finished task is unaffected).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

//! The worker: options, start-up, the dispatch loop, and shutdown.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::backoff::{Backoff, random_u64};
use crate::claim::{ClaimBatch, Claimer};
use crate::completion::{Completer, HeldJobs, Outcome, lock_held};
use crate::cron::{
    Clock, CronItem, CronPattern, duplicate_identifier, parse_crontab, run_scheduler,
};
use crate::error::Error;
use crate::execute::run_job;
use crate::heartbeat::{Health, Heartbeat};
use crate::job::Job;
use crate::listen::{Wakeups, listen};
use crate::recovery::Sweeper;
use crate::registry::{TaskSet, registered_tasks};
use crate::sweep::sweep_stale_locks;
use crate::task::Task;
use crate::worker_utils::WorkerUtils;

/// Builds a [`Worker`]. Start from [`Worker::from_registry`] (every
/// `#[task]` linked into the program) or [`Worker::options`] (only the tasks
/// you [`register`](WorkerOptions::register)).
///
/// ```no_run
/// use std::time::Duration;
/// use graphile_worker::Worker;
/// # async fn example() -> Result<(), graphile_worker::Error> {
/// let worker = Worker::from_registry()
///     .database_url("postgres://localhost/app")
///     .concurrency(8)
///     .poll_interval(Duration::from_secs(2))
///     .init()
///     .await?;
/// worker.run().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "call .init().await to start the worker"]
pub struct WorkerOptions {
    database_url: Option<String>,
    pg_pool: Option<PgPool>,
    max_pool_size: Option<u32>,
    schema: String,
    concurrency: usize,
    poll_interval: Duration,
    forbidden_flags: Vec<String>,
    use_registry: bool,
    tasks: TaskSet,
    errors: Vec<Error>,
    only: Option<Vec<String>>,
    except: Vec<String>,
    shutdown_grace: Duration,
    handle_signals: bool,
    local_queue_size: Option<usize>,
    recovery: bool,
    heartbeat_interval: Duration,
    stale_worker_threshold: Duration,
    recovery_sweep_interval: Duration,
    recovery_delay: Duration,
    crontabs: Vec<CrontabSource>,
    cron_items: Vec<CronItem>,
}

#[derive(Debug)]
enum CrontabSource {
    Text(String),
    File(PathBuf),
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            database_url: None,
            pg_pool: None,
            max_pool_size: None,
            schema: "graphile_worker".into(),
            concurrency: 1,
            poll_interval: Duration::from_secs(2),
            forbidden_flags: Vec::new(),
            use_registry: false,
            tasks: TaskSet::default(),
            errors: Vec::new(),
            only: None,
            except: Vec::new(),
            shutdown_grace: Duration::from_secs(5),
            handle_signals: true,
            local_queue_size: None,
            recovery: true,
            heartbeat_interval: Duration::from_secs(10),
            stale_worker_threshold: Duration::from_secs(60),
            recovery_sweep_interval: Duration::from_secs(10),
            recovery_delay: Duration::ZERO,
            crontabs: Vec::new(),
            cron_items: Vec::new(),
        }
    }
}

impl WorkerOptions {
    /// Connect to this database (a pool of [`max_pool_size`](Self::max_pool_size)
    /// connections is created). Use either this or [`pg_pool`](Self::pg_pool).
    pub fn database_url(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_owned());
        self
    }

    /// Use this pool. Give it at least concurrency + 4 connections: besides
    /// what running tasks use, one listens for new jobs, one writes
    /// outcomes, and under load two claim jobs at once.
    pub fn pg_pool(mut self, pool: PgPool) -> Self {
        self.pg_pool = Some(pool);
        self
    }

    /// Size of the pool created from [`database_url`](Self::database_url);
    /// default `max(10, concurrency + 4)`.
    pub fn max_pool_size(mut self, size: u32) -> Self {
        self.max_pool_size = Some(size);
        self
    }

    /// The worker schema; default `graphile_worker`.
    pub fn schema(mut self, schema: &str) -> Self {
        self.schema = schema.to_owned();
        self
    }

    /// How many jobs run at once; default 1 (as in Node graphile-worker).
    pub fn concurrency(mut self, jobs: usize) -> Self {
        self.concurrency = jobs;
        self
    }

    /// How often an idle worker looks for jobs that no notification
    /// announced (future `run_at`, retries); default 2 s.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Never run jobs carrying any of these flags.
    pub fn forbidden_flags(mut self, flags: &[&str]) -> Self {
        self.forbidden_flags = flags.iter().map(|f| (*f).to_owned()).collect();
        self
    }

    /// How long running jobs may take to finish after shutdown is requested
    /// before they are interrupted (and retried later); default 5 s.
    pub fn shutdown_grace_period(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Whether [`Worker::run`] stops on SIGINT/SIGTERM (a second signal
    /// interrupts running jobs at once); default true.
    pub fn handle_signals(mut self, handle: bool) -> Self {
        self.handle_signals = handle;
        self
    }

    /// The most claimed jobs that may wait locally beyond the running ones,
    /// so that short jobs start without a round trip each. The worker holds
    /// only about 200 ms of work at its current pace (none while jobs are
    /// slow), up to this bound; jobs waiting longer than 5 s are handed back.
    /// A burst of short jobs grows the lookahead fourfold per claim, and
    /// when jobs finish faster than one connection claims them a second
    /// claim runs beside the first. Default 5000. `0` claims one job per
    /// free slot only, like Node graphile-worker without its local queue.
    pub fn local_queue_size(mut self, size: usize) -> Self {
        self.local_queue_size = Some(size);
        self
    }

    /// Whether this worker registers itself, heartbeats, and recovers the
    /// jobs of registered workers that stopped heartbeating; default true.
    /// When off, a crashed worker's jobs wait for the 4-hour stale-lock rule.
    pub fn recovery(mut self, enabled: bool) -> Self {
        self.recovery = enabled;
        self
    }

    /// How often the worker refreshes its heartbeat and the locks of the
    /// jobs it holds; default 10 s. Must be well below the stale threshold.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// A registered worker whose last heartbeat is older than this is dead:
    /// its jobs are retried elsewhere; default 60 s.
    pub fn stale_worker_threshold(mut self, threshold: Duration) -> Self {
        self.stale_worker_threshold = threshold;
        self
    }

    /// How often this worker looks for dead workers (one worker at a time
    /// across the database does the work); default 10 s, jittered.
    pub fn recovery_sweep_interval(mut self, interval: Duration) -> Self {
        self.recovery_sweep_interval = interval;
        self
    }

    /// How long a recovered job waits before it runs again; default 0.
    pub fn recovery_delay(mut self, delay: Duration) -> Self {
        self.recovery_delay = delay;
        self
    }

    /// Schedules recurring jobs from crontab text in graphile-worker's format
    /// (`0 4 * * * task ?fill=1h {"payload": true}`; times in UTC). Parsed at
    /// [`init`](Self::init): an invalid line is an error naming its line and
    /// column. Cron runs in [`Worker::run`], not in `run_once`.
    pub fn crontab(mut self, text: &str) -> Self {
        self.crontabs.push(CrontabSource::Text(text.to_owned()));
        self
    }

    /// Like [`crontab`](Self::crontab), reading the file at `path` at
    /// [`init`](Self::init); a missing file is an error.
    pub fn crontab_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.crontabs.push(CrontabSource::File(path.into()));
        self
    }

    /// Schedules recurring jobs built in code.
    pub fn cron_items(mut self, items: impl IntoIterator<Item = CronItem>) -> Self {
        self.cron_items.extend(items);
        self
    }

    /// Adds a task implemented by hand (or generated by `#[task]`).
    #[track_caller]
    pub fn register<T: Task>(mut self) -> Self {
        let location = std::panic::Location::caller();
        if let Err(e) =
            self.tasks
                .insert_task::<T>(format!("{}:{}", location.file(), location.line()))
        {
            self.errors.push(e);
        }
        self
    }

    /// Runs only these registered tasks.
    pub fn only(mut self, identifiers: &[&str]) -> Self {
        self.only = Some(identifiers.iter().map(|s| (*s).to_owned()).collect());
        self
    }

    /// Runs every registered task except these.
    pub fn except(mut self, identifiers: &[&str]) -> Self {
        self.except = identifiers.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Validates the options, connects, migrates the schema and registers the
    /// task identifiers. The worker does not claim jobs until
    /// [`Worker::run`] or [`Worker::run_once`].
    pub async fn init(mut self) -> Result<Worker, Error> {
        if let Some(e) = self.errors.drain(..).next() {
            return Err(e);
        }
        if self.concurrency == 0 {
            return Err(Error::Config("concurrency must be at least 1".into()));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::Config("poll_interval must be above zero".into()));
        }
        if self.recovery
            && (self.heartbeat_interval.is_zero()
                || self.heartbeat_interval >= self.stale_worker_threshold)
        {
            return Err(Error::Config(format!(
                "heartbeat_interval ({:?}) must be above zero and below stale_worker_threshold ({:?}), or live workers would look dead",
                self.heartbeat_interval, self.stale_worker_threshold
            )));
        }
        if self.recovery && self.recovery_sweep_interval.is_zero() {
            return Err(Error::Config(
                "recovery_sweep_interval must be above zero".into(),
            ));
        }
        let mut tasks = std::mem::take(&mut self.tasks);
        let mut declared_cron = Vec::new();
        if self.use_registry {
            for registration in registered_tasks() {
                tasks.insert(registration)?;
                declared_cron.push((registration.identifier(), registration.cron()));
            }
        }
        if let Some(only) = &self.only {
            tasks.retain_only(only)?;
        }
        tasks.remove_all(&self.except)?;
        if tasks.is_empty() {
            return Err(Error::NoTasks);
        }
        let cron_items = self.collect_cron_items(&tasks, &declared_cron)?;

        let pool = match (self.pg_pool.take(), self.database_url.take()) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "give either database_url or pg_pool, not both".into(),
                ));
            }
            (Some(pool), None) => pool,
            (None, Some(url)) => {
                let size = self
                    .max_pool_size
                    .unwrap_or_else(|| (self.concurrency as u32).saturating_add(4).max(10));
                PgPoolOptions::new()
                    .max_connections(size)
                    .connect(&url)
                    .await?
            }
            (None, None) => {
                return Err(Error::Config(
                    "no database: call database_url(..) or pg_pool(..)".into(),
                ));
            }
        };

        let utils = WorkerUtils::new(pool.clone(), &self.schema);
        utils.migrate().await?;

        let pool_id = format!("pool-{:018x}", random_u64() as u128 & ((1 << 72) - 1));
        let identifiers = tasks.identifiers();
        let forbidden = (!self.forbidden_flags.is_empty()).then(|| self.forbidden_flags.clone());
        let claimer = Claimer::new(
            pool.clone(),
            utils.statements().clone(),
            pool_id.clone(),
            &identifiers,
            forbidden,
        )
        .await?;
        tracing::info!(pool_id = %pool_id, tasks = ?identifiers, "worker ready");

        let (shutdown, _) = watch::channel(false);
        let (abort, _) = watch::channel(false);
        Ok(Worker {
            inner: Arc::new(Inner {
                pool,
                utils,
                pool_id,
                tasks,
                claimer,
                concurrency: self.concurrency,
                local_queue_size: self.local_queue_size.unwrap_or(DEFAULT_LOCAL_QUEUE),
                poll_interval: self.poll_interval,
                shutdown_grace: self.shutdown_grace,
                handle_signals: self.handle_signals,
                shutdown: Arc::new(shutdown),
                abort: Arc::new(abort),
                wakeups: Arc::new(Wakeups::default()),
                recovery: self.recovery,
                heartbeat_interval: self.heartbeat_interval,
                stale_worker_threshold: self.stale_worker_threshold,
                recovery_sweep_interval: self.recovery_sweep_interval,
                recovery_delay: self.recovery_delay,
                metadata: metadata(&identifiers),
                cron_items,
                health: Arc::new(Health::default()),
            }),
        })
    }
}

impl WorkerOptions {
    /// Every cron schedule: crontab texts and files, items built in code,
    /// and `#[task(cron = ...)]` of the tasks this worker runs. A task with
    /// one declared schedule is identified by its name; with several, by
    /// `name#1`, `name#2`, … in declaration order.
    fn collect_cron_items(
        &mut self,
        tasks: &TaskSet,
        declared: &[(&'static str, &'static [&'static str])],
    ) -> Result<Vec<CronItem>, Error> {
        let mut items = Vec::new();
        for source in self.crontabs.drain(..) {
            let text = match source {
                CrontabSource::Text(text) => text,
                CrontabSource::File(path) => std::fs::read_to_string(&path).map_err(|e| {
                    Error::Config(format!(
                        "could not read crontab file {}: {e}",
                        path.display()
                    ))
                })?,
            };
            items.extend(parse_crontab(&text)?);
        }
        items.append(&mut self.cron_items);
        for (task, patterns) in declared {
            if tasks.handler(task).is_none() {
                continue;
            }
            for (n, pattern) in patterns.iter().enumerate() {
                let mut item = CronItem::new(*task, CronPattern::parse(pattern)?);
                if patterns.len() > 1 {
                    item.identifier = format!("{task}#{}", n + 1);
                }
                items.push(item);
            }
        }
        for item in &items {
            if item.options.max_attempts.is_some_and(|m| m < 1) {
                return Err(Error::Config(format!(
                    "cron item `{}` has max_attempts below 1; the database would refuse its jobs",
                    item.identifier
                )));
            }
        }
        if let Some(duplicate) = duplicate_identifier(&items) {
            return Err(Error::Config(format!(
                "two cron schedules are identified as `{duplicate}`; give one of them another ?id="
            )));
        }
        Ok(items)
    }
}

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

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    utils: WorkerUtils,
    pool_id: String,
    tasks: TaskSet,
    claimer: Claimer,
    concurrency: usize,
    local_queue_size: usize,
    poll_interval: Duration,
    shutdown_grace: Duration,
    handle_signals: bool,
    shutdown: Arc<watch::Sender<bool>>,
    abort: Arc<watch::Sender<bool>>,
    wakeups: Arc<Wakeups>,
    recovery: bool,
    heartbeat_interval: Duration,
    stale_worker_threshold: Duration,
    recovery_sweep_interval: Duration,
    recovery_delay: Duration,
    metadata: serde_json::Value,
    cron_items: Vec<CronItem>,
    health: Arc<Health>,
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
        WorkerOptions {
            use_registry: true,
            ..WorkerOptions::default()
        }
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

    /// Utilities on the worker's pool and schema.
    pub fn utils(&self) -> &WorkerUtils {
        &self.inner.utils
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
        background.spawn(listen(
            inner.pool.clone(),
            inner.wakeups.clone(),
            inner.shutdown.subscribe(),
            move |number| {
                tracing::error!(
                    "detected breaking migration {number} to the database schema; it would be unsafe to continue, so shutting down"
                );
                handle.shutdown();
            },
        ));
        background.spawn(sweep_stale_locks(
            inner.pool.clone(),
            inner.utils.statements().clone(),
            inner.shutdown.subscribe(),
        ));
        if !inner.cron_items.is_empty() {
            background.spawn(run_scheduler(
                inner.pool.clone(),
                inner.utils.schema_arc(),
                inner.cron_items.clone(),
                Clock::System,
                inner.shutdown.subscribe(),
            ));
        }
        if inner.recovery {
            let sweeper = Sweeper {
                pool: inner.pool.clone(),
                sql: inner.utils.statements().clone(),
                schema_name: inner.utils.schema().to_owned(),
                interval: inner.recovery_sweep_interval,
                threshold: inner.stale_worker_threshold,
                delay: inner.recovery_delay,
                own_id: inner.pool_id.clone(),
                health: inner.health.clone(),
            };
            background.spawn(sweeper.run(inner.shutdown.subscribe()));
        }

        let result = self.spawn_dispatch(false).await;
        inner.shutdown.send_replace(true);
        background.shutdown().await;
        result?;
        match inner.wakeups.breaking_migration.load(Ordering::Relaxed) {
            0 => Ok(()),
            number => Err(Error::BreakingMigration(number)),
        }
    }

    /// Runs every job that is ready now (including ones that become ready
    /// while it runs, such as the next job of a named queue), then returns.
    pub async fn run_once(&self) -> Result<(), Error> {
        self.spawn_dispatch(true).await
    }

    /// Runs the dispatch loop on the runtime's worker threads rather than
    /// the caller's (often `main`'s `block_on`): jobs it starts then go to
    /// a worker's local queue instead of waking a thread for each. Dropping
    /// the caller's future still stops the loop, as if it ran inline.
    async fn spawn_dispatch(&self, once: bool) -> Result<(), Error> {
        let mut task = AbortOnDrop(tokio::spawn(Self::dispatch(self.inner.clone(), once)));
        match (&mut task.0).await {
            Ok(result) => result,
            Err(e) => Err(Error::Internal(format!("the dispatch loop failed: {e}"))),
        }
    }

    async fn dispatch(inner: Arc<Inner>, once: bool) -> Result<(), Error> {
        let held: HeldJobs = HeldJobs::default();
        let (completer, writer) = Completer::start(
            inner.pool.clone(),
            inner.utils.statements().clone(),
            inner.pool_id.clone(),
            held.clone(),
            inner.wakeups.clone(),
        );
        let mut shutdown = inner.shutdown.subscribe();
        let health = inner.health.clone();
        let (stop_heartbeat, heartbeat_stopped) = watch::channel(false);
        let heartbeat = if inner.recovery {
            let heartbeat = Heartbeat {
                pool: inner.pool.clone(),
                sql: inner.utils.statements().clone(),
                pool_id: inner.pool_id.clone(),
                metadata: inner.metadata.clone(),
                held: held.clone(),
                interval: inner.heartbeat_interval,
                stale_threshold: inner.stale_worker_threshold,
                health: health.clone(),
                wakeups: inner.wakeups.clone(),
            };
            // Register before the first claim: recovery only takes jobs from
            // registered workers, so a job that kills its worker at once
            // would otherwise stay locked until the 4-hour sweep.
            let limit = inner
                .heartbeat_interval
                .max(inner.stale_worker_threshold / 2);
            let registered = match tokio::time::timeout(limit, heartbeat.beat(true)).await {
                Ok(Ok(())) => {
                    // An earlier run may have ended while heartbeats failed.
                    let _ = health.mark_healthy();
                    true
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not register the worker; will retry");
                    false
                }
                Err(_) => {
                    tracing::warn!(
                        "no answer to the worker's registration within {limit:?}; will retry"
                    );
                    false
                }
            };
            Some(tokio::spawn(heartbeat.run(heartbeat_stopped, registered)))
        } else {
            None
        };
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let mut running: JoinSet<()> = JoinSet::new();
        let mut buffer = LocalQueue {
            jobs: VecDeque::new(),
            completer: completer.clone(),
        };
        let mut exhausted = false;
        let mut written_at_claim = 0;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let mut pace = Pace::new();
        // Claims run in the background while jobs keep starting; under load
        // a second one starts while the first is in flight, so that the
        // database claims on two connections at once.
        let mut claims: JoinSet<Claimed> = JoinSet::new();
        // Jobs asked for by the claims in flight.
        let mut claiming_jobs = 0;
        let mut paused_until: Option<tokio::time::Instant> = None;
        // Counts events that make a claim's short result inconclusive:
        // wake-ups (notifications, poll ticks), whose jobs a claim that
        // started before them may not have seen, and overlapping claims.
        let mut wake_epoch: u64 = 0;
        // The last claim found as many jobs as it asked for: only then may a
        // second claim start beside one in flight. (After a short result
        // every claim would overlap the previous one and none would ever
        // prove the queue empty.)
        let mut backlog = false;
        let mut next_poll = tokio::time::Instant::now() + inner.poll_interval;
        // run_once never polls: its timer only serves pauses and time limits.
        let idle_deadline = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let timer = tokio::time::sleep_until(next_poll);
        tokio::pin!(timer);

        loop {
            // Reap finished jobs so their slots count as free.
            let mut finished = 0;
            while running.try_join_next().is_some() {
                finished += 1;
            }
            pace.record(finished);
            if *shutdown.borrow() {
                break;
            }
            // Start buffered jobs in free slots.
            while running.len() < inner.concurrency {
                let Some((job, _)) = buffer.pop_front() else {
                    break;
                };
                let handler = inner.tasks.handler(&job.task_identifier);
                let utils = inner.utils.clone();
                let cancel = cancel_rx.clone();
                let abort = inner.abort.subscribe();
                let completer = completer.clone();
                // Made before the task: a task dropped before its first poll
                // drops the guard too, which still reports the job.
                let guard = OutcomeGuard {
                    job_id: job.id,
                    queued: job.queue_name.is_some(),
                    completer: Some(completer),
                };
                running.spawn(async move {
                    let outcome = run_job(job, handler, utils, cancel, abort).await;
                    guard.send(outcome);
                });
            }
            // Jobs that waited too long locally go back for others to take.
            if let Some((_, since)) = buffer.front()
                && since.elapsed() > LOCAL_TTL
            {
                buffer.hand_back();
                // The pace that filled the buffer is out of date: start
                // again from claiming for free slots only.
                pace.reset();
            }

            let ahead = pace.ahead(inner.local_queue_size);
            let capacity = inner.concurrency + ahead;
            if claims.is_empty() {
                claiming_jobs = 0;
            }
            let have = running.len() + buffer.len() + claiming_jobs;
            let want = capacity.saturating_sub(have);
            // Refill when half the lookahead is used up. When jobs run
            // faster than one connection can claim them, the buffer empties
            // while a claim is in flight: then a second claim for the other
            // half starts beside it, so that two connections claim at once.
            let refill = if claims.is_empty() {
                want > 0 && buffer.len() <= ahead / 2
            } else {
                backlog && claims.len() < MAX_CLAIMS && want >= (ahead / 2).max(OVERLAP_MIN)
            };
            if refill && paused_until.is_none() && !exhausted && health.may_claim() {
                let announced = inner.wakeups.take();
                // Half the lookahead at a time keeps two claims in turn.
                let batch = want.min((ahead / 2).max(inner.concurrency));
                let limit = if announced > 0 && have == 0 {
                    batch.min(usize::try_from(announced).unwrap_or(usize::MAX).max(1))
                } else {
                    batch
                };
                written_at_claim = completer.written();
                tracing::trace!(
                    limit,
                    ahead,
                    buffered = buffer.len(),
                    running = running.len(),
                    in_flight = claims.len(),
                    "claiming"
                );
                claiming_jobs += limit;
                let engine = inner.clone();
                // Two claims skip each other's rows, so either may come back
                // short with jobs left: neither result then proves the
                // queue empty.
                let epoch = if claims.is_empty() {
                    Some(wake_epoch)
                } else {
                    wake_epoch += 1;
                    None
                };
                let finished_before = pace.finished_total;
                // No client-side time limit: a claim given up on may still
                // commit on the server, and its jobs would then stay locked
                // by a live worker until the 4-hour sweep.
                claims.spawn(async move {
                    match engine.claimer.claim(limit).await {
                        Ok(batch) => Claimed::Jobs {
                            batch,
                            limit,
                            epoch,
                            finished_before,
                        },
                        Err(e) => Claimed::Failed {
                            error: e.to_string(),
                            limit,
                        },
                    }
                });
            }

            if once && exhausted && buffer.is_empty() && running.is_empty() && claims.is_empty() {
                // Outcomes still being written may unlock more work (the
                // next job of a named queue): look once more after they land.
                if completer.settled_since(written_at_claim).await {
                    exhausted = false;
                    continue;
                }
                break;
            }

            // One timer for everything timed: the end of a pause after a
            // failed claim, the oldest waiting job's time limit, and the
            // next poll. It is only re-armed when its deadline moves.
            let mut deadline = if once { idle_deadline } else { next_poll };
            if let Some(until) = paused_until {
                deadline = deadline.min(until);
            }
            if let Some((_, since)) = buffer.front() {
                deadline = deadline.min((*since + LOCAL_TTL).into());
            }
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }

            tokio::select! {
                Some(claimed) = claims.join_next(), if !claims.is_empty() => {
                    match claimed {
                        Ok(Claimed::Jobs { batch, limit, epoch, finished_before }) => {
                            claiming_jobs = claiming_jobs.saturating_sub(limit);
                            settle_rejects(&held, &completer, &batch);
                            if batch.give_back.is_empty() {
                                backoff.reset();
                            } else {
                                // The claim worked but its jobs could not be
                                // prepared: pause as after a failed claim.
                                paused_until = Some(tokio::time::Instant::now() + backoff.next_delay());
                            }
                            // A full scan says more jobs may be waiting, even
                            // when named queues let only a few through.
                            let full = batch.candidates >= limit;
                            backlog = full;
                            // A job skipped because it changed under the
                            // claim is still runnable: look again.
                            let complete = batch.claimed >= batch.expected;
                            exhausted = !full && complete && epoch == Some(wake_epoch);
                            let jobs = batch.jobs;
                            tracing::trace!(
                                claimed = jobs.len(),
                                limit,
                                buffered = buffer.len(),
                                running = running.len(),
                                "claim returned"
                            );
                            if !full {
                                pace.caught_up();
                            } else if buffer.is_empty()
                                && running.len() < inner.concurrency
                                && pace.finished_total > finished_before
                            {
                                // Jobs finished while this claim was in
                                // flight and left slots idle: they are short.
                                pace.starved(inner.concurrency);
                            }
                            let now = Instant::now();
                            lock_held(&held).extend(jobs.iter().map(|j| j.id));
                            buffer_in_order(&mut buffer, jobs, now);
                        }
                        Ok(Claimed::Failed { error, limit }) => {
                            claiming_jobs = claiming_jobs.saturating_sub(limit);
                            let delay = backoff.next_delay();
                            tracing::warn!(error = %error, "could not claim jobs; retrying in {delay:?}");
                            paused_until = Some(tokio::time::Instant::now() + delay);
                        }
                        Err(e) => {
                            // The claim task itself failed (it cannot panic
                            // by design) and took its count with it; the
                            // count restarts once no claim is in flight.
                            let delay = backoff.next_delay();
                            tracing::error!(error = %e, "the claim task failed; retrying in {delay:?}");
                            paused_until = Some(tokio::time::Instant::now() + delay);
                        }
                    }
                }
                Some(_) = running.join_next(), if !running.is_empty() => {
                    pace.record(1);
                }
                _ = inner.wakeups.notify.notified() => {
                    exhausted = false;
                    wake_epoch += 1;
                }
                () = &mut timer => {
                    let now = tokio::time::Instant::now();
                    if paused_until.is_some_and(|until| until <= now) {
                        paused_until = None;
                    }
                    if !once && next_poll <= now {
                        exhausted = false;
                        wake_epoch += 1;
                        next_poll = now + inner.poll_interval;
                    }
                    // Jobs past their time limit are handed back at the
                    // top of the loop.
                }
                _ = shutdown.wait_for(|s| *s), if !once => {}
            }
        }

        // Claims still in flight may lock jobs: take them back too.
        while let Some(claimed) = claims.join_next().await {
            if let Ok(Claimed::Jobs { batch, .. }) = claimed {
                settle_rejects(&held, &completer, &batch);
                let now = Instant::now();
                lock_held(&held).extend(batch.jobs.iter().map(|j| j.id));
                buffer.extend(batch.jobs.into_iter().map(|j| (j, now)));
            }
        }

        // Shutdown: hand back what never started, ask running tasks to stop,
        // give them the grace period, then interrupt the rest.
        buffer.hand_back();
        cancel_tx.send_replace(true);
        let grace = tokio::time::sleep(inner.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = running.join_next() => if next.is_none() { break },
                _ = &mut grace => {
                    inner.abort.send_replace(true);
                    while running.join_next().await.is_some() {}
                    break;
                }
            }
        }
        // The writer ends once every sender is gone, the local queue's too.
        drop(buffer);
        drop(completer);
        let _ = writer.await;
        let _ = sqlx::query(inner.utils.statements().unlock_own_queues.clone())
            .bind(&inner.pool_id)
            .execute(&inner.pool)
            .await;
        stop_heartbeat.send_replace(true);
        if let Some(heartbeat) = heartbeat {
            let _ = heartbeat.await;
        }
        Ok(())
    }
}

/// Claimed jobs waiting to start. If the dispatch loop is dropped (its
/// caller's future was), the jobs still waiting are handed back.
struct LocalQueue {
    jobs: VecDeque<(Job, Instant)>,
    completer: Completer,
}

impl std::ops::Deref for LocalQueue {
    type Target = VecDeque<(Job, Instant)>;
    fn deref(&self) -> &Self::Target {
        &self.jobs
    }
}

impl std::ops::DerefMut for LocalQueue {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.jobs
    }
}

impl LocalQueue {
    /// Returns every waiting job to the database, its attempt refunded.
    fn hand_back(&mut self) {
        for (job, _) in self.jobs.drain(..) {
            self.completer.send(job.id, Outcome::Returned, true);
        }
    }
}

impl Drop for LocalQueue {
    fn drop(&mut self) {
        self.hand_back();
    }
}

/// Aborts a task when dropped (a finished task is unaffected).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a background claim brought back.
enum Claimed {
    /// `limit` is what was asked for; `epoch` the wake-up count when the
    /// claim started (`None` if it overlapped another), `finished_before`
    /// the count of finished jobs then.
    Jobs {
        batch: ClaimBatch,
        limit: usize,
        epoch: Option<u64>,
        finished_before: u64,
    },
    Failed {
        error: String,
        limit: usize,
    },
}

/// Appends claimed jobs to the local queue, keeping it in the order jobs
/// start: priority, then run_at. Each claim returns its jobs in that order,
/// but two overlapping claims can come back in either order.
fn buffer_in_order(buffer: &mut VecDeque<(Job, Instant)>, jobs: Vec<Job>, claimed_at: Instant) {
    let in_order = match (buffer.back(), jobs.first()) {
        (Some((last, _)), Some(first)) => {
            (last.priority, last.run_at) <= (first.priority, first.run_at)
        }
        _ => true,
    };
    buffer.extend(jobs.into_iter().map(|j| (j, claimed_at)));
    if !in_order {
        let buffer = buffer.make_contiguous();
        buffer.sort_by_key(|(j, _)| (j.priority, j.run_at));
        // The time-limit check looks at the front only, so claim times must
        // not decrease along the queue: after a merge every job counts from
        // the oldest claim among them.
        if let Some(oldest) = buffer.iter().map(|(_, since)| *since).min() {
            for (_, since) in buffer.iter_mut() {
                *since = oldest;
            }
        }
    }
}

/// Sends a running job's outcome, or, if the job's task ends without one (a
/// panic outside the task's own future, or the task being dropped), a
/// failure, so that no claimed job is left locked while the worker lives.
struct OutcomeGuard {
    job_id: i64,
    queued: bool,
    completer: Option<Completer>,
}

impl OutcomeGuard {
    fn send(mut self, outcome: Outcome) {
        if let Some(completer) = self.completer.take() {
            // A finished queued job unlocks its queue; an interrupted one
            // can run again at once.
            let frees_work = self.queued
                || matches!(
                    outcome,
                    Outcome::Failed {
                        interrupted: true,
                        ..
                    }
                );
            completer.send(self.job_id, outcome, frees_work);
        }
    }
}

impl Drop for OutcomeGuard {
    fn drop(&mut self) {
        let Some(completer) = self.completer.take() else {
            return;
        };
        let outcome = if std::thread::panicking() {
            Outcome::Failed {
                message: "the worker panicked while running this job".into(),
                interrupted: false,
            }
        } else {
            Outcome::Failed {
                message: crate::execute::SHUTDOWN_MESSAGE.into(),
                interrupted: true,
            }
        };
        completer.send(self.job_id, outcome, true);
    }
}

/// Fails the claimed jobs that could not be read and hands back those to be
/// given back; both stay in `held` until written.
fn settle_rejects(held: &HeldJobs, completer: &Completer, batch: &ClaimBatch) {
    if batch.unreadable.is_empty() && batch.give_back.is_empty() {
        return;
    }
    {
        let mut held = lock_held(held);
        held.extend(batch.unreadable.iter().map(|(id, _)| *id));
        held.extend(batch.give_back.iter().copied());
    }
    for (id, message) in &batch.unreadable {
        tracing::error!(job_id = id, "{message}");
        let outcome = Outcome::Failed {
            message: message.clone(),
            interrupted: false,
        };
        // It may have held its named queue, which unlocks now.
        completer.send(*id, outcome, true);
    }
    for id in &batch.give_back {
        completer.send(*id, Outcome::Returned, true);
    }
}

/// At most this many claims are in flight at once.
const MAX_CLAIMS: usize = 2;

/// A claim starts beside one in flight only when it asks for this many jobs.
const OVERLAP_MIN: usize = 500;

/// How long a claimed job may wait in the local queue before it is handed
/// back.
const LOCAL_TTL: Duration = Duration::from_secs(5);

/// How much work, in time at the current pace, the local queue holds.
const LOOKAHEAD: Duration = Duration::from_millis(200);

/// How often the pace estimate is refreshed.
const PACE_WINDOW: Duration = Duration::from_millis(50);

/// Default upper bound of the local queue.
const DEFAULT_LOCAL_QUEUE: usize = 5000;

/// Estimates how many jobs finish per second, to size the local queue: jobs
/// are claimed ahead of free slots only as far as they will start soon, so
/// short jobs share a round trip and long jobs are not hoarded.
///
/// Until the first estimate, and whenever claims cannot keep up, the
/// lookahead grows like TCP's slow start: each claim that comes back full to
/// a worker starved by short jobs (some finished meanwhile, and now slots are
/// free with nothing waiting) quadruples it, so a burst of short jobs
/// reaches full batches within a few round trips.
struct Pace {
    window_start: Instant,
    finished: u32,
    per_second: f64,
    boost: usize,
    finished_total: u64,
}

impl Pace {
    fn new() -> Self {
        Self {
            window_start: Instant::now(),
            finished: 0,
            per_second: 0.0,
            boost: 0,
            finished_total: 0,
        }
    }

    /// Forgets the estimate (keeping the count of finished jobs).
    fn reset(&mut self) {
        *self = Self {
            finished_total: self.finished_total,
            ..Self::new()
        };
    }

    fn record(&mut self, finished: u32) {
        self.finished += finished;
        self.finished_total += u64::from(finished);
        let elapsed = self.window_start.elapsed();
        if elapsed >= PACE_WINDOW {
            let rate = f64::from(self.finished) / elapsed.as_secs_f64();
            self.per_second = (self.per_second + rate) / 2.0;
            self.finished = 0;
            self.window_start = Instant::now();
        }
    }

    /// A claim came back with every job it asked for while the worker had
    /// free slots and nothing waiting: hold more next time.
    fn starved(&mut self, floor: usize) {
        self.boost = self.boost.max(floor).saturating_mul(4);
    }

    /// A claim came back short: there is no backlog to race through.
    fn caught_up(&mut self) {
        self.boost = 0;
    }

    /// How many jobs to hold beyond the running ones, at most `max`.
    fn ahead(&self, max: usize) -> usize {
        ((self.per_second * LOOKAHEAD.as_secs_f64()) as usize)
            .max(self.boost)
            .min(max)
    }
}

/// First SIGINT/SIGTERM: graceful shutdown; second: interrupt running jobs.
async fn watch_signals(handle: ShutdownHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot watch SIGINT/SIGTERM; stop the worker with its shutdown handle");
            return;
        };
        for count in 1.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if count == 1 {
                tracing::info!(
                    "shutdown signal received; finishing running jobs (send it again to stop at once)"
                );
                handle.shutdown();
            } else {
                tracing::warn!("second shutdown signal; interrupting running jobs");
                handle.shutdown_now();
                return;
            }
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_ok() {
            handle.shutdown();
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            handle.shutdown_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn job(id: i64, priority: i16, second: u32) -> Job {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).single();
        let at = at.unwrap_or_default();
        Job {
            id,
            queue_name: None,
            task_identifier: "t".into(),
            payload: serde_json::Value::Null,
            priority,
            run_at: at,
            attempts: 1,
            max_attempts: 25,
            last_error: None,
            created_at: at,
            updated_at: at,
            key: None,
            locked_at: None,
            locked_by: None,
            revision: 0,
            flags: None,
        }
    }

    fn ids(buffer: &VecDeque<(Job, Instant)>) -> Vec<i64> {
        buffer.iter().map(|(j, _)| j.id).collect()
    }

    #[test]
    fn a_later_claim_that_returns_first_does_not_jump_the_queue() {
        let now = Instant::now();
        let mut buffer = VecDeque::new();
        // The second claim skipped the first's rows, so it holds the
        // lower-priority jobs, and it came back first.
        buffer_in_order(&mut buffer, vec![job(5, 1, 0), job(6, 1, 1)], now);
        buffer_in_order(&mut buffer, vec![job(1, 0, 0), job(2, 0, 5)], now);
        assert_eq!(ids(&buffer), vec![1, 2, 5, 6]);
        // Ties keep claim order; run_at breaks ties in priority.
        buffer_in_order(&mut buffer, vec![job(3, 0, 3), job(7, 1, 1)], now);
        assert_eq!(ids(&buffer), vec![1, 3, 2, 5, 6, 7]);
    }

    #[test]
    fn batches_in_order_are_appended() {
        let now = Instant::now();
        let mut buffer = VecDeque::new();
        buffer_in_order(&mut buffer, vec![job(1, 0, 0), job(2, 0, 1)], now);
        buffer_in_order(&mut buffer, vec![job(3, 0, 1), job(4, 2, 0)], now);
        assert_eq!(ids(&buffer), vec![1, 2, 3, 4]);
    }
}

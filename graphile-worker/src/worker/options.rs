//! Building a worker: the options, their validation, and `init`, which
//! connects, migrates and registers the task identifiers.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use super::connect::{listener_pool, pool_from_options, pool_from_url, warn_if_pool_small};
use super::local_queue::DEFAULT_LOCAL_QUEUE;
use super::{Inner, Worker, metadata};
use crate::backoff::random_u64;
use crate::claim::{ClaimScope, Claimer, FlagsFn};
use crate::context::JobContext;
use crate::cron::{CronItem, CronPattern, CronTimeZone, duplicate_identifier, parse_crontab};
use crate::data::DataMap;
use crate::error::Error;
use crate::events::{Events, WorkerEvent};
use crate::heartbeat::Health;
use crate::listen::Wakeups;
use crate::policy::TaskPolicy;
use crate::registry::{
    Chain, DynamicFn, MiddlewareFn, TaskRegistration, TaskSet, registered_tasks,
};
use crate::sql::StatementMode;
use crate::task::{Task, TaskError};
use crate::worker_utils::{BeforeAdd, WorkerUtils};

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
    /// Named prepared statements, or none (PgBouncer).
    statement_mode: StatementMode,
    /// A direct connection for LISTEN when statements go through PgBouncer.
    listen_url: Option<String>,
    schema: String,
    concurrency: usize,
    poll_interval: Duration,
    forbidden_flags: Vec<String>,
    forbidden_flags_fn: Option<FlagsFn>,
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
    /// Only these jobs (the test helpers).
    claim_scope: Option<ClaimScope>,
    data: DataMap,
    retry_undecodable: bool,
    events: Events,
    /// How often the schema-wide gauges are refreshed, when metrics are on.
    queue_gauges_every: Option<Duration>,
    middleware: Chain,
    before_add: Option<BeforeAdd>,
    job_timeout: Option<Duration>,
    cancel_grace: Duration,
    task_policies: Vec<(String, TaskPolicy)>,
    /// Fill unset settings from the environment at `init`.
    from_env: bool,
    /// Connect with libpq's `PG*` variables (no URL, no pool).
    libpq_env: bool,
    /// Settings given by a builder call, which the environment does not
    /// override: schema, concurrency, poll interval.
    explicit: [bool; 3],
}

const SCHEMA_SET: usize = 0;
const CONCURRENCY_SET: usize = 1;
const POLL_INTERVAL_SET: usize = 2;

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
            statement_mode: StatementMode::Prepared,
            listen_url: None,
            schema: "graphile_worker".into(),
            concurrency: 1,
            poll_interval: Duration::from_secs(2),
            forbidden_flags: Vec::new(),
            forbidden_flags_fn: None,
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
            claim_scope: None,
            data: DataMap::default(),
            retry_undecodable: false,
            events: Events::default(),
            queue_gauges_every: None,
            middleware: Chain::default(),
            before_add: None,
            job_timeout: None,
            cancel_grace: Duration::from_secs(5),
            task_policies: Vec::new(),
            from_env: false,
            libpq_env: false,
            explicit: [false; 3],
        }
    }
}

impl WorkerOptions {
    /// Options that run every task of the `#[task]` registry.
    pub(super) fn with_registry() -> Self {
        Self {
            use_registry: true,
            ..Self::default()
        }
    }

    /// Takes the settings not given by a builder call from the environment
    /// at [`init`](Self::init), as Node graphile-worker users configure
    /// theirs; a builder call wins, whether it comes before or after this
    /// one:
    ///
    /// | variable | setting |
    /// |---|---|
    /// | `DATABASE_URL` | the database, unless [`database_url`](Self::database_url) or [`pg_pool`](Self::pg_pool) was given |
    /// | `PGDATABASE`, `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGSSLMODE`, … | libpq's variables, when `DATABASE_URL` is unset and `PGDATABASE` is set (as Node requires) |
    /// | `GRAPHILE_WORKER_SCHEMA` | [`schema`](Self::schema) |
    /// | `GRAPHILE_WORKER_CONCURRENCY` | [`concurrency`](Self::concurrency), a whole number of jobs |
    /// | `GRAPHILE_WORKER_POLL_INTERVAL` | [`poll_interval`](Self::poll_interval), in milliseconds (Node's unit) |
    /// | `GRAPHILE_WORKER_CRONTAB_FILE` | [`crontab_file`](Self::crontab_file), unless a crontab was given |
    ///
    /// Empty variables are ignored; a value that does not parse is
    /// [`Error::Config`] naming the variable. The last three names are this
    /// project's (Node reads only the first ones).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), graphile_worker::Error> {
    /// // DATABASE_URL=postgres://… GRAPHILE_WORKER_CONCURRENCY=8 ./my-worker
    /// let worker = graphile_worker::Worker::from_registry()
    ///     .from_env()
    ///     .poll_interval(std::time::Duration::from_millis(500)) // wins over the variable
    ///     .init()
    ///     .await?;
    /// # let _ = worker; Ok(()) }
    /// ```
    pub fn from_env(mut self) -> Self {
        self.from_env = true;
        self
    }

    /// Fills what [`from_env`](Self::from_env) may fill.
    fn apply_env(&mut self) -> Result<(), Error> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if self.database_url.is_none() && self.pg_pool.is_none() {
            if let Some(url) = var("DATABASE_URL") {
                self.database_url = Some(url);
            } else if var("PGDATABASE").is_some() {
                self.libpq_env = true;
            }
        }
        if !self.explicit[SCHEMA_SET]
            && let Some(schema) = var("GRAPHILE_WORKER_SCHEMA")
        {
            self.schema = schema;
        }
        if !self.explicit[CONCURRENCY_SET]
            && let Some(value) = var("GRAPHILE_WORKER_CONCURRENCY")
        {
            self.concurrency = value
                .trim()
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "GRAPHILE_WORKER_CONCURRENCY is {value:?}: give a whole number of jobs, at least 1"
                    ))
                })?;
        }
        if !self.explicit[POLL_INTERVAL_SET]
            && let Some(value) = var("GRAPHILE_WORKER_POLL_INTERVAL")
        {
            let ms: u64 = value.trim().parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                Error::Config(format!(
                    "GRAPHILE_WORKER_POLL_INTERVAL is {value:?}: give a whole number of milliseconds, at least 1"
                ))
            })?;
            self.poll_interval = Duration::from_millis(ms);
        }
        if self.crontabs.is_empty()
            && let Some(path) = var("GRAPHILE_WORKER_CRONTAB_FILE")
        {
            self.crontabs.push(CrontabSource::File(path.into()));
        }
        Ok(())
    }

    /// Connect to this database (a pool of [`max_pool_size`](Self::max_pool_size)
    /// connections is created). Use either this or [`pg_pool`](Self::pg_pool).
    ///
    /// [`init`](Self::init) reads the URL (a malformed one is
    /// [`Error::InvalidDatabaseUrl`]) and opens a first connection, giving
    /// up after 10 s: a server that is down, unreachable or refuses the
    /// login is [`Error::Connect`], naming the host and port and the reason.
    pub fn database_url(mut self, url: impl AsRef<str>) -> Self {
        self.database_url = Some(url.as_ref().to_owned());
        self
    }

    /// Use this pool. Give it at least concurrency + 4 connections: besides
    /// what running tasks use, one listens for new jobs, one writes
    /// outcomes, and under load two claim jobs at once.
    pub fn pg_pool(mut self, pool: PgPool) -> Self {
        self.pg_pool = Some(pool);
        self
    }

    /// Sends no named prepared statements, so that the worker runs through
    /// PgBouncer in transaction pooling mode (Node's
    /// `--no-prepared-statements`). Every statement is sent unnamed, and one
    /// sent outside a transaction runs in a transaction of its own, which
    /// PgBouncer keeps on one server connection; that costs three round
    /// trips per statement more than a cached prepared statement.
    ///
    /// LISTEN needs a session, which transaction pooling does not give: the
    /// worker listens on [`listen_url`](Self::listen_url) if given (a direct
    /// connection to PostgreSQL), and otherwise does not listen at all. It
    /// then finds new jobs by polling, so a job waits up to
    /// [`poll_interval`](Self::poll_interval) (2 s by default) before it
    /// starts, a cancelled job is not stopped while it runs, and a breaking
    /// migration applied by another process does not stop the worker.
    /// Heartbeats connect through the `listen_url` too when it can be
    /// reached, so a saturated PgBouncer cannot delay them; otherwise they
    /// go through PgBouncer, so size its pool so that they are never
    /// delayed for the stale threshold.
    ///
    /// With [`database_url`](Self::database_url) the worker also leaves out
    /// the `extra_float_digits` startup parameter, which PgBouncer refuses
    /// unless told to ignore it; a pool given with [`pg_pool`](Self::pg_pool)
    /// must be set up for PgBouncer by its owner.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), graphile_worker::Error> {
    /// let worker = graphile_worker::Worker::from_registry()
    ///     .database_url("postgres://app@pgbouncer:6432/app")
    ///     .no_prepared_statements()
    ///     .listen_url("postgres://app@postgres:5432/app")
    ///     .init()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn no_prepared_statements(mut self) -> Self {
        self.statement_mode = StatementMode::Unnamed;
        self
    }

    /// A direct connection to PostgreSQL (not through PgBouncer) for
    /// LISTEN, used with [`no_prepared_statements`](Self::no_prepared_statements):
    /// new jobs then start as soon as they are added, cancellations reach
    /// running jobs, and heartbeats go this way too, past PgBouncer's pool
    /// (a saturated pool could otherwise delay them until the worker is
    /// taken for dead; when this URL cannot be reached they fall back to
    /// the pool's URL). The worker keeps two connections on it: the
    /// listener's and the heartbeat's. Without `no_prepared_statements` the worker
    /// listens on a connection of its pool and ignores this URL.
    pub fn listen_url(mut self, url: impl AsRef<str>) -> Self {
        self.listen_url = Some(url.as_ref().to_owned());
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
        self.explicit[SCHEMA_SET] = true;
        self
    }

    /// How many jobs run at once; default 1 (as in Node graphile-worker).
    pub fn concurrency(mut self, jobs: usize) -> Self {
        self.concurrency = jobs;
        self.explicit[CONCURRENCY_SET] = true;
        self
    }

    /// How often an idle worker looks for jobs that no notification
    /// announced (future `run_at`, retries); default 2 s.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self.explicit[POLL_INTERVAL_SET] = true;
        self
    }

    /// Never run jobs carrying any of these flags.
    pub fn forbidden_flags(mut self, flags: &[&str]) -> Self {
        self.forbidden_flags = flags.iter().map(|f| (*f).to_owned()).collect();
        self
    }

    /// Asks `flags` before each claim for more flags to skip, on top of
    /// [`forbidden_flags`](Self::forbidden_flags), as Node's
    /// `forbiddenFlags` function does (rate limiters such as
    /// graphile-worker-rate-limiter use it). It is called at most once per
    /// claim; an error, a panic or taking over 10 s is logged and adds no
    /// flags for that claim. Keep it quick: claims wait for it.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    ///
    /// # async fn demo(pool: sqlx::PgPool) -> Result<(), graphile_worker::Error> {
    /// let throttled = Arc::new(AtomicBool::new(false));
    /// let flag = throttled.clone();
    /// let worker = graphile_worker::Worker::from_registry()
    ///     .pg_pool(pool)
    ///     .forbidden_flags_fn(move || {
    ///         let throttled = flag.load(Ordering::Relaxed);
    ///         async move {
    ///             Ok::<_, std::convert::Infallible>(if throttled { vec!["smtp".to_owned()] } else { vec![] })
    ///         }
    ///     })
    ///     .init()
    ///     .await?;
    /// # let _ = (worker, throttled); Ok(()) }
    /// ```
    pub fn forbidden_flags_fn<F, Fut, E>(mut self, flags: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Vec<String>, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        self.forbidden_flags_fn = Some(FlagsFn(Arc::new(move || {
            let asked = flags();
            Box::pin(async move { asked.await.map_err(|e| e.to_string()) })
        })));
        self
    }

    /// How long running jobs may take to finish after shutdown is requested
    /// before they are interrupted (and retried later); default 5 s.
    pub fn shutdown_grace_period(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// The time limit of every job whose task sets none (see
    /// [`TaskPolicy::timeout`]); default none. When it passes, the task is
    /// told through [`JobContext::cancelled`], gets the
    /// [`cancel_grace_period`](Self::cancel_grace_period), and is then
    /// dropped; the job fails with `timed out after 30s` and is retried.
    pub fn job_timeout(mut self, limit: Duration) -> Self {
        self.job_timeout = Some(limit);
        self
    }

    /// How long a task that hit its time limit, or whose job was
    /// cancelled, has to return before it is dropped at its current await;
    /// default 5 s.
    pub fn cancel_grace_period(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// Sets parts of one task's [`TaskPolicy`], replacing what its
    /// `#[task(...)]` (or [`Task::policy`]) said for those parts; the task
    /// must be registered on this worker.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use graphile_worker::{RetryPolicy, TaskPolicy, Worker};
    /// # async fn example() -> Result<(), graphile_worker::Error> {
    /// let worker = Worker::from_registry()
    ///     .database_url("postgres://localhost/app")
    ///     .concurrency(16)
    ///     .task_policy("render_video", TaskPolicy::new().concurrency(2).timeout(Duration::from_secs(600)))
    ///     .task_policy("call_partner", TaskPolicy::new().retry(RetryPolicy::constant(Duration::from_secs(30))))
    ///     .init()
    ///     .await?;
    /// # let _ = worker; Ok(()) }
    /// ```
    pub fn task_policy(mut self, identifier: &str, policy: TaskPolicy) -> Self {
        self.task_policies.push((identifier.to_owned(), policy));
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

    /// How often the worker refreshes its heartbeat (on a connection and a
    /// thread of its own) and the locks of the jobs it holds; default 10 s.
    /// Must be well below the stale threshold.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// A registered worker whose last heartbeat is older than this is dead:
    /// its jobs are retried elsewhere; default 60 s. A worker whose own
    /// heartbeat is older than half of this stops claiming and starting
    /// jobs, and past three quarters stops its running jobs too, before any
    /// peer can take them.
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

    /// Claims only the jobs `scope` allows (the test helpers' runs).
    #[cfg(feature = "testing")]
    pub(crate) fn claim_scope(mut self, scope: ClaimScope) -> Self {
        self.claim_scope = Some(scope);
        self
    }

    /// Schedules recurring jobs built in code.
    pub fn cron_items(mut self, items: impl IntoIterator<Item = CronItem>) -> Self {
        self.cron_items.extend(items);
        self
    }

    /// Shares `value` with every task: a `#[task]` function takes it as a
    /// [`Data<T>`](crate::Data) parameter, a hand-written task through
    /// [`JobContext::data`](crate::JobContext::data). One value per type (a
    /// second one of the same type replaces the first); wrap values in your
    /// own types to tell two of the same type apart. [`init`](Self::init)
    /// refuses to start when a task asks for a type nobody registered.
    ///
    /// ```no_run
    /// # struct Mailer;
    /// # impl Mailer { fn connect() -> Self { Mailer } }
    /// # async fn run() -> Result<(), graphile_worker::Error> {
    /// let worker = graphile_worker::Worker::from_registry()
    ///     .database_url("postgres://localhost/app")
    ///     .data(Mailer::connect())
    ///     .init()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn data<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.data.insert(Arc::new(value));
        self
    }

    /// Whether a job whose payload does not decode into its task's type is
    /// retried (with backoff, while attempts are left) instead of failed
    /// permanently at once. Off by default: such a payload fails the same
    /// way on every retry. Turn it on while a deploy that will accept the
    /// payloads is on its way.
    pub fn retry_undecodable_payloads(mut self, retry: bool) -> Self {
        self.retry_undecodable = retry;
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

    /// Calls `observer` with each [`WorkerEvent`] of this worker: jobs
    /// started, completed, failed, interrupted and handed back, claims,
    /// outcome writes, heartbeat failures, recoveries, cron schedules and
    /// the listener's connection. It runs on the engine's own task as the
    /// event happens (heartbeat failures on the heartbeat's own thread), so
    /// keep it quick (count, record, or send to a channel); a panicking
    /// observer is logged and ignored. A run whose future is dropped ends
    /// without the end events of its running jobs. Call it again
    /// to add more observers.
    ///
    /// ```no_run
    /// use graphile_worker::{Worker, WorkerEvent};
    /// # async fn example() -> Result<(), graphile_worker::Error> {
    /// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    /// let worker = Worker::from_registry()
    ///     .database_url("postgres://localhost/app")
    ///     .on_event(move |event: &WorkerEvent| {
    ///         let _ = tx.send(event.clone());
    ///     })
    ///     .init()
    ///     .await?;
    /// tokio::spawn(async move {
    ///     while let Some(event) = rx.recv().await {
    ///         if let WorkerEvent::JobFailed { job, error, .. } = event {
    ///             eprintln!("job {} failed: {error}", job.id);
    ///         }
    ///     }
    /// });
    /// worker.run().await
    /// # }
    /// ```
    pub fn on_event<F>(mut self, observer: F) -> Self
    where
        F: Fn(&WorkerEvent) + Send + Sync + 'static,
    {
        self.events = self.events.with(Arc::new(observer));
        self
    }

    /// Records metrics through the `metrics` facade (feature `metrics`):
    /// job counts, durations and waits, claims, recoveries, and the
    /// schema's jobs by state; see [`MetricsOptions`](crate::MetricsOptions)
    /// for the names. The application installs the exporter.
    ///
    /// ```no_run
    /// use graphile_worker::{MetricsOptions, Worker};
    /// # async fn example() -> Result<(), graphile_worker::Error> {
    /// let worker = Worker::from_registry()
    ///     .database_url("postgres://localhost/app")
    ///     .metrics(MetricsOptions::default().queue_label(false))
    ///     .init()
    ///     .await?;
    /// # let _ = worker; Ok(()) }
    /// ```
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, options: crate::MetricsOptions) -> Self {
        self.queue_gauges_every = options.gauges_every();
        self.on_event(crate::metrics::observer(&options))
    }

    /// Wraps every job's run: `around` gets the job's context and the
    /// [`Next`](crate::Next) step, may read the job, add per-job values
    /// with [`JobContext::with_data`], run the rest with `next.run(ctx)`,
    /// and sees (or changes) its outcome. Middleware added first runs
    /// outermost. A payload that does not decode reaches the middleware as
    /// the task's error (permanent unless
    /// [`retry_undecodable_payloads`](Self::retry_undecodable_payloads)).
    ///
    /// ```no_run
    /// use graphile_worker::{JobContext, Next, Worker};
    ///
    /// struct Tenant(String);
    ///
    /// # async fn example() -> Result<(), graphile_worker::Error> {
    /// let worker = Worker::from_registry()
    ///     .database_url("postgres://localhost/app")
    ///     .middleware(|ctx: JobContext, next: Next| async move {
    ///         let tenant = ctx.job().payload["tenant"].as_str().unwrap_or("none").to_owned();
    ///         let result = next.run(ctx.with_data(Tenant(tenant.clone()))).await;
    ///         if let Err(e) = &result {
    ///             eprintln!("tenant {tenant}: {e}");
    ///         }
    ///         result
    ///     })
    ///     .init()
    ///     .await?;
    /// # let _ = worker; Ok(()) }
    /// ```
    pub fn middleware<F, Fut>(mut self, around: F) -> Self
    where
        F: Fn(JobContext, crate::Next) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        let around: Arc<MiddlewareFn> = Arc::new(move |ctx, next| Box::pin(around(ctx, next)));
        self.middleware = self.middleware.with(around);
        self
    }

    /// Calls `hook` before each job added through the worker's utilities
    /// (what tasks get from [`JobContext::utils`](crate::JobContext::utils),
    /// and [`Worker::utils`](crate::Worker::utils)), as
    /// [`WorkerUtils::before_add`] does for other utilities. One hook:
    /// a later call, or `propagate_trace_context`, replaces it.
    pub fn before_add(
        mut self,
        hook: impl Fn(&str, &mut crate::JobSpec) + Send + Sync + 'static,
    ) -> Self {
        self.before_add = Some(BeforeAdd(Arc::new(hook)));
        self
    }

    /// Stamps the trace context on the follow-up jobs the worker's tasks
    /// add (feature `opentelemetry`); see
    /// [`WorkerUtils::propagate_trace_context`].
    #[cfg(feature = "opentelemetry")]
    pub fn propagate_trace_context(self) -> Self {
        self.before_add(crate::otel::stamp_trace_context)
    }

    /// Adds a task given at run time: `run` gets each job's context (the
    /// payload is `ctx.job().payload`, as JSON) and returns its outcome.
    /// For tasks whose identifiers are known only at run time, such as the
    /// executables in a directory the `graphile-worker` command runs; a
    /// typed [`Task`] is usually the better fit.
    ///
    /// ```no_run
    /// use graphile_worker::{TaskError, Worker};
    /// # async fn example() -> Result<(), graphile_worker::Error> {
    /// let worker = Worker::options()
    ///     .database_url("postgres://localhost/app")
    ///     .register_fn("log_payload", |ctx| async move {
    ///         println!("{}", ctx.job().payload);
    ///         Ok::<(), TaskError>(())
    ///     })
    ///     .init()
    ///     .await?;
    /// # let _ = worker; Ok(()) }
    /// ```
    #[track_caller]
    pub fn register_fn<F, Fut>(mut self, identifier: &str, run: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        let location = std::panic::Location::caller();
        let run: Arc<DynamicFn> = Arc::new(move |ctx| Box::pin(run(ctx)));
        if let Err(e) = self.tasks.insert_dynamic(
            identifier,
            run,
            format!("{}:{}", location.file(), location.line()),
        ) {
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
        if self.from_env {
            self.apply_env()?;
        }
        self.check()?;
        let (tasks, cron_items) = self.select_tasks()?;
        if let Some((task, type_name)) = tasks.missing_data(&self.data) {
            return Err(Error::MissingData {
                task,
                type_name: type_name.to_owned(),
            });
        }
        let pool = self.connect().await?;
        crate::panics::install_hook();

        let listener = match (self.statement_mode, self.listen_url.take()) {
            (StatementMode::Prepared, Some(_)) => {
                tracing::warn!(
                    "listen_url is for no_prepared_statements (PgBouncer); this worker listens on a connection of its pool"
                );
                Some(pool.clone())
            }
            (StatementMode::Prepared, None) => Some(pool.clone()),
            (StatementMode::Unnamed, Some(url)) => Some(listener_pool(&url)?),
            (StatementMode::Unnamed, None) => {
                tracing::info!(
                    "no prepared statements and no listen_url: finding new jobs by polling every {:?}",
                    self.poll_interval
                );
                None
            }
        };
        let mut utils =
            WorkerUtils::new(pool.clone(), &self.schema).with_before_add(self.before_add.take());
        if self.statement_mode == StatementMode::Unnamed {
            utils = utils.no_prepared_statements();
        }
        utils.migrate().await?;

        let pool_id = format!("pool-{:018x}", random_u64() as u128 & ((1 << 72) - 1));
        let identifiers = tasks.identifiers();
        let forbidden = (!self.forbidden_flags.is_empty()).then(|| self.forbidden_flags.clone());
        let claimer = Claimer::new(utils.db().clone(), pool_id.clone(), &identifiers, forbidden)
            .await?
            .with_scope(self.claim_scope.take())
            .with_flags_fn(self.forbidden_flags_fn.take());
        tracing::info!(pool_id = %pool_id, tasks = ?identifiers, "worker ready");

        let (shutdown, _) = watch::channel(false);
        let (abort, _) = watch::channel(false);
        Ok(Worker {
            inner: Arc::new(Inner {
                db: utils.db().clone(),
                utils,
                listener,
                pool_id,
                tasks,
                data: Arc::new(std::mem::take(&mut self.data)),
                retry_undecodable: self.retry_undecodable,
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
                health: Arc::new(Health::new(
                    self.recovery.then_some(self.stale_worker_threshold),
                )),
                run_active: AtomicBool::new(false),
                events: std::mem::take(&mut self.events),
                queue_gauges_every: self.queue_gauges_every,
                middleware: std::mem::take(&mut self.middleware),
                job_timeout: self.job_timeout,
                cancel_grace: self.cancel_grace,
                cancellations: Arc::default(),
            }),
        })
    }
}

impl WorkerOptions {
    /// Refuses options that cannot work, before anything connects.
    fn check(&mut self) -> Result<(), Error> {
        if let Some(e) = self.errors.drain(..).next() {
            return Err(e);
        }
        if self.concurrency == 0 {
            return Err(Error::Config("concurrency must be at least 1".into()));
        }
        // Durations are added to instants; absurd ones would overflow.
        for (name, value) in [
            ("poll_interval", self.poll_interval),
            ("shutdown_grace_period", self.shutdown_grace),
            ("heartbeat_interval", self.heartbeat_interval),
            ("stale_worker_threshold", self.stale_worker_threshold),
            ("recovery_sweep_interval", self.recovery_sweep_interval),
            ("recovery_delay", self.recovery_delay),
            ("cancel_grace_period", self.cancel_grace),
            ("job_timeout", self.job_timeout.unwrap_or_default()),
        ] {
            if value > MAX_DURATION {
                return Err(Error::Config(format!(
                    "{name} ({value:?}) is too long; give at most {} days",
                    MAX_DURATION.as_secs() / 86_400
                )));
            }
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
        Ok(())
    }

    /// The tasks this worker runs (registered by hand or through the
    /// registry, then `only`/`except`), and every cron schedule.
    fn select_tasks(&mut self) -> Result<(TaskSet, Vec<CronItem>), Error> {
        let mut tasks = std::mem::take(&mut self.tasks);
        let mut declared_cron = Vec::new();
        if self.use_registry {
            for registration in registered_tasks() {
                tasks.insert(registration)?;
                declared_cron.push(registration);
            }
        }
        for (identifier, policy) in &self.task_policies {
            tasks.override_policy(identifier, policy)?;
        }
        let registered = tasks.identifiers();
        if let Some(only) = &self.only {
            tasks.retain_only(only)?;
        }
        tasks.remove_all(&self.except)?;
        if tasks.is_empty() {
            return Err(if registered.is_empty() {
                Error::NoTasks
            } else {
                Error::NoTasksLeft { registered }
            });
        }
        let cron_items = self.collect_cron_items(&tasks, &declared_cron)?;
        Ok((tasks, cron_items))
    }

    /// The pool given, or one created from the URL.
    async fn connect(&mut self) -> Result<PgPool, Error> {
        match (self.pg_pool.take(), self.database_url.take()) {
            (Some(_), Some(_)) => Err(Error::Config(
                "give either database_url or pg_pool, not both".into(),
            )),
            (Some(pool), None) => {
                warn_if_pool_small(&pool, self.concurrency);
                Ok(pool)
            }
            (None, Some(url)) => {
                pool_from_url(
                    &url,
                    self.max_pool_size,
                    self.concurrency,
                    self.statement_mode,
                )
                .await
            }
            (None, None) if self.libpq_env => {
                pool_from_options(
                    sqlx::postgres::PgConnectOptions::new(),
                    self.max_pool_size,
                    self.concurrency,
                    self.statement_mode,
                )
                .await
            }
            (None, None) if self.from_env => Err(Error::Config(
                "no database: set DATABASE_URL (or PGDATABASE and the other PG* variables), or call database_url(..) or pg_pool(..)".into(),
            )),
            (None, None) => Err(Error::Config(
                "no database: call database_url(..) or pg_pool(..)".into(),
            )),
        }
    }

    /// Every cron schedule: crontab texts and files, items built in code,
    /// and `#[task(cron = ...)]` of the tasks this worker runs. A task with
    /// one declared schedule is identified by its name; with several, by
    /// `name#1`, `name#2`, … in declaration order.
    fn collect_cron_items(
        &mut self,
        tasks: &TaskSet,
        declared: &[&'static TaskRegistration],
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
        for registration in declared {
            let task = registration.identifier();
            let patterns = registration.cron();
            if tasks.handler(task).is_none() {
                continue;
            }
            let time_zone =
                match registration.cron_time_zone() {
                    Some(name) => Some(CronTimeZone::parse(name).map_err(|reason| {
                        Error::TaskCronTimeZone {
                            task: task.to_owned(),
                            location: registration.location(),
                            reason,
                        }
                    })?),
                    None => None,
                };
            for (n, pattern) in patterns.iter().enumerate() {
                let pattern = CronPattern::parse(pattern).map_err(|reason| Error::TaskCron {
                    task: task.to_owned(),
                    location: registration.location(),
                    pattern: (*pattern).to_owned(),
                    reason: Box::new(reason),
                })?;
                let mut item = CronItem::new(task, pattern);
                item.options.time_zone = time_zone;
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

/// The longest duration accepted for any setting (about 100 years would
/// overflow some clocks when added to "now"; nobody means more than this).
const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

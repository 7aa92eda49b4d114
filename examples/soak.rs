//! Soak: several worker processes drain many jobs while faults are injected
//! all along, then the run is checked against what the guide promises
//! (`docs/src/recovery.md`: heartbeats, dead-worker recovery, what is
//! guaranteed).
//!
//! ```sh
//! cargo run --release --example soak                  # 100k jobs, 4 workers
//! cargo run --release --example soak -- --jobs 20000 --workers 3 --seconds 300
//! ```
//!
//! `--jobs` (default 100,000) jobs are queued, `--workers` (default 4)
//! worker processes run them, and faults are injected until every job is
//! done or `--seconds` (default 600) have passed. With no `DATABASE_URL` a
//! throwaway PostgreSQL is started (see `graphile_worker_dev`); with one,
//! a fresh database is made on that server and the restart fault is skipped.
//!
//! # How it works
//!
//! The program re-runs itself with `--worker` to start each worker process
//! (concurrency 8, heartbeat 500 ms, stale threshold 3 s, recovery sweep
//! 500 ms, shutdown grace 1 s). Each worker reaches PostgreSQL through a TCP
//! proxy of its own, run by this (parent) process, so one worker at a time
//! can be cut off. Every job is a `soak_job`: it writes a `start` row in the
//! ledger table `runs`, sleeps 0 to 20 ms (2 s for every 500th job), and
//! then writes a `done` row, unless the worker asked it to stop meanwhile
//! (then it writes `cancelled` and fails). The ledger is written through a
//! separate pool that does not go through the proxy, each row keyed by a
//! random id of the run and retried until it lands, so a `done` row means
//! that run really got to the end, once. One job in 20 goes to one of 4
//! named queues, so that queue locks are exercised too.
//!
//! Every 1 to 2 s the parent injects one fault, at random:
//!
//! - `kill -9`: kills a worker process and starts a replacement;
//! - `cut`: resets every connection of one worker;
//! - `pause`: stalls one worker's connections for 0.5 to 2 s (below the
//!   stale threshold: its jobs must not be taken by peers);
//! - `long pause`: stalls them for 5 s (beyond the threshold: the worker
//!   must stop its jobs before peers recover them);
//! - `blackhole+cut`: statements run but their answers are lost for 300 ms,
//!   then every connection is reset;
//! - `restart`: a fast restart of PostgreSQL (every connection drops).
//!
//! It samples each worker's resident memory (`VmRSS`) every second. When no
//! job is left (or at the deadline) it waits up to 60 s for the queue to
//! drain without faults, stops the workers with SIGTERM, and reads the
//! ledger and the jobs table. A worker exits by itself when the parent goes
//! away (its stdin closes), so an interrupted soak leaves nothing running.
//! `cargo test --example soak` checks the analysis on made-up ledgers.
//!
//! # How to read the output
//!
//! Progress and every fault go to stderr, with wall-clock times that match
//! the workers' logs (one file per worker process under
//! `/tmp/soak-logs/run-<time>/`; `SOAK_LOG` sets their filter, default
//! `warn,graphile_worker=info,soak=info`). The report on stdout is a table:
//!
//! - **done exactly once**: jobs with one `done` row, the normal case;
//! - **re-run after a dead worker**: two `done` rows, the earlier from a
//!   process that was killed (or died) before the later run began:
//!   allowed, at least once;
//! - **re-run after a long cut-off**: the earlier from a worker cut off for
//!   at least the stale threshold around that time: allowed ("cut off for
//!   longer than the stale threshold" is not guaranteed);
//! - **DOUBLE RUN by a live worker**: any other second `done`: a violation;
//! - **overlapping runs**: a run went on (wrote `done` or `cancelled`) after
//!   another run of the same job had started: a violation, whatever the
//!   fault, since a worker must stop its jobs before peers may take them;
//! - **LOST**: jobs with no `done` row at all: a violation;
//! - **started while cut off > threshold/2**, **done while cut off > 3/4
//!   threshold**: a run that a worker whose proxy was paused started more
//!   than half the stale threshold (plus 250 ms of slack) into the pause,
//!   or finished more than three quarters into it: a violation (the guide:
//!   a worker starts jobs only while its last heartbeat is younger than half
//!   the threshold, and stops them at three quarters);
//! - **declared dead, not cut off ≥ threshold**: a worker logged that a peer
//!   declared it dead, with no cut-off of at least the threshold just
//!   before: a violation;
//! - **rows still locked** in `_private_jobs` / `_private_job_queues` once
//!   every worker stopped: a violation;
//! - **max RSS** per worker process, with the 256 MiB limit: a violation
//!   above it; a worker that does not stop within 20 s of SIGTERM is one
//!   too.
//!
//! Each violation class gets a line with example job ids, followed by the
//! ledger rows of a few of them, the faults around that time and the lines
//! the workers logged about them. The exit code is 0 only when there is no
//! violation (1 with violations, 2 when the soak itself could not run).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use graphile_worker::{JobContext, NewJob, Task, TaskError, Worker, WorkerUtils, quote_identifier};
use graphile_worker_dev::proxy::Proxy;
use graphile_worker_dev::{TestDatabase, fresh_database, restart_server};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

const SCHEMA: &str = "graphile_worker";

// Worker settings.
const CONCURRENCY: usize = 8;
const HEARTBEAT: Duration = Duration::from_millis(500);
const STALE_THRESHOLD: Duration = Duration::from_secs(3);
const SWEEP: Duration = Duration::from_millis(500);
const GRACE: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_secs(1);

// Jobs.
const ENQUEUE_BATCH: u64 = 5_000;
const MAX_SHORT_JOB_MS: u64 = 20;
const LONG_JOB_EVERY: u64 = 500;
const LONG_JOB: Duration = Duration::from_secs(2);
const QUEUED_EVERY: u64 = 20;
const QUEUES: u64 = 4;

// The parent.
const LOG_ROOT: &str = "/tmp/soak-logs";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const RSS_LIMIT_KIB: u64 = 256 * 1024;
/// Job ids shown per violation class, and jobs described in detail.
const EXAMPLES: usize = 10;
const DETAILED: usize = 3;

fn main() -> ExitCode {
    seed_random();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    if args.first().map(String::as_str) == Some("--worker") {
        return runtime.block_on(worker_main());
    }
    match Settings::parse(&args) {
        Ok(settings) => runtime.block_on(parent_main(settings)),
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}

// ------------------------------------------------------------------ random

static RANDOM: AtomicU64 = AtomicU64::new(0);

fn seed_random() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    RANDOM.store(
        nanos ^ (u64::from(std::process::id()) << 32),
        Ordering::Relaxed,
    );
}

/// SplitMix64 over a shared counter: good enough to pick faults and ids.
fn random_u64() -> u64 {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut z = RANDOM
        .fetch_add(GAMMA, Ordering::Relaxed)
        .wrapping_add(GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A number in `0..n` (`n` > 0).
fn random_below(n: u64) -> u64 {
    random_u64() % n
}

fn random_between(low: Duration, high: Duration) -> Duration {
    let span = high.saturating_sub(low).as_millis() as u64;
    low + Duration::from_millis(random_below(span + 1))
}

// ---------------------------------------------------------- worker process

/// The one task: see the module documentation.
#[derive(Serialize, Deserialize)]
struct SoakJob {
    n: u64,
}

impl SoakJob {
    fn duration(&self) -> Duration {
        if self.n.is_multiple_of(LONG_JOB_EVERY) {
            LONG_JOB
        } else {
            Duration::from_millis(random_below(MAX_SHORT_JOB_MS + 1))
        }
    }
}

impl Task for SoakJob {
    const IDENTIFIER: &'static str = "soak_job";

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        let run = LedgerRun::new(&ctx);
        run.record("start").await;
        tokio::time::sleep(self.duration()).await;
        if ctx.is_cancelled() {
            run.record("cancelled").await;
            return Err(TaskError::new("soak: cancelled before writing done"));
        }
        run.record("done").await;
        Ok(())
    }
}

/// The ledger's own pool, straight to PostgreSQL (not through the proxy).
static LEDGER: OnceLock<PgPool> = OnceLock::new();

/// One run of a job, as the ledger knows it.
struct LedgerRun {
    id: String,
    job_id: i64,
    attempt: i32,
}

impl LedgerRun {
    fn new(ctx: &JobContext) -> Self {
        Self {
            id: format!("{}-{:016x}", std::process::id(), random_u64()),
            job_id: ctx.job_id(),
            attempt: i32::from(ctx.attempts()),
        }
    }

    /// Writes `event` for this run, retrying until it lands; idempotent, so
    /// a retry after a lost answer adds nothing.
    async fn record(&self, event: &str) {
        let ledger = LEDGER
            .get()
            .expect("the ledger pool is set before the worker starts");
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let mut failures = 0u32;
        loop {
            let written = sqlx::query(
                "insert into runs (run_id, event, job_id, attempt, pid) values ($1, $2, $3, $4, $5) \
                 on conflict do nothing",
            )
            .bind(&self.id)
            .bind(event)
            .bind(self.job_id)
            .bind(self.attempt)
            .bind(pid)
            .execute(ledger)
            .await;
            match written {
                Ok(_) => return,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(100) {
                        tracing::warn!(job_id = self.job_id, event, failures, error = %e,
                            "soak: ledger write failed; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// A worker process: `DATABASE_URL` (the proxy), `SOAK_LEDGER_URL` (the
/// database itself) and `SOAK_SCHEMA` come from the parent.
async fn worker_main() -> ExitCode {
    let filter = std::env::var("SOAK_LOG")
        .unwrap_or_else(|_| "warn,graphile_worker=info,soak=info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    match run_worker().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("soak worker stopped with an error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exits when the parent goes away (its end of our stdin closes), so that a
/// soak stopped with Ctrl-C, or killed, leaves no worker behind.
fn exit_with_parent() {
    std::thread::spawn(|| {
        let mut stdin = std::io::stdin();
        let mut sink = [0u8; 64];
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        eprintln!("soak worker: the parent process is gone; exiting");
        std::process::exit(4);
    });
}

async fn run_worker() -> Result<()> {
    exit_with_parent();
    let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set")?;
    let ledger_url = std::env::var("SOAK_LEDGER_URL").map_err(|_| "SOAK_LEDGER_URL is not set")?;
    let schema = std::env::var("SOAK_SCHEMA").map_err(|_| "SOAK_SCHEMA is not set")?;
    let ledger = PgPoolOptions::new()
        .max_connections(CONCURRENCY as u32)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(&ledger_url)?;
    LEDGER
        .set(ledger)
        .map_err(|_| "the ledger pool was set twice")?;
    let worker = Worker::options()
        .database_url(&url)
        .schema(&schema)
        .concurrency(CONCURRENCY)
        .poll_interval(POLL)
        .heartbeat_interval(HEARTBEAT)
        .stale_worker_threshold(STALE_THRESHOLD)
        .recovery_sweep_interval(SWEEP)
        .shutdown_grace_period(GRACE)
        .register::<SoakJob>()
        .init()
        .await?;
    tracing::info!(
        pid = std::process::id(),
        pool_id = worker.pool_id(),
        "soak worker ready"
    );
    println!("ready {}", worker.pool_id());
    worker.run().await?;
    Ok(())
}

// ------------------------------------------------------------------ parent

struct Settings {
    jobs: u64,
    workers: usize,
    seconds: u64,
}

impl Settings {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut settings = Settings {
            jobs: 100_000,
            workers: 4,
            seconds: 600,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut number = || -> Result<u64, String> {
                args.next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{arg} needs a positive number"))
            };
            match arg.as_str() {
                "--jobs" => settings.jobs = number()?,
                "--workers" => settings.workers = number()? as usize,
                "--seconds" => settings.seconds = number()?,
                other => {
                    return Err(format!(
                        "unknown argument {other}; use --jobs N, --workers N, --seconds N"
                    ));
                }
            }
        }
        Ok(settings)
    }
}

static STARTED: OnceLock<Instant> = OnceLock::new();

/// A progress line on stderr: wall clock (as in the workers' logs) and
/// seconds since the start.
fn note(message: impl std::fmt::Display) {
    let since = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{} +{since:6.1}s] {message}", clock(Utc::now()));
}

fn clock(at: DateTime<Utc>) -> String {
    at.format("%H:%M:%S%.3f").to_string()
}

async fn parent_main(settings: Settings) -> ExitCode {
    STARTED.get_or_init(Instant::now);
    match soak(&settings).await {
        Ok(report) => {
            report.print();
            if report.violations().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("soak: could not run: {e}");
            ExitCode::from(2)
        }
    }
}

async fn soak(settings: &Settings) -> Result<Report> {
    let log_dir = make_log_dir()?;
    note(format!("worker logs: {}", log_dir.display()));
    let db = fresh_database().await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy(&db.url)?;
    let utils = WorkerUtils::new(pool.clone(), SCHEMA);
    utils.migrate().await?;
    create_ledger(&pool).await?;
    note(format!(
        "enqueueing {} jobs into {}",
        settings.jobs, db.name
    ));
    let job_ids = enqueue(&utils, settings.jobs).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "analyze {}._private_jobs",
        quote_identifier(SCHEMA)
    )))
    .execute(&pool)
    .await?;

    let rss = RssBook::default();
    let sampler = rss.spawn_sampler();
    let mut fleet = Fleet::new(&db, log_dir.clone(), rss.clone())?;
    fleet.start_all(settings.workers).await?;

    let chaos_began = Instant::now();
    let deadline = chaos_began + Duration::from_secs(settings.seconds);
    let mut chaos = Chaos::default();
    let finished = chaos.run(&mut fleet, &pool, deadline).await?;
    let chaos_time = chaos_began.elapsed();
    note(if finished {
        "every job is done; faults stop".to_owned()
    } else {
        format!("deadline of {} s reached; faults stop", settings.seconds)
    });

    let drain_began = Instant::now();
    let drained = drain(&mut fleet, &pool).await;
    let drain_time = drain_began.elapsed();
    let stop_began = Instant::now();
    rss.sample();
    fleet.stop_all().await;
    let stop_time = stop_began.elapsed();
    sampler.abort();

    let runs = load_runs(&pool).await?;
    let table = TableState::load(&pool).await?;
    pool.close().await;
    if std::env::var_os("DATABASE_URL").is_some() {
        note(format!(
            "database {} kept on DATABASE_URL's server",
            db.name
        ));
    }
    Ok(Report::build(Inputs {
        settings,
        job_ids,
        runs,
        table,
        fleet: &fleet,
        chaos: &chaos,
        rss: &rss,
        log_dir,
        times: Times {
            total: STARTED.get_or_init(Instant::now).elapsed(),
            chaos: chaos_time,
            drain: drain_time,
            stop: stop_time,
        },
        finished,
        drained,
    }))
}

fn make_log_dir() -> Result<PathBuf> {
    let stamp = Utc::now().format("%Y%m%d-%H%M%S");
    let dir = Path::new(LOG_ROOT).join(format!("run-{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("create the log directory {}: {e}", dir.display()))?;
    Ok(dir)
}

async fn create_ledger(pool: &PgPool) -> Result<()> {
    sqlx::raw_sql(
        "create table runs (
           run_id text not null,
           event text not null,
           job_id bigint not null,
           attempt int not null,
           pid int not null,
           at timestamptz not null default clock_timestamp(),
           primary key (run_id, event)
         );
         create index on runs (job_id);",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Queues `count` jobs in batches; returns their ids.
async fn enqueue(utils: &WorkerUtils, count: u64) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(count as usize);
    let mut first = 0;
    while first < count {
        let last = (first + ENQUEUE_BATCH).min(count);
        let jobs: Vec<NewJob> = (first..last).map(new_job).collect();
        ids.extend(
            utils
                .add_raw_jobs(&jobs)
                .await?
                .into_iter()
                .map(|job| job.id),
        );
        first = last;
    }
    Ok(ids)
}

fn new_job(n: u64) -> NewJob {
    let mut job = NewJob::new(SoakJob::IDENTIFIER, serde_json::json!({ "n": n }));
    if n % QUEUED_EVERY == 1 {
        job.spec.queue_name = Some(format!("soak-{}", (n / QUEUED_EVERY) % QUEUES));
    }
    job
}

/// Jobs that may still run (not permanently failed); `None` when the
/// database cannot be asked right now.
async fn remaining_jobs(pool: &PgPool) -> Option<i64> {
    let sql = format!(
        "select count(*) from {}._private_jobs where attempts < max_attempts",
        quote_identifier(SCHEMA)
    );
    let query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool);
    match tokio::time::timeout(Duration::from_secs(5), query).await {
        Ok(Ok(n)) => Some(n),
        _ => None,
    }
}

/// Waits, without faults, until no job is left; false at the timeout.
async fn drain(fleet: &mut Fleet, pool: &PgPool) -> bool {
    let began = Instant::now();
    loop {
        fleet.reap().await;
        match remaining_jobs(pool).await {
            Some(0) => {
                note(format!(
                    "drained {:.1} s after the faults stopped",
                    began.elapsed().as_secs_f64()
                ));
                return true;
            }
            left if began.elapsed() >= DRAIN_TIMEOUT => {
                note(format!(
                    "still {left:?} jobs left {} s after the faults stopped",
                    DRAIN_TIMEOUT.as_secs()
                ));
                return false;
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

// ------------------------------------------------------------------- fleet

/// The worker processes, one proxy per slot.
struct Fleet {
    exe: PathBuf,
    /// The database itself: upstream of the proxies, and the ledger's.
    database_url: String,
    log_dir: PathBuf,
    slots: Vec<Slot>,
    /// Every process ever started, in order.
    processes: Vec<Process>,
    rss: RssBook,
    /// Why starting a worker failed, each time it did.
    start_failures: Vec<String>,
    spawned: usize,
}

struct Slot {
    proxy: Proxy,
    running: Option<Running>,
}

/// A live worker process.
struct Running {
    child: Child,
    /// Held open while we want the worker: it exits when this closes (see
    /// [`exit_with_parent`]).
    _stdin: ChildStdin,
    /// Its index in `Fleet::processes`.
    index: usize,
}

struct Process {
    slot: usize,
    pid: u32,
    pool_id: String,
    log: PathBuf,
    end: End,
}

#[derive(Clone, Debug)]
enum End {
    Running,
    Killed(DateTime<Utc>),
    /// Exited without being asked to (the exit status).
    Died(String),
    /// Stopped by SIGTERM, after this long, with this status.
    Stopped(Duration, String),
    /// Still running `STOP_TIMEOUT` after SIGTERM; then killed.
    Stuck,
}

impl End {
    fn describe(&self) -> String {
        match self {
            End::Running => "running".into(),
            End::Killed(at) => format!("killed at {}", clock(*at)),
            End::Died(status) => format!("DIED on its own ({status})"),
            End::Stopped(after, status) => {
                format!("stopped in {:.2} s ({status})", after.as_secs_f64())
            }
            End::Stuck => format!(
                "STUCK: not stopped {} s after SIGTERM",
                STOP_TIMEOUT.as_secs()
            ),
        }
    }
}

impl Fleet {
    fn new(db: &TestDatabase, log_dir: PathBuf, rss: RssBook) -> Result<Self> {
        Ok(Self {
            exe: std::env::current_exe().map_err(|e| format!("find this program: {e}"))?,
            database_url: db.url.clone(),
            log_dir,
            slots: Vec::new(),
            processes: Vec::new(),
            rss,
            start_failures: Vec::new(),
            spawned: 0,
        })
    }

    /// Adds `count` slots and starts their workers.
    async fn start_all(&mut self, count: usize) -> Result<()> {
        for _ in 0..count {
            let proxy = Proxy::start(&self.database_url).await;
            self.slots.push(Slot {
                proxy,
                running: None,
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.slots.iter().any(|slot| slot.running.is_none()) {
            if Instant::now() > deadline {
                return Err(format!(
                    "the workers did not start within 60 s: {:?}",
                    self.start_failures
                )
                .into());
            }
            self.reap().await;
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn proxy(&self, slot: usize) -> &Proxy {
        &self.slots[slot].proxy
    }

    fn pid(&self, slot: usize) -> Option<u32> {
        let running = self.slots[slot].running.as_ref()?;
        Some(self.processes[running.index].pid)
    }

    /// Starts a worker process in an empty slot and waits for its `ready`.
    async fn try_start(&mut self, slot: usize) -> Result<()> {
        self.spawned += 1;
        let log = self
            .log_dir
            .join(format!("worker-{slot}-{}.log", self.spawned));
        let stderr =
            std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let mut child = Command::new(&self.exe)
            .arg("--worker")
            .env("DATABASE_URL", self.slots[slot].proxy.url())
            .env("SOAK_LEDGER_URL", &self.database_url)
            .env("SOAK_SCHEMA", SCHEMA)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.exe.display()))?;
        let pid = child.id().ok_or("the worker exited at once")?;
        let stdin = child.stdin.take().ok_or("the worker has no stdin pipe")?;
        let stdout = child.stdout.take().ok_or("the worker has no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(READY_TIMEOUT, lines.next_line()).await;
        let pool_id = match first {
            Ok(Ok(Some(line))) => line.strip_prefix("ready ").map(str::to_owned),
            _ => None,
        };
        let Some(pool_id) = pool_id else {
            let _ = child.start_kill();
            let status = child.wait().await;
            return Err(format!(
                "worker {slot} (pid {pid}) did not report ready ({status:?}); see {}",
                log.display()
            )
            .into());
        };
        // Nothing more is expected on stdout; keep the pipe drained anyway.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.rss.track(pid);
        note(format!(
            "worker {slot} started: pid {pid}, {pool_id}, log {}",
            log.display()
        ));
        self.processes.push(Process {
            slot,
            pid,
            pool_id,
            log,
            end: End::Running,
        });
        self.slots[slot].running = Some(Running {
            child,
            _stdin: stdin,
            index: self.processes.len() - 1,
        });
        Ok(())
    }

    /// Notes processes that exited on their own and starts a worker in
    /// every empty slot (one try each).
    async fn reap(&mut self) {
        for slot in 0..self.slots.len() {
            if let Some(running) = &mut self.slots[slot].running
                && let Ok(Some(status)) = running.child.try_wait()
            {
                let process = &mut self.processes[running.index];
                note(format!(
                    "worker {slot} (pid {}) DIED on its own: {status}; see {}",
                    process.pid,
                    process.log.display()
                ));
                process.end = End::Died(status.to_string());
                self.rss.untrack(process.pid);
                self.slots[slot].running = None;
            }
            if self.slots[slot].running.is_none()
                && let Err(e) = self.try_start(slot).await
            {
                note(format!("could not start worker {slot}: {e}"));
                self.start_failures.push(e.to_string());
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// `kill -9` the worker in `slot`, then start a replacement.
    async fn kill_and_replace(&mut self, slot: usize) {
        let Some(mut running) = self.slots[slot].running.take() else {
            return;
        };
        let at = Utc::now();
        if let Err(e) = running.child.start_kill() {
            note(format!("kill -9 failed: {e}"));
        }
        let _ = running.child.wait().await;
        let process = &mut self.processes[running.index];
        process.end = End::Killed(at);
        self.rss.untrack(process.pid);
        self.reap().await;
    }

    /// SIGTERM to every worker at once, then waits for each.
    async fn stop_all(&mut self) {
        let mut stopping = Vec::new();
        for slot in &mut self.slots {
            if let Some(running) = slot.running.take() {
                let pid = self.processes[running.index].pid;
                let sent = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status()
                    .await;
                if !sent.as_ref().is_ok_and(|s| s.success()) {
                    note(format!("kill -TERM {pid} failed: {sent:?}"));
                }
                stopping.push(running);
            }
        }
        let began = Instant::now();
        for mut running in stopping {
            let left = STOP_TIMEOUT.saturating_sub(began.elapsed());
            // Not `wait()`, which would close the worker's stdin first.
            let exited = async {
                loop {
                    match running.child.try_wait() {
                        Ok(Some(status)) => return Ok(status),
                        Ok(None) => tokio::time::sleep(Duration::from_millis(10)).await,
                        Err(e) => return Err(e),
                    }
                }
            };
            let end = match tokio::time::timeout(left, exited).await {
                Ok(Ok(status)) => End::Stopped(began.elapsed(), status.to_string()),
                Ok(Err(e)) => End::Died(format!("could not wait for it: {e}")),
                Err(_) => {
                    let _ = running.child.start_kill();
                    let _ = running.child.wait().await;
                    End::Stuck
                }
            };
            let process = &mut self.processes[running.index];
            note(format!(
                "worker {} (pid {}): {}",
                process.slot,
                process.pid,
                end.describe()
            ));
            process.end = end;
            self.rss.untrack(process.pid);
        }
    }

    /// Processes that died before the end, by pid: when they were killed,
    /// or `None` for those that died on their own (time unknown).
    fn deaths(&self) -> Deaths {
        let death = |p: &Process| match p.end {
            End::Killed(at) => Some((p.pid, Some(at))),
            End::Died(_) => Some((p.pid, None)),
            _ => None,
        };
        self.processes.iter().filter_map(death).collect()
    }

    fn process(&self, pid: u32) -> Option<&Process> {
        self.processes.iter().find(|p| p.pid == pid)
    }
}

// --------------------------------------------------------------------- RSS

/// The highest `VmRSS` (KiB) seen per worker pid.
#[derive(Clone, Default)]
struct RssBook(Arc<Mutex<BTreeMap<u32, RssEntry>>>);

#[derive(Clone, Copy, Default)]
struct RssEntry {
    max_kib: u64,
    live: bool,
}

impl RssBook {
    fn track(&self, pid: u32) {
        let mut book = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        book.entry(pid).or_default().live = true;
    }

    fn untrack(&self, pid: u32) {
        let mut book = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = book.get_mut(&pid) {
            entry.live = false;
        }
    }

    fn max_kib(&self, pid: u32) -> u64 {
        let book = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        book.get(&pid).map_or(0, |e| e.max_kib)
    }

    fn sample(&self) {
        let mut book = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (pid, entry) in book.iter_mut().filter(|(_, e)| e.live) {
            if let Some(kib) = vm_rss_kib(*pid) {
                entry.max_kib = entry.max_kib.max(kib);
            }
        }
    }

    fn spawn_sampler(&self) -> tokio::task::JoinHandle<()> {
        let book = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                book.sample();
            }
        })
    }
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ------------------------------------------------------------------- chaos

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Kill,
    Cut,
    Pause,
    LongPause,
    BlackholeThenCut,
    Restart,
}

impl Fault {
    const ALL: [Fault; 6] = [
        Fault::Kill,
        Fault::Cut,
        Fault::Pause,
        Fault::LongPause,
        Fault::BlackholeThenCut,
        Fault::Restart,
    ];

    fn label(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9",
            Fault::Cut => "cut",
            Fault::Pause => "pause",
            Fault::LongPause => "long pause",
            Fault::BlackholeThenCut => "blackhole+cut",
            Fault::Restart => "restart",
        }
    }

    /// Relative frequency.
    fn weight(self) -> u64 {
        match self {
            Fault::Kill => 20,
            Fault::Cut => 15,
            Fault::Pause => 25,
            Fault::LongPause => 10,
            Fault::BlackholeThenCut => 15,
            Fault::Restart => 10,
        }
    }
}

/// One injected fault. `pid` is `None` for a restart (every worker).
#[derive(Clone, Debug)]
struct FaultEvent {
    fault: Fault,
    slot: Option<usize>,
    pid: Option<u32>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl FaultEvent {
    /// Whether it cut workers off from PostgreSQL for at least the stale
    /// threshold (peers may then legitimately take their jobs).
    fn is_long_cut_off(&self) -> bool {
        let stalls = matches!(self.fault, Fault::Pause | Fault::LongPause | Fault::Restart);
        let long = (self.to - self.from).to_std().unwrap_or_default() >= STALE_THRESHOLD;
        stalls && long
    }

    /// Whether it is a long cut-off of the worker `pid`.
    fn long_cut_off(&self, pid: u32) -> bool {
        self.is_long_cut_off() && self.pid.is_none_or(|p| p == pid)
    }

    fn describe(&self) -> String {
        let whom = match (self.slot, self.pid) {
            (Some(slot), Some(pid)) => format!("worker {slot} (pid {pid})"),
            _ => "PostgreSQL".to_owned(),
        };
        let seconds = (self.to - self.from).num_milliseconds() as f64 / 1000.0;
        format!(
            "{} {whom}, {} to {} ({seconds:.1} s)",
            self.fault.label(),
            clock(self.from),
            clock(self.to)
        )
    }
}

#[derive(Default)]
struct Chaos {
    events: Vec<FaultEvent>,
    /// Set when `restart_server` refused (DATABASE_URL is someone else's).
    no_restart: bool,
}

impl Chaos {
    /// Injects faults until no job is left (true) or the deadline (false).
    async fn run(&mut self, fleet: &mut Fleet, pool: &PgPool, deadline: Instant) -> Result<bool> {
        let mut last_progress = Instant::now();
        loop {
            fleet.reap().await;
            let remaining = remaining_jobs(pool).await;
            if remaining == Some(0) {
                return Ok(true);
            }
            if last_progress.elapsed() >= Duration::from_secs(10) {
                let left = remaining.map_or("?".to_owned(), |n| n.to_string());
                note(format!(
                    "{left} jobs left, {} faults so far",
                    self.events.len()
                ));
                last_progress = Instant::now();
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(random_between(
                Duration::from_secs(1),
                Duration::from_secs(2),
            ))
            .await;
            self.inject(fleet).await?;
        }
    }

    fn pick(&self) -> Fault {
        let allowed: Vec<Fault> = Fault::ALL
            .into_iter()
            .filter(|f| !(self.no_restart && *f == Fault::Restart))
            .collect();
        let total: u64 = allowed.iter().map(|f| f.weight()).sum();
        let mut roll = random_below(total);
        for fault in &allowed {
            if roll < fault.weight() {
                return *fault;
            }
            roll -= fault.weight();
        }
        Fault::Cut
    }

    async fn inject(&mut self, fleet: &mut Fleet) -> Result<()> {
        let fault = self.pick();
        let slot = random_below(fleet.len() as u64) as usize;
        let pid = fleet.pid(slot);
        let from = Utc::now();
        match fault {
            Fault::Kill => fleet.kill_and_replace(slot).await,
            Fault::Cut => fleet.proxy(slot).cut(),
            Fault::Pause => {
                let stall = random_between(Duration::from_millis(500), Duration::from_secs(2));
                stall_for(fleet.proxy(slot), stall).await;
            }
            Fault::LongPause => stall_for(fleet.proxy(slot), Duration::from_secs(5)).await,
            Fault::BlackholeThenCut => blackhole_then_cut(fleet.proxy(slot)).await,
            Fault::Restart => {
                let restarted = tokio::task::spawn_blocking(restart_server).await?;
                if !restarted {
                    note("DATABASE_URL is set: PostgreSQL restarts are skipped");
                    self.no_restart = true;
                    return Ok(());
                }
            }
        }
        let (slot, pid) = match fault {
            Fault::Restart => (None, None),
            _ => (Some(slot), pid),
        };
        let event = FaultEvent {
            fault,
            slot,
            pid,
            from,
            to: Utc::now(),
        };
        note(event.describe());
        self.events.push(event);
        Ok(())
    }

    fn counts(&self) -> BTreeMap<Fault, usize> {
        let mut counts = BTreeMap::new();
        for event in &self.events {
            *counts.entry(event.fault).or_default() += 1;
        }
        counts
    }
}

async fn stall_for(proxy: &Proxy, stall: Duration) {
    proxy.pause();
    tokio::time::sleep(stall).await;
    proxy.resume();
}

/// Answers are lost for 300 ms, then every connection is reset. New
/// connections are refused around the reset, so none is left out of step
/// with its client when the blackhole ends.
async fn blackhole_then_cut(proxy: &Proxy) {
    proxy.blackhole_responses(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.refuse(true);
    proxy.cut();
    proxy.blackhole_responses(false);
    proxy.refuse(false);
}

// ------------------------------------------------------------------ ledger

/// One run of a job, from the ledger.
#[derive(Clone, Debug)]
struct Run {
    run_id: String,
    job_id: i64,
    pid: u32,
    attempt: i32,
    start: Option<DateTime<Utc>>,
    done: Option<DateTime<Utc>>,
    cancelled: Option<DateTime<Utc>>,
}

impl Run {
    /// When the run began, as far as the ledger knows.
    fn began(&self) -> Option<DateTime<Utc>> {
        self.start.or(self.done).or(self.cancelled)
    }

    /// The last time the run was seen doing something.
    fn last_seen(&self) -> Option<DateTime<Utc>> {
        self.done.max(self.cancelled)
    }
}

/// Every run, by job id, each job's runs in the order they began.
async fn load_runs(pool: &PgPool) -> Result<BTreeMap<i64, Vec<Run>>> {
    let rows: Vec<(String, String, i64, i32, i32, DateTime<Utc>)> =
        sqlx::query_as("select run_id, event, job_id, attempt, pid, at from runs")
            .fetch_all(pool)
            .await?;
    let mut runs: HashMap<String, Run> = HashMap::new();
    for (run_id, event, job_id, attempt, pid, at) in rows {
        let run = runs.entry(run_id.clone()).or_insert_with(|| Run {
            run_id,
            job_id,
            pid: u32::try_from(pid).unwrap_or(0),
            attempt,
            start: None,
            done: None,
            cancelled: None,
        });
        match event.as_str() {
            "start" => run.start = Some(at),
            "done" => run.done = Some(at),
            "cancelled" => run.cancelled = Some(at),
            _ => {}
        }
    }
    let mut by_job: BTreeMap<i64, Vec<Run>> = BTreeMap::new();
    for run in runs.into_values() {
        by_job.entry(run.job_id).or_default().push(run);
    }
    for job_runs in by_job.values_mut() {
        job_runs.sort_by_key(Run::began);
    }
    Ok(by_job)
}

/// What is left in the worker's tables once every worker stopped.
struct TableState {
    jobs: BTreeMap<i64, LeftJob>,
    locked_queues: Vec<(String, Option<String>)>,
    workers_left: Vec<String>,
}

#[derive(Debug)]
struct LeftJob {
    attempts: i16,
    max_attempts: i16,
    locked_by: Option<String>,
    locked: bool,
    last_error: Option<String>,
}

impl TableState {
    async fn load(pool: &PgPool) -> Result<Self> {
        let s = quote_identifier(SCHEMA);
        /// id, attempts, max_attempts, locked_by, locked, last_error.
        type Row = (i64, i16, i16, Option<String>, bool, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select id, attempts, max_attempts, locked_by, locked_at is not null, last_error \
                 from {s}._private_jobs"
        )))
        .fetch_all(pool)
        .await?;
        let jobs = rows
            .into_iter()
            .map(
                |(id, attempts, max_attempts, locked_by, locked, last_error)| {
                    let job = LeftJob {
                        attempts,
                        max_attempts,
                        locked_by,
                        locked,
                        last_error,
                    };
                    (id, job)
                },
            )
            .collect();
        let locked_queues = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select queue_name, locked_by from {s}._private_job_queues where locked_at is not null"
        )))
        .fetch_all(pool)
        .await?;
        let workers_left = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select id from {s}._private_workers"
        )))
        .fetch_all(pool)
        .await?;
        Ok(Self {
            jobs,
            locked_queues,
            workers_left,
        })
    }
}

// ---------------------------------------------------------------- analysis

/// Processes that died before the end: pid → when (if known).
type Deaths = BTreeMap<u32, Option<DateTime<Utc>>>;

/// Why a job has a second `done`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rerun {
    /// The earlier run's process was killed (or died) before the later run
    /// began: allowed.
    AfterDeadWorker,
    /// The earlier run's worker was cut off for at least the stale
    /// threshold around then: allowed.
    AfterLongCutOff,
    /// Neither: a violation.
    ByLiveWorker,
}

fn classify_rerun(earlier: &Run, later: &Run, deaths: &Deaths, faults: &[FaultEvent]) -> Rerun {
    let (Some(done), Some(began)) = (earlier.done, later.began()) else {
        return Rerun::ByLiveWorker;
    };
    // The cut-off first: a worker cut off long and then killed lost its
    // jobs to the cut-off.
    let cut_off = faults
        .iter()
        .any(|f| f.long_cut_off(earlier.pid) && f.to >= done && f.from <= began);
    if cut_off {
        return Rerun::AfterLongCutOff;
    }
    // Dead before the later run began (a process that died on its own has
    // no known time of death: any later run counts).
    match deaths.get(&earlier.pid) {
        Some(death) if death.is_none_or(|at| at <= began) => Rerun::AfterDeadWorker,
        _ => Rerun::ByLiveWorker,
    }
}

/// The worst reason among a job's successive `done`s; `None` with fewer
/// than two.
fn classify_job(runs: &[Run], deaths: &Deaths, faults: &[FaultEvent]) -> Option<Rerun> {
    let mut done: Vec<&Run> = runs.iter().filter(|r| r.done.is_some()).collect();
    done.sort_by_key(|r| r.done);
    done.windows(2)
        .map(|pair| classify_rerun(pair[0], pair[1], deaths, faults))
        .max()
}

/// Whether one run went on after another run of the same job began.
fn overlapping(runs: &[Run]) -> bool {
    runs.iter().enumerate().any(|(i, a)| {
        runs.iter().enumerate().any(|(j, b)| {
            let (Some(a_began), Some(b_began), Some(a_seen)) =
                (a.began(), b.began(), a.last_seen())
            else {
                return false;
            };
            let a_first = a_began < b_began || (a_began == b_began && i < j);
            i != j && a_first && a_seen > b_began
        })
    })
}

/// How much later than the moment it stands for a ledger row may land.
const LEDGER_SLACK: Duration = Duration::from_millis(250);

/// Jobs that a worker cut off from PostgreSQL (a pause of its proxy) started
/// later than half the stale threshold into the pause, or finished (`done`)
/// later than three quarters into it: the guide says a worker starts jobs
/// only while its last heartbeat is younger than half the threshold, and
/// stops its running jobs at three quarters. Pauses during a restart are
/// left out (the ledger writes themselves may then land late).
fn late_runs(runs: &[&Run], faults: &[FaultEvent]) -> (Vec<i64>, Vec<i64>) {
    let mut started = BTreeSet::new();
    let mut done = BTreeSet::new();
    let restarts: Vec<&FaultEvent> = faults
        .iter()
        .filter(|f| f.fault == Fault::Restart)
        .collect();
    let pauses = faults
        .iter()
        .filter(|f| matches!(f.fault, Fault::Pause | Fault::LongPause));
    for pause in pauses {
        let Some(pid) = pause.pid else { continue };
        if restarts
            .iter()
            .any(|r| r.from <= pause.to && r.to >= pause.from)
        {
            continue;
        }
        let start_limit = pause.from + (STALE_THRESHOLD / 2 + LEDGER_SLACK);
        let stop_limit = pause.from + (STALE_THRESHOLD * 3 / 4 + LEDGER_SLACK);
        let inside = |at: Option<DateTime<Utc>>, limit: DateTime<Utc>| {
            at.is_some_and(|at| at > limit && at < pause.to)
        };
        for run in runs.iter().filter(|r| r.pid == pid) {
            if inside(run.start, start_limit) {
                started.insert(run.job_id);
            }
            if inside(run.done, stop_limit) {
                done.insert(run.job_id);
            }
        }
    }
    (started.into_iter().collect(), done.into_iter().collect())
}

/// How the jobs fared, from the ledger.
#[derive(Default)]
struct Findings {
    exactly_once: usize,
    reruns: BTreeMap<Rerun, Vec<i64>>,
    overlaps: Vec<i64>,
    lost: Vec<i64>,
    runs: usize,
    /// Runs with no `done`, and those of them that saw the cancellation.
    interrupted: usize,
    cancelled: usize,
    /// Jobs a cut-off worker started, or finished, too late (see
    /// [`late_runs`]).
    started_late: Vec<i64>,
    done_late: Vec<i64>,
    /// From the workers' logs (see [`unexplained_deaths`]).
    unexplained_deaths: Vec<String>,
}

impl Findings {
    fn analyse(
        job_ids: &[i64],
        runs: &BTreeMap<i64, Vec<Run>>,
        deaths: &Deaths,
        faults: &[FaultEvent],
    ) -> Findings {
        let mut findings = Findings::default();
        for &id in job_ids {
            let job_runs = runs.get(&id).map(Vec::as_slice).unwrap_or_default();
            match job_runs.iter().filter(|r| r.done.is_some()).count() {
                0 => findings.lost.push(id),
                1 => findings.exactly_once += 1,
                _ => {
                    if let Some(class) = classify_job(job_runs, deaths, faults) {
                        findings.reruns.entry(class).or_default().push(id);
                    }
                }
            }
            if overlapping(job_runs) {
                findings.overlaps.push(id);
            }
        }
        let all: Vec<&Run> = runs.values().flatten().collect();
        findings.runs = all.len();
        findings.interrupted = all.iter().filter(|r| r.done.is_none()).count();
        findings.cancelled = all.iter().filter(|r| r.cancelled.is_some()).count();
        (findings.started_late, findings.done_late) = late_runs(&all, faults);
        findings
    }

    fn reruns(&self, class: Rerun) -> &[i64] {
        self.reruns
            .get(&class)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

struct Times {
    total: Duration,
    chaos: Duration,
    drain: Duration,
    stop: Duration,
}

/// Everything the report is made from.
struct Inputs<'a> {
    settings: &'a Settings,
    job_ids: Vec<i64>,
    runs: BTreeMap<i64, Vec<Run>>,
    table: TableState,
    fleet: &'a Fleet,
    chaos: &'a Chaos,
    rss: &'a RssBook,
    log_dir: PathBuf,
    times: Times,
    finished: bool,
    drained: bool,
}

/// A worker process in the report.
struct ProcessRow {
    slot: usize,
    pid: u32,
    pool_id: String,
    end: End,
    max_rss_kib: u64,
    log: PathBuf,
}

fn process_rows(fleet: &Fleet, rss: &RssBook) -> Vec<ProcessRow> {
    fleet
        .processes
        .iter()
        .map(|p| ProcessRow {
            slot: p.slot,
            pid: p.pid,
            pool_id: p.pool_id.clone(),
            end: p.end.clone(),
            max_rss_kib: rss.max_kib(p.pid),
            log: p.log.clone(),
        })
        .collect()
}

/// A class of violation: its name, the jobs (or other items) involved, and
/// the detailed evidence for a few of them.
struct Violation {
    name: &'static str,
    items: Vec<String>,
    evidence: Vec<String>,
}

impl Violation {
    fn plain(name: &'static str, items: Vec<String>) -> Self {
        Self {
            name,
            items,
            evidence: Vec::new(),
        }
    }
}

struct Report {
    header: String,
    table: Vec<(String, String, String)>,
    processes: Vec<ProcessRow>,
    violations: Vec<Violation>,
    notes: Vec<String>,
}

impl Report {
    fn build(inputs: Inputs<'_>) -> Report {
        let deaths = inputs.fleet.deaths();
        let faults = &inputs.chaos.events;
        let mut findings = Findings::analyse(&inputs.job_ids, &inputs.runs, &deaths, faults);
        findings.unexplained_deaths = unexplained_deaths(inputs.fleet, faults);
        let processes = process_rows(inputs.fleet, inputs.rss);
        Report {
            header: header(&inputs),
            table: summary_rows(&inputs, &findings, &processes),
            violations: violations(&inputs, &findings, &processes),
            notes: notes(&inputs, &processes),
            processes,
        }
    }

    fn violations(&self) -> &[Violation] {
        &self.violations
    }

    fn print(&self) {
        println!();
        println!("{}", self.header);
        println!();
        let width = self
            .table
            .iter()
            .map(|r| r.0.chars().count())
            .max()
            .unwrap_or(0);
        println!("| {:<width$} | {:>9} | notes", "", "count");
        println!("|{:-<w$}|{:->11}|------", "", ":", w = width + 2);
        for (what, value, detail) in &self.table {
            println!("| {what:<width$} | {value:>9} | {detail}");
        }
        println!();
        println!("| worker | pid     | pool id                  | max RSS    | ended");
        println!("|-------:|--------:|--------------------------|-----------:|------");
        for p in &self.processes {
            println!(
                "| {:>6} | {:>7} | {:<24} | {:>10} | {}",
                p.slot,
                p.pid,
                p.pool_id,
                mib(p.max_rss_kib),
                p.end.describe()
            );
        }
        println!();
        if self.violations.is_empty() {
            println!("No violation.");
        }
        for v in &self.violations {
            let shown: Vec<&str> = v.items.iter().take(EXAMPLES).map(String::as_str).collect();
            let more = v.items.len().saturating_sub(shown.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            println!(
                "VIOLATION {}: {} — {}{more}",
                v.name,
                v.items.len(),
                shown.join(", ")
            );
        }
        for v in &self.violations {
            for line in &v.evidence {
                println!("{line}");
            }
        }
        println!();
        for note in &self.notes {
            println!("{note}");
        }
        println!(
            "RESULT: {}",
            if self.violations.is_empty() {
                "PASS".to_owned()
            } else {
                format!("FAIL ({} violation classes)", self.violations.len())
            }
        );
    }
}

fn header(inputs: &Inputs<'_>) -> String {
    format!(
        "Soak: {} jobs, {} worker processes (concurrency {CONCURRENCY}, heartbeat {} ms, \
         stale threshold {} s, sweep {} ms, grace {} s), {}.",
        thousands(inputs.job_ids.len()),
        inputs.settings.workers,
        HEARTBEAT.as_millis(),
        STALE_THRESHOLD.as_secs(),
        SWEEP.as_millis(),
        GRACE.as_secs(),
        if std::env::var_os("DATABASE_URL").is_some() {
            "DATABASE_URL's server"
        } else {
            "throwaway PostgreSQL"
        }
    )
}

fn verdict(n: usize) -> String {
    if n == 0 { "ok" } else { "VIOLATION" }.to_owned()
}

/// The rows of the summary table: what, count, notes.
fn summary_rows(
    inputs: &Inputs<'_>,
    findings: &Findings,
    processes: &[ProcessRow],
) -> Vec<(String, String, String)> {
    let Inputs {
        job_ids,
        table,
        chaos,
        times,
        drained,
        ..
    } = inputs;
    let mut rows = Vec::new();
    let mut row = |what: &str, value: String, detail: String| {
        rows.push((what.to_owned(), value, detail));
    };
    row(
        "jobs",
        thousands(job_ids.len()),
        format!(
            "1 in {QUEUED_EVERY} on {QUEUES} named queues; every {LONG_JOB_EVERY}th sleeps {} s",
            LONG_JOB.as_secs()
        ),
    );
    row(
        "elapsed",
        seconds(times.total),
        format!(
            "faults {}, drain {}{}, stop {}",
            seconds(times.chaos),
            seconds(times.drain),
            if *drained { "" } else { " (TIMED OUT)" },
            seconds(times.stop)
        ),
    );
    let counts = chaos.counts();
    let by_kind = Fault::ALL
        .iter()
        .filter(|f| !(chaos.no_restart && **f == Fault::Restart))
        .map(|f| format!("{} {}", f.label(), counts.get(f).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ");
    row("faults injected", thousands(chaos.events.len()), by_kind);
    row(
        "  of which cut off ≥ stale threshold",
        thousands(chaos.events.iter().filter(|e| e.is_long_cut_off()).count()),
        "long pauses, and restarts that took that long".into(),
    );
    row(
        "runs started",
        thousands(findings.runs),
        format!(
            "{} without done ({} saw the cancellation)",
            thousands(findings.interrupted),
            thousands(findings.cancelled)
        ),
    );
    row(
        "done exactly once",
        thousands(findings.exactly_once),
        String::new(),
    );
    row(
        "re-run after a dead worker",
        thousands(findings.reruns(Rerun::AfterDeadWorker).len()),
        "allowed: earlier done on a process killed -9 (or died)".into(),
    );
    row(
        "re-run after a long cut-off",
        thousands(findings.reruns(Rerun::AfterLongCutOff).len()),
        format!(
            "allowed: earlier done on a worker cut off ≥ {} s",
            STALE_THRESHOLD.as_secs()
        ),
    );
    let live = findings.reruns(Rerun::ByLiveWorker).len();
    row(
        "DOUBLE RUN by a live worker",
        thousands(live),
        verdict(live),
    );
    let overlaps = findings.overlaps.len();
    row(
        "overlapping runs of one job",
        thousands(overlaps),
        verdict(overlaps),
    );
    let lost = findings.lost.len();
    row("LOST (never done)", thousands(lost), verdict(lost));
    let late = findings.started_late.len();
    row(
        "started while cut off > threshold/2",
        thousands(late),
        verdict(late),
    );
    let late = findings.done_late.len();
    row(
        "done while cut off > 3/4 threshold",
        thousands(late),
        verdict(late),
    );
    let unexplained = findings.unexplained_deaths.len();
    row(
        "declared dead, not cut off ≥ threshold",
        thousands(unexplained),
        verdict(unexplained),
    );
    let locked_jobs = table.jobs.values().filter(|job| job.locked).count();
    row(
        "rows still locked (jobs / queues)",
        format!("{locked_jobs} / {}", table.locked_queues.len()),
        verdict(locked_jobs + table.locked_queues.len()),
    );
    let permanently_failed = table
        .jobs
        .values()
        .filter(|job| job.attempts >= job.max_attempts)
        .count();
    row(
        "jobs left in the table",
        thousands(table.jobs.len()),
        format!("{permanently_failed} permanently failed"),
    );
    row(
        "worker processes",
        thousands(processes.len()),
        process_summary(processes, inputs.fleet.start_failures.len()),
    );
    let max_rss = processes.iter().map(|p| p.max_rss_kib).max().unwrap_or(0);
    let over = usize::from(max_rss > RSS_LIMIT_KIB);
    row(
        "max RSS of a worker process",
        mib(max_rss),
        format!("limit {}: {}", mib(RSS_LIMIT_KIB), verdict(over)),
    );
    rows
}

fn process_summary(processes: &[ProcessRow], failed_starts: usize) -> String {
    let count = |p: fn(&End) -> bool| processes.iter().filter(|row| p(&row.end)).count();
    let slowest_stop = processes
        .iter()
        .filter_map(|p| match p.end {
            End::Stopped(after, _) => Some(after),
            _ => None,
        })
        .max()
        .unwrap_or_default();
    format!(
        "{} killed, {} died on their own, {} stopped by SIGTERM (slowest {:.2} s), {} stuck; \
         {failed_starts} failed starts",
        count(|e| matches!(e, End::Killed(_))),
        count(|e| matches!(e, End::Died(_))),
        count(|e| matches!(e, End::Stopped(..))),
        slowest_stop.as_secs_f64(),
        count(|e| matches!(e, End::Stuck)),
    )
}

/// Every class of violation that has at least one item.
fn violations(
    inputs: &Inputs<'_>,
    findings: &Findings,
    processes: &[ProcessRow],
) -> Vec<Violation> {
    let live = findings.reruns(Rerun::ByLiveWorker);
    let detailed: BTreeSet<i64> = [
        live,
        &findings.overlaps,
        &findings.lost,
        &findings.started_late,
        &findings.done_late,
    ]
    .iter()
    .flat_map(|ids| ids.iter().take(DETAILED).copied())
    .collect();
    let evidence = Evidence {
        runs: &inputs.runs,
        table: &inputs.table,
        fleet: inputs.fleet,
        faults: &inputs.chaos.events,
        log_lines: log_lines_for(&inputs.log_dir, &detailed),
    };
    let table = &inputs.table;
    let locked = table
        .jobs
        .iter()
        .filter(|(_, job)| job.locked)
        .map(|(id, job)| format!("job {id} by {}", job.locked_by.as_deref().unwrap_or("?")))
        .chain(
            table
                .locked_queues
                .iter()
                .map(|(queue, by)| format!("queue {queue} by {}", by.as_deref().unwrap_or("?"))),
        )
        .collect();
    let heavy = processes
        .iter()
        .filter(|p| p.max_rss_kib > RSS_LIMIT_KIB)
        .map(|p| format!("pid {} ({})", p.pid, mib(p.max_rss_kib)))
        .collect();
    let stuck = processes
        .iter()
        .filter(|p| matches!(p.end, End::Stuck))
        .map(|p| format!("pid {} (log {})", p.pid, p.log.display()))
        .collect();
    let mut all = vec![
        evidence.jobs_violation("DOUBLE RUN by a live worker", live),
        evidence.jobs_violation("OVERLAPPING runs of one job", &findings.overlaps),
        evidence.jobs_violation("LOST (never done)", &findings.lost),
        evidence.jobs_violation(
            "STARTED by a worker cut off for over half the threshold",
            &findings.started_late,
        ),
        evidence.jobs_violation(
            "DONE by a worker cut off for over 3/4 of the threshold",
            &findings.done_late,
        ),
        Violation::plain("rows still LOCKED after every worker stopped", locked),
        Violation::plain("worker RSS over 256 MiB", heavy),
        Violation::plain("worker STUCK on SIGTERM", stuck),
        Violation::plain(
            "worker DECLARED DEAD without a long cut-off",
            findings.unexplained_deaths.clone(),
        ),
    ];
    all.retain(|v| !v.items.is_empty());
    all
}

/// The times a worker logged that a peer had declared it dead although it
/// had not been cut off for the stale threshold just before (the guide:
/// only a worker silent that long is dead).
fn unexplained_deaths(fleet: &Fleet, faults: &[FaultEvent]) -> Vec<String> {
    /// How long after a cut-off ends the worker may take to notice.
    const NOTICE: chrono::TimeDelta = chrono::TimeDelta::seconds(3);
    let mut found = Vec::new();
    for process in &fleet.processes {
        let Ok(log) = std::fs::read_to_string(&process.log) else {
            continue;
        };
        let declared = log
            .lines()
            .filter(|line| line.contains("was declared dead by a peer"));
        for line in declared {
            // The log lines start with an RFC 3339 time.
            let at = line
                .split_whitespace()
                .next()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            let explained = at.is_some_and(|at| {
                faults
                    .iter()
                    .any(|f| f.long_cut_off(process.pid) && f.from <= at && at <= f.to + NOTICE)
            });
            if !explained {
                let when = at.map_or_else(|| "?".to_owned(), clock);
                found.push(format!(
                    "pid {} at {when} ({})",
                    process.pid,
                    process.log.display()
                ));
            }
        }
    }
    found
}

/// What else is worth knowing (none of it a violation).
fn notes(inputs: &Inputs<'_>, processes: &[ProcessRow]) -> Vec<String> {
    let mut notes = Vec::new();
    if !inputs.finished {
        notes.push(format!(
            "The deadline ({} s) came before every job was done: raise --seconds.",
            inputs.settings.seconds
        ));
    }
    if inputs.chaos.no_restart {
        notes.push("DATABASE_URL is set: PostgreSQL was not restarted.".into());
    }
    let died: Vec<String> = processes
        .iter()
        .filter(|p| matches!(p.end, End::Died(_)))
        .map(|p| format!("pid {} ({})", p.pid, p.log.display()))
        .collect();
    if !died.is_empty() {
        notes.push(format!(
            "Worker processes that exited on their own: {}",
            died.join(", ")
        ));
    }
    let failures = &inputs.fleet.start_failures;
    if !failures.is_empty() {
        notes.push(format!("Failed worker starts: {}", failures.join("; ")));
    }
    let workers_left = &inputs.table.workers_left;
    if !workers_left.is_empty() {
        notes.push(format!(
            "Worker rows left in _private_workers (not a violation): {}",
            workers_left.join(", ")
        ));
    }
    notes.push(format!("Worker logs: {}", inputs.log_dir.display()));
    notes
}

/// What the report shows about a job in detail.
struct Evidence<'a> {
    runs: &'a BTreeMap<i64, Vec<Run>>,
    table: &'a TableState,
    fleet: &'a Fleet,
    faults: &'a [FaultEvent],
    log_lines: BTreeMap<i64, Vec<String>>,
}

impl Evidence<'_> {
    fn jobs_violation(&self, name: &'static str, ids: &[i64]) -> Violation {
        let mut evidence = Vec::new();
        for &id in ids.iter().take(DETAILED) {
            evidence.push(String::new());
            evidence.push(format!("{name}: job {id}"));
            evidence.extend(self.describe_job(id));
        }
        Violation {
            name,
            items: ids.iter().map(i64::to_string).collect(),
            evidence,
        }
    }

    fn describe_job(&self, id: i64) -> Vec<String> {
        let mut lines = Vec::new();
        let runs = self.runs.get(&id).map(Vec::as_slice).unwrap_or_default();
        let at = |t: Option<DateTime<Utc>>| t.map_or("-".to_owned(), clock);
        for run in runs {
            let process = self
                .fleet
                .process(run.pid)
                .map_or("unknown process".to_owned(), |p| {
                    format!("worker {} {}, {}", p.slot, p.pool_id, p.end.describe())
                });
            lines.push(format!(
                "  ledger run {} attempt {}: start {} done {} cancelled {} — pid {} ({process})",
                run.run_id,
                run.attempt,
                at(run.start),
                at(run.done),
                at(run.cancelled),
                run.pid,
            ));
        }
        if runs.is_empty() {
            lines.push("  ledger: no run at all".into());
        }
        match self.table.jobs.get(&id) {
            Some(job) => lines.push(format!(
                "  jobs table: attempts {}/{}, locked {} by {:?}, last_error {:?}",
                job.attempts, job.max_attempts, job.locked, job.locked_by, job.last_error
            )),
            None => lines.push("  jobs table: gone (completed)".into()),
        }
        // Faults from 5 s before the first run to 1 s after the last.
        let first = runs.iter().filter_map(Run::began).min();
        let last = runs
            .iter()
            .filter_map(|r| r.last_seen().or(r.began()))
            .max();
        // Faults on these runs' workers (and restarts), from 5 s before the
        // first run to 1 s after the last.
        let pids: BTreeSet<u32> = runs.iter().map(|r| r.pid).collect();
        if let (Some(first), Some(last)) = (first, last) {
            let from = first - chrono::Duration::seconds(5);
            let to = last + chrono::Duration::seconds(1);
            let relevant = |f: &&FaultEvent| {
                f.to >= from && f.from <= to && f.pid.is_none_or(|pid| pids.contains(&pid))
            };
            for fault in self.faults.iter().filter(relevant) {
                lines.push(format!("  fault: {}", fault.describe()));
            }
        }
        for line in self.log_lines.get(&id).into_iter().flatten() {
            lines.push(format!("  log {line}"));
        }
        lines
    }
}

/// The worker log lines about each of `ids` (at most 20 per job), each
/// prefixed with its file name.
fn log_lines_for(dir: &Path, ids: &BTreeSet<i64>) -> BTreeMap<i64, Vec<String>> {
    let mut found: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    if ids.is_empty() {
        return found;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let name = file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        for line in text.lines() {
            for id in job_ids_in(line).filter(|id| ids.contains(id)) {
                let lines = found.entry(id).or_default();
                if lines.len() < 20 {
                    lines.push(format!("{name}: {line}"));
                }
            }
        }
    }
    found
}

/// Job ids a log line mentions: `job.id=N` (the span) and `task N (` (the
/// outcome message).
fn job_ids_in(line: &str) -> impl Iterator<Item = i64> + '_ {
    let after = |marker: &'static str| {
        line.match_indices(marker).filter_map(move |(at, _)| {
            let rest = &line[at + marker.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<i64>().ok()
        })
    };
    let mut ids: Vec<i64> = after("job.id=").chain(after("task ")).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    //! The analysis on made-up ledgers: `cargo test --example soak`.

    use super::*;

    /// `ms` milliseconds into some day.
    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).expect("a valid time")
    }

    fn run(pid: u32, start: i64, done: Option<i64>) -> Run {
        Run {
            run_id: format!("{pid}-{start}"),
            job_id: 7,
            pid,
            attempt: 1,
            start: Some(t(start)),
            done: done.map(t),
            cancelled: None,
        }
    }

    fn pause(pid: u32, from: i64, to: i64) -> FaultEvent {
        FaultEvent {
            fault: Fault::LongPause,
            slot: Some(0),
            pid: Some(pid),
            from: t(from),
            to: t(to),
        }
    }

    #[test]
    fn a_rerun_is_allowed_only_after_the_earlier_worker_died_or_was_cut_off_long() {
        let earlier = run(1, 0, Some(100));
        let later = run(2, 5_000, Some(5_100));
        let killed_before = Deaths::from([(1, Some(t(200)))]);
        let killed_after = Deaths::from([(1, Some(t(6_000)))]);
        let died = Deaths::from([(1, None)]);
        let none = Deaths::new();
        let check = |deaths: &Deaths, faults: &[FaultEvent]| {
            classify_job(&[earlier.clone(), later.clone()], deaths, faults)
        };
        assert_eq!(check(&killed_before, &[]), Some(Rerun::AfterDeadWorker));
        assert_eq!(check(&died, &[]), Some(Rerun::AfterDeadWorker));
        assert_eq!(check(&killed_after, &[]), Some(Rerun::ByLiveWorker));
        assert_eq!(check(&none, &[]), Some(Rerun::ByLiveWorker));
        // Cut off for 5 s around the earlier done: allowed; for 1.5 s, or
        // another worker's pause: not.
        assert_eq!(
            check(&none, &[pause(1, 50, 5_050)]),
            Some(Rerun::AfterLongCutOff)
        );
        assert_eq!(
            check(&none, &[pause(1, 50, 1_550)]),
            Some(Rerun::ByLiveWorker)
        );
        assert_eq!(
            check(&none, &[pause(2, 50, 5_050)]),
            Some(Rerun::ByLiveWorker)
        );
        // Cut off, then killed: the cut-off let the peer take the job.
        assert_eq!(
            check(&killed_before, &[pause(1, 50, 5_050)]),
            Some(Rerun::AfterLongCutOff)
        );
        assert_eq!(
            classify_job(std::slice::from_ref(&earlier), &none, &[]),
            None
        );
    }

    #[test]
    fn runs_overlap_when_one_goes_on_after_another_began() {
        assert!(overlapping(&[run(1, 0, Some(500)), run(2, 400, Some(900))]));
        assert!(!overlapping(&[
            run(1, 0, Some(500)),
            run(2, 600, Some(900))
        ]));
        // A run with no end seen (killed) overlaps nothing.
        assert!(!overlapping(&[run(1, 0, None), run(2, 100, Some(900))]));
        let mut cancelled = run(1, 0, None);
        cancelled.cancelled = Some(t(300));
        assert!(overlapping(&[cancelled, run(2, 200, None)]));
    }

    #[test]
    fn a_cut_off_worker_must_not_start_after_half_or_finish_after_three_quarters() {
        let runs = [
            run(1, 1_000, Some(1_900)), // fine: before both limits
            run(1, 1_800, None),        // started after 1.5 s + slack
            run(1, 100, Some(2_600)),   // done after 2.25 s + slack
            run(2, 1_800, Some(2_600)), // another worker: not cut off
            run(1, 6_000, Some(6_100)), // after the pause
        ];
        let refs: Vec<&Run> = runs.iter().collect();
        let (started, done) = late_runs(&refs, &[pause(1, 0, 5_000)]);
        assert_eq!((started.len(), done.len()), (1, 1));
        // A restart during the pause excuses late ledger rows.
        let restart = FaultEvent {
            fault: Fault::Restart,
            slot: None,
            pid: None,
            from: t(2_000),
            to: t(2_300),
        };
        let (started, done) = late_runs(&refs, &[pause(1, 0, 5_000), restart]);
        assert!(started.is_empty() && done.is_empty());
    }

    #[test]
    fn log_lines_name_their_jobs() {
        let line = "2026-12-02T09:45:53Z  INFO job{job.id=42 job.task=soak_job}: \
                    graphile_worker::execute: Completed task 42 (soak_job, 3.1ms, attempt 1 of 25)";
        assert_eq!(job_ids_in(line).collect::<Vec<_>>(), vec![42]);
        assert_eq!(job_ids_in("task soak_job failed").count(), 0);
    }
}

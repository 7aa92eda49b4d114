//! Helpers shared by the integration tests.
//!
//! - A fresh migrated database ([`migrated`]), bounded polling
//!   ([`eventually`]), counts, the server's clock, a worker run in the
//!   background, the listener.
//! - The `runs` ledger: [`create_runs_and_gates`], the tasks that write to it
//!   ([`Record`], [`Gated`], [`UntilShutdown`]), a [`worker`] that runs them,
//!   and what reads it back ([`tags`], [`wait_for_tag`], [`locks_left`]).
//! - [`Witness`]: proof that notifications reached this process.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use graphile_worker::{
    JobContext, JobSpec, ShutdownHandle, Task, TaskError, Worker, WorkerOptions, WorkerUtils,
};
use graphile_worker_dev::{TestDatabase, fresh_database};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// A fresh database with the worker schema installed.
pub async fn migrated() -> (TestDatabase, PgPool, WorkerUtils) {
    let db = fresh_database().await;
    let pool = db.pool(20).await;
    if std::env::var_os("GW_NODE_FIRST").is_some() {
        graphile_worker_dev::node::run_js_ok(&db.url, "graphile_worker", "require('graphile-worker').runMigrations({connectionString: process.env.DATABASE_URL}).then(()=>process.exit(0),e=>{console.error(e);process.exit(1)})").await;
    }
    let utils = WorkerUtils::new(pool.clone(), "graphile_worker");
    utils.migrate().await.expect("migrate");
    (db, pool, utils)
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after
/// `within` with `what`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .expect("count query")
}

/// Runs `worker.run()` in the background: its shutdown handle and the task
/// to await for `run()`'s result.
pub fn run_in_background(
    worker: &Worker,
) -> (
    ShutdownHandle,
    tokio::task::JoinHandle<Result<(), graphile_worker::Error>>,
) {
    let handle = worker.shutdown_handle();
    let worker = worker.clone();
    (handle, tokio::spawn(async move { worker.run().await }))
}

/// Waits until a session of this database is listening for notifications.
pub async fn wait_for_listener(pool: &PgPool) {
    eventually(Duration::from_secs(10), "the listener", || async {
        (count(
            pool,
            "select count(*) from pg_stat_activity \
             where datname = current_database() and query ilike 'listen%'",
        )
        .await
            > 0)
        .then_some(())
    })
    .await;
}

/// The database server's clock, the one `now()` and row timestamps use.
pub async fn server_now(pool: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("select clock_timestamp()")
        .fetch_one(pool)
        .await
        .expect("read the server clock")
}

/// Waits until the server's clock is past `at` (at most a minute).
pub async fn wait_for_server_time(pool: &PgPool, at: DateTime<Utc>) {
    eventually(Duration::from_secs(60), "the server clock", || async move {
        sqlx::query_scalar::<_, bool>("select clock_timestamp() > $1")
            .bind(at)
            .fetch_one(pool)
            .await
            .expect("read the server clock")
            .then_some(())
    })
    .await;
}

/// Creates the `runs` ledger, one row per thing a task did (the tasks here
/// write `tag`; `test_worker`'s write `event` and `pid`), and the `gates`
/// table that [`Gated`] jobs wait on.
pub async fn create_runs_and_gates(pool: &PgPool) {
    sqlx::raw_sql(
        "create table runs (id serial primary key, tag text, event text, job_id bigint, \
           attempts smallint, pid int, at timestamptz default clock_timestamp());
         create table gates (name text primary key);",
    )
    .execute(pool)
    .await
    .expect("create the runs and gates tables");
}

/// Records `tag` in `runs`, with the job's id and attempt.
pub async fn note(ctx: &JobContext, tag: &str) -> Result<(), TaskError> {
    sqlx::query("insert into runs (tag, job_id, attempts) values ($1, $2, $3)")
        .bind(tag)
        .bind(ctx.job_id())
        .bind(ctx.attempts())
        .execute(ctx.utils().pool())
        .await
        .map_err(|e| TaskError::new(e.to_string()))?;
    Ok(())
}

/// Records its tag.
#[derive(Serialize, Deserialize)]
pub struct Record {
    pub tag: String,
}

impl Task for Record {
    const IDENTIFIER: &'static str = "record";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        note(&ctx, &self.tag).await
    }
}

/// Records `<gate>:start`, waits until a row named `gate` appears in
/// `gates` ([`open_gate`]), records `<gate>:done`.
#[derive(Serialize, Deserialize)]
pub struct Gated {
    pub gate: String,
}

impl Task for Gated {
    const IDENTIFIER: &'static str = "gated";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        note(&ctx, &format!("{}:start", self.gate)).await?;
        loop {
            let open: bool =
                sqlx::query_scalar("select exists (select 1 from gates where name = $1)")
                    .bind(&self.gate)
                    .fetch_one(ctx.utils().pool())
                    .await
                    .map_err(|e| TaskError::new(e.to_string()))?;
            if open {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        note(&ctx, &format!("{}:done", self.gate)).await
    }
}

/// Records `running`, runs until the worker asks it to stop, records
/// `saw-shutdown`, and finishes well.
#[derive(Serialize, Deserialize)]
pub struct UntilShutdown {}

impl Task for UntilShutdown {
    const IDENTIFIER: &'static str = "until_shutdown";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        note(&ctx, "running").await?;
        ctx.cancelled().await;
        note(&ctx, "saw-shutdown").await
    }
}

/// A worker on `pool` without signal handling, running exactly [`Record`],
/// [`Gated`] and [`UntilShutdown`].
pub fn worker(pool: &PgPool) -> WorkerOptions {
    Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<Record>()
        .register::<Gated>()
        .register::<UntilShutdown>()
}

/// Adds a job, returning its id.
pub async fn add_job(
    utils: &WorkerUtils,
    task: &str,
    payload: serde_json::Value,
    spec: JobSpec,
) -> i64 {
    utils
        .add_raw_job(task, payload, spec)
        .await
        .expect("add a job")
        .id
}

/// The tags in `runs`, in the order they were written.
pub async fn tags(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("select tag from runs where tag is not null order by id")
        .fetch_all(pool)
        .await
        .expect("read the tags")
}

pub async fn has_tag(pool: &PgPool, tag: &str) -> bool {
    tags(pool).await.iter().any(|t| t == tag)
}

/// Waits until `tag` is in `runs` (at most 15 s).
pub async fn wait_for_tag(pool: &PgPool, tag: &str) {
    eventually(Duration::from_secs(15), tag, || async move {
        has_tag(pool, tag).await.then_some(())
    })
    .await;
}

/// Lets the [`Gated`] jobs waiting on `gate` finish.
pub async fn open_gate(pool: &PgPool, gate: &str) {
    sqlx::query("insert into gates (name) values ($1)")
        .bind(gate)
        .execute(pool)
        .await
        .expect("open a gate");
}

/// How many jobs, and how many queues, are locked.
pub async fn locks_left(pool: &PgPool) -> (i64, i64) {
    (
        count(
            pool,
            "select count(*) from graphile_worker._private_jobs where locked_at is not null",
        )
        .await,
        count(
            pool,
            "select count(*) from graphile_worker._private_job_queues where locked_at is not null",
        )
        .await,
    )
}

/// Runs only `witness` jobs, recording each in `witnessed`.
#[derive(Serialize, Deserialize)]
pub struct WitnessJob {
    n: i64,
}

impl Task for WitnessJob {
    const IDENTIFIER: &'static str = "witness";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        sqlx::query("insert into witnessed (n) values ($1)")
            .bind(self.n)
            .execute(ctx.utils().pool())
            .await
            .map_err(|e| TaskError::new(e.to_string()))?;
        Ok(())
    }
}

/// A second worker in this process, on the test's runtime, that runs only
/// `witness` jobs, learns of them from notifications alone (it never
/// polls), and has no heartbeats to lose (recovery off).
///
/// Witness jobs added after some moment and run one after another prove
/// that, after that moment, notifications were delivered and acted on in
/// this process, several times over: a worker under test, on the same
/// runtime and listening to the same channel, was told about its own
/// earlier job first. Tests wait for that, rather than sleep, before
/// asserting that a worker did *not* take a job.
pub struct Witness {
    pool: PgPool,
    utils: WorkerUtils,
    handle: ShutdownHandle,
    running: tokio::task::JoinHandle<Result<(), graphile_worker::Error>>,
    next: i64,
}

impl Witness {
    /// Starts the witness, and waits until it has run a first job.
    pub async fn start(pool: &PgPool) -> Self {
        sqlx::raw_sql(
            "create table if not exists witnessed \
               (n bigint primary key, at timestamptz not null default clock_timestamp())",
        )
        .execute(pool)
        .await
        .expect("create the witness's table");
        let worker = Worker::options()
            .pg_pool(pool.clone())
            .handle_signals(false)
            .recovery(false)
            .poll_interval(Duration::from_secs(3600))
            .register::<WitnessJob>()
            .init()
            .await
            .expect("start the witness");
        let (handle, running) = run_in_background(&worker);
        let mut witness = Self {
            pool: pool.clone(),
            utils: WorkerUtils::new(pool.clone(), "graphile_worker"),
            handle,
            running,
            next: 0,
        };
        witness.confirm(1).await;
        witness
    }

    /// Adds `rounds` witness jobs one after another, each once the last one
    /// ran (at most 10 s each).
    pub async fn confirm(&mut self, rounds: usize) {
        for _ in 0..rounds {
            let n = self.next;
            self.next += 1;
            self.utils
                .add_raw_job("witness", serde_json::json!({ "n": n }), Default::default())
                .await
                .expect("add a witness job");
            let pool = &self.pool;
            eventually(
                Duration::from_secs(10),
                &format!("witness job {n}"),
                || async move {
                    (count(
                        pool,
                        &format!("select count(*) from witnessed where n = {n}"),
                    )
                    .await
                        == 1)
                        .then_some(())
                },
            )
            .await;
        }
    }

    /// Stops the witness.
    pub async fn stop(self) {
        self.handle.shutdown();
        self.running
            .await
            .expect("the witness's task")
            .expect("the witness's run()");
    }
}

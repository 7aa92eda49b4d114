//! Helpers shared by the integration tests.
//!
//! - A fresh migrated database ([`migrated`]), Node's install
//!   ([`node_install`]), bounded polling ([`eventually`], [`wait_for_count`]),
//!   counts, the database's clocks, a worker's last heartbeat, a worker run in the background and
//!   stopped ([`run_in_background`], [`stop_worker`]), the listener, a job's
//!   row ([`set_job`], [`attempts_and_lock`]), captured log output
//!   ([`Captured`]).
//! - The `runs` ledger: [`create_runs_and_gates`], the tasks that write to it
//!   ([`Record`], [`Gated`], [`UntilShutdown`]), a [`worker`] that runs them,
//!   and what reads it back ([`tags`], [`wait_for_tag`], [`locks_left`]).
//! - `test_worker` processes ([`spawn_test_worker`]) and the events they
//!   write to `runs` ([`event_count`], [`wait_for_events`]).
//! - The registry of `#[task]`s: [`from_registry_error`],
//!   [`assert_clash_with_linked_record_visit`].
//! - [`Witness`]: proof that notifications reached this process.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use graphile_worker::{
    Error, JobContext, JobSpec, ShutdownHandle, Task, TaskError, Worker, WorkerOptions, WorkerUtils,
};
use graphile_worker_dev::{TestDatabase, fresh_database, node};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What [`run_in_background`] returns to wait on: `run()`'s result.
pub type Running = tokio::task::JoinHandle<Result<(), Error>>;

/// A fresh database with the worker schema installed.
pub async fn migrated() -> (TestDatabase, PgPool, WorkerUtils) {
    let db = fresh_database().await;
    let pool = db.pool(20).await;
    if std::env::var_os("GW_NODE_FIRST").is_some() {
        node_install(&db, "graphile_worker").await;
    }
    let utils = WorkerUtils::new(pool.clone(), "graphile_worker");
    utils.migrate().await.expect("migrate");
    (db, pool, utils)
}

/// Installs Node graphile-worker 0.18's schema `schema` in `db`.
pub async fn node_install(db: &TestDatabase, schema: &str) {
    node::run_js_ok(
        &db.url,
        schema,
        "const { runMigrations } = require('graphile-worker');\
         runMigrations({ connectionString: process.env.DATABASE_URL, schema: process.env.GRAPHILE_WORKER_SCHEMA })\
           .then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });",
    )
    .await;
}

/// A fresh database with the worker schema and the `runs` ledger
/// ([`create_runs_and_gates`]).
pub async fn migrated_with_runs() -> (TestDatabase, PgPool, WorkerUtils) {
    let (db, pool, utils) = migrated().await;
    create_runs_and_gates(&pool).await;
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

/// Runs `sql` (one or more statements, no parameters).
pub async fn run_sql(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Polls the count `sql` until `ok` accepts it, or panics after `within`
/// with `what`.
pub async fn wait_for_count(
    pool: &PgPool,
    within: Duration,
    what: &str,
    sql: &str,
    ok: impl Fn(i64) -> bool,
) {
    eventually(within, what, || async {
        ok(count(pool, sql).await).then_some(())
    })
    .await;
}

/// Runs `worker.run()` in the background: its shutdown handle and the task
/// to await for `run()`'s result.
pub fn run_in_background(worker: &Worker) -> (ShutdownHandle, Running) {
    let handle = worker.shutdown_handle();
    let worker = worker.clone();
    (handle, tokio::spawn(async move { worker.run().await }))
}

/// Starts a worker with `options` and runs it in the background
/// ([`run_in_background`]).
pub async fn start(options: WorkerOptions) -> (Worker, ShutdownHandle, Running) {
    let worker = options.init().await.expect("start the worker");
    let (handle, running) = run_in_background(&worker);
    (worker, handle, running)
}

/// Asks a worker to stop, and waits until its `run()` returned well.
pub async fn shut_down(handle: ShutdownHandle, running: Running) {
    handle.shutdown();
    running
        .await
        .expect("the worker's task")
        .expect("the worker's run()");
}

/// Asks the worker `name` to stop, and asserts that its `run()` returns
/// well within `within`.
pub async fn stop_worker(name: &str, handle: ShutdownHandle, running: Running, within: Duration) {
    handle.shutdown();
    let result = tokio::time::timeout(within, running)
        .await
        .unwrap_or_else(|_| panic!("{name}: run() did not return within {within:?} of shutdown"))
        .unwrap_or_else(|e| panic!("{name}: the run task failed: {e}"));
    assert!(result.is_ok(), "{name}: run() returned {result:?}");
}

/// Waits until a session of this database is listening for notifications.
pub async fn wait_for_listener(pool: &PgPool) {
    wait_for_count(
        pool,
        Duration::from_secs(10),
        "the listener",
        "select count(*) from pg_stat_activity \
         where datname = current_database() and query ilike 'listen%'",
        |n| n > 0,
    )
    .await;
}

/// The database's `now()`: the start of the (one-statement) transaction.
pub async fn db_now(pool: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("select now()")
        .fetch_one(pool)
        .await
        .expect("read now()")
}

/// The database server's clock, the one `now()` and row timestamps use.
pub async fn server_now(pool: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("select clock_timestamp()")
        .fetch_one(pool)
        .await
        .expect("read the server clock")
}

/// Worker `pool_id`'s last landed heartbeat, from the registry (`None` while
/// it is not registered).
pub async fn last_heartbeat(pool: &PgPool, pool_id: &str) -> Option<DateTime<Utc>> {
    sqlx::query_scalar(
        "select last_heartbeat_at from graphile_worker._private_workers where id = $1",
    )
    .bind(pool_id)
    .fetch_optional(pool)
    .await
    .expect("read the registry")
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

/// A job spec for the named queue `queue`, defaults otherwise.
pub fn in_queue(queue: &str) -> JobSpec {
    JobSpec {
        queue_name: Some(queue.into()),
        ..Default::default()
    }
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

/// Runs `assignments` (SQL after `set`) on the private row of job `id`.
pub async fn set_job(pool: &PgPool, id: i64, assignments: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "update graphile_worker._private_jobs set {assignments} where id = $1"
    )))
    .bind(id)
    .execute(pool)
    .await
    .expect("update a job");
}

/// Job `id`'s attempts, and whether it is locked.
pub async fn attempts_and_lock(pool: &PgPool, id: i64) -> (i16, bool) {
    sqlx::query_as("select attempts, locked_at is not null from graphile_worker.jobs where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("read a job")
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

/// When job `id` first wrote to `runs`: waits for it (at most `within`).
pub async fn wait_for_run_of(pool: &PgPool, id: i64, within: Duration) -> DateTime<Utc> {
    eventually(within, &format!("job {id} to run"), || async {
        sqlx::query_scalar("select at from runs where job_id = $1 order by id limit 1")
            .bind(id)
            .fetch_optional(pool)
            .await
            .expect("read the runs")
    })
    .await
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

/// Waits (up to 10 s) until no job and no queue is locked. Outcomes are
/// written in batches a moment after a task returns, so a job that just ran
/// can still hold its lock when the test looks; "nothing stays locked" is
/// asserted with this, not with one reading of [`locks_left`].
pub async fn wait_for_no_locks(pool: &PgPool) {
    let within = Duration::from_secs(10);
    let deadline = Instant::now() + within;
    loop {
        let last = locks_left(pool).await;
        if last == (0, 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "locks left after {within:?}: {} jobs, {} queues",
            last.0,
            last.1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes every `op` (`insert` or `update`) on the workers' registry fail,
/// counting each refusal in the sequence `name` (a sequence survives the
/// rollback); the function and the trigger are called `name` too. Undone by
/// [`stop_refusing`].
pub async fn refuse_registry(pool: &PgPool, name: &str, op: &str) {
    run_sql(
        pool,
        &format!(
            "create sequence {name}; \
             create function {name}() returns trigger language plpgsql as \
               $$ begin perform nextval('public.{name}'); \
                 raise exception '{op} refused by the test'; end $$; \
             create trigger {name} before {op} on graphile_worker._private_workers \
               for each row execute function {name}()"
        ),
    )
    .await;
}

/// Waits (at most 10 s) until `ok` accepts how many times
/// [`refuse_registry`]'s `name` refused.
pub async fn wait_for_refusals(pool: &PgPool, name: &str, ok: impl Fn(i64) -> bool) {
    wait_for_count(
        pool,
        Duration::from_secs(10),
        &format!("refusals counted in {name}"),
        &format!("select case when is_called then last_value else 0 end from {name}"),
        ok,
    )
    .await;
}

/// Lets the writes refused by [`refuse_registry`]'s `name` through again.
pub async fn stop_refusing(pool: &PgPool, name: &str) {
    run_sql(
        pool,
        &format!("drop trigger {name} on graphile_worker._private_workers"),
    )
    .await;
}

/// Starts the `test_worker` binary on `db` with `env` set, and waits (at
/// most 30 s) until it prints `ready <pool id>`: the process and its pool id.
pub async fn spawn_test_worker(db: &TestDatabase, env: &[(&str, String)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_test_worker"))
        .env("DATABASE_URL", &db.url)
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn test_worker");
    let stdout = child.stdout.take().expect("test_worker's stdout");
    let line = tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("worker start-up")
    .expect("read test_worker's stdout")
    .expect("worker printed nothing");
    let pool_id = line
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("not a ready line: {line}"))
        .to_owned();
    (child, pool_id)
}

/// How many times `event` is in `runs` (written by `test_worker`'s tasks).
pub async fn event_count(pool: &PgPool, event: &str) -> i64 {
    sqlx::query_scalar("select count(*) from runs where event = $1")
        .bind(event)
        .fetch_one(pool)
        .await
        .expect("count events")
}

/// Waits until `event` is in `runs` at least `n` times (at most `within`).
pub async fn wait_for_events(pool: &PgPool, event: &str, n: i64, within: Duration) {
    eventually(within, &format!("{n} × {event}"), || async move {
        (event_count(pool, event).await >= n).then_some(())
    })
    .await;
}

/// A `Write` into a shared buffer, for capturing log output.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("UTF-8 log output")
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Why a worker built from the registry of `#[task]`s refuses to start.
pub async fn from_registry_error(database_url: &str) -> Error {
    Worker::from_registry()
        .database_url(database_url)
        .handle_signals(false)
        .init()
        .await
        .expect_err("the worker should refuse to start")
}

/// Asserts that `err` is the clash of `record_visit` in the linked tasks
/// crate (`tests/linked-tasks`) with one at `local` (`file:line`); returns
/// both places, sorted.
pub fn assert_clash_with_linked_record_visit(err: &Error, local: &str) -> [String; 2] {
    let Error::DuplicateTask {
        identifier,
        first,
        second,
    } = err
    else {
        panic!("expected DuplicateTask, got {err:?}");
    };
    assert_eq!(identifier, "record_visit");
    // Both places are named, whichever was inserted first.
    let mut places = [first.clone(), second.clone()];
    places.sort();
    assert!(
        places[0].starts_with("tests/linked-tasks/src/lib.rs:"),
        "{err}"
    );
    assert_eq!(places[1], local);
    places
}

/// How many jobs, and how many queues, name a worker holding them
/// (`locked_by`).
pub async fn locks_held(pool: &PgPool) -> (i64, i64) {
    (
        count(
            pool,
            "select count(*) from graphile_worker._private_jobs where locked_by is not null",
        )
        .await,
        count(
            pool,
            "select count(*) from graphile_worker._private_job_queues where locked_by is not null",
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
    running: Running,
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
            wait_for_count(
                &self.pool,
                Duration::from_secs(10),
                &format!("witness job {n}"),
                &format!("select count(*) from witnessed where n = {n}"),
                |c| c == 1,
            )
            .await;
        }
    }

    /// Once `last_beat`, a worker's last heartbeat that got through, is
    /// older than `threshold` (others may count the worker as dead by then),
    /// adds a `record` job for `tag`; returns its id once jobs announced
    /// after it reached the witness, in this process, five times in a row
    /// (so a worker listening here was told of it).
    pub async fn add_record_once_stale(
        &mut self,
        last_beat: DateTime<Utc>,
        threshold: Duration,
        tag: &str,
    ) -> i64 {
        wait_for_server_time(&self.pool, last_beat + threshold).await;
        let job = add_job(
            &self.utils,
            "record",
            serde_json::json!({ "tag": tag }),
            JobSpec::default(),
        )
        .await;
        self.confirm(5).await;
        job
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

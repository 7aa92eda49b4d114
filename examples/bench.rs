//! Throughput, latency and start-up of graphile-worker-rs beside Node
//! graphile-worker 0.18, on the same machine and database server, in one run.
//!
//! ```sh
//! cargo run --release --example bench               # median of 3 runs
//! cargo run --release --example bench -- --quick    # 1 run, 20k jobs only
//! cargo run --release --example bench -- --runs 5
//! cargo run --release --example bench -- --only drain   # or startup, enqueue, latency
//! ```
//!
//! With no `DATABASE_URL` it starts a throwaway PostgreSQL (see
//! `graphile_worker_dev`); `DATABASE_URL` points it at a server of your own
//! (the role needs `CREATEDB`). Every run uses a database of its own, created
//! and migrated beforehand and dropped afterwards, so runs do not affect each
//! other. Node graphile-worker 0.18.0 comes from npm (pinned in
//! `tests/node/package-lock.json`); its scripts are in `bench/`.
//!
//! What is measured (each figure the median of the runs):
//!
//! - **start-up + shutdown** on an empty queue with the migrations applied:
//!   ours is `Worker::options()…init()` + `run_once()` + closing the pool,
//!   in-process; Node's is `runOnce`, timed inside the node process, so
//!   node's own process start-up and module loading are not counted;
//! - **bulk enqueue** of 20k and 200k jobs with one call: the `add_jobs` SQL
//!   function called directly (one statement, specs through
//!   `json_populate_recordset`, the JSON text built beforehand; the floor
//!   for any client), `WorkerUtils::add_raw_jobs_count_in`, the typed
//!   `WorkerUtils::add_jobs_count` and `enqueue_many` of a `#[task]` (both
//!   return only the count), and Node's `addJobs`;
//! - **drain** of 20k and 200k trivial jobs at concurrency 24: ours with
//!   `run_once` on the default settings; Node's `runOnce` with batching on
//!   (local queue 500, refetch delay 10 ms, complete/fail batch delays 0,
//!   pool 25) and off (its defaults). Timed from start-up to exit on both
//!   sides. Before each drain the jobs table is `ANALYZE`d: a table that
//!   was just filled has stale statistics, the planner then scans it
//!   sequentially for every claim, and the figure would measure that, not
//!   the worker (in production, autovacuum analyses it);
//! - **latency** from `add_job` to the first line of the task, over 1,000
//!   sequential jobs after a 100-job warm-up, added on a connection apart
//!   from the worker's: ours with `run()` on the defaults; Node with an
//!   in-process `run()`, batching on and off.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use graphile_worker::{JobSpec, NewJob, Worker, WorkerUtils, task};
use graphile_worker_dev::{TestDatabase, fresh_database, node, server_url};
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::sync::mpsc;

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

const SCHEMA: &str = "graphile_worker";
const CONCURRENCY: usize = 24;
const WARMUP: usize = 100;
const SAMPLES: usize = 1000;

const PRELUDE: &str = include_str!("../bench/prelude.js");
const NODE_STARTUP: &str = include_str!("../bench/startup.js");
const NODE_ENQUEUE: &str = include_str!("../bench/enqueue.js");
const NODE_DRAIN: &str = include_str!("../bench/drain.js");
const NODE_LATENCY: &str = include_str!("../bench/latency.js");

/// The trivial job every drain runs.
#[task]
async fn bench_noop(id: i64) {
    let _ = id;
}

/// Where `bench_latency` reports the moment it started.
static STARTED: OnceLock<mpsc::UnboundedSender<(i64, Instant)>> = OnceLock::new();

/// Records when it started.
#[task]
async fn bench_latency(id: i64) {
    let now = Instant::now();
    if let Some(tx) = STARTED.get() {
        let _ = tx.send((id, now));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Ours,
    NodeBatched,
    NodeUnbatched,
}

impl Side {
    const ALL: [Side; 3] = [Side::Ours, Side::NodeBatched, Side::NodeUnbatched];

    fn mode(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::NodeBatched => "batched",
            Side::NodeUnbatched => "unbatched",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Enqueue {
    RawSql,
    RawJobsCount,
    TypedCount,
    Typed,
    Node,
}

impl Enqueue {
    const ALL: [Enqueue; 5] = [
        Enqueue::RawSql,
        Enqueue::RawJobsCount,
        Enqueue::TypedCount,
        Enqueue::Typed,
        Enqueue::Node,
    ];

    fn label(self) -> &'static str {
        match self {
            Enqueue::RawSql => "add_jobs SQL",
            Enqueue::RawJobsCount => "add_raw_jobs_count_in",
            Enqueue::TypedCount => "add_jobs_count (typed)",
            Enqueue::Typed => "enqueue_many (typed, count)",
            Enqueue::Node => "Node addJobs",
        }
    }
}

/// One measured quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Metric {
    StartupMs(Side),
    EnqueueRate(Enqueue, usize),
    DrainRate(Side, usize),
    /// The same drain right after the bulk insert, before any statistics.
    FreshDrainRate(Side, usize),
    /// The claim and complete statements alone, back to back.
    FloorRate(usize),
    LatencyMs(Side, Stat),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stat {
    P50,
    P99,
    Max,
}

#[derive(Default)]
struct Results(BTreeMap<Metric, Vec<f64>>);

impl Results {
    fn push(&mut self, metric: Metric, value: f64) {
        self.0.entry(metric).or_default().push(value);
    }

    fn median(&self, metric: Metric) -> Option<f64> {
        let mut values = self.0.get(&metric)?.clone();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    }
}

struct Settings {
    runs: usize,
    sizes: Vec<usize>,
    /// Measure only this group (startup, enqueue, drain, latency).
    only: Option<String>,
}

impl Settings {
    fn wants(&self, group: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == group)
    }
}

fn settings() -> Result<Settings> {
    let mut settings = Settings {
        runs: 3,
        sizes: vec![20_000, 200_000],
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {
                settings.runs = 1;
                settings.sizes = vec![20_000];
            }
            "--runs" => {
                settings.runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--runs needs a positive number")?;
            }
            "--only" => {
                let group = args.next().unwrap_or_default();
                if !["startup", "enqueue", "drain", "latency"].contains(&group.as_str()) {
                    return Err("--only takes startup, enqueue, drain or latency".into());
                }
                settings.only = Some(group);
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; use --quick, --runs N or --only GROUP"
                )
                .into());
            }
        }
    }
    Ok(settings)
}

#[tokio::main]
async fn main() -> Result<()> {
    let settings = settings()?;
    let (tx, mut started) = mpsc::unbounded_channel();
    STARTED.set(tx).map_err(|_| "latency channel set twice")?;

    eprintln!("preparing: database server and Node graphile-worker 0.18.0 …");
    let machine = Machine::describe().await?;
    node::node_dir();
    let began = Instant::now();
    let mut results = Results::default();

    for run in 1..=settings.runs {
        eprintln!("run {run} of {}", settings.runs);
        // Each run takes the candidates in another order, so that none
        // always follows the same predecessor.
        for side in rotated(Side::ALL, run).filter(|_| settings.wants("startup")) {
            let ms = startup(side).await?;
            progress(&format!("start-up + shutdown, {}", side.mode()), ms, "ms");
            results.push(Metric::StartupMs(side), ms);
        }
        for &size in &settings.sizes {
            for method in rotated(Enqueue::ALL, run).filter(|_| settings.wants("enqueue")) {
                let rate = enqueue(method, size).await?;
                progress(
                    &format!("enqueue {size}, {}", method.label()),
                    rate,
                    "jobs/s",
                );
                results.push(Metric::EnqueueRate(method, size), rate);
            }
        }
        for &size in &settings.sizes {
            for side in rotated(Side::ALL, run).filter(|_| settings.wants("drain")) {
                let rate = drain(side, size, Statistics::Analyzed).await?;
                progress(&format!("drain {size}, {}", side.mode()), rate, "jobs/s");
                results.push(Metric::DrainRate(side, size), rate);
                let rate = drain(side, size, Statistics::None).await?;
                progress(
                    &format!("drain {size}, fresh table, {}", side.mode()),
                    rate,
                    "jobs/s",
                );
                results.push(Metric::FreshDrainRate(side, size), rate);
            }
            if settings.wants("drain") {
                let rate = floor(size).await?;
                progress(&format!("drain {size}, floor"), rate, "jobs/s");
                results.push(Metric::FloorRate(size), rate);
            }
        }
        for side in rotated(Side::ALL, run).filter(|_| settings.wants("latency")) {
            let samples = latency(side, &mut started).await?;
            let stats = percentiles(samples);
            progress(
                &format!("latency, {}", side.mode()),
                stats[0].1,
                &format!("ms p50 ({:.2} p99, {:.2} max)", stats[1].1, stats[2].1),
            );
            for (stat, value) in stats {
                results.push(Metric::LatencyMs(side, stat), value);
            }
        }
    }

    let load_after = load_average();
    println!();
    machine.print(load_after, began.elapsed());
    print_tables(&results, &settings);
    Ok(())
}

fn rotated<T: Copy, const N: usize>(items: [T; N], by: usize) -> impl Iterator<Item = T> {
    (0..N).map(move |i| items[(i + by) % N])
}

fn progress(what: &str, value: f64, unit: &str) {
    eprintln!("  {what:<48} {value:>12.2} {unit}");
}

/// The machine and server the figures come from.
struct Machine {
    cpus: usize,
    cpu_model: String,
    load_before: String,
    server: String,
    settings: String,
}

impl Machine {
    async fn describe() -> Result<Self> {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let mut conn = server_url()
            .parse::<sqlx::postgres::PgConnectOptions>()?
            .connect()
            .await?;
        let server: String = sqlx::query_scalar("show server_version")
            .fetch_one(&mut conn)
            .await?;
        let settings: String = sqlx::query_scalar(
            "select string_agg(name || '=' || setting || coalesce(unit, ''), ', ' order by name) \
             from pg_settings where name in ('fsync', 'synchronous_commit', 'shared_buffers', \
             'max_connections')",
        )
        .fetch_one(&mut conn)
        .await?;
        conn.close().await?;
        Ok(Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            load_before: load_average(),
            server,
            settings,
        })
    }

    fn print(&self, load_after: String, took: Duration) {
        println!(
            "Machine: {} cores ({}); PostgreSQL {} on {} ({}).",
            self.cpus,
            self.cpu_model,
            self.server,
            if std::env::var_os("DATABASE_URL").is_some() {
                "DATABASE_URL's server"
            } else {
                "the same host (throwaway server)"
            },
            self.settings
        );
        println!(
            "Load average (1, 5, 15 min) before: {}; after: {}. The benchmark took {:.0} s.",
            self.load_before,
            load_after,
            took.as_secs_f64()
        );
        println!();
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------- databases

/// A new database with the worker schema installed.
async fn migrated_database() -> Result<TestDatabase> {
    let db = fresh_database().await;
    let pool = db.pool(1).await;
    WorkerUtils::new(pool.clone(), SCHEMA).migrate().await?;
    pool.close().await;
    Ok(db)
}

/// Writes out the pages earlier runs left dirty, so that no measurement pays
/// for its predecessor's writes. Needs superuser (or pg_checkpoint) rights;
/// without them it does nothing.
async fn settle(pool: &PgPool) {
    let _ = sqlx::query("checkpoint").execute(pool).await;
}

async fn drop_database(db: TestDatabase) -> Result<()> {
    let mut conn = server_url()
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .connect()
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "drop database if exists {} with (force)",
        graphile_worker::quote_identifier(&db.name)
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

/// `count` jobs of `bench_noop` as the JSON array `add_jobs` takes.
fn specs_json(count: usize) -> String {
    let mut json = String::with_capacity(count * 48 + 2);
    json.push('[');
    for id in 0..count {
        if id > 0 {
            json.push(',');
        }
        json.push_str(r#"{"identifier":"bench_noop","payload":{"id":"#);
        json.push_str(&id.to_string());
        json.push_str("}}");
    }
    json.push(']');
    json
}

/// The `add_jobs` SQL function, called directly in one statement.
async fn add_jobs_sql(pool: &PgPool, specs: String) -> Result<i64> {
    let sql = format!(
        "select count(*) from {s}.add_jobs((select array_agg(r) \
         from json_populate_recordset(null::{s}.job_spec, $1::json) r), false)",
        s = graphile_worker::quote_identifier(SCHEMA)
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(specs)
        .fetch_one(pool)
        .await?)
}

async fn jobs_left(pool: &PgPool) -> Result<i64> {
    let sql = format!(
        "select count(*) from {}._private_jobs",
        graphile_worker::quote_identifier(SCHEMA)
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await?)
}

/// Runs a script from `bench/` with Node graphile-worker 0.18 and returns the
/// JSON it reports on its last line.
async fn run_node(
    db: &TestDatabase,
    script: &str,
    env: &[(&str, String)],
) -> Result<serde_json::Value> {
    let mut cmd = node::js_command(&db.url, SCHEMA, &format!("{PRELUDE}\n{script}"));
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::process::Command::from(cmd).output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "node script failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let last = stdout.lines().last().ok_or("node script printed nothing")?;
    Ok(serde_json::from_str(last)?)
}

fn reported_ms(value: &serde_json::Value) -> Result<f64> {
    Ok(value["ms"].as_f64().ok_or("node script reported no ms")?)
}

// ------------------------------------------------------------- measurements

/// Start-up plus shutdown on an empty queue, in milliseconds.
async fn startup(side: Side) -> Result<f64> {
    let db = migrated_database().await?;
    let pool = db.pool(1).await;
    settle(&pool).await;
    pool.close().await;
    let ms = match side {
        Side::Ours => ours_run_once_ms(&db).await?,
        node_side => {
            let env = [("BENCH_MODE", node_side.mode().to_owned())];
            reported_ms(&run_node(&db, NODE_STARTUP, &env).await?)?
        }
    };
    drop_database(db).await?;
    Ok(ms)
}

/// Jobs per second for one bulk enqueue of `count` jobs.
async fn enqueue(method: Enqueue, count: usize) -> Result<f64> {
    let db = migrated_database().await?;
    let pool = db.pool(2).await;
    // Connected and warm before the clock starts.
    sqlx::query("select 1").execute(&pool).await?;
    let utils = WorkerUtils::new(pool.clone(), SCHEMA);
    let id = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    settle(&pool).await;
    let ms = match method {
        Enqueue::RawSql => {
            let specs = specs_json(count);
            let start = Instant::now();
            add_jobs_sql(&pool, specs).await?;
            start.elapsed().as_secs_f64() * 1e3
        }
        Enqueue::RawJobsCount => {
            let jobs: Vec<NewJob> = (0..count)
                .map(|n| NewJob::new("bench_noop", serde_json::json!({ "id": id(n) })))
                .collect();
            let start = Instant::now();
            utils.add_raw_jobs_count_in(&pool, &jobs).await?;
            start.elapsed().as_secs_f64() * 1e3
        }
        Enqueue::TypedCount => {
            let payloads: Vec<BenchNoop> = (0..count).map(|n| BenchNoop { id: id(n) }).collect();
            let start = Instant::now();
            utils.add_jobs_count(payloads).await?;
            start.elapsed().as_secs_f64() * 1e3
        }
        Enqueue::Typed => {
            let payloads: Vec<BenchNoop> = (0..count).map(|n| BenchNoop { id: id(n) }).collect();
            let start = Instant::now();
            BenchNoop::enqueue_many(&utils, payloads).await?;
            start.elapsed().as_secs_f64() * 1e3
        }
        Enqueue::Node => {
            let env = [("BENCH_JOBS", count.to_string())];
            reported_ms(&run_node(&db, NODE_ENQUEUE, &env).await?)?
        }
    };
    let added = jobs_left(&pool).await?;
    pool.close().await;
    drop_database(db).await?;
    if added != id(count) {
        return Err(format!("{} added {added} jobs, not {count}", method.label()).into());
    }
    Ok(count as f64 / (ms / 1e3))
}

/// Jobs per second draining `count` queued trivial jobs.
/// Milliseconds for our worker on its defaults to start, run every job that
/// is ready, and shut down (closing its pool).
async fn ours_run_once_ms(db: &TestDatabase) -> Result<f64> {
    let start = Instant::now();
    let worker = Worker::options()
        .database_url(&db.url)
        .concurrency(CONCURRENCY)
        .handle_signals(false)
        .register::<BenchNoop>()
        .init()
        .await?;
    worker.run_once().await?;
    worker.utils().pool().close().await;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

/// Whether a drain's table has statistics.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Statistics {
    /// `ANALYZE`d, as autovacuum would leave a table this size.
    Analyzed,
    /// None yet: a burst inserted a moment ago.
    None,
}

/// A database of its own holding `count` queued `bench_noop` jobs, and a
/// small pool on it.
async fn backlog(count: usize, statistics: Statistics) -> Result<(TestDatabase, PgPool)> {
    let db = migrated_database().await?;
    let pool = db.pool(2).await;
    add_jobs_sql(&pool, specs_json(count)).await?;
    if statistics == Statistics::Analyzed {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "analyze {}._private_jobs",
            graphile_worker::quote_identifier(SCHEMA)
        )))
        .execute(&pool)
        .await?;
    }
    settle(&pool).await;
    Ok((db, pool))
}

async fn drain(side: Side, count: usize, statistics: Statistics) -> Result<f64> {
    let (db, pool) = backlog(count, statistics).await?;
    let ms = match side {
        Side::Ours => ours_run_once_ms(&db).await?,
        node_side => {
            let env = [("BENCH_MODE", node_side.mode().to_owned())];
            reported_ms(&run_node(&db, NODE_DRAIN, &env).await?)?
        }
    };
    let left = jobs_left(&pool).await?;
    pool.close().await;
    drop_database(db).await?;
    if left != 0 {
        return Err(format!("{} left {left} of {count} jobs", side.mode()).into());
    }
    Ok(count as f64 / (ms / 1e3))
}

/// Claims per statement in the floor: the most a claim of ours asks for
/// while draining a backlog at this concurrency.
const FLOOR_BATCH: i64 = 1000;

/// What PostgreSQL alone costs for a drain: the worker's own claim and
/// complete statements, batches of [`FLOOR_BATCH`], issued back to back on
/// one connection by a client that runs no task, in jobs per second (from
/// the first claim to the last completion, over an ANALYZEd table).
async fn floor(count: usize) -> Result<f64> {
    let (db, pool) = backlog(count, Statistics::Analyzed).await?;
    let (claim, complete) = graphile_worker::testing::engine_sql(SCHEMA);
    let mut conn = db
        .url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .connect()
        .await?;
    let task_ids: Vec<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select id from {}._private_tasks where identifier = 'bench_noop'",
        graphile_worker::quote_identifier(SCHEMA)
    )))
    .fetch_all(&mut conn)
    .await?;
    let start = Instant::now();
    loop {
        let ids: Vec<Option<i64>> = sqlx::query_scalar(sqlx::AssertSqlSafe(claim.clone()))
            .bind("floor")
            .bind(&task_ids)
            .bind(FLOOR_BATCH)
            .fetch_all(&mut conn)
            .await?;
        let ids: Vec<i64> = ids.into_iter().flatten().collect();
        if ids.is_empty() {
            break;
        }
        sqlx::query(sqlx::AssertSqlSafe(complete.clone()))
            .bind(&ids)
            .bind("floor")
            .execute(&mut conn)
            .await?;
    }
    let ms = start.elapsed().as_secs_f64() * 1e3;
    conn.close().await?;
    let left = jobs_left(&pool).await?;
    pool.close().await;
    drop_database(db).await?;
    if left != 0 {
        return Err(format!("the floor left {left} of {count} jobs").into());
    }
    Ok(count as f64 / (ms / 1e3))
}

/// Milliseconds from just before each `add_job` call to the task's start.
async fn latency(
    side: Side,
    started: &mut mpsc::UnboundedReceiver<(i64, Instant)>,
) -> Result<Vec<f64>> {
    let db = migrated_database().await?;
    let samples = match side {
        Side::Ours => ours_latency(&db, started).await?,
        node_side => {
            let env = [
                ("BENCH_MODE", node_side.mode().to_owned()),
                ("BENCH_WARMUP", WARMUP.to_string()),
                ("BENCH_SAMPLES", SAMPLES.to_string()),
            ];
            let report = run_node(&db, NODE_LATENCY, &env).await?;
            report["samples_ms"]
                .as_array()
                .ok_or("node script reported no samples")?
                .iter()
                .filter_map(serde_json::Value::as_f64)
                .collect()
        }
    };
    drop_database(db).await?;
    if samples.len() != SAMPLES {
        return Err(format!("{} gave {} latency samples", side.mode(), samples.len()).into());
    }
    Ok(samples)
}

async fn ours_latency(
    db: &TestDatabase,
    started: &mut mpsc::UnboundedReceiver<(i64, Instant)>,
) -> Result<Vec<f64>> {
    let worker = Worker::options()
        .database_url(&db.url)
        .handle_signals(false)
        .register::<BenchLatency>()
        .init()
        .await?;
    let running = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run().await }
    });
    // Jobs are added on a connection of their own.
    let adder = WorkerUtils::new(db.pool(1).await, SCHEMA);
    sqlx::query("select 1").execute(adder.pool()).await?;
    while started.try_recv().is_ok() {}
    let mut samples = Vec::with_capacity(SAMPLES);
    for n in 0..WARMUP + SAMPLES {
        let id = i64::try_from(n)?;
        let before = Instant::now();
        adder
            .add_job(BenchLatency { id }, JobSpec::default())
            .await?;
        let (got, at) = tokio::time::timeout(Duration::from_secs(10), started.recv())
            .await
            .map_err(|_| format!("job {id} did not start within 10 s"))?
            .ok_or("latency channel closed")?;
        if got != id {
            return Err(format!("expected job {id} to start, got {got}").into());
        }
        if n >= WARMUP {
            samples.push(at.duration_since(before).as_secs_f64() * 1e3);
        }
    }
    worker.shutdown_handle().shutdown();
    running.await??;
    adder.pool().close().await;
    worker.utils().pool().close().await;
    Ok(samples)
}

/// p50, p99 and max (nearest-rank).
fn percentiles(mut samples: Vec<f64>) -> [(Stat, f64); 3] {
    samples.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let index = ((p * samples.len() as f64).ceil() as usize).saturating_sub(1);
        samples.get(index).copied().unwrap_or(f64::NAN)
    };
    [
        (Stat::P50, rank(0.50)),
        (Stat::P99, rank(0.99)),
        (Stat::Max, samples.last().copied().unwrap_or(f64::NAN)),
    ]
}

// ------------------------------------------------------------------- report

fn cell(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if decimals == 0 => group_thousands(v.round() as i64),
        Some(v) => format!("{v:.decimals$}"),
        None => "-".into(),
    }
}

fn group_thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn print_tables(results: &Results, settings: &Settings) {
    let m = |metric| results.median(metric);
    println!(
        "Median of {} run{}; concurrency {CONCURRENCY}; Node batched = localQueue 500, refetchDelay 10 ms, \
         complete/failJobBatchDelay 0, maxPoolSize 25; Node unbatched = its defaults (maxPoolSize 10).",
        settings.runs,
        if settings.runs == 1 { "" } else { "s" }
    );
    println!();
    println!(
        "| {:<34} | {:>15} | {:>14} | {:>14} |",
        "", "ours (defaults)", "Node batched", "Node unbatched"
    );
    println!("|{:-<36}|{:->17}|{:->16}|{:->16}|", "", ":", ":", ":");
    let row = |label: &str, values: [Option<f64>; 3], decimals: usize| {
        println!(
            "| {:<34} | {:>15} | {:>14} | {:>14} |",
            label,
            cell(values[0], decimals),
            cell(values[1], decimals),
            cell(values[2], decimals)
        );
    };
    let per_side = |f: &dyn Fn(Side) -> Metric| Side::ALL.map(|side| m(f(side)));
    row(
        "start-up + shutdown (ms)",
        per_side(&|s| Metric::StartupMs(s)),
        1,
    );
    for &size in &settings.sizes {
        row(
            &format!("drain {} jobs (jobs/s)", group_thousands(size as i64)),
            per_side(&|s| Metric::DrainRate(s, size)),
            0,
        );
        row(
            "… fresh table, no ANALYZE (jobs/s)",
            per_side(&|s| Metric::FreshDrainRate(s, size)),
            0,
        );
    }
    for (stat, name) in [(Stat::P50, "p50"), (Stat::P99, "p99"), (Stat::Max, "max")] {
        row(
            &format!("latency {name} (ms)"),
            per_side(&|s| Metric::LatencyMs(s, stat)),
            2,
        );
    }
    println!();
    print!("| {:<34} |", "bulk enqueue, one call (jobs/s)");
    for &size in &settings.sizes {
        print!(
            " {:>22} |",
            format!("{} jobs", group_thousands(size as i64))
        );
    }
    println!();
    print!("|{:-<36}|", "");
    for _ in &settings.sizes {
        print!("{:->24}|", ":");
    }
    println!();
    for method in Enqueue::ALL {
        print!("| {:<34} |", method.label());
        for &size in &settings.sizes {
            let rate = m(Metric::EnqueueRate(method, size));
            let share = rate.zip(m(Metric::EnqueueRate(Enqueue::RawSql, size)));
            let text = match share {
                Some((rate, raw)) => format!(
                    "{} ({:.0}%)",
                    group_thousands(rate.round() as i64),
                    rate / raw * 100.0
                ),
                None => cell(rate, 0),
            };
            print!(" {text:>22} |");
        }
        println!();
    }
    println!();
    println!(
        "Notes: Node's start-up is timed inside the node process (its process start-up and \
         module loading are not counted); ours in-process. Drain times run from start-up to \
         exit on both sides, over jobs queued beforehand and ANALYZEd (the fresh-table rows: \
         drained right after the insert, before any statistics). Enqueue percentages \
         are of the add_jobs SQL statement alone (its JSON built beforehand); enqueue_many \
         and add_jobs_count read no jobs back, they return the count."
    );
    println!();
    println!("Targets:");
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    for &size in &settings.sizes {
        if let (Some(ours), Some(node)) = (
            m(Metric::DrainRate(Side::Ours, size)),
            m(Metric::DrainRate(Side::NodeBatched, size)),
        ) {
            let ratio = ours / node;
            println!(
                "- drain {} ≥ 2.5× Node batched: {ratio:.2}× ({})",
                group_thousands(size as i64),
                verdict(ratio >= 2.5)
            );
        }
    }
    for &size in &settings.sizes {
        if let (Some(ours), Some(floor)) = (
            m(Metric::DrainRate(Side::Ours, size)),
            m(Metric::FloorRate(size)),
        ) {
            let share = ours / floor;
            println!(
                "- drain {} ≥ 85% of the floor (claim + complete statements alone, {FLOOR_BATCH} a batch: {} jobs/s): {:.0}% ({})",
                group_thousands(size as i64),
                group_thousands(floor.round() as i64),
                share * 100.0,
                verdict(share >= 0.85)
            );
        }
    }
    for &size in &settings.sizes {
        if let (Some(fresh), Some(analyzed), Some(node)) = (
            m(Metric::FreshDrainRate(Side::Ours, size)),
            m(Metric::DrainRate(Side::Ours, size)),
            m(Metric::FreshDrainRate(Side::NodeBatched, size)),
        ) {
            let share = fresh / analyzed;
            let ratio = fresh / node;
            println!(
                "- fresh-table drain {} within 10% of the ANALYZEd one: {:.0}% ({}); ≥ 2.5× Node batched on a fresh table: {ratio:.2}× ({})",
                group_thousands(size as i64),
                share * 100.0,
                verdict(share >= 0.9),
                verdict(ratio >= 2.5)
            );
        }
    }
    if let (Some(p50), Some(p99)) = (
        m(Metric::LatencyMs(Side::Ours, Stat::P50)),
        m(Metric::LatencyMs(Side::Ours, Stat::P99)),
    ) {
        println!(
            "- latency p50 ≤ 1.5 ms: {p50:.2} ms ({}); p99 ≤ 5 ms: {p99:.2} ms ({})",
            verdict(p50 <= 1.5),
            verdict(p99 <= 5.0)
        );
    }
    if let Some(ms) = m(Metric::StartupMs(Side::Ours)) {
        println!(
            "- start-up + shutdown ≤ 20 ms: {ms:.1} ms ({})",
            verdict(ms <= 20.0)
        );
    }
    for method in [Enqueue::Typed, Enqueue::TypedCount] {
        for &size in &settings.sizes {
            if let (Some(typed), Some(raw)) = (
                m(Metric::EnqueueRate(method, size)),
                m(Metric::EnqueueRate(Enqueue::RawSql, size)),
            ) {
                let share = typed / raw;
                println!(
                    "- typed bulk enqueue ≥ 90% of add_jobs SQL, {} {}: {:.0}% ({})",
                    method.label(),
                    group_thousands(size as i64),
                    share * 100.0,
                    verdict(share >= 0.9)
                );
            }
        }
    }
}

//! Ours against the other Rust job queues on PostgreSQL, on the same machine
//! and server, in one run: graphile_worker_rs (crates.io `graphile_worker`,
//! which also keeps Node's schema) on its defaults and with its batching
//! turned on, and apalis (`apalis-postgres`).
//!
//! ```text
//! cd bench/rust-peers && cargo run --release -- [--jobs 20000] [--rounds 3]
//!     [--side ours|graphile_rs|graphile_rs_batched|apalis]
//! ```
//!
//! Two measurements, each side in a fresh database of its own, the sides
//! taking turns in a rotated order each round, medians reported:
//!
//! - **drain**: `--jobs` trivial jobs queued and `ANALYZE`d before the clock
//!   starts; the clock runs from building the worker (over an installed
//!   schema) until the database shows every job finished. Ours and
//!   graphile_worker_rs on its defaults drain with `run_once`; apalis, which
//!   has none, and graphile_worker_rs with its local queue run until the
//!   last job is done. Concurrency 24 everywhere, as in the main benchmark.
//! - **latency**: one job added at a time while a worker runs; the time from
//!   before the add until the task starts, after 20 warm-up jobs. A job
//!   that has not started within 10 s counts as 10 s, and is counted.
//!
//! The graphile sides are given the same jobs by the same `add_jobs` SQL
//! call; apalis gets its jobs through its own `push_all`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use graphile_worker_dev::{TestDatabase, fresh_database};
use tokio::sync::{Notify, mpsc};

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

const CONCURRENCY: usize = 24;
const WARMUP: usize = 20;
const SAMPLES: usize = 300;
/// How long a latency sample waits for its job to start.
const LATE: Duration = Duration::from_secs(10);

/// Each side's tasks report their start here: (job number, when).
static STARTED: OnceLock<mpsc::UnboundedSender<(i64, Instant)>> = OnceLock::new();
/// Jobs run in the current drain.
static RAN: AtomicUsize = AtomicUsize::new(0);

fn started(id: i64) {
    let now = Instant::now();
    if let Some(tx) = STARTED.get() {
        let _ = tx.send((id, now));
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Ours,
    GraphileRs,
    GraphileRsBatched,
    Apalis,
}

impl Side {
    const ALL: [Side; 4] = [
        Side::Ours,
        Side::GraphileRs,
        Side::GraphileRsBatched,
        Side::Apalis,
    ];

    /// Its name for `--side`.
    fn key(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::GraphileRs => "graphile_rs",
            Side::GraphileRsBatched => "graphile_rs_batched",
            Side::Apalis => "apalis",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::GraphileRs => "graphile_worker_rs 0.14, defaults",
            Side::GraphileRsBatched => "graphile_worker_rs 0.14, its throughput settings",
            Side::Apalis => "apalis-postgres 1.0",
        }
    }
}

/// What a running worker leaves the bench: a way to stop it.
type Stop = Box<dyn FnOnce() + Send>;

/// Every side's one task: counts its run and reports its start.
fn ran(id: i64) {
    RAN.fetch_add(1, Ordering::Relaxed);
    started(id);
}

mod ours {
    use super::*;
    use graphile_worker::{Worker, WorkerUtils};

    #[graphile_worker::task]
    pub async fn bench_job(id: i64) {
        ran(id);
    }

    pub async fn install(url: &str) -> Result<()> {
        let pool = sqlx::PgPool::connect(url).await?;
        WorkerUtils::new(pool.clone(), "graphile_worker")
            .migrate()
            .await?;
        pool.close().await;
        Ok(())
    }

    /// A worker on its defaults (but for concurrency), running `bench_job`.
    async fn worker(url: &str) -> Result<Worker> {
        Ok(Worker::options()
            .database_url(url)
            .concurrency(CONCURRENCY)
            .handle_signals(false)
            .register::<BenchJob>()
            .init()
            .await?)
    }

    /// Runs every job that is due on [`worker`], and closes its pool.
    pub async fn run_once(url: &str) -> Result<()> {
        let worker = worker(url).await?;
        worker.run_once().await?;
        worker.utils().pool().close().await;
        Ok(())
    }

    /// Starts [`worker`] running in the background.
    pub async fn start(url: &str) -> Result<Stop> {
        let worker = worker(url).await?;
        let running = tokio::spawn({
            let worker = worker.clone();
            async move { worker.run().await }
        });
        Ok(Box::new(move || {
            worker.shutdown_handle().shutdown();
            running.abort();
        }))
    }
}

mod graphile_rs {
    use super::*;
    use graphile_worker_rs::{
        IntoTaskHandlerResult, LocalQueueConfig, TaskHandler, WorkerContext, WorkerOptions,
    };
    use serde::{Deserialize, Serialize};

    #[derive(Deserialize, Serialize)]
    pub struct BenchJob {
        id: i64,
    }

    impl TaskHandler for BenchJob {
        const IDENTIFIER: &'static str = "bench_job";

        async fn run(self, _ctx: WorkerContext) -> impl IntoTaskHandlerResult {
            ran(self.id);
        }
    }

    fn options(url: &str, batched: bool) -> WorkerOptions {
        let options = WorkerOptions::default()
            .database_url(url)
            .schema("graphile_worker")
            .concurrency(CONCURRENCY)
            .define_job::<BenchJob>();
        if batched {
            // Its guide's "throughput-oriented worker" settings (at our
            // concurrency): a local queue of 100 with a 60 s TTL, outcomes
            // batched for 5 ms, a poll every 500 ms.
            options
                .poll_interval(Duration::from_millis(500))
                .local_queue(
                    LocalQueueConfig::default()
                        .with_size(100)
                        .with_ttl(Duration::from_secs(60)),
                )
                .complete_job_batch_delay(Duration::from_millis(5))
                .fail_job_batch_delay(Duration::from_millis(5))
        } else {
            options
        }
    }

    pub async fn install(url: &str) -> Result<()> {
        let worker = options(url, false).init().await?;
        worker.request_shutdown();
        Ok(())
    }

    pub async fn run_once(url: &str) -> Result<()> {
        let worker = options(url, false).init().await?;
        worker.run_once().await?;
        worker.request_shutdown();
        Ok(())
    }

    pub async fn start(url: &str, batched: bool) -> Result<Stop> {
        let worker = Arc::new(options(url, batched).init().await?);
        let running = tokio::spawn({
            let worker = worker.clone();
            async move { worker.run().await }
        });
        Ok(Box::new(move || {
            worker.request_shutdown();
            running.abort();
        }))
    }
}

mod apalis_side {
    use super::*;
    use apalis::prelude::*;
    use apalis_postgres::{Config, PostgresStorage};
    use futures::StreamExt;

    async fn bench_job(id: i64) -> Result<(), BoxDynError> {
        ran(id);
        Ok(())
    }

    async fn pool(url: &str) -> Result<sqlx::PgPool> {
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect(url)
            .await?)
    }

    fn storage(pool: &sqlx::PgPool) -> PostgresStorage<i64> {
        // Fetches of up to 100 (its default is 10).
        PostgresStorage::new(pool).with_config(Config::default().queue("bench").batch_size(100))
    }

    pub async fn install(url: &str) -> Result<()> {
        let pool = pool(url).await?;
        PostgresStorage::setup(&pool).await?;
        pool.close().await;
        Ok(())
    }

    pub async fn enqueue(url: &str, jobs: usize) -> Result<()> {
        let pool = pool(url).await?;
        let mut items = futures::stream::iter(0..jobs as i64).map(|n| TaskBuilder::new(n).build());
        storage(&pool).push_all(&mut items).await?;
        pool.close().await;
        Ok(())
    }

    /// A worker on LISTEN/NOTIFY (`with_pubsub`) with a poll every second:
    /// apalis' README combines the two (with 5 s); 1 s is our choice, the
    /// poll interval of graphile_worker_rs' defaults.
    pub async fn start(url: &str) -> Result<Stop> {
        let pool = pool(url).await?;
        let stop = Arc::new(Notify::new());
        let worker = WorkerBuilder::new("bench")
            .backend(
                storage(&pool)
                    .with_pubsub()
                    .poll_with_strategy(Strategy::new().interval(Duration::from_secs(1))),
            )
            .concurrency(CONCURRENCY)
            .build(bench_job);
        let running = tokio::spawn({
            let stop = stop.clone();
            async move {
                let stopped = async move {
                    stop.notified().await;
                    Ok::<(), std::io::Error>(())
                };
                worker.run_until(stopped).await
            }
        });
        Ok(Box::new(move || {
            stop.notify_one();
            running.abort();
        }))
    }

    /// Adds jobs one at a time, through apalis' own `push`.
    pub struct Adder(PostgresStorage<i64>, sqlx::PgPool);

    impl Adder {
        pub async fn new(url: &str) -> Result<Self> {
            let pool = pool(url).await?;
            Ok(Self(storage(&pool), pool))
        }

        pub async fn add(&mut self, id: i64) -> Result<()> {
            self.0.push(id).await?;
            Ok(())
        }

        pub async fn close(self) {
            self.1.close().await;
        }
    }

    pub async fn unfinished(pool: &sqlx::PgPool) -> Result<i64> {
        Ok(
            sqlx::query_scalar("select count(*) from apalis.jobs where status <> 'Done'")
                .fetch_one(pool)
                .await?,
        )
    }
}

/// A fresh database with `side`'s schema installed.
async fn database_for(side: Side) -> Result<TestDatabase> {
    let db = fresh_database().await;
    match side {
        Side::Ours => ours::install(&db.url).await?,
        Side::GraphileRs | Side::GraphileRsBatched => graphile_rs::install(&db.url).await?,
        Side::Apalis => apalis_side::install(&db.url).await?,
    }
    Ok(db)
}

async fn start(side: Side, url: &str) -> Result<Stop> {
    match side {
        Side::Ours => ours::start(url).await,
        Side::GraphileRs => graphile_rs::start(url, false).await,
        Side::GraphileRsBatched => graphile_rs::start(url, true).await,
        Side::Apalis => apalis_side::start(url).await,
    }
}

/// Waits (up to a minute) until every one of `jobs` ran and the database
/// shows them all finished. The database is asked only once every task
/// ran, so a side still draining does not share the cores with the check.
async fn until_finished(side: Side, pool: &sqlx::PgPool, jobs: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while RAN.load(Ordering::Relaxed) < jobs {
        if Instant::now() > deadline {
            return Err(format!("{}: not every job ran within a minute", side.label()).into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    loop {
        let left = match side {
            Side::Apalis => apalis_side::unfinished(pool).await?,
            _ => {
                sqlx::query_scalar("select count(*) from graphile_worker._private_jobs")
                    .fetch_one(pool)
                    .await?
            }
        };
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{}: {left} jobs unfinished after a minute", side.label()).into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Jobs per second draining `jobs` queued trivial jobs: from building the
/// worker until the database shows them all finished.
async fn drain(side: Side, jobs: usize) -> Result<f64> {
    let db = database_for(side).await?;
    let pool = db.pool(1).await;
    match side {
        Side::Apalis => apalis_side::enqueue(&db.url, jobs).await?,
        _ => {
            let added: i64 = sqlx::query_scalar(
                "select count(*) from graphile_worker.add_jobs((select array_agg(row( \
                 'bench_job', json_build_object('id', n), null, null, null, null, null, null \
                 )::graphile_worker.job_spec) from generate_series(1, $1) n))",
            )
            .bind(i32::try_from(jobs)?)
            .fetch_one(&pool)
            .await?;
            if added != jobs as i64 {
                return Err(format!("added {added} jobs, not {jobs}").into());
            }
        }
    }
    // Statistics, as autovacuum would leave them, and no dirty pages from
    // the insert.
    let _ = sqlx::query("analyze").execute(&pool).await;
    let _ = sqlx::query("checkpoint").execute(&pool).await;
    RAN.store(0, Ordering::Relaxed);
    let begin = Instant::now();
    // run_once where a side has one that drains; else run() until done.
    let stop = match side {
        Side::Ours => {
            ours::run_once(&db.url).await?;
            None
        }
        Side::GraphileRs => {
            graphile_rs::run_once(&db.url).await?;
            None
        }
        Side::GraphileRsBatched | Side::Apalis => Some(start(side, &db.url).await?),
    };
    until_finished(side, &pool, jobs).await?;
    let took = begin.elapsed();
    pool.close().await;
    if let Some(stop) = stop {
        stop();
    }
    let ran = RAN.load(Ordering::Relaxed);
    if ran != jobs {
        return Err(format!("{} ran {ran} jobs, not {jobs}", side.label()).into());
    }
    Ok(jobs as f64 / took.as_secs_f64())
}

/// Milliseconds from before each add until its task started.
async fn latency(side: Side, rx: &mut mpsc::UnboundedReceiver<(i64, Instant)>) -> Result<Vec<f64>> {
    let db = database_for(side).await?;
    let adder_pool = db.pool(1).await;
    let mut apalis_adder = match side {
        Side::Apalis => Some(apalis_side::Adder::new(&db.url).await?),
        _ => None,
    };
    let stop = start(side, &db.url).await?;
    // Let the worker connect and LISTEN before the first add.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while rx.try_recv().is_ok() {}
    let mut samples = Vec::with_capacity(SAMPLES);
    for n in 0..WARMUP + SAMPLES {
        let id = i64::try_from(n)?;
        let before = Instant::now();
        match apalis_adder.as_mut() {
            Some(adder) => adder.add(id).await?,
            None => {
                sqlx::query(
                    "select graphile_worker.add_job('bench_job', json_build_object('id', $1))",
                )
                .bind(id)
                .execute(&adder_pool)
                .await?;
            }
        }
        // Starts of earlier jobs that came late are skipped; a job that has
        // not started within the limit counts as the limit.
        let deadline = tokio::time::Instant::now() + LATE;
        let started_at = loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((got, at))) if got == id => break Some(at),
                Ok(Some(_)) => continue,
                Ok(None) => return Err("latency channel closed".into()),
                Err(_) => break None,
            }
        };
        if n >= WARMUP {
            samples.push(match started_at {
                Some(at) => at.duration_since(before).as_secs_f64() * 1e3,
                None => LATE.as_secs_f64() * 1e3,
            });
        }
    }
    stop();
    if let Some(adder) = apalis_adder {
        adder.close().await;
    }
    adder_pool.close().await;
    Ok(samples)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(values, 50.0)
}

fn arg(name: &str, default: usize) -> Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args
            .get(i + 1)
            .ok_or(format!("{name} needs a number"))?
            .parse()?),
        None => Ok(default),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let jobs = arg("--jobs", 20_000)?;
    let rounds = arg("--rounds", 3)?;
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--side")
        .and_then(|i| args.get(i + 1).cloned());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _ = STARTED.set(tx);

    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); Side::ALL.len()];
    let mut p50: Vec<Vec<f64>> = vec![Vec::new(); Side::ALL.len()];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); Side::ALL.len()];
    let mut late_total = vec![0usize; Side::ALL.len()];
    for round in 0..rounds {
        for k in 0..Side::ALL.len() {
            let i = (k + round) % Side::ALL.len();
            let side = Side::ALL[i];
            if only.as_deref().is_some_and(|only| only != side.key()) {
                continue;
            }
            let rate = drain(side, jobs).await?;
            eprintln!(
                "round {}: drain {jobs}, {}: {rate:.0} jobs/s",
                round + 1,
                side.label()
            );
            rates[i].push(rate);
            let mut samples = latency(side, &mut rx).await?;
            samples.sort_by(f64::total_cmp);
            let (a, b) = (percentile(&samples, 50.0), percentile(&samples, 99.0));
            let late = samples
                .iter()
                .filter(|ms| **ms >= LATE.as_secs_f64() * 1e3)
                .count();
            eprintln!(
                "round {}: latency, {}: p50 {a:.2} ms, p99 {b:.2} ms, {late} not started within {LATE:?}",
                round + 1,
                side.label()
            );
            late_total[i] += late;
            p50[i].push(a);
            p99[i].push(b);
        }
    }

    println!(
        "\nMedians of {rounds} rounds; drain of {jobs} jobs at concurrency {CONCURRENCY}; \
         latency over {SAMPLES} jobs added one at a time.\n"
    );
    println!(
        "| | drain (jobs/s) | add → start p50 (ms) | add → start p99 (ms) | not started within {LATE:?} (all rounds) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (i, side) in Side::ALL.iter().enumerate() {
        if rates[i].is_empty() {
            continue;
        }
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {} |",
            side.label(),
            median(&mut rates[i]),
            median(&mut p50[i]),
            median(&mut p99[i]),
            late_total[i]
        );
    }
    Ok(())
}

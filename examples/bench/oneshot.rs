//! The one-shot cases: start-up, bulk enqueue, draining a backlog, and the
//! floor a drain could reach.

use std::time::Instant;

use graphile_worker::{NewJob, Worker, WorkerUtils};
use graphile_worker_dev::TestDatabase;
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::setup::{
    add_jobs_sql, drop_database, jobs_left, migrated_database, reported_ms, run_node, settle,
    specs_json,
};
use crate::{
    BenchNoop, CONCURRENCY, Enqueue, Metric, Result, Results, SCHEMA, Settings, Side, progress,
    rotated,
};

const NODE_STARTUP: &str = include_str!("../../bench/startup.js");
const NODE_ENQUEUE: &str = include_str!("../../bench/enqueue.js");
const NODE_DRAIN: &str = include_str!("../../bench/drain.js");

/// Start-up, enqueue, drain and floor, as `settings` asks.
pub(crate) async fn measure(settings: &Settings, run: usize, results: &mut Results) -> Result<()> {
    for side in settings
        .sides(Side::ALL, run)
        .into_iter()
        .filter(|_| settings.wants("startup"))
    {
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
    if !settings.wants("drain") {
        return Ok(());
    }
    for &size in &settings.sizes {
        for side in settings.sides(Side::ALL, run) {
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
            if side == Side::Ours {
                let rate = drain_observed(size).await?;
                progress(
                    &format!("drain {size}, with an observer, ours"),
                    rate,
                    "jobs/s",
                );
                results.push(Metric::ObservedDrainRate(size), rate);
            }
        }
        let rate = floor(size).await?;
        progress(&format!("drain {size}, floor"), rate, "jobs/s");
        results.push(Metric::FloorRate(size), rate);
    }
    Ok(())
}

async fn startup(side: Side) -> Result<f64> {
    let db = migrated_database().await?;
    let pool = db.pool(1).await;
    settle(&pool).await;
    pool.close().await;
    let ms = match side {
        Side::Ours => ours_run_once_ms(&db.url).await?,
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

/// Milliseconds for our worker on its defaults to start, run every job that
/// is ready, and shut down (closing its pool).
pub(crate) async fn ours_run_once_ms(url: &str) -> Result<f64> {
    ours_run_once_observed_ms(url, false).await
}

/// The same, with an event observer attached (counting the events) when
/// `observed`.
async fn ours_run_once_observed_ms(url: &str, observed: bool) -> Result<f64> {
    let start = Instant::now();
    let mut options = Worker::options()
        .database_url(url)
        .concurrency(CONCURRENCY)
        .handle_signals(false)
        .register::<BenchNoop>();
    if observed {
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        options = options.on_event(move |_| {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
    let worker = options.init().await?;
    worker.run_once().await?;
    worker.utils().pool().close().await;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

/// Whether a drain's table has statistics.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Statistics {
    /// `ANALYZE`d, as autovacuum would leave a table this size.
    Analyzed,
    /// None yet: a burst inserted a moment ago.
    None,
}

/// A database of its own holding `count` queued `bench_noop` jobs, and a
/// small pool on it.
pub(crate) async fn backlog(
    count: usize,
    statistics: Statistics,
) -> Result<(TestDatabase, PgPool)> {
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

/// Jobs per second for our drain of `count` jobs with an event observer.
async fn drain_observed(count: usize) -> Result<f64> {
    let (db, pool) = backlog(count, Statistics::Analyzed).await?;
    let ms = ours_run_once_observed_ms(&db.url, true).await?;
    drained(db, pool, count, ms, "the observed drain").await
}

/// Jobs per second draining `count` queued trivial jobs.
pub(crate) async fn drain(side: Side, count: usize, statistics: Statistics) -> Result<f64> {
    let (db, pool) = backlog(count, statistics).await?;
    let ms = match side {
        Side::Ours => ours_run_once_ms(&db.url).await?,
        node_side => {
            let env = [("BENCH_MODE", node_side.mode().to_owned())];
            reported_ms(&run_node(&db, NODE_DRAIN, &env).await?)?
        }
    };
    drained(db, pool, count, ms, side.mode()).await
}

/// Checks that a drain of `count` jobs taking `ms` left none, drops its
/// database, and returns its rate.
async fn drained(db: TestDatabase, pool: PgPool, count: usize, ms: f64, what: &str) -> Result<f64> {
    let left = jobs_left(&pool).await?;
    pool.close().await;
    drop_database(db).await?;
    if left != 0 {
        return Err(format!("{what} left {left} of {count} jobs").into());
    }
    Ok(count as f64 / (ms / 1e3))
}

/// Claims per statement in the floor: the most a claim of ours asks for
/// while draining a backlog at this concurrency.
pub(crate) const FLOOR_BATCH: i64 = 1000;

/// What PostgreSQL alone costs for a drain: the worker's own claim and
/// complete statements, batches of [`FLOOR_BATCH`], issued back to back on
/// one connection by a client that runs no task, in jobs per second (from
/// the first claim to the last completion, over an ANALYZEd table).
async fn floor(count: usize) -> Result<f64> {
    let (db, pool) = backlog(count, Statistics::Analyzed).await?;
    let probe = probe(&db).await?;
    let left = jobs_left(&pool).await?;
    pool.close().await;
    drop_database(db).await?;
    if left != 0 {
        return Err(format!("the floor left {left} of {count} jobs").into());
    }
    Ok(probe.rate())
}

/// A drain by the claim and complete statements alone.
pub(crate) struct Probe {
    pub(crate) jobs: usize,
    pub(crate) claim_ms: f64,
    pub(crate) total_ms: f64,
}

impl Probe {
    pub(crate) fn rate(&self) -> f64 {
        self.jobs as f64 / (self.total_ms / 1e3)
    }

    pub(crate) fn claim_us_per_job(&self) -> f64 {
        self.claim_ms * 1e3 / self.jobs as f64
    }
}

/// Claims and completes every runnable `bench_noop` job in `db` with the
/// engine's statements, timing the claims apart.
pub(crate) async fn probe(db: &TestDatabase) -> Result<Probe> {
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
    let mut probe = Probe {
        jobs: 0,
        claim_ms: 0.0,
        total_ms: 0.0,
    };
    let start = Instant::now();
    loop {
        let claim_started = Instant::now();
        let ids: Vec<Option<i64>> = sqlx::query_scalar(sqlx::AssertSqlSafe(claim.clone()))
            .bind("floor")
            .bind(&task_ids)
            .bind(FLOOR_BATCH)
            .fetch_all(&mut conn)
            .await?;
        probe.claim_ms += claim_started.elapsed().as_secs_f64() * 1e3;
        let ids: Vec<i64> = ids.into_iter().flatten().collect();
        if ids.is_empty() {
            break;
        }
        probe.jobs += ids.len();
        sqlx::query(sqlx::AssertSqlSafe(complete.clone()))
            .bind(&ids)
            .bind("floor")
            .execute(&mut conn)
            .await?;
    }
    probe.total_ms = start.elapsed().as_secs_f64() * 1e3;
    conn.close().await?;
    Ok(probe)
}

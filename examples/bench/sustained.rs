//! Sustained load: a producer adds jobs at a fixed rate, in batches of 100
//! from a connection of its own, while one worker process runs them. The
//! rate climbs a ladder; a step is *held* when the producer kept its rate
//! and the backlog did not grow by more than 2% of what the step offered
//! (beyond the last two batches, still on their way as it ends).
//! The highest step held is the sustainable rate. One more step at half of
//! our sustainable rate gives the latency users see at a comfortable load.

use std::time::{Duration, Instant};

use graphile_worker_dev::TestDatabase;
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::child::{self, Mode, epoch_us};
use crate::setup::{drop_database, migrated_database};
use crate::{Ladder, Metric, Result, Results, SCHEMA, Settings, Side, Stat, progress};

/// Offered rates, jobs per second.
pub(crate) const LADDER: [u32; 13] = [
    2_500, 5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000,
    120_000,
];

/// The step number of the warm-up, which is not reported.
const WARM_UP_STEP: usize = 999;

/// Jobs per insert.
const BATCH: usize = 100;

/// A step's outcome, as the producer and the table saw it.
struct Step {
    produced: u64,
    /// The share of the step the producer spent in its own statements:
    /// near 1, the producer, not the worker, sets the pace.
    busy: f64,
    /// Jobs left in the table at the end less those at the start.
    growth: i64,
    seconds: f64,
}

impl Step {
    fn held(&self, rate: u32) -> bool {
        let offered = f64::from(rate) * self.seconds;
        // The last batches sent are still on their way when the step ends.
        let in_flight = 2.0 * BATCH as f64;
        self.produced as f64 >= 0.97 * offered && (self.growth as f64) <= 0.02 * offered + in_flight
    }

    fn achieved(&self) -> f64 {
        (self.produced as f64 - self.growth.max(0) as f64) / self.seconds
    }
}

/// The ladder for ours and Node batched, then the half-load step.
pub(crate) async fn measure(settings: &Settings, run: usize, results: &mut Results) -> Result<()> {
    let seconds = if settings.quick { 2.0 } else { 4.0 };
    for side in settings.sides(Side::PAIR, run) {
        let sustainable = ladder(side, seconds, results).await?;
        progress(
            &format!("sustained load, {}", side.mode()),
            f64::from(sustainable),
            "jobs/s held",
        );
        results.push(Metric::SustainableRate(side), f64::from(sustainable));
        if side == Side::Ours && sustainable >= 200 {
            half_load(sustainable / 2 / 100 * 100, seconds, results).await?;
        }
    }
    Ok(())
}

/// Climbs the ladder until a step is not held; returns the highest held.
async fn ladder(side: Side, seconds: f64, results: &mut Results) -> Result<u32> {
    let db = migrated_database().await?;
    let mut worker = child::spawn(side, Mode::Sustained, &db.url).await?;
    let mut producer = connect(&db).await?;
    // Connections opened and statements prepared on both sides first.
    offer(&mut producer, WARM_UP_STEP, 2_000, 0.5).await?;
    drain_wait(&mut producer, Duration::from_secs(15)).await?;
    let mut sustainable = 0;
    let mut rates = Vec::new();
    for (index, &rate) in LADDER.iter().enumerate() {
        let step = offer(&mut producer, index, rate, seconds).await?;
        let held = step.held(rate);
        rates.push((index, rate, step.achieved(), held, step.busy));
        if held {
            sustainable = rate;
        }
        let drained = drain_wait(&mut producer, Duration::from_secs(15)).await?;
        if !held || !drained {
            break;
        }
    }
    worker.signal().await?;
    let report = worker.report().await?;
    producer.close().await?;
    drop_database(db).await?;

    let steps = report["steps"].as_array().ok_or("no steps reported")?;
    let jobs: u64 = steps.iter().filter_map(|s| s["count"].as_u64()).sum();
    if let Some(cpu_ms) = report["cpu_ms"].as_f64() {
        results.push(
            Metric::SustainedCpuUs(side),
            cpu_ms * 1e3 / jobs.max(1) as f64,
        );
    }
    let stats = |index: usize| {
        steps
            .iter()
            .find(|s| s["step"].as_u64() == Some(index as u64))
            .map(|s| {
                [(Stat::P50, "p50"), (Stat::P99, "p99"), (Stat::Max, "max")]
                    .map(|(stat, key)| (stat, s[key].as_f64().unwrap_or(f64::NAN)))
            })
    };
    for (index, rate, achieved, held, busy) in rates {
        results.push(Metric::Sustained(side, rate, Ladder::Achieved), achieved);
        results.push(
            Metric::Sustained(side, rate, Ladder::ProducerBusy),
            busy * 100.0,
        );
        results.push(
            Metric::Sustained(side, rate, Ladder::Flat),
            if held { 1.0 } else { 0.0 },
        );
        for (stat, value) in stats(index).into_iter().flatten() {
            results.push(Metric::Sustained(side, rate, Ladder::Latency(stat)), value);
        }
    }
    Ok(sustainable)
}

/// Our latency at `rate`, in a fresh database, over a step twice the usual
/// length: the steady state at a comfortable load.
async fn half_load(rate: u32, seconds: f64, results: &mut Results) -> Result<()> {
    let db = migrated_database().await?;
    let mut worker = child::spawn(Side::Ours, Mode::Sustained, &db.url).await?;
    let mut producer = connect(&db).await?;
    offer(&mut producer, WARM_UP_STEP, 2_000, 0.5).await?;
    drain_wait(&mut producer, Duration::from_secs(15)).await?;
    offer(&mut producer, 0, rate, seconds * 2.0).await?;
    drain_wait(&mut producer, Duration::from_secs(15)).await?;
    worker.signal().await?;
    let report = worker.report().await?;
    producer.close().await?;
    drop_database(db).await?;
    let step = report["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["step"].as_u64() == Some(0)))
        .ok_or("the half-load step reported nothing")?;
    for (stat, key) in [(Stat::P50, "p50"), (Stat::P99, "p99"), (Stat::Max, "max")] {
        let value = step[key].as_f64().ok_or("no latency reported")?;
        results.push(Metric::HalfLoadMs(Side::Ours, stat), value);
    }
    Ok(())
}

async fn connect(db: &TestDatabase) -> Result<PgConnection> {
    Ok(db
        .url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .connect()
        .await?)
}

/// Adds jobs at `rate` for `seconds`, `BATCH` per statement.
async fn offer(conn: &mut PgConnection, step: usize, rate: u32, seconds: f64) -> Result<Step> {
    let sql = format!(
        "select count(*) from {s}.add_jobs(array(select row('bench_timed', \
           json_build_object('t', $1::bigint, 's', $2::int), \
           null, null, null, null, null, null)::{s}.job_spec \
         from generate_series(1, $3::int)), false)",
        s = graphile_worker::quote_identifier(SCHEMA)
    );
    let batches = (f64::from(rate) * seconds / BATCH as f64).round() as u64;
    let every = Duration::from_secs_f64(BATCH as f64 / f64::from(rate));
    let before = jobs_left(conn).await?;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let deadline = Duration::from_secs_f64(seconds * 1.05);
    let mut produced = 0;
    let mut busy = Duration::ZERO;
    for _ in 0..batches {
        ticks.tick().await;
        if start.elapsed() > deadline {
            break;
        }
        let call = Instant::now();
        let added: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
            .bind(epoch_us())
            .bind(i32::try_from(step)?)
            .bind(i32::try_from(BATCH)?)
            .fetch_one(&mut *conn)
            .await?;
        busy += call.elapsed();
        produced += u64::try_from(added)?;
    }
    let elapsed = start.elapsed().as_secs_f64().max(seconds);
    let after = jobs_left(conn).await?;
    Ok(Step {
        produced,
        busy: busy.as_secs_f64() / elapsed,
        growth: after - before,
        seconds: elapsed,
    })
}

/// Waits until the table is empty; false if it is not by `limit`.
async fn drain_wait(conn: &mut PgConnection, limit: Duration) -> Result<bool> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if jobs_left(conn).await? == 0 {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(false)
}

async fn jobs_left(conn: &mut PgConnection) -> Result<i64> {
    let sql = format!(
        "select count(*) from {}._private_jobs",
        graphile_worker::quote_identifier(SCHEMA)
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(conn)
        .await?)
}

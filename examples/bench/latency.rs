//! Latency from `add_job` to the task's first line, one job at a time.

use std::time::{Duration, Instant};

use graphile_worker::{JobSpec, Worker, WorkerUtils};
use graphile_worker_dev::TestDatabase;
use tokio::sync::mpsc;

use crate::report::percentiles;
use crate::setup::{drop_database, migrated_database, run_node};
use crate::{BenchLatency, Metric, Result, Results, SCHEMA, Settings, Side, progress};

const WARMUP: usize = 100;
const SAMPLES: usize = 1000;
const NODE_LATENCY: &str = include_str!("../../bench/latency.js");

/// Latency of each side, one after another.
pub(crate) async fn measure(
    settings: &Settings,
    run: usize,
    started: &mut mpsc::UnboundedReceiver<(i64, Instant)>,
    results: &mut Results,
) -> Result<()> {
    for side in settings.sides(Side::ALL, run) {
        let samples = latency(side, started).await?;
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
    Ok(())
}

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

//! A worker process for the tests that need one to crash or be killed
//! (dead-worker recovery). Configured through the environment:
//!
//! - `DATABASE_URL` (required), `GW_SCHEMA` (default `graphile_worker`);
//! - `GW_HEARTBEAT_MS`, `GW_THRESHOLD_MS`, `GW_SWEEP_MS`, `GW_CONCURRENCY`;
//! - `GW_GRACE_MS`: the shutdown grace period (default 5 s).
//!
//! Tasks: `sleepy` `{ms_first, ms_retry}` records `start`/`done` rows in the
//! database's `runs` table and sleeps between them; `abort` records `start`
//! and aborts the whole process; `stubborn` records `start`, then
//! `cancel-seen` when shutdown begins, and carries on for an hour regardless.
//! Prints `ready <pool id>` once it runs.

use std::time::Duration;

use graphile_worker::{JobContext, Task, TaskError, Worker};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Sleepy {
    ms_first: u64,
    ms_retry: u64,
}

async fn record(ctx: &JobContext, event: &str) -> Result<(), TaskError> {
    sqlx::query("insert into runs (event, job_id, attempts, pid) values ($1, $2, $3, $4)")
        .bind(event)
        .bind(ctx.job_id())
        .bind(ctx.attempts())
        .bind(std::process::id() as i32)
        .execute(ctx.utils().pool())
        .await
        .map_err(|e| TaskError::new(e.to_string()))?;
    Ok(())
}

impl Task for Sleepy {
    const IDENTIFIER: &'static str = "sleepy";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        record(&ctx, "start").await?;
        let ms = if ctx.attempts() <= 1 {
            self.ms_first
        } else {
            self.ms_retry
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        record(&ctx, "done").await
    }
}

#[derive(Serialize, Deserialize)]
struct Abort {}

impl Task for Abort {
    const IDENTIFIER: &'static str = "abort";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        record(&ctx, "start").await?;
        std::process::abort()
    }
}

#[derive(Serialize, Deserialize)]
struct Stubborn {}

impl Task for Stubborn {
    const IDENTIFIER: &'static str = "stubborn";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        record(&ctx, "start").await?;
        ctx.cancelled().await;
        record(&ctx, "cancel-seen").await?;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        record(&ctx, "done").await
    }
}

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;
    let schema = std::env::var("GW_SCHEMA").unwrap_or_else(|_| "graphile_worker".into());
    let concurrency = std::env::var("GW_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let worker = Worker::options()
        .database_url(&url)
        .schema(&schema)
        .concurrency(concurrency)
        .poll_interval(Duration::from_millis(100))
        .heartbeat_interval(env_ms("GW_HEARTBEAT_MS", 10_000))
        .stale_worker_threshold(env_ms("GW_THRESHOLD_MS", 60_000))
        .recovery_sweep_interval(env_ms("GW_SWEEP_MS", 10_000))
        .shutdown_grace_period(env_ms("GW_GRACE_MS", 5_000))
        .register::<Sleepy>()
        .register::<Abort>()
        .register::<Stubborn>()
        .init()
        .await?;
    println!("ready {}", worker.pool_id());
    worker.run().await?;
    Ok(())
}

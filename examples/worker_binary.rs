//! A worker as a program of its own, stopping gracefully on SIGTERM (what a
//! container orchestrator or systemd sends) or SIGINT (Ctrl-C).
//!
//! ```sh
//! cargo run --example worker_binary
//! ```
//!
//! On the signal the worker stops claiming, lets the running job finish
//! within the grace period, writes its outcome, deregisters and returns
//! from `run()`. Jobs it had not started stay in the queue for the next
//! worker. A second signal, or a job still running when the grace period
//! ends, interrupts the job: it is put back, its attempt refunded.
//!
//! To show this without a terminal, the program sends itself SIGTERM while
//! the first job runs. No database needs to be configured (a throwaway
//! PostgreSQL, or `DATABASE_URL`).

use std::time::Duration;

use graphile_worker::{Worker, WorkerEvent, WorkerUtils, task};

/// Processes an upload: takes a second. (A task that should stop early
/// when the worker shuts down can wait on `ctx.cancelled()`; the job is then
/// retried.)
#[task]
async fn process_upload(upload_id: i64) {
    println!("  processing upload {upload_id}...");
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("  upload {upload_id} done");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In production: the URL from the environment (`.from_env()` reads
    // DATABASE_URL and the GRAPHILE_WORKER_* settings).
    let db = graphile_worker_dev::fresh_database().await;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let utils = WorkerUtils::new(pool.clone(), "graphile_worker");
    utils.migrate().await?;
    for upload_id in 1..=3 {
        ProcessUpload::enqueue(&utils, ProcessUpload { upload_id }).await?;
    }
    println!("Queued 3 uploads.");

    let pid = std::process::id();
    let signalled = std::sync::atomic::AtomicBool::new(false);
    let worker = Worker::from_registry()
        .database_url(&db.url)
        .concurrency(1)
        .shutdown_grace_period(Duration::from_secs(10))
        .on_event(move |event| {
            // Stands in for `kill -TERM <pid>` from outside.
            if matches!(event, WorkerEvent::JobStarted { .. })
                && !signalled.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .spawn();
            }
        })
        .init()
        .await?;
    println!("Worker {} running; SIGTERM stops it.", worker.pool_id());
    worker.run().await?;

    let waiting: i64 = sqlx::query_scalar(
        "select count(*) from graphile_worker.jobs where locked_at is null and attempts = 0",
    )
    .fetch_one(&pool)
    .await?;
    println!(
        "The worker stopped after finishing the running job; {waiting} uploads wait, untouched, \
         for the next start."
    );
    Ok(())
}

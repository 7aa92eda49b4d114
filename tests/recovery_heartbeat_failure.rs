//! A worker whose heartbeats cannot get through stops claiming new jobs
//! (others may already treat it as dead), and resumes when they do.

mod common;

use std::time::Duration;

use common::{count, eventually, migrated};
use graphile_worker::{JobContext, JobSpec, Task, TaskError, Worker};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Connection;

#[derive(Serialize, Deserialize)]
struct Mark {}

impl Task for Mark {
    const IDENTIFIER: &'static str = "mark";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        sqlx::query("insert into runs (job_id) values ($1)")
            .bind(ctx.job_id())
            .execute(ctx.utils().pool())
            .await
            .map_err(|e| TaskError::new(e.to_string()))?;
        Ok(())
    }
}

#[tokio::test]
async fn a_worker_that_cannot_heartbeat_stops_claiming_until_it_can() {
    let (db, pool, utils) = migrated().await;
    sqlx::raw_sql("create table runs (job_id bigint)")
        .execute(&pool)
        .await
        .unwrap();
    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .poll_interval(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_millis(100))
        .stale_worker_threshold(Duration::from_millis(600))
        .register::<Mark>()
        .init()
        .await
        .unwrap();
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(async move { worker.run().await });
    utils
        .add_raw_job("mark", json!({}), JobSpec::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the first job", || {
        let pool = pool.clone();
        async move { (count(&pool, "select count(*) from runs").await == 1).then_some(()) }
    })
    .await;

    // Block every heartbeat: hold an exclusive lock on the registry table.
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = blocker.begin().await.unwrap();
    sqlx::query("lock table graphile_worker._private_workers in access exclusive mode")
        .execute(&mut *tx)
        .await
        .unwrap();
    // Past the threshold, a new job is not claimed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    utils
        .add_raw_job("mark", json!({}), JobSpec::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        count(&pool, "select count(*) from runs").await,
        1,
        "a worker without heartbeats must not claim"
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from graphile_worker.jobs where locked_at is null"
        )
        .await,
        1
    );

    // Heartbeats get through again: the worker resumes.
    tx.rollback().await.unwrap();
    eventually(Duration::from_secs(10), "the worker to resume", || {
        let pool = pool.clone();
        async move { (count(&pool, "select count(*) from runs").await == 2).then_some(()) }
    })
    .await;
    stop.shutdown();
    running.await.unwrap().unwrap();
}

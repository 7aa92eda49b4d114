//! A worker whose heartbeats cannot get through stops claiming new jobs
//! (others may already treat it as dead), and resumes when they do.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Witness, count, eventually, migrated, server_now, wait_for_server_time};
use graphile_worker::{JobContext, JobSpec, Task, TaskError, Worker};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Connection;

const THRESHOLD: Duration = Duration::from_millis(600);

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
    sqlx::raw_sql(
        "create table runs (job_id bigint, at timestamptz not null default clock_timestamp())",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut witness = Witness::start(&pool).await;
    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .poll_interval(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_millis(100))
        .stale_worker_threshold(THRESHOLD)
        .register::<Mark>()
        .init()
        .await
        .unwrap();
    let pool_id = worker.pool_id().to_owned();
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
    // Its row then holds the worker's last heartbeat that got through.
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = blocker.begin().await.unwrap();
    sqlx::query("lock table graphile_worker._private_workers in access exclusive mode")
        .execute(&mut *tx)
        .await
        .unwrap();
    let last_beat: DateTime<Utc> = sqlx::query_scalar(
        "select last_heartbeat_at from graphile_worker._private_workers where id = $1",
    )
    .bind(&pool_id)
    .fetch_one(&mut *tx)
    .await
    .unwrap();

    // Others may count the worker as dead once that beat is older than the
    // stale threshold: by then it has stopped claiming. Add a job after.
    wait_for_server_time(&pool, last_beat + THRESHOLD).await;
    let job = utils
        .add_raw_job("mark", json!({}), JobSpec::default())
        .await
        .unwrap();
    // The worker was told: jobs announced after it reached the witness, in
    // this process, five times in a row.
    witness.confirm(5).await;
    assert_eq!(
        count(&pool, "select count(*) from runs").await,
        1,
        "a worker without heartbeats must not claim"
    );
    let (attempts, locked): (i16, bool) = sqlx::query_as(
        "select attempts, locked_at is not null from graphile_worker.jobs where id = $1",
    )
    .bind(job.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((attempts, locked), (0, false), "the job was not claimed");

    // Heartbeats get through again: the worker resumes, and runs the job
    // only now.
    let released_at = server_now(&pool).await;
    tx.rollback().await.unwrap();
    let ran_at: DateTime<Utc> = eventually(Duration::from_secs(10), "the worker to resume", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar("select at from runs where job_id = $1")
                .bind(job.id)
                .fetch_optional(&pool)
                .await
                .unwrap()
        }
    })
    .await;
    assert!(
        ran_at > released_at,
        "the job ran at {ran_at}, before heartbeats resumed at {released_at}"
    );
    witness.stop().await;
    stop.shutdown();
    running.await.unwrap().unwrap();
}

//! A worker whose heartbeats cannot get through stops claiming new jobs
//! (others may already treat it as dead), and resumes when they do.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{
    Witness, add_job, attempts_and_lock, count, migrated_with_runs, run_in_background, server_now,
    shut_down, wait_for_count, wait_for_run_of, worker,
};
use graphile_worker::JobSpec;
use serde_json::json;
use sqlx::Connection;

const THRESHOLD: Duration = Duration::from_millis(600);

#[tokio::test]
async fn a_worker_that_cannot_heartbeat_stops_claiming_until_it_can() {
    let (db, pool, utils) = migrated_with_runs().await;
    let mut witness = Witness::start(&pool).await;
    let w = worker(&pool)
        .poll_interval(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_millis(100))
        .stale_worker_threshold(THRESHOLD)
        .init()
        .await
        .unwrap();
    let pool_id = w.pool_id().to_owned();
    let (stop, running) = run_in_background(&w);
    add_job(
        &utils,
        "record",
        json!({"tag": "first"}),
        JobSpec::default(),
    )
    .await;
    wait_for_count(
        &pool,
        Duration::from_secs(10),
        "the first job",
        "select count(*) from runs",
        |n| n == 1,
    )
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
    // stale threshold: by then it has stopped claiming. A job added after
    // it, which the worker was told of, is not claimed.
    let job = witness
        .add_record_once_stale(last_beat, THRESHOLD, "second")
        .await;
    assert_eq!(
        count(&pool, "select count(*) from runs").await,
        1,
        "a worker without heartbeats must not claim"
    );
    assert_eq!(
        attempts_and_lock(&pool, job).await,
        (0, false),
        "the job was not claimed"
    );

    // Heartbeats get through again: the worker resumes, and runs the job
    // only now.
    let released_at = server_now(&pool).await;
    tx.rollback().await.unwrap();
    // The worker resumes.
    let ran_at = wait_for_run_of(&pool, job, Duration::from_secs(10)).await;
    assert!(
        ran_at > released_at,
        "the job ran at {ran_at}, before heartbeats resumed at {released_at}"
    );
    witness.stop().await;
    shut_down(stop, running).await;
}

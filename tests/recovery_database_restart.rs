//! PostgreSQL restarted under a running worker process: the job it was
//! running when the server went away is not lost, jobs added afterwards run,
//! and its heartbeats resume. (Its own test binary, so the restart disturbs
//! no other test.)

mod common;

use std::time::Duration;

use common::{
    add_job, count, eventually, migrated_with_runs, spawn_test_worker, wait_for_count,
    wait_for_events,
};
use graphile_worker::JobSpec;
use serde_json::json;

#[tokio::test]
async fn a_worker_process_survives_a_database_restart() {
    let (db, pool, utils) = migrated_with_runs().await;
    let (mut child, pool_id) = spawn_test_worker(
        &db,
        &[
            ("GW_HEARTBEAT_MS", "200".into()),
            ("GW_THRESHOLD_MS", "5000".into()),
            ("GW_SWEEP_MS", "300".into()),
        ],
    )
    .await;

    // A job that is running while the server restarts.
    let in_flight = add_job(
        &utils,
        "sleepy",
        json!({"ms_first": 1500, "ms_retry": 10}),
        JobSpec::default(),
    )
    .await;
    // The job starts.
    wait_for_events(&pool, "start", 1, Duration::from_secs(10)).await;

    if !tokio::task::spawn_blocking(graphile_worker_dev::restart_server)
        .await
        .unwrap()
    {
        eprintln!("skipped: DATABASE_URL points at a server this test cannot restart");
        child.kill().await.unwrap();
        return;
    }

    // The interrupted job is not lost: it finishes (the task's own write
    // may have failed during the restart, in which case it is retried).
    eventually(
        Duration::from_secs(30),
        "the in-flight job to be done",
        || {
            let pool = pool.clone();
            async move {
                let left = count(
                    &pool,
                    &format!("select count(*) from graphile_worker.jobs where id = {in_flight}"),
                )
                .await;
                let done = count(&pool, "select count(*) from runs where event = 'done'").await;
                (left == 0 && done >= 1).then_some(())
            }
        },
    )
    .await;

    // New work after the restart runs too.
    let later = add_job(
        &utils,
        "sleepy",
        json!({"ms_first": 10, "ms_retry": 10}),
        JobSpec::default(),
    )
    .await;
    wait_for_count(
        &pool,
        Duration::from_secs(20),
        "the job added after the restart",
        &format!("select count(*) from runs where event = 'done' and job_id = {later}"),
        |n| n == 1,
    )
    .await;

    // Heartbeats resumed.
    eventually(Duration::from_secs(10), "a fresh heartbeat", || {
        let utils = utils.clone();
        let pool_id = pool_id.clone();
        async move {
            let workers = utils.list_workers().await.ok()?;
            let me = workers.into_iter().find(|w| w.id == pool_id)?;
            (chrono::Utc::now() - me.last_heartbeat_at < chrono::Duration::seconds(2)).then_some(())
        }
    })
    .await;
    // Its completion is written a moment after the task returned.
    wait_for_count(
        &pool,
        Duration::from_secs(10),
        "no job left behind",
        "select count(*) from graphile_worker.jobs",
        |n| n == 0,
    )
    .await;
    child.kill().await.unwrap();
}

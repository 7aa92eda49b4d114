//! Which jobs a worker claims: only those due now, of its own tasks, with
//! attempts left, unlocked, and in a queue no other worker holds.

mod common;

use chrono::Utc;
use common::{add_job, in_queue, migrated_with_runs, set_job, tags, worker};
use graphile_worker::JobSpec;
use serde_json::json;

/// What a worker leaves alone: jobs not due yet, of tasks it does not run,
/// permanently failed, locked by another worker, or in a queue another
/// worker holds.
#[tokio::test]
async fn a_worker_claims_only_due_available_jobs_of_its_own_tasks() {
    let (_db, pool, utils) = migrated_with_runs().await;
    let tag = |t: &str| json!({ "tag": t });
    add_job(&utils, "record", tag("ready"), JobSpec::default()).await;
    let future = add_job(
        &utils,
        "record",
        tag("future"),
        JobSpec {
            run_at: Some(Utc::now() + chrono::Duration::hours(1)),
            ..Default::default()
        },
    )
    .await;
    let foreign = add_job(
        &utils,
        "someone_elses_task",
        tag("foreign"),
        JobSpec::default(),
    )
    .await;
    let dead = add_job(&utils, "record", tag("dead"), JobSpec::default()).await;
    set_job(&pool, dead, "attempts = max_attempts").await;
    let taken = add_job(&utils, "record", tag("taken"), JobSpec::default()).await;
    set_job(
        &pool,
        taken,
        "attempts = 1, locked_at = now(), locked_by = 'pool-other'",
    )
    .await;
    let queued = add_job(&utils, "record", tag("queued"), in_queue("busy-q")).await;
    sqlx::query(
        "update graphile_worker._private_job_queues set locked_at = now(), locked_by = 'pool-other'",
    )
    .execute(&pool)
    .await
    .unwrap();

    let w = worker(&pool).concurrency(4).init().await.unwrap();
    w.run_once().await.unwrap();
    assert_eq!(tags(&pool).await, vec!["ready"]);
    let left: Vec<(i64, i16)> =
        sqlx::query_as("select id, attempts from graphile_worker.jobs order by id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        left,
        vec![
            (future, 0),
            (foreign, 0),
            (dead, 25),
            (taken, 1),
            (queued, 0)
        ],
        "untouched"
    );

    // Due now, the future job runs; freed, the queue's job runs.
    utils
        .reschedule_jobs(
            &[future],
            graphile_worker::Reschedule {
                run_at: Some(Utc::now() - chrono::Duration::seconds(1)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    utils
        .force_unlock_workers(&["pool-other".to_owned()])
        .await
        .unwrap();
    w.run_once().await.unwrap();
    let mut ran = tags(&pool).await;
    ran.sort();
    assert_eq!(ran, vec!["future", "queued", "ready", "taken"]);
}

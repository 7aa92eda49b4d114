//! A worker process (`test_worker`) and shutdown signals: on SIGTERM it
//! lets its running job finish, then exits cleanly; a second signal
//! interrupts a long job at once and gives the attempt back.

mod common;

use std::time::Duration;

use common::{
    add_job, count, event_count, in_queue, locks_left, migrated_with_runs, spawn_test_worker,
    wait_for_events,
};
use graphile_worker_dev::TestDatabase;
use serde_json::json;
use sqlx::PgPool;
use tokio::process::Child;

/// Starts `test_worker` (two slots, the grace period given) and waits until
/// it runs.
async fn spawn_worker(db: &TestDatabase, grace_ms: u64) -> Child {
    let (child, pool_id) = spawn_test_worker(
        db,
        &[
            ("GW_GRACE_MS", grace_ms.to_string()),
            ("GW_CONCURRENCY", "2".into()),
        ],
    )
    .await;
    assert!(pool_id.starts_with("pool-"), "ready {pool_id}");
    child
}

fn signal(child: &Child, which: &str) {
    let pid = child.id().expect("still running");
    // The shell's built-in kill: no procps needed.
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill {which} {pid}")])
        .status()
        .unwrap();
    assert!(status.success());
}

fn sigterm(child: &Child) {
    signal(child, "-TERM");
}

async fn wait_for_event(pool: &PgPool, event: &str) {
    wait_for_events(pool, event, 1, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn sigterm_lets_a_running_job_finish_then_the_process_exits_cleanly() {
    let (db, pool, utils) = migrated_with_runs().await;
    add_job(
        &utils,
        "sleepy",
        json!({"ms_first": 1500, "ms_retry": 1500}),
        in_queue("serial"),
    )
    .await;
    let mut child = spawn_worker(&db, 30_000).await;
    wait_for_event(&pool, "start").await;
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the worker exits once its job is done")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        event_count(&pool, "done").await,
        1,
        "the job ran to its end"
    );
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        0,
        "and was completed"
    );
    // The worker has stopped: its outcomes are written.
    assert_eq!(locks_left(&pool).await, (0, 0));
    assert!(
        utils.list_workers().await.unwrap().is_empty(),
        "deregistered"
    );
}

#[tokio::test]
async fn a_second_signal_interrupts_a_long_job_at_once() {
    let (db, pool, utils) = migrated_with_runs().await;
    let job = add_job(&utils, "stubborn", json!({}), in_queue("serial")).await;
    // A grace period far longer than the test: only the second signal can
    // end the job.
    let mut child = spawn_worker(&db, 600_000).await;
    wait_for_event(&pool, "start").await;
    signal(&child, "-INT");
    wait_for_event(&pool, "cancel-seen").await;
    let first_done = std::time::Instant::now();
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the worker exits after the second signal")
        .unwrap();
    assert!(first_done.elapsed() < Duration::from_secs(15));
    // How it exits (code 0 today) is not the point; that it exits is.
    let _ = status;
    assert_eq!(event_count(&pool, "done").await, 0, "the job was cut short");
    let (attempts, last_error, run_at_ok): (i16, Option<String>, bool) = sqlx::query_as(
        "select attempts, last_error, run_at <= now() from graphile_worker.jobs where id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 0, "an interrupted attempt is given back");
    let last_error = last_error.unwrap_or_default();
    assert!(last_error.contains("shutting down"), "{last_error}");
    assert!(run_at_ok, "ready to run again at once");
    // The worker has stopped: its outcomes are written.
    assert_eq!(locks_left(&pool).await, (0, 0));
}

//! Warnings for silent mistakes: jobs waiting for a task no registered
//! worker runs, and a pool too small for the worker given it.

mod common;

use std::time::Duration;

use common::{Captured, add_job, eventually, migrated, run_sql, worker};
use graphile_worker::JobSpec;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded: the worker's services run on
    // this thread and log to this subscriber.
    (captured, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn jobs_for_a_task_no_worker_runs_are_named_in_a_warning() {
    let (_db, pool, utils) = migrated().await;
    let due_long_ago = JobSpec {
        run_at: Some(chrono::Utc::now() - chrono::Duration::minutes(3)),
        ..Default::default()
    };
    for _ in 0..3 {
        add_job(&utils, "send_emial", json!({}), due_long_ago.clone()).await;
    }
    // A task another registered worker runs is not reported, nor one added
    // a moment ago (a worker may be about to take it).
    add_job(&utils, "resize", json!({}), due_long_ago.clone()).await;
    add_job(&utils, "fresh_typo", json!({}), JobSpec::default()).await;
    run_sql(
        &pool,
        "insert into graphile_worker._private_workers (id, last_heartbeat_at, metadata) \
         values ('other-worker', now(), '{\"tasks\": [\"resize\"]}')",
    )
    .await;

    let (captured, _guard) = capture();
    let w = worker(&pool).init().await.unwrap();
    let handle = w.shutdown_handle();
    let run = w.run();
    tokio::pin!(run);
    let line = tokio::select! {
        line = eventually(Duration::from_secs(20), "the stranded-jobs warning", || {
            let log = captured.text();
            async move {
                log.lines()
                    .find(|l| l.contains("send_emial"))
                    .map(str::to_owned)
            }
        }) => line,
        result = &mut run => panic!("the worker stopped early: {result:?}"),
    };
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(
            "3 job(s) have waited over 60s for task `send_emial`, which no registered worker runs; check the identifier for a typo, or start a worker that has this task"
        ),
        "{line}"
    );
    handle.shutdown();
    run.await.unwrap();
    let log = captured.text();
    assert!(!log.contains("`resize`"), "{log}");
    assert!(!log.contains("fresh_typo"), "{log}");
}

#[tokio::test]
async fn a_pool_smaller_than_the_worker_needs_is_named_in_a_warning() {
    let (db, _pool, _utils) = migrated().await;
    let small = PgPoolOptions::new()
        .max_connections(3)
        .connect(&db.url)
        .await
        .unwrap();
    let (captured, _guard) = capture();
    let _w = worker(&small).concurrency(4).init().await.unwrap();
    let log = captured.text();
    assert!(
        log.contains(
            "the pool has 3 connections, but this worker may use 8 at once (concurrency 4 + 4 for listening, claiming, writing outcomes and keeping locks fresh); jobs and the engine will wait for connections: give the pool at least 8"
        ),
        "{log}"
    );
}

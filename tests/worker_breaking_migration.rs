//! A worker told of a breaking migration by another process stops
//! gracefully (its running job finishes, it deregisters, `run()` returns
//! the error); told of a non-breaking one, it carries on.

mod common;

use std::time::Duration;

use common::{
    add_job, count, has_tag, in_queue, locks_left, migrated_with_runs, start, wait_for_listener,
    wait_for_tag, worker,
};
use graphile_worker::{Error, JobSpec};
use serde_json::json;

#[tokio::test]
async fn a_breaking_migration_stops_the_worker_gracefully_and_a_non_breaking_one_does_not() {
    let (_db, pool, utils) = migrated_with_runs().await;
    add_job(&utils, "until_shutdown", json!({}), in_queue("q")).await;
    let (_, _, running) = start(
        worker(&pool)
            .concurrency(2)
            .poll_interval(Duration::from_secs(3600))
            .shutdown_grace_period(Duration::from_secs(60)),
    )
    .await;
    wait_for_tag(&pool, "running").await;
    wait_for_listener(&pool).await;

    // Not breaking: ignored. A job added after it still runs, so the worker
    // read it and carried on.
    sqlx::query(r#"select pg_notify('worker:migrate', '{"migrationNumber":21,"breaking":false}')"#)
        .execute(&pool)
        .await
        .unwrap();
    add_job(
        &utils,
        "record",
        json!({"tag": "after-non-breaking"}),
        JobSpec::default(),
    )
    .await;
    wait_for_tag(&pool, "after-non-breaking").await;
    assert!(!running.is_finished());
    assert!(!has_tag(&pool, "saw-shutdown").await);

    sqlx::query(r#"select pg_notify('worker:migrate', '{"migrationNumber":21,"breaking":true}')"#)
        .execute(&pool)
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("run() returns after a breaking migration")
        .unwrap();
    assert!(
        matches!(result, Err(Error::BreakingMigration(21))),
        "{result:?}"
    );
    let message = result.unwrap_err().to_string();
    assert!(message.contains("breaking migration 21"), "{message}");
    // Graceful: the running job was asked to stop and finished well.
    assert!(has_tag(&pool, "saw-shutdown").await);
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        0,
        "the job completed, it was not interrupted"
    );
    assert_eq!(locks_left(&pool).await, (0, 0));
    assert!(
        utils.list_workers().await.unwrap().is_empty(),
        "deregistered"
    );
}

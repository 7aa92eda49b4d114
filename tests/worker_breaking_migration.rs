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

    // As Node applies one: the ledger row and the notice in one
    // transaction, the notice naming no schema.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("insert into graphile_worker.migrations (id, breaking) values (21, true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(r#"select pg_notify('worker:migrate', '{"migrationNumber":21,"breaking":true}')"#)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
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
    // The worker has stopped: its outcomes are written.
    assert_eq!(locks_left(&pool).await, (0, 0));
    assert!(
        utils.list_workers().await.unwrap().is_empty(),
        "deregistered"
    );
}

/// `worker:migrate` is one channel for the whole database: another schema
/// installed beside ours, by us or by Node, or upgraded by Node with a
/// breaking migration we do not know, must not stop our workers.
#[tokio::test]
async fn notices_about_other_schemas_do_not_stop_the_worker() {
    let (db, pool, utils) = migrated_with_runs().await;
    let (_, handle, running) = start(worker(&pool).poll_interval(Duration::from_secs(3600))).await;
    wait_for_listener(&pool).await;

    // A schema installed beside ours by us (notices naming it), and one by
    // Node (notices naming none, breaking ones among them).
    graphile_worker::WorkerUtils::new(pool.clone(), "other_app")
        .migrate()
        .await
        .unwrap();
    common::node_install(&db, "node_app").await;
    // Node upgrading its schema with a breaking migration we do not know:
    // the ledger row is in its schema, not ours.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("insert into node_app.migrations (id, breaking) values (21, true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(r#"select pg_notify('worker:migrate', '{"migrationNumber":21,"breaking":true}')"#)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // One of ours naming another schema.
    sqlx::query(
        r#"select pg_notify('worker:migrate', '{"migrationNumber":22,"breaking":true,"schema":"other_app"}')"#,
    )
    .execute(&pool)
    .await
    .unwrap();

    // The worker polls once an hour, so this job runs only through its
    // notice, which the listener reads after the ones above: by then each
    // of them was weighed and let go.
    add_job(
        &utils,
        "record",
        json!({"tag": "after-other-schemas"}),
        JobSpec::default(),
    )
    .await;
    wait_for_tag(&pool, "after-other-schemas").await;
    assert!(!running.is_finished(), "the worker still runs");

    // A notice naming our schema still stops it.
    sqlx::query(
        r#"select pg_notify('worker:migrate', '{"migrationNumber":22,"breaking":true,"schema":"graphile_worker"}')"#,
    )
    .execute(&pool)
    .await
    .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("run() returns after a breaking migration of its schema")
        .unwrap();
    assert!(
        matches!(result, Err(Error::BreakingMigration(22))),
        "{result:?}"
    );
    drop(handle);
}

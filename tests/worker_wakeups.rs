//! What wakes a worker with polling out of the picture: jobs announced
//! while its only slot is busy start once the slot frees up, and one
//! notification wakes an idle worker to find every job there is.

mod common;

use std::time::Duration;

use common::{
    add_job, count, create_runs_and_gates, eventually, migrated, open_gate, run_in_background,
    tags, wait_for_listener, wait_for_tag, worker,
};
use graphile_worker::JobSpec;
use serde_json::json;

/// With one slot busy on a long job and polling out of the picture, jobs
/// announced meanwhile start as soon as the slot frees up.
#[tokio::test]
async fn jobs_added_while_the_only_slot_is_busy_start_when_it_frees_up() {
    for local_queue in [None, Some(0)] {
        let (_db, pool, utils) = migrated().await;
        create_runs_and_gates(&pool).await;
        add_job(&utils, "gated", json!({"gate": "long"}), JobSpec::default()).await;
        let mut options = worker(&pool)
            .concurrency(1)
            .poll_interval(Duration::from_secs(3600));
        if let Some(size) = local_queue {
            options = options.local_queue_size(size);
        }
        let w = options.init().await.unwrap();
        let handle = w.shutdown_handle();
        let running = tokio::spawn({
            let w = w.clone();
            async move { w.run().await }
        });
        wait_for_tag(&pool, "long:start").await;
        for n in 0..3 {
            add_job(
                &utils,
                "record",
                json!({"tag": format!("queued-{n}")}),
                JobSpec::default(),
            )
            .await;
        }
        open_gate(&pool, "long").await;
        eventually(
            Duration::from_secs(10),
            "the jobs added while busy",
            || async {
                let t = tags(&pool).await;
                (t.len() == 5).then_some(())
            },
        )
        .await;
        let t = tags(&pool).await;
        assert_eq!(&t[..2], ["long:start", "long:done"], "{local_queue:?}");
        handle.shutdown();
        running.await.unwrap().unwrap();
    }
}

/// An idle worker with many free slots starts work as soon as a
/// notification arrives, even one announcing fewer jobs than there are.
#[tokio::test]
async fn a_notification_wakes_an_idle_worker_with_many_free_slots() {
    let (_db, pool, utils) = migrated().await;
    create_runs_and_gates(&pool).await;
    let w = worker(&pool)
        .concurrency(8)
        .poll_interval(Duration::from_secs(3600))
        .init()
        .await
        .unwrap();
    let (handle, running) = run_in_background(&w);
    wait_for_listener(&pool).await;
    add_job(&utils, "record", json!({"tag": "one"}), JobSpec::default()).await;
    wait_for_tag(&pool, "one").await;

    // Four jobs written behind the worker's back, then one notification
    // that says "1": the worker finds all four.
    sqlx::query(
        "insert into graphile_worker._private_jobs (task_id, payload) \
         select t.id, json_build_object('tag', 'quiet-' || g) \
         from graphile_worker._private_tasks t, generate_series(1, 4) g \
         where t.identifier = 'record'",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(r#"select pg_notify('jobs:insert', '{"r":0.5,"count":1}')"#)
        .execute(&pool)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the four quiet jobs", || async {
        (tags(&pool).await.len() == 5).then_some(())
    })
    .await;
    handle.shutdown();
    running.await.unwrap().unwrap();
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        0
    );
}

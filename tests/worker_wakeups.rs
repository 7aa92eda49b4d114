//! What wakes a worker with polling out of the picture: jobs announced
//! while its only slot is busy start once the slot frees up, and one
//! notification wakes an idle worker to find every job there is.

mod common;

use std::time::Duration;

use common::{
    add_job, count, eventually, migrated_with_runs, open_gate, shut_down, start, tags,
    wait_for_listener, wait_for_tag, worker,
};
use graphile_worker::JobSpec;
use serde_json::json;
use sqlx::PgPool;

/// Waits (at most 10 s) until `runs` holds `n` tags.
async fn wait_for_tag_count(pool: &PgPool, n: usize, what: &str) {
    eventually(Duration::from_secs(10), what, || async {
        (tags(pool).await.len() == n).then_some(())
    })
    .await;
}

/// With one slot busy on a long job and polling out of the picture, jobs
/// announced meanwhile start as soon as the slot frees up.
#[tokio::test]
async fn jobs_added_while_the_only_slot_is_busy_start_when_it_frees_up() {
    for local_queue in [None, Some(0)] {
        let (_db, pool, utils) = migrated_with_runs().await;
        add_job(&utils, "gated", json!({"gate": "long"}), JobSpec::default()).await;
        let mut options = worker(&pool)
            .concurrency(1)
            .poll_interval(Duration::from_secs(3600));
        if let Some(size) = local_queue {
            options = options.local_queue_size(size);
        }
        let (_, handle, running) = start(options).await;
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
        wait_for_tag_count(&pool, 5, "the jobs added while busy").await;
        let t = tags(&pool).await;
        assert_eq!(&t[..2], ["long:start", "long:done"], "{local_queue:?}");
        shut_down(handle, running).await;
    }
}

/// An idle worker with many free slots starts work as soon as a
/// notification arrives, even one announcing fewer jobs than there are.
#[tokio::test]
async fn a_notification_wakes_an_idle_worker_with_many_free_slots() {
    let (_db, pool, utils) = migrated_with_runs().await;
    let (_, handle, running) = start(
        worker(&pool)
            .concurrency(8)
            .poll_interval(Duration::from_secs(3600)),
    )
    .await;
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
    wait_for_tag_count(&pool, 5, "the four quiet jobs").await;
    shut_down(handle, running).await;
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        0
    );
}

//! The before-add hook stamps every way of adding a job: single, raw
//! batches, typed, typed batches, and follow-ups added by tasks.

mod common;

use graphile_worker::{JobContext, JobSpec, NewJob, TaskError, Worker, WorkerUtils, task};
use serde_json::json;

#[task]
async fn hook_leaf(n: i64) {
    let _ = n;
}

#[task]
async fn hook_parent(ctx: JobContext) -> Result<(), TaskError> {
    HookLeaf::enqueue(ctx.utils(), HookLeaf { n: 99 })
        .await
        .map_err(|e| TaskError::new(e.to_string()))?;
    Ok(())
}

fn stamp(task: &str, spec: &mut JobSpec) {
    spec.flags
        .get_or_insert_with(Vec::new)
        .push(format!("via:{task}"));
    spec.priority = Some(7);
}

async fn stamped(utils: &WorkerUtils) -> Vec<(String, i16, Option<serde_json::Value>)> {
    sqlx::query_as(
        "select task_identifier, priority, flags::json from graphile_worker.jobs order by id",
    )
    .fetch_all(utils.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_of_adding_goes_through_the_hook() {
    let (_db, pool, plain) = common::migrated().await;
    let utils = WorkerUtils::new(pool.clone(), "graphile_worker").before_add(stamp);
    utils
        .add_raw_job("raw_one", json!({}), JobSpec::default())
        .await
        .unwrap();
    utils
        .add_raw_jobs(&[NewJob::new("raw_batch", json!({}))])
        .await
        .unwrap();
    utils
        .add_raw_jobs_count_in(utils.pool(), &[NewJob::new("raw_count", json!({}))])
        .await
        .unwrap();
    HookLeaf::enqueue(&utils, HookLeaf { n: 1 }).await.unwrap();
    HookLeaf::enqueue_many(&utils, vec![HookLeaf { n: 2 }, HookLeaf { n: 3 }])
        .await
        .unwrap();
    utils.add_jobs(vec![HookLeaf { n: 4 }]).await.unwrap();
    // Utilities without the hook add jobs as they are.
    plain
        .add_raw_job("unstamped", json!({}), JobSpec::default())
        .await
        .unwrap();

    let rows = stamped(&plain).await;
    assert_eq!(rows.len(), 8, "{rows:?}");
    for (task, priority, flags) in &rows[..7] {
        assert_eq!(*priority, 7, "{task}");
        assert_eq!(
            flags,
            &Some(json!({ format!("via:{task}"): true })),
            "{task}"
        );
    }
    assert_eq!(rows[7], ("unstamped".to_owned(), 0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_tasks_add_follow_ups_through_the_hook() {
    let (_db, pool, utils) = common::migrated().await;
    HookParent::enqueue(&utils, HookParent {}).await.unwrap();
    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<HookParent>()
        .before_add(stamp)
        .init()
        .await
        .unwrap();
    worker.run_once().await.unwrap();
    let rows = stamped(&utils).await;
    assert_eq!(
        rows,
        vec![(
            "hook_leaf".to_owned(),
            7,
            Some(json!({"via:hook_leaf": true}))
        )]
    );
}

//! Per-task concurrency: a worker never runs more than a task's limit of
//! its jobs at once, keeps running other tasks' jobs meanwhile, and leaves
//! the limited task's other jobs in the table (unlocked, for any worker)
//! rather than holding them in its local queue.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::Record;
use common::{
    add_job, count, eventually, locks_left, migrated_with_runs, note, open_gate, shut_down, start,
    wait_for_count,
};
use graphile_worker::{JobContext, JobSpec, TaskError, TaskPolicy, Worker};
use serde_json::json;
use sqlx::PgPool;

static RUNNING: AtomicUsize = AtomicUsize::new(0);
static MOST: AtomicUsize = AtomicUsize::new(0);

/// Waits for its gate, counting how many run at once.
#[graphile_worker::task(concurrency = 2)]
async fn render(ctx: JobContext, gate: String) -> Result<(), TaskError> {
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    MOST.fetch_max(now, Ordering::SeqCst);
    note(&ctx, "render:start").await?;
    loop {
        let open: bool = sqlx::query_scalar("select exists (select 1 from gates where name = $1)")
            .bind(&gate)
            .fetch_one(ctx.utils().pool())
            .await
            .map_err(|e| TaskError::new(e.to_string()))?;
        if open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    note(&ctx, "render:done").await
}

async fn locked_renders(pool: &PgPool) -> (i64, i64) {
    (
        count(
            pool,
            "select count(*) from graphile_worker.jobs where task_identifier = 'render' and locked_at is not null",
        )
        .await,
        count(
            pool,
            "select count(*) from graphile_worker.jobs where task_identifier = 'render' and locked_at is null",
        )
        .await,
    )
}

#[tokio::test]
async fn a_limited_task_runs_at_most_its_limit_while_other_tasks_go_on() {
    let (_db, pool, utils) = migrated_with_runs().await;
    for _ in 0..6 {
        add_job(&utils, "render", json!({ "gate": "g" }), JobSpec::default()).await;
    }
    let options = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .concurrency(8)
        .register::<Render>()
        .register::<Record>();
    let (_w, handle, running) = start(options).await;
    wait_for_count(
        &pool,
        Duration::from_secs(15),
        "two renders to start",
        "select count(*) from runs where tag = 'render:start'",
        |n| n >= 2,
    )
    .await;
    // Other tasks' jobs, added now, run while the renders hold their slots.
    for n in 0..4 {
        add_job(
            &utils,
            "record",
            json!({ "tag": format!("other-{n}") }),
            JobSpec::default(),
        )
        .await;
    }
    wait_for_count(
        &pool,
        Duration::from_secs(15),
        "the other jobs to run",
        "select count(*) from runs where tag like 'other-%'",
        |n| n == 4,
    )
    .await;
    // Two renders run; the other four wait in the table, unlocked.
    assert_eq!(locked_renders(&pool).await, (2, 4));
    assert_eq!(
        count(
            &pool,
            "select count(*) from runs where tag = 'render:start'"
        )
        .await,
        2
    );

    open_gate(&pool, "g").await;
    wait_for_count(
        &pool,
        Duration::from_secs(15),
        "every render to finish",
        "select count(*) from runs where tag = 'render:done'",
        |n| n == 6,
    )
    .await;
    assert_eq!(MOST.load(Ordering::SeqCst), 2);
    shut_down(handle, running).await;
    // The worker has stopped: its outcomes are written.
    assert_eq!(locks_left(&pool).await, (0, 0));
}

#[tokio::test]
async fn a_task_policy_on_the_worker_overrides_the_attribute() {
    let (_db, pool, utils) = migrated_with_runs().await;
    for _ in 0..3 {
        add_job(&utils, "gated", json!({ "gate": "h" }), JobSpec::default()).await;
    }
    let options = common::worker(&pool)
        .concurrency(4)
        .task_policy("gated", TaskPolicy::new().concurrency(1));
    let (_w, handle, running) = start(options).await;
    wait_for_count(
        &pool,
        Duration::from_secs(15),
        "one gated job to start",
        "select count(*) from runs where tag = 'h:start'",
        |n| n >= 1,
    )
    .await;
    // A record job added after it runs: the worker claimed since, and
    // still left the other gated jobs alone.
    add_job(
        &utils,
        "record",
        json!({ "tag": "after" }),
        JobSpec::default(),
    )
    .await;
    common::wait_for_tag(&pool, "after").await;
    let locked: i64 = count(
        &pool,
        "select count(*) from graphile_worker.jobs where task_identifier = 'gated' and locked_at is not null",
    )
    .await;
    assert_eq!(locked, 1);
    open_gate(&pool, "h").await;
    eventually(
        Duration::from_secs(15),
        "the gated jobs to finish",
        || async {
            (count(&pool, "select count(*) from runs where tag = 'h:done'").await == 3)
                .then_some(())
        },
    )
    .await;
    // They ran one after another: each started after the previous ended.
    let overlaps = count(
        &pool,
        "select count(*) from runs s join runs d on d.job_id <> s.job_id \
         where s.tag = 'h:start' and d.tag = 'h:done' \
           and s.at < d.at and s.at > (select min(at) from runs x where x.job_id = d.job_id)",
    )
    .await;
    assert_eq!(overlaps, 0);
    shut_down(handle, running).await;
}

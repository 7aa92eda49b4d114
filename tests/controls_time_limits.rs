//! Time limits: a task past its limit is told through its context
//! (`CancelReason::TimedOut`), gets the cancel grace period, and is then
//! dropped; the job fails with `timed out after …` whatever the task
//! returned, and is retried by its retry policy. The limit comes from
//! `#[task(timeout = …)]`, `WorkerOptions::task_policy`, or the worker's
//! `job_timeout`.

mod common;

use std::time::Duration;

use common::{add_job, eventually, locks_left, migrated_with_runs, note, shut_down, start, tags};
use graphile_worker::{JobContext, JobSpec, TaskError, TaskPolicy, Worker, WorkerOptions};
use serde_json::json;
use sqlx::PgPool;

/// Stops when told, and returns `Ok` anyway.
#[graphile_worker::task(timeout = "300ms")]
async fn polite(ctx: JobContext) -> Result<(), TaskError> {
    note(&ctx, "started").await?;
    ctx.cancelled().await;
    let reason = ctx
        .cancel_reason()
        .map(|r| r.to_string())
        .unwrap_or_default();
    note(&ctx, &format!("told: {reason}")).await?;
    Ok(())
}

/// Ignores the signal.
#[graphile_worker::task(timeout = "250ms")]
async fn stubborn(ctx: JobContext) -> Result<(), TaskError> {
    note(&ctx, "started").await?;
    tokio::time::sleep(Duration::from_secs(30)).await;
    note(&ctx, "finished").await
}

/// Times out on every attempt; retried after 1 s by its own policy.
#[graphile_worker::task(timeout = "200ms", backoff(constant, delay = "1s"), max_attempts = 2)]
async fn always_late(ctx: JobContext) -> Result<(), TaskError> {
    note(&ctx, "started").await?;
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok(())
}

fn worker(pool: &PgPool) -> WorkerOptions {
    Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .cancel_grace_period(Duration::from_millis(200))
        .register::<Polite>()
        .register::<Stubborn>()
        .register::<AlwaysLate>()
        .register_fn("sleepy", |_ctx| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<(), TaskError>(())
        })
        .register_fn("drowsy", |_ctx| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<(), TaskError>(())
        })
}

/// How much later than the task's start its first `runs` note may be
/// written (the insert's own round trip, slow on a loaded machine): the
/// time limit's clock starts before the note, so `ran_for` can fall short
/// of the limit by that much.
const NOTE_LATENCY: f64 = 0.1;

/// What a failed job's row says: last_error, attempts, seconds from its
/// first `runs` note to the failure, and seconds from the failure to its
/// next run_at.
#[derive(Debug)]
struct Failed {
    last_error: String,
    attempts: i16,
    ran_for: f64,
    retry_in: f64,
}

async fn wait_for_failure(pool: &PgPool, id: i64) -> Failed {
    eventually(Duration::from_secs(15), "the job to fail", || async {
        let row: Option<(Option<String>, i16, Option<f64>, f64)> = sqlx::query_as(
            "select j.last_error, j.attempts, \
               extract(epoch from j.updated_at - (select min(at) from runs where job_id = j.id))::float8, \
               extract(epoch from j.run_at - j.updated_at)::float8 \
             from graphile_worker._private_jobs j where j.id = $1 and j.locked_at is null",
        )
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap();
        match row {
            Some((Some(last_error), attempts, ran_for, retry_in)) => Some(Failed {
                last_error,
                attempts,
                ran_for: ran_for.unwrap_or(f64::NAN),
                retry_in,
            }),
            _ => None,
        }
    })
    .await
}

#[tokio::test]
async fn a_task_told_of_its_time_limit_stops_and_the_job_fails_for_a_retry() {
    let (_db, pool, utils) = migrated_with_runs().await;
    let (_w, handle, running) = start(worker(&pool)).await;
    let id = add_job(&utils, "polite", json!({}), JobSpec::default()).await;

    let failed = wait_for_failure(&pool, id).await;
    assert_eq!(failed.last_error, "timed out after 300ms");
    assert_eq!(failed.attempts, 1);
    assert!(
        (0.3 - NOTE_LATENCY..1.5).contains(&failed.ran_for),
        "failed {:.3}s after it started",
        failed.ran_for
    );
    // Retried with Node's backoff after the first attempt: e¹ seconds.
    assert!(
        (failed.retry_in - std::f64::consts::E).abs() < 0.01,
        "{failed:?}"
    );
    // It saw why, and its Ok after the limit did not complete the job.
    assert_eq!(
        tags(&pool).await,
        ["started", "told: timed out after 300ms"]
    );
    shut_down(handle, running).await;
    // The worker has stopped: its outcomes are written.
    assert_eq!(locks_left(&pool).await, (0, 0));
}

#[tokio::test]
async fn a_task_that_ignores_its_time_limit_is_dropped_after_the_grace_period() {
    let (_db, pool, utils) = migrated_with_runs().await;
    let (_w, handle, running) = start(worker(&pool)).await;
    let id = add_job(&utils, "stubborn", json!({}), JobSpec::default()).await;

    let failed = wait_for_failure(&pool, id).await;
    assert_eq!(failed.last_error, "timed out after 250ms");
    // 250 ms limit plus 200 ms grace.
    assert!(
        (0.45 - NOTE_LATENCY..2.0).contains(&failed.ran_for),
        "failed {:.3}s after it started",
        failed.ran_for
    );
    // The failure is written after the task was dropped: it never goes on.
    assert_eq!(tags(&pool).await, ["started"]);
    shut_down(handle, running).await;
    assert_eq!(tags(&pool).await, ["started"]);
}

#[tokio::test]
async fn a_timed_out_job_is_retried_by_its_retry_policy_until_its_attempts_run_out() {
    let (_db, pool, utils) = migrated_with_runs().await;
    let (_w, handle, running) = start(worker(&pool)).await;
    // The typed enqueue carries the task's max_attempts.
    let id = AlwaysLate::enqueue(&utils, AlwaysLate {}).await.unwrap().id;

    let first = wait_for_failure(&pool, id).await;
    assert_eq!(first.last_error, "timed out after 200ms");
    assert_eq!(first.attempts, 1);
    assert!((first.retry_in - 1.0).abs() < 0.01, "{first:?}");

    // The second attempt runs a second later, times out, and is the last.
    eventually(Duration::from_secs(15), "the second attempt to fail", || async {
        let (attempts, locked): (i16, bool) = sqlx::query_as(
            "select attempts, locked_at is not null from graphile_worker._private_jobs where id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        (attempts == 2 && !locked).then_some(())
    })
    .await;
    let row: (String, bool) = sqlx::query_as(
        "select last_error, is_available from graphile_worker._private_jobs where id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row, ("timed out after 200ms".to_owned(), false));
    assert_eq!(tags(&pool).await, ["started", "started"]);
    shut_down(handle, running).await;
}

#[tokio::test]
async fn the_worker_default_limit_applies_unless_the_task_policy_sets_one() {
    let (_db, pool, utils) = migrated_with_runs().await;
    let options = worker(&pool)
        .job_timeout(Duration::from_millis(300))
        .task_policy(
            "drowsy",
            TaskPolicy::new().timeout(Duration::from_millis(150)),
        );
    let (_w, handle, running) = start(options).await;
    let sleepy = add_job(&utils, "sleepy", json!({}), JobSpec::default()).await;
    let drowsy = add_job(&utils, "drowsy", json!({}), JobSpec::default()).await;

    let error = |id: i64| {
        let pool = pool.clone();
        async move {
            eventually(Duration::from_secs(15), "the job to time out", || async {
                sqlx::query_scalar::<_, Option<String>>(
                    "select last_error from graphile_worker._private_jobs where id = $1 and locked_at is null",
                )
                .bind(id)
                .fetch_optional(&pool)
                .await
                .unwrap()
                .flatten()
            })
            .await
        }
    };
    assert_eq!(error(sleepy).await, "timed out after 300ms");
    assert_eq!(error(drowsy).await, "timed out after 150ms");
    shut_down(handle, running).await;
}

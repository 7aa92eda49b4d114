//! Retry policies: the delay before the next attempt comes from the task's
//! backoff (constant, linear, exponential with a cap, jitter), from
//! `TaskError::retry_after` when the task says so, and otherwise stays
//! Node's `exp(min(attempts, 10))` seconds; a job failing its last attempt
//! keeps its run_at.

mod common;

use std::time::Duration;

use common::{add_job, eventually, migrated, set_job, shut_down, start};
use graphile_worker::{JobSpec, RetryPolicy, TaskError, TaskPolicy, Worker, WorkerOptions};
use serde_json::json;
use sqlx::PgPool;

#[graphile_worker::task(backoff(constant, delay = "10s"))]
async fn constant() -> Result<(), TaskError> {
    Err(TaskError::new("constant"))
}

#[graphile_worker::task(backoff(linear, base = "2s"))]
async fn linear() -> Result<(), TaskError> {
    Err(TaskError::new("linear"))
}

#[graphile_worker::task(backoff(exponential, base = "1s", factor = 3, cap = "5s"))]
async fn exponential() -> Result<(), TaskError> {
    Err(TaskError::new("exponential"))
}

#[graphile_worker::task(backoff(constant, delay = "10s", jitter = 0.5))]
async fn jittered() -> Result<(), TaskError> {
    Err(TaskError::new("jittered"))
}

/// A rate-limited API said when to come back; that wins over the policy.
#[graphile_worker::task(backoff(constant, delay = "10s"))]
async fn rate_limited() -> Result<(), TaskError> {
    Err(TaskError::retry_after(
        "429 Too Many Requests",
        Duration::from_secs(60),
    ))
}

fn worker(pool: &PgPool) -> WorkerOptions {
    Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .concurrency(4)
        .register::<Constant>()
        .register::<Linear>()
        .register::<Exponential>()
        .register::<Jittered>()
        .register::<RateLimited>()
        .register_fn("plain", |_ctx| async {
            Err::<(), _>(TaskError::new("plain"))
        })
        .register_fn("configured", |_ctx| async {
            Err::<(), _>(TaskError::new("configured"))
        })
        .task_policy(
            "configured",
            TaskPolicy::new().retry(RetryPolicy::constant(Duration::from_secs(42))),
        )
}

/// Adds a job of `task` that has already failed `attempts` times.
async fn job(
    utils: &graphile_worker::WorkerUtils,
    pool: &PgPool,
    task: &str,
    attempts: i16,
) -> i64 {
    let id = add_job(utils, task, json!({}), JobSpec::default()).await;
    if attempts > 0 {
        set_job(pool, id, &format!("attempts = {attempts}")).await;
    }
    id
}

/// Seconds from the failure to the next run_at, once the job has failed.
async fn retry_in(pool: &PgPool, id: i64) -> f64 {
    eventually(Duration::from_secs(15), "the job to fail", || async {
        sqlx::query_scalar::<_, f64>(
            "select extract(epoch from run_at - updated_at)::float8 \
             from graphile_worker._private_jobs \
             where id = $1 and locked_at is null and last_error is not null",
        )
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
    })
    .await
}

#[tokio::test]
async fn each_policy_sets_the_delay_before_the_next_attempt() {
    let (_db, pool, utils) = migrated().await;
    // (task, earlier failures, expected delay in seconds)
    let cases = [
        ("constant", 0, 10.0),
        ("constant", 5, 10.0),
        ("linear", 0, 2.0),
        ("linear", 2, 6.0),
        ("exponential", 0, 1.0),
        ("exponential", 1, 3.0),
        ("exponential", 3, 5.0),
        ("rate_limited", 0, 60.0),
        ("configured", 0, 42.0),
        // No policy: Node's e^attempts seconds.
        ("plain", 0, 1f64.exp()),
        ("plain", 1, 2f64.exp()),
    ];
    let mut ids = Vec::new();
    for (task, attempts, expected) in cases {
        ids.push((
            job(&utils, &pool, task, attempts).await,
            task,
            attempts,
            expected,
        ));
    }
    let (_w, handle, running) = start(worker(&pool)).await;
    for (id, task, attempts, expected) in ids {
        let got = retry_in(&pool, id).await;
        assert!(
            (got - expected).abs() < 0.01,
            "{task} after {} failures: retried in {got:.3}s, expected {expected}s",
            attempts + 1
        );
    }
    shut_down(handle, running).await;
}

#[tokio::test]
async fn jitter_spreads_delays_within_its_band() {
    let (_db, pool, utils) = migrated().await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(job(&utils, &pool, "jittered", 0).await);
    }
    let (_w, handle, running) = start(worker(&pool)).await;
    let mut delays = Vec::new();
    for id in ids {
        delays.push(retry_in(&pool, id).await);
    }
    shut_down(handle, running).await;
    assert!(
        delays.iter().all(|d| (5.0..=15.0).contains(d)),
        "{delays:?}"
    );
    let spread = delays.iter().cloned().fold(f64::MIN, f64::max)
        - delays.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 0.5, "20 jittered delays barely differ: {delays:?}");
}

#[tokio::test]
async fn a_last_attempt_keeps_its_run_at_whatever_the_policy() {
    let (_db, pool, utils) = migrated().await;
    let spec = JobSpec {
        max_attempts: Some(1),
        ..Default::default()
    };
    let id = add_job(&utils, "rate_limited", json!({}), spec).await;
    let run_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select run_at from graphile_worker.jobs where id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let (_w, handle, running) = start(worker(&pool)).await;
    eventually(Duration::from_secs(15), "the job to fail", || async {
        let row: Option<(chrono::DateTime<chrono::Utc>, String)> = sqlx::query_as(
            "select run_at, last_error from graphile_worker.jobs \
             where id = $1 and locked_at is null and last_error is not null",
        )
        .bind(id)
        .fetch_optional(&pool)
        .await
        .unwrap();
        row.map(|(at, error)| {
            assert_eq!(at, run_at);
            assert_eq!(error, "429 Too Many Requests");
        })
    })
    .await;
    shut_down(handle, running).await;
}

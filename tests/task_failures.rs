//! Failures that should not retry, and what a failure records: a task's
//! permanent error ends the job now, a payload that does not decode fails
//! permanently unless the worker is told to retry it, a job failed for good
//! keeps its run_at, and a panic's message names where it happened.

mod common;

use common::{add_job, migrated, run_sql};
use graphile_worker::{JobContext, JobSpec, Task, TaskError, TaskResultExt, Worker, WorkerOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;

/// Fails as its payload says.
#[derive(Serialize, Deserialize)]
struct Fail {
    how: String,
}

impl Task for Fail {
    const IDENTIFIER: &'static str = "fail";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        match self.how.as_str() {
            "permanent" => Err(TaskError::permanent("user 42 was deleted")),
            "parse" => {
                let n: u32 = "forty".parse().permanent()?;
                let _ = n;
                Ok(())
            }
            "panic" => panic!("the decoder gave up on {}", self.how),
            _ => Err(TaskError::new("try again later")),
        }
    }
}

/// A `#[task]` returning a boxed error keeps a boxed `TaskError`'s
/// permanence.
#[graphile_worker::task]
async fn boxed_failure() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Err(Box::new(TaskError::permanent("boxed and permanent")))
}

/// Wants a number, to fail decoding.
#[derive(Serialize, Deserialize)]
struct Count {
    n: u32,
}

impl Task for Count {
    const IDENTIFIER: &'static str = "count";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Ok(())
    }
}

fn worker(pool: &PgPool) -> WorkerOptions {
    Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<Fail>()
        .register::<Count>()
        .register::<BoxedFailure>()
}

#[derive(Debug)]
struct Row {
    attempts: i16,
    max_attempts: i16,
    last_error: Option<String>,
    ran_at_was_kept: bool,
}

/// The job after one run: its attempts, last_error, and whether run_at is
/// still the one it had before (`before`).
async fn row(pool: &PgPool, id: i64, before: chrono::DateTime<chrono::Utc>) -> Row {
    let (attempts, max_attempts, last_error, ran_at_was_kept) = sqlx::query_as(
        "select attempts, max_attempts, last_error, run_at = $2 \
         from graphile_worker.jobs where id = $1",
    )
    .bind(id)
    .bind(before)
    .fetch_one(pool)
    .await
    .unwrap();
    Row {
        attempts,
        max_attempts,
        last_error,
        ran_at_was_kept,
    }
}

async fn run_at(pool: &PgPool, id: i64) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar("select run_at from graphile_worker.jobs where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Runs what is due on a worker built from `options`, then returns.
async fn run_once(options: WorkerOptions) {
    options.init().await.unwrap().run_once().await.unwrap();
}

fn five_attempts() -> JobSpec {
    JobSpec {
        max_attempts: Some(5),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_permanent_error_ends_the_job_at_once_and_keeps_its_run_at() {
    let (_db, pool, utils) = migrated().await;
    let mut ids = Vec::new();
    for how in ["permanent", "parse"] {
        ids.push(add_job(&utils, "fail", json!({ "how": how }), five_attempts()).await);
    }
    ids.push(add_job(&utils, "boxed_failure", json!({}), five_attempts()).await);
    ids.push(add_job(&utils, "fail", json!({"how": "transient"}), five_attempts()).await);
    let before = runs_at(&pool, &ids).await;
    run_once(worker(&pool)).await;

    let permanent = row(&pool, ids[0], before[0]).await;
    assert_eq!(
        (permanent.attempts, permanent.max_attempts),
        (5, 5),
        "{permanent:?}"
    );
    assert_eq!(permanent.last_error.as_deref(), Some("user 42 was deleted"));
    assert!(permanent.ran_at_was_kept, "{permanent:?}");

    let parse = row(&pool, ids[1], before[1]).await;
    assert_eq!(parse.attempts, 5);
    assert_eq!(
        parse.last_error.as_deref(),
        Some("invalid digit found in string")
    );

    let boxed = row(&pool, ids[2], before[2]).await;
    assert_eq!(boxed.attempts, 5);
    assert_eq!(boxed.last_error.as_deref(), Some("boxed and permanent"));

    let transient = row(&pool, ids[3], before[3]).await;
    assert_eq!(transient.attempts, 1, "an ordinary error retries");
    assert!(!transient.ran_at_was_kept, "an ordinary error backs off");
}

async fn runs_at(pool: &PgPool, ids: &[i64]) -> Vec<chrono::DateTime<chrono::Utc>> {
    let mut out = Vec::new();
    for id in ids {
        out.push(run_at(pool, *id).await);
    }
    out
}

#[tokio::test]
async fn a_job_failing_its_last_attempt_keeps_its_run_at() {
    let (_db, pool, utils) = migrated().await;
    let id = add_job(
        &utils,
        "fail",
        json!({"how": "transient"}),
        JobSpec {
            max_attempts: Some(1),
            ..Default::default()
        },
    )
    .await;
    let before = run_at(&pool, id).await;
    run_once(worker(&pool)).await;
    let after = row(&pool, id, before).await;
    assert_eq!((after.attempts, after.max_attempts), (1, 1));
    assert_eq!(after.last_error.as_deref(), Some("try again later"));
    assert!(after.ran_at_was_kept, "{after:?}");
}

#[tokio::test]
async fn an_undecodable_payload_fails_permanently_unless_retries_are_asked_for() {
    let (_db, pool, utils) = migrated().await;
    let expected = "could not decode the payload for task `count`: invalid type: string \"many\", expected u32";
    let id = add_job(&utils, "count", json!({"n": "many"}), five_attempts()).await;
    let before = run_at(&pool, id).await;
    run_once(worker(&pool)).await;
    let row1 = row(&pool, id, before).await;
    assert_eq!(row1.attempts, 5, "{row1:?}");
    assert_eq!(row1.last_error.as_deref(), Some(expected));
    assert!(row1.ran_at_was_kept);

    // With retries asked for, the same payload backs off and stays runnable.
    let id = add_job(&utils, "count", json!({"n": "many"}), five_attempts()).await;
    let before = run_at(&pool, id).await;
    run_once(worker(&pool).retry_undecodable_payloads(true)).await;
    let row2 = row(&pool, id, before).await;
    assert_eq!(row2.attempts, 1, "{row2:?}");
    assert_eq!(row2.last_error.as_deref(), Some(expected));
    assert!(!row2.ran_at_was_kept);
}

#[tokio::test]
async fn a_panic_is_recorded_with_its_location_and_the_worker_goes_on() {
    let (_db, pool, utils) = migrated().await;
    let id = add_job(&utils, "fail", json!({"how": "panic"}), five_attempts()).await;
    let after = add_job(&utils, "fail", json!({"how": "transient"}), five_attempts()).await;
    // Both run on this worker, one after the other.
    run_sql(
        &pool,
        &format!("update graphile_worker._private_jobs set priority = 1 where id = {after}"),
    )
    .await;
    let before = run_at(&pool, id).await;
    run_once(worker(&pool)).await;
    let failed = row(&pool, id, before).await;
    let message = failed.last_error.unwrap_or_default();
    let prefix = format!("task panicked at {}:", file!());
    assert!(message.starts_with(&prefix), "{message}");
    assert!(
        message.ends_with(": the decoder gave up on panic"),
        "{message}"
    );
    let mut place = message[prefix.len()..].split(':');
    for part in ["line", "column"] {
        let n: u32 = place.next().unwrap_or_default().parse().unwrap_or(0);
        assert!(n > 0, "no {part} in {message}");
    }
    let next = row(&pool, after, before).await;
    assert_eq!(next.last_error.as_deref(), Some("try again later"));
}

//! Snoozing: a task that ends with `TaskError::snooze(d)` is run again
//! after `d` without it counting as a failure: its attempt is given back,
//! `last_error` is untouched, and no number of snoozes fails the job.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    add_job, eventually, locks_left, migrated_with_runs, note, set_job, shut_down, start,
};
use graphile_worker::{JobContext, JobSpec, TaskError, Worker, WorkerEvent};
use serde_json::json;

/// Polls an export that is ready on the third look.
#[graphile_worker::task]
async fn poll_export(ctx: JobContext) -> Result<(), TaskError> {
    note(&ctx, "poll").await?;
    let polls: i64 = sqlx::query_scalar("select count(*) from runs where job_id = $1")
        .bind(ctx.job_id())
        .fetch_one(ctx.utils().pool())
        .await
        .map_err(|e| TaskError::new(e.to_string()))?;
    if polls < 3 {
        return Err(TaskError::snooze(Duration::from_millis(400)));
    }
    Ok(())
}

#[tokio::test]
async fn a_snoozed_job_runs_again_later_with_its_attempts_and_last_error_untouched() {
    let (_db, pool, utils) = migrated_with_runs().await;
    // One attempt allowed, one failure already recorded: a failure now
    // would end the job; snoozes must not.
    let spec = JobSpec {
        max_attempts: Some(2),
        ..Default::default()
    };
    let id = add_job(&utils, "poll_export", json!({}), spec).await;
    set_job(
        &pool,
        id,
        "attempts = 1, last_error = 'the earlier failure'",
    )
    .await;

    let snoozes = Arc::new(Mutex::new(Vec::new()));
    let seen = snoozes.clone();
    let options = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<PollExport>()
        .on_event(move |event| {
            if let WorkerEvent::JobSnoozed { delay, .. } = event {
                seen.lock().unwrap().push(*delay);
            }
        });
    let (_w, handle, running) = start(options).await;

    // After the first poll: rescheduled 400 ms ahead, attempt given back.
    let first: (i16, Option<String>, f64) =
        eventually(Duration::from_secs(15), "the first snooze", || async {
            sqlx::query_as(
                "select attempts, last_error, extract(epoch from run_at - updated_at)::float8 \
                 from graphile_worker._private_jobs where id = $1 and locked_at is null \
                   and (select count(*) from runs) = 1",
            )
            .bind(id)
            .fetch_optional(&pool)
            .await
            .unwrap()
        })
        .await;
    assert_eq!(first.0, 1);
    assert_eq!(first.1.as_deref(), Some("the earlier failure"));
    assert!((first.2 - 0.4).abs() < 0.01, "{first:?}");

    // It completes on the third poll.
    eventually(Duration::from_secs(15), "the job to complete", || async {
        let left: i64 = sqlx::query_scalar("select count(*) from graphile_worker.jobs")
            .fetch_one(&pool)
            .await
            .unwrap();
        (left == 0).then_some(())
    })
    .await;
    // Three polls, each at least the snooze after the one before.
    let gaps: Vec<Option<f64>> = sqlx::query_scalar(
        "select extract(epoch from at - lag(at) over (order by id))::float8 from runs order by id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(gaps.len(), 3);
    assert!(
        gaps[1..].iter().all(|g| g.is_some_and(|g| g >= 0.39)),
        "{gaps:?}"
    );
    shut_down(handle, running).await;
    assert_eq!(
        *snoozes.lock().unwrap(),
        [Duration::from_millis(400), Duration::from_millis(400)]
    );
    // The worker has stopped: its outcomes are written.
    assert_eq!(locks_left(&pool).await, (0, 0));
}

//! The 4-hour stale-lock sweep: it unlocks jobs and queues locked more
//! than four hours ago (keeping the attempt, moving a past `run_at` up to
//! now), and leaves younger locks alone.

mod common;

use chrono::{DateTime, Utc};
use common::{add_job, db_now, in_queue, migrated, set_job};
use graphile_worker::JobSpec;
use serde_json::json;
use sqlx::PgPool;

async fn lock(pool: &PgPool, id: i64, ago: &str) {
    set_job(
        pool,
        id,
        &format!("attempts = 1, locked_by = 'pool-gone', locked_at = now() - interval '{ago}'"),
    )
    .await;
}

#[tokio::test]
async fn the_stale_lock_sweep_unlocks_only_locks_older_than_four_hours() {
    let (_db, pool, utils) = migrated().await;
    let in_queue = |q: &str, run_at: DateTime<Utc>| JobSpec {
        run_at: Some(run_at),
        ..in_queue(q)
    };
    let past = Utc::now() - chrono::Duration::hours(6);
    let future = DateTime::from_timestamp_micros(
        (Utc::now() + chrono::Duration::hours(1)).timestamp_micros(),
    )
    .unwrap();
    let old_past = add_job(&utils, "t", json!({}), in_queue("q-old", past)).await;
    let old_future = add_job(&utils, "t", json!({}), in_queue("q-old2", future)).await;
    let recent = add_job(&utils, "t", json!({}), in_queue("q-recent", past)).await;
    lock(&pool, old_past, "5 hours").await;
    lock(&pool, old_future, "5 hours").await;
    lock(&pool, recent, "3 hours").await;
    sqlx::query(
        "update graphile_worker._private_job_queues set locked_by = 'pool-gone', \
         locked_at = now() - case queue_name when 'q-recent' then interval '3 hours' \
         else interval '5 hours' end",
    )
    .execute(&pool)
    .await
    .unwrap();

    let before = db_now(&pool).await;
    let (jobs, queues) = graphile_worker::testing::reset_stale_locks(&utils)
        .await
        .unwrap();
    assert_eq!((jobs, queues), (2, 2));

    let row = |id: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (Option<String>, i16, DateTime<Utc>)>(
                "select locked_by, attempts, run_at from graphile_worker.jobs where id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (by, attempts, run_at) = row(old_past).await;
    assert_eq!(
        (by, attempts),
        (None, 1),
        "unlocked, the attempt still counted"
    );
    assert!(
        run_at >= before,
        "run_at moved up to now: {run_at} < {before}"
    );
    assert!(run_at <= Utc::now() + chrono::Duration::seconds(5));
    assert_eq!(
        row(old_future).await,
        (None, 1, future),
        "a later run_at stays"
    );
    let (by, _, run_at) = row(recent).await;
    assert_eq!(
        by.as_deref(),
        Some("pool-gone"),
        "a 3-hour lock is left alone"
    );
    assert!(run_at < before);

    let queue_locks: Vec<(String, Option<String>)> = sqlx::query_as(
        "select queue_name, locked_by from graphile_worker._private_job_queues order by queue_name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        queue_locks,
        vec![
            ("q-old".to_owned(), None),
            ("q-old2".to_owned(), None),
            ("q-recent".to_owned(), Some("pool-gone".to_owned())),
        ]
    );
    // The unlocked job runs again.
    assert_eq!(
        graphile_worker::testing::reset_stale_locks(&utils)
            .await
            .unwrap(),
        (0, 0)
    );
}

//! Heartbeats and a worker's health: they keep a long job's locks (and its
//! queue's) fresh and the worker's registry row current, refresh nothing
//! but what the worker holds, and a worker whose heartbeats are refused
//! for longer than the stale threshold stops claiming until they succeed.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{
    Witness, add_job, count, create_runs_and_gates, eventually, has_tag, locks_left, migrated,
    open_gate, run_in_background, server_now, wait_for_server_time, wait_for_tag, worker,
};
use graphile_worker::JobSpec;
use serde_json::json;

/// A long job's locks, and its queue's, move with every heartbeat; the
/// registry shows the worker, the job it holds and its metadata.
#[tokio::test]
async fn heartbeats_keep_a_long_jobs_locks_fresh() {
    let (_db, pool, utils) = migrated().await;
    create_runs_and_gates(&pool).await;
    let job = add_job(
        &utils,
        "gated",
        json!({"gate": "slow"}),
        JobSpec {
            queue_name: Some("slow-q".into()),
            ..Default::default()
        },
    )
    .await;
    let w = worker(&pool)
        .heartbeat_interval(Duration::from_millis(200))
        .stale_worker_threshold(Duration::from_secs(2))
        .init()
        .await
        .unwrap();
    let (handle, running) = run_in_background(&w);
    wait_for_tag(&pool, "slow:start").await;
    let locks = || {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>)>(
                "select j.locked_at, q.locked_at, now() from graphile_worker._private_jobs j \
                 join graphile_worker._private_job_queues q on q.id = j.job_queue_id \
                 where j.id = $1",
            )
            .bind(job)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (job_first, queue_first, _) = locks().await;
    // Three refreshes in a row, each newer than the last.
    let mut last = (job_first, queue_first);
    for round in 0..3 {
        last = eventually(Duration::from_secs(5), "the locks to move", || async {
            let (j, q, _) = locks().await;
            (j > last.0 && q > last.1).then_some((j, q))
        })
        .await;
        let (_, _, now) = locks().await;
        assert!(
            now - last.0 < chrono::Duration::seconds(2),
            "round {round}: job lock {} is stale at {now}",
            last.0
        );
    }
    let workers = utils.list_workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].id, w.pool_id());
    assert_eq!(workers[0].jobs_held, 1);
    assert!(workers[0].last_heartbeat_at > job_first);
    let metadata = workers[0].metadata.clone().unwrap_or_default();
    assert_eq!(metadata["pid"], json!(std::process::id()), "{metadata}");
    assert!(metadata["host"].is_string(), "{metadata}");
    assert!(metadata["version"].is_string(), "{metadata}");
    let mut tasks: Vec<String> = serde_json::from_value(metadata["tasks"].clone()).unwrap();
    tasks.sort();
    assert_eq!(tasks, ["gated", "record", "until_shutdown"]);
    open_gate(&pool, "slow").await;
    wait_for_tag(&pool, "slow:done").await;
    handle.shutdown();
    running.await.unwrap().unwrap();
    assert_eq!(locks_left(&pool).await, (0, 0));
}

/// Heartbeats refresh the locks of jobs the worker holds and of their
/// queues, nothing else: a queue lock left behind with the worker's id
/// (an outcome that could not be written) still ages into the 4-hour
/// sweep instead of blocking its queue for as long as the worker lives.
#[tokio::test]
async fn heartbeats_refresh_only_the_queues_of_jobs_the_worker_holds() {
    let (_db, pool, utils) = migrated().await;
    create_runs_and_gates(&pool).await;
    add_job(
        &utils,
        "gated",
        json!({"gate": "held"}),
        JobSpec {
            queue_name: Some("held-q".into()),
            ..Default::default()
        },
    )
    .await;
    let w = worker(&pool)
        .heartbeat_interval(Duration::from_millis(100))
        .stale_worker_threshold(Duration::from_secs(2))
        .init()
        .await
        .unwrap();
    let (handle, running) = run_in_background(&w);
    wait_for_tag(&pool, "held:start").await;
    let left_behind: DateTime<Utc> = sqlx::query_scalar(
        "insert into graphile_worker._private_job_queues (queue_name, locked_at, locked_by) \
         values ('left-behind-q', now() - interval '5 hours', $1) returning now()",
    )
    .bind(w.pool_id())
    .fetch_one(&pool)
    .await
    .unwrap();
    // Two heartbeats after that.
    let mut seen = left_behind;
    let pool_ref = &pool;
    for _ in 0..2 {
        seen = eventually(Duration::from_secs(5), "a heartbeat", || async move {
            let at: DateTime<Utc> = sqlx::query_scalar(
                "select locked_at from graphile_worker._private_job_queues \
                 where queue_name = 'held-q'",
            )
            .fetch_one(pool_ref)
            .await
            .unwrap();
            (at > seen).then_some(at)
        })
        .await;
    }
    assert_eq!(
        graphile_worker::testing::reset_stale_locks(&utils)
            .await
            .unwrap(),
        (0, 1),
        "the held job and its queue stay locked; the left-behind queue is freed"
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from graphile_worker._private_job_queues \
             where locked_by is not null and queue_name = 'held-q'"
        )
        .await,
        1
    );
    open_gate(&pool, "held").await;
    wait_for_tag(&pool, "held:done").await;
    handle.shutdown();
    running.await.unwrap().unwrap();
}

/// A worker whose heartbeats keep failing with an error for longer than the
/// stale threshold stops taking jobs (others may already count it as dead),
/// and takes them again once heartbeats succeed. (A heartbeat that hangs
/// rather than fails is covered by `recovery_heartbeat_failure.rs`.)
#[tokio::test]
async fn a_worker_whose_heartbeats_are_refused_stops_claiming_until_they_succeed() {
    const THRESHOLD: Duration = Duration::from_millis(800);
    let (_db, pool, utils) = migrated().await;
    create_runs_and_gates(&pool).await;
    let mut witness = Witness::start(&pool).await;
    let w = worker(&pool)
        .concurrency(2)
        .poll_interval(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_millis(100))
        .stale_worker_threshold(THRESHOLD)
        .init()
        .await
        .unwrap();
    let (handle, running) = run_in_background(&w);
    add_job(
        &utils,
        "record",
        json!({"tag": "healthy"}),
        JobSpec::default(),
    )
    .await;
    wait_for_tag(&pool, "healthy").await;

    // Every heartbeat is an update of the worker's registry row: from now
    // on each is refused, and counted (a sequence survives the rollback).
    sqlx::raw_sql(
        "create sequence refused_heartbeats; \
         create function refuse_heartbeats() returns trigger language plpgsql as \
           $$ begin perform nextval('public.refused_heartbeats'); \
             raise exception 'heartbeats refused by the test'; end $$; \
         create trigger refuse_heartbeats before update on graphile_worker._private_workers \
           for each row execute function refuse_heartbeats()",
    )
    .execute(&pool)
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "a refused heartbeat", || async {
        (count(
            &pool,
            "select case when is_called then last_value else 0 end from refused_heartbeats",
        )
        .await
            > 0)
        .then_some(())
    })
    .await;
    // Beats run one after another: once one was refused, the registry
    // holds the last one that got through.
    let last_beat: DateTime<Utc> = sqlx::query_scalar(
        "select last_heartbeat_at from graphile_worker._private_workers where id = $1",
    )
    .bind(w.pool_id())
    .fetch_one(&pool)
    .await
    .unwrap();

    // Others may count the worker as dead once that beat is older than the
    // stale threshold: by then it has stopped claiming. Add a job after.
    wait_for_server_time(&pool, last_beat + THRESHOLD).await;
    let job = add_job(
        &utils,
        "record",
        json!({"tag": "while-unhealthy"}),
        JobSpec::default(),
    )
    .await;
    // The worker was told: jobs announced after it reached the witness, in
    // this process, five times in a row.
    witness.confirm(5).await;
    assert!(
        !has_tag(&pool, "while-unhealthy").await,
        "claimed a job {} ms after its last heartbeat",
        (server_now(&pool).await - last_beat).num_milliseconds()
    );
    let (attempts, locked): (i16, bool) = sqlx::query_as(
        "select attempts, locked_at is not null from graphile_worker.jobs where id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((attempts, locked), (0, false), "the job was not claimed");

    // Heartbeats succeed again: the worker resumes, and runs the job only
    // now.
    let restored_at = server_now(&pool).await;
    sqlx::raw_sql("drop trigger refuse_heartbeats on graphile_worker._private_workers")
        .execute(&pool)
        .await
        .unwrap();
    wait_for_tag(&pool, "while-unhealthy").await;
    let ran_at: DateTime<Utc> =
        sqlx::query_scalar("select at from runs where tag = 'while-unhealthy'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        ran_at > restored_at,
        "the job ran at {ran_at}, before heartbeats were let through at {restored_at}"
    );
    witness.stop().await;
    handle.shutdown();
    running.await.unwrap().unwrap();
}

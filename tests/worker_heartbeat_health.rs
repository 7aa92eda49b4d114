//! Heartbeats and a worker's health: they keep a long job's locks (and its
//! queue's) fresh and the worker's registry row current, refresh nothing
//! but what the worker holds, and a worker whose heartbeats are refused
//! for longer than the stale threshold stops claiming until they succeed.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{
    Running, Witness, add_job, attempts_and_lock, count, eventually, has_tag, in_queue,
    last_heartbeat, locks_left, migrated_with_runs, open_gate, refuse_registry, server_now,
    shut_down, start, stop_refusing, wait_for_refusals, wait_for_run_of, wait_for_tag, worker,
};
use graphile_worker::{JobSpec, ShutdownHandle, Worker, WorkerUtils};
use serde_json::json;
use sqlx::PgPool;

/// Adds a `gated` job waiting on `gate`, in the queue `<gate>-q`; starts a
/// worker that beats every `heartbeat` (stale after 2 s) and waits until
/// the job runs. Returns the job's id and the running worker.
async fn run_a_gated_job(
    pool: &PgPool,
    utils: &WorkerUtils,
    gate: &str,
    heartbeat: Duration,
) -> (i64, Worker, ShutdownHandle, Running) {
    let job = add_job(
        utils,
        "gated",
        json!({ "gate": gate }),
        in_queue(&format!("{gate}-q")),
    )
    .await;
    let (w, handle, running) = start(
        worker(pool)
            .heartbeat_interval(heartbeat)
            .stale_worker_threshold(Duration::from_secs(2)),
    )
    .await;
    wait_for_tag(pool, &format!("{gate}:start")).await;
    (job, w, handle, running)
}

/// Lets the job of [`run_a_gated_job`] finish, then stops the worker.
async fn finish_the_gated_job(pool: &PgPool, gate: &str, handle: ShutdownHandle, running: Running) {
    open_gate(pool, gate).await;
    wait_for_tag(pool, &format!("{gate}:done")).await;
    shut_down(handle, running).await;
}

/// A long job's locks, and its queue's, move with every heartbeat; the
/// registry shows the worker, the job it holds and its metadata.
#[tokio::test]
async fn heartbeats_keep_a_long_jobs_locks_fresh() {
    let (_db, pool, utils) = migrated_with_runs().await;
    let (job, w, handle, running) =
        run_a_gated_job(&pool, &utils, "slow", Duration::from_millis(200)).await;
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
    // Heartbeats are written by their own thread, not with the lock refreshes.
    let workers = eventually(
        Duration::from_secs(5),
        "a heartbeat after the claim",
        || {
            let utils = utils.clone();
            async move {
                let workers = utils.list_workers().await.ok()?;
                let beat =
                    !workers.is_empty() && workers.iter().all(|w| w.last_heartbeat_at > job_first);
                beat.then_some(workers)
            }
        },
    )
    .await;
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].id, w.pool_id());
    assert_eq!(workers[0].jobs_held, 1);
    let metadata = workers[0].metadata.clone().unwrap_or_default();
    assert_eq!(metadata["pid"], json!(std::process::id()), "{metadata}");
    assert!(metadata["host"].is_string(), "{metadata}");
    assert!(metadata["version"].is_string(), "{metadata}");
    let mut tasks: Vec<String> = serde_json::from_value(metadata["tasks"].clone()).unwrap();
    tasks.sort();
    assert_eq!(tasks, ["gated", "record", "until_shutdown"]);
    finish_the_gated_job(&pool, "slow", handle, running).await;
    // The worker has stopped: its outcomes are written.
    assert_eq!(locks_left(&pool).await, (0, 0));
}

/// Heartbeats refresh the locks of jobs the worker holds and of their
/// queues, nothing else: a queue lock left behind with the worker's id
/// (an outcome that could not be written) still ages into the 4-hour
/// sweep instead of blocking its queue for as long as the worker lives.
#[tokio::test]
async fn heartbeats_refresh_only_the_queues_of_jobs_the_worker_holds() {
    let (_db, pool, utils) = migrated_with_runs().await;
    let (_, w, handle, running) =
        run_a_gated_job(&pool, &utils, "held", Duration::from_millis(100)).await;
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
    finish_the_gated_job(&pool, "held", handle, running).await;
}

/// A worker whose heartbeats keep failing with an error for longer than the
/// stale threshold stops taking jobs (others may already count it as dead),
/// and takes them again once heartbeats succeed. (A heartbeat that hangs
/// rather than fails is covered by `recovery_heartbeat_failure.rs`.)
#[tokio::test]
async fn a_worker_whose_heartbeats_are_refused_stops_claiming_until_they_succeed() {
    const THRESHOLD: Duration = Duration::from_millis(800);
    let (_db, pool, utils) = migrated_with_runs().await;
    let mut witness = Witness::start(&pool).await;
    let (w, handle, running) = start(
        worker(&pool)
            .concurrency(2)
            .poll_interval(Duration::from_millis(100))
            .heartbeat_interval(Duration::from_millis(100))
            .stale_worker_threshold(THRESHOLD),
    )
    .await;
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
    refuse_registry(&pool, "refused_heartbeats", "update").await;
    // A refused heartbeat.
    wait_for_refusals(&pool, "refused_heartbeats", |n| n > 0).await;
    // Beats run one after another: once one was refused, the registry
    // holds the last one that got through.
    let last_beat = last_heartbeat(&pool, w.pool_id()).await.unwrap();

    // Others may count the worker as dead once that beat is older than the
    // stale threshold: by then it has stopped claiming. A job added after
    // it, which the worker was told of, is not claimed.
    let job = witness
        .add_record_once_stale(last_beat, THRESHOLD, "while-unhealthy")
        .await;
    assert!(
        !has_tag(&pool, "while-unhealthy").await,
        "claimed a job {} ms after its last heartbeat",
        (server_now(&pool).await - last_beat).num_milliseconds()
    );
    assert_eq!(
        attempts_and_lock(&pool, job).await,
        (0, false),
        "the job was not claimed"
    );

    // Heartbeats succeed again: the worker resumes, and runs the job only
    // now.
    let restored_at = server_now(&pool).await;
    stop_refusing(&pool, "refused_heartbeats").await;
    let ran_at = wait_for_run_of(&pool, job, Duration::from_secs(15)).await;
    assert!(
        ran_at > restored_at,
        "the job ran at {ran_at}, before heartbeats were let through at {restored_at}"
    );
    witness.stop().await;
    shut_down(handle, running).await;
}

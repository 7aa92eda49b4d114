//! Heartbeats and dead-worker recovery with real worker processes: a killed
//! worker's jobs run again soon; a live worker's jobs never run twice.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{
    add_job, count, event_count, eventually, migrated_with_runs, run_in_background,
    spawn_test_worker, wait_for_count, wait_for_events, wait_for_server_time,
};
use graphile_worker::{JobContext, JobSpec, Task, TaskError, Worker, WorkerUtils};
use graphile_worker_dev::{TestDatabase, node};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio::process::{Child, Command};

const HEARTBEAT_MS: u64 = 200;
const THRESHOLD_MS: u64 = 1500;
const SWEEP_MS: u64 = 250;

/// Starts a worker process and waits until it is running.
async fn spawn_worker(db: &TestDatabase) -> (Child, String) {
    spawn_test_worker(
        db,
        &[
            ("GW_HEARTBEAT_MS", HEARTBEAT_MS.to_string()),
            ("GW_THRESHOLD_MS", THRESHOLD_MS.to_string()),
            ("GW_SWEEP_MS", SWEEP_MS.to_string()),
        ],
    )
    .await
}

async fn job_events(pool: &PgPool, job_id: i64, event: &str) -> i64 {
    sqlx::query_scalar("select count(*) from runs where job_id = $1 and event = $2")
        .bind(job_id)
        .bind(event)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Registers a worker `id` whose last heartbeat was an hour ago, holding a
/// job of a task nobody runs; returns the job's id. Seeing a sweep recover
/// it proves that a sweep ran after this point. (One transaction: a sweep
/// between the two writes would forget the worker and leave its job to the
/// 4-hour rule.)
async fn plant_dead_worker(pool: &PgPool, utils: &WorkerUtils, id: &str) -> i64 {
    let job = add_job(utils, "held_by_the_dead", json!({}), JobSpec::default()).await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "insert into graphile_worker._private_workers (id, last_heartbeat_at) \
         values ($1, now() - interval '1 hour')",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "update graphile_worker._private_jobs \
         set attempts = 1, locked_by = $1, locked_at = now() where id = $2",
    )
    .bind(id)
    .bind(job)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    job
}

/// Waits until a sweep recovered what [`plant_dead_worker`] planted.
async fn wait_for_sweep(pool: &PgPool, dead: &str, job: i64) {
    eventually(
        Duration::from_secs(20),
        &format!("a sweep to recover {dead}"),
        || async move {
            let (locked, error): (bool, Option<String>) = sqlx::query_as(
                "select locked_at is not null, last_error from graphile_worker.jobs where id = $1",
            )
            .bind(job)
            .fetch_one(pool)
            .await
            .unwrap();
            let forgotten = count(
                pool,
                &format!(
                    "select count(*) from graphile_worker._private_workers where id = '{dead}'"
                ),
            )
            .await
                == 0;
            (!locked && forgotten && error.is_some_and(|e| e.contains("stopped heartbeating")))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn killed_workers_jobs_run_to_completion_elsewhere() {
    let (db, pool, utils) = migrated_with_runs().await;
    for _ in 0..2 {
        add_job(
            &utils,
            "sleepy",
            json!({"ms_first": 3_600_000, "ms_retry": 10}),
            JobSpec::default(),
        )
        .await;
    }
    let (mut doomed, doomed_id) = spawn_worker(&db).await;
    // Both jobs start.
    wait_for_events(&pool, "start", 2, Duration::from_secs(20)).await;
    doomed.kill().await.unwrap(); // SIGKILL: no clean shutdown
    let killed_at = std::time::Instant::now();

    let (_survivor, survivor_id) = spawn_worker(&db).await;
    // Both jobs finish.
    wait_for_events(&pool, "done", 2, Duration::from_secs(20)).await;
    let took = killed_at.elapsed();
    // Threshold + sweep interval (jittered) + start-up and polling slack.
    assert!(
        took < Duration::from_millis(THRESHOLD_MS + 2 * SWEEP_MS + 3000),
        "recovery took {took:?}"
    );
    let retried: Vec<i16> = sqlx::query_scalar("select attempts from runs where event = 'done'")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(retried, vec![2, 2], "the crashed attempt counts");
    // The task writes `done` before it returns; its completion is written
    // by the outcome writer just after.
    wait_for_count(
        &pool,
        Duration::from_secs(10),
        "the completions to be written",
        "select count(*) from graphile_worker.jobs",
        |n| n == 0,
    )
    .await;
    let workers = utils.list_workers().await.unwrap();
    assert!(
        workers.iter().all(|w| w.id != doomed_id),
        "dead worker forgotten"
    );
    assert!(workers.iter().any(|w| w.id == survivor_id));
}

#[tokio::test]
async fn a_long_job_on_a_live_worker_runs_once() {
    let (db, pool, utils) = migrated_with_runs().await;
    add_job(
        &utils,
        "sleepy",
        json!({"ms_first": 8 * THRESHOLD_MS, "ms_retry": 10}),
        JobSpec::default(),
    )
    .await;
    let (_a, _) = spawn_worker(&db).await;
    let (_b, _) = spawn_worker(&db).await;
    let started_at: chrono::DateTime<chrono::Utc> =
        eventually(Duration::from_secs(30), "the job to start", || async {
            sqlx::query_scalar("select at from runs where event = 'start'")
                .fetch_optional(&pool)
                .await
                .unwrap()
        })
        .await;
    // Once the job has run for longer than the threshold, a sweep must
    // happen while it still runs: a dead worker planted now is recovered,
    // and the job carries on.
    wait_for_server_time(&pool, started_at + Duration::from_millis(THRESHOLD_MS)).await;
    let planted = plant_dead_worker(&pool, &utils, "pool-dead").await;
    wait_for_sweep(&pool, "pool-dead", planted).await;
    assert_eq!(
        event_count(&pool, "done").await,
        0,
        "the job (8 thresholds long) ended before a sweep could be seen"
    );
    // The job finishes.
    wait_for_events(&pool, "done", 1, Duration::from_secs(30)).await;
    assert_eq!(event_count(&pool, "start").await, 1, "the job ran once");
    // The lock was kept fresh: a Node worker's 4-hour sweep would see a
    // recent locked_at too. The task notes "done" before its completion is
    // written (outcomes are batched), so the row goes a moment later.
    wait_for_count(
        &pool,
        Duration::from_secs(10),
        "the completed job to be deleted",
        "select count(*) from graphile_worker.jobs where task_identifier = 'sleepy'",
        |n| n == 0,
    )
    .await;
    assert_eq!(event_count(&pool, "start").await, 1, "the job ran once");
}

#[derive(Serialize, Deserialize)]
struct Noop {}

impl Task for Noop {
    const IDENTIFIER: &'static str = "noop";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// A worker in this process that only sweeps (it runs no task of interest).
async fn sweeper(pool: &PgPool) -> graphile_worker::ShutdownHandle {
    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<Noop>()
        .heartbeat_interval(Duration::from_millis(HEARTBEAT_MS))
        .stale_worker_threshold(Duration::from_millis(THRESHOLD_MS))
        .recovery_sweep_interval(Duration::from_millis(SWEEP_MS))
        .init()
        .await
        .unwrap();
    run_in_background(&worker).0
}

const NODE_SLOW_WORKER: &str = r#"
const { run } = require("graphile-worker");
(async () => {
  const runner = await run({
    connectionString: process.env.DATABASE_URL,
    concurrency: 1,
    pollInterval: 100,
    noHandleSignals: true,
    taskList: {
      node_slow: async (payload, helpers) => {
        await helpers.query("insert into runs (event, job_id, attempts, pid) values ('start', $1, $2, $3)", [helpers.job.id, helpers.job.attempts, process.pid]);
        await new Promise((r) => setTimeout(r, payload.ms));
        await helpers.query("insert into runs (event, job_id, attempts, pid) values ('done', $1, $2, $3)", [helpers.job.id, helpers.job.attempts, process.pid]);
        setTimeout(() => runner.stop(), 10);
      },
    },
  });
  await runner.promise;
})().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
"#;

#[tokio::test]
async fn a_live_node_workers_long_job_is_never_stolen() {
    let (db, pool, utils) = migrated_with_runs().await;
    let stop = sweeper(&pool).await;
    add_job(
        &utils,
        "node_slow",
        json!({"ms": 3 * THRESHOLD_MS}),
        JobSpec::default(),
    )
    .await;
    let mut node_worker = Command::from(node::js_command(
        &db.url,
        "graphile_worker",
        NODE_SLOW_WORKER,
    ))
    .stdout(Stdio::inherit())
    .stderr(Stdio::inherit())
    .kill_on_drop(true)
    .spawn()
    .expect("spawn node");
    // Node starts the job.
    wait_for_events(&pool, "start", 1, Duration::from_secs(30)).await;
    let lock = || async {
        sqlx::query_as::<_, (Option<String>, Option<chrono::DateTime<chrono::Utc>>)>(
            "select locked_by, locked_at from graphile_worker.jobs where task_identifier = 'node_slow'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap()
        .expect("the Node job ended before a sweep could be seen (it runs 3 thresholds)")
    };
    let (node_id, locked_at) = lock().await;
    let (node_id, locked_at) = (
        node_id.expect("locked by Node"),
        locked_at.expect("locked by Node"),
    );
    // Node never refreshes its lock: once it is older than the threshold,
    // a sweep happens (it recovers a dead worker planted then), and leaves
    // the job to Node.
    wait_for_server_time(&pool, locked_at + Duration::from_millis(THRESHOLD_MS)).await;
    let planted = plant_dead_worker(&pool, &utils, "pool-dead").await;
    wait_for_sweep(&pool, "pool-dead", planted).await;
    assert_eq!(
        lock().await,
        (Some(node_id), Some(locked_at)),
        "the Node worker keeps its lock"
    );
    let status = tokio::time::timeout(Duration::from_secs(30), node_worker.wait())
        .await
        .expect("node worker exits")
        .unwrap();
    assert!(status.success());
    assert_eq!(event_count(&pool, "start").await, 1);
    assert_eq!(event_count(&pool, "done").await, 1);
    stop.shutdown();
}

#[tokio::test]
async fn a_job_that_kills_its_worker_ends_permanently_failed() {
    let (db, pool, utils) = migrated_with_runs().await;
    let stop = sweeper(&pool).await;
    let job = add_job(
        &utils,
        "abort",
        json!({}),
        JobSpec {
            max_attempts: Some(2),
            ..Default::default()
        },
    )
    .await;
    for attempt in 1..=2i64 {
        let (mut child, _) = spawn_worker(&db).await;
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("the poison job kills the worker")
            .unwrap();
        assert!(!status.success());
        assert_eq!(event_count(&pool, "start").await, attempt);
        wait_for_count(
            &pool,
            Duration::from_secs(20),
            "the job to be recovered",
            "select count(*) from graphile_worker.jobs where locked_by is null",
            |n| n == 1,
        )
        .await;
    }
    let (attempts, max_attempts, last_error): (i16, i16, Option<String>) = sqlx::query_as(
        "select attempts, max_attempts, last_error from graphile_worker.jobs where id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((attempts, max_attempts), (2, 2), "no attempt refunded");
    let last_error = last_error.unwrap_or_default();
    assert!(last_error.contains("stopped heartbeating"), "{last_error}");
    // A permanently failed job is not claimed again. A job that comes after
    // it (lower priority) runs to its end on a new worker: had that worker
    // claimed the failed job, it would have done so first, or in the same
    // claim, and died.
    let (mut child, _) = spawn_worker(&db).await;
    let after = add_job(
        &utils,
        "sleepy",
        json!({"ms_first": 200, "ms_retry": 200}),
        JobSpec {
            priority: Some(10),
            ..Default::default()
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the later job to finish",
        || async { (job_events(&pool, after, "done").await == 1).then_some(()) },
    )
    .await;
    assert_eq!(job_events(&pool, job, "start").await, 2);
    assert!(child.try_wait().unwrap().is_none(), "the worker is alive");
    child.kill().await.unwrap();
    stop.shutdown();
}

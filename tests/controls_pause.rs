//! `WorkerUtils::pause_queue` and `resume_queue`, as users see them: while
//! a queue is paused neither our worker nor a real Node graphile-worker
//! 0.18 running beside it starts any of its jobs (jobs added meanwhile
//! wait), and neither stale-lock sweep (ours or Node's SQL) nor our
//! heartbeats undo the pause; once resumed, the waiting jobs run, each
//! exactly once, and nothing stays locked. A job of the queue already
//! running when it is paused finishes, and the queue stays paused; resuming
//! while one runs keeps the queue locked for that job's holder (Rust or
//! Node) until it ends, so no second job of the queue runs beside it.
//! Pause and resume report whether they changed anything, and refuse
//! invalid queue names with a message that says why.

mod common;

use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{
    add_job, count, eventually, in_queue, last_heartbeat, migrated_with_runs, note, open_gate,
    run_sql, server_now, shut_down, start, wait_for_count, wait_for_listener, wait_for_no_locks,
    worker,
};
use graphile_worker::{Error, JobContext, JobSpec, QueueInfo, Task, TaskError, WorkerUtils};
use graphile_worker_dev::{TestDatabase, node};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio::process::{Child, Command};

/// The work of the paused queue, which both workers run: ours records
/// `rust ran`.
#[derive(Serialize, Deserialize)]
struct SharedWork {}

impl Task for SharedWork {
    const IDENTIFIER: &'static str = "shared_work";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        note(&ctx, "rust ran").await
    }
}

/// A Node graphile-worker 0.18 worker (two slots): `shared_work` records
/// `node ran`; `node_sentinel` records its tag; `node_gated` records
/// `<gate>:start`, waits for its gate, records `<gate>:done` and succeeds.
const NODE_WORKER: &str = r#"
const { run } = require("graphile-worker");
(async () => {
  const runner = await run({
    connectionString: process.env.DATABASE_URL,
    concurrency: 2,
    pollInterval: 200,
    noHandleSignals: false,
    taskList: {
      shared_work: async (payload, helpers) => {
        await helpers.query("insert into runs (tag, job_id, attempts) values ('node ran', $1, $2)",
          [helpers.job.id, helpers.job.attempts]);
      },
      node_sentinel: async (payload, helpers) => {
        await helpers.query("insert into runs (tag, job_id, attempts) values ($1, $2, $3)",
          [payload.tag, helpers.job.id, helpers.job.attempts]);
      },
      node_gated: async (payload, helpers) => {
        const note = (tag) => helpers.query(
          "insert into runs (tag, job_id, attempts) values ($1, $2, $3)",
          [tag, helpers.job.id, helpers.job.attempts]);
        await note(payload.gate + ":start");
        for (;;) {
          const { rows } = await helpers.query("select 1 from gates where name = $1", [payload.gate]);
          if (rows.length > 0) break;
          await new Promise((r) => setTimeout(r, 20));
        }
        await note(payload.gate + ":done");
      },
    },
  });
  await runner.promise;
})().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
"#;

/// Starts the Node worker on `db`.
fn spawn_node_worker(db: &TestDatabase) -> Child {
    Command::from(node::js_command(&db.url, "graphile_worker", NODE_WORKER))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node")
}

/// The tags job `id` wrote to `runs`, in order.
async fn tags_of(pool: &PgPool, id: i64) -> Vec<String> {
    sqlx::query_scalar("select tag from runs where job_id = $1 order by id")
        .bind(id)
        .fetch_all(pool)
        .await
        .expect("read the runs")
}

/// Waits until job `id` wrote `tag` (at most `within`).
async fn wait_for_job_tag(pool: &PgPool, id: i64, tag: &str, within: Duration) {
    eventually(within, &format!("job {id} to write {tag}"), || async move {
        tags_of(pool, id)
            .await
            .iter()
            .any(|t| t == tag)
            .then_some(())
    })
    .await;
}

/// Runs a `record` job (only our worker has that task) and a
/// `node_sentinel` job (only Node has it), both tagged `tag`, and waits
/// until each ran: each worker looked for work after every job added
/// before them.
async fn sentinels(pool: &PgPool, utils: &WorkerUtils, tag: &str) {
    let ours = add_job(
        utils,
        "record",
        json!({"tag": format!("rust {tag}")}),
        JobSpec::default(),
    )
    .await;
    let nodes = add_job(
        utils,
        "node_sentinel",
        json!({"tag": format!("node {tag}")}),
        JobSpec::default(),
    )
    .await;
    wait_for_job_tag(pool, ours, &format!("rust {tag}"), Duration::from_secs(10)).await;
    wait_for_job_tag(pool, nodes, &format!("node {tag}"), Duration::from_secs(30)).await;
}

/// Runs a `record` job tagged `tag` and waits until it ran.
async fn rust_sentinel(pool: &PgPool, utils: &WorkerUtils, tag: &str) {
    let id = add_job(utils, "record", json!({"tag": tag}), JobSpec::default()).await;
    wait_for_job_tag(pool, id, tag, Duration::from_secs(10)).await;
}

/// Runs a `node_sentinel` job tagged `tag` and waits until it ran.
async fn node_sentinel(pool: &PgPool, utils: &WorkerUtils, tag: &str) {
    let id = add_job(
        utils,
        "node_sentinel",
        json!({"tag": tag}),
        JobSpec::default(),
    )
    .await;
    wait_for_job_tag(pool, id, tag, Duration::from_secs(30)).await;
}

/// Job `id`'s attempts and `locked_by`.
async fn attempts_and_holder(pool: &PgPool, id: i64) -> (i16, Option<String>) {
    sqlx::query_as("select attempts, locked_by from graphile_worker._private_jobs where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("read a job")
}

/// The raw lock of queue `name`.
async fn queue_lock(pool: &PgPool, name: &str) -> (Option<String>, Option<DateTime<Utc>>) {
    sqlx::query_as(
        "select locked_by, locked_at from graphile_worker._private_job_queues where queue_name = $1",
    )
    .bind(name)
    .fetch_one(pool)
    .await
    .expect("read a queue")
}

/// Queue `name` as `list_queues` shows it.
async fn queue_info(utils: &WorkerUtils, name: &str) -> QueueInfo {
    utils
        .list_queues()
        .await
        .expect("list the queues")
        .into_iter()
        .find(|q| q.queue_name == name)
        .unwrap_or_else(|| panic!("queue {name} is not listed"))
}

/// Asserts that queue `name` is paused, both in `list_queues` and in its
/// row.
async fn assert_paused(pool: &PgPool, utils: &WorkerUtils, name: &str) {
    let info = queue_info(utils, name).await;
    assert!(info.paused, "{info:?}");
    assert_eq!(info.locked_by, None, "{info:?}");
    assert_eq!(queue_lock(pool, name).await.0.as_deref(), Some("paused"));
}

/// Waits until worker `pool_id` has heartbeated three times more after
/// now (at most 10 s).
async fn wait_for_heartbeats(pool: &PgPool, pool_id: &str) {
    let after = server_now(pool).await + chrono::Duration::milliseconds(300);
    eventually(
        Duration::from_secs(10),
        "three more heartbeats",
        || async move {
            let last = last_heartbeat(pool, pool_id).await.expect("registered");
            (last > after).then_some(())
        },
    )
    .await;
}

/// Waits until job `id` is gone from the table (at most 15 s).
async fn wait_gone(pool: &PgPool, id: i64) {
    wait_for_count(
        pool,
        Duration::from_secs(15),
        &format!("job {id} to be done"),
        &format!("select count(*) from graphile_worker._private_jobs where id = {id}"),
        |n| n == 0,
    )
    .await;
}

#[tokio::test]
async fn a_paused_queue_runs_on_neither_worker_until_resumed() {
    let (db, pool, utils) = migrated_with_runs().await;
    let mut node_worker = spawn_node_worker(&db);
    let (worker, handle, running) = start(
        worker(&pool)
            .register::<SharedWork>()
            .concurrency(2)
            .heartbeat_interval(Duration::from_millis(100))
            .stale_worker_threshold(Duration::from_secs(2)),
    )
    .await;
    wait_for_listener(&pool).await;
    sentinels(&pool, &utils, "ready").await;

    // A queue that does not exist yet is created paused.
    assert!(utils.pause_queue("q-paused").await.unwrap());
    assert_paused(&pool, &utils, "q-paused").await;
    let mut paused = Vec::new();
    for _ in 0..6 {
        paused.push(add_job(&utils, "shared_work", json!({}), in_queue("q-paused")).await);
    }
    let untouched = || async {
        for &id in &paused {
            assert_eq!(attempts_and_holder(&pool, id).await, (0, None), "job {id}");
            assert_eq!(tags_of(&pool, id).await, Vec::<String>::new(), "job {id}");
        }
    };

    // Each worker ran a job added after them, and none of them.
    sentinels(&pool, &utils, "after the pause").await;
    untouched().await;
    let info = queue_info(&utils, "q-paused").await;
    assert_eq!(
        (info.paused, info.waiting, info.jobs),
        (true, 6, 6),
        "{info:?}"
    );

    // Neither sweep undoes the pause, nor do our heartbeats.
    let (jobs, queues) = graphile_worker::testing::reset_stale_locks(&utils)
        .await
        .unwrap();
    assert_eq!((jobs, queues), (0, 0));
    run_sql(
        &pool,
        "with j as (update graphile_worker._private_jobs as jobs \
           set locked_at = null, locked_by = null, run_at = greatest(run_at, now()) \
           where locked_at < now() - interval '4 hours') \
         update graphile_worker._private_job_queues as job_queues \
           set locked_at = null, locked_by = null \
           where locked_at < now() - interval '4 hours'",
    )
    .await;
    wait_for_heartbeats(&pool, worker.pool_id()).await;
    assert_paused(&pool, &utils, "q-paused").await;
    sentinels(&pool, &utils, "after the sweeps").await;
    untouched().await;

    // Resumed: every waiting job runs, exactly once, on either worker.
    assert!(utils.resume_queue("q-paused").await.unwrap());
    assert!(!queue_info(&utils, "q-paused").await.paused);
    wait_for_count(
        &pool,
        Duration::from_secs(15),
        "the paused jobs to run",
        "select count(*) from graphile_worker._private_jobs j \
           join graphile_worker._private_tasks t on t.id = j.task_id \
           where t.identifier = 'shared_work'",
        |n| n == 0,
    )
    .await;
    for &id in &paused {
        let ran = tags_of(&pool, id).await;
        assert!(
            ran == ["rust ran"] || ran == ["node ran"],
            "job {id} ran as {ran:?}"
        );
    }
    assert_eq!(
        count(
            &pool,
            "select count(*) from runs where tag in ('rust ran', 'node ran')"
        )
        .await,
        6
    );
    wait_for_no_locks(&pool).await;
    let info = queue_info(&utils, "q-paused").await;
    assert_eq!((info.paused, info.locked_by, info.jobs), (false, None, 0));

    shut_down(handle, running).await;
    node_worker.kill().await.expect("stop the Node worker");
}

#[tokio::test]
async fn a_job_running_when_its_queue_is_paused_finishes_and_the_next_waits() {
    let (_db, pool, utils) = migrated_with_runs().await;
    let (worker, handle, running) = start(
        worker(&pool)
            .concurrency(4)
            .heartbeat_interval(Duration::from_millis(100))
            .stale_worker_threshold(Duration::from_secs(2)),
    )
    .await;
    wait_for_listener(&pool).await;
    let first = add_job(&utils, "gated", json!({"gate": "a"}), in_queue("q")).await;
    let second = add_job(&utils, "gated", json!({"gate": "b"}), in_queue("q")).await;
    wait_for_job_tag(&pool, first, "a:start", Duration::from_secs(10)).await;

    assert!(utils.pause_queue("q").await.unwrap());
    assert_paused(&pool, &utils, "q").await;
    // The heartbeats keep the running job's lock fresh, and leave the
    // paused queue alone.
    wait_for_heartbeats(&pool, worker.pool_id()).await;
    assert_paused(&pool, &utils, "q").await;
    assert_eq!(
        attempts_and_holder(&pool, first).await,
        (1, Some(worker.pool_id().to_owned()))
    );

    // The running job finishes; the queue stays paused, and its next job
    // does not start (a job added after it did).
    open_gate(&pool, "a").await;
    wait_gone(&pool, first).await;
    assert_eq!(tags_of(&pool, first).await, ["a:start", "a:done"]);
    rust_sentinel(&pool, &utils, "sentinel").await;
    assert_eq!(attempts_and_holder(&pool, second).await, (0, None));
    assert_eq!(tags_of(&pool, second).await, Vec::<String>::new());
    assert_paused(&pool, &utils, "q").await;

    // Resumed, it runs.
    assert!(utils.resume_queue("q").await.unwrap());
    wait_for_job_tag(&pool, second, "b:start", Duration::from_secs(10)).await;
    open_gate(&pool, "b").await;
    wait_gone(&pool, second).await;
    assert_eq!(tags_of(&pool, second).await, ["b:start", "b:done"]);
    wait_for_no_locks(&pool).await;
    shut_down(handle, running).await;
}

#[tokio::test]
async fn resuming_while_a_job_runs_keeps_the_queue_locked_for_it() {
    let (_db, pool, utils) = migrated_with_runs().await;
    let (worker, handle, running) = start(worker(&pool).concurrency(4)).await;
    wait_for_listener(&pool).await;
    let first = add_job(&utils, "gated", json!({"gate": "a"}), in_queue("q")).await;
    let second = add_job(&utils, "gated", json!({"gate": "b"}), in_queue("q")).await;
    wait_for_job_tag(&pool, first, "a:start", Duration::from_secs(10)).await;

    assert!(utils.pause_queue("q").await.unwrap());
    assert!(utils.resume_queue("q").await.unwrap());
    // Locked again by the running job's holder.
    let holder = attempts_and_holder(&pool, first).await.1;
    assert_eq!(holder.as_deref(), Some(worker.pool_id()));
    assert_eq!(queue_lock(&pool, "q").await.0, holder);
    let info = queue_info(&utils, "q").await;
    assert_eq!((info.paused, info.locked_by), (false, holder.clone()));

    // No second job of the queue starts beside it.
    rust_sentinel(&pool, &utils, "sentinel").await;
    assert_eq!(attempts_and_holder(&pool, second).await, (0, None));
    assert_eq!(tags_of(&pool, second).await, Vec::<String>::new());

    // When it ends, the queue is unlocked and the next job runs.
    open_gate(&pool, "a").await;
    wait_for_job_tag(&pool, second, "b:start", Duration::from_secs(10)).await;
    open_gate(&pool, "b").await;
    wait_gone(&pool, second).await;
    assert_eq!(
        common::tags(&pool).await,
        ["a:start", "sentinel", "a:done", "b:start", "b:done"]
    );
    wait_for_no_locks(&pool).await;
    shut_down(handle, running).await;
}

#[tokio::test]
async fn a_node_workers_running_job_keeps_its_queue_through_pause_and_resume() {
    let (db, pool, utils) = migrated_with_runs().await;
    let mut node_worker = spawn_node_worker(&db);
    let first = add_job(&utils, "node_gated", json!({"gate": "a"}), in_queue("q")).await;
    let second = add_job(&utils, "node_gated", json!({"gate": "b"}), in_queue("q")).await;
    let third = add_job(&utils, "node_gated", json!({"gate": "c"}), in_queue("q")).await;
    wait_for_job_tag(&pool, first, "a:start", Duration::from_secs(30)).await;
    let node_id = attempts_and_holder(&pool, first)
        .await
        .1
        .expect("Node holds the job");

    // Paused while Node runs the first job: it finishes, the queue stays
    // paused, and Node does not start the next.
    assert!(utils.pause_queue("q").await.unwrap());
    open_gate(&pool, "a").await;
    wait_gone(&pool, first).await;
    node_sentinel(&pool, &utils, "sentinel 1").await;
    assert_paused(&pool, &utils, "q").await;
    assert_eq!(attempts_and_holder(&pool, second).await, (0, None));

    // Resumed, Node runs the second; paused and resumed while it runs,
    // the queue is Node's again, and the third waits for the second.
    assert!(utils.resume_queue("q").await.unwrap());
    wait_for_job_tag(&pool, second, "b:start", Duration::from_secs(10)).await;
    assert!(utils.pause_queue("q").await.unwrap());
    assert!(utils.resume_queue("q").await.unwrap());
    assert_eq!(
        attempts_and_holder(&pool, second).await,
        (1, Some(node_id.clone()))
    );
    assert_eq!(
        queue_lock(&pool, "q").await.0.as_deref(),
        Some(node_id.as_str())
    );
    node_sentinel(&pool, &utils, "sentinel 2").await;
    assert_eq!(attempts_and_holder(&pool, third).await, (0, None));

    // Node's own completion unlocks the queue; the third runs.
    open_gate(&pool, "b").await;
    wait_for_job_tag(&pool, third, "c:start", Duration::from_secs(10)).await;
    open_gate(&pool, "c").await;
    wait_gone(&pool, third).await;
    assert_eq!(
        count(&pool, "select count(*) from runs where tag like '_:start'").await,
        3
    );
    wait_for_no_locks(&pool).await;
    node_worker.kill().await.expect("stop the Node worker");
}

#[tokio::test]
async fn pause_and_resume_say_whether_they_changed_anything() {
    let (_db, pool, utils) = migrated_with_runs().await;
    // Nothing to resume: no such queue, then a queue that is not paused.
    assert!(!utils.resume_queue("q").await.unwrap());
    add_job(&utils, "record", json!({"tag": "x"}), in_queue("q")).await;
    assert!(!utils.resume_queue("q").await.unwrap());
    assert!(!queue_info(&utils, "q").await.paused);

    assert!(utils.pause_queue("q").await.unwrap());
    assert!(!utils.pause_queue("q").await.unwrap());
    let info = queue_info(&utils, "q").await;
    assert_eq!(
        (
            info.paused,
            info.locked_by,
            info.locked_at,
            info.waiting,
            info.jobs
        ),
        (true, None, None, 1, 1)
    );
    assert!(utils.resume_queue("q").await.unwrap());
    assert!(!utils.resume_queue("q").await.unwrap());
    let info = queue_info(&utils, "q").await;
    assert_eq!((info.paused, info.locked_by), (false, None));
    assert_eq!(queue_lock(&pool, "q").await, (None, None));

    // A queue some worker holds is not paused: resuming leaves its lock.
    run_sql(
        &pool,
        "update graphile_worker._private_job_queues set locked_by = 'pool-x', \
           locked_at = now() where queue_name = 'q'",
    )
    .await;
    let held = queue_lock(&pool, "q").await;
    assert!(!utils.resume_queue("q").await.unwrap());
    assert_eq!(queue_lock(&pool, "q").await, held);

    // Node's force_unlock_workers(['paused']) resumes too.
    assert!(utils.pause_queue("q-forced").await.unwrap());
    run_sql(
        &pool,
        "select graphile_worker.force_unlock_workers(array['paused'])",
    )
    .await;
    assert!(!queue_info(&utils, "q-forced").await.paused);

    // The longest names, in characters.
    for name in ["q".repeat(128), "é".repeat(128)] {
        assert!(utils.pause_queue(&name).await.unwrap(), "{name}");
        assert!(queue_info(&utils, &name).await.paused, "{name}");
        assert!(utils.resume_queue(&name).await.unwrap(), "{name}");
    }

    // Invalid names.
    let long = "q".repeat(129);
    let cases = [
        ("", "invalid queue name \"\": it is empty".to_owned()),
        (
            long.as_str(),
            format!("invalid queue name \"{long}\": it is longer than 128 characters"),
        ),
    ];
    for (name, message) in &cases {
        for result in [
            utils.pause_queue(name).await,
            utils.resume_queue(name).await,
        ] {
            let err = result.expect_err("an invalid name");
            assert!(
                matches!(&err, Error::InvalidQueueName { name: n, .. } if n == name),
                "{err:?}"
            );
            assert_eq!(err.to_string(), *message);
        }
    }
    assert_eq!(
        count(
            &pool,
            "select count(*) from graphile_worker._private_job_queues \
               where queue_name = '' or length(queue_name) > 128"
        )
        .await,
        0
    );
}

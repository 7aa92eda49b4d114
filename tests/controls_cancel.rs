//! `WorkerUtils::cancel_job`, as users see it: a job no one holds fails
//! permanently at once (and no worker ever runs it); a job our worker is
//! running is told to stop (`CancelReason::Cancelled`, distinct from
//! shutdown), gets the worker's cancel grace period, and then ends
//! permanently failed with `cancelled: <reason>`, never retried, whether
//! the task honours the request or ignores it (it is dropped after the
//! grace); a job waiting in a worker's local queue is failed without
//! starting; a job held by a real Node graphile-worker 0.18 runs to its
//! end and is not retried after it fails; cancelling twice, or an unknown
//! id, changes nothing.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{
    add_job, count, eventually, in_queue, migrated_with_runs, note, open_gate, set_job, shut_down,
    start, wait_for_listener, wait_for_no_locks, wait_for_tag, worker,
};
use graphile_worker::{CancelOutcome, CancelReason, JobContext, JobSpec, NewJob, Task, TaskError};
use graphile_worker_dev::node;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio::process::Command;

/// Records `start`, waits until it is asked to stop, records what it was
/// told (`seen …`), and returns an error.
#[derive(Serialize, Deserialize)]
struct Honours {}

impl Task for Honours {
    const IDENTIFIER: &'static str = "honours_cancel";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        note(&ctx, "start").await?;
        ctx.cancelled().await;
        let seen = match ctx.cancel_reason() {
            Some(CancelReason::Cancelled { reason }) => format!("seen cancelled: {reason}"),
            Some(CancelReason::Shutdown) => "seen shutdown".to_owned(),
            other => format!("seen other: {other:?}"),
        };
        note(&ctx, &seen).await?;
        Err(TaskError::new("stopped on request"))
    }
}

/// Records `start`, then ignores every request to stop: it would record
/// `finished` after a minute.
#[derive(Serialize, Deserialize)]
struct Ignores {}

impl Task for Ignores {
    const IDENTIFIER: &'static str = "ignores_cancel";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        note(&ctx, "start").await?;
        tokio::time::sleep(Duration::from_secs(60)).await;
        note(&ctx, "finished").await
    }
}

/// Does nothing, fast.
#[derive(Serialize, Deserialize)]
struct Quick {}

impl Task for Quick {
    const IDENTIFIER: &'static str = "quick";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// What a job's row says about its fate.
#[derive(Clone, Debug, PartialEq)]
struct Fate {
    attempts: i16,
    max_attempts: i16,
    last_error: Option<String>,
    locked_by: Option<String>,
    locked: bool,
    run_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The columns [`Fate`] is read from, in order.
type FateRow = (
    i16,
    i16,
    Option<String>,
    Option<String>,
    bool,
    DateTime<Utc>,
    DateTime<Utc>,
);

/// Job `id`'s row; `None` once it is gone.
async fn fate(pool: &PgPool, id: i64) -> Option<Fate> {
    let row: Option<FateRow> = sqlx::query_as(
        "select attempts, max_attempts, last_error, locked_by, locked_at is not null, \
               run_at, updated_at from graphile_worker._private_jobs where id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .expect("read a job");
    row.map(
        |(attempts, max_attempts, last_error, locked_by, locked, run_at, updated_at)| Fate {
            attempts,
            max_attempts,
            last_error,
            locked_by,
            locked,
            run_at,
            updated_at,
        },
    )
}

/// Job `id`'s row, which must exist.
async fn row(pool: &PgPool, id: i64) -> Fate {
    fate(pool, id)
        .await
        .unwrap_or_else(|| panic!("job {id} is gone"))
}

/// Waits (at most `within`) until job `id` is in the table and unlocked.
async fn wait_unlocked(pool: &PgPool, id: i64, within: Duration) -> Fate {
    eventually(within, &format!("job {id} to be unlocked"), || async move {
        fate(pool, id).await.filter(|f| !f.locked)
    })
    .await
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

/// Asserts that `fate` is a permanently failed, unlocked job whose last
/// error is `message`.
fn assert_failed_for_good(fate: &Fate, message: &str) {
    assert_eq!(fate.last_error.as_deref(), Some(message), "{fate:?}");
    assert!(
        fate.attempts >= fate.max_attempts,
        "the job can still be retried: {fate:?}"
    );
    assert!(!fate.locked, "{fate:?}");
    assert_eq!(fate.locked_by, None, "{fate:?}");
}

#[tokio::test]
async fn a_job_no_one_holds_fails_for_good_and_no_worker_runs_it() {
    let (_db, pool, utils) = migrated_with_runs().await;
    let waiting = add_job(
        &utils,
        "record",
        json!({"tag": "waiting job ran"}),
        JobSpec {
            max_attempts: Some(5),
            ..Default::default()
        },
    )
    .await;
    let retrying = add_job(
        &utils,
        "record",
        json!({"tag": "retrying job ran"}),
        in_queue("q-cancel"),
    )
    .await;
    set_job(&pool, retrying, "attempts = 2, last_error = 'boom'").await;
    let long_winded = add_job(
        &utils,
        "record",
        json!({"tag": "long-winded job ran"}),
        JobSpec::default(),
    )
    .await;

    assert_eq!(
        utils.cancel_job(waiting, "customer left").await.unwrap(),
        CancelOutcome::Failed
    );
    let waiting_row = row(&pool, waiting).await;
    assert_failed_for_good(&waiting_row, "cancelled: customer left");
    assert_eq!((waiting_row.attempts, waiting_row.max_attempts), (5, 5));

    assert_eq!(
        utils.cancel_job(retrying, "duplicate order").await.unwrap(),
        CancelOutcome::Failed
    );
    let retrying_row = row(&pool, retrying).await;
    assert_failed_for_good(&retrying_row, "cancelled: duplicate order");
    assert_eq!((retrying_row.attempts, retrying_row.max_attempts), (25, 25));

    // A reason over 1,000 characters is cut there.
    let long_reason = "r".repeat(1005);
    assert_eq!(
        utils.cancel_job(long_winded, &long_reason).await.unwrap(),
        CancelOutcome::Failed
    );
    assert_failed_for_good(
        &row(&pool, long_winded).await,
        &format!("cancelled: {}…", "r".repeat(1000)),
    );

    // A second cancellation finds it failed already and changes nothing.
    assert_eq!(
        utils.cancel_job(waiting, "again").await.unwrap(),
        CancelOutcome::AlreadyFailed
    );
    assert_eq!(row(&pool, waiting).await, waiting_row);
    // An unknown id.
    let max_id = count(&pool, "select max(id) from graphile_worker._private_jobs").await;
    assert_eq!(
        utils
            .cancel_job(max_id + 1000, "no such job")
            .await
            .unwrap(),
        CancelOutcome::NotFound
    );

    // A worker started now runs a job added after them, and never them
    // (they come first in claim order).
    let (_worker, handle, running) = start(worker(&pool)).await;
    add_job(
        &utils,
        "record",
        json!({"tag": "sentinel"}),
        JobSpec::default(),
    )
    .await;
    wait_for_tag(&pool, "sentinel").await;
    assert_eq!(common::tags(&pool).await, ["sentinel"]);
    assert_eq!(row(&pool, waiting).await, waiting_row);
    assert_eq!(row(&pool, retrying).await, retrying_row);
    wait_for_no_locks(&pool).await;
    shut_down(handle, running).await;
}

#[tokio::test]
async fn a_running_task_that_honours_cancellation_fails_for_good_and_is_not_retried() {
    let (_db, pool, utils) = migrated_with_runs().await;
    let (worker, handle, running) = start(
        worker(&pool)
            .register::<Honours>()
            .cancel_grace_period(Duration::from_secs(10)),
    )
    .await;
    wait_for_listener(&pool).await;
    let job = add_job(&utils, "honours_cancel", json!({}), in_queue("q-honours")).await;
    wait_for_job_tag(&pool, job, "start", Duration::from_secs(10)).await;
    assert_eq!(
        row(&pool, job).await.locked_by.as_deref(),
        Some(worker.pool_id())
    );

    let asked = Instant::now();
    assert_eq!(
        utils.cancel_job(job, "no longer needed").await.unwrap(),
        CancelOutcome::Signalled {
            locked_by: worker.pool_id().to_owned()
        }
    );
    let failed = wait_unlocked(&pool, job, Duration::from_secs(8)).await;
    // The task returned on its own, well before the 10 s grace ran out.
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "took {:?}",
        asked.elapsed()
    );
    assert_failed_for_good(&failed, "cancelled: no longer needed");
    assert_eq!((failed.attempts, failed.max_attempts), (1, 1));
    // It saw a cancellation with the caller's reason, not a shutdown.
    assert_eq!(
        tags_of(&pool, job).await,
        ["start", "seen cancelled: no longer needed"]
    );
    wait_for_no_locks(&pool).await;

    // Not retried: a job added after it, even with it due again, runs on
    // the same worker while it stays as it is.
    set_job(&pool, job, "run_at = now() - interval '1 second'").await;
    let failed = row(&pool, job).await;
    add_job(
        &utils,
        "record",
        json!({"tag": "sentinel"}),
        JobSpec::default(),
    )
    .await;
    wait_for_tag(&pool, "sentinel").await;
    assert_eq!(row(&pool, job).await, failed);
    assert_eq!(
        count(&pool, "select count(*) from runs where tag = 'start'").await,
        1
    );

    // A shutdown is told apart from a cancellation: the next job sees
    // `Shutdown` and is not failed for good.
    let next = add_job(&utils, "honours_cancel", json!({}), JobSpec::default()).await;
    wait_for_job_tag(&pool, next, "start", Duration::from_secs(10)).await;
    shut_down(handle, running).await;
    assert_eq!(tags_of(&pool, next).await, ["start", "seen shutdown"]);
    let given_back = row(&pool, next).await;
    assert!(!given_back.locked, "{given_back:?}");
    assert!(
        given_back.attempts < given_back.max_attempts,
        "{given_back:?}"
    );
    assert!(
        !given_back
            .last_error
            .as_deref()
            .unwrap_or_default()
            .starts_with("cancelled"),
        "{given_back:?}"
    );
}

#[tokio::test]
async fn a_running_task_that_ignores_cancellation_is_dropped_after_the_grace_period() {
    const GRACE: Duration = Duration::from_secs(1);
    let (_db, pool, utils) = migrated_with_runs().await;
    // One slot: a job added later can only start once the ignoring task
    // is gone.
    let (worker, handle, running) = start(
        worker(&pool)
            .register::<Ignores>()
            .concurrency(1)
            .cancel_grace_period(GRACE),
    )
    .await;
    wait_for_listener(&pool).await;
    let job = add_job(&utils, "ignores_cancel", json!({}), in_queue("q-ignores")).await;
    wait_for_job_tag(&pool, job, "start", Duration::from_secs(10)).await;

    let asked = Instant::now();
    assert_eq!(
        utils.cancel_job(job, "taking too long").await.unwrap(),
        CancelOutcome::Signalled {
            locked_by: worker.pool_id().to_owned()
        }
    );
    // Until the grace runs out the job stays held, and can no longer be
    // retried.
    let marked = row(&pool, job).await;
    assert!(marked.locked, "{marked:?}");
    assert_eq!(
        marked.last_error.as_deref(),
        Some("cancelled: taking too long")
    );
    assert_eq!((marked.attempts, marked.max_attempts), (1, 1));
    let sentinel = add_job(
        &utils,
        "record",
        json!({"tag": "sentinel"}),
        JobSpec::default(),
    )
    .await;

    let failed = wait_unlocked(&pool, job, GRACE + Duration::from_secs(4)).await;
    assert!(
        asked.elapsed() < GRACE + Duration::from_secs(4),
        "took {:?}",
        asked.elapsed()
    );
    assert_failed_for_good(&failed, "cancelled: taking too long");
    assert_eq!((failed.attempts, failed.max_attempts), (1, 1));
    // Failed no sooner than the grace after the cancellation (both times
    // are the database's: the cancellation's write and the failure's).
    let waited = (failed.updated_at - marked.updated_at)
        .to_std()
        .expect("the failure comes after the cancellation");
    assert!(waited >= GRACE, "failed {waited:?} after the cancellation");

    // The only slot is free again: the task (which would sleep a minute)
    // was dropped.
    wait_for_job_tag(&pool, sentinel, "sentinel", Duration::from_secs(5)).await;
    assert_eq!(tags_of(&pool, job).await, ["start"]);
    wait_for_no_locks(&pool).await;
    shut_down(handle, running).await;
    assert_eq!(tags_of(&pool, job).await, ["start"]);
}

#[tokio::test]
async fn a_job_waiting_in_the_local_queue_is_failed_without_starting() {
    let (_db, pool, utils) = migrated_with_runs().await;
    // Many short jobs teach the worker to claim ahead; the gated jobs
    // after them (lower priority) are claimed into its local queue while
    // its two slots are busy with the first two of them.
    let mut jobs: Vec<NewJob> = (0..3000).map(|_| NewJob::new("quick", json!({}))).collect();
    jobs.extend((0..6).map(|n| NewJob {
        spec: JobSpec {
            priority: Some(1),
            ..Default::default()
        },
        ..NewJob::new("gated", json!({"gate": format!("slow-{n}")}))
    }));
    utils.add_raw_jobs(&jobs).await.unwrap();
    let (worker, handle, running) = start(
        worker(&pool)
            .register::<Quick>()
            .concurrency(2)
            .poll_interval(Duration::from_secs(3600)),
    )
    .await;
    wait_for_listener(&pool).await;
    eventually(
        Duration::from_secs(30),
        "the short jobs to be done and two gated jobs to start",
        || async {
            (count(
                &pool,
                "select count(*) from graphile_worker.jobs where task_identifier = 'quick'",
            )
            .await
                == 0
                && count(
                    &pool,
                    "select count(*) from runs where tag like 'slow-%:start'",
                )
                .await
                    == 2)
                .then_some(())
        },
    )
    .await;
    // A gated job this worker holds but has not started.
    let waiting: Option<i64> = sqlx::query_scalar(
        "select j.id from graphile_worker.jobs j where j.task_identifier = 'gated' \
           and j.locked_by = $1 and not exists (select 1 from runs r where r.job_id = j.id) \
         order by j.id limit 1",
    )
    .bind(worker.pool_id())
    .fetch_optional(&pool)
    .await
    .unwrap();
    let waiting = waiting.expect("the worker holds a gated job it has not started");
    assert_eq!(
        utils.cancel_job(waiting, "not wanted").await.unwrap(),
        CancelOutcome::Signalled {
            locked_by: worker.pool_id().to_owned()
        }
    );
    // Let every gated job finish once it starts.
    for n in 0..6 {
        open_gate(&pool, &format!("slow-{n}")).await;
    }
    wait_for_count_of_gated(&pool, 1).await;
    let failed = wait_unlocked(&pool, waiting, Duration::from_secs(10)).await;
    assert_failed_for_good(&failed, "cancelled: not wanted");
    assert_eq!(tags_of(&pool, waiting).await, Vec::<String>::new());
    // The five others ran, each once.
    assert_eq!(
        count(
            &pool,
            "select count(*) from runs where tag like 'slow-%:done'"
        )
        .await,
        5
    );
    assert_eq!(
        count(
            &pool,
            "select count(distinct job_id) from runs where tag like 'slow-%:start'"
        )
        .await,
        5
    );
    wait_for_no_locks(&pool).await;
    shut_down(handle, running).await;
}

/// Waits until `n` gated jobs are left in the table (at most 20 s).
async fn wait_for_count_of_gated(pool: &PgPool, n: i64) {
    common::wait_for_count(
        pool,
        Duration::from_secs(20),
        &format!("{n} gated jobs left"),
        "select count(*) from graphile_worker.jobs where task_identifier = 'gated'",
        |c| c == n,
    )
    .await;
}

/// A Node graphile-worker 0.18 worker: `node_gated` records
/// `<gate>:start`, waits for its gate, records `<gate>:done` and throws;
/// `node_sentinel` records its tag.
const NODE_WORKER: &str = r#"
const { run } = require("graphile-worker");
(async () => {
  const runner = await run({
    connectionString: process.env.DATABASE_URL,
    concurrency: 1,
    pollInterval: 200,
    noHandleSignals: false,
    taskList: {
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
        throw new Error("node task gave up on " + payload.gate);
      },
      node_sentinel: async (payload, helpers) => {
        await helpers.query(
          "insert into runs (tag, job_id, attempts) values ($1, $2, $3)",
          [payload.tag, helpers.job.id, helpers.job.attempts]);
      },
    },
  });
  await runner.promise;
})().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
"#;

#[tokio::test]
async fn a_node_workers_job_runs_to_its_end_and_is_not_retried() {
    let (db, pool, utils) = migrated_with_runs().await;
    let mut node_worker = Command::from(node::js_command(&db.url, "graphile_worker", NODE_WORKER))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node");
    let job = add_job(
        &utils,
        "node_gated",
        json!({"gate": "node-job"}),
        in_queue("q-node"),
    )
    .await;
    wait_for_job_tag(&pool, job, "node-job:start", Duration::from_secs(30)).await;
    let held = row(&pool, job).await;
    let node_id = held.locked_by.clone().expect("Node holds the job");

    assert_eq!(
        utils.cancel_job(job, "stop it").await.unwrap(),
        CancelOutcome::NotInterruptible {
            locked_by: node_id.clone()
        }
    );
    // Node keeps it; it can no longer be retried.
    let marked = row(&pool, job).await;
    assert_eq!(marked.locked_by.as_deref(), Some(node_id.as_str()));
    assert_eq!(marked.last_error.as_deref(), Some("cancelled: stop it"));
    assert_eq!((marked.attempts, marked.max_attempts), (1, 1));

    // The Node task runs to its end, and throws.
    open_gate(&pool, "node-job").await;
    let failed = wait_unlocked(&pool, job, Duration::from_secs(10)).await;
    assert_failed_for_good(&failed, "node task gave up on node-job");
    assert_eq!(
        tags_of(&pool, job).await,
        ["node-job:start", "node-job:done"]
    );

    // Not retried: even due again, Node runs a job added after it and
    // leaves it alone.
    set_job(&pool, job, "run_at = now() - interval '1 second'").await;
    let failed = row(&pool, job).await;
    let sentinel = add_job(
        &utils,
        "node_sentinel",
        json!({"tag": "node sentinel"}),
        JobSpec::default(),
    )
    .await;
    wait_for_job_tag(&pool, sentinel, "node sentinel", Duration::from_secs(10)).await;
    assert_eq!(row(&pool, job).await, failed);
    assert_eq!(
        tags_of(&pool, job).await,
        ["node-job:start", "node-job:done"]
    );
    wait_for_no_locks(&pool).await;

    node_worker.kill().await.expect("stop the Node worker");
}

//! Batch jobs: items added with one job key gather in one job; the batch
//! task settles each item; only the failed items stay, as the job's
//! payload, for the retry. Both ways with Node graphile-worker 0.18.

mod common;

use common::{migrated, run_sql};
use std::sync::Arc;
use std::time::Duration;

use graphile_worker::{
    Batch, BatchTask, Data, JobContext, JobSpec, TaskError, Worker, WorkerUtils, task,
};
use graphile_worker_dev::{TestDatabase, node};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::Notify;

/// One number of a batch; even numbers fail on their first attempt.
#[derive(Debug, Serialize, Deserialize)]
struct Num(i64);

impl BatchTask for Num {
    const IDENTIFIER: &'static str = "batch_nums";
    async fn run_batch(
        items: Vec<Num>,
        ctx: JobContext,
    ) -> Result<Vec<Result<(), TaskError>>, TaskError> {
        let mut results = Vec::new();
        for Num(n) in items {
            sqlx::query("insert into seen (n, attempt, runner) values ($1, $2, 'rust')")
                .bind(n)
                .bind(ctx.attempts())
                .execute(ctx.utils().pool())
                .await
                .map_err(|e| TaskError::new(e.to_string()))?;
            results.push(if n % 2 == 0 && ctx.attempts() == 1 {
                Err(TaskError::new(format!("{n} is even")))
            } else {
                Ok(())
            });
        }
        Ok(results)
    }
}

/// A batch task that answers with the wrong number of results.
#[derive(Debug, Serialize, Deserialize)]
struct Miscounted(i64);

impl BatchTask for Miscounted {
    const IDENTIFIER: &'static str = "miscounted";
    async fn run_batch(
        _items: Vec<Miscounted>,
        _ctx: JobContext,
    ) -> Result<Vec<Result<(), TaskError>>, TaskError> {
        Ok(vec![Ok(())])
    }
}

/// The same as [`Num`], declared with `#[task(batch)]`: the items are plain
/// numbers, and a database error fails the whole batch.
#[task(batch)]
async fn macro_nums(
    nums: Vec<i64>,
    ctx: JobContext,
) -> Result<Vec<Result<(), TaskError>>, sqlx::Error> {
    let mut results = Vec::new();
    for n in nums {
        sqlx::query("insert into seen (n, attempt, runner) values ($1, $2, 'macro')")
            .bind(n)
            .bind(ctx.attempts())
            .execute(ctx.utils().pool())
            .await?;
        results.push(if n % 2 == 0 && ctx.attempts() == 1 {
            Err(TaskError::new(format!("{n} is even")))
        } else {
            Ok(())
        });
    }
    Ok(results)
}

/// A batch task without a context, failing the items "bad" for good.
#[task(batch)]
async fn plain_words(words: Vec<String>) -> Vec<Result<(), TaskError>> {
    words
        .iter()
        .map(|w| {
            if w == "bad" {
                Err(TaskError::permanent(format!("{w} is bad")))
            } else {
                Ok(())
            }
        })
        .collect()
}

/// Lets the test act while a batch runs: the task says it started, then
/// waits for the release.
#[derive(Clone, Default)]
struct Gate {
    started: Arc<Notify>,
    release: Arc<Notify>,
}

/// Fails the even numbers, once the test releases it.
#[task(batch)]
async fn gated_nums(gate: Data<Gate>, nums: Vec<i64>) -> Vec<Result<(), TaskError>> {
    gate.started.notify_one();
    gate.release.notified().await;
    nums.iter()
        .map(|n| {
            if n % 2 == 0 {
                Err(TaskError::new(format!("{n} is even")))
            } else {
                Ok(())
            }
        })
        .collect()
}

fn keyed(key: &str) -> JobSpec {
    JobSpec {
        job_key: Some(key.into()),
        ..Default::default()
    }
}

async fn setup() -> (TestDatabase, PgPool, WorkerUtils) {
    let (db, pool, utils) = migrated().await;
    run_sql(
        &pool,
        "create table seen (n bigint, attempt smallint, runner text)",
    )
    .await;
    (db, pool, utils)
}

/// Runs what is due once with our worker.
async fn run_ours(pool: &PgPool) {
    Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<Batch<Num>>()
        .register::<Batch<Miscounted>>()
        .register::<MacroNums>()
        .register::<PlainWords>()
        .init()
        .await
        .expect("start")
        .run_once()
        .await
        .expect("run once");
}

/// The batch job's payload, attempts and last error.
async fn the_job(pool: &PgPool) -> Option<(serde_json::Value, i16, Option<String>)> {
    sqlx::query_as("select payload, attempts, last_error from graphile_worker._private_jobs")
        .fetch_optional(pool)
        .await
        .expect("read the job")
}

async fn seen(pool: &PgPool) -> Vec<(i64, i16, String)> {
    sqlx::query_as("select n, attempt, runner from seen order by attempt, runner, n")
        .fetch_all(pool)
        .await
        .expect("read seen")
}

async fn make_due(pool: &PgPool) {
    run_sql(
        pool,
        "update graphile_worker._private_jobs set run_at = now() where run_at > now()",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_items_gather_in_one_job_and_only_failed_items_are_retried() {
    let (_db, pool, utils) = setup().await;
    let first = utils
        .add_job(Batch(vec![Num(1), Num(2)]), keyed("k"))
        .await
        .expect("add");
    let second = utils
        .add_job(Batch(vec![Num(3), Num(4)]), keyed("k"))
        .await
        .expect("add");
    assert_eq!(first.id, second.id, "one job");
    assert_eq!(
        the_job(&pool).await,
        Some((serde_json::json!([1, 2, 3, 4]), 0, None))
    );

    run_ours(&pool).await;
    assert_eq!(
        the_job(&pool).await,
        Some((
            serde_json::json!([2, 4]),
            1,
            Some("Batch failures:\n2 is even\n4 is even".into())
        )),
        "the failed items stay, to be retried"
    );
    make_due(&pool).await;
    run_ours(&pool).await;
    assert_eq!(the_job(&pool).await, None, "the retry settled the rest");
    let rust = |n, attempt| (n, attempt, "rust".to_owned());
    assert_eq!(
        seen(&pool).await,
        vec![
            rust(1, 1),
            rust(2, 1),
            rust(3, 1),
            rust(4, 1),
            rust(2, 2),
            rust(4, 2)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_declared_with_task_batch_settles_each_item() {
    let (_db, pool, utils) = setup().await;
    MacroNums::enqueue_with(&utils, MacroNums(vec![1, 2]), keyed("m"))
        .await
        .expect("add");
    MacroNums::enqueue_with(&utils, MacroNums(vec![3, 4]), keyed("m"))
        .await
        .expect("add");
    run_ours(&pool).await;
    assert_eq!(
        the_job(&pool).await,
        Some((
            serde_json::json!([2, 4]),
            1,
            Some("Batch failures:\n2 is even\n4 is even".into())
        ))
    );
    make_due(&pool).await;
    run_ours(&pool).await;
    assert_eq!(the_job(&pool).await, None);
    assert_eq!(seen(&pool).await.len(), 6);

    // Every failed item permanent: the job fails for good, keeping them.
    PlainWords::enqueue(
        &utils,
        PlainWords(vec!["good".into(), "bad".into(), "fine".into()]),
    )
    .await
    .expect("add");
    run_ours(&pool).await;
    let (payload, attempts, error) = the_job(&pool).await.expect("kept");
    assert_eq!(payload, serde_json::json!(["bad"]));
    assert_eq!(error.as_deref(), Some("Batch failures:\nbad is bad"));
    let max: i16 = sqlx::query_scalar("select max_attempts from graphile_worker._private_jobs")
        .fetch_one(&pool)
        .await
        .expect("read");
    assert_eq!(attempts, max, "failed permanently");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_number_of_results_retries_the_whole_batch() {
    let (_db, pool, utils) = setup().await;
    utils
        .add_job(
            Batch(vec![Miscounted(1), Miscounted(2)]),
            JobSpec::default(),
        )
        .await
        .expect("add");
    run_ours(&pool).await;
    assert_eq!(
        the_job(&pool).await,
        Some((
            serde_json::json!([1, 2]),
            1,
            Some(
                "batch task miscounted returned 1 results for 2 items; the whole batch will be retried"
                    .into()
            )
        ))
    );
}

const NODE_ADD: &str = r#"
const { makeWorkerUtils } = require("graphile-worker");
(async () => {
  const utils = await makeWorkerUtils({ connectionString: process.env.DATABASE_URL });
  await utils.addJob("batch_nums", [1, 2], { jobKey: "k" });
  await utils.addJob("batch_nums", [3, 4], { jobKey: "k" });
  await utils.release();
})().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
"#;

/// Node's batch task: each number is recorded; even ones fail on the first
/// attempt (a per-element promise array, Node's batch form). Node runs until
/// no job is due, then stops (which waits for its jobs' outcomes).
const NODE_RUN: &str = r#"
const { run } = require("graphile-worker");
const { Pool } = require("pg");
(async () => {
  const pool = new Pool({ connectionString: process.env.DATABASE_URL });
  const runner = await run({
    connectionString: process.env.DATABASE_URL,
    concurrency: 1,
    pollInterval: 50,
    noHandleSignals: true,
    taskList: {
      batch_nums: (payload, helpers) => payload.map(async (n) => {
        await helpers.query("insert into seen (n, attempt, runner) values ($1, $2, 'node')",
          [n, helpers.job.attempts]);
        if (n % 2 === 0 && helpers.job.attempts === 1) throw new Error(`${n} is even`);
      }),
    },
  });
  const deadline = Date.now() + 30000;
  for (;;) {
    const { rows } = await pool.query(
      "select count(*)::int as n from graphile_worker._private_jobs where run_at <= now()");
    if (rows[0].n === 0) break;
    if (Date.now() > deadline) throw new Error("jobs still due after 30 s");
    await new Promise((r) => setTimeout(r, 50));
  }
  await runner.stop();
  await pool.end();
})().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_added_by_node_runs_here_and_its_failures_run_on_node() {
    let (db, pool, _utils) = setup().await;
    node::run_js_ok(&db.url, "graphile_worker", NODE_ADD).await;
    assert_eq!(
        the_job(&pool).await,
        Some((serde_json::json!([1, 2, 3, 4]), 0, None)),
        "Node gathered the items in one job"
    );
    run_ours(&pool).await;
    let (payload, attempts, error) = the_job(&pool).await.expect("the job stays");
    assert_eq!((payload, attempts), (serde_json::json!([2, 4]), 1));
    assert_eq!(
        error.as_deref(),
        Some("Batch failures:\n2 is even\n4 is even")
    );
    make_due(&pool).await;
    let out = node::run_js_ok(&db.url, "graphile_worker", NODE_RUN).await;
    assert_eq!(
        the_job(&pool).await,
        None,
        "Node settled the rest; it said:\n{out}\nruns: {:?}",
        seen(&pool).await
    );
    let seen = seen(&pool).await;
    assert_eq!(
        seen,
        vec![
            (1, 1, "rust".to_owned()),
            (2, 1, "rust".to_owned()),
            (3, 1, "rust".to_owned()),
            (4, 1, "rust".to_owned()),
            (2, 2, "node".to_owned()),
            (4, 2, "node".to_owned()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_added_here_runs_on_node_and_its_failures_run_here() {
    let (db, pool, utils) = setup().await;
    utils
        .add_job(Batch(vec![Num(1), Num(2)]), keyed("k"))
        .await
        .expect("add");
    utils
        .add_job(Batch(vec![Num(3), Num(4)]), keyed("k"))
        .await
        .expect("add");
    node::run_js_ok(&db.url, "graphile_worker", NODE_RUN).await;
    let (payload, attempts, error) = the_job(&pool).await.expect("the job stays");
    assert_eq!((payload, attempts), (serde_json::json!([2, 4]), 1));
    let error = error.unwrap_or_default();
    assert!(
        error.starts_with("Batch failures:")
            && error.contains("2 is even")
            && error.contains("4 is even"),
        "{error}"
    );
    make_due(&pool).await;
    run_ours(&pool).await;
    assert_eq!(the_job(&pool).await, None, "we settled the rest");
    assert_eq!(
        seen(&pool).await,
        vec![
            (1, 1, "node".to_owned()),
            (2, 1, "node".to_owned()),
            (3, 1, "node".to_owned()),
            (4, 1, "node".to_owned()),
            (2, 2, "rust".to_owned()),
            (4, 2, "rust".to_owned()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_added_while_a_batch_runs_are_not_lost_when_it_fails() {
    let (_db, pool, utils) = setup().await;
    let first = GatedNums::enqueue_with(&utils, GatedNums(vec![1, 2]), keyed("g"))
        .await
        .expect("add");
    GatedNums::enqueue_with(&utils, GatedNums(vec![3, 4]), keyed("g"))
        .await
        .expect("add");
    let gate = Gate::default();
    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<GatedNums>()
        .data(gate.clone())
        .init()
        .await
        .expect("start");
    let running = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run().await }
    });
    tokio::time::timeout(Duration::from_secs(20), gate.started.notified())
        .await
        .expect("the batch to start");
    // The key moves to a new job; the running one gives it up and will not
    // be retried (Node's rule), and it changed since the claim.
    let second = GatedNums::enqueue_with(&utils, GatedNums(vec![5]), keyed("g"))
        .await
        .expect("add while running");
    assert_ne!(second.id, first.id);
    gate.release.notify_one();
    common::eventually(Duration::from_secs(20), "the outcome to be written", || {
        let pool = pool.clone();
        async move {
            let locked: bool = sqlx::query_scalar(
                "select locked_at is not null from graphile_worker._private_jobs where id = $1",
            )
            .bind(first.id)
            .fetch_one(&pool)
            .await
            .expect("read");
            (!locked).then_some(())
        }
    })
    .await;
    worker.shutdown_handle().shutdown();
    running.await.expect("join").expect("run");

    let (payload, error, spent): (serde_json::Value, Option<String>, bool) = sqlx::query_as(
        "select payload, last_error, attempts >= max_attempts from graphile_worker._private_jobs where id = $1",
    )
    .bind(first.id)
    .fetch_one(&pool)
    .await
    .expect("read the first job");
    assert_eq!(
        payload,
        serde_json::json!([1, 2, 3, 4]),
        "a job changed since its claim keeps its payload"
    );
    assert_eq!(
        error.as_deref(),
        Some("Batch failures:\n2 is even\n4 is even")
    );
    assert!(spent, "it will not be retried");
}

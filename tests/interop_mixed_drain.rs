//! A Node graphile-worker 0.18 and ours drain one mixed set of jobs
//! together: every job runs exactly once. Each side also has jobs only it
//! can run (added by the other side), so both necessarily take part.

mod common;

use std::time::Duration;

use common::{count, eventually, locks_held, migrated, run_sql};
use graphile_worker::{JobContext, NewJob, Task, TaskError, Worker};
use graphile_worker_dev::node;
use serde::{Deserialize, Serialize};
use serde_json::json;

async fn record(ctx: &JobContext, n: i64) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(3)).await;
    sqlx::query("insert into runs (n, task, runner) values ($1, $2, 'rust')")
        .bind(n)
        .bind(&ctx.job().task_identifier)
        .execute(ctx.utils().pool())
        .await
        .map_err(|e| TaskError::new(e.to_string()))?;
    Ok(())
}

/// Either side may run these.
#[derive(Serialize, Deserialize)]
struct Mixed {
    n: i64,
}

impl Task for Mixed {
    const IDENTIFIER: &'static str = "mixed";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        record(&ctx, self.n).await
    }
}

/// Only we run these (Node's task list does not have it).
#[derive(Serialize, Deserialize)]
struct RustOnly {
    n: i64,
}

impl Task for RustOnly {
    const IDENTIFIER: &'static str = "rust_only";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        record(&ctx, self.n).await
    }
}

/// Node adds half the mixed jobs, then the jobs only we can run.
const NODE_ADD: &str = r#"
const { makeWorkerUtils } = require("graphile-worker");
(async () => {
  const utils = await makeWorkerUtils({ connectionString: process.env.DATABASE_URL });
  const specs = [];
  for (let n = 1000; n < 2000; n++) specs.push({ identifier: "mixed", payload: { n } });
  for (let n = 3000; n < 3100; n++) specs.push({ identifier: "rust_only", payload: { n } });
  await utils.addJobs(specs);
  await utils.release();
})().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
"#;

/// Node runs `mixed` and `node_only`, never `rust_only`.
const NODE_DRAIN: &str = r#"
const { runOnce } = require("graphile-worker");
const run = async (payload, helpers) => {
  await new Promise((r) => setTimeout(r, 3));
  await helpers.query("insert into runs (n, task, runner) values ($1, $2, 'node')",
    [payload.n, helpers.job.task_identifier]);
};
runOnce({
  connectionString: process.env.DATABASE_URL,
  concurrency: 4,
  taskList: { mixed: run, node_only: run },
}).then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
"#;

#[tokio::test]
async fn node_and_rust_drain_two_thousand_jobs_each_exactly_once() {
    let (db, pool, utils) = migrated().await;
    run_sql(
        &pool,
        "create table runs (n bigint not null, task text not null, runner text not null)",
    )
    .await;
    // Half the mixed jobs added by Node, half by us; each side adds the
    // jobs only the other side runs.
    node::run_js_ok(&db.url, "graphile_worker", NODE_ADD).await;
    let mut ours: Vec<NewJob> = (0..1000)
        .map(|n| NewJob::new("mixed", json!({ "n": n })))
        .collect();
    ours.extend((2000..2100).map(|n| NewJob::new("node_only", json!({ "n": n }))));
    utils.add_raw_jobs(&ours).await.unwrap();
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        2200
    );

    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .concurrency(4)
        .register::<Mixed>()
        .register::<RustOnly>()
        .init()
        .await
        .unwrap();
    let url = db.url.clone();
    let node_side =
        tokio::spawn(async move { node::run_js_ok(&url, "graphile_worker", NODE_DRAIN).await });
    // Start once Node is running jobs, so that the two really drain the
    // mixed jobs side by side (Node takes a while to start).
    eventually(
        Duration::from_secs(60),
        "Node to start running jobs",
        || {
            let pool = pool.clone();
            let node_done = node_side.is_finished();
            async move {
                (node_done
                    || count(&pool, "select count(*) from runs where runner = 'node'").await > 0)
                    .then_some(())
            }
        },
    )
    .await;
    worker.run_once().await.unwrap();
    node_side.await.unwrap();
    // Whatever Node was still running when we finished is done now too.
    worker.run_once().await.unwrap();

    // Every job ran, exactly once.
    assert_eq!(count(&pool, "select count(*) from runs").await, 2200);
    assert_eq!(
        count(&pool, "select count(distinct n) from runs").await,
        2200
    );
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        0,
        "jobs left behind"
    );
    // Both took part, each running the jobs only it can, whichever side
    // added them.
    assert_eq!(
        count(
            &pool,
            "select count(*) from runs where task = 'rust_only' and runner = 'rust'"
        )
        .await,
        100
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from runs where task = 'node_only' and runner = 'node'"
        )
        .await,
        100
    );
    // Nothing stays locked: no job, no queue.
    assert_eq!(locks_held(&pool).await, (0, 0));
}

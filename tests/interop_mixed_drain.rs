//! A Node graphile-worker 0.18 and ours drain one mixed set of jobs
//! together: every job runs exactly once.

mod common;

use common::{count, migrated};
use graphile_worker::{JobContext, NewJob, Task, TaskError, Worker};
use graphile_worker_dev::node;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Serialize, Deserialize)]
struct Mixed {
    n: i64,
}

impl Task for Mixed {
    const IDENTIFIER: &'static str = "mixed";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        sqlx::query("insert into runs (n, runner) values ($1, 'rust')")
            .bind(self.n)
            .execute(ctx.utils().pool())
            .await
            .map_err(|e| TaskError::new(e.to_string()))?;
        Ok(())
    }
}

const NODE_ADD: &str = r#"
const { makeWorkerUtils } = require("graphile-worker");
(async () => {
  const utils = await makeWorkerUtils({ connectionString: process.env.DATABASE_URL });
  const specs = [];
  for (let n = 1000; n < 2000; n++) specs.push({ identifier: "mixed", payload: { n } });
  await utils.addJobs(specs);
  await utils.release();
})().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
"#;

const NODE_DRAIN: &str = r#"
const { runOnce } = require("graphile-worker");
runOnce({
  connectionString: process.env.DATABASE_URL,
  concurrency: 4,
  taskList: {
    mixed: async (payload, helpers) => {
      await new Promise((r) => setTimeout(r, 3));
      await helpers.query("insert into runs (n, runner) values ($1, 'node')", [payload.n]);
    },
  },
}).then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
"#;

#[tokio::test]
async fn node_and_rust_drain_two_thousand_jobs_each_exactly_once() {
    let (db, pool, utils) = migrated().await;
    sqlx::raw_sql("create table runs (n bigint not null, runner text not null)")
        .execute(&pool)
        .await
        .unwrap();
    // Half added by Node, half by us.
    node::run_js_ok(&db.url, "graphile_worker", NODE_ADD).await;
    let ours: Vec<NewJob> = (0..1000)
        .map(|n| NewJob::new("mixed", json!({ "n": n })))
        .collect();
    utils.add_raw_jobs(&ours).await.unwrap();
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        2000
    );

    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .concurrency(4)
        .register::<Mixed>()
        .init()
        .await
        .unwrap();
    let url = db.url.clone();
    let node_side =
        tokio::spawn(async move { node::run_js_ok(&url, "graphile_worker", NODE_DRAIN).await });
    worker.run_once().await.unwrap();
    node_side.await.unwrap();
    // Whatever Node was still running when we finished is done now too.
    worker.run_once().await.unwrap();

    assert_eq!(count(&pool, "select count(*) from runs").await, 2000);
    assert_eq!(
        count(&pool, "select count(distinct n) from runs").await,
        2000
    );
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        0
    );
    let rust = count(&pool, "select count(*) from runs where runner = 'rust'").await;
    let node = count(&pool, "select count(*) from runs where runner = 'node'").await;
    assert!(
        rust > 0 && node > 0,
        "both should take part: rust {rust}, node {node}"
    );
}

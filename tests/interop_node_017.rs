//! Node graphile-worker 0.17 (migrations 1–19 only, pinned as
//! `graphile-worker-017` in tests/node) beside ours: either may install,
//! our migration 20 is accepted as a non-breaking newer one, jobs run both
//! ways, and a breaking migration Node 0.17 does not know stops it.

mod common;

use std::time::Duration;

use graphile_worker::{JobContext, JobSpec, TaskError, Worker, WorkerUtils, task};
use graphile_worker_dev::{TestDatabase, fresh_database, node};
use serde_json::json;
use sqlx::PgPool;

const SCHEMA: &str = "graphile_worker";

const NODE_MIGRATE: &str = r#"
const { runMigrations } = require("graphile-worker-017");
runMigrations({ connectionString: process.env.DATABASE_URL })
  .then(() => process.exit(0), (e) => { console.error(String(e && e.message || e)); process.exit(1); });
"#;

/// Node 0.17 adds `from_node` {n: 17}, then runs what it can: `from_rust`.
const NODE_ADD_AND_RUN: &str = r#"
const { quickAddJob, runOnce } = require("graphile-worker-017");
(async () => {
  await quickAddJob({ connectionString: process.env.DATABASE_URL }, "from_node", { n: 17 });
  await runOnce({
    connectionString: process.env.DATABASE_URL,
    concurrency: 1,
    taskList: {
      from_rust: async (payload, helpers) => {
        await helpers.query("insert into runs (n, runner) values ($1, 'node 0.17')", [payload.n]);
      },
    },
  });
})().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
"#;

/// Runs a job added by Node 0.17.
#[task]
async fn from_node(ctx: JobContext, n: i64) -> Result<(), TaskError> {
    sqlx::query("insert into runs (n, runner) values ($1, 'rust')")
        .bind(n)
        .execute(ctx.utils().pool())
        .await
        .map_err(|e| TaskError::new(e.to_string()))?;
    Ok(())
}

async fn setup(db: &TestDatabase) -> (PgPool, WorkerUtils) {
    let pool = db.pool(10).await;
    sqlx::query("create table if not exists runs (n bigint, runner text)")
        .execute(&pool)
        .await
        .unwrap();
    (pool.clone(), WorkerUtils::new(pool, SCHEMA))
}

async fn ledger(pool: &PgPool) -> Vec<(i32, bool)> {
    sqlx::query_as("select id, breaking from graphile_worker.migrations order by id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn runs(pool: &PgPool) -> Vec<(i64, String)> {
    sqlx::query_as("select n, runner from runs order by n")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Jobs both ways: we add `from_rust` {n: 1}, Node 0.17 adds `from_node`
/// and runs ours, then we run Node's.
async fn jobs_both_ways(db: &TestDatabase, pool: &PgPool, utils: &WorkerUtils) {
    utils
        .add_raw_job("from_rust", json!({"n": 1}), JobSpec::default())
        .await
        .unwrap();
    node::run_js_ok(&db.url, SCHEMA, NODE_ADD_AND_RUN).await;
    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<FromNode>()
        .init()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), worker.run_once())
        .await
        .expect("run_once finishes")
        .unwrap();
    assert_eq!(
        runs(pool).await,
        [(1, "node 0.17".to_owned()), (17, "rust".to_owned())]
    );
    let left: i64 = sqlx::query_scalar("select count(*) from graphile_worker.jobs")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn node_017_installs_and_ours_adds_migration_20() {
    let db = fresh_database().await;
    let (pool, utils) = setup(&db).await;
    node::run_js_ok(&db.url, SCHEMA, NODE_MIGRATE).await;
    let node_ledger = ledger(&pool).await;
    assert_eq!(node_ledger.last().map(|(id, _)| *id), Some(19));

    utils.migrate().await.unwrap();
    let ours = ledger(&pool).await;
    assert_eq!(ours.len(), 20);
    assert_eq!(
        &ours[..19],
        &node_ledger[..],
        "Node's rows are kept as they were"
    );
    assert_eq!(ours[19], (20, false), "ours is not breaking");
    utils
        .list_workers()
        .await
        .expect("the worker registry exists");

    // Node 0.17 starts again on the upgraded schema.
    node::run_js_ok(&db.url, SCHEMA, NODE_MIGRATE).await;
    jobs_both_ways(&db, &pool, &utils).await;
}

#[tokio::test]
async fn ours_installs_and_node_017_accepts_it() {
    let db = fresh_database().await;
    let (pool, utils) = setup(&db).await;
    utils.migrate().await.unwrap();
    node::run_js_ok(&db.url, SCHEMA, NODE_MIGRATE).await;
    assert_eq!(ledger(&pool).await.len(), 20, "Node 0.17 added nothing");
    jobs_both_ways(&db, &pool, &utils).await;
}

#[tokio::test]
async fn node_017_refuses_a_breaking_migration_it_does_not_know() {
    let db = fresh_database().await;
    let (pool, utils) = setup(&db).await;
    utils.migrate().await.unwrap();
    sqlx::query("insert into graphile_worker.migrations (id, breaking) values (21, true)")
        .execute(&pool)
        .await
        .unwrap();
    let output = node::run_js(&db.url, SCHEMA, NODE_MIGRATE).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "Node 0.17 must refuse: {stderr}");
    assert!(stderr.contains("21"), "{stderr}");
}

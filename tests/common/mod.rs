//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use graphile_worker::{ShutdownHandle, Worker, WorkerUtils};
use graphile_worker_dev::{TestDatabase, fresh_database};
use sqlx::PgPool;

/// A fresh database with the worker schema installed.
pub async fn migrated() -> (TestDatabase, PgPool, WorkerUtils) {
    let db = fresh_database().await;
    let pool = db.pool(20).await;
    if std::env::var_os("GW_NODE_FIRST").is_some() {
        graphile_worker_dev::node::run_js_ok(&db.url, "graphile_worker", "require('graphile-worker').runMigrations({connectionString: process.env.DATABASE_URL}).then(()=>process.exit(0),e=>{console.error(e);process.exit(1)})").await;
    }
    let utils = WorkerUtils::new(pool.clone(), "graphile_worker");
    utils.migrate().await.expect("migrate");
    (db, pool, utils)
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after
/// `within` with `what`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .expect("count query")
}

/// Runs `worker.run()` in the background: its shutdown handle and the task
/// to await for `run()`'s result.
pub fn run_in_background(
    worker: &Worker,
) -> (
    ShutdownHandle,
    tokio::task::JoinHandle<Result<(), graphile_worker::Error>>,
) {
    let handle = worker.shutdown_handle();
    let worker = worker.clone();
    (handle, tokio::spawn(async move { worker.run().await }))
}

/// Waits until a session of this database is listening for notifications.
pub async fn wait_for_listener(pool: &PgPool) {
    eventually(Duration::from_secs(10), "the listener", || async {
        (count(
            pool,
            "select count(*) from pg_stat_activity \
             where datname = current_database() and query ilike 'listen%'",
        )
        .await
            > 0)
        .then_some(())
    })
    .await;
}

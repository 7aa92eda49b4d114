//! PostgreSQL restarted under a running worker: no job is lost, and
//! heartbeats and the listener resume. (Its own test binary, so the restart
//! disturbs no other test.)

mod common;

use std::time::Duration;

use common::{count, eventually, migrated};
use graphile_worker::{JobContext, JobSpec, Task, TaskError, Worker};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Serialize, Deserialize)]
struct Note {
    n: i32,
}

impl Task for Note {
    const IDENTIFIER: &'static str = "note";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        sqlx::query("insert into runs (n) values ($1)")
            .bind(self.n)
            .execute(ctx.utils().pool())
            .await
            .map_err(|e| TaskError::new(e.to_string()))?;
        Ok(())
    }
}

#[tokio::test]
async fn worker_survives_a_database_restart() {
    let (_db, pool, utils) = migrated().await;
    sqlx::raw_sql("create table runs (n int)")
        .execute(&pool)
        .await
        .unwrap();
    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .concurrency(2)
        .poll_interval(Duration::from_millis(200))
        .heartbeat_interval(Duration::from_millis(200))
        .stale_worker_threshold(Duration::from_secs(3))
        .recovery_sweep_interval(Duration::from_millis(300))
        .register::<Note>()
        .init()
        .await
        .unwrap();
    let pool_id = worker.pool_id().to_owned();
    let stop = worker.shutdown_handle();
    let running = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run().await }
    });
    utils
        .add_raw_job("note", json!({"n": 1}), JobSpec::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the first job", || {
        let pool = pool.clone();
        async move { (count(&pool, "select count(*) from runs").await == 1).then_some(()) }
    })
    .await;

    if !tokio::task::spawn_blocking(graphile_worker_dev::restart_server)
        .await
        .unwrap()
    {
        eprintln!("DATABASE_URL is set: cannot restart that server; skipping the restart");
    }

    // Jobs added after the restart run (found by the listener or a poll).
    eventually(
        Duration::from_secs(20),
        "adding a job after the restart",
        || {
            let utils = utils.clone();
            async move {
                utils
                    .add_raw_job("note", json!({"n": 2}), JobSpec::default())
                    .await
                    .ok()
            }
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the job added after the restart",
        || {
            let pool = pool.clone();
            async move { (count(&pool, "select count(*) from runs").await == 2).then_some(()) }
        },
    )
    .await;
    // The heartbeat resumed: the worker is registered and fresh.
    eventually(Duration::from_secs(10), "a fresh heartbeat", || {
        let utils = utils.clone();
        let pool_id = pool_id.clone();
        async move {
            let workers = utils.list_workers().await.ok()?;
            let me = workers.into_iter().find(|w| w.id == pool_id)?;
            (chrono::Utc::now() - me.last_heartbeat_at < chrono::Duration::seconds(2)).then_some(())
        }
    })
    .await;
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        0
    );
    stop.shutdown();
    running.await.unwrap().unwrap();
}

//! Cron through the worker builder: bad crontabs are refused at start-up,
//! and a running worker registers its schedules.

mod common;

use std::time::Duration;

use common::{migrated, shut_down, start, wait_for_count};
use graphile_worker::{JobContext, Task, TaskError, Worker, WorkerOptions};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

#[derive(Serialize, Deserialize)]
struct Tick {}

impl Task for Tick {
    const IDENTIFIER: &'static str = "tick";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// A worker on `pool` that runs [`Tick`], without signal handling.
fn ticker(pool: &PgPool) -> WorkerOptions {
    Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<Tick>()
}

#[tokio::test]
async fn a_bad_crontab_line_is_refused_at_start_up_with_its_line_number() {
    let (_db, pool, _utils) = migrated().await;
    let err = ticker(&pool)
        .crontab("# nightly jobs\n0 4 * * * tick\n\n61 * * * * tick ?id=bad")
        .init()
        .await
        .unwrap_err();
    assert!(matches!(err, graphile_worker::Error::Crontab(_)), "{err}");
    let message = err.to_string();
    assert!(message.contains("line 4"), "{message}");
    assert!(message.contains("61"), "{message}");

    let err = ticker(&pool)
        .crontab_file("/nonexistent/crontab")
        .init()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/crontab"), "{err}");

    let err = ticker(&pool)
        .crontab("0 4 * * * tick\n0 5 * * * tick")
        .init()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tick"), "{err}");
}

#[tokio::test]
async fn a_running_worker_registers_its_schedules() {
    let (_db, pool, _utils) = migrated().await;
    let dir = std::env::temp_dir().join(format!("gw-crontab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("crontab");
    std::fs::write(&file, "0 3 * * * tick ?id=from_file\n").unwrap();
    let (_, stop, running) = start(
        ticker(&pool)
            .crontab("0 4 * * * tick ?id=nightly&fill=1h")
            .crontab_file(&file),
    )
    .await;
    wait_for_count(
        &pool,
        Duration::from_secs(10),
        "the schedules to be known",
        "select count(*) from graphile_worker._private_known_crontabs \
         where identifier in ('nightly', 'from_file')",
        |n| n == 2,
    )
    .await;
    shut_down(stop, running).await;
    std::fs::remove_dir_all(&dir).ok();
}

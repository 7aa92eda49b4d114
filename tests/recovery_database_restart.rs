//! PostgreSQL restarted under a running worker process: the job it was
//! running when the server went away is not lost, jobs added afterwards run,
//! and its heartbeats resume. (Its own test binary, so the restart disturbs
//! no other test.)

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{count, eventually, migrated};
use graphile_worker::JobSpec;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn a_worker_process_survives_a_database_restart() {
    let (db, pool, utils) = migrated().await;
    sqlx::raw_sql(
        "create table runs (id serial primary key, event text, job_id bigint, attempts smallint, pid int, at timestamptz default clock_timestamp())",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_test_worker"))
        .env("DATABASE_URL", &db.url)
        .env("GW_HEARTBEAT_MS", "200")
        .env("GW_THRESHOLD_MS", "5000")
        .env("GW_SWEEP_MS", "300")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn test_worker");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("worker start-up")
        .unwrap()
        .unwrap();
    let pool_id = ready.strip_prefix("ready ").unwrap().to_owned();

    // A job that is running while the server restarts.
    let in_flight = utils
        .add_raw_job(
            "sleepy",
            json!({"ms_first": 1500, "ms_retry": 10}),
            JobSpec::default(),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the job to start", || {
        let pool = pool.clone();
        async move {
            (count(&pool, "select count(*) from runs where event = 'start'").await == 1)
                .then_some(())
        }
    })
    .await;

    if !tokio::task::spawn_blocking(graphile_worker_dev::restart_server)
        .await
        .unwrap()
    {
        eprintln!("skipped: DATABASE_URL points at a server this test cannot restart");
        child.kill().await.unwrap();
        return;
    }

    // The interrupted job is not lost: it finishes (the task's own write
    // may have failed during the restart, in which case it is retried).
    eventually(
        Duration::from_secs(30),
        "the in-flight job to be done",
        || {
            let pool = pool.clone();
            async move {
                let left = count(
                    &pool,
                    &format!(
                        "select count(*) from graphile_worker.jobs where id = {}",
                        in_flight.id
                    ),
                )
                .await;
                let done = count(&pool, "select count(*) from runs where event = 'done'").await;
                (left == 0 && done >= 1).then_some(())
            }
        },
    )
    .await;

    // New work after the restart runs too.
    let later = utils
        .add_raw_job(
            "sleepy",
            json!({"ms_first": 10, "ms_retry": 10}),
            JobSpec::default(),
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the job added after the restart",
        || {
            let pool = pool.clone();
            async move {
                (count(
                    &pool,
                    &format!(
                        "select count(*) from runs where event = 'done' and job_id = {}",
                        later.id
                    ),
                )
                .await
                    == 1)
                    .then_some(())
            }
        },
    )
    .await;

    // Heartbeats resumed.
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
        0,
        "no job left behind"
    );
    child.kill().await.unwrap();
}

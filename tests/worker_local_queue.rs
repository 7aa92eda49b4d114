//! The local queue of jobs a worker claimed ahead: a busy worker hands back
//! the jobs it cannot start, so an idle worker runs them.

mod common;

use std::time::Duration;

use common::{count, eventually, migrated_with_runs, start, worker};
use graphile_worker::{JobContext, JobSpec, Task, TaskError};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Does nothing, fast.
#[derive(Serialize, Deserialize)]
struct Quick {}

impl Task for Quick {
    const IDENTIFIER: &'static str = "quick";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Jobs a busy worker claimed ahead into its local queue but cannot start
/// must go back within the local queue's time limit (5 s), so that an idle
/// worker can run them. Today a worker that just ran many short jobs keeps
/// the next long ones locked while its slots are busy: until a running job
/// ends when nothing else wakes it (long poll interval), and for about 20 s
/// with the default 2 s poll (returned and claimed straight back, the lock
/// refreshed by heartbeats all along).
#[tokio::test]
async fn a_busy_worker_hands_back_jobs_it_cannot_start_to_an_idle_one() {
    let (_db, pool, utils) = migrated_with_runs().await;
    let mut jobs: Vec<graphile_worker::NewJob> = (0..3000)
        .map(|_| graphile_worker::NewJob::new("quick", json!({})))
        .collect();
    jobs.extend((0..10).map(|n| graphile_worker::NewJob {
        spec: JobSpec {
            priority: Some(1),
            ..Default::default()
        },
        ..graphile_worker::NewJob::new("gated", json!({"gate": format!("slow-{n}")}))
    }));
    utils.add_raw_jobs(&jobs).await.unwrap();
    let (_, stop_busy, busy_run) = start(
        worker(&pool)
            .register::<Quick>()
            .concurrency(2)
            .poll_interval(Duration::from_secs(3600)),
    )
    .await;
    let started = || async {
        count(
            &pool,
            "select count(*) from runs where tag like 'slow-%:start'",
        )
        .await
    };
    eventually(
        Duration::from_secs(30),
        "the short jobs to be done",
        || async {
            (count(
                &pool,
                "select count(*) from graphile_worker.jobs where task_identifier = 'quick'",
            )
            .await
                == 0
                && started().await == 2)
                .then_some(())
        },
    )
    .await;

    let (_, stop_idle, idle_run) = start(
        worker(&pool)
            .register::<Quick>()
            .concurrency(10)
            .poll_interval(Duration::from_millis(100)),
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the idle worker to start the long jobs the busy one cannot",
        || async { (started().await == 10).then_some(()) },
    )
    .await;
    stop_busy.shutdown_now();
    stop_idle.shutdown_now();
    busy_run.await.unwrap().unwrap();
    idle_run.await.unwrap().unwrap();
}

//! Logging: every job runs in one `tracing` span carrying its id, task,
//! queue and attempt, with its outcome and duration recorded on it; a
//! failure that will retry is a warning.

mod common;

use common::{Captured, add_job, in_queue, migrated_with_runs, worker};
use graphile_worker::{JobContext, JobSpec, Task, TaskError};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Serialize, Deserialize)]
struct Refuse {}

impl Task for Refuse {
    const IDENTIFIER: &'static str = "refuse";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Err(TaskError::new("not today"))
    }
}

/// Every job runs in one span carrying its id, task, queue and attempt,
/// with its outcome recorded on it.
#[tokio::test]
async fn each_job_is_logged_in_a_span_with_its_id_task_queue_attempt_and_outcome() {
    let (_db, pool, utils) = migrated_with_runs().await;
    let ok = add_job(
        &utils,
        "record",
        json!({"tag": "traced"}),
        in_queue("traced-q"),
    )
    .await;
    let failing = add_job(&utils, "refuse", json!({}), JobSpec::default()).await;
    let w = worker(&pool)
        .register::<Refuse>()
        .local_queue_size(0)
        .init()
        .await
        .unwrap();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded: every job runs on this thread.
    let guard = tracing::subscriber::set_default(subscriber);
    w.run_once().await.unwrap();
    drop(guard);
    let log = captured.text();
    let line_of = |id: i64| {
        log.lines()
            .find(|l| l.contains(&format!("job.id={id} ")) && l.contains("task"))
            .unwrap_or_else(|| panic!("no line for job {id} in:\n{log}"))
            .to_owned()
    };
    let ok_line = line_of(ok);
    for part in [
        "job.task=record",
        "job.queue=\"traced-q\"",
        "job.attempt=1",
        "job.outcome=\"success\"",
        "job.duration_ms=",
    ] {
        assert!(ok_line.contains(part), "{part} missing: {ok_line}");
    }
    // Durations are logged to a tenth of a millisecond.
    let duration = ok_line
        .split("job.duration_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default();
    let decimals = duration.split('.').nth(1).map_or(0, str::len);
    assert!(
        duration.parse::<f64>().is_ok() && decimals <= 1,
        "job.duration_ms={duration} in {ok_line}"
    );
    let failed_line = line_of(failing);
    for part in ["job.task=refuse", "job.outcome=\"failed\"", "not today"] {
        assert!(failed_line.contains(part), "{part} missing: {failed_line}");
    }
    assert!(failed_line.contains("WARN"), "{failed_line}");
}

//! Lifecycle events: what an observer receives for a run with a success, a
//! retry, a permanent failure, a panic, a second attempt and a shutdown.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use graphile_worker::{JobSpec, TaskError, Worker, WorkerEvent, task};
use serde_json::json;

#[task]
async fn ev_ok() {}

#[task]
async fn ev_flaky() -> Result<(), TaskError> {
    Err(TaskError::new("try again"))
}

#[task]
async fn ev_refuse() -> Result<(), TaskError> {
    Err(TaskError::permanent("never"))
}

#[task]
async fn ev_panic() {
    panic!("boom");
}

#[task]
async fn ev_forever() {
    std::future::pending::<()>().await;
}

type Seen = Arc<Mutex<Vec<WorkerEvent>>>;

fn options(pool: &sqlx::PgPool, seen: &Seen) -> graphile_worker::WorkerOptions {
    let seen = seen.clone();
    Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .concurrency(1)
        .shutdown_grace_period(Duration::from_millis(200))
        .register::<EvOk>()
        .register::<EvFlaky>()
        .register::<EvRefuse>()
        .register::<EvPanic>()
        .register::<EvForever>()
        .on_event(move |event| seen.lock().unwrap().push(event.clone()))
}

/// The job events, as (job id, kind) pairs, in order.
fn job_events(seen: &Seen) -> Vec<(i64, String)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|event| match event {
            WorkerEvent::JobStarted { job } => Some((job.id, "started".to_owned())),
            WorkerEvent::JobCompleted { job, .. } => Some((job.id, "completed".to_owned())),
            WorkerEvent::JobFailed {
                job,
                will_retry,
                error,
                ..
            } => Some((
                job.id,
                format!(
                    "failed retry={will_retry} {}",
                    error.lines().next().unwrap_or("")
                ),
            )),
            WorkerEvent::JobInterrupted { job, .. } => Some((job.id, "interrupted".to_owned())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_sees_each_job_start_and_end_in_order() {
    let (_db, pool, utils) = common::migrated().await;
    let spec = |max: i16| JobSpec {
        max_attempts: Some(max),
        ..JobSpec::default()
    };
    let ok = utils
        .add_raw_job("ev_ok", json!({}), spec(3))
        .await
        .unwrap();
    let flaky = utils
        .add_raw_job("ev_flaky", json!({}), spec(2))
        .await
        .unwrap();
    let refuse = utils
        .add_raw_job("ev_refuse", json!({}), spec(3))
        .await
        .unwrap();
    let panics = utils
        .add_raw_job("ev_panic", json!({}), spec(3))
        .await
        .unwrap();

    let seen: Seen = Arc::default();
    let worker = options(&pool, &seen).init().await.unwrap();
    worker.run_once().await.unwrap();

    let events = job_events(&seen);
    for (id, end) in [
        (ok.id, "completed".to_owned()),
        (flaky.id, "failed retry=true try again".to_owned()),
        (refuse.id, "failed retry=false never".to_owned()),
        (panics.id, "failed retry=true task panicked at".to_owned()),
    ] {
        let of_job: Vec<&str> = events
            .iter()
            .filter(|(job, _)| *job == id)
            .map(|(_, kind)| kind.as_str())
            .collect();
        assert_eq!(of_job.len(), 2, "job {id}: {events:?}");
        assert_eq!(of_job[0], "started", "job {id}: {events:?}");
        assert!(of_job[1].starts_with(&end), "job {id}: {events:?}");
    }
    {
        let all = seen.lock().unwrap();
        assert!(
            matches!(all.first(), Some(WorkerEvent::WorkerStarted { .. })),
            "{all:?}"
        );
        assert!(
            matches!(all.last(), Some(WorkerEvent::WorkerStopped { .. })),
            "{all:?}"
        );
        let claimed: usize = all
            .iter()
            .filter_map(|e| match e {
                WorkerEvent::JobsClaimed { count, .. } => Some(*count),
                _ => None,
            })
            .sum();
        assert_eq!(claimed, 4, "{all:?}");
        let written: usize = all
            .iter()
            .filter_map(|e| match e {
                WorkerEvent::OutcomesWritten { count, .. } => Some(*count),
                _ => None,
            })
            .sum();
        assert_eq!(written, 4, "{all:?}");
        let started = all.iter().find_map(|e| match e {
            WorkerEvent::JobStarted { job } if job.id == flaky.id => Some(job.clone()),
            _ => None,
        });
        let started = started.unwrap();
        assert_eq!(
            (started.task.as_str(), started.attempt, started.max_attempts),
            ("ev_flaky", 1, 2)
        );
        assert_eq!(started.queue, None);
    }

    // The flaky job's second and last attempt: it will not be retried.
    seen.lock().unwrap().clear();
    common::set_job(&pool, flaky.id, "run_at = now()").await;
    worker.run_once().await.unwrap();
    assert_eq!(
        job_events(&seen),
        vec![
            (flaky.id, "started".to_owned()),
            (flaky.id, "failed retry=false try again".to_owned())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_interrupts_a_running_job_and_says_so() {
    let (_db, pool, utils) = common::migrated().await;
    let job = utils
        .add_raw_job("ev_forever", json!({}), JobSpec::default())
        .await
        .unwrap();
    let seen: Seen = Arc::default();
    let worker = options(&pool, &seen).init().await.unwrap();
    let (handle, running) = common::run_in_background(&worker);
    common::eventually(Duration::from_secs(10), "the job to start", || {
        let started = job_events(&seen).contains(&(job.id, "started".to_owned()));
        async move { started.then_some(()) }
    })
    .await;
    // The listener connects on its own schedule.
    common::eventually(Duration::from_secs(10), "the listener to connect", || {
        let connected = seen
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, WorkerEvent::ListenerConnected));
        async move { connected.then_some(()) }
    })
    .await;
    common::stop_worker("events", handle, running, Duration::from_secs(10)).await;
    assert_eq!(
        job_events(&seen),
        vec![
            (job.id, "started".to_owned()),
            (job.id, "interrupted".to_owned())
        ]
    );
    let all = seen.lock().unwrap();
    assert!(
        all.iter()
            .any(|e| matches!(e, WorkerEvent::ListenerConnected)),
        "{all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_observer_does_not_stop_the_worker() {
    let (_db, pool, utils) = common::migrated().await;
    utils
        .add_raw_job("ev_ok", json!({}), JobSpec::default())
        .await
        .unwrap();
    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<EvOk>()
        .on_event(|_| panic!("observer bug"))
        .init()
        .await
        .unwrap();
    worker.run_once().await.unwrap();
    let left: i64 = sqlx::query_scalar("select count(*) from graphile_worker._private_jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

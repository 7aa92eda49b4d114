//! `WorkerUtils::retry_jobs` tells running workers, as adding a job does:
//! a retried job starts without waiting for the next poll.

mod common;

use std::time::Duration;

use graphile_worker::{JobSpec, Worker, task};
use serde_json::json;

#[task]
async fn retried_once() {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_job_runs_without_waiting_for_a_poll() {
    let (_db, pool, utils) = common::migrated().await;
    let job = utils
        .add_raw_job("retried_once", json!({}), JobSpec::default())
        .await
        .unwrap();
    utils
        .permanently_fail_jobs(&[job.id], Some("broken"))
        .await
        .unwrap();
    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .poll_interval(Duration::from_secs(3600))
        .register::<RetriedOnce>()
        .init()
        .await
        .unwrap();
    let (handle, running) = common::run_in_background(&worker);
    // The run's first look for jobs finds none (the job is failed); wait
    // until the listener is up so the notification can reach it.
    common::eventually(Duration::from_secs(10), "the worker to be ready", || {
        let worker = worker.clone();
        async move { (worker.readiness().await == graphile_worker::Readiness::Ready).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let retried = utils.retry_jobs(&[job.id]).await.unwrap();
    assert_eq!(retried.len(), 1);
    common::eventually(Duration::from_secs(10), "the retried job to run", || {
        let utils = utils.clone();
        async move { utils.get_job(job.id).await.unwrap().is_none().then_some(()) }
    })
    .await;
    common::stop_worker("retry", handle, running, Duration::from_secs(10)).await;
}

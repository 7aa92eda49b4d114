//! `Worker::readiness`: not ready before a run, ready once its heartbeat
//! lands, not ready again after the run.

mod common;

use std::time::Duration;

use graphile_worker::{Readiness, Worker, task};

#[task]
async fn readiness_noop() {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_run() {
    let (_db, pool, _utils) = common::migrated().await;
    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<ReadinessNoop>()
        .init()
        .await
        .unwrap();
    assert_eq!(
        worker.readiness().await,
        Readiness::NotReady("the worker is not running".into())
    );
    let (handle, running) = common::run_in_background(&worker);
    common::eventually(Duration::from_secs(10), "ready", || {
        let worker = worker.clone();
        async move { (worker.readiness().await == Readiness::Ready).then_some(()) }
    })
    .await;
    common::stop_worker("readiness", handle, running, Duration::from_secs(10)).await;
    assert_eq!(
        worker.readiness().await,
        Readiness::NotReady("the worker is not running".into())
    );
}

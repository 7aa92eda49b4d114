//! Metrics (feature `metrics`): the values recorded for a run with a
//! success, a retry and a permanent failure, read back from the `metrics`
//! project's debugging recorder; and the schema-wide gauges.

mod common;

use std::time::Duration;

use graphile_worker::{JobSpec, MetricsOptions, TaskError, Worker, task};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use serde_json::json;

#[task]
async fn m_ok() {}

#[task]
async fn m_flaky() -> Result<(), TaskError> {
    Err(TaskError::new("again"))
}

#[task]
async fn m_refuse() -> Result<(), TaskError> {
    Err(TaskError::permanent("no"))
}

type Snapshot = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

fn find<'a>(
    snapshot: &'a Snapshot,
    kind: MetricKind,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a DebugValue> {
    snapshot.iter().find_map(|(key, _, _, value)| {
        let key_labels: Vec<(&str, &str)> =
            key.key().labels().map(|l| (l.key(), l.value())).collect();
        (key.kind() == kind
            && key.key().name() == name
            && labels.iter().all(|l| key_labels.contains(l))
            && key_labels.len() == labels.len())
        .then_some(value)
    })
}

fn counter(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> u64 {
    match find(snapshot, MetricKind::Counter, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("counter {name} {labels:?}: {other:?}\n{snapshot:#?}"),
    }
}

fn gauge(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    match find(snapshot, MetricKind::Gauge, name, labels) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("gauge {name} {labels:?}: {other:?}\n{snapshot:#?}"),
    }
}

fn histogram_len(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> usize {
    match find(snapshot, MetricKind::Histogram, name, labels) {
        Some(DebugValue::Histogram(values)) => values.len(),
        other => panic!("histogram {name} {labels:?}: {other:?}\n{snapshot:#?}"),
    }
}

fn snapshot(snapshotter: &Snapshotter) -> Snapshot {
    snapshotter.snapshot().into_vec()
}

// One test: the recorder is global to the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_records_job_claim_and_queue_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let (_db, pool, utils) = common::migrated().await;
    let mail = JobSpec {
        queue_name: Some("mail".into()),
        ..JobSpec::default()
    };
    utils
        .add_raw_job("m_ok", json!({}), mail.clone())
        .await
        .unwrap();
    utils
        .add_raw_job("m_ok", json!({}), JobSpec::default())
        .await
        .unwrap();
    utils
        .add_raw_job("m_flaky", json!({}), JobSpec::default())
        .await
        .unwrap();
    utils
        .add_raw_job("m_refuse", json!({}), JobSpec::default())
        .await
        .unwrap();
    let scheduled = JobSpec {
        run_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        ..JobSpec::default()
    };
    utils
        .add_raw_job("m_ok", json!({}), scheduled)
        .await
        .unwrap();

    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<MOk>()
        .register::<MFlaky>()
        .register::<MRefuse>()
        .metrics(MetricsOptions::default().queue_gauges_every(Some(Duration::from_millis(100))))
        .init()
        .await
        .unwrap();
    worker.run_once().await.unwrap();

    let s = snapshot(&snapshotter);
    let started = "graphile_worker_jobs_started_total";
    assert_eq!(
        counter(&s, started, &[("task", "m_ok"), ("queue", "mail")]),
        1
    );
    assert_eq!(counter(&s, started, &[("task", "m_ok"), ("queue", "")]), 1);
    assert_eq!(
        counter(&s, started, &[("task", "m_flaky"), ("queue", "")]),
        1
    );
    let completed = "graphile_worker_jobs_completed_total";
    assert_eq!(
        counter(&s, completed, &[("task", "m_ok"), ("queue", "mail")]),
        1
    );
    let failed = "graphile_worker_jobs_failed_total";
    assert_eq!(
        counter(
            &s,
            failed,
            &[("task", "m_flaky"), ("queue", ""), ("permanent", "false")]
        ),
        1
    );
    assert_eq!(
        counter(
            &s,
            failed,
            &[("task", "m_refuse"), ("queue", ""), ("permanent", "true")]
        ),
        1
    );
    let duration = "graphile_worker_job_duration_seconds";
    assert_eq!(
        histogram_len(
            &s,
            duration,
            &[("task", "m_ok"), ("queue", ""), ("outcome", "completed")]
        ),
        1
    );
    assert_eq!(
        histogram_len(
            &s,
            duration,
            &[("task", "m_refuse"), ("queue", ""), ("outcome", "failed")]
        ),
        1
    );
    assert_eq!(
        histogram_len(
            &s,
            "graphile_worker_job_wait_seconds",
            &[("task", "m_ok"), ("queue", "mail")]
        ),
        1
    );
    assert_eq!(gauge(&s, "graphile_worker_jobs_running", &[]), 0.0);
    assert!(histogram_len(&s, "graphile_worker_claim_batch_size", &[]) >= 1);
    assert!(histogram_len(&s, "graphile_worker_claim_duration_seconds", &[]) >= 1);

    // The schema-wide gauges come from the elected worker during run():
    // the scheduled job, and the retry waiting for its run_at.
    let (handle, running) = common::run_in_background(&worker);
    // A snapshot drains what it reads: keep the one that has the gauges.
    let s = common::eventually(Duration::from_secs(20), "the queue gauges", || {
        let s = snapshot(&snapshotter);
        let has = find(
            &s,
            MetricKind::Gauge,
            "graphile_worker_jobs",
            &[("state", "scheduled")],
        )
        .is_some();
        async move { has.then_some(s) }
    })
    .await;
    common::stop_worker("metrics", handle, running, Duration::from_secs(10)).await;
    let jobs = |state| gauge(&s, "graphile_worker_jobs", &[("state", state)]);
    assert_eq!(jobs("scheduled"), 1.0);
    assert_eq!(jobs("retrying"), 1.0);
    assert_eq!(jobs("failed"), 1.0);
    assert_eq!(jobs("ready"), 0.0);
    assert_eq!(jobs("locked"), 0.0);
    assert_eq!(
        gauge(&s, "graphile_worker_oldest_ready_job_age_seconds", &[]),
        0.0
    );

    // Without the queue label, job metrics carry only the task.
    utils.add_raw_job("m_ok", json!({}), mail).await.unwrap();
    let unlabelled = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<MOk>()
        .metrics(
            MetricsOptions::default()
                .queue_label(false)
                .queue_gauges_every(None),
        )
        .init()
        .await
        .unwrap();
    unlabelled.run_once().await.unwrap();
    let s = snapshot(&snapshotter);
    assert_eq!(counter(&s, started, &[("task", "m_ok")]), 1);
    assert_eq!(counter(&s, completed, &[("task", "m_ok")]), 1);
}

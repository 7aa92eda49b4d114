//! Trace propagation (feature `opentelemetry`): a job added inside a
//! traced span runs in a span that is its child on the first attempt and
//! links to it on the retry, exported to memory.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use graphile_worker::{JobSpec, TaskError, Worker, WorkerUtils, task};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde_json::json;
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

static ATTEMPTS: AtomicUsize = AtomicUsize::new(0);

/// Fails its first attempt.
#[task]
async fn traced_flaky() -> Result<(), TaskError> {
    if ATTEMPTS.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(TaskError::new("first attempt fails"));
    }
    Ok(())
}

// One test: the subscriber is global to the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_span_continues_the_enqueuing_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let (_db, pool, plain) = common::migrated().await;
    let utils = WorkerUtils::new(pool.clone(), "graphile_worker").propagate_trace_context();
    let job = utils
        .add_raw_job("traced_flaky", json!({}), JobSpec::default())
        .instrument(tracing::info_span!("request"))
        .await
        .unwrap();
    let flags = plain
        .get_job(job.id)
        .await
        .unwrap()
        .unwrap()
        .job
        .flags
        .unwrap();
    let flag = flags.as_object().unwrap().keys().next().unwrap().clone();
    assert!(flag.starts_with("traceparent=00-"), "{flag}");

    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<TracedFlaky>()
        .init()
        .await
        .unwrap();
    worker.run_once().await.unwrap();
    common::set_job(&pool, job.id, "run_at = now()").await;
    worker.run_once().await.unwrap();
    assert!(
        plain.get_job(job.id).await.unwrap().is_none(),
        "the retry succeeded"
    );

    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let request = spans
        .iter()
        .find(|s| s.name == "request")
        .expect("request span");
    let jobs: Vec<_> = spans.iter().filter(|s| s.name == "job").collect();
    assert_eq!(jobs.len(), 2, "{spans:#?}");
    let attempt = |n: i64| {
        jobs.iter()
            .find(|s| {
                s.attributes.iter().any(|kv| {
                    kv.key.as_str() == "job.attempt" && kv.value == opentelemetry::Value::I64(n)
                })
            })
            .unwrap_or_else(|| panic!("no job span for attempt {n}: {jobs:#?}"))
    };
    let first = attempt(1);
    assert_eq!(
        first.span_context.trace_id(),
        request.span_context.trace_id()
    );
    assert_eq!(first.parent_span_id, request.span_context.span_id());
    let second = attempt(2);
    assert_ne!(
        second.span_context.trace_id(),
        request.span_context.trace_id()
    );
    let linked: Vec<_> = second
        .links
        .iter()
        .map(|l| l.span_context.clone())
        .collect();
    assert_eq!(linked.len(), 1, "{second:#?}");
    assert_eq!(linked[0].trace_id(), request.span_context.trace_id());
    assert_eq!(linked[0].span_id(), request.span_context.span_id());
}

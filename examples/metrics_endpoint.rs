//! Worker metrics scraped by Prometheus: the worker records through the
//! `metrics` facade (feature `metrics` of the `graphile-worker` crate), the
//! application installs `metrics-exporter-prometheus` and serves its text
//! at `/metrics`.
//!
//! ```sh
//! cargo run --example metrics_endpoint
//! ```
//!
//! The program runs a few jobs (one fails), then scrapes its own endpoint
//! as Prometheus would and prints the `graphile_worker_*` lines, and exits.
//! No database needs to be configured (a throwaway PostgreSQL, or
//! `DATABASE_URL`). The `graphile-worker run --metrics-bind ADDR` command
//! serves the same endpoint without code.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use graphile_worker::{MetricsOptions, Worker, WorkerEvent, WorkerUtils, task};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Charges a card; amounts over 1000 are declined (the job fails).
#[task(queue = "payments")]
async fn charge_card(amount: i64) -> Result<(), String> {
    if amount > 1000 {
        return Err(format!("amount {amount} declined"));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(())
}

/// Fetches `path` from `addr` over plain HTTP/1.1 and returns the body.
async fn scrape(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The exporter: a recorder for the `metrics` facade, and a handle that
    // renders what it holds in Prometheus' text format.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let prometheus = prometheus.clone();
            async move { prometheus.render() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    println!("Serving http://{addr}/metrics");

    let db = graphile_worker_dev::fresh_database().await;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let utils = WorkerUtils::new(pool.clone(), "graphile_worker");
    utils.migrate().await?;
    for amount in [100, 250, 5000] {
        ChargeCard::enqueue(&utils, ChargeCard { amount }).await?;
    }

    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::from_registry()
        .pg_pool(pool)
        .handle_signals(false)
        .metrics(MetricsOptions::default())
        .on_event(move |event| {
            if matches!(
                event,
                WorkerEvent::JobCompleted { .. } | WorkerEvent::JobFailed { .. }
            ) {
                let _ = done.send(());
            }
        })
        .init()
        .await?;
    let running = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run().await }
    });
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(30), finished.recv())
            .await?
            .ok_or("the worker stopped")?;
    }

    println!("What Prometheus would scrape (job counters and durations):");
    let body = scrape(addr, "/metrics").await?;
    for line in body.lines().filter(|l| {
        l.starts_with("graphile_worker_jobs_")
            || l.starts_with("graphile_worker_job_duration_seconds_count")
    }) {
        println!("  {line}");
    }
    worker.shutdown_handle().shutdown();
    running.await??;
    Ok(())
}

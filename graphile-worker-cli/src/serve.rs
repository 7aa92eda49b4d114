//! `run --metrics-bind`: Prometheus metrics and health checks over HTTP.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use graphile_worker::{Readiness, Worker};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::error::CliError;

/// Installs the Prometheus recorder (before the worker records anything).
pub(crate) fn install_recorder() -> Result<PrometheusHandle, CliError> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| CliError::Failed(format!("could not install the metrics recorder: {e}")))
}

#[derive(Clone)]
struct Served {
    worker: Worker,
    metrics: PrometheusHandle,
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` in the
/// background.
pub(crate) async fn start(
    addr: SocketAddr,
    worker: Worker,
    metrics: PrometheusHandle,
) -> Result<(), CliError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Failed(format!("could not listen on {addr}: {e}")))?;
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Served { worker, metrics });
    tracing::info!("serving /metrics, /healthz and /readyz on http://{addr}");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics and health server stopped");
        }
    });
    Ok(())
}

async fn render(State(served): State<Served>) -> String {
    served.metrics.render()
}

async fn readyz(State(served): State<Served>) -> (StatusCode, String) {
    match served.worker.readiness().await {
        Readiness::Ready => (StatusCode::OK, "ready\n".to_owned()),
        Readiness::NotReady(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned()),
    }
}

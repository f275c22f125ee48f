//! The admin HTTP server: `/healthz` (the process serves), `/readyz` (the loop keeps finishing
//! passes, see [`crate::health`]) and `/metrics` (OpenMetrics text, `coldstart_` families).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::health::{Heartbeat, Readiness};
use crate::metrics::Metrics;

#[cfg(test)]
mod tests;

/// Content type of the OpenMetrics text format (what prometheus-client writes).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The loop's heartbeat.
    pub heartbeat: Heartbeat,
    /// `/readyz` fails when the last pass is older than this.
    pub ready_timeout: Duration,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
}

/// The routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled, then finishes in-flight requests and returns.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    match state
        .heartbeat
        .readiness(Instant::now(), state.ready_timeout)
    {
        Readiness::Ready => (StatusCode::OK, "ok\n").into_response(),
        Readiness::NotReady(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

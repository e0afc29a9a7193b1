//! walship-admin: the HTTP admin endpoint of `walship send` and `walship receive`.
//!
//! | path | what |
//! |---|---|
//! | `GET /metrics` | OpenMetrics text, built from a snapshot at scrape time ([`metrics`]) |
//! | `GET /v1/lag` | JSON lag report ([`lag`]) |
//! | `GET /healthz` | `200 ok` while serving |
//! | `POST /v1/wait` | semi-synchronous wait (answers 501 until semi-sync exists) |
//! | `GET /` | a self-contained status page fed by `/v1/lag` |
//!
//! Nothing here runs on the shipping hot path: every response reads a
//! snapshot of the agent's state.
pub mod lag;
pub mod metrics;

use std::net::SocketAddr;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use walship_agent::{ReceiverHandle, SenderHandle};

/// Which agent the endpoint reports on.
#[derive(Debug, Clone)]
pub enum Role {
    Sender(SenderHandle),
    Receiver(ReceiverHandle),
}

/// Errors of the admin server.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The listen address could not be bound.
    #[error("cannot listen for the admin endpoint on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// Serving failed.
    #[error("admin endpoint failed: {0}")]
    Serve(std::io::Error),
}

/// A bound admin server.
#[derive(Debug)]
pub struct AdminServer {
    listener: tokio::net::TcpListener,
    role: Role,
}

impl AdminServer {
    /// Binds `addr` (port 0 picks a free port). Must run inside tokio.
    pub async fn bind(addr: SocketAddr, role: Role) -> Result<AdminServer, AdminError> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| AdminError::Bind { addr, source })?;
        Ok(AdminServer { listener, role })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, AdminError> {
        self.listener.local_addr().map_err(AdminError::Serve)
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AdminError> {
        let addr = self.local_addr()?;
        tracing::info!(admin = %addr, "admin endpoint listening");
        axum::serve(self.listener, router(self.role))
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(AdminError::Serve)
    }
}

/// The routes, for tests that drive them without a socket.
pub fn router(role: Role) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_handler))
        .route("/v1/lag", get(lag_handler))
        .route("/v1/wait", post(wait_handler))
        .with_state(role)
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("status.html")).into_response()
}

async fn metrics_handler(axum::extract::State(role): axum::extract::State<Role>) -> Response {
    match metrics::render(&role) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics failed: {e}\n")).into_response(),
    }
}

async fn lag_handler(axum::extract::State(role): axum::extract::State<Role>) -> Response {
    axum::Json(lag::report(&role)).into_response()
}

async fn wait_handler() -> Response {
    let body = serde_json::json!({
        "error": "semi-synchronous waits are not available in this version (no --sync-quorum yet)"
    });
    (StatusCode::NOT_IMPLEMENTED, axum::Json(body)).into_response()
}

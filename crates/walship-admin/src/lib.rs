//! walship-admin: the HTTP admin endpoint of `walship send` and `walship receive`.
//!
//! | path | what |
//! |---|---|
//! | `GET /metrics` | OpenMetrics text, built from a snapshot at scrape time ([`metrics`]) |
//! | `GET /v1/lag` | JSON lag report ([`lag`]) |
//! | `GET /healthz` | `200 ok` while serving |
//! | `POST /v1/wait` | semi-synchronous wait: `{"position"?, "segment"?, "timeout_ms"?}` → `{"outcome", "position", "waited_ms"}`; with a wait token, `Authorization: Bearer TOKEN` is required |
//! | `GET /` | a self-contained status page fed by `/v1/lag` |
//!
//! Nothing here runs on the shipping hot path: every response reads a
//! snapshot of the agent's state.
pub mod lag;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use walship_agent::{ReceiverHandle, SenderHandle, WaitError, WaitTarget};
use walship_core::{Position, SegmentName};

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

/// Access rules of the admin endpoint.
#[derive(Clone, Default)]
pub struct Access {
    /// When set, `POST /v1/wait` needs `Authorization: Bearer <token>`.
    /// (Waits hold a task each and, for segments, let PostgreSQL recycle
    /// WAL; everything else is read-only.)
    pub wait_token: Option<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").field("wait_token", &self.wait_token.as_ref().map(|_| "<redacted>")).finish()
    }
}

/// Waits blocked at once; more get 503 rather than a task each, so a
/// flood of waits cannot grow the sender without bound.
pub const MAX_WAITERS: usize = 4096;

/// A bound admin server.
#[derive(Debug)]
pub struct AdminServer {
    listener: tokio::net::TcpListener,
    role: Role,
    access: Access,
}

#[derive(Clone)]
struct AppState {
    role: Role,
    access: Arc<Access>,
    waiters: Arc<tokio::sync::Semaphore>,
}

impl axum::extract::FromRef<AppState> for Role {
    fn from_ref(s: &AppState) -> Role {
        s.role.clone()
    }
}

impl AdminServer {
    /// Binds `addr` (port 0 picks a free port). Must run inside tokio.
    pub async fn bind(addr: SocketAddr, role: Role) -> Result<AdminServer, AdminError> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| AdminError::Bind { addr, source })?;
        Ok(AdminServer { listener, role, access: Access::default() })
    }

    /// Sets the access rules.
    pub fn with_access(mut self, access: Access) -> AdminServer {
        self.access = access;
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, AdminError> {
        self.listener.local_addr().map_err(AdminError::Serve)
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AdminError> {
        let addr = self.local_addr()?;
        tracing::info!(admin = %addr, wait_token = self.access.wait_token.is_some(), "admin endpoint listening");
        if !addr.ip().is_loopback() && self.access.wait_token.is_none() && matches!(self.role, Role::Sender(_)) {
            tracing::warn!(
                admin = %addr,
                "the admin endpoint listens beyond loopback without --wait-token-file: anyone who can reach it can \
                 read positions and hold waits open"
            );
        }
        axum::serve(self.listener, router_with(self.role, self.access))
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(AdminError::Serve)
    }
}

/// The routes, for tests that drive them without a socket.
pub fn router(role: Role) -> Router {
    router_with(role, Access::default())
}

/// [`router`] with access rules.
pub fn router_with(role: Role, access: Access) -> Router {
    let state =
        AppState { role, access: Arc::new(access), waiters: Arc::new(tokio::sync::Semaphore::new(MAX_WAITERS)) };
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_handler))
        .route("/v1/lag", get(lag_handler))
        .route("/v1/wait", post(wait_handler))
        .with_state(state)
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

/// `POST /v1/wait` body. `position` may be a number or a string (decimal or `X/Y`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitBody {
    position: Option<PositionArg>,
    segment: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum PositionArg {
    Number(u64),
    Text(String),
}

fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Compares without an early exit, so response time does not leak how much
/// of a guessed token was right.
fn same_token(given: &[u8], want: &[u8]) -> bool {
    given.len() == want.len() && given.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn wait_handler(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(want) = &state.access.wait_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(t) if same_token(t.as_bytes(), want.as_bytes()) => {}
            Some(_) => return json_error(StatusCode::FORBIDDEN, "wrong wait token"),
            None => {
                return json_error(
                    StatusCode::UNAUTHORIZED,
                    "this sender requires a wait token: send Authorization: Bearer <token> (walship wait --token-file)",
                );
            }
        }
    }
    let Ok(_slot) = state.waiters.clone().try_acquire_owned() else {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, format!("too many waits blocked at once ({MAX_WAITERS})"));
    };
    let Role::Sender(h) = state.role else {
        return json_error(StatusCode::NOT_FOUND, "waits are served by the sender's admin endpoint, not a receiver's");
    };
    let body: WaitBody = if body.iter().all(u8::is_ascii_whitespace) {
        WaitBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("invalid wait request: {e}")),
        }
    };
    let target = match (body.position, body.segment) {
        (Some(_), Some(_)) => {
            return json_error(StatusCode::BAD_REQUEST, "give a position or a segment, not both");
        }
        (Some(PositionArg::Number(n)), None) => WaitTarget::Position(Position(n)),
        (Some(PositionArg::Text(t)), None) => match t.parse::<Position>() {
            Ok(p) => WaitTarget::Position(p),
            Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string()),
        },
        (None, Some(name)) => match SegmentName::new(&name) {
            Ok(n) => WaitTarget::Segment(n),
            Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string()),
        },
        (None, None) => WaitTarget::End,
    };
    let timeout = body.timeout_ms.map(std::time::Duration::from_millis);
    match h.wait(target, timeout).await {
        Ok(r) => axum::Json(serde_json::json!({
            "outcome": r.outcome.as_str(),
            "position": r.position.get(),
            "waited_ms": u64::try_from(r.waited.as_millis()).unwrap_or(u64::MAX),
        }))
        .into_response(),
        Err(e @ (WaitError::SegmentIncomplete(_) | WaitError::SegmentUnknown(_))) => {
            json_error(StatusCode::CONFLICT, e.to_string())
        }
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

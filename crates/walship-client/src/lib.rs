//! A small client for a walship sender's wait API (`POST /v1/wait`), so an
//! application can make its commits semi-synchronous without HTTP
//! boilerplate:
//!
//! ```no_run
//! let client = walship_client::Client::new("127.0.0.1:9187");
//! // Right after the application's own commit: wait for everything in the WAL now.
//! let r = client.wait(walship_client::Wait::end().timeout(std::time::Duration::from_secs(2)))?;
//! match r.outcome {
//!     walship_client::Outcome::Durable => {}             // on the quorum
//!     walship_client::Outcome::Degraded => { /* semi-sync fell back to async */ }
//!     walship_client::Outcome::Timeout => { /* our own timeout passed */ }
//! }
//! # Ok::<(), walship_client::ClientError>(())
//! ```
//!
//! Blocking (ureq, plain HTTP); one [`Client`] keeps connections alive and
//! can be shared between threads.
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The position is durable on the quorum at the configured level.
    Durable,
    /// Semi-sync degraded to async; the position may not be on the quorum.
    Degraded,
    /// The caller's own timeout passed first.
    Timeout,
    /// A segment was let go without being durable: the sender's `--max-retained` was exceeded.
    Released,
    /// Not a WAL segment (a PostgreSQL `.history`, `.backup` or `.partial`
    /// file given to `walship wait --segment`): nothing to wait for. Only
    /// the CLI produces it, without asking the sender.
    Skipped,
}

/// The answer of `POST /v1/wait`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct WaitResponse {
    pub outcome: Outcome,
    pub position: u64,
    pub waited_ms: u64,
}

/// The body of `POST /v1/wait`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Wait {
    /// Decimal position or PostgreSQL `X/Y`; absent: the WAL end at the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// A whole segment, by file name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl Wait {
    /// Everything in the WAL at the moment of the call.
    pub fn end() -> Self {
        Wait::default()
    }

    /// Everything below `pos` (decimal or `X/Y`).
    pub fn position(pos: impl Into<String>) -> Self {
        Wait { position: Some(pos.into()), ..Wait::default() }
    }

    /// The whole segment `name`.
    pub fn segment(name: impl Into<String>) -> Self {
        Wait { segment: Some(name.into()), ..Wait::default() }
    }

    /// Give up after `t` (outcome `Timeout`).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout_ms = Some(u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        self
    }
}

/// Why a wait call failed (as opposed to returning an outcome).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint could not be reached or did not answer.
    #[error("cannot reach the walship admin endpoint {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The endpoint refused the request (bad position, unknown segment, a receiver's endpoint...).
    #[error("{url} answered {status}: {message}")]
    Refused { url: String, status: u16, message: String },
    /// The answer was not the expected JSON.
    #[error("{url} answered with unexpected content: {message}")]
    BadAnswer { url: String, message: String },
}

/// A client for one sender's admin endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl Client {
    /// `admin` is `HOST:PORT` or `http://HOST:PORT`.
    pub fn new(admin: &str) -> Self {
        let base = if admin.starts_with("http://") { admin.to_string() } else { format!("http://{admin}") };
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Client { base: base.trim_end_matches('/').to_string(), agent, token: None }
    }

    /// Sends `Authorization: Bearer TOKEN` with waits (the sender's `--wait-token-file`).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Blocks until the wait ends; the HTTP timeout is the wait's own plus a margin
    /// (none without one: a `--sync-timeout never` wait may block for long).
    pub fn wait(&self, w: Wait) -> Result<WaitResponse, ClientError> {
        let url = format!("{}/v1/wait", self.base);
        let mut req = self.agent.post(&url);
        if let Some(ms) = w.timeout_ms {
            req = req.config().timeout_global(Some(Duration::from_millis(ms) + Duration::from_secs(10))).build();
        }
        let body = serde_json::to_string(&w)
            .map_err(|e| ClientError::BadAnswer { url: url.clone(), message: e.to_string() })?;
        if let Some(t) = &self.token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        let mut resp = req
            .header("content-type", "application/json")
            .send(body.as_bytes())
            .map_err(|e| ClientError::Unreachable { url: url.clone(), message: e.to_string() })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| ClientError::Unreachable { url: url.clone(), message: e.to_string() })?;
        if status != 200 {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(text);
            return Err(ClientError::Refused { url, status, message });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::BadAnswer { url, message: format!("{e}: {text}") })
    }
}

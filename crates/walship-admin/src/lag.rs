//! The `/v1/lag` JSON report (fields as in ARCHITECTURE.md and
//! docs/monitoring.md). Positions are unsigned integers (`*_pos`), with the
//! PostgreSQL `X/Y` spelling beside them (`*_lsn`) for a PostgreSQL source;
//! lags are seconds as floats, and exactly 0 when caught up.
use std::time::Instant;

use serde::Serialize;

use crate::Role;

/// The sender's report.
#[derive(Debug, Serialize)]
pub struct SenderLag {
    pub role: &'static str,
    pub source: Source,
    pub receivers: Vec<ReceiverLag>,
    pub sync: Sync,
    pub rpo_exposure_seconds: f64,
    pub rpo_target_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Source {
    pub id: String,
    pub format: &'static str,
    pub end_pos: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_lsn: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ReceiverLag {
    pub name: String,
    pub state: &'static str,
    pub sent_pos: u64,
    pub write_pos: u64,
    pub flush_pos: u64,
    pub apply_pos: u64,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<ReceiverLsn>,
    pub lag_bytes: u64,
    pub write_lag_seconds: f64,
    pub flush_lag_seconds: f64,
    pub apply_lag_seconds: f64,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

/// A receiver's positions as PostgreSQL LSNs.
#[derive(Debug, Serialize)]
pub struct ReceiverLsn {
    pub sent_lsn: String,
    pub write_lsn: String,
    pub flush_lsn: String,
    pub apply_lsn: String,
}

#[derive(Debug, Serialize)]
pub struct Sync {
    pub quorum: u32,
    pub level: &'static str,
    pub state: &'static str,
    /// The quorum position at the sync level among connected receivers;
    /// null when fewer than the quorum are connected.
    pub quorum_pos: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum_lsn: Option<String>,
    /// Receivers streaming now: below the quorum, waits will degrade once
    /// their sync timeout passes, although the state still says "sync".
    pub streaming: usize,
    pub waiting: usize,
    pub fallbacks: u64,
}

/// The receiver's report.
#[derive(Debug, Serialize)]
pub struct ReceiverReport {
    pub role: &'static str,
    pub source: ReceiverSource,
    pub written_pos: u64,
    pub flushed_pos: u64,
    pub applied_pos: u64,
    /// The apply command's last failure, until it succeeds again.
    pub apply_error: Option<String>,
    pub seconds_since_last_frame: Option<f64>,
    pub sessions: u64,
    /// The last storage failure (e.g. "No space left on device"), until a
    /// later flush succeeds. While set, nothing new is acknowledged.
    pub storage_error: Option<String>,
    /// Connections open now, and refused so far (limit, handshake, allow-list).
    pub connections: ReceiverConnections,
}

#[derive(Debug, Serialize)]
pub struct ReceiverConnections {
    pub open: u64,
    pub refused: u64,
}

#[derive(Debug, Serialize)]
pub struct ReceiverSource {
    pub id: Option<String>,
    pub connected: bool,
}

/// The report for `role`, computed now.
pub fn report(role: &Role) -> serde_json::Value {
    let v = match role {
        Role::Sender(h) => serde_json::to_value(sender(h)),
        Role::Receiver(h) => serde_json::to_value(receiver(h)),
    };
    v.unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}

fn sender(h: &walship_agent::SenderHandle) -> SenderLag {
    let s = h.snapshot();
    let pg = s.format == "postgres";
    let lsn = |p: walship_core::Position| pg.then(|| p.lsn().to_string());
    SenderLag {
        role: "sender",
        source: Source {
            id: s.source_id.clone(),
            format: s.format,
            end_pos: s.end.get(),
            end_lsn: lsn(s.end),
            error: s.source_error.clone(),
        },
        receivers: s
            .receivers
            .iter()
            .zip(&s.lags)
            .map(|(r, l)| ReceiverLag {
                name: r.label.clone(),
                state: r.state.as_str(),
                sent_pos: r.sent.get(),
                write_pos: r.written.get(),
                flush_pos: r.flushed.get(),
                apply_pos: r.applied.get(),
                lsn: pg.then(|| ReceiverLsn {
                    sent_lsn: r.sent.lsn().to_string(),
                    write_lsn: r.written.lsn().to_string(),
                    flush_lsn: r.flushed.lsn().to_string(),
                    apply_lsn: r.applied.lsn().to_string(),
                }),
                lag_bytes: l.lag_bytes,
                write_lag_seconds: l.write.as_secs_f64(),
                flush_lag_seconds: l.flush.as_secs_f64(),
                apply_lag_seconds: l.apply.as_secs_f64(),
                reconnects: r.reconnects,
                last_error: r.last_error.clone(),
            })
            .collect(),
        sync: Sync {
            quorum: s.sync.quorum,
            level: s.sync.level.as_str(),
            state: s.sync.state.as_str(),
            quorum_pos: s.sync.quorum_pos.map(|p| p.get()),
            quorum_lsn: s.sync.quorum_pos.and_then(lsn),
            streaming: s.receivers.iter().filter(|r| r.state.as_str() == "streaming").count(),
            waiting: s.sync.waiting,
            fallbacks: s.sync.fallbacks,
        },
        rpo_exposure_seconds: s.rpo_exposure.as_secs_f64(),
        rpo_target_seconds: s.rpo_target.map(|t| t.as_secs_f64()),
    }
}

fn receiver(h: &walship_agent::ReceiverHandle) -> ReceiverReport {
    let st = h.stats();
    ReceiverReport {
        role: "receiver",
        source: ReceiverSource { id: st.source_id.clone(), connected: st.connected },
        written_pos: st.written_pos.get(),
        flushed_pos: st.flushed_pos.get(),
        applied_pos: st.apply.as_ref().map_or(st.flushed_pos, |a| a.applied.min(st.flushed_pos)).get(),
        apply_error: st.apply.as_ref().and_then(|a| a.last_error.clone()),
        seconds_since_last_frame: st.last_frame_at.map(|t| Instant::now().saturating_duration_since(t).as_secs_f64()),
        sessions: st.sessions_accepted,
        storage_error: st.storage_error.clone(),
        connections: ReceiverConnections { open: st.connections_open, refused: st.connections_refused },
    }
}

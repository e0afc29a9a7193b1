//! The mirror's public value types: the identity it is bound to and the
//! resume point it answers a handshake with.
use serde::{Deserialize, Serialize};
use walship_core::{Position, SegmentName};

/// The source a mirror holds, fixed by the first sender that binds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// PostgreSQL system identifier or a configured id.
    pub source_id: String,
    /// WAL format name ("raw", "postgres").
    pub format: String,
    /// Fixed segment size in bytes, or 0 when segments vary in size.
    pub segment_size: u64,
}

/// Where a sender should resume, as told in the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    /// Everything below is durable in the mirror.
    pub durable_pos: Position,
    /// The segment the durable position is in (or at the end of), if any.
    pub segment: Option<ResumeSegment>,
}

/// The segment a sender resumes in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeSegment {
    /// Its name.
    pub name: SegmentName,
    /// Its first position.
    pub start: Position,
    /// Whether it is complete (then the durable position is its end).
    pub complete: bool,
}

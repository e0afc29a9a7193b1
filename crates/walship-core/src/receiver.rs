//! The receiver's side of one session.
//!
//! The handshake is two pure functions: [`check_hello`] turns the sender's
//! `Hello` into a typed [`Peer`] (or a refusal to send back), and
//! [`welcome`] builds the answer from the mirror's resume point. After that
//! a [`ReceiverSession`] validates every frame against the stream so far
//! (contiguous positions, segments opened and closed in order) and turns it
//! into a [`StoreOp`] for the shell's store. Acks are only ever built from
//! what the shell reports back: `written` from [`ReceiverSession::handle_written`],
//! `flushed` from [`ReceiverSession::handle_flushed`] after fdatasync
//! returned. Nothing else moves them, so no ack can claim more than the
//! disk holds.
use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::frame::{Frame, Payload};
use crate::proto::{self, control::Msg};
use crate::{PROTOCOL_VERSION, Position, SegmentName};

/// Longest source id accepted.
pub const MAX_SOURCE_ID_LEN: usize = 256;

/// The sender, as its Hello described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub source_id: String,
    pub format: proto::Format,
    pub segment_size: u64,
    pub timeline: u32,
    pub sender_name: String,
    pub max_frame: u32,
}

/// Why a Hello is refused; becomes an `Error` message to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// Another protocol version.
    #[error("sender speaks protocol version {0}, this receiver speaks {PROTOCOL_VERSION}")]
    Version(u32),
    /// The first message was not Hello.
    #[error("expected hello, got {0}")]
    NotHello(&'static str),
    /// An unknown WAL format.
    #[error("unknown wal format {0}")]
    Format(i32),
    /// A segment size the format does not allow (PostgreSQL: a power of two from 1 MiB to 1 GiB; raw: 0).
    #[error("invalid segment size {0} for the wal format")]
    SegmentSize(u64),
    /// The source id is empty, too long or not printable.
    #[error("invalid source id {0:?}")]
    SourceId(String),
    /// The sender's frames would exceed the receiver's limit.
    #[error("sender frames of up to {sender} bytes exceed this receiver's limit of {limit} bytes")]
    FrameTooLarge { sender: u32, limit: u32 },
}

impl HelloError {
    /// The protocol error code for this refusal.
    pub fn code(&self) -> proto::ErrorCode {
        match self {
            HelloError::Version(_) => proto::ErrorCode::Version,
            HelloError::Format(_) | HelloError::SegmentSize(_) => proto::ErrorCode::FormatMismatch,
            _ => proto::ErrorCode::Protocol,
        }
    }
}

/// Validates the sender's first message.
pub fn check_hello(msg: Msg, max_payload: u32) -> Result<Peer, HelloError> {
    let h = match msg {
        Msg::Hello(h) => h,
        other => return Err(HelloError::NotHello(crate::sender::msg_name(&other))),
    };
    if h.protocol_version != PROTOCOL_VERSION {
        return Err(HelloError::Version(h.protocol_version));
    }
    let format = match proto::Format::try_from(h.format) {
        Ok(f @ (proto::Format::Raw | proto::Format::Postgres)) => f,
        _ => return Err(HelloError::Format(h.format)),
    };
    let size_ok = match format {
        proto::Format::Postgres => {
            h.segment_size.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&h.segment_size)
        }
        _ => h.segment_size == 0,
    };
    if !size_ok {
        return Err(HelloError::SegmentSize(h.segment_size));
    }
    if h.source_id.is_empty() || h.source_id.len() > MAX_SOURCE_ID_LEN || h.source_id.chars().any(|c| c.is_control()) {
        return Err(HelloError::SourceId(h.source_id));
    }
    if h.max_frame_len > max_payload {
        return Err(HelloError::FrameTooLarge { sender: h.max_frame_len, limit: max_payload });
    }
    Ok(Peer {
        source_id: h.source_id,
        format,
        segment_size: h.segment_size,
        timeline: h.timeline,
        sender_name: h.sender_name,
        max_frame: h.max_frame_len,
    })
}

/// The mirror's resume point, as the store reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorResume {
    pub durable_pos: Position,
    /// The segment holding the resume point: name, start, complete.
    pub segment: Option<(SegmentName, Position, bool)>,
    /// Start of the checksummed range before `durable_pos`, and its CRC-32.
    pub check_start: Position,
    pub check_crc: u32,
    /// Applied position (`<= durable_pos`); `durable_pos` without an apply step.
    pub applied_pos: Position,
}

/// The Welcome message for an accepted session.
pub fn welcome(epoch: u64, resume: &MirrorResume, receiver_name: &str) -> Msg {
    let (name, start, complete) = match &resume.segment {
        Some((n, s, c)) => (n.as_str().to_string(), s.get(), *c),
        None => (String::new(), 0, false),
    };
    Msg::Welcome(proto::Welcome {
        protocol_version: PROTOCOL_VERSION,
        epoch,
        durable_pos: resume.durable_pos.get(),
        resume_segment: name,
        resume_segment_start: start,
        resume_segment_complete: complete,
        check_start: resume.check_start.get(),
        check_crc: resume.check_crc,
        receiver_name: receiver_name.to_string(),
        applied_pos: resume.applied_pos.min(resume.durable_pos).get(),
    })
}

/// An error message to send before closing.
pub fn error_msg(code: proto::ErrorCode, message: impl Into<String>) -> Msg {
    Msg::Error(proto::Error { code: code as i32, message: message.into() })
}

/// What the shell's store must do for a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Create `NAME.partial` for a segment starting at `start`.
    StartSegment { name: SegmentName, start: Position },
    /// Write `data` at `pos` in the open segment (its chunks one after the other).
    Write { pos: Position, data: Payload },
    /// The open segment is complete at `end`: sync, rename, record.
    CompleteSegment { end: Position },
    /// Write side file `name` (e.g. a timeline history file) durably, in
    /// order with the stream; no position moves.
    WriteFile { name: SegmentName, contents: Bytes },
}

/// A frame that does not fit the stream; the session must end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// A frame's position is not where the stream is.
    #[error("frame at position {got}, expected position {expected}")]
    Gap { expected: Position, got: Position },
    /// Data outside an open segment.
    #[error("data frame at position {0} outside any open segment")]
    NoSegment(Position),
    /// A segment start while another segment is open.
    #[error("segment {new} starts at position {pos} while segment {open} is still open")]
    AlreadyOpen { open: SegmentName, new: SegmentName, pos: Position },
    /// A segment whose name does not sort after the previous one.
    #[error("segment {new} does not sort after the previous segment {prev}")]
    OutOfOrder { prev: SegmentName, new: SegmentName },
    /// A data frame longer than the negotiated maximum.
    #[error("data frame at position {pos} is {len} bytes, more than the {max} the sender announced")]
    Oversized { pos: Position, len: usize, max: u32 },
    /// A data frame whose end would lie past the largest position (2^64 - 1).
    #[error("data frame at position {pos} with {len} bytes runs past the largest position")]
    PastEnd { pos: Position, len: usize },
    /// The shell reported positions that make no sense.
    #[error("store reported {what} position {pos}, beyond {limit}")]
    BadReport { what: &'static str, pos: Position, limit: Position },
}

/// Settings of a receiver session.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Max data payload the sender announced.
    pub max_frame: u32,
    /// Ack `written` after this many new bytes even without a flush.
    pub ack_bytes: u64,
    /// An apply step (the receiver's apply command) reports the applied
    /// position through [`ReceiverSession::handle_applied`]; without one,
    /// applied is the flushed position.
    pub separate_apply: bool,
}

/// The receiver's streaming state machine. No I/O, no clock.
#[derive(Debug)]
pub struct ReceiverSession {
    cfg: ReceiverConfig,
    epoch: u64,
    next: Position,
    open: Option<SegmentName>,
    prev: Option<SegmentName>,
    any_start_ok: bool,
    written: Position,
    flushed: Position,
    applied: Position,
    acked: (Position, Position, Position),
    outbox: VecDeque<Msg>,
    last_frame_ts: u64,
}

impl ReceiverSession {
    /// A session of `epoch` resuming from the mirror's resume point.
    pub fn new(cfg: ReceiverConfig, epoch: u64, resume: &MirrorResume) -> Self {
        let d = resume.durable_pos;
        let (open, prev) = match &resume.segment {
            Some((n, _, false)) => (Some(n.clone()), None),
            Some((n, _, true)) => (None, Some(n.clone())),
            None => (None, None),
        };
        ReceiverSession {
            cfg,
            epoch,
            next: d,
            open,
            prev,
            any_start_ok: resume.segment.is_none(),
            written: d,
            flushed: d,
            applied: resume.applied_pos.min(d),
            acked: (d, d, resume.applied_pos.min(d)),
            outbox: VecDeque::new(),
            last_frame_ts: 0,
        }
    }

    /// The session's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The position the next frame must have.
    pub fn next_pos(&self) -> Position {
        self.next
    }

    /// Written and flushed positions as reported by the shell.
    pub fn positions(&self) -> (Position, Position) {
        (self.written, self.flushed)
    }

    /// The sender timestamp of the last frame.
    pub fn last_frame_timestamp_us(&self) -> u64 {
        self.last_frame_ts
    }

    /// Validates a frame and says what the store must do with it.
    pub fn handle_frame(&mut self, frame: Frame, _now: Instant) -> Result<Option<StoreOp>, StreamError> {
        self.last_frame_ts = frame.timestamp_us();
        match frame {
            Frame::SegmentStart { pos, name, .. } => {
                if let Some(open) = &self.open {
                    return Err(StreamError::AlreadyOpen { open: open.clone(), new: name, pos });
                }
                if let Some(prev) = &self.prev
                    && name <= *prev
                {
                    return Err(StreamError::OutOfOrder { prev: prev.clone(), new: name });
                }
                if pos != self.next && !self.any_start_ok {
                    return Err(StreamError::Gap { expected: self.next, got: pos });
                }
                if self.any_start_ok && pos != self.next {
                    // The first segment of an empty mirror begins where the
                    // source's numbering begins; nothing below it exists here.
                    self.written = pos;
                    self.flushed = pos;
                    self.applied = pos;
                    self.acked = (pos, pos, pos);
                }
                // Otherwise positions move only on the store's reports: the
                // previous segment's completion (its fdatasync) may still be
                // in flight when this frame arrives.
                self.any_start_ok = false;
                self.next = pos;
                self.open = Some(name.clone());
                Ok(Some(StoreOp::StartSegment { name, start: pos }))
            }
            Frame::Data { pos, payload, .. } => {
                if self.open.is_none() {
                    return Err(StreamError::NoSegment(pos));
                }
                if pos != self.next {
                    return Err(StreamError::Gap { expected: self.next, got: pos });
                }
                if payload.len() > self.cfg.max_frame as usize {
                    return Err(StreamError::Oversized { pos, len: payload.len(), max: self.cfg.max_frame });
                }
                if payload.is_empty() {
                    return Ok(None);
                }
                // Positions saturate; a frame that would wrap must not be
                // written over bytes already acknowledged (found by fuzzing).
                let Some(end) = pos.get().checked_add(payload.len() as u64) else {
                    return Err(StreamError::PastEnd { pos, len: payload.len() });
                };
                self.next = Position(end);
                Ok(Some(StoreOp::Write { pos, data: payload }))
            }
            Frame::File { name, contents, .. } => Ok(Some(StoreOp::WriteFile { name, contents })),
            Frame::SegmentEnd { pos, .. } => {
                let Some(open) = self.open.take() else {
                    return Err(StreamError::NoSegment(pos));
                };
                if pos != self.next {
                    self.open = Some(open);
                    return Err(StreamError::Gap { expected: self.next, got: pos });
                }
                self.prev = Some(open);
                Ok(Some(StoreOp::CompleteSegment { end: pos }))
            }
        }
    }

    /// The store has written everything below `pos`.
    pub fn handle_written(&mut self, pos: Position, _now: Instant) -> Result<(), StreamError> {
        if pos > self.next {
            return Err(StreamError::BadReport { what: "written", pos, limit: self.next });
        }
        self.written = self.written.max(pos);
        if self.written.since(self.acked.0) >= self.cfg.ack_bytes {
            self.queue_ack();
        }
        Ok(())
    }

    /// fdatasync has returned for everything below `pos`; only now may an
    /// ack claim it as flushed.
    pub fn handle_flushed(&mut self, pos: Position, _now: Instant) -> Result<(), StreamError> {
        if pos > self.written {
            return Err(StreamError::BadReport { what: "flushed", pos, limit: self.written });
        }
        if pos > self.flushed {
            self.flushed = pos;
            self.queue_ack();
        }
        Ok(())
    }

    /// The apply step has applied everything below `pos` (only with
    /// `separate_apply`). Never claims more than is flushed.
    pub fn handle_applied(&mut self, pos: Position, _now: Instant) -> Result<(), StreamError> {
        if pos > self.flushed {
            return Err(StreamError::BadReport { what: "applied", pos, limit: self.flushed });
        }
        if pos > self.applied {
            self.applied = pos;
            self.queue_ack();
        }
        Ok(())
    }

    fn queue_ack(&mut self) {
        if !self.cfg.separate_apply {
            // Without an apply step, "applied" is "durable in the mirror".
            self.applied = self.flushed;
        }
        let now = (self.written, self.flushed, self.applied);
        if now == self.acked {
            return;
        }
        self.acked = now;
        // Coalesce: a newer ack makes any queued one obsolete.
        self.outbox.retain(|m| !matches!(m, Msg::Ack(_)));
        self.outbox.push_back(Msg::Ack(proto::Ack {
            epoch: self.epoch,
            written_pos: self.written.get(),
            flushed_pos: self.flushed.get(),
            applied_pos: self.applied.get(),
        }));
    }

    /// The next control message to send.
    pub fn poll_control(&mut self) -> Option<Msg> {
        self.outbox.pop_front()
    }
}

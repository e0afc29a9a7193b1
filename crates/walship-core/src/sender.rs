//! The sender's side of one session (one receiver, one connection).
//!
//! Lifecycle: [`SenderSession::new`] queues a `Hello`; the shell sends what
//! [`SenderSession::poll_control`] yields. When the receiver's `Welcome`
//! arrives, [`SenderSession::handle_control`] turns it into a
//! [`ResumeRequest`]: the shell looks the resume point up in its source
//! (which segment, a checksum of the bytes before it) and answers with
//! [`SenderSession::handle_resume`], after which the session streams.
//!
//! While streaming, the shell repeatedly asks [`SenderSession::cursor`] which
//! source segment the session is in, and passes that segment's current view
//! to [`SenderSession::poll_transmit`], which says what to send next: a
//! segment start, a slice of data (never crossing a segment end, never past
//! the window of unacknowledged bytes), or a segment end. Acks come back
//! through `handle_control` and move the window.
use std::collections::VecDeque;
use std::time::Instant;

use crate::proto::{self, control::Msg};
use crate::{PROTOCOL_VERSION, Position, SegmentName};

/// Static settings of a sender session.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Source identity sent in Hello.
    pub source_id: String,
    /// WAL format.
    pub format: proto::Format,
    /// Fixed segment size, 0 for variable-size segments.
    pub segment_size: u64,
    /// PostgreSQL timeline, 0 for raw.
    pub timeline: u32,
    /// This host's name, for the receiver's logs.
    pub sender_name: String,
    /// Largest data frame payload.
    pub max_frame: u32,
    /// Largest number of sent bytes not yet acknowledged as written.
    pub max_inflight: u64,
}

/// What the receiver told us about its mirror in `Welcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRequest {
    /// The session's epoch.
    pub epoch: u64,
    /// The mirror is durable up to here.
    pub durable_pos: Position,
    /// The segment holding the resume point, absent for an empty mirror.
    pub segment: Option<ResumeSegment>,
    /// Start of the range whose checksum the receiver reported.
    pub check_start: Position,
    /// CRC-32 of the mirror's bytes in `[check_start, durable_pos)`.
    pub check_crc: u32,
    /// The mirror's applied position (`<= durable_pos`).
    pub applied_pos: Position,
    /// The receiver's name.
    pub receiver_name: String,
}

/// The mirror's resume segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeSegment {
    pub name: SegmentName,
    pub start: Position,
    /// `durable_pos` is this segment's end and it is complete on the mirror.
    pub complete: bool,
}

/// The shell's answer to a [`ResumeRequest`], after consulting the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeCheck {
    /// The source's bytes in `[check_start, durable_pos)` have this CRC-32.
    Crc(u32),
    /// The bytes cannot be checked (e.g. the complete resume segment was
    /// already removed from the source); resume without the check.
    Unverifiable,
    /// The source contradicts the mirror; the message says how.
    Diverged(String),
    /// The source no longer has bytes the receiver needs.
    Gone(String),
}

/// Where in the source a streaming session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// Inside this segment (already announced to the receiver).
    In(SegmentName),
    /// Between segments: the next one is the first whose name sorts after
    /// `after` (or the first segment of the source when `after` is `None`),
    /// and it must start at `pos`.
    After { after: Option<SegmentName>, pos: Position },
}

/// The current view of one source segment, as the shell's tailer sees it.
#[derive(Debug, Clone, Copy)]
pub struct SegmentView<'a> {
    pub name: &'a SegmentName,
    pub start: Position,
    /// End of the bytes observed so far.
    pub end: Position,
    /// A later segment exists, so `end` is final.
    pub sealed: bool,
}

/// What to put on the data stream next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A segment-start frame.
    SegmentStart { name: SegmentName, pos: Position, timestamp_us: u64 },
    /// A data frame with the source bytes `[pos, pos + len)`.
    Data { pos: Position, len: u32, timestamp_us: u64 },
    /// A segment-end frame.
    SegmentEnd { pos: Position, timestamp_us: u64 },
}

/// Positions of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionPositions {
    /// Everything below has been handed to the transport.
    pub sent: Position,
    pub written: Position,
    pub flushed: Position,
    pub applied: Position,
}

/// Why a session ended on the sender's side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The receiver speaks another protocol version.
    #[error("receiver speaks protocol version {0}, this sender speaks {PROTOCOL_VERSION}")]
    Version(u32),
    /// The receiver sent an Error message.
    #[error("receiver refused the session ({code:?}): {message}")]
    Refused { code: proto::ErrorCode, message: String },
    /// The mirror holds a different history than the source.
    #[error("mirror has diverged from source at position {pos}: {detail}")]
    Diverged { pos: Position, detail: String },
    /// The source no longer has what the receiver needs.
    #[error("source can no longer serve the receiver: {0}")]
    SourceGone(String),
    /// The receiver broke the protocol.
    #[error("protocol violation by receiver: {0}")]
    Protocol(String),
}

enum State {
    AwaitWelcome,
    AwaitResumeCheck(ResumeRequest),
    Streaming,
    Failed,
}

/// The sender's session state machine. No I/O, no clock.
pub struct SenderSession {
    cfg: SenderConfig,
    base: Instant,
    state: State,
    epoch: u64,
    cursor: Cursor,
    pos: SessionPositions,
    outbox: VecDeque<Msg>,
    stale_acks: u64,
}

impl std::fmt::Debug for SenderSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderSession")
            .field("epoch", &self.epoch)
            .field("cursor", &self.cursor)
            .field("pos", &self.pos)
            .finish()
    }
}

impl SenderSession {
    /// A new session; `base` is the instant frame timestamps count from.
    pub fn new(cfg: SenderConfig, base: Instant) -> Self {
        let hello = proto::Hello {
            protocol_version: PROTOCOL_VERSION,
            source_id: cfg.source_id.clone(),
            format: cfg.format as i32,
            segment_size: cfg.segment_size,
            timeline: cfg.timeline,
            sender_name: cfg.sender_name.clone(),
            max_frame_len: cfg.max_frame,
        };
        SenderSession {
            cfg,
            base,
            state: State::AwaitWelcome,
            epoch: 0,
            cursor: Cursor::After { after: None, pos: Position::ZERO },
            pos: SessionPositions::default(),
            outbox: VecDeque::from([Msg::Hello(hello)]),
            stale_acks: 0,
        }
    }

    /// The next control message to send, if any.
    pub fn poll_control(&mut self) -> Option<Msg> {
        self.outbox.pop_front()
    }

    /// A control message from the receiver. Returns a [`ResumeRequest`] when
    /// the shell must check the resume point (once, after `Welcome`).
    pub fn handle_control(&mut self, msg: Msg, _now: Instant) -> Result<Option<ResumeRequest>, SessionError> {
        let r = self.handle_control_inner(msg);
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    fn handle_control_inner(&mut self, msg: Msg) -> Result<Option<ResumeRequest>, SessionError> {
        match (msg, &self.state) {
            (Msg::Error(e), _) => Err(SessionError::Refused { code: e.code(), message: e.message }),
            (Msg::Welcome(w), State::AwaitWelcome) => {
                if w.protocol_version != PROTOCOL_VERSION {
                    return Err(SessionError::Version(w.protocol_version));
                }
                let segment = if w.resume_segment.is_empty() {
                    None
                } else {
                    let name = SegmentName::new(&w.resume_segment)
                        .map_err(|e| SessionError::Protocol(format!("welcome names resume segment: {e}")))?;
                    Some(ResumeSegment {
                        name,
                        start: Position(w.resume_segment_start),
                        complete: w.resume_segment_complete,
                    })
                };
                let durable = Position(w.durable_pos);
                if w.check_start > w.durable_pos || segment.as_ref().is_some_and(|s| s.start > durable) {
                    return Err(SessionError::Protocol("welcome positions are inconsistent".into()));
                }
                let req = ResumeRequest {
                    epoch: w.epoch,
                    durable_pos: durable,
                    segment,
                    check_start: Position(w.check_start),
                    check_crc: w.check_crc,
                    applied_pos: Position(w.applied_pos.min(w.durable_pos)),
                    receiver_name: w.receiver_name,
                };
                self.epoch = w.epoch;
                self.state = State::AwaitResumeCheck(req.clone());
                Ok(Some(req))
            }
            (Msg::Ack(a), State::Streaming) => {
                if a.epoch != self.epoch {
                    self.stale_acks += 1;
                    return Ok(None);
                }
                self.handle_ack(a)?;
                Ok(None)
            }
            (Msg::Status(_), _) => Ok(None),
            (m, _) => Err(SessionError::Protocol(format!("unexpected message {}", msg_name(&m)))),
        }
    }

    fn handle_ack(&mut self, a: proto::Ack) -> Result<(), SessionError> {
        let (w, f, ap) = (Position(a.written_pos), Position(a.flushed_pos), Position(a.applied_pos));
        if w > self.pos.sent {
            return Err(SessionError::Protocol(format!(
                "receiver acknowledged position {w} as written but only {} was sent",
                self.pos.sent
            )));
        }
        if f > w || ap > f {
            return Err(SessionError::Protocol(format!("ack is inconsistent: written {w}, flushed {f}, applied {ap}")));
        }
        if w < self.pos.written || f < self.pos.flushed || ap < self.pos.applied {
            return Err(SessionError::Protocol(format!(
                "ack moved backwards: written {w}, flushed {f}, applied {ap} after {:?}",
                self.pos
            )));
        }
        self.pos.written = w;
        self.pos.flushed = f;
        self.pos.applied = ap;
        Ok(())
    }

    /// The shell's verdict on the resume point, with the cursor at which the
    /// source continues. On success the session streams from `durable_pos`.
    pub fn handle_resume(&mut self, check: ResumeCheck, _now: Instant) -> Result<(), SessionError> {
        let State::AwaitResumeCheck(req) = std::mem::replace(&mut self.state, State::Failed) else {
            return Err(SessionError::Protocol("resume check without a pending welcome".into()));
        };
        match check {
            ResumeCheck::Crc(crc) if crc != req.check_crc => {
                return Err(SessionError::Diverged {
                    pos: req.check_start,
                    detail: format!(
                        "crc32 of positions {}..{} is {crc:#010x} at the source but {:#010x} on receiver {}",
                        req.check_start, req.durable_pos, req.check_crc, req.receiver_name
                    ),
                });
            }
            ResumeCheck::Crc(_) | ResumeCheck::Unverifiable => {}
            ResumeCheck::Diverged(detail) => return Err(SessionError::Diverged { pos: req.durable_pos, detail }),
            ResumeCheck::Gone(msg) => return Err(SessionError::SourceGone(msg)),
        }
        self.cursor = match &req.segment {
            Some(s) if !s.complete => Cursor::In(s.name.clone()),
            Some(s) => Cursor::After { after: Some(s.name.clone()), pos: req.durable_pos },
            None => Cursor::After { after: None, pos: req.durable_pos },
        };
        let d = req.durable_pos;
        self.pos = SessionPositions { sent: d, written: d, flushed: d, applied: req.applied_pos.min(d) };
        self.state = State::Streaming;
        Ok(())
    }

    /// True once the handshake is done and the session streams.
    pub fn is_streaming(&self) -> bool {
        matches!(self.state, State::Streaming)
    }

    /// Where in the source the session is.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// The session's epoch (0 before Welcome).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Current positions.
    pub fn positions(&self) -> SessionPositions {
        self.pos
    }

    /// Acks that carried an older epoch and were ignored.
    pub fn stale_acks(&self) -> u64 {
        self.stale_acks
    }

    /// Bytes sent but not yet acknowledged as written.
    pub fn inflight(&self) -> u64 {
        self.pos.sent.since(self.pos.written)
    }

    /// True when the window has room for more data.
    pub fn window_open(&self) -> bool {
        self.inflight() < self.cfg.max_inflight
    }

    /// What to send next, given the view of the segment the [`cursor`]
    /// names (`None` when the source has no such segment yet). The shell
    /// sends what this returns before calling again.
    ///
    /// [`cursor`]: SenderSession::cursor
    pub fn poll_transmit(
        &mut self,
        view: Option<SegmentView<'_>>,
        now: Instant,
    ) -> Result<Option<Transmit>, SessionError> {
        if !self.is_streaming() {
            return Ok(None);
        }
        let Some(view) = view else { return Ok(None) };
        let ts = self.timestamp_us(now);
        match &self.cursor {
            Cursor::After { after, pos } => {
                if after.as_ref().is_some_and(|a| view.name <= a) {
                    return Err(SessionError::Protocol(format!(
                        "source offered segment {} which does not sort after {}",
                        view.name,
                        after.as_ref().map(|a| a.as_str()).unwrap_or("")
                    )));
                }
                if after.is_none() && self.pos.sent == *pos && self.pos.flushed == *pos {
                    // An empty mirror takes the source from wherever it begins.
                    let p = view.start;
                    self.pos = SessionPositions { sent: p, written: p, flushed: p, applied: p };
                } else if view.start != *pos {
                    return Err(SessionError::Diverged {
                        pos: *pos,
                        detail: format!("the source's segment {} starts at position {}", view.name, view.start),
                    });
                }
                let t = Transmit::SegmentStart { name: view.name.clone(), pos: view.start, timestamp_us: ts };
                self.cursor = Cursor::In(view.name.clone());
                Ok(Some(t))
            }
            Cursor::In(name) => {
                if name != view.name {
                    return Err(SessionError::Protocol(format!("view of {} given for cursor in {name}", view.name)));
                }
                let sent = self.pos.sent;
                if view.end < sent || view.start > sent {
                    return Err(SessionError::Diverged {
                        pos: sent,
                        detail: format!("the source's segment {} now spans {}..{}", name, view.start, view.end),
                    });
                }
                if sent < view.end {
                    if !self.window_open() {
                        return Ok(None);
                    }
                    let room = self.cfg.max_inflight - self.inflight();
                    let len = view.end.since(sent).min(u64::from(self.cfg.max_frame)).min(room);
                    let len = u32::try_from(len).unwrap_or(self.cfg.max_frame);
                    self.pos.sent = sent.add(u64::from(len));
                    return Ok(Some(Transmit::Data { pos: sent, len, timestamp_us: ts }));
                }
                if view.sealed {
                    self.cursor = Cursor::After { after: Some(name.clone()), pos: sent };
                    return Ok(Some(Transmit::SegmentEnd { pos: sent, timestamp_us: ts }));
                }
                Ok(None)
            }
        }
    }

    /// The frame timestamp for `now`: microseconds since the session's base.
    pub fn timestamp_us(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_micros()).unwrap_or(u64::MAX)
    }

    /// The configuration.
    pub fn config(&self) -> &SenderConfig {
        &self.cfg
    }
}

pub(crate) fn msg_name(m: &Msg) -> &'static str {
    match m {
        Msg::Hello(_) => "hello",
        Msg::Welcome(_) => "welcome",
        Msg::Ack(_) => "ack",
        Msg::Status(_) => "status",
        Msg::Error(_) => "error",
    }
}

//! The `receiver_session` harness: the receiver's session core
//! ([`walship_core::receiver::ReceiverSession`]) between a stream of frames
//! and a model of the store thread, driven by a script of operations.
//!
//! # Input
//!
//! Three header bytes, then operations, each an opcode byte (taken modulo
//! [`OPS`]) and its arguments; arguments past the end of the input read as 0.
//!
//! * byte 0, flags: bit 0 `separate_apply`; bit 1 a small `max_frame` (byte 2)
//!   instead of [`frame::DEFAULT_MAX_PAYLOAD`].
//! * byte 1: `ack_bytes` (255: 1 MiB, as the agent uses).
//! * byte 2: the small `max_frame`.
//!
//! Data frames carry up to 16 KiB (length byte 255: a u16 follows, modulo 16384).
//!
//! Frames ([`DATA`], [`START`], [`END`], [`FILE`]) are built from a few
//! bytes, encoded with the real codec and decoded again with
//! [`frame::decode`]; their position is picked relative to the session's
//! next position ([`Script::pos`]) so that the fuzzer reaches deep streams.
//! [`RAW`] hands the decoder arbitrary bytes (the first header's CRC fixed).
//! The store model applies the session's [`StoreOp`]s when told ([`STEP`]),
//! flushes ([`FLUSH`]) and queues the events the agent's store thread sends;
//! [`DELIVER`] hands them to the session, [`POLL`] takes its acks.
//! [`RECONNECT`] ends the session (cleanly or by a crash) and starts the next
//! epoch from the model's resume point. [`REPORT`] feeds the session a
//! position report that may be a lie.
//!
//! # Oracles
//!
//! No panic. Every op the session emits fits the store (positions contiguous,
//! segments opened and completed in order: the model asserts what
//! `walship_store::Mirror` checks). A frame error changes no position. A
//! position report is refused exactly when it passes the documented limit.
//! Every ack is of the session's epoch, has applied ≤ flushed ≤ written
//! (applied = flushed without an apply step), never moves backwards, and
//! claims no more than the store holds: written ≤ the store's written
//! position, flushed ≤ its durable position (unless a lie was accepted). At
//! the end, once the store has applied, flushed and reported everything, the
//! session's positions equal the store's and the last ack says so.
use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use walship_core::frame::{self, Frame, HEADER_LEN};
use walship_core::proto::control::Msg;
use walship_core::receiver::{MirrorResume, ReceiverConfig, ReceiverSession, StoreOp, StreamError};
use walship_core::{Position, SegmentName};

/// `WALSHIP_FUZZ_TRACE=1`: print every operation and what came of it (to
/// read a crash or check what a seed does).
fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("WALSHIP_FUZZ_TRACE").is_some_and(|v| v != "0"))
}

macro_rules! trace {
    ($($t:tt)*) => {
        if tracing() {
            eprintln!($($t)*);
        }
    };
}

/// Number of opcodes.
pub const OPS: u8 = 13;
/// Data frame: position selector, length (255: a u16 follows, modulo 16384).
pub const DATA: u8 = 0;
/// Segment-start frame: position selector, name index.
pub const START: u8 = 1;
/// Segment-end frame: position selector.
pub const END: u8 = 2;
/// File frame: name index, contents length.
pub const FILE: u8 = 3;
/// Raw bytes to the frame decoder: u16 length, the bytes.
pub const RAW: u8 = 4;
/// The store applies up to n+1 queued ops: n.
pub const STEP: u8 = 5;
/// The store flushes (fdatasync): Written and Flushed events.
pub const FLUSH: u8 = 6;
/// The session gets up to n+1 store events: n.
pub const DELIVER: u8 = 7;
/// The shell takes the session's control messages.
pub const POLL: u8 = 8;
/// The session ends; bit 0 of the argument: by a crash. The next epoch resumes.
pub const RECONNECT: u8 = 9;
/// A position report that may be a lie: kind (0 written, 1 flushed, 2 applied), position selector.
pub const REPORT: u8 = 10;
/// The apply step reports: durable minus the argument.
pub const APPLIED: u8 = 11;
/// The store reports its written position (`report_written`).
pub const WRITTEN: u8 = 12;

/// Name index 255: a name the mirror reserves for itself.
pub const NAME_RESERVED: u8 = 255;
/// Name index 254: a timeline history file name.
pub const NAME_HISTORY: u8 = 254;

/// The segment or file name for a name index.
pub fn name(idx: u8) -> SegmentName {
    let s = match idx {
        NAME_RESERVED => "walship.control".to_string(),
        NAME_HISTORY => "00000002.history".to_string(),
        i => format!("00000001{:016X}", u64::from(i)),
    };
    SegmentName::new(&s).expect("valid name")
}

/// An event the store thread sends to the session task.
#[derive(Debug, Clone, Copy)]
enum Event {
    Written(Position),
    Flushed(Position),
}

/// Why the model store refused an op that the session rightly let through
/// (names only; a position that does not fit is a harness panic).
#[derive(Debug)]
struct Refused;

/// The store thread and the mirror, as far as positions go (the rules of
/// `walship_store::Mirror` for the raw format, and the events of the agent's
/// `store_thread`).
#[derive(Debug, Default)]
struct Store {
    /// (name, start, end) oldest first; only the last may be open.
    table: Vec<(SegmentName, Position, Option<Position>)>,
    /// The table as of the last fdatasync/record: what a crash leaves.
    durable_table: Vec<(SegmentName, Position, Option<Position>)>,
    files: Vec<(SegmentName, Bytes)>,
    written: Position,
    durable: Position,
    applied: Position,
    events: VecDeque<Event>,
}

impl Store {
    fn apply(&mut self, op: StoreOp) -> Result<(), Refused> {
        match op {
            StoreOp::StartSegment { name, start } => {
                if name.as_str().starts_with("walship.") || self.files.iter().any(|f| f.0 == name) {
                    return Err(Refused);
                }
                if let Some(last) = self.table.last() {
                    assert!(last.2.is_some(), "store: segment {name} starts while {} is open", last.0);
                    assert_eq!(start, self.written, "store: segment {name} does not start at the written position");
                }
                assert!(self.table.iter().all(|s| s.0 != name), "store: segment {name} exists");
                let first = self.table.is_empty();
                self.table.push((name, start, None));
                if first {
                    // The first segment of an empty mirror: durable jumps to its start, recorded.
                    self.written = start;
                    self.durable = start;
                    self.applied = start;
                    self.durable_table.clone_from(&self.table);
                }
                self.events.push_back(Event::Written(self.written));
            }
            StoreOp::Write { pos, data } => {
                assert!(matches!(self.table.last(), Some((_, _, None))), "store: write at {pos} outside a segment");
                assert_eq!(pos, self.written, "store: write not at the written position");
                self.written = pos.add(data.len() as u64);
            }
            StoreOp::CompleteSegment { end } => {
                let written = self.written;
                let last = self.table.last_mut().expect("store: complete without a segment");
                assert!(last.2.is_none(), "store: complete {} twice", last.0);
                assert_eq!(end, written, "store: complete not at the written position");
                last.2 = Some(end);
                self.sync();
                self.events.push_back(Event::Written(self.written));
                self.events.push_back(Event::Flushed(self.durable));
            }
            StoreOp::WriteFile { name, contents } => {
                if name.as_str().starts_with("walship.") || self.table.iter().any(|s| s.0 == name) {
                    return Err(Refused);
                }
                match self.files.iter().find(|f| f.0 == name) {
                    Some(f) if f.1 == contents => {}
                    Some(_) => return Err(Refused),
                    None => self.files.push((name, contents)),
                }
            }
        }
        Ok(())
    }

    fn sync(&mut self) {
        self.durable = self.written;
        self.durable_table.clone_from(&self.table);
    }

    fn flush(&mut self) {
        self.events.push_back(Event::Written(self.written));
        self.sync();
        self.events.push_back(Event::Flushed(self.durable));
    }

    /// A crash: the page cache and unrecorded table changes are gone.
    fn crash(&mut self) {
        self.written = self.durable;
        self.table.clone_from(&self.durable_table);
    }

    fn resume(&self, separate_apply: bool) -> MirrorResume {
        MirrorResume {
            durable_pos: self.durable,
            segment: self.table.last().map(|(n, s, e)| (n.clone(), *s, e.is_some())),
            check_start: self.durable,
            check_crc: 0,
            applied_pos: if separate_apply { self.applied } else { self.durable },
        }
    }
}

/// Reads the script; past the end everything is 0.
struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        b.iter_mut().for_each(|x| *x = self.u8());
        u64::from_le_bytes(b)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }
}

/// A position relative to `next`, from a selector byte: mostly `next` itself.
fn pick_pos(r: &mut Reader<'_>, next: Position) -> Position {
    match r.u8() {
        0..=239 => next,
        s @ 240..=245 => next.add(u64::from(s - 239)),
        s @ 246..=251 => Position(next.get().saturating_sub(u64::from(s - 245))),
        252 => Position::ZERO,
        253 => Position(u64::MAX - u64::from(r.u8())),
        _ => Position(r.u64()),
    }
}

/// The session under test and what the harness knows about it.
struct Run {
    cfg: ReceiverConfig,
    epoch: u64,
    session: ReceiverSession,
    store: Store,
    queue: VecDeque<StoreOp>,
    /// The store refused an op: the session is over until [`RECONNECT`].
    failed: bool,
    /// The session accepted a report beyond the store's real positions.
    lied: bool,
    /// The last ack (written, flushed, applied) of this session, or the resume point.
    acked: (Position, Position, Position),
    /// The session began on an empty mirror and has accepted no segment start
    /// yet: the first one may start anywhere and moves the baseline there.
    any_start: bool,
    ts: u64,
    now: Instant,
}

impl Run {
    fn new(cfg: ReceiverConfig) -> Self {
        let store = Store::default();
        let resume = store.resume(cfg.separate_apply);
        let now = Instant::now();
        Run {
            session: ReceiverSession::new(cfg.clone(), 1, &resume),
            cfg,
            epoch: 1,
            store,
            queue: VecDeque::new(),
            failed: false,
            lied: false,
            acked: (resume.durable_pos, resume.durable_pos, resume.applied_pos),
            any_start: true,
            ts: 0,
            now,
        }
    }

    /// Encodes `f`, decodes it with the real decoder, and hands it over.
    fn send(&mut self, f: Frame) {
        let wire = f.to_bytes();
        let mut buf = BytesMut::from(&wire[..]);
        let back = frame::decode(&mut buf, frame::DEFAULT_MAX_PAYLOAD).expect("an encoded frame decodes");
        assert_eq!(back.as_ref(), Some(&f), "frame changed in an encode/decode round trip");
        assert!(buf.is_empty());
        self.frame(f);
    }

    fn frame(&mut self, f: Frame) {
        let ts = f.timestamp_us();
        let before = (self.session.next_pos(), self.session.positions());
        let res = self.session.handle_frame(f.clone(), self.now);
        trace!("  frame {f:?} -> {res:?}");
        match res {
            Ok(op) => {
                if let (Frame::Data { pos, payload, .. }, Some(StoreOp::Write { .. })) = (&f, &op) {
                    // Positions are u64: bytes past the last one have no position
                    // (the store would write them over earlier ones).
                    assert!(
                        pos.get().checked_add(payload.len() as u64).is_some(),
                        "session accepted {} bytes at {pos}, past the last position",
                        payload.len()
                    );
                }
                if let Some(StoreOp::StartSegment { start, .. }) = &op
                    && std::mem::take(&mut self.any_start)
                {
                    // The first segment of an empty mirror moves the baseline to its start.
                    self.acked = (*start, *start, *start);
                }
                if let Some(op) = op {
                    self.queue.push_back(op);
                }
            }
            Err(e) => {
                let after = (self.session.next_pos(), self.session.positions());
                assert_eq!(before, after, "the refused frame {f:?} moved positions: {e}");
            }
        }
        assert_eq!(self.session.last_frame_timestamp_us(), ts);
    }

    fn step(&mut self, n: usize) {
        for _ in 0..n {
            let Some(op) = self.queue.pop_front() else { return };
            trace!("  store {op:?}");
            if self.store.apply(op).is_err() {
                trace!("  store refused it");
                // The agent's store thread sends Failed; the session ends.
                self.failed = true;
                self.queue.clear();
                return;
            }
        }
    }

    fn deliver(&mut self, n: usize) {
        for _ in 0..n {
            let Some(ev) = self.store.events.pop_front() else { return };
            let r = match ev {
                Event::Written(p) => self.session.handle_written(p, self.now),
                Event::Flushed(p) => self.session.handle_flushed(p, self.now),
            };
            r.unwrap_or_else(|e| panic!("the store's true report {ev:?} was refused: {e}"));
        }
    }

    fn applied(&mut self, back: u64) {
        if !self.cfg.separate_apply {
            return;
        }
        let pos = Position(self.store.durable.get().saturating_sub(back)).max(self.store.applied);
        self.store.applied = pos;
        // As the agent does: never more than the session's flushed position.
        let pos = pos.min(self.session.positions().1);
        self.session.handle_applied(pos, self.now).unwrap_or_else(|e| panic!("true applied {pos} refused: {e}"));
    }

    fn report(&mut self, kind: u8, pos: Position) {
        let (next, (written, flushed)) = (self.session.next_pos(), self.session.positions());
        let (res, limit, truth) = match kind % 3 {
            0 => (self.session.handle_written(pos, self.now), next, self.store.written),
            1 => (self.session.handle_flushed(pos, self.now), written, self.store.durable),
            _ => (self.session.handle_applied(pos, self.now), flushed, self.store.durable),
        };
        match res {
            Ok(()) => assert!(pos <= limit, "report {kind} of {pos} beyond {limit} accepted"),
            Err(StreamError::BadReport { pos: p, limit: l, .. }) => {
                assert!(pos > limit && p == pos && l == limit, "report {kind} of {pos} (limit {limit}) refused");
            }
            Err(e) => panic!("report refused with {e}"),
        }
        if res.is_ok() && pos > truth {
            self.lied = true;
        }
    }

    fn poll(&mut self) {
        while let Some(m) = self.session.poll_control() {
            trace!("  sent {m:?}");
            let Msg::Ack(a) = m else { panic!("receiver queued {m:?}") };
            assert_eq!(a.epoch, self.epoch, "ack of another epoch");
            let (w, f, ap) = (Position(a.written_pos), Position(a.flushed_pos), Position(a.applied_pos));
            assert!(ap <= f && f <= w, "ack out of order: {a:?}");
            if !self.cfg.separate_apply {
                assert_eq!(ap, f, "applied is flushed without an apply step: {a:?}");
            }
            assert!(w <= self.session.next_pos(), "ack written beyond the stream: {a:?}");
            let (pw, pf, pa) = self.acked;
            assert!(w >= pw && f >= pf && ap >= pa, "ack moved backwards from {:?}: {a:?}", self.acked);
            assert!((w, f, ap) != self.acked, "ack repeats the previous one: {a:?}");
            if !self.lied {
                assert!(w <= self.store.written, "ack claims written {w}, the store has {}", self.store.written);
                assert!(f <= self.store.durable, "ack claims flushed {f}, the store has {}", self.store.durable);
            }
            self.acked = (w, f, ap);
        }
    }

    fn reconnect(&mut self, crash: bool) {
        if crash {
            self.queue.clear();
            self.store.crash();
        } else {
            // The op channel closes: the store thread applies what it got, then flushes.
            let n = self.queue.len();
            self.step(n);
            self.queue.clear();
            self.store.sync();
        }
        self.store.events.clear();
        self.store.applied = self.store.applied.min(self.store.durable);
        self.epoch += 1;
        let resume = self.store.resume(self.cfg.separate_apply);
        self.session = ReceiverSession::new(self.cfg.clone(), self.epoch, &resume);
        assert_eq!(self.session.epoch(), self.epoch);
        assert_eq!(self.session.next_pos(), resume.durable_pos);
        self.failed = false;
        self.lied = false;
        self.acked = (resume.durable_pos, resume.durable_pos, resume.applied_pos);
        self.any_start = resume.segment.is_none();
    }

    /// Everything applied, flushed and reported: the session must know it and say so.
    fn quiesce(&mut self) {
        if self.failed || self.lied {
            return;
        }
        self.poll();
        let n = self.queue.len();
        self.step(n);
        if self.failed {
            return;
        }
        self.store.flush();
        let n = self.store.events.len();
        self.deliver(n);
        self.applied(0);
        self.poll();
        let (w, f) = self.session.positions();
        assert_eq!(self.session.next_pos(), self.store.written, "store and session disagree on the stream end");
        assert_eq!((w, f), (self.store.written, self.store.durable), "session positions behind the store's reports");
        let want = (self.store.written, self.store.durable, self.store.durable);
        assert_eq!(self.acked, want, "the last ack is behind what the store reported");
    }

    fn next_ts(&mut self) -> u64 {
        self.ts += 1;
        self.ts
    }
}

/// Runs one script.
pub fn run(data: &[u8]) {
    let mut r = Reader { data };
    let flags = r.u8();
    let ack = r.u8();
    let small = r.u8();
    let cfg = ReceiverConfig {
        max_frame: if flags & 2 != 0 { u32::from(small) } else { frame::DEFAULT_MAX_PAYLOAD },
        ack_bytes: if ack == 255 { 1 << 20 } else { u64::from(ack) },
        separate_apply: flags & 1 != 0,
    };
    let mut run = Run::new(cfg);
    while !r.data.is_empty() {
        let op = r.u8() % OPS;
        if run.failed && op != RECONNECT {
            trace!("op {op}: skipped, the store failed");
            continue;
        }
        match op {
            DATA => {
                let pos = pick_pos(&mut r, run.session.next_pos());
                let len = match r.u8() {
                    255 => usize::from(r.u16() % 16384),
                    l => usize::from(l),
                };
                let payload = Bytes::from(vec![pos.get() as u8; len]);
                let timestamp_us = run.next_ts();
                run.send(Frame::Data { pos, timestamp_us, payload: payload.into() });
            }
            START => {
                let pos = pick_pos(&mut r, run.session.next_pos());
                let name = name(r.u8());
                let timestamp_us = run.next_ts();
                run.send(Frame::SegmentStart { pos, timestamp_us, name });
            }
            END => {
                let pos = pick_pos(&mut r, run.session.next_pos());
                let timestamp_us = run.next_ts();
                run.send(Frame::SegmentEnd { pos, timestamp_us });
            }
            FILE => {
                let name = name(r.u8());
                let len = usize::from(r.u8());
                let contents = Bytes::from(vec![len as u8; len]);
                let (pos, timestamp_us) = (run.session.next_pos(), run.next_ts());
                run.send(Frame::File { pos, timestamp_us, name, contents });
            }
            RAW => {
                let len = usize::from(r.u16());
                let mut wire = r.bytes(len).to_vec();
                fix_first_crc(&mut wire);
                let mut buf = BytesMut::from(&wire[..]);
                if let Ok(Some(f)) = frame::decode(&mut buf, run.cfg.max_frame) {
                    run.frame(f);
                }
            }
            STEP => {
                let n = usize::from(r.u8()) + 1;
                run.step(n);
            }
            FLUSH => run.store.flush(),
            DELIVER => {
                let n = usize::from(r.u8()) + 1;
                run.deliver(n);
            }
            POLL => run.poll(),
            RECONNECT => {
                let crash = r.u8() & 1 != 0;
                run.reconnect(crash);
            }
            REPORT => {
                let kind = r.u8();
                let pos = pick_pos(&mut r, run.session.next_pos());
                run.report(kind, pos);
            }
            APPLIED => {
                let back = u64::from(r.u8());
                run.applied(back);
            }
            _ => {
                let w = run.store.written;
                run.store.events.push_back(Event::Written(w));
            }
        }
        trace!(
            "op {op}: next {} positions {:?} acked {:?} store w {} d {} queue {} events {} failed {} lied {}",
            run.session.next_pos(),
            run.session.positions(),
            run.acked,
            run.store.written,
            run.store.durable,
            run.queue.len(),
            run.store.events.len(),
            run.failed,
            run.lied
        );
        if !run.failed {
            let (w, f) = run.session.positions();
            assert!(f <= w && w <= run.session.next_pos(), "positions out of order: {w} {f}");
        }
    }
    run.quiesce();
}

/// Makes the CRC of the header at the front of `wire` match its header and
/// as much of the payload as is present.
pub fn fix_first_crc(wire: &mut [u8]) {
    if wire.len() < HEADER_LEN {
        return;
    }
    let len = u32::from_le_bytes([wire[16], wire[17], wire[18], wire[19]]) as usize;
    let end = wire.len().min(HEADER_LEN.saturating_add(len));
    let mut crc = crc32fast::Hasher::new();
    crc.update(&wire[..28]);
    crc.update(&wire[HEADER_LEN..end]);
    wire[28..32].copy_from_slice(&crc.finalize().to_le_bytes());
}

/// Writes scripts for [`run`] (the seed generator).
#[derive(Debug, Clone)]
pub struct Script(pub Vec<u8>);

impl Script {
    /// A script with the header: `flags`, `ack`, `small` (see the module docs).
    pub fn new(flags: u8, ack: u8, small: u8) -> Self {
        Script(vec![flags, ack, small])
    }

    fn op(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// A data frame of `len` (< 255) bytes at the next position.
    pub fn data(self, len: u8) -> Self {
        self.op(&[DATA, 0, len])
    }
    /// A data frame at a position selector `sel` (see `pick_pos`).
    pub fn data_at(self, sel: u8, len: u8) -> Self {
        self.op(&[DATA, sel, len])
    }
    /// A segment start at the next position.
    pub fn start(self, name: u8) -> Self {
        self.op(&[START, 0, name])
    }
    /// A segment start at an absolute position.
    pub fn start_abs(self, pos: u64, name: u8) -> Self {
        self.op(&[START, 255]).op(&pos.to_le_bytes()).op(&[name])
    }
    /// A segment end at the next position.
    pub fn end(self) -> Self {
        self.op(&[END, 0])
    }
    /// A segment end at a position selector.
    pub fn end_at(self, sel: u8) -> Self {
        self.op(&[END, sel])
    }
    /// A file frame.
    pub fn file(self, name: u8, len: u8) -> Self {
        self.op(&[FILE, name, len])
    }
    /// Raw bytes for the decoder.
    pub fn raw(self, bytes: &[u8]) -> Self {
        let len = u16::try_from(bytes.len()).expect("short");
        self.op(&[RAW]).op(&len.to_le_bytes()).op(bytes)
    }
    /// The store applies up to `n` ops.
    pub fn step(self, n: u8) -> Self {
        self.op(&[STEP, n.saturating_sub(1)])
    }
    /// The store flushes.
    pub fn flush(self) -> Self {
        self.op(&[FLUSH])
    }
    /// The session gets up to `n` events.
    pub fn deliver(self, n: u8) -> Self {
        self.op(&[DELIVER, n.saturating_sub(1)])
    }
    /// The shell takes the acks.
    pub fn poll(self) -> Self {
        self.op(&[POLL])
    }
    /// The session ends and the next begins.
    pub fn reconnect(self, crash: bool) -> Self {
        self.op(&[RECONNECT, u8::from(crash)])
    }
    /// A report of `kind` at a position selector.
    pub fn report(self, kind: u8, sel: u8) -> Self {
        self.op(&[REPORT, kind, sel])
    }
    /// The apply step reports durable minus `back`.
    pub fn applied(self, back: u8) -> Self {
        self.op(&[APPLIED, back])
    }
    /// The store reports its written position.
    pub fn written(self) -> Self {
        self.op(&[WRITTEN])
    }
}

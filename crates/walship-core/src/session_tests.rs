//! Sender and receiver cores joined without I/O: a fake source (segments in
//! memory) on one side, a fake store (a byte map with separate written and
//! flushed marks) on the other.
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::frame::{self, Frame};
use crate::proto::{self, control::Msg};
use crate::receiver::{self, MirrorResume, ReceiverConfig, ReceiverSession, StoreOp};
use crate::sender::*;
use crate::{Position, SegmentName};

struct Source {
    segs: Vec<(SegmentName, Vec<u8>, bool)>,
}

impl Source {
    fn new(segs: &[(&str, usize)]) -> Self {
        let mut n = 0u8;
        let segs = segs
            .iter()
            .map(|(name, len)| {
                let bytes = (0..*len)
                    .map(|_| {
                        n = n.wrapping_mul(31).wrapping_add(7);
                        n
                    })
                    .collect();
                (SegmentName::new(name).expect("name"), bytes, true)
            })
            .collect::<Vec<_>>();
        let mut s = Source { segs };
        if let Some(last) = s.segs.last_mut() {
            last.2 = false;
        }
        s
    }

    fn starts(&self) -> Vec<Position> {
        let mut p = 0;
        self.segs
            .iter()
            .map(|s| {
                let st = Position(p);
                p += s.1.len() as u64;
                st
            })
            .collect()
    }

    fn view_for<'a>(&'a self, c: &Cursor) -> Option<SegmentView<'a>> {
        let starts = self.starts();
        let idx = match c {
            Cursor::In(n) => self.segs.iter().position(|s| &s.0 == n)?,
            Cursor::After { after: None, .. } => 0,
            Cursor::After { after: Some(a), .. } => self.segs.iter().position(|s| &s.0 > a)?,
        };
        let s = self.segs.get(idx)?;
        Some(SegmentView { name: &s.0, start: starts[idx], end: starts[idx].add(s.1.len() as u64), sealed: s.2 })
    }

    fn bytes(&self, pos: Position, len: usize) -> Bytes {
        // Walk the segments instead of concatenating them on every call.
        let mut out = Vec::with_capacity(len);
        let mut off = pos.get() as usize;
        for (_, b, _) in &self.segs {
            if out.len() == len {
                break;
            }
            if off >= b.len() {
                off -= b.len();
                continue;
            }
            let take = (len - out.len()).min(b.len() - off);
            out.extend_from_slice(&b[off..off + take]);
            off = 0;
        }
        assert_eq!(out.len(), len, "read past the end of the test source");
        Bytes::from(out)
    }

    fn all(&self) -> Vec<u8> {
        self.segs.iter().flat_map(|s| s.1.clone()).collect()
    }
}

#[derive(Default)]
struct Store {
    segments: Vec<(SegmentName, Position, Option<Position>)>,
    data: Vec<u8>,
    written: Position,
    flushed: Position,
    files: Vec<(SegmentName, bytes::Bytes)>,
}

impl Store {
    fn apply(&mut self, op: StoreOp) {
        match op {
            StoreOp::StartSegment { name, start } => self.segments.push((name, start, None)),
            StoreOp::Write { pos, data } => {
                assert_eq!(pos.get() as usize, self.data.len());
                self.data.extend_from_slice(&data.to_bytes());
                self.written = pos.add(data.len() as u64);
            }
            StoreOp::CompleteSegment { end } => {
                self.segments.last_mut().expect("open segment").2 = Some(end);
                self.flushed = end;
            }
            StoreOp::WriteFile { name, contents } => self.files.push((name, contents)),
        }
    }

    fn resume(&self) -> MirrorResume {
        let segment = self.segments.last().map(|(n, s, e)| (n.clone(), *s, e.is_some()));
        let check_start = self.segments.last().map(|s| s.1).unwrap_or_default();
        let crc = crc32fast::hash(&self.data[check_start.get() as usize..self.flushed.get() as usize]);
        MirrorResume { durable_pos: self.flushed, segment, check_start, check_crc: crc, applied_pos: self.flushed }
    }

    /// A crash: everything not flushed is gone.
    fn crash(&mut self) {
        self.data.truncate(self.flushed.get() as usize);
        self.written = self.flushed;
        if let Some(last) = self.segments.last()
            && last.1 > self.flushed
        {
            self.segments.pop();
        }
    }
}

/// The resume point of a mirror that holds nothing yet.
fn empty_mirror() -> MirrorResume {
    MirrorResume {
        durable_pos: Position(0),
        segment: None,
        check_start: Position(0),
        check_crc: 0,
        applied_pos: Position(0),
    }
}

fn cfg(max_frame: u32, max_inflight: u64) -> SenderConfig {
    SenderConfig {
        source_id: "test-source".into(),
        format: proto::Format::Raw,
        segment_size: 0,
        timeline: 0,
        sender_name: "s".into(),
        max_frame,
        max_inflight,
    }
}

/// Runs the handshake; returns the two sessions.
fn connect(
    src: &Source,
    store: &Store,
    cfg: SenderConfig,
    epoch: u64,
    now: Instant,
) -> (SenderSession, ReceiverSession) {
    let mut s = SenderSession::new(cfg, now);
    let hello = s.poll_control().expect("hello");
    let peer = receiver::check_hello(hello, frame::DEFAULT_MAX_PAYLOAD).expect("hello accepted");
    let resume = store.resume();
    let w = receiver::welcome(epoch, &resume, "r");
    let req = s.handle_control(w, now).expect("welcome ok").expect("resume request");
    let check = if req.durable_pos > req.check_start {
        ResumeCheck::Crc(crc32fast::hash(&src.bytes(req.check_start, req.durable_pos.since(req.check_start) as usize)))
    } else {
        ResumeCheck::Crc(crc32fast::hash(&[]))
    };
    s.handle_resume(check, now).expect("resume ok");
    let r = ReceiverSession::new(
        ReceiverConfig { max_frame: peer.max_frame, ack_bytes: 1 << 20, separate_apply: false },
        epoch,
        &resume,
    );
    (s, r)
}

/// Moves every transmittable frame through the codec into the receiver.
/// Returns the number of frames.
fn pump(src: &Source, s: &mut SenderSession, r: &mut ReceiverSession, store: &mut Store, now: Instant) -> usize {
    let mut n = 0;
    while let Some(t) = s.poll_transmit(src.view_for(s.cursor()), now).expect("transmit") {
        let wire = match t {
            Transmit::SegmentStart { name, pos, timestamp_us } => frame::encode_segment_start(pos, timestamp_us, &name),
            Transmit::SegmentEnd { pos, timestamp_us } => frame::encode_segment_end(pos, timestamp_us),
            Transmit::Data { pos, len, timestamp_us } => {
                let payload = src.bytes(pos, len as usize);
                let mut b = frame::encode_header(pos, timestamp_us, &payload).to_vec();
                b.extend_from_slice(&payload);
                Bytes::from(b)
            }
        };
        let mut buf = bytes::BytesMut::from(&wire[..]);
        let f = frame::decode(&mut buf, frame::DEFAULT_MAX_PAYLOAD).expect("valid").expect("whole");
        if let Some(op) = r.handle_frame(f, now).expect("frame fits") {
            let completes = matches!(op, StoreOp::CompleteSegment { .. });
            store.apply(op);
            r.handle_written(store.written.max(store.flushed), now).expect("written");
            if completes {
                r.handle_flushed(store.flushed, now).expect("flushed");
            }
        }
        n += 1;
    }
    n
}

fn deliver_acks(s: &mut SenderSession, r: &mut ReceiverSession, now: Instant) {
    while let Some(m) = r.poll_control() {
        s.handle_control(m, now).expect("ack accepted");
    }
}

#[test]
fn ships_several_segments_byte_for_byte() {
    let now = Instant::now();
    let src = Source::new(&[("a", 1000), ("b", 0), ("c", 4097), ("d", 10)]);
    let mut store = Store::default();
    let (mut s, mut r) = connect(&src, &store, cfg(512, 1 << 30), 1, now);
    pump(&src, &mut s, &mut r, &mut store, now);
    assert_eq!(store.data, src.all());
    let names: Vec<_> = store.segments.iter().map(|s| s.0.as_str().to_string()).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    // The last segment is not sealed, so it stays open.
    assert_eq!(store.segments[3].2, None);
    assert_eq!(store.segments[2].2, Some(Position(5097)));
}

#[test]
fn no_flush_ack_before_the_shell_reports_the_flush() {
    let now = Instant::now();
    let src = Source::new(&[("a", 5 << 20)]);
    let mut store = Store::default();
    let (mut s, mut r) = connect(&src, &store, cfg(1 << 16, 1 << 30), 1, now);
    pump(&src, &mut s, &mut r, &mut store, now);
    let mut acks = Vec::new();
    while let Some(Msg::Ack(a)) = r.poll_control() {
        acks.push(a);
    }
    assert!(!acks.is_empty(), "written acks flow without a flush");
    assert!(acks.iter().all(|a| a.flushed_pos == 0 && a.applied_pos == 0), "flush claimed before fdatasync: {acks:?}");
    // The shell reports a flush of part of the data: exactly that is acked.
    r.handle_flushed(Position(3 << 20), now).expect("flushed");
    let Some(Msg::Ack(a)) = r.poll_control() else { panic!("ack after flush") };
    assert_eq!((a.written_pos, a.flushed_pos), (5 << 20, 3 << 20));
    // A report beyond what was written is refused, not acked.
    assert!(r.handle_flushed(Position(6 << 20), now).is_err());
    assert!(r.poll_control().is_none());
}

#[test]
fn window_limits_unacknowledged_bytes() {
    let now = Instant::now();
    let src = Source::new(&[("a", 100_000)]);
    let mut store = Store::default();
    let (mut s, mut r) = connect(&src, &store, cfg(4096, 10_000), 1, now);
    pump(&src, &mut s, &mut r, &mut store, now);
    assert_eq!(s.positions().sent, Position(10_000), "stops at the window");
    assert!(!s.window_open());
    // The receiver wrote and flushed it; the ack reopens the window.
    r.handle_flushed(Position(10_000), now).expect("flushed");
    deliver_acks(&mut s, &mut r, now);
    assert_eq!(s.positions().flushed, Position(10_000));
    pump(&src, &mut s, &mut r, &mut store, now);
    assert_eq!(s.positions().sent, Position(20_000));
}

#[test]
fn resumes_mid_segment_after_a_receiver_crash_without_resending_durable_bytes() {
    let now = Instant::now();
    let src = Source::new(&[("a", 3000), ("b", 5000)]);
    let mut store = Store::default();
    let (mut s, mut r) = connect(&src, &store, cfg(1000, 1 << 30), 1, now);
    pump(&src, &mut s, &mut r, &mut store, now);
    r.handle_flushed(Position(6000), now).expect("flush");
    store.flushed = Position(6000);
    deliver_acks(&mut s, &mut r, now);
    store.crash();
    assert_eq!(store.data.len(), 6000);
    // Reconnect: the sender must start exactly at 6000, inside segment b.
    let (mut s, mut r) = connect(&src, &store, cfg(1000, 1 << 30), 2, now + Duration::from_secs(1));
    assert_eq!(s.cursor(), &Cursor::In(SegmentName::new("b").expect("b")));
    let first = s.poll_transmit(src.view_for(s.cursor()), now).expect("ok").expect("data");
    assert!(matches!(first, Transmit::Data { pos: Position(6000), .. }), "{first:?}");
    // Put it back and pump the rest.
    let mut s2 = connect(&src, &store, cfg(1000, 1 << 30), 3, now).0;
    pump(&src, &mut s2, &mut r, &mut store, now);
    assert_eq!(store.data, src.all());
    drop(s);
}

#[test]
fn divergence_is_a_named_error() {
    let now = Instant::now();
    let src = Source::new(&[("a", 3000)]);
    let mut store = Store::default();
    let (mut s, mut r) = connect(&src, &store, cfg(1000, 1 << 30), 1, now);
    pump(&src, &mut s, &mut r, &mut store, now);
    store.flushed = Position(3000);
    store.data[2500] ^= 0xff;
    let mut s = SenderSession::new(cfg(1000, 1 << 30), now);
    s.poll_control();
    let req = s.handle_control(receiver::welcome(2, &store.resume(), "r"), now).expect("ok").expect("req");
    let crc = crc32fast::hash(&src.bytes(req.check_start, req.durable_pos.since(req.check_start) as usize));
    let err = s.handle_resume(ResumeCheck::Crc(crc), now).expect_err("diverged");
    assert!(err.to_string().starts_with("mirror has diverged from source at position"), "{err}");
}

#[test]
fn acks_of_another_epoch_are_ignored_and_lies_are_refused() {
    let now = Instant::now();
    let src = Source::new(&[("a", 3000)]);
    let mut store = Store::default();
    let (mut s, mut r) = connect(&src, &store, cfg(1000, 1 << 30), 7, now);
    pump(&src, &mut s, &mut r, &mut store, now);
    let stale = Msg::Ack(proto::Ack { epoch: 6, written_pos: 3000, flushed_pos: 3000, applied_pos: 3000 });
    s.handle_control(stale, now).expect("stale ack is not an error");
    assert_eq!(s.positions().flushed, Position(0));
    assert_eq!(s.stale_acks(), 1);
    let lie = Msg::Ack(proto::Ack { epoch: 7, written_pos: 9000, flushed_pos: 0, applied_pos: 0 });
    assert!(matches!(s.handle_control(lie, now), Err(SessionError::Protocol(_))));
}

#[test]
fn receiver_refuses_frames_that_do_not_fit_the_stream() {
    let now = Instant::now();
    let empty = empty_mirror();
    let mut r = ReceiverSession::new(ReceiverConfig { max_frame: 100, ack_bytes: 1, separate_apply: false }, 1, &empty);
    let data =
        |p: u64, n: usize| Frame::Data { pos: Position(p), timestamp_us: 0, payload: Bytes::from(vec![1; n]).into() };
    assert!(matches!(r.handle_frame(data(0, 10), now), Err(receiver::StreamError::NoSegment(_))));
    let start = |p: u64, n: &str| Frame::SegmentStart {
        pos: Position(p),
        timestamp_us: 0,
        name: SegmentName::new(n).expect("n"),
    };
    r.handle_frame(start(0, "m"), now).expect("first segment");
    r.handle_frame(data(0, 10), now).expect("contiguous");
    assert!(matches!(r.handle_frame(data(20, 10), now), Err(receiver::StreamError::Gap { .. })));
    assert!(matches!(r.handle_frame(data(10, 101), now), Err(receiver::StreamError::Oversized { .. })));
    assert!(matches!(r.handle_frame(start(10, "n"), now), Err(receiver::StreamError::AlreadyOpen { .. })));
    r.handle_frame(Frame::SegmentEnd { pos: Position(10), timestamp_us: 0 }, now).expect("end");
    assert!(matches!(r.handle_frame(start(10, "a"), now), Err(receiver::StreamError::OutOfOrder { .. })));
    assert!(matches!(r.handle_frame(start(11, "z"), now), Err(receiver::StreamError::Gap { .. })));

    // A stream that reaches the largest position cannot wrap past it.
    let mut r = ReceiverSession::new(ReceiverConfig { max_frame: 100, ack_bytes: 1, separate_apply: false }, 1, &empty);
    r.handle_frame(start(u64::MAX - 4, "top"), now).expect("segment near the top");
    r.handle_frame(data(u64::MAX - 4, 3), now).expect("fits");
    assert!(matches!(r.handle_frame(data(u64::MAX - 1, 2), now), Err(receiver::StreamError::PastEnd { .. })));
}

#[test]
fn hello_is_validated() {
    let mut s = SenderSession::new(cfg(1 << 20, 1 << 30), Instant::now());
    let hello = s.poll_control().expect("hello");
    assert!(matches!(receiver::check_hello(hello.clone(), 1 << 10), Err(receiver::HelloError::FrameTooLarge { .. })));
    let Msg::Hello(mut h) = hello else { panic!() };
    h.protocol_version = 99;
    assert_eq!(receiver::check_hello(Msg::Hello(h.clone()), 1 << 20), Err(receiver::HelloError::Version(99)));
    h.protocol_version = crate::PROTOCOL_VERSION;
    h.source_id = String::new();
    assert!(matches!(receiver::check_hello(Msg::Hello(h), 1 << 20), Err(receiver::HelloError::SourceId(_))));
}

#[test]
fn a_segment_start_never_claims_the_previous_segment_flushed() {
    // Regression: the receiver used to raise its flushed position to a new
    // segment's start as soon as the frame arrived, before the store had
    // synced the previous segment's end.
    let now = Instant::now();
    let src = Source::new(&[("a", 3000), ("b", 10)]);
    let empty = empty_mirror();
    let mut r =
        ReceiverSession::new(ReceiverConfig { max_frame: 4096, ack_bytes: 1, separate_apply: false }, 1, &empty);
    let start = |p: u64, n: &str| Frame::SegmentStart {
        pos: Position(p),
        timestamp_us: 0,
        name: SegmentName::new(n).expect("n"),
    };
    r.handle_frame(start(0, "a"), now).expect("start a");
    let data = Frame::Data { pos: Position(0), timestamp_us: 0, payload: src.bytes(Position(0), 3000).into() };
    r.handle_frame(data, now).expect("data");
    r.handle_written(Position(3000), now).expect("written");
    r.handle_frame(Frame::SegmentEnd { pos: Position(3000), timestamp_us: 0 }, now).expect("end a");
    r.handle_frame(start(3000, "b"), now).expect("start b");
    let data = Frame::Data { pos: Position(3000), timestamp_us: 0, payload: src.bytes(Position(3000), 10).into() };
    r.handle_frame(data, now).expect("data b");
    r.handle_written(Position(3010), now).expect("written b");
    let mut acks = Vec::new();
    while let Some(Msg::Ack(a)) = r.poll_control() {
        acks.push(a);
    }
    assert!(
        !acks.is_empty() && acks.iter().all(|a| a.flushed_pos == 0),
        "no flush claimed before the store reported it: {acks:?}"
    );
    r.handle_flushed(Position(3000), now).expect("store synced a");
    let Some(Msg::Ack(a)) = r.poll_control() else { panic!("ack after the flush") };
    assert_eq!((a.written_pos, a.flushed_pos), (3010, 3000));
}

#[test]
fn file_frames_become_store_writes_anywhere_and_move_no_position() {
    let now = Instant::now();
    let empty = empty_mirror();
    let mut r = ReceiverSession::new(ReceiverConfig { max_frame: 100, ack_bytes: 1, separate_apply: false }, 1, &empty);
    let file = |p: u64| Frame::File {
        pos: Position(p),
        timestamp_us: 0,
        name: SegmentName::new("00000002.history").expect("n"),
        contents: Bytes::from_static(b"1\t0/815D20\tx\n"),
    };
    let op = r.handle_frame(file(0), now).expect("before any segment");
    assert!(matches!(op, Some(StoreOp::WriteFile { ref name, .. }) if name.as_str() == "00000002.history"));
    r.handle_frame(
        Frame::SegmentStart { pos: Position(0), timestamp_us: 0, name: SegmentName::new("m").expect("n") },
        now,
    )
    .expect("start");
    r.handle_frame(Frame::Data { pos: Position(0), timestamp_us: 0, payload: Bytes::from(vec![1; 10]).into() }, now)
        .expect("data");
    assert!(matches!(r.handle_frame(file(10), now), Ok(Some(StoreOp::WriteFile { .. }))), "inside a segment too");
    // The stream goes on exactly where it was: the file took no position.
    let next = Frame::Data { pos: Position(10), timestamp_us: 0, payload: Bytes::from(vec![2; 5]).into() };
    assert!(matches!(r.handle_frame(next, now), Ok(Some(StoreOp::Write { pos: Position(10), .. }))));
}

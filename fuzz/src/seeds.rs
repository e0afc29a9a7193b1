//! The committed seed corpora, built with the product's own encoders so that
//! they stay valid when the formats change (`cargo run --example gen_seeds`).
use bytes::Bytes;
use walship_core::frame::{self, Frame};
use walship_core::proto::{self, Control, control::Msg};
use walship_core::{PROTOCOL_VERSION, Position, SegmentName};

use crate::session::{NAME_HISTORY, NAME_RESERVED, Script};

/// One seed: target, file name, bytes.
pub type Seed = (&'static str, &'static str, Vec<u8>);

/// Every generated seed.
pub fn all() -> Vec<Seed> {
    let mut v = control();
    v.extend(frames());
    v.extend(sessions());
    v
}

/// One message of each kind, with the values a real session sends.
pub fn control() -> Vec<Seed> {
    let hello = Msg::Hello(proto::Hello {
        protocol_version: PROTOCOL_VERSION,
        source_id: "7301234567890123456".into(),
        format: proto::Format::Postgres as i32,
        segment_size: 16 << 20,
        timeline: 1,
        sender_name: "db-1".into(),
        max_frame_len: 1 << 20,
    });
    let welcome = Msg::Welcome(proto::Welcome {
        protocol_version: PROTOCOL_VERSION,
        epoch: 3,
        durable_pos: 0x16_B374_D848,
        resume_segment: "0000000100000016000000B3".into(),
        resume_segment_start: 0x16_B300_0000,
        resume_segment_complete: false,
        check_start: 0x16_B364_D848,
        check_crc: 0xdead_beef,
        receiver_name: "mirror-1".into(),
        applied_pos: 0x16_B370_0000,
    });
    let ack =
        Msg::Ack(proto::Ack { epoch: 3, written_pos: 1 << 40, flushed_pos: (1 << 40) - 8192, applied_pos: 1 << 39 });
    let status = Msg::Status(proto::Status { source_end_pos: u64::MAX, sender_time_us: 1_000_000 });
    let error = Msg::Error(proto::Error {
        code: proto::ErrorCode::Diverged as i32,
        message: "mirror and source differ before the resume point".into(),
    });
    let enc = |m: Msg| Control::of(m).to_vec();
    vec![
        ("control_decode", "hello", enc(hello)),
        ("control_decode", "welcome", enc(welcome)),
        ("control_decode", "ack", enc(ack)),
        ("control_decode", "status", enc(status)),
        ("control_decode", "error", enc(error)),
        ("control_decode", "empty-envelope", Control { msg: None }.to_vec()),
    ]
}

/// The golden vectors of `proto/FORMAT.md`, one frame of each kind.
pub fn golden() -> Vec<Bytes> {
    let seg = SegmentName::new("000000010000000000000001").expect("name");
    let hist = SegmentName::new("00000002.history").expect("name");
    vec![
        Frame::Data { pos: Position(4096), timestamp_us: 1_000_000, payload: Bytes::from_static(b"hello").into() }
            .to_bytes(),
        frame::encode_segment_start(Position(0), 1, &seg),
        frame::encode_segment_end(Position(16 << 20), 2),
        Frame::Data {
            pos: Position(0x0123_4567_89ab_cdef),
            timestamp_us: 0,
            payload: Bytes::from_static(&[0, 0xff]).into(),
        }
        .to_bytes(),
        Frame::Data { pos: Position(7), timestamp_us: 42, payload: Bytes::new().into() }.to_bytes(),
        frame::encode_file(
            Position(8547152),
            3,
            &hist,
            Bytes::from_static(b"1\t0/815D20\tno recovery target specified\n"),
        ),
    ]
}

/// `frame_decode` inputs: options, limit, chunk size, then the stream.
pub fn frames() -> Vec<Seed> {
    let g = golden();
    let all: Vec<u8> = g.iter().flat_map(|f| f.to_vec()).collect();
    let mut file_fixup = g[5].to_vec();
    file_fixup[28..32].fill(0);
    vec![
        // Every kind, whole frames, the product's default limit.
        ("frame_decode", "all-kinds", [&[2u8, 0, 0, 64][..], &all].concat()),
        // A file frame, fed byte by byte, under a 64-byte limit.
        ("frame_decode", "file-history", [&[0u8, 64, 0, 1][..], &g[5]].concat()),
        // The same with a zeroed CRC the harness fixes.
        ("frame_decode", "file-crc-fixup", [&[3u8, 0, 0, 16][..], &file_fixup].concat()),
        // Two data frames in one stream, the second one cut short.
        ("frame_decode", "data-truncated", [&[2u8, 0, 0, 255][..], &g[0], &g[4][..20]].concat()),
    ]
}

/// `receiver_session` scripts (see `src/session.rs`).
pub fn sessions() -> Vec<Seed> {
    let seg1 = SegmentName::new(crate::session::name(1).as_str()).expect("name");
    let raw_stream = [
        frame::encode_segment_start(Position(0), 1, &seg1),
        Frame::Data { pos: Position(0), timestamp_us: 2, payload: Bytes::from_static(b"hello").into() }.to_bytes(),
        frame::encode_segment_end(Position(5), 3),
    ];
    let mut raw = Script::new(0, 255, 0);
    for f in &raw_stream {
        raw = raw.raw(f);
    }
    raw = raw.raw(&golden()[5]).step(8).deliver(8).poll();

    vec![
        (
            "receiver_session",
            "two-segments",
            Script::new(0, 255, 0)
                .start(1)
                .data(100)
                .data(100)
                .step(3)
                .written()
                .deliver(2)
                .poll()
                .end()
                .start(2)
                .data(50)
                .step(10)
                .flush()
                .deliver(10)
                .poll()
                .0,
        ),
        (
            "receiver_session",
            "apply-step",
            Script::new(1, 0, 0)
                .start(1)
                .data(200)
                .step(2)
                .flush()
                .deliver(4)
                .poll()
                .applied(50)
                .poll()
                .applied(0)
                .poll()
                .end()
                .step(1)
                .deliver(4)
                .poll()
                .0,
        ),
        (
            "receiver_session",
            "crash-and-resume",
            Script::new(0, 64, 0)
                .start_abs(16 << 20, 1)
                .data(200)
                .step(2)
                .flush()
                .deliver(4)
                .poll()
                .data(100)
                .step(1)
                .reconnect(true)
                .data(100)
                .data(100)
                .end()
                .start(2)
                .data(10)
                .reconnect(false)
                .start(3)
                .data(10)
                .step(4)
                .deliver(4)
                .poll()
                .0,
        ),
        (
            "receiver_session",
            "refusals",
            Script::new(2, 0, 64)
                .data(10)
                .start(5)
                .start(6)
                .data(100)
                .data_at(240, 10)
                .data(10)
                .end_at(246)
                .end()
                .start(4)
                .start(5)
                .start(7)
                .report(0, 245)
                .report(1, 0)
                .report(2, 0)
                .step(20)
                .deliver(20)
                .poll()
                .0,
        ),
        (
            "receiver_session",
            "side-files",
            Script::new(0, 255, 0)
                .file(NAME_HISTORY, 60)
                .start(1)
                .data(30)
                .file(NAME_HISTORY, 60)
                .end()
                .step(10)
                .deliver(10)
                .poll()
                .file(NAME_RESERVED, 5)
                .step(1)
                .reconnect(false)
                .start(2)
                .data(1)
                .0,
        ),
        ("receiver_session", "raw-frames", raw.0),
        // Regression (fixed in 324f3e2): data past position u64::MAX was
        // accepted with saturated positions. The minimal input, then the edge:
        // 9 bytes ending exactly at u64::MAX, one more refused.
        ("receiver_session", "regression-past-max", Script::new(0, 0, 0).start_abs(u64::MAX, 1).data(2).0),
        (
            "receiver_session",
            "regression-past-max-edge",
            Script::new(0, 0, 0).start_abs(u64::MAX - 9, 1).data(9).data(1).step(3).deliver(3).poll().0,
        ),
    ]
}

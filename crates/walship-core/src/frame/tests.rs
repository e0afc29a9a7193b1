use super::*;
use proptest::prelude::*;

/// A golden vector from `proto/FORMAT.md`.
#[derive(Debug)]
struct Vector {
    name: String,
    frame: Frame,
    hex: String,
}

fn field<'a>(block: &'a [&'a str], key: &str) -> &'a str {
    block
        .iter()
        .find_map(|l| l.strip_prefix(key).filter(|r| r.is_empty() || r.starts_with(' ')))
        .unwrap_or_else(|| panic!("vector field {key} missing in {block:?}"))
        .trim()
}

fn vectors() -> Vec<Vector> {
    let doc = include_str!("../../../../proto/FORMAT.md");
    let lines: Vec<&str> = doc.lines().map(str::trim).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(name) = lines[i].strip_prefix("vector ") {
            let end = lines[i..].iter().position(|l| *l == "end").map(|e| i + e).expect("vector without end");
            let block = &lines[i + 1..end];
            let pos = Position(field(block, "position").parse().expect("position"));
            let timestamp_us = field(block, "timestamp_us").parse().expect("timestamp");
            let payload = hex::decode(field(block, "payload-hex").replace(' ', "")).expect("payload hex");
            let frame = match field(block, "kind") {
                "data" => Frame::Data { pos, timestamp_us, payload: Bytes::from(payload).into() },
                "segment-start" => Frame::SegmentStart {
                    pos,
                    timestamp_us,
                    name: SegmentName::from_bytes(&payload).expect("vector segment name"),
                },
                "segment-end" => Frame::SegmentEnd { pos, timestamp_us },
                "file" => {
                    let n = usize::from(u16::from_le_bytes([payload[0], payload[1]]));
                    Frame::File {
                        pos,
                        timestamp_us,
                        name: SegmentName::from_bytes(&payload[2..2 + n]).expect("vector file name"),
                        contents: Bytes::copy_from_slice(&payload[2 + n..]),
                    }
                }
                k => panic!("unknown vector kind {k}"),
            };
            out.push(Vector { name: name.to_string(), frame, hex: field(block, "frame-hex").replace(' ', "") });
            i = end;
        }
        i += 1;
    }
    out
}

#[test]
fn golden_vectors_from_format_md() {
    let vs = vectors();
    assert!(vs.len() >= 4, "FORMAT.md should hold at least 4 vectors, found {}", vs.len());
    for v in vs {
        let encoded = hex::encode(v.frame.to_bytes());
        assert_eq!(encoded, v.hex, "encoding of vector {} differs from FORMAT.md", v.name);
        let mut buf = BytesMut::from(&hex::decode(&v.hex).expect("hex")[..]);
        let decoded = decode(&mut buf, DEFAULT_MAX_PAYLOAD).expect("decodes").expect("whole frame");
        assert_eq!(decoded, v.frame, "decoding of vector {}", v.name);
        assert!(buf.is_empty());
    }
}

#[test]
fn header_matches_whole_frame_encoding() {
    let payload = b"some wal bytes";
    let f = Frame::Data { pos: Position(77), timestamp_us: 5, payload: Bytes::from_static(payload).into() };
    let whole = f.to_bytes();
    assert_eq!(&whole[..HEADER_LEN], &encode_header(Position(77), 5, payload)[..]);
}

#[test]
fn every_corruption_is_detected() {
    let f = Frame::Data { pos: Position(1 << 40), timestamp_us: 123, payload: Bytes::from(vec![7u8; 300]).into() };
    let good = f.to_bytes();
    for i in 0..good.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = BytesMut::from(&good[..]);
            bad[i] ^= bit;
            match decode(&mut bad, DEFAULT_MAX_PAYLOAD) {
                Err(_) => {}
                // A flipped length bit may make the frame look longer: incomplete, never accepted.
                Ok(None) if (16..20).contains(&i) => {}
                other => panic!("flip of bit {bit:#x} in byte {i} gave {other:?}"),
            }
        }
    }
}

#[test]
fn named_errors() {
    let f = Frame::Data { pos: Position(0), timestamp_us: 0, payload: Bytes::from_static(b"abc").into() };
    let mut b = BytesMut::from(&f.to_bytes()[..]);
    b[HEADER_LEN] ^= 1;
    assert!(matches!(decode(&mut b, 100), Err(FrameError::Crc { .. })));
    let mut b = BytesMut::from(&f.to_bytes()[..]);
    b[4] = 9;
    assert_eq!(decode(&mut b, 100), Err(FrameError::BadVersion(9)));
    let mut b = BytesMut::from(&f.to_bytes()[..]);
    assert_eq!(decode(&mut b, 2), Err(FrameError::TooLong { len: 3, max: 2 }));
    let mut b = BytesMut::from(&b"GET / HTTP/1.1"[..]);
    assert!(matches!(decode(&mut b, 100), Err(FrameError::BadMagic(_))));
    let mut b = BytesMut::from(&b"WS"[..]);
    assert_eq!(decode(&mut b, 100), Ok(None), "a magic prefix is merely incomplete");
    // A segment-start frame whose name would escape the mirror directory.
    let mut raw = BytesMut::new();
    raw.extend_from_slice(&encode_raw(KIND_SEGMENT_START, Position(0), 0, b"../x"));
    raw.extend_from_slice(b"../x");
    assert!(matches!(decode(&mut raw, 100), Err(FrameError::BadSegmentName { .. })));
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let name = "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,40}".prop_filter_map("valid name", |s| SegmentName::new(&s).ok());
    prop_oneof![
        (any::<u64>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..2048))
            .prop_map(|(p, t, v)| Frame::Data { pos: Position(p), timestamp_us: t, payload: Bytes::from(v).into() }),
        (any::<u64>(), any::<u64>(), name).prop_map(|(p, t, name)| Frame::SegmentStart {
            pos: Position(p),
            timestamp_us: t,
            name
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(p, t)| Frame::SegmentEnd { pos: Position(p), timestamp_us: t }),
    ]
}

proptest! {
    #[test]
    fn round_trip_in_any_split(frames in proptest::collection::vec(arb_frame(), 1..8), split in 1usize..64) {
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend_from_slice(&f.to_bytes());
        }
        // Feed the stream in chunks, as the network would.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(split) {
            buf.extend_from_slice(chunk);
            while let Some(f) = decode(&mut buf, DEFAULT_MAX_PAYLOAD).expect("valid stream") {
                got.push(f);
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096), max in 0u32..8192) {
        let mut buf = BytesMut::from(&bytes[..]);
        // Keep decoding until error or need-more; must terminate and never panic.
        while let Ok(Some(_)) = decode(&mut buf, max) {}
    }

    #[test]
    fn decoder_never_panics_after_valid_header(f in arb_frame(), tail in proptest::collection::vec(any::<u8>(), 0..64), cut in 0usize..4096) {
        let mut bytes = f.to_bytes().to_vec();
        bytes.extend_from_slice(&tail);
        bytes.truncate(cut.min(bytes.len()));
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode(&mut buf, DEFAULT_MAX_PAYLOAD) {}
    }
}

#[test]
#[ignore = "prints the golden vectors for FORMAT.md"]
fn print_vectors() {
    let frames = [
        Frame::Data { pos: Position(4096), timestamp_us: 1_000_000, payload: Bytes::from_static(b"hello").into() },
        Frame::SegmentStart {
            pos: Position(0),
            timestamp_us: 1,
            name: SegmentName::new("000000010000000000000001").expect("name"),
        },
        Frame::SegmentEnd { pos: Position(16 << 20), timestamp_us: 2 },
        Frame::Data {
            pos: Position(0x0123_4567_89AB_CDEF),
            timestamp_us: 0,
            payload: Bytes::from_static(&[0, 0xff]).into(),
        },
        Frame::Data { pos: Position(7), timestamp_us: 42, payload: Bytes::new().into() },
    ];
    for f in frames {
        println!("{f:?}\n{}", hex::encode(f.to_bytes()));
    }
}

#[test]
fn a_data_frame_taken_in_chunks_decodes_as_a_whole_one() {
    let payload = Bytes::from((0..5000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let wire = Frame::Data { pos: Position(9000), timestamp_us: 7, payload: payload.clone().into() }.to_bytes();
    let h: [u8; HEADER_LEN] = wire[..HEADER_LEN].try_into().expect("ok");
    let Started::Data(mut d) = start(&h, DEFAULT_MAX_PAYLOAD).expect("ok") else { panic!("not a data header") };
    assert_eq!(d.remaining(), 5000);
    for piece in [HEADER_LEN..HEADER_LEN + 1, HEADER_LEN + 1..HEADER_LEN + 3000, HEADER_LEN + 3000..wire.len()] {
        d.push(wire.slice(piece)).expect("ok");
    }
    assert_eq!(d.received(), 5000);
    let whole = decode(&mut BytesMut::from(&wire[..]), DEFAULT_MAX_PAYLOAD).expect("ok").expect("ok");
    let streamed = d.finish().expect("ok");
    assert_eq!(streamed, whole);
    let Frame::Data { payload: p, .. } = streamed else { panic!("not data") };
    assert_eq!(p.chunks().len(), 3);
}

#[test]
fn a_chunked_data_frame_is_checked_like_a_whole_one() {
    let wire =
        Frame::Data { pos: Position(0), timestamp_us: 0, payload: Bytes::from_static(b"abcdef").into() }.to_bytes();
    let h: [u8; HEADER_LEN] = wire[..HEADER_LEN].try_into().expect("ok");
    // A flipped payload bit: the CRC says so.
    let Started::Data(mut d) = start(&h, DEFAULT_MAX_PAYLOAD).expect("ok") else { panic!("not a data header") };
    d.push(Bytes::from_static(b"abcdeg")).expect("ok");
    assert!(matches!(d.finish(), Err(FrameError::Crc { .. })));
    // More than the frame holds is refused and handed back; too little is incomplete.
    let Started::Data(mut d) = start(&h, DEFAULT_MAX_PAYLOAD).expect("ok") else { panic!("not a data header") };
    assert!(matches!(d.push(Bytes::from_static(b"abcdefg")), Err(FrameError::Overrun { extra: 1, .. })));
    d.push(Bytes::from_static(b"abc")).expect("ok");
    assert!(matches!(d.finish(), Err(FrameError::Incomplete { missing: 3, .. })));
    // Header checks are decode's: a payload over the limit, and other kinds are not data.
    assert!(matches!(start(&h, 5), Err(FrameError::TooLong { len: 6, max: 5 })));
    let end = encode_segment_end(Position(6), 0);
    let h_end: [u8; HEADER_LEN] = end[..HEADER_LEN].try_into().expect("ok");
    assert!(matches!(start(&h_end, DEFAULT_MAX_PAYLOAD), Ok(Started::Whole { total: HEADER_LEN })));
}

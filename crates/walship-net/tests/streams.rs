//! Control messages and data frames over real QUIC on loopback.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use walship_core::Position;
use walship_core::frame::{self, DEFAULT_MAX_PAYLOAD, Frame, FrameError};
use walship_core::proto::{Ack, Hello, Welcome, control::Msg};
use walship_core::segment::SegmentName;
use walship_net::{NetError, close, control, data};

#[tokio::test]
async fn control_messages_round_trip() {
    let (_dir, paths) = common::certs();
    let (client, server, _ce, _se) = common::pair(&paths).await;

    let hello = Msg::Hello(Hello {
        protocol_version: 1,
        source_id: "src-1".into(),
        segment_size: 16 << 20,
        sender_name: "primary".into(),
        ..Default::default()
    });
    let (mut c_tx, mut c_rx) = control::open(&client).await.unwrap();
    c_tx.send(hello.clone()).await.unwrap();

    let (mut s_tx, mut s_rx) = control::accept(&server).await.unwrap();
    assert_eq!(s_rx.recv().await.unwrap(), Some(hello));

    let welcome = Msg::Welcome(Welcome { epoch: 7, durable_pos: 4096, ..Default::default() });
    s_tx.send(welcome.clone()).await.unwrap();
    assert_eq!(c_rx.recv().await.unwrap(), Some(welcome));

    // A burst of acks, then a clean end.
    for i in 0..1000u64 {
        let ack = Msg::Ack(Ack { epoch: 7, written_pos: i, flushed_pos: i, applied_pos: 0 });
        s_tx.send(ack).await.unwrap();
    }
    s_tx.finish().await.unwrap();
    for i in 0..1000u64 {
        match c_rx.recv().await.unwrap() {
            Some(Msg::Ack(a)) => assert_eq!(a.written_pos, i),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(c_rx.recv().await.unwrap(), None);
}

#[tokio::test]
async fn bad_control_message_is_a_decode_error() {
    let (_dir, paths) = common::certs();
    let (client, server, _ce, _se) = common::pair(&paths).await;
    let (mut send, _recv) = client.open_bi().await.unwrap();
    // Length 3, then bytes that are not protobuf (field 0 / bad wire type).
    send.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
    let (_s_tx, mut s_rx) = control::accept(&server).await.unwrap();
    let e = s_rx.recv().await.unwrap_err();
    assert!(matches!(e, NetError::Decode(_)), "{e}");
}

#[tokio::test]
async fn oversized_control_message_is_refused() {
    let (_dir, paths) = common::certs();
    let (client, server, _ce, _se) = common::pair(&paths).await;
    let (mut send, _recv) = client.open_bi().await.unwrap();
    send.write_all(&(64u32 << 20).to_be_bytes()).await.unwrap();
    let (_s_tx, mut s_rx) = control::accept(&server).await.unwrap();
    let e = s_rx.recv().await.unwrap_err();
    assert!(matches!(e, NetError::Control(_)), "{e}");
}

#[tokio::test]
async fn data_frames_round_trip() {
    let (_dir, paths) = common::certs();
    let (client, server, _ce, _se) = common::pair(&paths).await;
    const FRAME: usize = 128 << 10;
    const FRAMES: usize = 64; // 8 MiB
    let seg = SegmentName::new("000000010000000000000001").unwrap();
    let payloads: Vec<Bytes> = (0..FRAMES).map(|i| Bytes::from(common::pattern(FRAME - i, i as u64))).collect();

    let sender = {
        let payloads = payloads.clone();
        let seg = seg.clone();
        tokio::spawn(async move {
            let mut tx = data::open(&client).await.unwrap();
            tx.send_bytes(frame::encode_segment_start(Position(0), 1, &seg)).await.unwrap();
            let mut pos = Position(0);
            for p in payloads {
                let header = frame::encode_header(pos, 2, &p);
                pos = pos.add(p.len() as u64);
                tx.send_frame(header, p).await.unwrap();
            }
            tx.send_bytes(frame::encode_segment_end(pos, 3)).await.unwrap();
            tx.finish().unwrap();
            client // keep the connection open until the receiver is done
        })
    };

    let mut rx = data::accept(&server, DEFAULT_MAX_PAYLOAD).await.unwrap();
    let first = rx.next_frame().await.unwrap().unwrap();
    assert_eq!(first, Frame::SegmentStart { pos: Position(0), timestamp_us: 1, name: seg });
    let mut pos = Position(0);
    let mut chunked = 0;
    for expected in &payloads {
        match rx.next_frame().await.unwrap().unwrap() {
            Frame::Data { pos: p, timestamp_us: 2, payload } => {
                assert_eq!(p, pos);
                assert!(payload == *expected, "payload differs at {pos}");
                pos = pos.add(payload.len() as u64);
                chunked += usize::from(payload.chunks().len() > 1);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // A 128 KiB frame does not fit one QUIC packet: its payload is handed
    // over in the chunks it arrived in, not copied into one buffer.
    assert!(chunked > 0, "every payload arrived as one chunk");
    assert_eq!(rx.next_frame().await.unwrap(), Some(Frame::SegmentEnd { pos, timestamp_us: 3 }));
    assert_eq!(rx.next_frame().await.unwrap(), None);
    drop(sender.await.unwrap());
}

#[tokio::test]
async fn corrupted_frame_is_a_crc_error_and_closes_with_a_reason() {
    let (_dir, paths) = common::certs();
    let (client, server, _ce, _se) = common::pair(&paths).await;
    let payload = Bytes::from(common::pattern(10_000, 9));
    let good = Frame::Data { pos: Position(0), timestamp_us: 5, payload: payload.clone().into() }.to_bytes();
    let mut bad = good.to_vec();
    bad[frame::HEADER_LEN + 1234] ^= 0x01;

    let mut tx = data::open(&client).await.unwrap();
    tx.send_bytes(good).await.unwrap();
    tx.send_bytes(Bytes::from(bad)).await.unwrap();

    let mut rx = data::accept(&server, DEFAULT_MAX_PAYLOAD).await.unwrap();
    assert!(matches!(rx.next_frame().await.unwrap(), Some(Frame::Data { .. })));
    let e = rx.next_frame().await.unwrap_err();
    assert!(matches!(e, NetError::Frame(FrameError::Crc { .. })), "{e}");

    close::close(&server, close::code_for(&e), &e.to_string());
    let seen = client.closed().await;
    let (code, reason) = close::peer_close(&seen).unwrap();
    assert_eq!(code, close::BAD_FRAME);
    assert!(reason.starts_with("bad frame: ") && reason.contains("crc"), "{reason}");
}

#[tokio::test]
async fn stream_ending_inside_a_frame_is_truncated() {
    let (_dir, paths) = common::certs();
    let (client, server, _ce, _se) = common::pair(&paths).await;
    let whole =
        Frame::Data { pos: Position(0), timestamp_us: 0, payload: Bytes::from(vec![7u8; 5000]).into() }.to_bytes();
    let mut tx = data::open(&client).await.unwrap();
    tx.send_bytes(whole.slice(..3000)).await.unwrap();
    tx.finish().unwrap();
    let mut rx = data::accept(&server, DEFAULT_MAX_PAYLOAD).await.unwrap();
    let e = rx.next_frame().await.unwrap_err();
    assert!(matches!(e, NetError::Truncated { buffered: 3000 }), "{e}");
}

#[tokio::test]
async fn oversized_frame_is_refused_from_its_header() {
    let (_dir, paths) = common::certs();
    let (client, server, _ce, _se) = common::pair(&paths).await;
    let payload = Bytes::from(vec![1u8; 2000]);
    let mut tx = data::open(&client).await.unwrap();
    tx.send_frame(frame::encode_header(Position(0), 0, &payload), payload).await.unwrap();
    let mut rx = data::accept(&server, 1024).await.unwrap();
    let e = rx.next_frame().await.unwrap_err();
    assert!(matches!(e, NetError::Frame(FrameError::TooLong { len: 2000, max: 1024 })), "{e}");
}

#[tokio::test]
async fn next_frame_survives_cancellation() {
    let (_dir, paths) = common::certs();
    let (client, server, _ce, _se) = common::pair(&paths).await;
    let payload = Bytes::from(common::pattern(50_000, 3));
    let whole = Frame::Data { pos: Position(100), timestamp_us: 0, payload: payload.clone().into() }.to_bytes();
    let mut tx = data::open(&client).await.unwrap();
    tx.send_bytes(whole.slice(..20_000)).await.unwrap();

    let mut rx = data::accept(&server, DEFAULT_MAX_PAYLOAD).await.unwrap();
    // Let the first part arrive, then cancel the read mid-frame.
    let r = tokio::time::timeout(std::time::Duration::from_millis(200), rx.next_frame()).await;
    assert!(r.is_err(), "a partial frame must not complete");
    tx.send_bytes(whole.slice(20_000..)).await.unwrap();
    match rx.next_frame().await.unwrap().unwrap() {
        Frame::Data { pos, payload: p, .. } => {
            assert_eq!(pos, Position(100));
            assert!(p == payload);
        }
        other => panic!("unexpected {other:?}"),
    }
}

//! A corrupted frame, sent by a raw QUIC client with valid credentials,
//! closes the connection with a crc error and none of its bytes reach the
//! mirror; the valid frame before it does.
use std::time::Duration;

use bytes::Bytes;
use walship_core::proto::{self, control::Msg};
use walship_core::{Position, SegmentName, frame};
use walship_net::{TlsFiles, close};
use walship_tests::{Env, field, wait_durable};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_frame_closes_the_connection_and_never_reaches_the_mirror() {
    let env = Env::new();
    let recv = env.receiver("receiver", "127.0.0.1:0");
    let addr: std::net::SocketAddr =
        field(&recv.wait_log("receiver listening", T), "listen").expect("listen addr").parse().expect("addr");
    let tls = TlsFiles {
        ca: env.certs.join("ca.pem"),
        cert: env.certs.join("client.pem"),
        key: env.certs.join("client.key"),
    };
    let endpoint = walship_net::client_endpoint(addr, &tls).expect("endpoint");
    let conn = walship_net::connect(&endpoint, addr, "localhost").await.expect("connect");
    let (mut ctl_tx, mut ctl_rx) = walship_net::control::open(&conn).await.expect("control");
    ctl_tx
        .send(Msg::Hello(proto::Hello {
            protocol_version: walship_core::PROTOCOL_VERSION,
            source_id: "corruption-test".into(),
            format: proto::Format::Raw as i32,
            segment_size: 0,
            timeline: 0,
            sender_name: "raw-client".into(),
            max_frame_len: 1 << 20,
        }))
        .await
        .expect("hello");
    let Some(Msg::Welcome(w)) = ctl_rx.recv().await.expect("welcome") else { panic!("expected welcome") };
    assert_eq!(w.durable_pos, 0);

    let mut data = walship_net::data::open(&conn).await.expect("data stream");
    let name = SegmentName::new("segment-1").expect("name");
    data.send_bytes(frame::encode_segment_start(Position(0), 1, &name)).await.expect("send");
    let good = Bytes::from_static(b"0123456789");
    data.send_frame(frame::encode_header(Position(0), 2, &good), good.clone()).await.expect("send");
    let bad_payload = b"abcdefghij";
    let mut bad = frame::encode_header(Position(10), 3, bad_payload).to_vec();
    bad.extend_from_slice(bad_payload);
    *bad.last_mut().expect("payload") ^= 0x01;
    data.send_bytes(Bytes::from(bad)).await.expect("send");

    let err = tokio::time::timeout(T, conn.closed()).await.expect("the receiver closes the connection");
    let (code, reason) = close::peer_close(&err).unwrap_or_else(|| panic!("closed by the receiver, got {err}"));
    assert_eq!(code, close::BAD_FRAME, "{reason}");
    assert!(reason.contains("crc"), "reason names the crc error: {reason}");
    recv.wait_log("frame crc mismatch", T);

    // The store hands the mirror back after flushing the valid frame.
    wait_durable(&env.mirror, 10, T);
    let partial = std::fs::read(env.mirror.join("segment-1.partial")).expect("partial");
    assert_eq!(partial, good.to_vec(), "exactly the valid frame's bytes, none of the corrupted one");
    recv.wait_log("session closed", T);
    assert_eq!(walship_tests::mirror_durable(&env.mirror), 10);
}

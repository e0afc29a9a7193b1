//! Throughput probe: one data stream, 1 GiB of 128 KiB frames, client to
//! server over loopback. Ignored by default; run in release mode:
//!
//! ```text
//! cargo test -p walship-net --release --test throughput -- --ignored --nocapture
//! WALSHIP_PROBE_MTU=65000 WALSHIP_PROBE_MIB=1024 cargo test ... # MTU upper bound, size
//! (also WALSHIP_PROBE_INITIAL_MTU, WALSHIP_PROBE_GSO=true|false)
//! ```
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use walship_core::Position;
use walship_core::frame::{self, DEFAULT_MAX_PAYLOAD, Frame};
use walship_net::{data, endpoint, tls};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput probe; run in release with --ignored --nocapture"]
async fn one_stream_throughput() {
    const FRAME: usize = 128 << 10;
    let mib: usize = env("WALSHIP_PROBE_MIB", 1024);
    let mtu: u16 = env("WALSHIP_PROBE_MTU", tls::DEFAULT_MTU_UPPER_BOUND);
    let initial_mtu: u16 = env("WALSHIP_PROBE_INITIAL_MTU", 1200);
    let gso: bool = env("WALSHIP_PROBE_GSO", mtu <= tls::MAX_GSO_MTU);
    let frames = (mib << 20) / FRAME;

    let transport = || {
        let mut t = tls::transport_config_with_mtu(mtu);
        t.initial_mtu(initial_mtu);
        t.enable_segmentation_offload(gso);
        t
    };
    let (_dir, paths) = common::certs();
    let server_cfg = tls::server_config_with(&paths.server(), transport()).unwrap();
    let server_ep = endpoint::server_endpoint_with(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        server_cfg,
        endpoint::endpoint_config(mtu.max(1472)),
    )
    .unwrap();
    let addr = server_ep.local_addr().unwrap();
    let client_cfg = tls::client_config_with(&paths.client(), transport()).unwrap();
    let client_ep = endpoint::client_endpoint_with(addr, client_cfg, endpoint::endpoint_config(mtu.max(1472))).unwrap();

    let receiver = tokio::spawn(async move {
        let conn = walship_net::accept(&server_ep).await.unwrap().unwrap();
        let mut rx = data::accept(&conn, DEFAULT_MAX_PAYLOAD).await.unwrap();
        let mut bytes = 0u64;
        let mut n = 0usize;
        while let Some(f) = rx.next_frame().await.unwrap() {
            if let Frame::Data { payload, .. } = f {
                bytes += payload.len() as u64;
                n += 1;
            }
        }
        (bytes, n, Instant::now(), conn)
    });

    let conn = walship_net::connect(&client_ep, addr, "localhost").await.unwrap();
    let payload = Bytes::from(common::pattern(FRAME, 1));
    let mut tx = data::open(&conn).await.unwrap();
    let start = Instant::now();
    let mut pos = Position(0);
    for _ in 0..frames {
        let header = frame::encode_header(pos, 0, &payload);
        tx.send_frame(header, payload.clone()).await.unwrap();
        pos = pos.add(FRAME as u64);
    }
    tx.finish().unwrap();
    let (bytes, n, end, _server_conn) = receiver.await.unwrap();
    let secs = end.duration_since(start).as_secs_f64();
    assert_eq!((bytes, n), (pos.get(), frames));

    let stats = conn.stats();
    println!(
        "throughput: {mib} MiB in {secs:.3} s = {:.0} MB/s ({:.2} GiB/s); mtu upper bound {mtu}, initial {initial_mtu}, \
         gso {gso}, reached {}; sent {} packets, lost {} ({:.3} %), congestion events {}, black holes {}",
        bytes as f64 / secs / 1e6,
        bytes as f64 / secs / (1u64 << 30) as f64,
        stats.path.current_mtu,
        stats.path.sent_packets,
        stats.path.lost_packets,
        100.0 * stats.path.lost_packets as f64 / stats.path.sent_packets.max(1) as f64,
        stats.path.congestion_events,
        stats.path.black_holes_detected,
    );
}

//! Path MTU: to a loopback receiver the sender's QUIC packets grow far past
//! Ethernet size (fewer packets per byte: encryption, header protection and
//! the UDP stack are paid per packet), and an explicit bound caps them.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use walship_net::{TlsMode, endpoint, tls};

#[test]
fn loopback_peers_get_the_large_bound_and_others_ethernet() {
    let lo4 = SocketAddr::from((Ipv4Addr::LOCALHOST, 7000));
    let lo6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 7000));
    let remote = SocketAddr::from((Ipv4Addr::new(10, 1, 2, 3), 7000));
    assert_eq!(endpoint::mtu_upper_bound_for(lo4), tls::LOOPBACK_MTU);
    assert_eq!(endpoint::mtu_upper_bound_for(lo6), tls::LOOPBACK_MTU);
    assert_eq!(endpoint::mtu_upper_bound_for(remote), tls::DEFAULT_MTU_UPPER_BOUND);
}

/// Sends `bytes` on one uni stream from a client made by `client_endpoint_for`
/// to a server made by `server_endpoint_for`, and returns the client's path
/// MTU once the server has everything.
async fn path_mtu_after_transfer(bound: Option<u16>, bytes: usize) -> u16 {
    let (_dir, paths) = common::certs();
    let server =
        endpoint::server_endpoint_for(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), &TlsMode::Mutual(paths.server()))
            .unwrap();
    let addr = server.local_addr().unwrap();
    let receiver = tokio::spawn(async move {
        let conn = walship_net::accept(&server).await.unwrap().unwrap();
        let mut rx = conn.accept_uni().await.unwrap();
        let got = rx.read_to_end(usize::MAX).await.unwrap();
        (got.len(), conn)
    });
    let client = endpoint::client_endpoint_for(addr, &TlsMode::Mutual(paths.client()), bound).unwrap();
    let conn = walship_net::connect(&client, addr, "localhost").await.unwrap();
    let mut tx = conn.open_uni().await.unwrap();
    tx.write_all(&vec![0x5a; bytes]).await.unwrap();
    tx.finish().unwrap();
    let (got, _server_conn) = receiver.await.unwrap();
    assert_eq!(got, bytes);
    // Discovery runs while data flows; its result is in the path stats.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mtu = conn.stats().path.current_mtu;
        if mtu > tls::DEFAULT_MTU_UPPER_BOUND || Instant::now() > deadline || bound.is_some() {
            return mtu;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn discovery_reaches_a_large_mtu_on_loopback() {
    let mtu = path_mtu_after_transfer(None, 16 << 20).await;
    assert!(mtu > 8_000, "path MTU to a loopback peer stayed at {mtu}");
}

#[tokio::test]
async fn an_explicit_bound_caps_discovery() {
    let mtu = path_mtu_after_transfer(Some(1452), 16 << 20).await;
    assert!(mtu <= 1452, "path MTU {mtu} went past the bound");
}

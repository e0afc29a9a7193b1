//! Shared helpers: certificates in a tempdir, a server and a client on loopback.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use walship_net::{CertPaths, Connection, Endpoint, NetError, TlsFiles, certs};

/// Fresh certificates in a temporary directory (kept alive by the returned guard).
pub fn certs() -> (tempfile::TempDir, CertPaths) {
    let dir = tempfile::tempdir().unwrap();
    let paths = certs::init(dir.path(), &[], false).unwrap();
    (dir, paths)
}

/// A server endpoint on 127.0.0.1:0.
pub fn server(files: &TlsFiles) -> (Endpoint, SocketAddr) {
    let ep = walship_net::server_endpoint(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), files).unwrap();
    let addr = ep.local_addr().unwrap();
    (ep, addr)
}

/// Connects a client with `client_files` to a server with `server_files`
/// using `server_name`; returns the client's and the server's view (`None`
/// when the server saw nothing within 5 s).
pub async fn handshake(
    server_files: &TlsFiles,
    client_files: &TlsFiles,
    server_name: &str,
) -> (Result<Connection, NetError>, Option<Result<Connection, NetError>>, Endpoint, Endpoint) {
    let (server_ep, addr) = server(server_files);
    let client_ep = walship_net::client_endpoint(addr, client_files).unwrap();
    let accept = {
        let ep = server_ep.clone();
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(5), walship_net::accept(&ep)).await.ok().flatten()
        })
    };
    let client = walship_net::connect(&client_ep, addr, server_name).await;
    let server = accept.await.unwrap();
    (client, server, client_ep, server_ep)
}

/// A connected pair with the standard certificates.
pub async fn pair(paths: &CertPaths) -> (Connection, Connection, Endpoint, Endpoint) {
    let (c, s, ce, se) = handshake(&paths.server(), &paths.client(), "localhost").await;
    (c.unwrap(), s.unwrap().unwrap(), ce, se)
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

//! Case b: the same bytes through one unidirectional quinn stream, with the
//! same endpoints, TLS and transport configuration walship uses
//! (`walship_net::{server_endpoint, client_endpoint, connect}`), no framing,
//! no acks, no disk on the receiving side. This is the transport's ceiling
//! on this machine; walship cannot beat it.
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde::Serialize;
use walship_net::CertPaths;

use crate::data;

/// The outcome of the bare-quinn case.
#[derive(Debug, Clone, Serialize)]
pub struct BareResult {
    pub bytes: u64,
    pub secs: f64,
    pub mb_per_s: f64,
    /// QUIC path statistics of the client side.
    pub sent_packets: u64,
    pub lost_packets: u64,
    pub congestion_events: u64,
    pub mtu: u16,
}

/// Sends every segment of `source` (plain reads of `chunk` bytes) to a
/// server that discards them; timed from connect until the server has read
/// the last byte.
pub async fn run(source: &Path, certs: &CertPaths, total: u64, chunk: usize, timeout: Duration) -> Result<BareResult> {
    let server = walship_net::server_endpoint("127.0.0.1:0".parse()?, &certs.server())?;
    let addr = server.local_addr()?;
    let sink = tokio::spawn(async move {
        let conn = walship_net::accept(&server).await.context("server endpoint closed")??;
        let mut rx = conn.accept_uni().await?;
        let mut n = 0u64;
        while let Some(c) = rx.read_chunk(usize::MAX, true).await? {
            n += c.bytes.len() as u64;
        }
        let done = Instant::now();
        // Answer so the client can close cleanly after reading its stats.
        let mut reply = conn.open_uni().await?;
        reply.write_all(&n.to_le_bytes()).await?;
        reply.finish()?;
        let _ = conn.closed().await;
        server.wait_idle().await;
        anyhow::Ok((n, done))
    });

    let client = walship_net::client_endpoint(addr, &certs.client())?;
    let start = Instant::now();
    let conn = walship_net::connect(&client, addr, "localhost").await?;
    let mut tx = conn.open_uni().await?;
    let mut sent = 0u64;
    for (name, _) in data::segments(total) {
        let path = source.join(&name);
        let mut f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        loop {
            // No zeroing: read_to_end fills the spare capacity directly.
            let mut buf = Vec::with_capacity(chunk);
            let k = (&mut f)
                .take(chunk as u64)
                .read_to_end(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if k == 0 {
                break;
            }
            sent += k as u64;
            tx.write_chunk(Bytes::from(buf)).await?;
        }
    }
    tx.finish()?;
    if sent != total {
        bail!("read {sent} bytes from the source, expected {total}");
    }
    let mut reply = tokio::time::timeout(timeout, conn.accept_uni()).await.context("timed out")??;
    let _ = reply.read_to_end(8).await?;
    let stats = conn.stats();
    conn.close(walship_net::close::SHUTDOWN, b"done");
    let (received, done) = sink.await.context("server task")??;
    client.wait_idle().await;
    if received != total {
        bail!("the server received {received} bytes, expected {total}");
    }
    let secs = done.duration_since(start).as_secs_f64();
    Ok(BareResult {
        bytes: total,
        secs,
        mb_per_s: total as f64 / secs / 1e6,
        sent_packets: stats.path.sent_packets,
        lost_packets: stats.path.lost_packets,
        congestion_events: stats.path.congestion_events,
        mtu: stats.path.current_mtu,
    })
}

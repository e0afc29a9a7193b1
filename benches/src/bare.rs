//! Case b: the same bytes through one unidirectional quinn stream, with the
//! same endpoints, TLS and transport configuration walship uses
//! (`walship_net::{server_endpoint, client_endpoint, connect}`), no framing,
//! no acks, no disk on the receiving side. This is the transport's ceiling
//! on this machine; walship cannot beat it.
//!
//! Each end runs on its own OS thread with its own single-threaded tokio
//! runtime (quinn's endpoint driver, TLS and UDP I/O included), as walship's
//! sender and receiver do with one receiver each; so the CPU time of each
//! thread (`getrusage(RUSAGE_THREAD)`) is the CPU of that end, and the
//! sender's can be compared with walship's sender alone.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde::Serialize;
use walship_net::CertPaths;

use crate::data;
use crate::procs::thread_cpu_secs;

/// The outcome of the bare-quinn case.
#[derive(Debug, Clone, Serialize)]
pub struct BareResult {
    pub bytes: u64,
    pub secs: f64,
    pub mb_per_s: f64,
    /// CPU seconds of the sending end's thread (reads + quinn + TLS + UDP).
    pub sender_cpu_secs: f64,
    /// CPU seconds of the receiving end's thread.
    pub receiver_cpu_secs: f64,
    /// QUIC path statistics of the client side.
    pub sent_packets: u64,
    pub lost_packets: u64,
    pub congestion_events: u64,
    pub mtu: u16,
}

impl BareResult {
    /// Sender-end CPU seconds per GB (10^9 bytes).
    pub fn sender_cpu_s_per_gb(&self) -> f64 {
        self.sender_cpu_secs / (self.bytes as f64 / 1e9)
    }

    /// Receiver-end CPU seconds per GB.
    pub fn receiver_cpu_s_per_gb(&self) -> f64 {
        self.receiver_cpu_secs / (self.bytes as f64 / 1e9)
    }
}

/// Sends every segment of `source` (plain reads of `chunk` bytes) to a
/// server that discards them; timed from connect until the server has read
/// the last byte.
pub async fn run(source: &Path, certs: &CertPaths, total: u64, chunk: usize, timeout: Duration) -> Result<BareResult> {
    let (source, certs) = (source.to_path_buf(), certs.clone());
    tokio::task::spawn_blocking(move || run_threads(source, certs, total, chunk, timeout))
        .await
        .context("bare quinn task")?
}

/// What the receiving end reports.
struct SinkOut {
    received: u64,
    done: Instant,
    cpu_secs: f64,
}

/// What the sending end reports.
struct SourceOut {
    start: Instant,
    cpu_secs: f64,
    /// Sent packets, lost packets, congestion events, path MTU.
    path: (u64, u64, u64, u16),
}

fn run_threads(source: PathBuf, certs: CertPaths, total: u64, chunk: usize, timeout: Duration) -> Result<BareResult> {
    let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
    let server_certs = certs.server();
    let sink = std::thread::Builder::new().name("bare-recv".into()).spawn(move || -> Result<SinkOut> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let cpu0 = thread_cpu_secs()?;
        let (received, done) = rt.block_on(async move {
            let server = walship_net::server_endpoint("127.0.0.1:0".parse()?, &server_certs)?;
            addr_tx.send(server.local_addr()?).context("the sending end is gone")?;
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
        })?;
        Ok(SinkOut { received, done, cpu_secs: thread_cpu_secs()? - cpu0 })
    })?;
    let client_certs = certs.client();
    let send = std::thread::Builder::new().name("bare-send".into()).spawn(move || -> Result<SourceOut> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let addr = addr_rx.recv_timeout(timeout).context("the receiving end did not start")?;
        let cpu0 = thread_cpu_secs()?;
        let (start, path) = rt.block_on(async move {
            let client = walship_net::client_endpoint(addr, &client_certs)?;
            let start = Instant::now();
            let conn = walship_net::connect(&client, addr, "localhost").await?;
            let mut tx = conn.open_uni().await?;
            let mut sent = 0u64;
            for buf in data::source_chunks(&source, total, chunk) {
                let buf = buf?;
                sent += buf.len() as u64;
                tx.write_chunk(Bytes::from(buf)).await?;
            }
            tx.finish()?;
            if sent != total {
                bail!("read {sent} bytes from the source, expected {total}");
            }
            let mut reply = tokio::time::timeout(timeout, conn.accept_uni()).await.context("timed out")??;
            let _ = reply.read_to_end(8).await?;
            let p = conn.stats().path;
            conn.close(walship_net::close::SHUTDOWN, b"done");
            client.wait_idle().await;
            anyhow::Ok((start, (p.sent_packets, p.lost_packets, p.congestion_events, p.current_mtu)))
        })?;
        Ok(SourceOut { start, path, cpu_secs: thread_cpu_secs()? - cpu0 })
    })?;
    let sent = send.join().map_err(|_| anyhow::anyhow!("the sending end panicked"))?;
    let got = sink.join().map_err(|_| anyhow::anyhow!("the receiving end panicked"))?;
    let (sent, got) = (sent.context("sending end")?, got.context("receiving end")?);
    if got.received != total {
        bail!("the server received {} bytes, expected {total}", got.received);
    }
    let secs = got.done.duration_since(sent.start).as_secs_f64();
    Ok(BareResult {
        bytes: total,
        secs,
        mb_per_s: total as f64 / secs / 1e6,
        sender_cpu_secs: sent.cpu_secs,
        receiver_cpu_secs: got.cpu_secs,
        sent_packets: sent.path.0,
        lost_packets: sent.path.1,
        congestion_events: sent.path.2,
        mtu: sent.path.3,
    })
}

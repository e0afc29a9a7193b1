//! Cases a and c: walship itself, a Receiver and a Sender in this process
//! (as `walship demo` runs them), shipping a backlog that is already on
//! disk when the sender starts.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use walship_agent::store_thread::FlushPolicy;
use walship_agent::{Receiver, ReceiverOptions, Sender, SenderOptions, Target};
use walship_net::CertPaths;

use crate::rss::{RssReport, Sampler};

/// How to run one walship case.
#[derive(Debug, Clone)]
pub struct ShipParams<'a> {
    pub source: &'a Path,
    pub certs: &'a CertPaths,
    pub total: u64,
    pub max_frame: u32,
    pub max_inflight: u64,
    /// Give up after this long.
    pub timeout: Duration,
    /// Compare the mirror with the source byte for byte afterwards (untimed).
    pub verify: bool,
}

/// The outcome of one walship case.
#[derive(Debug, Clone, Serialize)]
pub struct ShipResult {
    pub bytes: u64,
    pub secs: f64,
    pub mb_per_s: f64,
    /// Time from sender start until the session streamed (connect + handshake).
    pub handshake_secs: f64,
    pub frames_sent: u64,
    pub reconnects: u64,
    pub rss: RssReport,
    /// `Some(true)` when `--verify` found the mirror identical to the source.
    pub verified: Option<bool>,
}

/// Ships `p.total` bytes into a new mirror at `mirror` (the receiver creates
/// it) and times it from sender start until the sender sees them flushed on
/// the receiver.
pub async fn run(p: &ShipParams<'_>, mirror: &Path) -> Result<ShipResult> {
    let receiver = Receiver::bind(ReceiverOptions {
        listen: "127.0.0.1:0".parse()?,
        dir: mirror.to_path_buf(),
        tls: p.certs.server(),
        name: "bench-receiver".into(),
        max_payload: walship_core::frame::DEFAULT_MAX_PAYLOAD,
        flush: FlushPolicy::default(),
    })
    .context("starting the receiver")?;
    let addr = receiver.local_addr()?;
    let shutdown = CancellationToken::new();
    let recv_task = tokio::spawn(receiver.run(shutdown.clone()));

    let sampler = Sampler::start();
    let start = Instant::now();
    let sender = Sender::new(SenderOptions {
        wal_dir: p.source.to_path_buf(),
        tailer: walship_source::TailerConfig::default(),
        source_id: "walship-bench".into(),
        sender_name: "bench-sender".into(),
        targets: vec![Target { addr, server_name: "localhost".into(), label: addr.to_string() }],
        tls: p.certs.client(),
        max_frame: p.max_frame,
        max_inflight: p.max_inflight,
        poll_interval: Duration::from_millis(100),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_secs(1),
        rpo_target: None,
    })
    .context("starting the sender")?;
    let handle = sender.handle();
    let send_task = tokio::spawn(sender.run(shutdown.clone()));

    let mut handshake_secs = None;
    let outcome = loop {
        let snap = handle.snapshot();
        let Some(r) = snap.receivers.first() else { bail!("the sender has no receiver") };
        if handshake_secs.is_none() && r.state == walship_agent::ConnState::Streaming {
            handshake_secs = Some(start.elapsed().as_secs_f64());
        }
        if r.flushed.get() >= p.total {
            break Ok((start.elapsed(), r.frames_sent, r.reconnects));
        }
        if start.elapsed() > p.timeout {
            break Err(anyhow::anyhow!(
                "timed out after {:?}: flushed {} of {} bytes (state {}, last error {:?}, source error {:?})",
                p.timeout,
                r.flushed.get(),
                p.total,
                r.state.as_str(),
                r.last_error,
                snap.source_error
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let rss = sampler.stop();
    shutdown.cancel();
    send_task.await.context("sender task")?.context("sender")?;
    recv_task.await.context("receiver task")?.context("receiver")?;
    let (elapsed, frames_sent, reconnects) = outcome?;

    let verified = if p.verify {
        let report = walship_store::verify::verify(p.source, mirror).context("verifying the mirror")?;
        let ok = report.is_ok() && report.durable_pos.get() == p.total;
        if !ok {
            eprintln!("verify: mirror differs from the source:\n{report}");
        }
        Some(ok)
    } else {
        None
    };
    let secs = elapsed.as_secs_f64();
    Ok(ShipResult {
        bytes: p.total,
        secs,
        mb_per_s: p.total as f64 / secs / 1e6,
        handshake_secs: handshake_secs.unwrap_or(f64::NAN),
        frames_sent,
        reconnects,
        rss,
        verified,
    })
}

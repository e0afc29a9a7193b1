//! Cases a and c: walship itself, a Receiver and a Sender in this process,
//! each on a current-thread runtime of a thread of its own (as `walship
//! receive` and `walship send` with one receiver run them, and as bare
//! quinn's two ends run in case b), shipping a backlog that is already on
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
    /// The receiver's fdatasync batching (`FlushPolicy::default()` is `walship receive`'s).
    pub flush: FlushPolicy,
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
    /// Latency of `GET /v1/lag` on the sender while it shipped.
    pub admin_latency: AdminLatency,
    /// The receiver's fdatasync calls (data plus durable-position record).
    pub fsync: FsyncStats,
}

/// The receiver's `fsync` histogram, summarised. Quantiles are bucket upper
/// bounds (the histogram's resolution is roughly 2–2.5×).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FsyncStats {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_upper_ms: f64,
    pub p99_upper_ms: f64,
}

impl FsyncStats {
    fn from_histogram(h: &walship_core::histogram::Histogram) -> Self {
        let ms = |q: f64| h.quantile_upper(q).map_or(f64::NAN, |s| s * 1e3);
        let count = h.count();
        FsyncStats {
            count,
            mean_ms: if count == 0 { f64::NAN } else { h.sum() / count as f64 * 1e3 },
            p50_upper_ms: ms(0.5),
            p99_upper_ms: ms(0.99),
        }
    }
}

/// Response times of the admin endpoint under load, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AdminLatency {
    pub requests: usize,
    pub failures: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// GETs `url` every 10 ms until told to stop.
fn probe_admin(url: &str, running: &std::sync::atomic::AtomicBool) -> AdminLatency {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
    let mut ms = Vec::new();
    let mut failures = 0;
    while running.load(std::sync::atomic::Ordering::Relaxed) {
        let t = Instant::now();
        match agent.get(url).call().and_then(|mut r| r.body_mut().read_to_string()) {
            Ok(_) => ms.push(t.elapsed().as_secs_f64() * 1e3),
            Err(_) => failures += 1,
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    ms.sort_by(f64::total_cmp);
    let q = |q: f64| ms.get(((ms.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(f64::NAN);
    AdminLatency {
        requests: ms.len(),
        failures,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: ms.last().copied().unwrap_or(f64::NAN),
    }
}

/// Runs `make()`'s future on a current-thread runtime of a thread of its
/// own, as `walship send` (one receiver) and `walship receive` run theirs,
/// and as bare quinn's two ends run in case b.
fn own_thread<F>(name: &str, make: impl FnOnce() -> F + Send + 'static) -> Result<std::thread::JoinHandle<Result<()>>>
where
    F: std::future::Future<Output = Result<()>>,
{
    let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime")?;
        rt.block_on(make())
    });
    thread.context("starting a thread")
}

/// Waits for a thread started by [`own_thread`] without blocking the runtime.
async fn join(name: &str, t: std::thread::JoinHandle<Result<()>>) -> Result<()> {
    let joined = tokio::task::spawn_blocking(move || t.join()).await.context("joining")?;
    joined.map_err(|_| anyhow::anyhow!("the {name} thread panicked"))?
}

/// Ships `p.total` bytes into a new mirror at `mirror` (the receiver creates
/// it) and times it from sender start until the sender sees them flushed on
/// the receiver. The receiver and the sender each run on a thread of their
/// own (see [`own_thread`]).
pub async fn run(p: &ShipParams<'_>, mirror: &Path) -> Result<ShipResult> {
    let shutdown = CancellationToken::new();
    let (recv_tx, recv_rx) = tokio::sync::oneshot::channel();
    let recv_opts = ReceiverOptions {
        flush: p.flush,
        ..ReceiverOptions::new("127.0.0.1:0".parse()?, mirror.to_path_buf(), p.certs.server(), "bench-receiver")
    };
    let stop = shutdown.clone();
    let recv_thread = own_thread("bench-receiver", move || async move {
        let receiver = Receiver::bind(recv_opts).context("starting the receiver")?;
        let _ = recv_tx.send((receiver.local_addr()?, receiver.handle()));
        receiver.run(stop).await.context("receiver")
    })?;
    let Ok((addr, recv_handle)) = recv_rx.await else {
        return Err(join("receiver", recv_thread).await.err().unwrap_or_else(|| anyhow::anyhow!("no receiver")));
    };

    let sampler = Sampler::start();
    let start = Instant::now();
    let send_opts = SenderOptions {
        max_frame: p.max_frame,
        max_inflight: p.max_inflight,
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_secs(1),
        ..SenderOptions::new(
            p.source.to_path_buf(),
            "walship-bench",
            vec![Target { addr, server_name: "localhost".into(), label: addr.to_string() }],
            p.certs.client(),
        )
    };
    let (send_tx, send_rx) = tokio::sync::oneshot::channel();
    let stop = shutdown.clone();
    let send_thread = own_thread("bench-sender", move || async move {
        let sender = Sender::new(send_opts).context("starting the sender")?;
        let handle = sender.handle();
        // The admin endpoint, on the sender's runtime as in `walship send`,
        // polled from a plain thread while shipping at full speed: does
        // /v1/lag stay responsive?
        let admin =
            walship_admin::AdminServer::bind("127.0.0.1:0".parse()?, walship_admin::Role::Sender(handle.clone()))
                .await
                .context("binding the admin endpoint")?;
        let _ = send_tx.send((handle, format!("http://{}/v1/lag", admin.local_addr()?)));
        let admin_task = tokio::spawn(admin.run(stop.clone()));
        sender.run(stop).await.context("sender")?;
        let _ = admin_task.await;
        Ok(())
    })?;
    let Ok((handle, admin_url)) = send_rx.await else {
        shutdown.cancel();
        let _ = join("receiver", recv_thread).await;
        return Err(join("sender", send_thread).await.err().unwrap_or_else(|| anyhow::anyhow!("no sender")));
    };
    let probing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let probe = {
        let probing = probing.clone();
        std::thread::spawn(move || probe_admin(&admin_url, &probing))
    };

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
    probing.store(false, std::sync::atomic::Ordering::Relaxed);
    let admin_latency = probe.join().map_err(|_| anyhow::anyhow!("admin probe panicked"))?;
    shutdown.cancel();
    join("sender", send_thread).await?;
    join("receiver", recv_thread).await?;
    let (elapsed, frames_sent, reconnects) = outcome?;
    let fsync = FsyncStats::from_histogram(&recv_handle.stats().fsync);

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
        admin_latency,
        fsync,
    })
}

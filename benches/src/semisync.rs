//! `walship-bench wait`: what a semi-sync wait costs an application.
//!
//! A receiver (mirror on disk, real fsync) and a sender with
//! `--sync-quorum 1 --sync-level flush` run in this process. The
//! "application" appends a 4 KiB record to the WAL, fdatasyncs it (its
//! commit), then calls the wait API through `walship-client` for the WAL end
//! and measures commit → wait return. A second loop measures a wait that is
//! already satisfied (position 0): the floor of the API itself.
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use walship_agent::{Receiver, ReceiverOptions, Sender, SenderOptions, Target};
use walship_core::sync::{AckLevel, SyncConfig};

use crate::data::ScratchDir;

/// What `wait` measures; the defaults are what `all` runs.
#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Commits to measure.
    #[arg(long, default_value_t = 500)]
    pub commits: usize,
    /// Directory on the disk for the WAL and the mirror (default: target/bench-tmp).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Quantiles {
    pub n: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn quantiles(mut v: Vec<f64>) -> Quantiles {
    v.sort_by(f64::total_cmp);
    let q = |q: f64| v.get(((v.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(f64::NAN);
    Quantiles {
        n: v.len(),
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        max_ms: v.last().copied().unwrap_or(f64::NAN),
    }
}

/// Both measurements.
#[derive(Debug, Clone, Serialize)]
pub struct WaitReport {
    /// Commits measured (4 KiB each).
    pub commits: usize,
    /// Commit (append + fdatasync) → wait returned durable.
    pub commit_to_durable: Quantiles,
    /// A wait whose position is already durable.
    pub satisfied_wait: Quantiles,
    pub outcomes_not_durable: usize,
}

/// Runs both loops in a fresh scratch directory under `a.dir`.
pub async fn run(a: &WaitArgs) -> Result<WaitReport> {
    let base = a.dir.clone().unwrap_or_else(|| crate::workspace_root().join("target/bench-tmp"));
    let root = ScratchDir::create(base.join(format!("walship-bench-wait-{}", std::process::id())))?;
    measure(root.path(), a.commits).await
}

impl WaitReport {
    /// The markdown section: the quantiles of both loops.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "### wait: what a semi-sync wait costs an application\n");
        let _ = writeln!(
            s,
            "A receiver (mirror on disk, real fdatasync) and a sender with `--sync-quorum 1 --sync-level flush` in \
             one process, on loopback. The application appends a 4 KiB record to the WAL and fdatasyncs it (its \
             commit), then waits through `walship-client` for the WAL end to be durable on the receiver; {} \
             commits, one after the other. Then {} waits for position 0, already durable: the floor of the wait \
             API itself (HTTP round trip).\n",
            self.commits, self.commits
        );
        let _ = writeln!(s, "| measured | n | p50 ms | p90 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|");
        for (what, q) in [
            ("commit (append + fdatasync) -> wait returned durable", &self.commit_to_durable),
            ("already-satisfied wait (the API's floor)", &self.satisfied_wait),
        ] {
            let _ = writeln!(
                s,
                "| {what} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
                q.n, q.p50_ms, q.p90_ms, q.p99_ms, q.max_ms
            );
        }
        let _ = writeln!(s, "\nWaits that returned anything but durable: {}.", self.outcomes_not_durable);
        s
    }

    /// No plot: the table says it all.
    pub fn plots(&self, _dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        Ok(Vec::new())
    }
}

async fn measure(root: &Path, commits: usize) -> Result<WaitReport> {
    let (wal, mirror) = (root.join("wal"), root.join("mirror"));
    std::fs::create_dir_all(&wal)?;
    let certs = walship_net::certs::ephemeral(&root.join("certs")).context("certificates")?;
    let receiver =
        Receiver::bind(ReceiverOptions::new("127.0.0.1:0".parse()?, mirror, certs.server(), "bench-receiver"))?;
    let addr = receiver.local_addr()?;
    let shutdown = CancellationToken::new();
    let recv_task = tokio::spawn(receiver.run(shutdown.clone()));
    let seg = wal.join("0000000000000001");
    std::fs::File::create(&seg)?;
    let sender = Sender::new(SenderOptions {
        sync: SyncConfig { quorum: 1, level: AckLevel::Flush, timeout: Some(Duration::from_secs(5)) },
        ..SenderOptions::new(
            wal.clone(),
            "walship-bench-wait",
            vec![Target { addr, server_name: "localhost".into(), label: addr.to_string() }],
            certs.client(),
        )
    })?;
    let handle = sender.handle();
    let admin =
        walship_admin::AdminServer::bind("127.0.0.1:0".parse()?, walship_admin::Role::Sender(handle.clone())).await?;
    let admin_addr = admin.local_addr()?.to_string();
    let admin_task = tokio::spawn(admin.run(shutdown.clone()));
    let send_task = tokio::spawn(sender.run(shutdown.clone()));

    let report = tokio::task::spawn_blocking(move || -> Result<WaitReport> {
        let client = walship_client::Client::new(&admin_addr);
        let mut f = std::fs::OpenOptions::new().append(true).open(&seg)?;
        let record = vec![0x42u8; 4096];
        let (mut commit, mut satisfied, mut bad) = (Vec::new(), Vec::new(), 0);
        // Warm up: connection established, first segment announced.
        f.write_all(&record)?;
        f.sync_data()?;
        client.wait(walship_client::Wait::end().timeout(Duration::from_secs(10)))?;
        for _ in 0..commits {
            f.write_all(&record)?;
            f.sync_data()?;
            let t = Instant::now();
            let r = client.wait(walship_client::Wait::end().timeout(Duration::from_secs(10)))?;
            commit.push(t.elapsed().as_secs_f64() * 1e3);
            if r.outcome != walship_client::Outcome::Durable {
                bad += 1;
            }
        }
        for _ in 0..commits {
            let t = Instant::now();
            client.wait(walship_client::Wait::position("0"))?;
            satisfied.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(WaitReport {
            commits,
            commit_to_durable: quantiles(commit),
            satisfied_wait: quantiles(satisfied),
            outcomes_not_durable: bad,
        })
    })
    .await??;
    shutdown.cancel();
    send_task.await??;
    recv_task.await??;
    let _ = admin_task.await;
    if report.outcomes_not_durable > 0 {
        bail!("{} waits did not return durable", report.outcomes_not_durable);
    }
    Ok(report)
}

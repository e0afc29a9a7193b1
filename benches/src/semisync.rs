//! `walship-bench wait`: what a semi-sync wait costs an application.
//!
//! A receiver (mirror on disk, real fsync) and a sender with
//! `--sync-quorum 1 --sync-level flush` run in this process. The
//! "application" appends a 4 KiB record to the WAL, fdatasyncs it (its
//! commit), then calls the wait API through `walship-client` for the WAL end
//! and measures commit → wait return. A second loop measures a wait that is
//! already satisfied (position 0): the floor of the API itself.
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use walship_agent::{Receiver, ReceiverOptions, Sender, SenderOptions, Target};
use walship_core::sync::{AckLevel, SyncConfig};

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
    /// Commit (append + fdatasync) → wait returned durable.
    pub commit_to_durable: Quantiles,
    /// A wait whose position is already durable.
    pub satisfied_wait: Quantiles,
    pub outcomes_not_durable: usize,
}

pub async fn run(root: &Path, commits: usize) -> Result<WaitReport> {
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

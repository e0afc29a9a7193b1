//! `walship-bench fan`: one `walship send` to N `walship receive`
//! processes, shipping a backlog that is already written.
//!
//! ```text
//! cargo run --release -p walship-bench -- fan [--bytes 1GiB] [--receivers 1,2,4] [--dir /dev/shm]
//!     [--mirror-dir DIR] [--walship-bin PATH]
//! ```
//!
//! The source (raw WAL, 16 MiB segments) is written once on tmpfs. Per N:
//! N receivers start (mirrors on tmpfs by default, so the disk does not
//! decide), then the sender with one `--to` per receiver; the clock runs from
//! the sender's start until its `/v1/lag` (polled every 20 ms) shows every
//! receiver flushed the source end, and the time each receiver got there is
//! kept. CPU seconds of every process from `/proc/PID/stat` over that
//! interval, the sender's `VmHWM`; every mirror is compared with the source
//! afterwards (untimed).
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use walship_net::CertPaths;

use crate::data::{self, ScratchDir, existing_ancestor, require_space};
use crate::plot::{Series, line_chart};
use crate::procs::{ProcMem, Walship, agent, cpu_secs};

#[derive(Debug, Clone, clap::Args)]
pub struct FanArgs {
    /// Backlog to ship to every receiver (KiB/MiB/GiB or KB/MB/GB).
    #[arg(long, default_value = "1GiB", value_parser = walship::cli::parse_size)]
    pub bytes: u64,
    /// Receiver counts to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub receivers: Vec<usize>,
    /// Directory on tmpfs for the source (a fresh `walship-bench-fan-PID` inside it is removed afterwards).
    #[arg(long, default_value = "/dev/shm")]
    pub dir: PathBuf,
    /// Directory for the mirrors [default: beside the source, on tmpfs].
    #[arg(long)]
    pub mirror_dir: Option<PathBuf>,
    /// The walship binary [default: built by cargo with this program's profile].
    #[arg(long)]
    pub walship_bin: Option<PathBuf>,
    /// Give up on one N after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

/// One sender, N receivers.
#[derive(Debug, Clone, Serialize)]
pub struct FanRun {
    pub receivers: usize,
    /// Sender start until every receiver flushed the source end.
    pub wall_secs: f64,
    /// Per receiver: sender start until it flushed the source end.
    pub receiver_secs: Vec<f64>,
    /// Per receiver: `bytes / receiver_secs`, MB/s.
    pub receiver_mb_per_s: Vec<f64>,
    pub mean_receiver_mb_per_s: f64,
    /// `N × bytes / wall_secs`, MB/s.
    pub aggregate_mb_per_s: f64,
    pub sender_cpu_secs: f64,
    /// Sender CPU per GB (10^9 bytes) of WAL, each byte sent N times.
    pub sender_cpu_s_per_gb_wal: f64,
    /// Sender CPU per GB sent (N × bytes).
    pub sender_cpu_s_per_gb_sent: f64,
    pub receiver_cpu_secs: Vec<f64>,
    pub sender_peak_rss_bytes: u64,
    /// Every mirror compared equal to the source.
    pub verified: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FanReport {
    pub bytes: u64,
    pub source_dir: PathBuf,
    pub mirror_dir: PathBuf,
    pub cpus: usize,
    pub runs: Vec<FanRun>,
}

pub async fn run(a: &FanArgs) -> Result<FanReport> {
    let a = a.clone();
    tokio::task::spawn_blocking(move || run_sync(&a)).await.context("fan task")?
}

fn run_sync(a: &FanArgs) -> Result<FanReport> {
    if a.bytes == 0 {
        bail!("--bytes must be more than 0");
    }
    if a.receivers.is_empty() || a.receivers.contains(&0) {
        bail!("--receivers must list counts of at least 1");
    }
    let walship = crate::procs::walship_binary(a.walship_bin.clone())?;
    let pid = std::process::id();
    let root_dir = a.dir.join(format!("walship-bench-fan-{pid}"));
    let mirror_dir = a.mirror_dir.clone().map(|d| d.join(format!("walship-bench-fan-{pid}")));
    let most = a.receivers.iter().copied().max().unwrap_or(1) as u64;
    let slack = 64 << 20;
    // Each N removes its mirrors before the next.
    match &mirror_dir {
        None => require_space(&existing_ancestor(&root_dir), a.bytes * (1 + most) + slack, "the source and mirrors")?,
        Some(m) => {
            require_space(&existing_ancestor(&root_dir), a.bytes + slack, "the source")?;
            require_space(&existing_ancestor(m), a.bytes * most + slack, "the mirrors")?;
        }
    }
    let root = ScratchDir::create(root_dir)?;
    let mirrors = match &mirror_dir {
        Some(m) => ScratchDir::create(m.clone())?,
        None => ScratchDir::create(root.path().join("mirrors"))?,
    };
    let source = root.path().join("wal");
    std::fs::create_dir(&source)?;
    let certs = walship_net::certs::ephemeral(&root.path().join("certs")).context("creating certificates")?;
    println!("fan: writing {:.2} GiB of raw WAL ...", a.bytes as f64 / (1u64 << 30) as f64);
    data::write_source(&source, a.bytes)?;

    let mut runs = Vec::new();
    for &n in &a.receivers {
        let dir = ScratchDir::create(mirrors.path().join(format!("n{n}")))?;
        let logs = ScratchDir::create(root.path().join(format!("logs-n{n}")))?;
        let r = fan_once(
            &walship,
            &certs,
            &source,
            dir.path(),
            logs.path(),
            a.bytes,
            n,
            Duration::from_secs(a.timeout_secs),
        )
        .with_context(|| format!("one sender to {n} receivers"))?;
        println!(
            "  N={n}: all flushed in {:.2} s, per receiver {:.0} MB/s (mean), aggregate {:.0} MB/s, sender {:.2} CPU s \
             ({:.2} s/GB of WAL), receivers {:.2} CPU s, verified {}",
            r.wall_secs,
            r.mean_receiver_mb_per_s,
            r.aggregate_mb_per_s,
            r.sender_cpu_secs,
            r.sender_cpu_s_per_gb_wal,
            r.receiver_cpu_secs.iter().sum::<f64>(),
            r.verified
        );
        runs.push(r);
    }
    Ok(FanReport {
        bytes: a.bytes,
        source_dir: a.dir.clone(),
        mirror_dir: a.mirror_dir.clone().unwrap_or_else(|| a.dir.clone()),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        runs,
    })
}

#[allow(clippy::too_many_arguments)]
fn fan_once(
    walship: &Path,
    certs: &CertPaths,
    source: &Path,
    mirrors: &Path,
    logs: &Path,
    bytes: u64,
    n: usize,
    timeout: Duration,
) -> Result<FanRun> {
    let mut receivers = Vec::new();
    let mut targets = Vec::new();
    for i in 0..n {
        let (r, addr) = Walship::receive(
            walship,
            "127.0.0.1:0",
            &mirrors.join(format!("m{i}")),
            &format!("bench-receiver-{i}"),
            certs,
            &logs.join(format!("recv-{i}.log")),
        )?;
        receivers.push(r);
        targets.push(addr);
    }
    let receiver_cpu0: Vec<f64> = receivers.iter().map(|r| cpu_secs(r.pid())).collect::<Result<_>>()?;
    let agent = agent();
    let start = Instant::now();
    // The sender's CPU counts from its start: the figure includes loading the certificates.
    let mut sender = Walship::send(walship, source, &targets, certs, "1s", &logs.join("send.log"))?;
    let mut done: Vec<Option<f64>> = vec![None; n];
    loop {
        let v = sender.lag(&agent)?;
        let list = v["receivers"].as_array().with_context(|| format!("no receivers in /v1/lag: {v}"))?;
        if list.len() != n {
            bail!("the sender reports {} receivers, expected {n}: {v}", list.len());
        }
        let now = start.elapsed().as_secs_f64();
        for (i, r) in list.iter().enumerate() {
            // Receivers are reported under their --to address.
            let idx = targets.iter().position(|t| r["name"].as_str() == Some(t)).unwrap_or(i);
            if done[idx].is_none() && r["flush_pos"].as_u64().is_some_and(|f| f >= bytes) {
                done[idx] = Some(now);
            }
        }
        if done.iter().all(Option::is_some) {
            break;
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?}: {v}");
        }
        if !sender.child.alive() {
            bail!("the sender exited; log:\n{}", crate::procs::tail(&sender.child.log_text(), 30));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall_secs = start.elapsed().as_secs_f64();
    let sender_cpu_secs = cpu_secs(sender.pid())?;
    let receiver_cpu_secs: Vec<f64> =
        receivers.iter().zip(&receiver_cpu0).map(|(r, c0)| Ok(cpu_secs(r.pid())? - c0)).collect::<Result<_>>()?;
    let sender_peak_rss_bytes = ProcMem::of(sender.pid())?.hwm;
    sender.child.stop("TERM").context("stopping the sender")?;
    for r in &mut receivers {
        r.child.stop("TERM").context("stopping a receiver")?;
    }
    let mut verified = true;
    for i in 0..n {
        let m = mirrors.join(format!("m{i}"));
        let report = walship_store::verify::verify(source, &m).with_context(|| format!("verifying {}", m.display()))?;
        if !(report.is_ok() && report.durable_pos.get() == bytes) {
            eprintln!("verify: mirror {} differs from the source:\n{report}", m.display());
            verified = false;
        }
    }
    let receiver_secs: Vec<f64> = done.into_iter().map(|d| d.unwrap_or(f64::NAN)).collect();
    let receiver_mb_per_s: Vec<f64> = receiver_secs.iter().map(|s| bytes as f64 / s / 1e6).collect();
    let gb = bytes as f64 / 1e9;
    Ok(FanRun {
        receivers: n,
        wall_secs,
        mean_receiver_mb_per_s: receiver_mb_per_s.iter().sum::<f64>() / n as f64,
        receiver_secs,
        receiver_mb_per_s,
        aggregate_mb_per_s: n as f64 * bytes as f64 / wall_secs / 1e6,
        sender_cpu_secs,
        sender_cpu_s_per_gb_wal: sender_cpu_secs / gb,
        sender_cpu_s_per_gb_sent: sender_cpu_secs / (gb * n as f64),
        receiver_cpu_secs,
        sender_peak_rss_bytes,
        verified,
    })
}

impl FanReport {
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "### Fan-out: one sender, N receivers\n");
        let _ = writeln!(
            s,
            "The real processes: one `walship send` with a `--to` per receiver, N `walship receive` with their \
             mirrors in {}, shipping a {:.2} GiB raw backlog written beforehand on tmpfs ({}). Timed from the \
             sender's start until its `/v1/lag` (polled every 20 ms) shows every receiver flushed the source end; \
             per receiver, until it did. CPU seconds from `/proc/PID/stat` over that interval (the sender's \
             include its start-up). All N + 1 processes share this machine's {} CPUs, so more receivers also compete \
             with the sender for CPU. Every mirror was compared with the source afterwards.\n",
            self.mirror_dir.display(),
            self.bytes as f64 / (1u64 << 30) as f64,
            self.source_dir.display(),
            self.cpus,
        );
        let _ = writeln!(
            s,
            "| N | all flushed in | per receiver (mean) | slowest receiver | aggregate | sender CPU | sender CPU/GB of \
             WAL | sender CPU/GB sent | receivers' CPU (sum) | sender peak RSS | verified |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        for r in &self.runs {
            let slowest = r.receiver_mb_per_s.iter().copied().fold(f64::INFINITY, f64::min);
            let _ = writeln!(
                s,
                "| {} | {:.2} s | {:.0} MB/s | {:.0} MB/s | {:.0} MB/s | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.1} \
                 MiB | {} |",
                r.receivers,
                r.wall_secs,
                r.mean_receiver_mb_per_s,
                slowest,
                r.aggregate_mb_per_s,
                r.sender_cpu_secs,
                r.sender_cpu_s_per_gb_wal,
                r.sender_cpu_s_per_gb_sent,
                r.receiver_cpu_secs.iter().sum::<f64>(),
                r.sender_peak_rss_bytes as f64 / (1u64 << 20) as f64,
                if r.verified { "yes" } else { "NO" },
            );
        }
        let _ = writeln!(
            s,
            "\nPer receiver: backlog / its time to flushed; aggregate: N × backlog / all flushed; GB = 10^9 bytes.\n"
        );
        s
    }

    pub fn plots(&self, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        let pts = |f: fn(&FanRun) -> f64| self.runs.iter().map(|r| (r.receivers as f64, f(r))).collect::<Vec<_>>();
        let mut out = Vec::new();
        let path = dir.join("fan_throughput.png");
        line_chart(
            &path,
            "Fan-out throughput",
            "receivers (N)",
            "MB/s",
            &[
                Series { name: "per receiver (mean)".into(), points: pts(|r| r.mean_receiver_mb_per_s) },
                Series { name: "aggregate (N × backlog / time)".into(), points: pts(|r| r.aggregate_mb_per_s) },
            ],
        )?;
        out.push(("Fan-out: throughput per receiver and aggregate vs number of receivers".into(), path));
        let path = dir.join("fan_sender_cpu.png");
        line_chart(
            &path,
            "Fan-out: sender CPU",
            "receivers (N)",
            "CPU seconds",
            &[
                Series { name: "sender CPU s".into(), points: pts(|r| r.sender_cpu_secs) },
                Series { name: "sender CPU s per GB of WAL".into(), points: pts(|r| r.sender_cpu_s_per_gb_wal) },
            ],
        )?;
        out.push(("Fan-out: sender CPU seconds (total and per GB of WAL) vs number of receivers".into(), path));
        Ok(out)
    }
}

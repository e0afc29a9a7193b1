//! The comparative benchmark harness.
//!
//! ```text
//! cargo run --release -p walship-bench -- ship [--bytes 2GiB] [--dir /dev/shm/X] [--disk-dir DIR]
//!     [--frame 256KiB] [--inflight 64MiB] [--only a,b,c,d] [--verify]
//! ```
//!
//! One run measures, over the same pre-written raw WAL (16 MiB segments on
//! tmpfs):
//!
//! | case | what | bar |
//! |---|---|---|
//! | a | walship, mirror on tmpfs | ≥ 0.8 × b |
//! | b | bare quinn, one uni stream, same endpoints/TLS/transport, discard | |
//! | c | walship, mirror on disk (real fsync) | ≥ 0.8 × d |
//! | d | plain write + fdatasync loop on that disk, the receiver's flush policy | |
//! | e | one TCP connection with TLS 1.3 (tokio-rustls, same certificates), discard | |
//!
//! It prints a markdown section and writes `target/bench-report/ship.json`.
//!
//! `walship-bench all [--quick] [--skip ship,pg,...]` runs every benchmark
//! in turn and writes `target/bench-report/report.md`, `report.json` and
//! `plots/` (see `all.rs`).
mod all;
mod backlog;
mod bare;
mod data;
mod disk;
mod fan;
mod pg;
mod plot;
mod procs;
mod report;
mod rss;
mod semisync;
mod ship;
mod sweep;
mod tcp_tls;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::data::{ScratchDir, existing_ancestor, require_space};
use crate::report::Report;

#[derive(Debug, Parser)]
#[command(name = "walship-bench", about = "walship benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Ship a backlog: walship vs bare quinn (tmpfs), walship vs write+fdatasync (disk).
    Ship(ShipArgs),
    /// Semi-sync wait latency: commit (append + fdatasync) to a durable wait, and an already-satisfied wait.
    Wait(semisync::WaitArgs),
    /// PostgreSQL: TPS and commit latency with walship semi-sync vs pg_receivewal as sync standby, and flush lag.
    Pg(pg::PgArgs),
    /// Every benchmark in turn: target/bench-report/report.md, report.json and plots/.
    All(all::AllArgs),
    /// Frame size, in-flight window and fsync batch sweeps: is each default within 10 % of the best?
    Sweep(sweep::SweepArgs),
    /// Catch-up after a receiver outage (real processes): time, RPO exposure curve, CPU/GB, peak RSS vs backlog size.
    Backlog(backlog::BacklogArgs),
    /// One sender to N receivers (real processes): throughput per receiver and sender CPU vs N.
    Fan(fan::FanArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ShipArgs {
    /// Bytes of WAL to ship (KiB/MiB/GiB or KB/MB/GB suffixes).
    #[arg(long, default_value = "2GiB", value_parser = walship::cli::parse_size)]
    bytes: u64,
    /// Directory on tmpfs for the source and the tmpfs mirror (a fresh
    /// `walship-bench-PID` inside it is created and removed).
    #[arg(long, default_value = "/dev/shm")]
    dir: PathBuf,
    /// Directory on the disk for cases c and d (default: target/bench-tmp;
    /// a fresh `walship-bench-PID` inside it is created and removed).
    #[arg(long)]
    disk_dir: Option<PathBuf>,
    /// Largest frame payload the sender cuts.
    #[arg(long, default_value = "128KiB", value_parser = walship::cli::parse_size)]
    frame: u64,
    /// Bytes the sender may have unacknowledged.
    #[arg(long, default_value = "64MiB", value_parser = walship::cli::parse_size)]
    inflight: u64,
    /// Cases to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d,e,f")]
    only: Vec<Case>,
    /// Compare each mirror with the source afterwards (not timed).
    #[arg(long)]
    verify: bool,
    /// Where to write the JSON report [default: target/bench-report/ship.json].
    #[arg(long)]
    report: Option<PathBuf>,
    /// Run the selected cases this many times, alternating them, and report
    /// the median of each (the machine is shared and noisy; ratios of
    /// medians measured in one run are what to compare).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Give up on a case after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Case {
    A,
    B,
    C,
    D,
    E,
    F,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WALSHIP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let r = match cli.cmd {
        // Synchronous: the postgres client runs a runtime of its own.
        Cmd::Pg(a) => pg::command(&a),
        Cmd::Sweep(a) => rt.block_on(sweep_cmd(a)),
        Cmd::Backlog(a) => rt.block_on(async {
            let r = backlog::run(&a).await?;
            write_section("backlog", &r, r.markdown(), |d| r.plots(d))
        }),
        Cmd::Fan(a) => rt.block_on(async {
            let r = fan::run(&a).await?;
            write_section("fan", &r, r.markdown(), |d| r.plots(d))
        }),
        Cmd::Ship(a) => rt.block_on(async {
            let mut r = run_ship(&a).await?;
            r.print();
            let path = a.report.clone().unwrap_or_else(|| workspace_root().join("target/bench-report/ship.json"));
            r.write(&path)?;
            println!("report written to {}", path.display());
            Ok(())
        }),
        Cmd::Wait(a) => rt.block_on(async {
            let r = semisync::run(&a).await?;
            println!("\n{}", r.markdown());
            let path = workspace_root().join("target/bench-report/wait.json");
            std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
            std::fs::write(&path, serde_json::to_vec_pretty(&r)?)?;
            println!("report written to {}", path.display());
            Ok(())
        }),
        // Synchronous: it runs `pg`, whose postgres client has a runtime of its own.
        Cmd::All(a) => all::run(&a, &rt),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `ship` benchmark: every selected case, `rounds` times, alternated; the
/// report holds the median of each case and the ratios.
pub(crate) async fn run_ship(a: &ShipArgs) -> Result<Report> {
    if a.bytes == 0 {
        bail!("--bytes must be more than 0");
    }
    let max_frame = u32::try_from(a.frame).context("--frame is too large")?;
    let pid = std::process::id();
    let shm_dir = a.dir.join(format!("walship-bench-{pid}"));
    let disk_dir = a
        .disk_dir
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/bench-tmp"))
        .join(format!("walship-bench-{pid}"));
    let run = |c: Case| a.only.contains(&c);
    let on_disk = run(Case::C) || run(Case::D);
    // Space: the source always, plus a tmpfs mirror for a; one copy on the disk for c or d
    // (each case cleans up before the next). 64 MiB of slack for control files and metadata.
    let slack = 64 << 20;
    let shm_need = a.bytes * if run(Case::A) { 2 } else { 1 } + slack;
    require_space(&existing_ancestor(&shm_dir), shm_need, "the source and the tmpfs mirror")?;
    if on_disk {
        require_space(&existing_ancestor(&disk_dir), a.bytes + slack, "the on-disk mirror")?;
    }

    let root = ScratchDir::create(shm_dir)?;
    let source = root.path().join("wal");
    std::fs::create_dir(&source)?;
    let certs = walship_net::certs::ephemeral(&root.path().join("certs")).context("creating certificates")?;
    let mut report = Report::new(a.bytes, max_frame, a.inflight, root.path(), &disk_dir);
    println!(
        "walship-bench ship: {:.2} GiB as {} segments of 16 MiB in {}, frame {} KiB, in-flight {} MiB",
        a.bytes as f64 / (1u64 << 30) as f64,
        data::segments(a.bytes).len(),
        source.display(),
        a.frame >> 10,
        a.inflight >> 20
    );
    let t = std::time::Instant::now();
    data::write_source(&source, a.bytes)?;
    println!("source written in {:.1} s", t.elapsed().as_secs_f64());
    let timeout = Duration::from_secs(a.timeout_secs);
    let params = ship::ShipParams {
        source: &source,
        certs: &certs,
        total: a.bytes,
        max_frame,
        max_inflight: a.inflight,
        timeout,
        verify: a.verify,
        flush: Default::default(),
    };

    let mut rs: [Vec<f64>; 6] = Default::default();
    let (mut all_a, mut all_b, mut all_c, mut all_d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut all_e, mut all_f) = (Vec::new(), Vec::new());
    for round in 1..=a.rounds.max(1) {
        println!("round {round}");
        if run(Case::A) {
            let mirror = ScratchDir::create(root.path().join("mirror"))?;
            let r = ship::run(&params, &mirror.path().join("m")).await.context("case a (walship, tmpfs)")?;
            report.case_done("a", &r);
            rs[0].push(r.mb_per_s);
            all_a.push(r);
        }
        if run(Case::B) {
            let r = bare::run(&source, &certs, a.bytes, max_frame as usize, timeout).await.context("case b (quinn)")?;
            report.case_done("b", &r);
            rs[1].push(r.mb_per_s);
            all_b.push(r);
        }
        if run(Case::C) {
            let mirror = ScratchDir::create(disk_dir.join("mirror"))?;
            let r = ship::run(&params, &mirror.path().join("m")).await.context("case c (walship, disk)")?;
            report.case_done("c", &r);
            rs[2].push(r.mb_per_s);
            all_c.push(r);
        }
        if run(Case::D) {
            let out = ScratchDir::create(disk_dir.join("plain"))?;
            let (src, dst, total) = (source.clone(), out.path().to_path_buf(), a.bytes);
            let r = tokio::task::spawn_blocking(move || disk::run(&src, &dst, total))
                .await
                .context("case d task")?
                .context("case d (write + fdatasync)")?;
            report.case_done("d", &r);
            rs[3].push(r.mb_per_s);
            all_d.push(r);
        }
        if run(Case::E) {
            let r = tcp_tls::run(&source, &certs, a.bytes, max_frame as usize, timeout)
                .await
                .context("case e (TCP + TLS)")?;
            report.case_done("e", &r);
            rs[4].push(r.mb_per_s);
            all_e.push(r);
        }
        if run(Case::F) {
            let out = ScratchDir::create(root.path().join("plain"))?;
            let (src, dst, total) = (source.clone(), out.path().to_path_buf(), a.bytes);
            let r = tokio::task::spawn_blocking(move || disk::run(&src, &dst, total))
                .await
                .context("case f task")?
                .context("case f (plain writes to tmpfs)")?;
            report.case_done("f", &r);
            rs[5].push(r.mb_per_s);
            all_f.push(r);
        }
    }
    report.rounds_mb_per_s = rs;
    report.a = median_by_rate(all_a, |r| r.mb_per_s);
    report.b = median_by_rate(all_b, |r| r.mb_per_s);
    report.c = median_by_rate(all_c, |r| r.mb_per_s);
    report.d = median_by_rate(all_d, |r| r.mb_per_s);
    report.e = median_by_rate(all_e, |r| r.mb_per_s);
    report.f = median_by_rate(all_f, |r| r.mb_per_s);
    if on_disk {
        // The cases removed their contents; this removes the per-run directory.
        let _ = std::fs::remove_dir(&disk_dir);
    }
    report.ratios();
    Ok(report)
}

/// The element with the median rate (the lower middle one for an even count).
fn median_by_rate<T>(mut v: Vec<T>, rate: impl Fn(&T) -> f64) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|x, y| rate(x).total_cmp(&rate(y)));
    let mid = (v.len() - 1) / 2;
    Some(v.swap_remove(mid))
}

/// `sweep` as a subcommand: the markdown on stdout, `sweep.json` and the plots in target/bench-report.
async fn sweep_cmd(a: sweep::SweepArgs) -> Result<()> {
    let r = sweep::run(&a).await?;
    println!("\n{}", r.markdown());
    let dir = workspace_root().join("target/bench-report");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("sweep.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&r)?).with_context(|| format!("writing {}", path.display()))?;
    println!("report written to {}", path.display());
    for (caption, png) in r.plots(&dir)? {
        println!("plot: {caption}: {}", png.display());
    }
    Ok(())
}

/// A subcommand's report: the markdown on stdout, NAME.json and the plots in target/bench-report.
fn write_section<R: serde::Serialize>(
    name: &str,
    report: &R,
    markdown: String,
    plots: impl FnOnce(&std::path::Path) -> Result<Vec<(String, PathBuf)>>,
) -> Result<()> {
    println!("\n{markdown}");
    let dir = workspace_root().join("target/bench-report");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(report)?).with_context(|| format!("writing {}", path.display()))?;
    println!("report written to {}", path.display());
    for (caption, png) in plots(&dir)? {
        println!("plot: {caption}: {}", png.display());
    }
    Ok(())
}

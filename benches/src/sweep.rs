//! `walship-bench sweep`: are walship's defaults good on this machine?
//!
//! ```text
//! cargo run --release -p walship-bench -- sweep [--bytes 512MiB]
//!     [--frames 16KiB,64KiB,128KiB,256KiB,1MiB] [--windows 4MiB,16MiB,64MiB,256MiB]
//!     [--flush-bytes 1MiB,8MiB,64MiB,256MiB] [--rounds 2] [--dir /dev/shm] [--disk-dir DIR]
//! ```
//!
//! Three one-parameter sweeps of the in-process walship sender and receiver
//! of `ship` (real QUIC + mTLS on 127.0.0.1, the same pre-written raw WAL on
//! tmpfs), each point timed from sender start until everything is flushed
//! on the receiver:
//!
//! | sweep | varies | mirror | the others at |
//! |---|---|---|---|
//! | frame | the sender's `max_frame` | tmpfs | the defaults |
//! | window | the sender's `max_inflight` | tmpfs | the defaults |
//! | flush | the receiver's `FlushPolicy::max_unflushed` | disk (real fdatasync) | the defaults |
//!
//! The current default of each parameter is always measured, added to the
//! list when missing. Every round runs every point of the three sweeps, in
//! an order rotated by one each round so that drift on a shared machine does
//! not always hit the same point; each point reports the median of its
//! rounds. The flush sweep also reports the receiver's fdatasync count and
//! latency (its `fsync` histogram), because a larger batch that wins MB/s
//! also makes acks, and so flush lag, wait longer.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use walship_agent::store_thread::FlushPolicy;

use crate::data::{self, ScratchDir, existing_ancestor, require_space};
use crate::ship::{self, FsyncStats, ShipParams, ShipResult};

/// The sweeps `all` runs: the defaults below.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// Bytes of WAL shipped per point (KiB/MiB/GiB or KB/MB/GB suffixes).
    #[arg(long, default_value = "512MiB", value_parser = walship::cli::parse_size)]
    pub bytes: u64,
    /// Sender frame sizes (`max_frame`) to measure, mirror on tmpfs.
    #[arg(long, value_delimiter = ',', default_value = "16KiB,64KiB,128KiB,256KiB,1MiB", value_parser = walship::cli::parse_size)]
    pub frames: Vec<u64>,
    /// Sender in-flight windows (`max_inflight`) to measure, mirror on tmpfs.
    #[arg(long, value_delimiter = ',', default_value = "4MiB,16MiB,64MiB,256MiB", value_parser = walship::cli::parse_size)]
    pub windows: Vec<u64>,
    /// Receiver fsync batch sizes (`FlushPolicy::max_unflushed`) to measure, mirror on disk.
    #[arg(long, value_delimiter = ',', default_value = "1MiB,8MiB,64MiB,256MiB", value_parser = walship::cli::parse_size)]
    pub flush_bytes: Vec<u64>,
    /// Rounds over all points; each point reports its median.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Directory on tmpfs for the source and the tmpfs mirrors.
    #[arg(long, default_value = "/dev/shm")]
    pub dir: PathBuf,
    /// Directory on the disk for the flush sweep's mirror (default: target/bench-tmp).
    #[arg(long)]
    pub disk_dir: Option<PathBuf>,
    /// Give up on one point after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

/// The defaults under test, from the library and from `walship send` /
/// `walship receive`'s declared flag defaults.
#[derive(Debug, Clone, Serialize)]
pub struct Defaults {
    /// `SenderOptions::new` (`DEFAULT_MAX_FRAME`).
    pub frame: u64,
    /// `SenderOptions::new`.
    pub window: u64,
    /// `FlushPolicy::default()`.
    pub flush_bytes: u64,
    pub flush_interval_ms: f64,
    /// `walship send --max-frame`, `--max-inflight`; `walship receive --flush-bytes`
    /// (`None` when the flag's default could not be read).
    pub cli_frame: Option<u64>,
    pub cli_window: Option<u64>,
    pub cli_flush_bytes: Option<u64>,
}

/// One measured value of a swept parameter.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// The parameter's value in bytes.
    pub value: u64,
    /// Median over the rounds, decimal MB/s.
    pub mb_per_s: f64,
    /// Every round's MB/s, in round order.
    pub rounds_mb_per_s: Vec<f64>,
    /// Data frames the sender sent in the median run.
    pub frames_sent: u64,
    /// The receiver's fdatasyncs in the median run.
    pub fsync: FsyncStats,
    /// Bytes shipped per fdatasync in the median run (the batch actually reached).
    pub bytes_per_fsync: f64,
}

/// One parameter's sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    /// `max_frame`, `max_inflight` or `max_unflushed`.
    pub param: String,
    /// `tmpfs` or `disk`.
    pub mirror: String,
    pub points: Vec<Point>,
    pub default_value: u64,
    /// The point with the highest median MB/s.
    pub best_value: u64,
    pub best_mb_per_s: f64,
    pub default_mb_per_s: f64,
    /// default / best.
    pub default_ratio: f64,
    /// default ≥ 0.9 × best.
    pub default_within_10pct: bool,
}

/// Everything one `sweep` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub bytes: u64,
    pub rounds: usize,
    pub tmpfs_dir: String,
    pub disk_dir: String,
    pub cpus: usize,
    pub defaults: Defaults,
    pub frame: Sweep,
    pub window: Sweep,
    pub flush: Sweep,
}

/// The declared default of `walship <sub> --<flag>`, as bytes.
fn cli_default(sub: &str, flag: &str) -> Option<u64> {
    use clap::CommandFactory;
    let cmd = walship::cli::Cli::command();
    let arg = cmd.find_subcommand(sub)?.get_arguments().find(|a| a.get_long() == Some(flag))?;
    let v = arg.get_default_values().first()?.to_str()?.to_owned();
    walship::cli::parse_size(&v).ok()
}

/// The list with the default added, sorted, without duplicates.
fn with_default(values: &[u64], default: u64) -> Vec<u64> {
    let mut v: Vec<u64> = values.iter().copied().chain([default]).collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Frame,
    Window,
    Flush,
}

/// Measures every point of the three sweeps `a.rounds` times.
pub async fn run(a: &SweepArgs) -> Result<SweepReport> {
    if a.bytes == 0 {
        bail!("--bytes must be more than 0");
    }
    if a.frames.is_empty() || a.windows.is_empty() || a.flush_bytes.is_empty() {
        bail!("--frames, --windows and --flush-bytes each need at least one value");
    }
    let flush_default = FlushPolicy::default();
    let pid = std::process::id();
    let shm_dir = a.dir.join(format!("walship-bench-sweep-{pid}"));
    let disk_base = a.disk_dir.clone().unwrap_or_else(|| crate::workspace_root().join("target/bench-tmp"));
    let disk_dir = disk_base.join(format!("walship-bench-sweep-{pid}"));
    // The source plus one tmpfs mirror at a time; one disk mirror at a time.
    let slack = 64 << 20;
    require_space(&existing_ancestor(&shm_dir), 2 * a.bytes + slack, "the source and a tmpfs mirror")?;
    require_space(&existing_ancestor(&disk_dir), a.bytes + slack, "the on-disk mirror")?;

    let root = ScratchDir::create(shm_dir)?;
    let disk_root = ScratchDir::create(disk_dir)?;
    let source = root.path().join("wal");
    std::fs::create_dir(&source).with_context(|| format!("creating {}", source.display()))?;
    let certs = walship_net::certs::ephemeral(&root.path().join("certs")).context("creating certificates")?;
    let lib = walship_agent::SenderOptions::new(source.clone(), "walship-bench", Vec::new(), certs.client());
    let defaults = Defaults {
        frame: u64::from(lib.max_frame),
        window: lib.max_inflight,
        flush_bytes: flush_default.max_unflushed,
        flush_interval_ms: flush_default.interval.as_secs_f64() * 1e3,
        cli_frame: cli_default("send", "max-frame"),
        cli_window: cli_default("send", "max-inflight"),
        cli_flush_bytes: cli_default("receive", "flush-bytes"),
    };
    let frames = with_default(&a.frames, defaults.frame);
    let windows = with_default(&a.windows, defaults.window);
    let flushes = with_default(&a.flush_bytes, defaults.flush_bytes);
    for &f in &frames {
        if f == 0 || f > u64::from(walship_core::frame::DEFAULT_MAX_PAYLOAD) {
            bail!("--frames: {f} bytes is outside 1 byte ..= the receiver's 4 MiB frame limit");
        }
    }
    if let Some(w) = windows.iter().find(|w| **w < defaults.frame) {
        bail!("--windows: {w} bytes is smaller than one default frame ({} bytes)", defaults.frame);
    }
    if flushes.contains(&0) {
        bail!("--flush-bytes: 0 is not a batch size");
    }

    let t = std::time::Instant::now();
    data::write_source(&source, a.bytes)?;
    println!(
        "walship-bench sweep: {:.2} GiB of raw WAL written to {} in {:.1} s; {} points × {} rounds",
        a.bytes as f64 / (1u64 << 30) as f64,
        source.display(),
        t.elapsed().as_secs_f64(),
        frames.len() + windows.len() + flushes.len(),
        a.rounds.max(1)
    );

    let schedule: Vec<(Kind, u64)> = frames
        .iter()
        .map(|v| (Kind::Frame, *v))
        .chain(windows.iter().map(|v| (Kind::Window, *v)))
        .chain(flushes.iter().map(|v| (Kind::Flush, *v)))
        .collect();
    let mut results: Vec<Vec<ShipResult>> = vec![Vec::new(); schedule.len()];
    let timeout = Duration::from_secs(a.timeout_secs);
    for round in 0..a.rounds.max(1) {
        println!("round {}", round + 1);
        for k in 0..schedule.len() {
            let i = (k + round) % schedule.len();
            let (kind, value) = schedule[i];
            let mut params = ShipParams {
                source: &source,
                certs: &certs,
                total: a.bytes,
                max_frame: u32::try_from(defaults.frame).context("default frame size")?,
                max_inflight: defaults.window,
                timeout,
                verify: false,
                flush: flush_default,
            };
            let (label, mirror_root) = match kind {
                Kind::Frame => {
                    params.max_frame = u32::try_from(value).context("--frames value too large")?;
                    ("frame", root.path())
                }
                Kind::Window => {
                    params.max_inflight = value;
                    ("window", root.path())
                }
                Kind::Flush => {
                    params.flush.max_unflushed = value;
                    ("flush batch", disk_root.path())
                }
            };
            let mirror = ScratchDir::create(mirror_root.join("mirror"))?;
            let r = ship::run(&params, &mirror.path().join("m"))
                .await
                .with_context(|| format!("sweep point {label} = {}", size(value)))?;
            println!(
                "  {label:<12} {:>8}  {:>8.1} MB/s  {} fsyncs (mean {:.2} ms)",
                size(value),
                r.mb_per_s,
                r.fsync.count,
                r.fsync.mean_ms
            );
            results[i].push(r);
        }
    }

    let sweeps = [Kind::Frame, Kind::Window, Kind::Flush].map(|kind| {
        let points: Vec<Point> = schedule
            .iter()
            .zip(&results)
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, value), runs)| point(*value, runs))
            .collect();
        let (param, mirror, default_value) = match kind {
            Kind::Frame => ("max_frame", "tmpfs", defaults.frame),
            Kind::Window => ("max_inflight", "tmpfs", defaults.window),
            Kind::Flush => ("max_unflushed", "disk", defaults.flush_bytes),
        };
        summarise(param, mirror, default_value, points)
    });
    let [frame, window, flush] = sweeps;
    Ok(SweepReport {
        bytes: a.bytes,
        rounds: a.rounds.max(1),
        tmpfs_dir: root.path().display().to_string(),
        disk_dir: disk_root.path().display().to_string(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        defaults,
        frame,
        window,
        flush,
    })
}

/// The median run of a point (the lower middle one for an even count).
fn point(value: u64, runs: &[ShipResult]) -> Point {
    let mut sorted: Vec<&ShipResult> = runs.iter().collect();
    sorted.sort_by(|x, y| x.mb_per_s.total_cmp(&y.mb_per_s));
    let mid = sorted.get(sorted.len().saturating_sub(1) / 2).copied();
    let fsync = mid.map(|r| r.fsync.clone()).unwrap_or_default();
    Point {
        value,
        mb_per_s: mid.map_or(f64::NAN, |r| r.mb_per_s),
        rounds_mb_per_s: runs.iter().map(|r| r.mb_per_s).collect(),
        frames_sent: mid.map_or(0, |r| r.frames_sent),
        bytes_per_fsync: mid.map_or(f64::NAN, |r| r.bytes as f64 / fsync.count.max(1) as f64),
        fsync,
    }
}

fn summarise(param: &str, mirror: &str, default_value: u64, points: Vec<Point>) -> Sweep {
    let best = points.iter().max_by(|x, y| x.mb_per_s.total_cmp(&y.mb_per_s));
    let (best_value, best_mb_per_s) = best.map_or((0, f64::NAN), |p| (p.value, p.mb_per_s));
    let default_mb_per_s = points.iter().find(|p| p.value == default_value).map_or(f64::NAN, |p| p.mb_per_s);
    let default_ratio = default_mb_per_s / best_mb_per_s;
    Sweep {
        param: param.into(),
        mirror: mirror.into(),
        points,
        default_value,
        best_value,
        best_mb_per_s,
        default_mb_per_s,
        default_ratio,
        default_within_10pct: default_ratio >= 0.9,
    }
}

/// Bytes as KiB or MiB, whichever is whole.
fn size(v: u64) -> String {
    if v >= 1 << 20 && v.is_multiple_of(1 << 20) {
        format!("{} MiB", v >> 20)
    } else if v.is_multiple_of(1024) {
        format!("{} KiB", v >> 10)
    } else {
        format!("{v} B")
    }
}

impl Sweep {
    /// The verdict sentence for this sweep.
    fn verdict(&self, what: &str) -> String {
        format!(
            "**{what}**: best {} at {:.0} MB/s; the default {} reaches {:.0} MB/s, {:.0} % of the best: {}.",
            size(self.best_value),
            self.best_mb_per_s,
            size(self.default_value),
            self.default_mb_per_s,
            self.default_ratio * 100.0,
            if self.best_value == self.default_value {
                "the default is the best point".to_string()
            } else if self.default_within_10pct {
                "within 10 % of the best".to_string()
            } else {
                format!("**not** within 10 % of the best (consider {})", size(self.best_value))
            }
        )
    }

    /// x = log2 of the value in KiB, so that doublings are evenly spaced.
    fn series(&self) -> Vec<crate::plot::Series> {
        let pts = self.points.iter().map(|p| (((p.value as f64) / 1024.0).log2(), p.mb_per_s)).collect();
        vec![crate::plot::Series { name: format!("walship, mirror on {} (median)", self.mirror), points: pts }]
    }

    /// Axis label naming what the log2 ticks mean.
    fn x_label(&self, what: &str) -> String {
        let ticks: Vec<String> = self
            .points
            .iter()
            .map(|p| format!("{:.0} = {}", ((p.value as f64) / 1024.0).log2(), size(p.value)))
            .collect();
        format!("{what}, log2 KiB ({})", ticks.join(", "))
    }
}

impl SweepReport {
    /// The markdown section.
    pub fn markdown(&self) -> String {
        let d = &self.defaults;
        let mut s = String::from("### Tuning sweep: frame size, in-flight window, fsync batch\n\n");
        s += &format!(
            "walship's sender and receiver in one process (QUIC + mTLS on 127.0.0.1, as in `ship`) ship {:.0} MiB \
             of pre-written raw WAL (16 MiB segments on tmpfs) per point, timed from sender start until the sender \
             sees every byte flushed on the receiver. One parameter varies per sweep, the others stay at the \
             defaults (frame {}, window {}, fsync batch {} / every {:.0} ms). Frame and window: mirror on tmpfs; \
             fsync batch: mirror on disk ({}), real fdatasync. {} round(s) over all points, order rotated each \
             round; MB/s are decimal (10^6 B/s) medians over the rounds. {} CPUs, shared with other work, so \
             differences under ~10 % are within noise.\n\n",
            self.bytes as f64 / (1u64 << 20) as f64,
            size(d.frame),
            size(d.window),
            size(d.flush_bytes),
            d.flush_interval_ms,
            self.disk_dir,
            self.rounds,
            self.cpus,
        );
        let cli = [
            ("walship send --max-frame", d.cli_frame, d.frame),
            ("walship send --max-inflight", d.cli_window, d.window),
            ("walship receive --flush-bytes", d.cli_flush_bytes, d.flush_bytes),
        ];
        for (flag, cli, lib) in cli {
            match cli {
                Some(c) if c != lib => {
                    s += &format!("Note: `{flag}` defaults to {}, the library to {}.\n\n", size(c), size(lib))
                }
                Some(_) => {}
                None => s += &format!("Note: the default of `{flag}` could not be read.\n\n"),
            }
        }
        s += &self.frame.verdict("Frame size");
        s += "\n\n";
        s += &self.window.verdict("In-flight window");
        s += "\n\n";
        s += &self.flush.verdict("fsync batch (`max_unflushed`)");
        s += "\n\n";
        for (title, sw) in
            [("Frame size (`max_frame`)", &self.frame), ("In-flight window (`max_inflight`)", &self.window)]
        {
            s += &format!("| {title}, tmpfs | MB/s (median) | every round, MB/s | data frames | vs best |\n");
            s += "|---|---:|---|---:|---:|\n";
            for p in &sw.points {
                s += &format!(
                    "| {}{} | {:.0} | {} | {} | {:.0} % |\n",
                    size(p.value),
                    if p.value == sw.default_value { " (default)" } else { "" },
                    p.mb_per_s,
                    rounds(&p.rounds_mb_per_s),
                    p.frames_sent,
                    p.mb_per_s / sw.best_mb_per_s * 100.0
                );
            }
            s += "\n";
        }
        s += "| fsync batch, disk | MB/s (median) | every round, MB/s | fdatasyncs | MiB per fdatasync | mean fdatasync ms \
              | p50 ≤ ms | p99 ≤ ms | vs best |\n";
        s += "|---|---:|---|---:|---:|---:|---:|---:|---:|\n";
        for p in &self.flush.points {
            s += &format!(
                "| {}{} | {:.0} | {} | {} | {:.1} | {:.2} | {} | {} | {:.0} % |\n",
                size(p.value),
                if p.value == self.flush.default_value { " (default)" } else { "" },
                p.mb_per_s,
                rounds(&p.rounds_mb_per_s),
                p.fsync.count,
                p.bytes_per_fsync / (1u64 << 20) as f64,
                p.fsync.mean_ms,
                p.fsync.p50_upper_ms,
                p.fsync.p99_upper_ms,
                p.mb_per_s / self.flush.best_mb_per_s * 100.0
            );
        }
        s += &format!(
            "\nfdatasync figures are the receiver's `fsync` histogram for the median run (data plus the \
             durable-position record; p50/p99 are histogram bucket upper bounds). The receiver also syncs when its \
             queue drains, every {:.0} ms while bytes are unflushed, and at every segment end (16 MiB here), so a \
             `max_unflushed` above what those triggers leave cannot take effect: the MiB per fdatasync column is \
             the batch actually reached. Larger batches delay the flush ack by up to one batch's fdatasync, which \
             is flush lag a semi-sync commit waits for.\n",
            d.flush_interval_ms
        );
        s
    }

    /// MB/s against frame size, window and fsync batch.
    pub fn plots(&self, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        let charts = [
            ("sweep_frame.png", "walship MB/s vs frame size (mirror on tmpfs)", &self.frame, "frame size"),
            (
                "sweep_window.png",
                "walship MB/s vs in-flight window (mirror on tmpfs)",
                &self.window,
                "in-flight window",
            ),
            ("sweep_flush.png", "walship MB/s vs fsync batch (mirror on disk)", &self.flush, "max_unflushed"),
        ];
        for (file, title, sw, what) in charts {
            let path = dir.join(file);
            crate::plot::line_chart(&path, title, &sw.x_label(what), "MB/s (median)", &sw.series())
                .with_context(|| format!("drawing {}", path.display()))?;
            out.push((title.to_string(), path));
        }
        Ok(out)
    }
}

fn rounds(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ")
}

//! `walship-bench backlog`: a receiver that was down catches up, with the
//! real `walship send` and `walship receive` processes.
//!
//! ```text
//! cargo run --release -p walship-bench -- backlog [--bytes 4GiB] [--dir /dev/shm]
//!     [--mirror-dir DIR] [--write-rate MB/s] [--walship-bin PATH]
//! ```
//!
//! Per backlog size (`--bytes`, then a quarter of it):
//!
//! 1. a UDP port is reserved for the receiver and nothing answers on it;
//!    `walship send` starts on an empty raw WAL directory (tmpfs) aimed at it;
//! 2. the backlog is written into that directory, 16 MiB segments appended
//!    1 MiB at a time (at `--write-rate` if given) while the sender tails it;
//! 3. once the sender has seen the whole backlog, `walship receive` starts on
//!    the reserved port with its mirror on the disk (`--mirror-dir`), and the
//!    clock runs until the sender's `/v1/lag` shows the receiver flushed the
//!    source end.
//!
//! From the outside, every 100 ms: the sender's `/v1/lag` (bytes and seconds
//! behind at level flush: the RPO exposure curve) and `VmRSS` of both
//! processes. At receiver start and at caught-up: CPU seconds of both from
//! `/proc/PID/stat`; at caught-up `VmHWM`. When `perf` can attach, system
//! calls of both during the catch-up (`raw_syscalls:sys_enter`). The mirror
//! is compared with the source byte for byte afterwards (untimed).
//!
//! Then the larger backlog once more through bare quinn in this process
//! ([`crate::bare`]), with each end's thread CPU time: the transport's
//! own CPU cost per GB, both ends together.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use walship_net::CertPaths;

use crate::data::{self, ScratchDir, existing_ancestor, require_space};
use crate::plot::{Series, line_chart};
use crate::procs::{ProcMem, RssSampler, SyscallCounter, Walship, agent, cpu_secs, get_lag, signed_secs};

const MIB: f64 = (1u64 << 20) as f64;

#[derive(Debug, Clone, clap::Args)]
pub struct BacklogArgs {
    /// Larger backlog (KiB/MiB/GiB or KB/MB/GB); a quarter of it runs too.
    #[arg(long, default_value = "4GiB", value_parser = walship::cli::parse_size)]
    pub bytes: u64,
    /// Directory on tmpfs for the source WAL (a fresh `walship-bench-backlog-PID` inside it is removed afterwards).
    #[arg(long, default_value = "/dev/shm")]
    pub dir: PathBuf,
    /// Directory for the receiver's mirror, on the disk [default: target/bench-tmp].
    #[arg(long)]
    pub mirror_dir: Option<PathBuf>,
    /// Write the backlog at this rate, MB/s, while the receiver is down [default: as fast as possible].
    #[arg(long)]
    pub write_rate: Option<f64>,
    /// The walship binary [default: built by cargo with this program's profile].
    #[arg(long)]
    pub walship_bin: Option<PathBuf>,
    /// Give up on a catch-up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

/// One sample of the sender's `/v1/lag`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LagPoint {
    /// Seconds since the receiver started (negative: it was down).
    pub t: f64,
    /// Source end minus the receiver's flushed position, MiB.
    pub behind_mib: f64,
    /// Age of the oldest byte not flushed on the receiver, seconds.
    pub behind_secs: f64,
}

/// One catch-up.
#[derive(Debug, Clone, Serialize)]
pub struct CatchUp {
    pub bytes: u64,
    /// Writing the backlog while the receiver was down.
    pub write_secs: f64,
    pub write_mb_per_s: f64,
    /// Behind at receiver start, from `/v1/lag`.
    pub behind_at_start_bytes: u64,
    pub behind_at_start_secs: f64,
    /// Receiver start until the sender's session streamed (includes the
    /// sender's reconnect backoff and QUIC handshake retries).
    pub connect_secs: f64,
    /// Receiver start until flushed == source end.
    pub catch_up_secs: f64,
    /// `bytes / catch_up_secs`.
    pub catch_up_mb_per_s: f64,
    /// `bytes / (catch_up_secs - connect_secs)`: the streaming rate.
    pub streaming_mb_per_s: f64,
    /// Sender CPU while it tailed the growing backlog with no receiver.
    pub sender_cpu_secs_while_down: f64,
    /// CPU seconds from receiver start to caught-up.
    pub sender_cpu_secs: f64,
    pub receiver_cpu_secs: f64,
    /// CPU seconds per GB (10^9 bytes) shipped.
    pub sender_cpu_s_per_gb: f64,
    pub receiver_cpu_s_per_gb: f64,
    /// `VmHWM` at caught-up (the sender's covers its whole life, the backlog phase included).
    pub sender_peak_rss_bytes: u64,
    pub receiver_peak_rss_bytes: u64,
    /// The largest `RssAnon` (heap: what would grow with a backlog held in
    /// memory) and `RssShmem` (mapped tmpfs source pages) sampled.
    pub sender_peak_anon_bytes: u64,
    pub sender_peak_shmem_bytes: u64,
    pub receiver_peak_anon_bytes: u64,
    /// System calls during the catch-up per MB shipped (`perf stat`), or why not measured.
    pub sender_syscalls_per_mb: Result<f64, String>,
    pub receiver_syscalls_per_mb: Result<f64, String>,
    /// The mirror compared with the source byte for byte.
    pub verified: bool,
    pub mirror_bytes: u64,
    pub lag: Vec<LagPoint>,
    /// (seconds since receiver start, VmRSS MiB).
    pub sender_rss: Vec<(f64, f64)>,
    pub receiver_rss: Vec<(f64, f64)>,
}

/// The same bytes over bare quinn in this process.
#[derive(Debug, Clone, Serialize)]
pub struct BareCpu {
    pub bytes: u64,
    pub secs: f64,
    pub mb_per_s: f64,
    /// Both ends' threads together.
    pub cpu_s_per_gb: f64,
    /// The sending end's thread alone (reads, quinn, TLS, UDP).
    pub sender_cpu_s_per_gb: f64,
    /// The receiving end's thread alone.
    pub receiver_cpu_s_per_gb: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BacklogReport {
    pub source_dir: PathBuf,
    pub mirror_dir: PathBuf,
    pub write_rate_mb_per_s: Option<f64>,
    pub cpus: usize,
    /// Larger backlog first.
    pub runs: Vec<CatchUp>,
    /// Sender peak RSS (`VmHWM`), larger backlog / smaller backlog.
    pub sender_rss_ratio: f64,
    /// The same for the sender's sampled peak `RssAnon`.
    pub sender_anon_ratio: f64,
    pub bare: Option<BareCpu>,
    /// Sender CPU/GB over bare quinn's sending end's CPU/GB.
    pub sender_vs_bare: f64,
    /// Sender + receiver CPU/GB over bare quinn's (both ends) CPU/GB.
    pub walship_vs_bare: f64,
}

pub async fn run(a: &BacklogArgs) -> Result<BacklogReport> {
    if a.bytes < 4 {
        bail!("--bytes must be at least 4");
    }
    if a.write_rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("--write-rate must be more than 0");
    }
    let walship = crate::procs::walship_binary(a.walship_bin.clone())?;
    let pid = std::process::id();
    let shm_dir = a.dir.join(format!("walship-bench-backlog-{pid}"));
    let mirror_base = a
        .mirror_dir
        .clone()
        .unwrap_or_else(|| crate::workspace_root().join("target/bench-tmp"))
        .join(format!("walship-bench-backlog-{pid}"));
    // One run at a time, each removing its source and mirror.
    let slack = 64 << 20;
    require_space(&existing_ancestor(&shm_dir), a.bytes + slack, "the backlog source")?;
    require_space(&existing_ancestor(&mirror_base), a.bytes + slack, "the receiver's mirror")?;
    let root = ScratchDir::create(shm_dir)?;
    let mirrors = ScratchDir::create(mirror_base)?;
    let certs = walship_net::certs::ephemeral(&root.path().join("certs")).context("creating certificates")?;
    let timeout = Duration::from_secs(a.timeout_secs);

    let mut runs = Vec::new();
    let mut bare = None;
    for (i, bytes) in [a.bytes, a.bytes / 4].into_iter().enumerate() {
        let dir = ScratchDir::create(root.path().join(format!("run-{i}")))?;
        let source = dir.path().join("wal");
        std::fs::create_dir(&source)?;
        let mirror = ScratchDir::create(mirrors.path().join(format!("run-{i}")))?;
        println!("backlog: {:.2} GiB, receiver down while it is written ...", bytes as f64 / (1u64 << 30) as f64);
        let p = Params {
            walship: walship.clone(),
            certs: certs.clone(),
            source: source.clone(),
            mirror: mirror.path().join("m"),
            logs: dir.path().to_path_buf(),
            bytes,
            write_rate: a.write_rate,
            timeout,
        };
        let r = tokio::task::spawn_blocking(move || catch_up(&p))
            .await
            .context("catch-up task")?
            .with_context(|| format!("catch-up of {bytes} bytes"))?;
        println!(
            "  caught up in {:.2} s ({:.0} MB/s; connect {:.2} s), sender {:.2} CPU s/GB, receiver {:.2} CPU s/GB, \
             peak RSS sender {:.1} MiB, receiver {:.1} MiB, verified {}",
            r.catch_up_secs,
            r.catch_up_mb_per_s,
            r.connect_secs,
            r.sender_cpu_s_per_gb,
            r.receiver_cpu_s_per_gb,
            r.sender_peak_rss_bytes as f64 / MIB,
            r.receiver_peak_rss_bytes as f64 / MIB,
            r.verified
        );
        runs.push(r);
        if i == 0 {
            drop(mirror);
            // The transport's CPU floor, on the same source bytes.
            let b = crate::bare::run(&source, &certs, bytes, 128 << 10, timeout).await.context("bare quinn")?;
            let r = BareCpu {
                bytes,
                secs: b.secs,
                mb_per_s: b.mb_per_s,
                cpu_s_per_gb: b.sender_cpu_s_per_gb() + b.receiver_cpu_s_per_gb(),
                sender_cpu_s_per_gb: b.sender_cpu_s_per_gb(),
                receiver_cpu_s_per_gb: b.receiver_cpu_s_per_gb(),
            };
            println!(
                "  bare quinn: {:.0} MB/s, CPU s/GB: sending end {:.2}, receiving end {:.2}",
                r.mb_per_s, r.sender_cpu_s_per_gb, r.receiver_cpu_s_per_gb
            );
            bare = Some(r);
        }
    }
    let ratio = |f: fn(&CatchUp) -> f64, g: fn(&BareCpu) -> f64| match (&runs[..], &bare) {
        ([full, ..], Some(b)) => f(full) / g(b),
        _ => f64::NAN,
    };
    Ok(BacklogReport {
        source_dir: a.dir.clone(),
        mirror_dir: mirrors.path().parent().map(Path::to_path_buf).unwrap_or_default(),
        write_rate_mb_per_s: a.write_rate,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        sender_rss_ratio: runs[0].sender_peak_rss_bytes as f64 / runs[1].sender_peak_rss_bytes as f64,
        sender_anon_ratio: runs[0].sender_peak_anon_bytes as f64 / runs[1].sender_peak_anon_bytes as f64,
        sender_vs_bare: ratio(|r| r.sender_cpu_s_per_gb, |b| b.sender_cpu_s_per_gb),
        walship_vs_bare: ratio(|r| r.sender_cpu_s_per_gb + r.receiver_cpu_s_per_gb, |b| b.cpu_s_per_gb),
        runs,
        bare,
    })
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

struct Params {
    walship: PathBuf,
    certs: CertPaths,
    source: PathBuf,
    mirror: PathBuf,
    logs: PathBuf,
    bytes: u64,
    write_rate: Option<f64>,
    timeout: Duration,
}

/// The first receiver of a sender's `/v1/lag`.
struct Lag {
    end: u64,
    state: String,
    flushed: u64,
    behind_bytes: u64,
    behind_secs: f64,
}

fn lag(agent: &ureq::Agent, admin: &str) -> Result<Lag> {
    let v = get_lag(agent, admin)?;
    let r = &v["receivers"][0];
    let u = |x: &serde_json::Value, what: &str| x.as_u64().with_context(|| format!("no {what} in /v1/lag: {v}"));
    Ok(Lag {
        end: u(&v["source"]["end_pos"], "source.end_pos")?,
        state: r["state"].as_str().unwrap_or("").to_string(),
        flushed: u(&r["flush_pos"], "receivers[0].flush_pos")?,
        behind_bytes: u(&r["lag_bytes"], "receivers[0].lag_bytes")?,
        behind_secs: r["flush_lag_seconds"].as_f64().context("no receivers[0].flush_lag_seconds in /v1/lag")?,
    })
}

/// Samples the sender's lag every 100 ms until `stop` is set; points are
/// seconds since `origin`.
fn sample_lag(admin: &str, origin: Instant, stop: &std::sync::atomic::AtomicBool) -> Vec<(f64, Lag)> {
    let agent = agent();
    let mut out = Vec::new();
    let mut next = Instant::now();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok(l) = lag(&agent, admin) {
            out.push((signed_secs(Instant::now(), origin), l));
        }
        next += Duration::from_millis(100);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    out
}

fn catch_up(p: &Params) -> Result<CatchUp> {
    let agent = agent();
    // Reserved so that no one else takes the port; bound but never read,
    // the sender's handshakes go unanswered.
    let reserved = std::net::UdpSocket::bind("127.0.0.1:0").context("reserving a UDP port for the receiver")?;
    let target = reserved.local_addr()?.to_string();
    let sender_start = Instant::now();
    let mut sender = Walship::send(
        &p.walship,
        &p.source,
        std::slice::from_ref(&target),
        &p.certs,
        "200ms",
        &p.logs.join("send.log"),
    )?;
    let sender_rss = RssSampler::start(sender.pid(), sender_start);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| -> Result<CatchUp> {
        let admin = sender.admin.clone();
        let stop = &stop;
        let sampler = s.spawn(move || sample_lag(&admin, sender_start, stop));
        // Stop the sampler whichever way this returns.
        struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let guard = StopOnDrop(stop);

        let write_secs = data::write_source_paced(&p.source, p.bytes, p.write_rate)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let at_start = loop {
            let l = lag(&agent, &sender.admin)?;
            if l.end >= p.bytes {
                break l;
            }
            if Instant::now() > deadline {
                bail!("the sender saw {} of {} bytes 30 s after they were written", l.end, p.bytes);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let sender_syscalls = SyscallCounter::start(sender.pid(), &p.logs, "sender");

        let sender_cpu0 = cpu_secs(sender.pid())?;
        drop(reserved);
        let t0 = Instant::now();
        let (mut receiver, _) =
            Walship::receive(&p.walship, &target, &p.mirror, "bench-receiver", &p.certs, &p.logs.join("recv.log"))?;
        let receiver_rss = RssSampler::start(receiver.pid(), t0);
        let receiver_syscalls = SyscallCounter::start(receiver.pid(), &p.logs, "receiver");
        let mut connect = None;
        let caught_up = loop {
            let l = lag(&agent, &sender.admin)?;
            let now = Instant::now();
            if connect.is_none() && l.state == "streaming" {
                connect = Some(now);
            }
            if l.flushed >= p.bytes {
                break now;
            }
            if now > t0 + p.timeout {
                bail!(
                    "timed out after {:?}: flushed {} of {} bytes (state {})",
                    p.timeout,
                    l.flushed,
                    p.bytes,
                    l.state
                );
            }
            if !receiver.child.alive() {
                bail!("the receiver exited; log:\n{}", crate::procs::tail(&receiver.child.log_text(), 30));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let sender_cpu = cpu_secs(sender.pid())? - sender_cpu0;
        let receiver_cpu = cpu_secs(receiver.pid())?;
        let (sender_mem, receiver_mem) = (ProcMem::of(sender.pid())?, ProcMem::of(receiver.pid())?);
        let per_mb = |c: std::result::Result<SyscallCounter, String>| {
            c.and_then(SyscallCounter::finish).map(|n| n as f64 / (p.bytes as f64 / 1e6))
        };
        let (sender_syscalls, receiver_syscalls) = (per_mb(sender_syscalls), per_mb(receiver_syscalls));
        drop(guard);
        let lag_points = sampler.join().map_err(|_| anyhow::anyhow!("the lag sampler panicked"))?;
        let sender_rss = sender_rss.stop();
        let receiver_rss = receiver_rss.stop();
        sender.child.stop("TERM").context("stopping the sender")?;
        receiver.child.stop("TERM").context("stopping the receiver")?;

        let report = walship_store::verify::verify(&p.source, &p.mirror).context("verifying the mirror")?;
        let verified = report.is_ok() && report.durable_pos.get() == p.bytes;
        if !verified {
            eprintln!("verify: the mirror differs from the source:\n{report}");
        }
        let shift = signed_secs(t0, sender_start);
        let catch_up_secs = caught_up.duration_since(t0).as_secs_f64();
        let connect_secs = connect.map_or(f64::NAN, |c| c.duration_since(t0).as_secs_f64());
        Ok(CatchUp {
            bytes: p.bytes,
            write_secs,
            write_mb_per_s: p.bytes as f64 / write_secs / 1e6,
            behind_at_start_bytes: at_start.behind_bytes,
            behind_at_start_secs: at_start.behind_secs,
            connect_secs,
            catch_up_secs,
            catch_up_mb_per_s: p.bytes as f64 / catch_up_secs / 1e6,
            streaming_mb_per_s: p.bytes as f64 / (catch_up_secs - connect_secs) / 1e6,
            sender_cpu_secs_while_down: sender_cpu0,
            sender_cpu_secs: sender_cpu,
            receiver_cpu_secs: receiver_cpu,
            sender_cpu_s_per_gb: sender_cpu / gb(p.bytes),
            receiver_cpu_s_per_gb: receiver_cpu / gb(p.bytes),
            sender_peak_rss_bytes: sender_mem.hwm,
            receiver_peak_rss_bytes: receiver_mem.hwm,
            sender_syscalls_per_mb: sender_syscalls,
            receiver_syscalls_per_mb: receiver_syscalls,
            verified,
            mirror_bytes: report.durable_pos.get(),
            lag: lag_points
                .into_iter()
                .map(|(t, l)| LagPoint {
                    t: t - shift,
                    behind_mib: l.behind_bytes as f64 / MIB,
                    behind_secs: l.behind_secs,
                })
                .collect(),
            sender_peak_anon_bytes: sender_rss.peak.anon,
            sender_peak_shmem_bytes: sender_rss.peak.shmem,
            receiver_peak_anon_bytes: receiver_rss.peak.anon,
            sender_rss: sender_rss.points.into_iter().map(|(t, m)| (t - shift, m)).collect(),
            receiver_rss: receiver_rss.points,
        })
    })
}

impl BacklogReport {
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let _ = writeln!(s, "### Catch-up after a receiver outage, and efficiency\n");
        let _ = writeln!(
            s,
            "The real `walship send` and `walship receive` processes. The sender starts with its receiver down (the \
             receiver's UDP port reserved, nothing answering) and tails a raw WAL directory on tmpfs ({}) while the \
             backlog is appended to it ({}). Once the sender has seen all of it, `walship receive` starts with its \
             mirror on {} and the clock runs until the sender's `/v1/lag` shows the receiver flushed (fdatasync) the \
             source end. CPU seconds come from `/proc/PID/stat` (user + system) at receiver start and at caught-up, \
             peak RSS from `VmHWM`; the mirror is then compared with the source byte for byte. {} CPUs, shared by \
             both processes.\n",
            self.source_dir.display(),
            match self.write_rate_mb_per_s {
                Some(r) => format!("at {r} MB/s"),
                None => "as fast as possible".into(),
            },
            self.mirror_dir.display(),
            self.cpus,
        );
        let _ = writeln!(
            s,
            "| backlog | written in | behind at receiver start | connect | caught up in | catch-up | streaming | verified |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for r in &self.runs {
            let _ = writeln!(
                s,
                "| {:.2} GiB | {:.2} s | {:.0} MiB, {:.2} s | {:.2} s | {:.2} s | {:.0} MB/s | {:.0} MB/s | {} |",
                gib(r.bytes),
                r.write_secs,
                r.behind_at_start_bytes as f64 / MIB,
                r.behind_at_start_secs,
                r.connect_secs,
                r.catch_up_secs,
                r.catch_up_mb_per_s,
                r.streaming_mb_per_s,
                if r.verified { "yes".to_string() } else { format!("NO ({} bytes mirrored)", r.mirror_bytes) }
            );
        }
        let _ = writeln!(
            s,
            "\n*connect*: receiver start until the sender's session streamed (its reconnect backoff, at most 200 ms \
             here, and QUIC handshake retries); *streaming* = backlog / (caught up − connect).\n"
        );
        let _ = writeln!(
            s,
            "| backlog | sender CPU | receiver CPU | sender CPU/GB | receiver CPU/GB | sender peak RSS | receiver peak \
             RSS | sender syscalls/MB | receiver syscalls/MB |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        let sys = |r: &Result<f64, String>| match r {
            Ok(v) => format!("{v:.0}"),
            Err(_) => "not measured".into(),
        };
        for r in &self.runs {
            let _ = writeln!(
                s,
                "| {:.2} GiB | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.1} MiB ({:.1}) | {:.1} MiB ({:.1}) | {} | {} |",
                gib(r.bytes),
                r.sender_cpu_secs,
                r.receiver_cpu_secs,
                r.sender_cpu_s_per_gb,
                r.receiver_cpu_s_per_gb,
                r.sender_peak_rss_bytes as f64 / MIB,
                r.sender_peak_anon_bytes as f64 / MIB,
                r.receiver_peak_rss_bytes as f64 / MIB,
                r.receiver_peak_anon_bytes as f64 / MIB,
                sys(&r.sender_syscalls_per_mb),
                sys(&r.receiver_syscalls_per_mb),
            );
        }
        let why: Vec<&String> = self
            .runs
            .iter()
            .flat_map(|r| [&r.sender_syscalls_per_mb, &r.receiver_syscalls_per_mb])
            .filter_map(|r| r.as_ref().err())
            .collect();
        let _ = writeln!(
            s,
            "\nCPU per GB: 10^9 bytes of backlog shipped, CPU from receiver start to caught-up. Peak RSS: `VmHWM`, in \
             parentheses the largest `RssAnon` sampled (heap, without mapped files). System calls: `perf \
             stat -e raw_syscalls:sys_enter -p PID` over the catch-up (the receiver's attached right after it \
             listened){}. While the receiver was down the sender used {} CPU s tailing the growing backlog.\n",
            why.first().map(|w| format!("; not measured: {w}")).unwrap_or_default(),
            self.runs.iter().map(|r| format!("{:.2}", r.sender_cpu_secs_while_down)).collect::<Vec<_>>().join(" / "),
        );
        if let [full, quarter, ..] = &self.runs[..] {
            let mib = |b: u64| b as f64 / MIB;
            let _ = writeln!(
                s,
                "**Sender memory vs backlog size** ({:.2} GiB vs {:.2} GiB behind, {:.1}× more): peak RSS (`VmHWM`) \
                 {:.1} MiB vs {:.1} MiB, ratio {:.2}; of which heap (`RssAnon`, largest sample) {:.1} MiB vs {:.1} \
                 MiB, ratio {:.2}, and mapped tmpfs source pages (`RssShmem`, largest sample) {:.1} MiB vs {:.1} \
                 MiB. The peak grew by {:.1} MiB for {:.0} MiB more backlog. {}\n",
                gib(full.bytes),
                gib(quarter.bytes),
                full.bytes as f64 / quarter.bytes as f64,
                mib(full.sender_peak_rss_bytes),
                mib(quarter.sender_peak_rss_bytes),
                self.sender_rss_ratio,
                mib(full.sender_peak_anon_bytes),
                mib(quarter.sender_peak_anon_bytes),
                self.sender_anon_ratio,
                mib(full.sender_peak_shmem_bytes),
                mib(quarter.sender_peak_shmem_bytes),
                mib(full.sender_peak_rss_bytes) - mib(quarter.sender_peak_rss_bytes),
                mib(full.bytes - quarter.bytes),
                if self.sender_rss_ratio <= 1.25 {
                    "Within 25 %: the sender's memory is independent of the backlog size."
                } else {
                    "More than 25 % apart (at small sizes the smaller backlog may not fill the sender's in-flight window, \
                     64 MiB by default, so fewer source pages are mapped at once)."
                }
            );
        }
        if let (Some(b), Some(full)) = (&self.bare, self.runs.first()) {
            let target = b.sender_cpu_s_per_gb * 1.2;
            let _ = writeln!(
                s,
                "**CPU against bare quinn**: the same {:.2} GiB through one bare quinn stream ([`bare`], same \
                 endpoints and TLS, discarded on arrival, each end on its own thread) took {:.2} CPU s/GB at the \
                 sending end and {:.2} at the receiving end ({:.0} MB/s). walship's sender used {:.2} CPU s/GB \
                 ({:.2}× bare's sending end; target ≤ 1.2×, {:.2} s/GB: {}), sender + receiver {:.2} CPU s/GB \
                 ({:.2}× bare's two ends; the receiver also checks, writes and fdatasyncs the mirror).\n",
                gib(b.bytes),
                b.sender_cpu_s_per_gb,
                b.receiver_cpu_s_per_gb,
                b.mb_per_s,
                full.sender_cpu_s_per_gb,
                self.sender_vs_bare,
                target,
                if full.sender_cpu_s_per_gb <= target { "met" } else { "not met" },
                full.sender_cpu_s_per_gb + full.receiver_cpu_s_per_gb,
                self.walship_vs_bare,
            );
        }
        s
    }

    pub fn plots(&self, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        let label = |r: &CatchUp| format!("{:.2} GiB backlog", r.bytes as f64 / (1u64 << 30) as f64);
        let mut out = Vec::new();
        let behind: Vec<Series> = self
            .runs
            .iter()
            .map(|r| Series { name: label(r), points: r.lag.iter().map(|p| (p.t, p.behind_mib)).collect() })
            .collect();
        let path = dir.join("backlog_behind_mib.png");
        line_chart(
            &path,
            "RPO exposure: bytes not flushed on the receiver",
            "seconds since receiver start",
            "MiB behind",
            &behind,
        )?;
        out.push(("Catch-up: MiB not yet flushed on the receiver (sender's /v1/lag, every 100 ms)".into(), path));
        let secs: Vec<Series> = self
            .runs
            .iter()
            .map(|r| Series { name: label(r), points: r.lag.iter().map(|p| (p.t, p.behind_secs)).collect() })
            .collect();
        let path = dir.join("backlog_behind_secs.png");
        line_chart(
            &path,
            "RPO exposure: age of the oldest unflushed byte",
            "seconds since receiver start",
            "seconds behind",
            &secs,
        )?;
        out.push(("Catch-up: seconds behind at level flush (sender's /v1/lag, every 100 ms)".into(), path));
        let rss: Vec<Series> = self
            .runs
            .iter()
            .flat_map(|r| {
                [
                    Series { name: format!("sender, {}", label(r)), points: r.sender_rss.clone() },
                    Series { name: format!("receiver, {}", label(r)), points: r.receiver_rss.clone() },
                ]
            })
            .collect();
        let path = dir.join("backlog_rss.png");
        line_chart(
            &path,
            "Resident memory during the backlog and the catch-up",
            "seconds since receiver start",
            "VmRSS (MiB)",
            &rss,
        )?;
        out.push(("Catch-up: VmRSS of the sender and the receiver (every 100 ms)".into(), path));
        Ok(out)
    }
}

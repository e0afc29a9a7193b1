//! Child processes shared by the benchmarks that run the real `walship`
//! binary (`pg`, `backlog`, `fan`): logged children killed on drop, the
//! binary itself, and what `/proc` says about a process (CPU seconds,
//! resident memory), sampled from the outside so the figures are those of
//! the process an operator would run.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use walship_net::CertPaths;

// ---------------------------------------------------------------- processes

/// A child process with its output in a log file; killed when dropped.
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) name: String,
    pub(crate) child: std::process::Child,
    pub(crate) log: PathBuf,
}

impl Child {
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Child> {
        let f = File::options().create(true).append(true).open(log).with_context(|| format!("{}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Child { name: name.into(), child, log: log.to_path_buf() })
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The latest log line containing `needle` that appeared after byte `from`.
    pub(crate) fn wait_log(&mut self, needle: &str, from: usize, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if let Some(line) = text.get(from..).unwrap_or("").lines().find(|l| l.contains(needle)) {
                return Ok(line.to_string());
            }
            if !self.alive() {
                bail!("{} exited before logging {needle:?}; log:\n{}", self.name, tail(&text, 30));
            }
            if Instant::now() > deadline {
                bail!("{} did not log {needle:?} within {timeout:?}; log:\n{}", self.name, tail(&text, 30));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `signal` (TERM, INT) and wait (SIGKILL after 15 s); Err if it exited unsuccessfully.
    pub(crate) fn stop(&mut self, signal: &str) -> Result<()> {
        if let Ok(Some(st)) = self.child.try_wait() {
            bail!("{} had already exited ({st}); log:\n{}", self.name, tail(&self.log_text(), 30));
        }
        let _ = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait()? {
                if !st.success() {
                    bail!("{} exited with {st} after SIG{signal}; log:\n{}", self.name, tail(&self.log_text(), 30));
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{} did not exit within 15 s of SIG{signal}", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `walship` next to this program, built by cargo with this program's profile.
pub(crate) fn walship_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        if !p.exists() {
            bail!("--walship-bin {} does not exist", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locating this program")?;
    let dir = exe.parent().context("this program has no directory")?.to_path_buf();
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_string();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "walship", "--bin", "walship"]).current_dir(crate::workspace_root());
    // `cargo run` gives this program CARGO_PKG_NAME, CARGO_MANIFEST_DIR...;
    // build scripts (ring's) rerun when those change, so passing them on
    // would rebuild ring and everything above it here, and again at the
    // next plain `cargo build`.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || ["CARGO_CRATE_NAME", "CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_RUSTC_CURRENT_DIR", "OUT_DIR"]
                .contains(&k.as_ref())
        {
            cmd.env_remove(&key);
        }
    }
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    println!("building the walship binary ({profile}) ...");
    let st = cmd.status().context("running cargo build -p walship")?;
    if !st.success() {
        bail!("cargo build -p walship failed ({st})");
    }
    let bin = dir.join("walship");
    if !bin.exists() {
        bail!("{} is missing after cargo build", bin.display());
    }
    Ok(bin)
}

// ---------------------------------------------------------------- walship processes

/// `--ca/--cert/--key` for one side of the mutual TLS.
pub(crate) fn tls_args(certs: &CertPaths, server: bool) -> Vec<String> {
    let f = if server { certs.server() } else { certs.client() };
    [("--ca", f.ca), ("--cert", f.cert), ("--key", f.key)]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v.display().to_string()])
        .collect()
}

/// A running `walship` process and its admin endpoint (`HOST:PORT`).
#[derive(Debug)]
pub(crate) struct Walship {
    pub(crate) child: Child,
    pub(crate) admin: String,
}

impl Walship {
    /// `walship receive --listen LISTEN --dir DIR` with an admin endpoint on
    /// a free port; returns once it listens, with the address it listens on.
    pub(crate) fn receive(
        bin: &Path,
        listen: &str,
        dir: &Path,
        name: &str,
        certs: &CertPaths,
        log: &Path,
    ) -> Result<(Walship, String)> {
        let mut cmd = Command::new(bin);
        cmd.args(["receive", "--listen", listen, "--name", name, "--admin-addr", "127.0.0.1:0", "--dir"]);
        cmd.arg(dir).args(tls_args(certs, true)).env("WALSHIP_LOG", "info");
        let mut child = Child::spawn(&format!("walship receive ({name})"), cmd, log)?;
        let line = child.wait_log("receiver listening", 0, Duration::from_secs(30))?;
        let addr = walship_tests::field(&line, "listen").context("no listen= in the receiver's log line")?;
        let admin = admin_of(&mut child)?;
        Ok((Walship { child, admin }, addr))
    }

    /// `walship send --wal-dir SOURCE --to T...` (raw format) with an admin
    /// endpoint on a free port, reconnecting every `reconnect_max` at most.
    pub(crate) fn send(
        bin: &Path,
        source: &Path,
        targets: &[String],
        certs: &CertPaths,
        reconnect_max: &str,
        log: &Path,
    ) -> Result<Walship> {
        let mut cmd = Command::new(bin);
        cmd.args(["send", "--format", "raw", "--admin-addr", "127.0.0.1:0", "--source-id", "walship-bench"]);
        cmd.args(["--reconnect-min", "50ms", "--reconnect-max", reconnect_max, "--wal-dir"]).arg(source);
        for t in targets {
            cmd.args(["--to", t]);
        }
        cmd.args(tls_args(certs, false)).env("WALSHIP_LOG", "info");
        let mut child = Child::spawn("walship send", cmd, log)?;
        let admin = admin_of(&mut child)?;
        Ok(Walship { child, admin })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// `GET /v1/lag` of this process.
    pub(crate) fn lag(&self, agent: &ureq::Agent) -> Result<serde_json::Value> {
        get_lag(agent, &self.admin)
    }
}

/// `GET /v1/lag` of the admin endpoint at `admin` (`HOST:PORT`).
pub(crate) fn get_lag(agent: &ureq::Agent, admin: &str) -> Result<serde_json::Value> {
    let url = format!("http://{admin}/v1/lag");
    let text =
        agent.get(&url).call().and_then(|mut r| r.body_mut().read_to_string()).with_context(|| format!("GET {url}"))?;
    serde_json::from_str(&text).with_context(|| format!("parsing the answer of GET {url}"))
}

fn admin_of(child: &mut Child) -> Result<String> {
    let line = child.wait_log("admin endpoint listening", 0, Duration::from_secs(30))?;
    walship_tests::field(&line, "admin").with_context(|| format!("no admin= in the log line of {}", child.name))
}

/// An HTTP client for admin endpoints.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into()
}

// ---------------------------------------------------------------- /proc

/// Clock ticks per second, the unit of utime and stime in /proc/PID/stat.
#[allow(unsafe_code)]
fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a configuration value; it has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU seconds (user + system) `pid` has used so far, from /proc/PID/stat.
pub(crate) fn cpu_secs(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // After the command name (which may hold spaces and parentheses): state
    // is the 1st field, utime the 12th, stime the 13th.
    let rest: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok());
    let (Some(u), Some(s)) = (ticks(11), ticks(12)) else { bail!("no utime/stime in {path}: {stat:?}") };
    Ok((u + s) as f64 / clock_ticks())
}

/// CPU seconds (user + system) the calling thread has used so far.
pub(crate) fn thread_cpu_secs() -> Result<f64> {
    rusage_cpu_secs(libc::RUSAGE_THREAD)
}

#[allow(unsafe_code)]
fn rusage_cpu_secs(who: libc::c_int) -> Result<f64> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` points to writable memory of the right type; getrusage
    // only writes into it.
    let rc = unsafe { libc::getrusage(who, ru.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("getrusage");
    }
    // SAFETY: getrusage returned 0, so it filled the struct.
    let ru = unsafe { ru.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(secs(ru.ru_utime) + secs(ru.ru_stime))
}

/// Resident memory of a process from /proc/PID/status, in bytes.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct ProcMem {
    /// `VmRSS`: resident now.
    pub(crate) rss: u64,
    /// `VmHWM`: the peak since the process started.
    pub(crate) hwm: u64,
    /// The parts of `VmRSS`: heap and other private memory (`RssAnon`),
    /// mapped files (`RssFile`), and shared memory, which includes mapped
    /// tmpfs files such as a WAL source on /dev/shm (`RssShmem`).
    pub(crate) anon: u64,
    pub(crate) file: u64,
    pub(crate) shmem: u64,
}

impl ProcMem {
    pub(crate) fn of(pid: u32) -> Result<ProcMem> {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
                .with_context(|| format!("no {name} in {path}"))
        };
        Ok(ProcMem {
            rss: field("VmRSS:")?,
            hwm: field("VmHWM:")?,
            anon: field("RssAnon:")?,
            file: field("RssFile:")?,
            shmem: field("RssShmem:")?,
        })
    }

    fn max(self, o: ProcMem) -> ProcMem {
        ProcMem {
            rss: self.rss.max(o.rss),
            hwm: self.hwm.max(o.hwm),
            anon: self.anon.max(o.anon),
            file: self.file.max(o.file),
            shmem: self.shmem.max(o.shmem),
        }
    }
}

/// What an [`RssSampler`] saw.
#[derive(Debug, Clone, Default)]
pub(crate) struct RssTrace {
    /// (seconds since the origin, `VmRSS` MiB).
    pub(crate) points: Vec<(f64, f64)>,
    /// The largest value of each figure over the samples.
    pub(crate) peak: ProcMem,
}

/// Samples /proc/PID/status of one process every 100 ms from a thread
/// (stopped when dropped).
#[derive(Debug)]
pub(crate) struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<RssTrace>>,
}

impl RssSampler {
    /// Times are seconds since `origin` (negative before it); a sample that
    /// cannot be read (the process exited) is skipped.
    pub(crate) fn start(pid: u32, origin: Instant) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut out = RssTrace::default();
            let mut next = Instant::now();
            loop {
                let t = signed_secs(Instant::now(), origin);
                if let Ok(m) = ProcMem::of(pid) {
                    out.points.push((t, m.rss as f64 / (1u64 << 20) as f64));
                    out.peak = out.peak.max(m);
                }
                if flag.load(Ordering::Relaxed) {
                    return out;
                }
                next += Duration::from_millis(100);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        RssSampler { stop, thread: Some(thread) }
    }

    pub(crate) fn stop(mut self) -> RssTrace {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `t - origin` in seconds, negative when `t` is earlier.
pub(crate) fn signed_secs(t: Instant, origin: Instant) -> f64 {
    match t.checked_duration_since(origin) {
        Some(d) => d.as_secs_f64(),
        None => -origin.duration_since(t).as_secs_f64(),
    }
}

// ---------------------------------------------------------------- syscalls

/// `perf stat -e raw_syscalls:sys_enter -p PID`: the system calls of a
/// running process and the threads it starts, counted by the kernel's
/// tracepoint (no ptrace, unlike strace).
#[derive(Debug)]
pub(crate) struct SyscallCounter {
    child: Child,
    out: PathBuf,
}

impl SyscallCounter {
    /// `None` (with the reason) when perf is missing or may not attach here.
    pub(crate) fn start(pid: u32, dir: &Path, name: &str) -> std::result::Result<SyscallCounter, String> {
        let out = dir.join(format!("perf-{name}.csv"));
        let mut cmd = Command::new("perf");
        cmd.args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-o"]).arg(&out).args(["-p", &pid.to_string()]);
        let mut child = Child::spawn(&format!("perf stat ({name})"), cmd, &dir.join(format!("perf-{name}.log")))
            .map_err(|e| format!("{e:#}"))?;
        // perf exits at once when it cannot attach (permissions, no tracefs).
        std::thread::sleep(Duration::from_millis(200));
        if !child.alive() {
            return Err(format!("perf stat exited: {}", tail(&child.log_text(), 3).trim()));
        }
        Ok(SyscallCounter { child, out })
    }

    /// Stops perf (SIGINT makes it print its counts) and returns the count.
    pub(crate) fn finish(mut self) -> std::result::Result<u64, String> {
        let _ = Command::new("kill").args(["-INT", &self.child.pid().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.alive() {
            if Instant::now() > deadline {
                return Err("perf stat did not exit within 10 s of SIGINT".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(&self.out).map_err(|e| format!("reading {}: {e}", self.out.display()))?;
        text.lines()
            .filter(|l| l.contains("raw_syscalls:sys_enter"))
            .find_map(|l| l.split(',').next().and_then(|v| v.trim().parse::<u64>().ok()))
            .ok_or_else(|| format!("no count in perf's output: {:?}", text.trim()))
    }
}

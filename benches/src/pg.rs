//! `walship-bench pg`: walship semi-sync against PostgreSQL's own synchronous
//! replication, on a real PostgreSQL primary, in one run.
//!
//! ```text
//! cargo run --release -p walship-bench -- pg [--seconds 15] [--clients 4] [--rounds 2]
//!     [--scale 10] [--lag-rate 200] [--lag-seconds 15] [--dir DIR] [--walship-bin PATH]
//! ```
//!
//! One primary (`initdb` into a scratch dir on the disk, `fsync = on`,
//! `synchronous_commit = on`), `pgbench -i -s SCALE` once, then per round,
//! in an order rotated every round so that drift hits every case alike:
//!
//! | case | replication | per transaction |
//! |---|---|---|
//! | a | none | the load client's transaction |
//! | a-pgbench | none | `pgbench -c C -j 2 -T N -n -N` (reference for the load client) |
//! | b | `walship send --format postgres`, `--sync-quorum 1 --sync-level flush` | the same, then `POST /v1/wait` for the flush LSN |
//! | c | `pg_receivewal --synchronous --slot`, the synchronous standby | the same (COMMIT waits for its remote flush) |
//!
//! The load client is C threads, one `postgres::Client` each, running
//! pgbench's simple-update script (`-N`: UPDATE pgbench_accounts, SELECT its
//! abalance, INSERT INTO pgbench_history, in a transaction; the simple
//! update rather than TPC-B because TPC-B's 10 branch rows serialise the
//! clients on row locks, and a longer commit then costs throughput through
//! lock hold times, not through the commit path we measure). Every case
//! ends the transaction with the same single round trip `COMMIT; SELECT
//! pg_current_wal_flush_lsn()`; only case b then waits, so the wait (b) and
//! the synchronous standby (c) are the only differences from a.
//!
//! Before every case the same starting state (autovacuum is off):
//! `TRUNCATE pgbench_history`, `VACUUM` the pgbench tables, `CHECKPOINT`
//! (the same full-page-write state); then the case's replication is started
//! and caught up, and it is stopped after the case (walship's receiver and
//! its mirror, and the slot, persist; the sender and pg_receivewal resume).
//! Case b also records the CPU the walship sender and receiver used during
//! the load, case c that of pg_receivewal and of the walsender backend
//! serving it.
//!
//! The walship binary is built with cargo (`cargo build -p walship`, this
//! program's profile) unless `--walship-bin` names one.
//!
//! After the rounds, a flush-lag phase: b and c at once (walship sender and
//! the synchronous pg_receivewal) under a fixed rate, every 100 ms sampling
//! the sender's `/v1/lag` and `pg_stat_replication.flush_lag` one after the
//! other, plus the `walship_flush_lag_seconds` and
//! `walship_source_detection_delay_seconds` histograms from `/metrics`.
//!
//! It prints markdown tables and writes `target/bench-report/pg.json`.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use walship_tests::pg::{PgCluster, PgOptions, pg_bin};

use crate::data::ScratchDir;

/// pg_receivewal's `application_name`, the name in `synchronous_standby_names`.
const APP_NAME: &str = "walship_bench_recv";
const SLOT: &str = "walship_bench_slot";
/// How long replication may take to catch up before a case.
const CATCH_UP: Duration = Duration::from_secs(120);
/// The wait's own timeout, and the sender's `--sync-timeout`.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
const SYNC_TIMEOUT: &str = "10s";

#[derive(Debug, clap::Args)]
pub struct PgArgs {
    /// Seconds of load per case and round.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Concurrent clients (threads of the load client; pgbench -c).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Rounds; each runs every case once, in a rotated order.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// pgbench -i scale factor.
    #[arg(long, default_value_t = 10)]
    scale: u32,
    /// Transactions per second (all clients together) in the flush-lag phase.
    #[arg(long, default_value_t = 200)]
    lag_rate: u32,
    /// Seconds of the flush-lag phase (0: skip it).
    #[arg(long, default_value_t = 15)]
    lag_seconds: u64,
    /// Directory on the disk for the cluster, the mirrors and the logs
    /// [default: target/bench-tmp]; a fresh `walship-bench-pg-PID` inside it
    /// is created and removed.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The walship binary to run [default: build it with cargo next to this one].
    #[arg(long)]
    walship_bin: Option<PathBuf>,
    /// Where to write the JSON report [default: target/bench-report/pg.json].
    #[arg(long)]
    report: Option<PathBuf>,
}

// ---------------------------------------------------------------- results

/// Quantiles of a sample, in the sample's unit (ms or seconds, see the field name).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Quantiles {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

fn quantiles(v: &[f64]) -> Quantiles {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let q = |q: f64| v.get(((v.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(f64::NAN);
    Quantiles { n: v.len(), p50: q(0.5), p90: q(0.9), p99: q(0.99), max: v.last().copied().unwrap_or(f64::NAN) }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One load run (one case, one round) of the Rust load client.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadRun {
    pub round: usize,
    pub secs: f64,
    /// Transactions counted: committed, and for b also durable on the mirror.
    pub counted: u64,
    pub tps: f64,
    /// b: waits that returned anything but `durable` (not counted).
    pub not_durable: u64,
    /// b: waits that failed outright (not counted).
    pub wait_errors: u64,
    /// SQL errors (rolled back, not counted).
    pub sql_errors: u64,
    pub first_error: Option<String>,
    /// `COMMIT; SELECT pg_current_wal_flush_lsn()` round trip, ms.
    pub commit_ms: Quantiles,
    /// b: COMMIT returned → wait returned, ms.
    pub wait_ms: Option<Quantiles>,
    /// COMMIT sent → wait returned (a, c: = commit), ms.
    pub commit_durable_ms: Quantiles,
    /// BEGIN → done, ms.
    pub tx_ms: Quantiles,
    /// CPU seconds the replication processes used during the load (b:
    /// walship sender + receiver; c: pg_receivewal + PostgreSQL's walsender
    /// backend serving it; a: none).
    pub replication_cpu_secs: f64,
    /// The same per process.
    pub cpu_secs: BTreeMap<String, f64>,
    #[serde(skip)]
    raw: RawLatencies,
}

#[derive(Debug, Clone, Default)]
struct RawLatencies {
    commit: Vec<f64>,
    wait: Vec<f64>,
    total: Vec<f64>,
}

/// One pgbench run.
#[derive(Debug, Clone, Serialize)]
pub struct PgbenchRun {
    pub round: usize,
    pub tps: f64,
    pub latency_avg_ms: Option<f64>,
    pub transactions: Option<u64>,
    pub failed: Option<u64>,
}

/// Every round of one case and what they add up to.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaseSummary {
    pub what: String,
    pub rounds: Vec<LoadRun>,
    pub tps_rounds: Vec<f64>,
    pub tps_median: f64,
    /// Latencies pooled over all rounds, ms.
    pub commit_ms: Quantiles,
    pub wait_ms: Option<Quantiles>,
    pub commit_durable_ms: Quantiles,
    pub not_durable: u64,
    pub wait_errors: u64,
    pub sql_errors: u64,
    /// Replication processes' CPU ms per transaction counted, all rounds.
    pub replication_cpu_ms_per_tx: f64,
    /// The same per process.
    pub cpu_ms_per_tx: BTreeMap<String, f64>,
}

impl CaseSummary {
    fn new(what: &str) -> Self {
        CaseSummary { what: what.into(), ..Default::default() }
    }

    fn finish(&mut self) {
        self.tps_rounds = self.rounds.iter().map(|r| r.tps).collect();
        self.tps_median = median(&self.tps_rounds);
        let pool = |f: fn(&RawLatencies) -> &Vec<f64>| -> Vec<f64> {
            self.rounds.iter().flat_map(|r| f(&r.raw).iter().copied()).collect()
        };
        self.commit_ms = quantiles(&pool(|r| &r.commit));
        let wait = pool(|r| &r.wait);
        self.wait_ms = (!wait.is_empty()).then(|| quantiles(&wait));
        self.commit_durable_ms = quantiles(&pool(|r| &r.total));
        self.not_durable = self.rounds.iter().map(|r| r.not_durable).sum();
        self.wait_errors = self.rounds.iter().map(|r| r.wait_errors).sum();
        self.sql_errors = self.rounds.iter().map(|r| r.sql_errors).sum();
        let tx: u64 = self.rounds.iter().map(|r| r.counted).sum();
        self.replication_cpu_ms_per_tx =
            self.rounds.iter().map(|r| r.replication_cpu_secs).sum::<f64>() * 1e3 / tx.max(1) as f64;
        self.cpu_ms_per_tx.clear();
        for r in &self.rounds {
            for (k, v) in &r.cpu_secs {
                *self.cpu_ms_per_tx.entry(k.clone()).or_default() += v * 1e3 / tx.max(1) as f64;
            }
        }
    }
}

/// The flush-lag phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LagReport {
    pub rate_tx_per_s: u32,
    pub secs: f64,
    /// The load of the phase (b and c at once: COMMIT waits for pg_receivewal, then a walship wait).
    pub load: LoadRun,
    pub samples: usize,
    /// Sender `/v1/lag` `receivers[0].flush_lag_seconds` (age of the oldest
    /// byte not yet flushed on the receiver; exactly 0 when caught up), ms.
    pub walship_v1_lag_ms: Quantiles,
    pub walship_v1_lag_zero_samples: usize,
    pub walship_v1_lag_failed_samples: usize,
    /// `walship_flush_lag_seconds` histogram, the phase's own samples (one
    /// per flush ack): each quantile is the upper bound of its bucket, ms.
    pub walship_hist_ms: Quantiles,
    pub walship_hist_mean_ms: f64,
    /// `walship_source_detection_delay_seconds` in the phase: file event →
    /// the tailer's refresh that saw the bytes (bucket upper bounds), ms.
    pub detection_ms: Quantiles,
    pub detection_mean_ms: f64,
    /// `pg_stat_replication.flush_lag` (the lag of the most recent position
    /// the standby reported flushed), non-NULL samples, ms.
    pub pg_flush_lag_ms: Quantiles,
    pub pg_flush_lag_null_samples: usize,
    pub pg_flush_lag_failed_samples: usize,
    /// Every sample: (seconds since the phase began, walship /v1/lag ms, pg flush_lag ms).
    pub series: Vec<(f64, Option<f64>, Option<f64>)>,
}

#[derive(Debug, Serialize)]
pub struct PgReport {
    pub command: String,
    pub postgres: String,
    pub cpus: usize,
    pub seconds: u64,
    pub clients: usize,
    pub rounds: usize,
    pub scale: u32,
    pub transaction: &'static str,
    pub order: Vec<Vec<String>>,
    pub a: CaseSummary,
    pub a_pgbench: Vec<PgbenchRun>,
    pub a_pgbench_tps_median: f64,
    pub b: CaseSummary,
    /// After each b load, one client, idle: waits for position 0 (already
    /// durable), i.e. what the wait API itself costs, ms.
    pub b_satisfied_wait_ms: Quantiles,
    pub c: CaseSummary,
    /// 1 − tps(b)/tps(a) and 1 − tps(c)/tps(a), medians.
    pub loss_b: f64,
    pub loss_c: f64,
    /// loss_b / loss_c; the project's target is ≤ 0.5.
    pub loss_ratio: Option<f64>,
    pub target_loss_ratio: f64,
    pub lag: Option<LagReport>,
    pub walship_log_problems: Vec<String>,
    pub pg_receivewal_log: Vec<String>,
}

// ---------------------------------------------------------------- processes

/// A child process with its output in a log file; killed when dropped.
#[derive(Debug)]
struct Child {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Child {
    fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Child> {
        let f = File::options().create(true).append(true).open(log).with_context(|| format!("{}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Child { name: name.into(), child, log: log.to_path_buf() })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The latest log line containing `needle` that appeared after byte `from`.
    fn wait_log(&mut self, needle: &str, from: usize, timeout: Duration) -> Result<String> {
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
    fn stop(&mut self, signal: &str) -> Result<()> {
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

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A client program without the caller's PG* environment (PGDATA, PGPORT...).
fn pg_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir("/");
    cmd
}

/// `walship` next to this program, built by cargo with this program's profile.
fn walship_binary(given: Option<PathBuf>) -> Result<PathBuf> {
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

// ---------------------------------------------------------------- environment

/// The primary, the persistent walship receiver, and how to start the rest.
struct Bench {
    walship: PathBuf,
    root: PathBuf,
    certs: PathBuf,
    cluster: PgCluster,
    admin: postgres::Client,
    receiver: Child,
    receiver_addr: String,
    clients: usize,
    scale: u32,
}

/// The walship sender of case b, with its admin address.
struct SenderProc {
    child: Child,
    admin: String,
}

fn tls(certs: &Path, which: &str) -> Vec<String> {
    vec![
        "--ca".into(),
        certs.join("ca.pem").display().to_string(),
        "--cert".into(),
        certs.join(format!("{which}.pem")).display().to_string(),
        "--key".into(),
        certs.join(format!("{which}.key")).display().to_string(),
    ]
}

impl Bench {
    fn sql(&mut self, q: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut rows = Vec::new();
        for msg in self.admin.simple_query(q).with_context(|| format!("SQL {q:?}"))? {
            if let postgres::SimpleQueryMessage::Row(row) = msg {
                rows.push((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect());
            }
        }
        Ok(rows)
    }

    fn one(&mut self, q: &str) -> Result<String> {
        self.sql(q)?
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .with_context(|| format!("SQL {q:?} gave no value"))
    }

    /// The walsender backend serving pg_receivewal.
    fn walsender_pid(&mut self) -> Result<u32> {
        let pid = self.one(&format!("SELECT pid FROM pg_stat_replication WHERE application_name = '{APP_NAME}'"))?;
        pid.parse().with_context(|| format!("walsender pid {pid:?}"))
    }

    fn flush_lsn(&mut self) -> Result<String> {
        self.one("SELECT pg_current_wal_flush_lsn()::text")
    }

    /// `synchronous_standby_names`, reloaded; `CHECKPOINT` makes the
    /// checkpointer (which publishes whether sync standbys are defined) take it.
    fn set_sync_standby(&mut self, on: bool) -> Result<()> {
        if on {
            self.sql(&format!("ALTER SYSTEM SET synchronous_standby_names = '{APP_NAME}'"))?;
        } else {
            self.sql("ALTER SYSTEM RESET synchronous_standby_names")?;
        }
        self.sql("SELECT pg_reload_conf()")?;
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<()> {
        self.sql("CHECKPOINT").map(|_| ())
    }

    /// The same starting state for every case (autovacuum is off): an empty
    /// history table, accounts vacuumed, then a checkpoint.
    fn reset_state(&mut self) -> Result<()> {
        self.sql("TRUNCATE pgbench_history")?;
        self.sql("VACUUM pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history")?;
        self.checkpoint()
    }

    /// Starts `walship send` on pg_wal and waits until its receiver has
    /// flushed everything PostgreSQL had flushed.
    fn start_sender(&mut self) -> Result<SenderProc> {
        let mut args: Vec<String> = vec![
            "send".into(),
            "--wal-dir".into(),
            self.cluster.wal_dir().display().to_string(),
            "--format".into(),
            "postgres".into(),
            "--to".into(),
            self.receiver_addr.clone(),
            "--admin-addr".into(),
            "127.0.0.1:0".into(),
            "--sync-quorum".into(),
            "1".into(),
            "--sync-level".into(),
            "flush".into(),
            "--sync-timeout".into(),
            SYNC_TIMEOUT.into(),
            "--reconnect-min".into(),
            "50ms".into(),
            "--reconnect-max".into(),
            "500ms".into(),
        ];
        args.extend(tls(&self.certs, "client"));
        let log = self.root.join("sender.log");
        let from = std::fs::metadata(&log).map(|m| m.len() as usize).unwrap_or(0);
        let mut cmd = Command::new(&self.walship);
        cmd.args(&args).env("WALSHIP_LOG", "info");
        let mut child = Child::spawn("walship send", cmd, &log)?;
        let line = child.wait_log("admin endpoint listening", from, Duration::from_secs(30))?;
        let admin = walship_tests::field(&line, "admin").context("no admin= in the sender's log line")?;
        let target = self.flush_lsn()?;
        let target_pos = parse_lsn(&target)?;
        let deadline = Instant::now() + CATCH_UP;
        let agent = agent();
        loop {
            let lag = get_json(&agent, &format!("http://{admin}/v1/lag"));
            let r = lag.as_ref().ok().and_then(|v| v["receivers"].get(0).cloned());
            let flushed = r.as_ref().and_then(|r| r["flush_pos"].as_u64()).unwrap_or(0);
            let streaming = r.as_ref().and_then(|r| r["state"].as_str()) == Some("streaming");
            if streaming && flushed >= target_pos {
                break;
            }
            if !child.alive() || Instant::now() > deadline {
                bail!(
                    "walship did not catch up with {target} within {CATCH_UP:?} (receiver: {r:?}); sender log:\n{}",
                    tail(child.log_text().get(from..).unwrap_or(""), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let w = walship_client::Client::new(&admin)
            .wait(walship_client::Wait::position(target.clone()).timeout(WAIT_TIMEOUT))
            .context("first wait")?;
        if w.outcome != walship_client::Outcome::Durable {
            bail!("the first wait for {target} answered {:?}", w.outcome);
        }
        Ok(SenderProc { child, admin })
    }

    /// Starts pg_receivewal on the slot and waits until it is the
    /// synchronous standby and has flushed everything the primary had.
    fn start_receivewal(&mut self) -> Result<Child> {
        let mut cmd = pg_command(&pg_bin("pg_receivewal"));
        cmd.arg("-D").arg(self.root.join("receivewal"));
        cmd.args([&format!("--slot={SLOT}"), "--synchronous", "--no-loop", "-d"]);
        cmd.arg(format!("application_name={APP_NAME} host=127.0.0.1 port={} user=postgres", self.cluster.port()));
        let mut child = Child::spawn("pg_receivewal", cmd, &self.root.join("pg_receivewal.log"))?;
        let target = self.flush_lsn()?;
        let deadline = Instant::now() + CATCH_UP;
        let q = format!(
            "SELECT sync_state, flush_lsn >= '{target}'::pg_lsn FROM pg_stat_replication WHERE application_name = '{APP_NAME}'"
        );
        loop {
            let rows = self.sql(&q)?;
            if rows.first().is_some_and(|r| r[0].as_deref() == Some("sync") && r[1].as_deref() == Some("t")) {
                return Ok(child);
            }
            if !child.alive() || Instant::now() > deadline {
                bail!(
                    "pg_receivewal did not become the caught-up sync standby (at {target}) within {CATCH_UP:?}: {rows:?}; log:\n{}",
                    tail(&child.log_text(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops pg_receivewal (after taking it out of synchronous_standby_names,
    /// so no commit waits for a standby that is gone).
    fn stop_receivewal(&mut self, mut child: Child) -> Result<()> {
        let still_sync =
            self.sql(&format!("SELECT sync_state FROM pg_stat_replication WHERE application_name = '{APP_NAME}'"))?;
        self.set_sync_standby(false)?;
        // PostgreSQL 15's pg_receivewal exits cleanly on SIGINT only.
        child.stop("INT")?;
        if still_sync.first().and_then(|r| r[0].as_deref()) != Some("sync") {
            bail!("pg_receivewal was no longer the sync standby at the end of the case: {still_sync:?}");
        }
        Ok(())
    }

    fn load(&self, duration: Duration, wait_admin: Option<&str>, rate: Option<f64>, round: usize) -> Result<LoadRun> {
        run_load(&LoadSpec {
            conninfo: self.cluster.conninfo(),
            clients: self.clients,
            scale: self.scale,
            duration,
            wait_admin: wait_admin.map(str::to_string),
            rate,
            round,
        })
    }

    fn pgbench(&self, seconds: u64, round: usize) -> Result<PgbenchRun> {
        let mut cmd = pg_command(&pg_bin("pgbench"));
        let jobs = self.clients.clamp(1, 2);
        cmd.args(["-c", &self.clients.to_string(), "-j", &jobs.to_string(), "-T", &seconds.to_string(), "-n", "-N"]);
        cmd.args(["-h", "127.0.0.1", "-p", &self.cluster.port().to_string(), "-U", "postgres", "postgres"]);
        let out = cmd.output().context("running pgbench")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("pgbench failed ({}):\n{text}{}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        let after = |key: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        let tps = after("tps = ").with_context(|| format!("no tps line in pgbench's output:\n{text}"))?;
        Ok(PgbenchRun {
            round,
            tps,
            latency_avg_ms: after("latency average = "),
            transactions: after("number of transactions actually processed: ").map(|v| v as u64),
            failed: after("number of failed transactions: ").map(|v| v as u64),
        })
    }
}

/// CPU seconds (user + system) `pid` has used so far, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    static TICK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let tick = *TICK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the 1st, utime the 12th, stime the 13th.
    let rest: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) + ticks(12)) / tick
}

/// CPU seconds of some processes over a load.
struct CpuMeter(Vec<(&'static str, u32, f64)>);

impl CpuMeter {
    fn start(pids: &[(&'static str, u32)]) -> CpuMeter {
        CpuMeter(pids.iter().map(|(n, p)| (*n, *p, cpu_secs(*p))).collect())
    }

    fn finish(self, r: &mut LoadRun) {
        for (name, pid, before) in self.0 {
            r.cpu_secs.insert(name.to_string(), cpu_secs(pid) - before);
        }
        r.replication_cpu_secs = r.cpu_secs.values().sum();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into()
}

fn get_json(agent: &ureq::Agent, url: &str) -> Result<serde_json::Value> {
    let text = agent.get(url).call()?.body_mut().read_to_string()?;
    Ok(serde_json::from_str(&text)?)
}

fn get_text(agent: &ureq::Agent, url: &str) -> Result<String> {
    Ok(agent.get(url).call()?.body_mut().read_to_string()?)
}

/// `X/Y` → byte position.
fn parse_lsn(s: &str) -> Result<u64> {
    let (hi, lo) = s.trim().split_once('/').with_context(|| format!("not an LSN: {s:?}"))?;
    Ok((u64::from_str_radix(hi, 16)? << 32) | u64::from_str_radix(lo, 16)?)
}

// ---------------------------------------------------------------- load client

#[derive(Debug, Clone)]
struct LoadSpec {
    conninfo: String,
    clients: usize,
    scale: u32,
    duration: Duration,
    /// Case b: the sender's admin address; every transaction waits.
    wait_admin: Option<String>,
    /// Transactions per second over all clients; None: as fast as possible.
    rate: Option<f64>,
    round: usize,
}

#[derive(Debug, Default)]
struct ThreadOut {
    start: Option<Instant>,
    end: Option<Instant>,
    counted: u64,
    not_durable: u64,
    wait_errors: u64,
    sql_errors: u64,
    first_error: Option<String>,
    raw: RawLatencies,
    tx: Vec<f64>,
}

/// xorshift64*: pgbench's uniform random() is all the script needs.
struct Rng(u64);

impl Rng {
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        lo + (x % (hi - lo + 1) as u64) as i64
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn run_load(spec: &LoadSpec) -> Result<LoadRun> {
    let barrier = Barrier::new(spec.clients);
    let outs: Vec<Result<ThreadOut>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..spec.clients)
            .map(|i| {
                let barrier = &barrier;
                s.spawn(move || client_thread(spec, i, barrier))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a load client thread panicked"))))
            .collect()
    });
    let outs: Vec<ThreadOut> = outs.into_iter().collect::<Result<_>>()?;
    let start = outs.iter().filter_map(|o| o.start).min().context("no client started")?;
    let end = outs.iter().filter_map(|o| o.end).max().context("no client ended")?;
    let secs = end.duration_since(start).as_secs_f64();
    let mut raw = RawLatencies::default();
    let mut tx = Vec::new();
    let mut run = LoadRun { round: spec.round, secs, ..Default::default() };
    for o in outs {
        run.counted += o.counted;
        run.not_durable += o.not_durable;
        run.wait_errors += o.wait_errors;
        run.sql_errors += o.sql_errors;
        run.first_error = run.first_error.or(o.first_error);
        raw.commit.extend(o.raw.commit);
        raw.wait.extend(o.raw.wait);
        raw.total.extend(o.raw.total);
        tx.extend(o.tx);
    }
    run.tps = run.counted as f64 / secs;
    run.commit_ms = quantiles(&raw.commit);
    run.wait_ms = spec.wait_admin.as_ref().map(|_| quantiles(&raw.wait));
    run.commit_durable_ms = quantiles(&raw.total);
    run.tx_ms = quantiles(&tx);
    run.raw = raw;
    Ok(run)
}

fn client_thread(spec: &LoadSpec, idx: usize, barrier: &Barrier) -> Result<ThreadOut> {
    // Connect and prepare before the barrier, so that none of it is timed;
    // a failing thread still reaches the barrier (the others wait there).
    let setup = (|| -> Result<_> {
        let mut c = postgres::Client::connect(&spec.conninfo, postgres::NoTls).context("load client connect")?;
        // A commit waiting for a standby that died would block forever otherwise.
        c.batch_execute("SET statement_timeout = '60s'")?;
        let upd = c.prepare("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2")?;
        let sel = c.prepare("SELECT abalance FROM pgbench_accounts WHERE aid = $1")?;
        let ins = c.prepare(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
        )?;
        Ok((c, upd, sel, ins))
    })();
    barrier.wait();
    let (mut c, upd, sel, ins) = setup?;
    let waiter = spec.wait_admin.as_deref().map(walship_client::Client::new);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((idx as u64 + 1) << 17) ^ ((spec.round as u64) << 40));
    let scale = i64::from(spec.scale);
    let mut out = ThreadOut::default();
    let start = Instant::now();
    out.start = Some(start);
    let deadline = start + spec.duration;
    let interval = spec.rate.map(|r| Duration::from_secs_f64(spec.clients as f64 / r));
    // Spread the clients' schedules over one interval.
    let mut next = interval.map(|iv| start + iv.mul_f64(idx as f64 / spec.clients as f64));
    loop {
        if let (Some(n), Some(iv)) = (next.as_mut(), interval) {
            let now = Instant::now();
            if *n > now {
                std::thread::sleep(*n - now);
            }
            *n += iv;
        }
        if Instant::now() >= deadline {
            break;
        }
        let aid = rng.range(1, 100_000 * scale) as i32;
        let bid = rng.range(1, scale) as i32;
        let tid = rng.range(1, 10 * scale) as i32;
        let delta = rng.range(-5000, 5000) as i32;
        let t_begin = Instant::now();
        let res = (|| -> Result<(String, Instant, Instant)> {
            c.batch_execute("BEGIN")?;
            c.execute(&upd, &[&delta, &aid])?;
            let _: i32 = c.query_one(&sel, &[&aid])?.get(0);
            c.execute(&ins, &[&tid, &bid, &aid, &delta])?;
            let t0 = Instant::now();
            let mut lsn = None;
            for m in c.simple_query("COMMIT; SELECT pg_current_wal_flush_lsn()::text")? {
                if let postgres::SimpleQueryMessage::Row(r) = m {
                    lsn = r.get(0).map(str::to_string);
                }
            }
            Ok((lsn.context("no flush LSN")?, t0, Instant::now()))
        })();
        let (lsn, t0, t1) = match res {
            Ok(x) => x,
            Err(e) => {
                out.sql_errors += 1;
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
                let _ = c.batch_execute("ROLLBACK");
                if c.is_closed() || out.sql_errors > 100 {
                    bail!("load client {idx}: giving up after {} SQL errors: {e:#}", out.sql_errors);
                }
                continue;
            }
        };
        out.raw.commit.push(ms(t1 - t0));
        let durable = match &waiter {
            None => true,
            Some(w) => match w.wait(walship_client::Wait::position(lsn).timeout(WAIT_TIMEOUT)) {
                Ok(r) if r.outcome == walship_client::Outcome::Durable => true,
                Ok(r) => {
                    out.not_durable += 1;
                    out.first_error.get_or_insert_with(|| format!("wait answered {:?}", r.outcome));
                    false
                }
                Err(e) => {
                    out.wait_errors += 1;
                    out.first_error.get_or_insert_with(|| format!("wait failed: {e}"));
                    false
                }
            },
        };
        let t2 = Instant::now();
        if waiter.is_some() {
            out.raw.wait.push(ms(t2 - t1));
        }
        out.raw.total.push(ms(t2 - t0));
        out.tx.push(ms(t2 - t_begin));
        if durable {
            out.counted += 1;
        }
    }
    out.end = Some(Instant::now());
    Ok(out)
}

// ---------------------------------------------------------------- lag sampling

#[derive(Debug, Default)]
struct Samples {
    /// (seconds since start, walship /v1/lag flush lag s, pg flush_lag s, pg query failed)
    rows: Vec<(f64, Option<f64>, Option<f64>, bool)>,
}

/// Every 100 ms: `/v1/lag` then `pg_stat_replication.flush_lag`, until `running` clears.
fn sample_lag(conninfo: &str, admin: &str, running: &AtomicBool) -> Result<Samples> {
    let mut pg = postgres::Client::connect(conninfo, postgres::NoTls).context("sampler connect")?;
    let q = pg.prepare(&format!(
        "SELECT extract(epoch FROM flush_lag)::float8 FROM pg_stat_replication WHERE application_name = '{APP_NAME}'"
    ))?;
    let agent = agent();
    let url = format!("http://{admin}/v1/lag");
    let mut out = Samples::default();
    let start = Instant::now();
    let mut next = start;
    while running.load(Ordering::Relaxed) {
        next += Duration::from_millis(100);
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let t = start.elapsed().as_secs_f64();
        let w = get_json(&agent, &url).ok().and_then(|v| v["receivers"][0]["flush_lag_seconds"].as_f64());
        let (p, failed) = match pg.query_opt(&q, &[]) {
            Ok(Some(row)) => (row.get::<_, Option<f64>>(0), false),
            Ok(None) | Err(_) => (None, true),
        };
        out.rows.push((t, w, p, failed));
    }
    Ok(out)
}

/// Histogram `name`'s buckets (upper bound → cumulative count), sum and count from `/metrics`.
fn parse_hist(text: &str, name: &str) -> (BTreeMap<u64, (f64, u64)>, f64, u64) {
    let mut buckets = BTreeMap::new();
    let (mut sum, mut count) = (0.0, 0);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let value = line.rsplit(' ').next().unwrap_or("");
        if rest.starts_with("_bucket") {
            let le = rest.split("le=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("");
            let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
            let n: u64 = value.parse().unwrap_or(0);
            // Keyed by the bound's bits: order is that of positive floats.
            buckets.insert(bound.to_bits(), (bound, n));
        } else if rest.starts_with("_sum") {
            sum = value.parse().unwrap_or(0.0);
        } else if rest.starts_with("_count") {
            count = value.parse().unwrap_or(0);
        }
    }
    (buckets, sum, count)
}

/// Quantiles (bucket upper bounds, ms) of the samples between two scrapes.
fn hist_delta(before: &str, after: &str, name: &str) -> (Quantiles, f64) {
    let (b0, s0, c0) = parse_hist(before, name);
    let (b1, s1, c1) = parse_hist(after, name);
    let n = c1.saturating_sub(c0);
    let cum: Vec<(f64, u64)> =
        b1.iter().map(|(k, (bound, c))| (*bound, c.saturating_sub(b0.get(k).map_or(0, |x| x.1)))).collect();
    let q = |q: f64| {
        let want = ((n as f64 * q).ceil() as u64).max(1);
        cum.iter().find(|(_, c)| *c >= want).map_or(f64::NAN, |(b, _)| b * 1e3)
    };
    let qs = Quantiles { n: n as usize, p50: q(0.5), p90: q(0.9), p99: q(0.99), max: q(1.0) };
    let mean = if n > 0 { (s1 - s0) / n as f64 * 1e3 } else { f64::NAN };
    (qs, mean)
}

// ---------------------------------------------------------------- the run

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    A,
    APgbench,
    B,
    C,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::A => "a",
            Case::APgbench => "a-pgbench",
            Case::B => "b",
            Case::C => "c",
        }
    }
}

pub fn run(a: PgArgs) -> Result<()> {
    if a.clients == 0 || a.seconds == 0 || a.rounds == 0 || a.scale == 0 {
        bail!("--clients, --seconds, --rounds and --scale must be more than 0");
    }
    let walship = walship_binary(a.walship_bin.clone())?;
    let base = a.dir.clone().unwrap_or_else(|| crate::workspace_root().join("target/bench-tmp"));
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let base = base.canonicalize()?;
    let scratch = ScratchDir::create(base.join(format!("walship-bench-pg-{}", std::process::id())))?;
    // The harness panics on failures; everything it started is stopped as
    // the panic unwinds (its Drop), and the panic becomes this run's error.
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| run_in(&a, &walship, scratch.path())));
    match r {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(anyhow!("{msg}"))
        }
    }
}

fn run_in(a: &PgArgs, walship: &Path, root: &Path) -> Result<()> {
    let secs = Duration::from_secs(a.seconds);
    let certs = root.join("certs");
    let st = Command::new(walship).args(["cert", "init", "--dir"]).arg(&certs).output()?;
    if !st.status.success() {
        bail!("walship cert init failed: {}", String::from_utf8_lossy(&st.stderr));
    }

    // The primary. Checkpoints only when asked (before each case), and
    // every WAL byte kept: the sender and pg_receivewal are stopped between
    // their cases and resume where they were.
    let opts = PgOptions::new()
        .set("shared_buffers", "256MB")
        .set("max_wal_size", "16GB")
        .set("checkpoint_timeout", "1h")
        .set("wal_keep_size", "16GB")
        .set("max_connections", "50")
        // Vacuum runs between cases (reset_state), never inside one.
        .set("autovacuum", "off");
    let mut cluster = PgCluster::init(root, "primary", opts);
    cluster.start();
    let admin = cluster.try_client().context("connecting to the primary")?;

    println!("pgbench -i -s {} ...", a.scale);
    let t = Instant::now();
    let mut cmd = pg_command(&pg_bin("pgbench"));
    cmd.args(["-i", "-q", "-s", &a.scale.to_string()]);
    cmd.args(["-h", "127.0.0.1", "-p", &cluster.port().to_string(), "-U", "postgres", "postgres"]);
    let out = cmd.output().context("running pgbench -i")?;
    if !out.status.success() {
        bail!("pgbench -i failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    println!("initialised in {:.1} s", t.elapsed().as_secs_f64());

    // The persistent walship receiver; its mirror is on the same disk.
    let mut rargs: Vec<String> = vec![
        "receive".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--dir".into(),
        root.join("mirror").display().to_string(),
        "--name".into(),
        "bench-receiver".into(),
    ];
    rargs.extend(tls(&certs, "server"));
    let mut rcmd = Command::new(walship);
    rcmd.args(&rargs).env("WALSHIP_LOG", "info");
    let mut receiver = Child::spawn("walship receive", rcmd, &root.join("receiver.log"))?;
    let line = receiver.wait_log("receiver listening", 0, Duration::from_secs(30))?;
    let receiver_addr = walship_tests::field(&line, "listen").context("no listen= in the receiver's log")?;

    let mut bench = Bench {
        walship: walship.to_path_buf(),
        root: root.to_path_buf(),
        certs,
        cluster,
        admin,
        receiver,
        receiver_addr,
        clients: a.clients,
        scale: a.scale,
    };
    let postgres = bench.one("SHOW server_version")?;
    bench.sql(&format!("SELECT pg_create_physical_replication_slot('{SLOT}', true)"))?;
    std::fs::create_dir(root.join("receivewal"))?;

    let mut sa = CaseSummary::new("primary alone, load client");
    let mut sb = CaseSummary::new("walship semi-sync (quorum 1, flush), wait after each commit");
    let mut sc = CaseSummary::new("pg_receivewal --synchronous as the sync standby");
    let mut pgb = Vec::new();
    let mut floor = Vec::new();
    let mut order = Vec::new();
    let cases = [Case::A, Case::B, Case::C, Case::APgbench];
    for round in 1..=a.rounds {
        let mut this = cases.to_vec();
        this.rotate_left((round - 1) % cases.len());
        order.push(this.iter().map(|c| c.name().to_string()).collect());
        println!("round {round}: {}", this.iter().map(|c| c.name()).collect::<Vec<_>>().join(", "));
        for case in this {
            bench.reset_state()?;
            match case {
                Case::A => {
                    let r = bench.load(secs, None, None, round).context("case a")?;
                    progress("a", &r);
                    sa.rounds.push(r);
                }
                Case::APgbench => {
                    let r = bench.pgbench(a.seconds, round).context("case a-pgbench")?;
                    println!(
                        "  a-pgbench: {:>8.1} tps (latency avg {:.3} ms)",
                        r.tps,
                        r.latency_avg_ms.unwrap_or(f64::NAN)
                    );
                    pgb.push(r);
                }
                Case::B => {
                    let mut sender = bench.start_sender().context("case b: starting walship")?;
                    let pids = [("walship send", sender.child.pid()), ("walship receive", bench.receiver.pid())];
                    let cpu = CpuMeter::start(&pids);
                    let mut r = bench.load(secs, Some(&sender.admin), None, round).context("case b");
                    if let Ok(r) = r.as_mut() {
                        cpu.finish(r);
                    }
                    if r.is_ok() {
                        floor.extend(satisfied_waits(&sender.admin, 300).context("case b: satisfied waits")?);
                    }
                    let stopped = sender.child.stop("TERM").context("case b: stopping walship");
                    let r = r?;
                    stopped?;
                    progress("b", &r);
                    sb.rounds.push(r);
                }
                Case::C => {
                    bench.set_sync_standby(true)?;
                    bench.checkpoint()?;
                    let recv = bench.start_receivewal().context("case c: starting pg_receivewal")?;
                    let walsender = bench.walsender_pid()?;
                    let cpu = CpuMeter::start(&[("pg_receivewal", recv.pid()), ("walsender", walsender)]);
                    let mut r = bench.load(secs, None, None, round).context("case c");
                    if let Ok(r) = r.as_mut() {
                        cpu.finish(r);
                    }
                    let stopped = bench.stop_receivewal(recv).context("case c: stopping pg_receivewal");
                    let r = r?;
                    stopped?;
                    progress("c", &r);
                    sc.rounds.push(r);
                }
            }
        }
    }

    let lag = if a.lag_seconds > 0 && a.lag_rate > 0 {
        println!("flush lag: b and c at once, {} tx/s for {} s", a.lag_rate, a.lag_seconds);
        Some(lag_phase(&mut bench, a).context("flush-lag phase")?)
    } else {
        None
    };

    let receivewal_log: Vec<String> = std::fs::read_to_string(root.join("pg_receivewal.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    bench.receiver.stop("TERM").context("stopping the walship receiver")?;
    let mut problems = Vec::new();
    for (who, file) in [("sender", "sender.log"), ("receiver", "receiver.log")] {
        let f = File::open(root.join(file)).with_context(|| format!("reading {file}"))?;
        for line in BufReader::new(f).lines() {
            let line = line?;
            if line.contains(" WARN ") || line.contains(" ERROR ") {
                problems.push(format!("{who}: {line}"));
            }
        }
    }

    for s in [&mut sa, &mut sb, &mut sc] {
        s.finish();
    }
    let pgb_tps: Vec<f64> = pgb.iter().map(|r| r.tps).collect();
    let loss = |s: &CaseSummary| 1.0 - s.tps_median / sa.tps_median;
    let (loss_b, loss_c) = (loss(&sb), loss(&sc));
    let report = PgReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        postgres,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        seconds: a.seconds,
        clients: a.clients,
        rounds: a.rounds,
        scale: a.scale,
        transaction: "pgbench -N (simple update): BEGIN; UPDATE pgbench_accounts; SELECT abalance; INSERT INTO \
                      pgbench_history; then `COMMIT; SELECT pg_current_wal_flush_lsn()` in one round trip",
        order,
        a: sa,
        a_pgbench_tps_median: median(&pgb_tps),
        a_pgbench: pgb,
        b: sb,
        b_satisfied_wait_ms: quantiles(&floor),
        c: sc,
        loss_b,
        loss_c,
        loss_ratio: (loss_c > 0.0).then(|| loss_b / loss_c),
        target_loss_ratio: 0.5,
        lag,
        walship_log_problems: problems,
        pg_receivewal_log: receivewal_log,
    };
    print_report(&report);
    let path = a.report.clone().unwrap_or_else(|| crate::workspace_root().join("target/bench-report/pg.json"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // The series is long; keep it, it is what the quantiles came from.
    let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!("\nreport written to {}", path.display());
    Ok(())
}

/// `n` waits for position 0 (durable already), one after the other, ms each.
fn satisfied_waits(admin: &str, n: usize) -> Result<Vec<f64>> {
    let client = walship_client::Client::new(admin);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client.wait(walship_client::Wait::position("0").timeout(WAIT_TIMEOUT))?;
        out.push(ms(t.elapsed()));
        if r.outcome != walship_client::Outcome::Durable {
            bail!("a wait for position 0 answered {:?}", r.outcome);
        }
    }
    Ok(out)
}

fn progress(name: &str, r: &LoadRun) {
    println!(
        "  {name}: {:>8.1} tps ({} tx in {:.1} s; commit p50 {:.3} ms{}{})",
        r.tps,
        r.counted,
        r.secs,
        r.commit_ms.p50,
        r.wait_ms.as_ref().map(|w| format!(", wait p50 {:.3} ms", w.p50)).unwrap_or_default(),
        if r.not_durable + r.wait_errors + r.sql_errors > 0 {
            format!(
                "; {} not durable, {} wait errors, {} SQL errors: {}",
                r.not_durable,
                r.wait_errors,
                r.sql_errors,
                r.first_error.as_deref().unwrap_or("")
            )
        } else {
            String::new()
        }
    );
}

fn lag_phase(bench: &mut Bench, a: &PgArgs) -> Result<LagReport> {
    bench.reset_state()?;
    bench.set_sync_standby(true)?;
    bench.checkpoint()?;
    let recv = bench.start_receivewal()?;
    let mut sender = match bench.start_sender() {
        Ok(s) => s,
        Err(e) => {
            let _ = bench.stop_receivewal(recv);
            return Err(e);
        }
    };
    let agent = agent();
    let metrics_url = format!("http://{}/metrics", sender.admin);
    let result = (|| -> Result<LagReport> {
        let before = get_text(&agent, &metrics_url)?;
        let running = AtomicBool::new(true);
        let conninfo = bench.cluster.conninfo();
        let admin = sender.admin.clone();
        let (load, samples) = std::thread::scope(|s| {
            let sampler = s.spawn(|| sample_lag(&conninfo, &admin, &running));
            let load = bench.load(Duration::from_secs(a.lag_seconds), Some(&admin), Some(f64::from(a.lag_rate)), 0);
            running.store(false, Ordering::Relaxed);
            let samples = sampler.join().unwrap_or_else(|_| Err(anyhow!("the sampler panicked")));
            (load, samples)
        });
        let (load, samples) = (load?, samples?);
        let after = get_text(&agent, &metrics_url)?;
        progress("b+c at a fixed rate", &load);
        let (walship_hist_ms, walship_hist_mean_ms) = hist_delta(&before, &after, "walship_flush_lag_seconds");
        let (detection_ms, detection_mean_ms) = hist_delta(&before, &after, "walship_source_detection_delay_seconds");
        let w: Vec<f64> = samples.rows.iter().filter_map(|r| r.1).map(|s| s * 1e3).collect();
        let p: Vec<f64> = samples.rows.iter().filter_map(|r| r.2).map(|s| s * 1e3).collect();
        Ok(LagReport {
            rate_tx_per_s: a.lag_rate,
            secs: load.secs,
            samples: samples.rows.len(),
            walship_v1_lag_zero_samples: w.iter().filter(|x| **x == 0.0).count(),
            walship_v1_lag_failed_samples: samples.rows.iter().filter(|r| r.1.is_none()).count(),
            walship_v1_lag_ms: quantiles(&w),
            walship_hist_ms,
            walship_hist_mean_ms,
            detection_ms,
            detection_mean_ms,
            pg_flush_lag_ms: quantiles(&p),
            pg_flush_lag_null_samples: samples.rows.iter().filter(|r| r.2.is_none() && !r.3).count(),
            pg_flush_lag_failed_samples: samples.rows.iter().filter(|r| r.3).count(),
            series: samples.rows.iter().map(|r| (r.0, r.1.map(|x| x * 1e3), r.2.map(|x| x * 1e3))).collect(),
            load,
        })
    })();
    let s1 = sender.child.stop("TERM");
    let s2 = bench.stop_receivewal(recv);
    let r = result?;
    s1?;
    s2?;
    Ok(r)
}

// ---------------------------------------------------------------- output

fn f(x: f64) -> String {
    if x.is_nan() { "-".into() } else { format!("{x:.2}") }
}

fn print_report(r: &PgReport) {
    let rounds = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
    println!();
    println!(
        "## walship-bench pg: PostgreSQL {}, {} CPUs, scale {}, {} clients, {} s x {} rounds",
        r.postgres, r.cpus, r.scale, r.clients, r.seconds, r.rounds
    );
    println!();
    println!("Command: `{}`", r.command);
    println!("Transaction: {}.", r.transaction);
    println!(
        "Before every case: TRUNCATE pgbench_history, VACUUM, CHECKPOINT (autovacuum off); replication caught up."
    );
    println!("Round orders: {}.", r.order.iter().map(|o| o.join(" ")).collect::<Vec<_>>().join(" | "));
    println!();
    println!("### Throughput (median over rounds)");
    println!();
    println!(
        "| case | what | TPS median | TPS per round | loss vs a | not durable | wait errors | SQL errors | replication CPU ms/tx |"
    );
    println!("|---|---|---:|---|---:|---:|---:|---:|---:|");
    let row = |c: &str, s: &CaseSummary, loss: Option<f64>| {
        println!(
            "| {c} | {} | {:.1} | {} | {} | {} | {} | {} | {} |",
            s.what,
            s.tps_median,
            rounds(&s.tps_rounds),
            loss.map_or("-".into(), |l| format!("{:.1} %", l * 100.0)),
            s.not_durable,
            s.wait_errors,
            s.sql_errors,
            if loss.is_some() { format!("{:.3}", s.replication_cpu_ms_per_tx) } else { "-".into() }
        )
    };
    row("a", &r.a, None);
    let pg_rounds: Vec<f64> = r.a_pgbench.iter().map(|p| p.tps).collect();
    println!(
        "| a-pgbench | primary alone, `pgbench -c {} -j {} -T {} -n -N` (reference) | {:.1} | {} | {} | - | - | {} | - |",
        r.clients,
        r.clients.clamp(1, 2),
        r.seconds,
        r.a_pgbench_tps_median,
        rounds(&pg_rounds),
        format_args!("{:+.1} % vs a", (r.a_pgbench_tps_median / r.a.tps_median - 1.0) * 100.0),
        r.a_pgbench.iter().filter_map(|p| p.failed).sum::<u64>()
    );
    row("b", &r.b, Some(r.loss_b));
    row("c", &r.c, Some(r.loss_c));
    println!();
    match r.loss_ratio {
        Some(x) => println!(
            "loss(b) / loss(c) = {:.1} % / {:.1} % = **{x:.2}** (target <= {}: {})",
            r.loss_b * 100.0,
            r.loss_c * 100.0,
            r.target_loss_ratio,
            if x <= r.target_loss_ratio { "meets" } else { "MISSES" }
        ),
        None => println!(
            "loss(b) / loss(c): undefined, c lost {:.1} % (no loss to compare with); loss(b) = {:.1} %",
            r.loss_c * 100.0,
            r.loss_b * 100.0
        ),
    }
    let per =
        |s: &CaseSummary| s.cpu_ms_per_tx.iter().map(|(k, v)| format!("{k} {v:.3}")).collect::<Vec<_>>().join(", ");
    println!("Replication CPU, ms per transaction: b: {}; c: {}.", per(&r.b), per(&r.c));
    println!();
    println!("### Commit to durable on the mirror (all rounds pooled, {} clients saturating), ms", r.clients);
    println!();
    println!("| case | measured | n | p50 | p90 | p99 | max |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let q = |c: &str, what: &str, q: &Quantiles| {
        println!("| {c} | {what} | {} | {} | {} | {} | {} |", q.n, f(q.p50), f(q.p90), f(q.p99), f(q.max))
    };
    q("a", "COMMIT (local flush only; not on any mirror)", &r.a.commit_ms);
    q("b", "COMMIT (local flush)", &r.b.commit_ms);
    if let Some(w) = &r.b.wait_ms {
        q("b", "COMMIT returned -> walship wait returned", w);
    }
    q("b", "**COMMIT sent -> wait returned durable**", &r.b.commit_durable_ms);
    q("b", "already-satisfied wait, 1 client, idle (the wait API's own floor)", &r.b_satisfied_wait_ms);
    q("c", "**COMMIT (includes pg_receivewal's remote flush)**", &r.c.commit_ms);
    if let Some(l) = &r.lag {
        println!();
        println!(
            "### Flush lag: b and c at once, {} tx/s for {:.1} s ({} tx, {} not durable), sampled every 100 ms ({} samples), ms",
            l.rate_tx_per_s, l.secs, l.load.counted, l.load.not_durable, l.samples
        );
        println!();
        println!("| source | n | NULL / zero | p50 | p90 | p99 | max |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let lq = |what: &str, extra: String, q: &Quantiles| {
            println!("| {what} | {} | {extra} | {} | {} | {} | {} |", q.n, f(q.p50), f(q.p90), f(q.p99), f(q.max))
        };
        lq(
            "walship `/v1/lag` flush_lag_seconds (age of the oldest unflushed byte; 0 = caught up)",
            format!("{} zero, {} failed", l.walship_v1_lag_zero_samples, l.walship_v1_lag_failed_samples),
            &l.walship_v1_lag_ms,
        );
        lq(
            &format!(
                "walship `walship_flush_lag_seconds` histogram, per flush ack (bucket upper bounds; mean {:.2})",
                l.walship_hist_mean_ms
            ),
            "-".into(),
            &l.walship_hist_ms,
        );
        lq(
            &format!(
                "walship `walship_source_detection_delay_seconds` (file event -> tailer saw the bytes; bucket upper bounds; mean {:.2})",
                l.detection_mean_ms
            ),
            "-".into(),
            &l.detection_ms,
        );
        lq(
            "`pg_stat_replication.flush_lag` (lag of the last position reported flushed; non-NULL samples)",
            format!("{} NULL, {} failed", l.pg_flush_lag_null_samples, l.pg_flush_lag_failed_samples),
            &l.pg_flush_lag_ms,
        );
        println!();
        println!(
            "Load in this phase: commit (waits for pg_receivewal) p50 {} / p99 {} ms; walship wait after it p50 {} / p99 {} ms.",
            f(l.load.commit_ms.p50),
            f(l.load.commit_ms.p99),
            f(l.load.wait_ms.as_ref().map_or(f64::NAN, |w| w.p50)),
            f(l.load.wait_ms.as_ref().map_or(f64::NAN, |w| w.p99)),
        );
    }
    println!();
    if r.walship_log_problems.is_empty() {
        println!("walship sender and receiver logs: no WARN or ERROR lines.");
    } else {
        println!("walship sender and receiver logs: {} WARN/ERROR lines, first ones:", r.walship_log_problems.len());
        for l in r.walship_log_problems.iter().take(10) {
            println!("    {l}");
        }
    }
    let rw: Vec<&String> = r.pg_receivewal_log.iter().filter(|l| !l.trim().is_empty()).collect();
    if !rw.is_empty() {
        println!("pg_receivewal printed {} lines, last ones:", rw.len());
        for l in rw.iter().rev().take(5).rev() {
            println!("    {l}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn() {
        assert_eq!(parse_lsn("0/5582898").ok(), Some(89663640));
        assert_eq!(parse_lsn("1/0").ok(), Some(1 << 32));
    }

    #[test]
    fn histogram_delta() {
        let before = "walship_flush_lag_seconds_bucket{receiver=\"r\",le=\"0.001\"} 1\n\
                      walship_flush_lag_seconds_bucket{receiver=\"r\",le=\"0.002\"} 1\n\
                      walship_flush_lag_seconds_bucket{receiver=\"r\",le=\"+Inf\"} 1\n\
                      walship_flush_lag_seconds_sum{receiver=\"r\"} 0.0005\n\
                      walship_flush_lag_seconds_count{receiver=\"r\"} 1\n";
        let after = "walship_flush_lag_seconds_bucket{receiver=\"r\",le=\"0.001\"} 3\n\
                     walship_flush_lag_seconds_bucket{receiver=\"r\",le=\"0.002\"} 5\n\
                     walship_flush_lag_seconds_bucket{receiver=\"r\",le=\"+Inf\"} 5\n\
                     walship_flush_lag_seconds_sum{receiver=\"r\"} 0.0065\n\
                     walship_flush_lag_seconds_count{receiver=\"r\"} 5\n";
        let (q, mean) = hist_delta(before, after, "walship_flush_lag_seconds");
        assert_eq!(q.n, 4);
        assert_eq!(q.p50, 1.0);
        assert_eq!(q.p99, 2.0);
        assert!((mean - 1.5).abs() < 1e-9);
    }
}

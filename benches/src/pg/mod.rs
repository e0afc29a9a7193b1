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
use std::process::Command;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use walship_tests::pg::{PgCluster, PgOptions, pg_bin};

use crate::data::ScratchDir;

mod env;
mod lag;
mod load;
mod procs;
mod report;

use env::*;
use lag::*;
use load::*;
use procs::*;
use report::*;

pub use report::PgReport;

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

/// The whole run; the caller prints or writes the report.
pub fn run(a: &PgArgs) -> Result<PgReport> {
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
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| run_in(a, &walship, scratch.path())));
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

fn run_in(a: &PgArgs, walship: &Path, root: &Path) -> Result<PgReport> {
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
        "--admin-addr".into(),
        "127.0.0.1:0".into(),
    ];
    rargs.extend(tls(&certs, "server"));
    let mut rcmd = Command::new(walship);
    rcmd.args(&rargs).env("WALSHIP_LOG", "info");
    let mut receiver = Child::spawn("walship receive", rcmd, &root.join("receiver.log"))?;
    let line = receiver.wait_log("receiver listening", 0, Duration::from_secs(30))?;
    let receiver_addr = walship_tests::field(&line, "listen").context("no listen= in the receiver's log")?;
    let line = receiver.wait_log("admin endpoint listening", 0, Duration::from_secs(30))?;
    let receiver_admin = walship_tests::field(&line, "admin").context("no admin= in the receiver's log line")?;

    let mut bench = Bench {
        walship: walship.to_path_buf(),
        root: root.to_path_buf(),
        certs,
        cluster,
        admin,
        receiver,
        receiver_addr,
        receiver_admin,
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
    Ok(report)
}

/// `pg` as a subcommand: the markdown on stdout, the JSON report.
pub fn command(a: &PgArgs) -> Result<()> {
    let report = run(a)?;
    println!("\n{}", report.markdown());
    let path = a.report.clone().unwrap_or_else(|| crate::workspace_root().join("target/bench-report/pg.json"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // The series is long; keep it, it is what the quantiles came from.
    let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!("report written to {}", path.display());
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
    let receiver_metrics_url = format!("http://{}/metrics", bench.receiver_admin);
    let result = (|| -> Result<LagReport> {
        let before = get_text(&agent, &metrics_url)?;
        let receiver_before = get_text(&agent, &receiver_metrics_url)?;
        let running = AtomicBool::new(true);
        let conninfo = bench.cluster.conninfo();
        let admin = sender.admin.clone();
        let (load, samples, probes) = std::thread::scope(|s| {
            let sampler = s.spawn(|| sample_lag(&conninfo, &admin, &running));
            let prober = s.spawn(|| probe_durable(&conninfo, &admin, &running));
            let load = bench.load(Duration::from_secs(a.lag_seconds), Some(&admin), Some(f64::from(a.lag_rate)), 0);
            running.store(false, Ordering::Relaxed);
            let samples = sampler.join().unwrap_or_else(|_| Err(anyhow!("the sampler panicked")));
            let probes = prober.join().unwrap_or_else(|_| Err(anyhow!("the probe panicked")));
            (load, samples, probes)
        });
        let (load, samples, probes) = (load?, samples?, probes?);
        let pw: Vec<f64> = probes.iter().filter_map(|p| p.walship_ms).collect();
        let pp: Vec<f64> = probes.iter().filter_map(|p| p.pg_receivewal_ms).collect();
        let after = get_text(&agent, &metrics_url)?;
        let receiver_after = get_text(&agent, &receiver_metrics_url)?;
        let (receiver_fsync_ms, _) = hist_delta(&receiver_before, &receiver_after, "walship_fsync_duration_seconds");
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
            receiver_fsync_ms,
            probe_walship_ms: quantiles(&pw),
            probe_pg_ms: quantiles(&pp),
            probe_timeouts: (probes.len() - pw.len(), probes.len() - pp.len()),
            probes,
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

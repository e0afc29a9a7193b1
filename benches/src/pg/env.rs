//! The primary, the walship receiver and sender, pg_receivewal, CPU meters, HTTP.
use super::*;

// ---------------------------------------------------------------- environment

/// The primary, the persistent walship receiver, and how to start the rest.
pub(crate) struct Bench {
    pub(crate) walship: PathBuf,
    pub(crate) root: PathBuf,
    pub(crate) certs: PathBuf,
    pub(crate) cluster: PgCluster,
    pub(crate) admin: postgres::Client,
    pub(crate) receiver: Child,
    pub(crate) receiver_addr: String,
    /// The receiver's admin endpoint (its fdatasync histogram).
    pub(crate) receiver_admin: String,
    pub(crate) clients: usize,
    pub(crate) scale: u32,
}

/// The walship sender of case b, with its admin address.
pub(crate) struct SenderProc {
    pub(crate) child: Child,
    pub(crate) admin: String,
}

pub(crate) fn tls(certs: &Path, which: &str) -> Vec<String> {
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
    pub(crate) fn sql(&mut self, q: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut rows = Vec::new();
        for msg in self.admin.simple_query(q).with_context(|| format!("SQL {q:?}"))? {
            if let postgres::SimpleQueryMessage::Row(row) = msg {
                rows.push((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect());
            }
        }
        Ok(rows)
    }

    pub(crate) fn one(&mut self, q: &str) -> Result<String> {
        self.sql(q)?
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .with_context(|| format!("SQL {q:?} gave no value"))
    }

    /// The walsender backend serving pg_receivewal.
    pub(crate) fn walsender_pid(&mut self) -> Result<u32> {
        let pid = self.one(&format!("SELECT pid FROM pg_stat_replication WHERE application_name = '{APP_NAME}'"))?;
        pid.parse().with_context(|| format!("walsender pid {pid:?}"))
    }

    pub(crate) fn flush_lsn(&mut self) -> Result<String> {
        self.one("SELECT pg_current_wal_flush_lsn()::text")
    }

    /// `synchronous_standby_names`, reloaded; `CHECKPOINT` makes the
    /// checkpointer (which publishes whether sync standbys are defined) take it.
    pub(crate) fn set_sync_standby(&mut self, on: bool) -> Result<()> {
        if on {
            self.sql(&format!("ALTER SYSTEM SET synchronous_standby_names = '{APP_NAME}'"))?;
        } else {
            self.sql("ALTER SYSTEM RESET synchronous_standby_names")?;
        }
        self.sql("SELECT pg_reload_conf()")?;
        Ok(())
    }

    pub(crate) fn checkpoint(&mut self) -> Result<()> {
        self.sql("CHECKPOINT").map(|_| ())
    }

    /// The same starting state for every case (autovacuum is off): an empty
    /// history table, accounts vacuumed, then a checkpoint.
    pub(crate) fn reset_state(&mut self) -> Result<()> {
        self.sql("TRUNCATE pgbench_history")?;
        self.sql("VACUUM pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history")?;
        self.checkpoint()
    }

    /// Starts `walship send` on pg_wal and waits until its receiver has
    /// flushed everything PostgreSQL had flushed.
    pub(crate) fn start_sender(&mut self) -> Result<SenderProc> {
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
    pub(crate) fn start_receivewal(&mut self) -> Result<Child> {
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
    pub(crate) fn stop_receivewal(&mut self, mut child: Child) -> Result<()> {
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

    pub(crate) fn load(
        &self,
        duration: Duration,
        wait_admin: Option<&str>,
        rate: Option<f64>,
        round: usize,
    ) -> Result<LoadRun> {
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

    pub(crate) fn pgbench(&self, seconds: u64, round: usize) -> Result<PgbenchRun> {
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
pub(crate) fn cpu_secs(pid: u32) -> f64 {
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
pub(crate) struct CpuMeter(Vec<(&'static str, u32, f64)>);

impl CpuMeter {
    pub(crate) fn start(pids: &[(&'static str, u32)]) -> CpuMeter {
        CpuMeter(pids.iter().map(|(n, p)| (*n, *p, cpu_secs(*p))).collect())
    }

    pub(crate) fn finish(self, r: &mut LoadRun) {
        for (name, pid, before) in self.0 {
            r.cpu_secs.insert(name.to_string(), cpu_secs(pid) - before);
        }
        r.replication_cpu_secs = r.cpu_secs.values().sum();
    }
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into()
}

pub(crate) fn get_json(agent: &ureq::Agent, url: &str) -> Result<serde_json::Value> {
    let text = agent.get(url).call()?.body_mut().read_to_string()?;
    Ok(serde_json::from_str(&text)?)
}

pub(crate) fn get_text(agent: &ureq::Agent, url: &str) -> Result<String> {
    Ok(agent.get(url).call()?.body_mut().read_to_string()?)
}

/// `X/Y` → byte position.
pub(crate) fn parse_lsn(s: &str) -> Result<u64> {
    let (hi, lo) = s.trim().split_once('/').with_context(|| format!("not an LSN: {s:?}"))?;
    Ok((u64::from_str_radix(hi, 16)? << 32) | u64::from_str_radix(lo, 16)?)
}

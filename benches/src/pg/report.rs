//! The report: what one run measured, and how it is shown (markdown, plots).
use std::fmt::Write as _;

use super::*;

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

pub(crate) fn quantiles(v: &[f64]) -> Quantiles {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let q = |q: f64| v.get(((v.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(f64::NAN);
    Quantiles { n: v.len(), p50: q(0.5), p90: q(0.9), p99: q(0.99), max: v.last().copied().unwrap_or(f64::NAN) }
}

pub(crate) fn median(v: &[f64]) -> f64 {
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
    pub(crate) raw: RawLatencies,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct RawLatencies {
    pub(crate) commit: Vec<f64>,
    pub(crate) wait: Vec<f64>,
    pub(crate) total: Vec<f64>,
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
    pub(crate) fn new(what: &str) -> Self {
        CaseSummary { what: what.into(), ..Default::default() }
    }

    pub(crate) fn finish(&mut self) {
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
    /// The walship receiver's fdatasync durations in the phase
    /// (`walship_fsync_duration_seconds`, bucket upper bounds), ms.
    pub receiver_fsync_ms: Quantiles,
    /// The commit → reported-durable probe ([`crate::pg::lag::probe_durable`]), ms: walship.
    pub probe_walship_ms: Quantiles,
    /// The same probes, pg_receivewal.
    pub probe_pg_ms: Quantiles,
    /// Probes that one side did not answer within the probe timeout (walship, pg_receivewal).
    pub probe_timeouts: (usize, usize),
    pub probes: Vec<crate::pg::lag::Probe>,
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

// ---------------------------------------------------------------- output

pub(crate) fn f(x: f64) -> String {
    if x.is_nan() { "-".into() } else { format!("{x:.2}") }
}

/// `writeln!` into the report's string (writing to a `String` cannot fail).
macro_rules! w {
    ($s:expr) => {{
        let _ = writeln!($s);
    }};
    ($s:expr, $($t:tt)*) => {{
        let _ = writeln!($s, $($t)*);
    }};
}

impl PgReport {
    /// The markdown section: throughput and loss against the target, commit
    /// latencies, the flush-lag phase, and the logs' warnings.
    pub fn markdown(&self) -> String {
        let r = self;
        let mut s = String::new();
        let rounds = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
        w!(
            s,
            "### pg: walship semi-sync vs pg_receivewal as the synchronous standby (PostgreSQL {}, {} CPUs, scale {}, {} clients, {} s x {} rounds)",
            r.postgres,
            r.cpus,
            r.scale,
            r.clients,
            r.seconds,
            r.rounds
        );
        w!(s);
        w!(
            s,
            "One real PostgreSQL primary (`fsync = on`, `synchronous_commit = on`) on this machine's disk; every case \
             runs the same load client for the same time, in an order rotated every round."
        );
        w!(s, "Transaction: {}.", r.transaction);
        w!(
            s,
            "Before every case: TRUNCATE pgbench_history, VACUUM, CHECKPOINT (autovacuum off); replication caught up."
        );
        w!(s, "Round orders: {}.", r.order.iter().map(|o| o.join(" ")).collect::<Vec<_>>().join(" | "));
        w!(s, "Command: `{}`", r.command);
        w!(s);
        w!(s, "#### Throughput (median over rounds)");
        w!(s);
        w!(
            s,
            "| case | what | TPS median | TPS per round | loss vs a | not durable | wait errors | SQL errors | replication CPU ms/tx |"
        );
        w!(s, "|---|---|---:|---|---:|---:|---:|---:|---:|");
        let row = |c: &str, cs: &CaseSummary, loss: Option<f64>| {
            format!(
                "| {c} | {} | {:.1} | {} | {} | {} | {} | {} | {} |",
                cs.what,
                cs.tps_median,
                rounds(&cs.tps_rounds),
                loss.map_or("-".into(), |l| format!("{:.1} %", l * 100.0)),
                cs.not_durable,
                cs.wait_errors,
                cs.sql_errors,
                if loss.is_some() { format!("{:.3}", cs.replication_cpu_ms_per_tx) } else { "-".into() }
            )
        };
        w!(s, "{}", row("a", &r.a, None));
        let pg_rounds: Vec<f64> = r.a_pgbench.iter().map(|p| p.tps).collect();
        w!(
            s,
            "| a-pgbench | primary alone, `pgbench -c {} -j {} -T {} -n -N` (reference) | {:.1} | {} | {} | - | - | {} | - |",
            r.clients,
            r.clients.clamp(1, 2),
            r.seconds,
            r.a_pgbench_tps_median,
            rounds(&pg_rounds),
            format_args!("{:+.1} % vs a", (r.a_pgbench_tps_median / r.a.tps_median - 1.0) * 100.0),
            r.a_pgbench.iter().filter_map(|p| p.failed).sum::<u64>()
        );
        w!(s, "{}", row("b", &r.b, Some(r.loss_b)));
        w!(s, "{}", row("c", &r.c, Some(r.loss_c)));
        w!(s);
        match r.loss_ratio {
            Some(x) => w!(
                s,
                "loss(b) / loss(c) = {:.1} % / {:.1} % = **{x:.2}** (target <= {}: {})",
                r.loss_b * 100.0,
                r.loss_c * 100.0,
                r.target_loss_ratio,
                if x <= r.target_loss_ratio { "met" } else { "MISSED" }
            ),
            None => w!(
                s,
                "loss(b) / loss(c): undefined, c lost {:.1} % (no loss to compare with); loss(b) = {:.1} %",
                r.loss_c * 100.0,
                r.loss_b * 100.0
            ),
        }
        let per = |cs: &CaseSummary| {
            cs.cpu_ms_per_tx.iter().map(|(k, v)| format!("{k} {v:.3}")).collect::<Vec<_>>().join(", ")
        };
        w!(s);
        w!(s, "Replication CPU, ms per transaction: b: {}; c: {}.", per(&r.b), per(&r.c));
        w!(s);
        w!(s, "#### Commit to durable on the mirror (all rounds pooled, {} clients saturating), ms", r.clients);
        w!(s);
        w!(s, "| case | measured | n | p50 | p90 | p99 | max |");
        w!(s, "|---|---|---:|---:|---:|---:|---:|");
        let q = |c: &str, what: &str, q: &Quantiles| {
            format!("| {c} | {what} | {} | {} | {} | {} | {} |", q.n, f(q.p50), f(q.p90), f(q.p99), f(q.max))
        };
        w!(s, "{}", q("a", "COMMIT (local flush only; not on any mirror)", &r.a.commit_ms));
        w!(s, "{}", q("b", "COMMIT (local flush)", &r.b.commit_ms));
        if let Some(wq) = &r.b.wait_ms {
            w!(s, "{}", q("b", "COMMIT returned -> walship wait returned", wq));
        }
        w!(s, "{}", q("b", "**COMMIT sent -> wait returned durable**", &r.b.commit_durable_ms));
        w!(
            s,
            "{}",
            q("b", "already-satisfied wait, 1 client, idle (the wait API's own floor)", &r.b_satisfied_wait_ms)
        );
        w!(s, "{}", q("c", "**COMMIT (includes pg_receivewal's remote flush)**", &r.c.commit_ms));
        if let Some(l) = &r.lag {
            w!(s);
            w!(
                s,
                "#### Flush lag: b and c at once, {} tx/s for {:.1} s ({} tx, {} not durable), sampled every 100 ms ({} samples), ms",
                l.rate_tx_per_s,
                l.secs,
                l.load.counted,
                l.load.not_durable,
                l.samples
            );
            w!(s);
            w!(s, "| source | n | NULL / zero | p50 | p90 | p99 | max |");
            w!(s, "|---|---:|---:|---:|---:|---:|---:|");
            let lq = |what: &str, extra: String, q: &Quantiles| {
                format!("| {what} | {} | {extra} | {} | {} | {} | {} |", q.n, f(q.p50), f(q.p90), f(q.p99), f(q.max))
            };
            w!(
                s,
                "{}",
                lq(
                    "walship `/v1/lag` flush_lag_seconds (age of the oldest unflushed byte; 0 = caught up)",
                    format!("{} zero, {} failed", l.walship_v1_lag_zero_samples, l.walship_v1_lag_failed_samples),
                    &l.walship_v1_lag_ms,
                )
            );
            w!(
                s,
                "{}",
                lq(
                    &format!(
                        "walship `walship_flush_lag_seconds` histogram, per flush ack (bucket upper bounds; mean {:.2})",
                        l.walship_hist_mean_ms
                    ),
                    "-".into(),
                    &l.walship_hist_ms,
                )
            );
            w!(
                s,
                "{}",
                lq(
                    &format!(
                        "walship `walship_source_detection_delay_seconds` (file event -> tailer saw the bytes; bucket upper bounds; mean {:.2})",
                        l.detection_mean_ms
                    ),
                    "-".into(),
                    &l.detection_ms,
                )
            );
            w!(
                s,
                "{}",
                lq(
                    "`pg_stat_replication.flush_lag` (lag of the last position reported flushed; non-NULL samples)",
                    format!("{} NULL, {} failed", l.pg_flush_lag_null_samples, l.pg_flush_lag_failed_samples),
                    &l.pg_flush_lag_ms,
                )
            );
            w!(
                s,
                "{}",
                lq(
                    "**probe: commit -> walship receiver's fdatasync acknowledged** (sender `/v1/lag` flush_pos >= the commit's LSN)",
                    format!("{} timed out", l.probe_timeouts.0),
                    &l.probe_walship_ms,
                )
            );
            w!(
                s,
                "{}",
                lq(
                    "**probe: commit -> pg_receivewal's fsync acknowledged** (`pg_stat_replication.flush_lsn` >= the same LSN)",
                    format!("{} timed out", l.probe_timeouts.1),
                    &l.probe_pg_ms,
                )
            );
            w!(
                s,
                "{}",
                lq(
                    "walship receiver's own fdatasync (`walship_fsync_duration_seconds`, bucket upper bounds)",
                    "-".into(),
                    &l.receiver_fsync_ms,
                )
            );
            w!(s);
            w!(
                s,
                "The probe commits on a session of its own with `synchronous_commit = local` every {} ms, takes the \
                 primary's flush LSN, and polls both views at once, each from its own thread, as fast as they answer. \
                 Both are the primary side's record of a standby's durability report, so this is the like-for-like \
                 comparison; the histogram rows above are bucket upper bounds.",
                super::lag::PROBE_EVERY.as_millis()
            );
            w!(s);
            w!(
                s,
                "Load in this phase: commit (waits for pg_receivewal) p50 {} / p99 {} ms; walship wait after it p50 {} / p99 {} ms.",
                f(l.load.commit_ms.p50),
                f(l.load.commit_ms.p99),
                f(l.load.wait_ms.as_ref().map_or(f64::NAN, |w| w.p50)),
                f(l.load.wait_ms.as_ref().map_or(f64::NAN, |w| w.p99)),
            );
        }
        w!(s);
        if r.walship_log_problems.is_empty() {
            w!(s, "walship sender and receiver logs: no WARN or ERROR lines.");
        } else {
            w!(s, "walship sender and receiver logs: {} WARN/ERROR lines, first ones:", r.walship_log_problems.len());
            w!(s);
            for l in r.walship_log_problems.iter().take(10) {
                w!(s, "    {l}");
            }
        }
        let rw: Vec<&String> = r.pg_receivewal_log.iter().filter(|l| !l.trim().is_empty()).collect();
        if !rw.is_empty() {
            w!(s);
            w!(s, "pg_receivewal printed {} lines, last ones:", rw.len());
            w!(s);
            for l in rw.iter().rev().take(5).rev() {
                w!(s, "    {l}");
            }
        }
        s
    }

    /// TPS per case, and the flush-lag quantiles of walship against
    /// pg_receivewal (when the flush-lag phase ran).
    pub fn plots(&self, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        let tps = dir.join("pg_tps.png");
        let bars = vec![
            ("a primary alone".to_string(), self.a.tps_median),
            ("a-pgbench (reference)".to_string(), self.a_pgbench_tps_median),
            ("b walship semi-sync".to_string(), self.b.tps_median),
            ("c pg_receivewal sync".to_string(), self.c.tps_median),
        ];
        let title =
            format!("pg: TPS, {} clients, median of {} round(s) of {} s", self.clients, self.rounds, self.seconds);
        crate::plot::bar_chart(&tps, &title, "transactions per second", &bars)?;
        out.push(("pg: TPS per case (median over rounds)".to_string(), tps));
        if let Some(l) = &self.lag {
            // walship's per-ack samples are the counterpart of pg's flush_lag
            // (both: at the flush report, the age of the newest byte it covers,
            // counted from when the source had it); bucket upper bounds, so
            // walship's bars are, if anything, high.
            let path = dir.join("pg_flush_lag.png");
            let (wq, pq) = (&l.probe_walship_ms, &l.probe_pg_ms);
            let mut bars = Vec::new();
            for (name, w, p) in
                [("p50", wq.p50, pq.p50), ("p90", wq.p90, pq.p90), ("p99", wq.p99, pq.p99), ("max", wq.max, pq.max)]
            {
                bars.push((format!("walship\n{name}"), w));
                bars.push((format!("pg_receivewal\n{name}"), p));
            }
            let title = format!("pg: commit -> standby durable at {} tx/s, walship vs pg_receivewal", l.rate_tx_per_s);
            crate::plot::bar_chart(&path, &title, "flush lag (ms)", &bars)?;
            let caption = "pg: commit -> durable on the standby, probed the same way for both (ms)";
            out.push((caption.to_string(), path));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn lsn() {
        assert_eq!(parse_lsn("0/5582898").ok(), Some(89663640));
        assert_eq!(parse_lsn("1/0").ok(), Some(1 << 32));
    }

    #[test]
    pub(crate) fn histogram_delta() {
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

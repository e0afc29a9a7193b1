//! Flush-lag sampling: /v1/lag against pg_stat_replication, histograms from /metrics.
use super::*;

// ---------------------------------------------------------------- lag sampling

#[derive(Debug, Default)]
pub(crate) struct Samples {
    /// (seconds since start, walship /v1/lag flush lag s, pg flush_lag s, pg query failed)
    pub(crate) rows: Vec<(f64, Option<f64>, Option<f64>, bool)>,
}

/// Every 100 ms: `/v1/lag` then `pg_stat_replication.flush_lag`, until `running` clears.
pub(crate) fn sample_lag(conninfo: &str, admin: &str, running: &AtomicBool) -> Result<Samples> {
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
pub(crate) fn parse_hist(text: &str, name: &str) -> (BTreeMap<u64, (f64, u64)>, f64, u64) {
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
pub(crate) fn hist_delta(before: &str, after: &str, name: &str) -> (Quantiles, f64) {
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

// ---------------------------------------------------------------- commit → durable probe

/// One probe: how long after a commit returned each replica reported it durable, ms
/// (`None`: not within [`PROBE_TIMEOUT`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Probe {
    /// Seconds since the phase began.
    pub at: f64,
    pub walship_ms: Option<f64>,
    pub pg_receivewal_ms: Option<f64>,
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the probe commits: 300 probes in the default 15 s phase, so
/// that its p99 is not simply its maximum (it was every 200 ms, 76 probes).
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(50);

/// Every [`PROBE_EVERY`], on a session of its own with `synchronous_commit = local`
/// (so that its COMMIT returns once the primary flushed it, waiting for no
/// standby), commits a transaction and takes the primary's flush LSN, then
/// polls two views of the same thing *at once*, each from its own thread:
/// the walship sender's `/v1/lag` (`receivers[0].flush_pos`, the position
/// the receiver acknowledged as fdatasync'ed) and `pg_stat_replication.flush_lsn`
/// of pg_receivewal (the position it reported as fsync'ed), until each reaches
/// the LSN. Both are the primary side's view of a standby's durability
/// report, polled the same way, so the probe's own cost hits both alike.
pub(crate) fn probe_durable(conninfo: &str, admin: &str, running: &AtomicBool) -> Result<Vec<Probe>> {
    let mut session = postgres::Client::connect(conninfo, postgres::NoTls).context("probe connect")?;
    session.batch_execute("SET synchronous_commit = local").context("probe: synchronous_commit")?;
    let mut watcher = postgres::Client::connect(conninfo, postgres::NoTls).context("probe watcher connect")?;
    let flush_q = watcher
        .prepare(&format!("SELECT flush_lsn::text FROM pg_stat_replication WHERE application_name = '{APP_NAME}'"))?;
    let agent = agent();
    let url = format!("http://{admin}/v1/lag");
    let start = Instant::now();
    let mut next = start;
    let mut out = Vec::new();
    while running.load(Ordering::Relaxed) {
        next += PROBE_EVERY;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        session.batch_execute("BEGIN; SELECT txid_current(); COMMIT").context("probe commit")?;
        let committed = Instant::now();
        let lsn: String = session.query_one("SELECT pg_current_wal_flush_lsn()::text", &[])?.get(0);
        let lsn = parse_lsn(&lsn)?;
        let (w, p) = std::thread::scope(|s| {
            let w = s.spawn(|| {
                poll_until(committed, || {
                    get_json(&agent, &url)
                        .ok()
                        .and_then(|v| v["receivers"][0]["flush_pos"].as_u64())
                        .is_some_and(|pos| pos >= lsn)
                })
            });
            let p = poll_until(committed, || {
                watcher
                    .query_opt(&flush_q, &[])
                    .ok()
                    .flatten()
                    .and_then(|row| row.get::<_, Option<String>>(0))
                    .and_then(|t| parse_lsn(&t).ok())
                    .is_some_and(|pos| pos >= lsn)
            });
            (w.join().unwrap_or(None), p)
        });
        out.push(Probe { at: start.elapsed().as_secs_f64(), walship_ms: w, pg_receivewal_ms: p });
    }
    Ok(out)
}

/// Milliseconds from `since` until `reached` says yes, polling as fast as it answers.
fn poll_until(since: Instant, mut reached: impl FnMut() -> bool) -> Option<f64> {
    loop {
        if reached() {
            return Some(since.elapsed().as_secs_f64() * 1e3);
        }
        if since.elapsed() > PROBE_TIMEOUT {
            return None;
        }
    }
}

//! HTTP helpers for the admin endpoint: fetching `/v1/lag` and `/metrics`,
//! reading a histogram out of the metrics text, and a thread that polls a
//! receiver's `/v1/lag` to see independently when bytes became durable.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// An HTTP client with a short timeout that keeps connections alive.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// `GET http://{addr}{path}` with `agent`: the status and the body.
pub fn get_with(agent: &ureq::Agent, addr: &str, path: &str) -> Result<(u16, String), String> {
    let url = format!("http://{addr}{path}");
    let mut resp = agent.get(&url).call().map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().map_err(|e| format!("GET {url}: body: {e}"))?;
    Ok((status, body))
}

/// `GET http://{addr}{path}`; panics unless it answers 200.
pub fn get(addr: &str, path: &str) -> String {
    let (status, body) = get_with(&agent(), addr, path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "GET http://{addr}{path} answered {status}: {body}");
    body
}

/// `/v1/lag` of the admin endpoint at `addr`, as JSON.
pub fn lag(addr: &str) -> Value {
    let body = get(addr, "/v1/lag");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/v1/lag of {addr} is not JSON ({e}): {body}"))
}

/// `/metrics` of the admin endpoint at `addr`.
pub fn metrics(addr: &str) -> String {
    get(addr, "/metrics")
}

/// A histogram read from metrics text: cumulative `(le, count)` pairs
/// ending with `+Inf`, plus `_count` and `_sum`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl Hist {
    /// The observations since `earlier` (both cumulative since start).
    pub fn since(&self, earlier: &Hist) -> Hist {
        assert_eq!(self.buckets.len(), earlier.buckets.len(), "same bucket layout");
        let buckets = self
            .buckets
            .iter()
            .zip(&earlier.buckets)
            .map(|((le, c), (le0, c0))| {
                assert_eq!(le, le0, "same bucket bounds");
                (*le, c - c0)
            })
            .collect();
        Hist { buckets, count: self.count - earlier.count, sum: self.sum - earlier.sum }
    }

    /// Index of the bucket holding the `q`-quantile: the first whose
    /// cumulative count is at least `ceil(q · count)`; `None` when empty.
    pub fn quantile_index(&self, q: f64) -> Option<usize> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        self.buckets.iter().position(|(_, c)| *c >= rank)
    }

    /// The `q`-quantile as the upper bound of the bucket holding it.
    pub fn quantile_upper(&self, q: f64) -> Option<f64> {
        self.quantile_index(q).map(|i| self.buckets[i].0)
    }

    /// The upper bounds, ending with `+Inf`.
    pub fn bounds(&self) -> Vec<f64> {
        self.buckets.iter().map(|(le, _)| *le).collect()
    }
}

/// A sample: name, labels, value as written.
pub type Sample = (String, Vec<(String, String)>, String);

/// Splits a sample line `name{a="x",b="y"} value [...]` into name, labels and value.
pub fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i..]),
        None => {
            let mut it = line.split_whitespace();
            let name = it.next()?;
            return Some((name.to_string(), Vec::new(), it.next()?.to_string()));
        }
    };
    let close = rest.find('}')?;
    let mut labels = Vec::new();
    let mut s = &rest[1..close];
    while !s.is_empty() {
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        let after = s[eq + 1..].strip_prefix('"')?;
        let end = after.find('"')?;
        labels.push((key, after[..end].to_string()));
        s = after[end + 1..].trim_start_matches(',');
    }
    let value = rest[close + 1..].split_whitespace().next()?.to_string();
    Some((name.to_string(), labels, value))
}

fn has_labels(labels: &[(String, String)], want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
}

/// The value of the sample `name` with (at least) the labels `want`.
pub fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter_map(parse_sample)
        .find(|(n, l, _)| n == name && has_labels(l, want))
        .and_then(|(_, _, v)| parse_f64(&v))
}

fn parse_f64(v: &str) -> Option<f64> {
    match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => v.parse().ok(),
    }
}

/// The histogram `name` (without `_bucket`) with the labels `want`; `None`
/// when the text has no such series.
pub fn histogram(text: &str, name: &str, want: &[(&str, &str)]) -> Option<Hist> {
    let (bucket, count, sum) = (format!("{name}_bucket"), format!("{name}_count"), format!("{name}_sum"));
    let mut h = Hist { buckets: Vec::new(), count: 0, sum: 0.0 };
    let (mut have_count, mut have_sum) = (false, false);
    for (n, l, v) in text.lines().filter_map(parse_sample) {
        if !has_labels(&l, want) {
            continue;
        }
        if n == bucket {
            let le = l.iter().find(|(k, _)| k == "le").and_then(|(_, v)| parse_f64(v))?;
            h.buckets.push((le, v.parse().ok()?));
        } else if n == count {
            h.count = v.parse().ok()?;
            have_count = true;
        } else if n == sum {
            h.sum = v.parse().ok()?;
            have_sum = true;
        }
    }
    if h.buckets.is_empty() || !have_count || !have_sum {
        return None;
    }
    h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some(h)
}

/// One reading of a receiver's durable position: the request went out at
/// `sent`, the answer came back at `received`.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub sent: Instant,
    pub received: Instant,
    pub flushed_pos: u64,
}

impl Reading {
    /// The middle of the request: the reading is from somewhere in `[sent, received]`.
    pub fn at(&self) -> Instant {
        self.sent + (self.received - self.sent) / 2
    }
}

/// A thread polling a receiver's `/v1/lag` every `every`, recording
/// `flushed_pos` with the instants of each request.
#[derive(Debug)]
pub struct FlushPoller {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Reading>>>,
}

impl FlushPoller {
    pub fn start(addr: &str, every: Duration) -> FlushPoller {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let addr = addr.to_string();
        let handle = std::thread::spawn(move || {
            let agent = agent();
            let mut out = Vec::with_capacity(1 << 16);
            while !s.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let (status, body) = get_with(&agent, &addr, "/v1/lag").unwrap_or_else(|e| panic!("{e}"));
                let received = Instant::now();
                assert_eq!(status, 200, "/v1/lag answered {status}: {body}");
                let v: Value = serde_json::from_str(&body).expect("/v1/lag JSON");
                let flushed_pos = v["flushed_pos"].as_u64().expect("flushed_pos");
                out.push(Reading { sent, received, flushed_pos });
                if let Some(wait) = (sent + every).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            out
        });
        FlushPoller { stop, handle: Some(handle) }
    }

    /// Stops polling; returns the readings in order.
    pub fn stop(mut self) -> Vec<Reading> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().expect("stopped once").join().expect("poller thread panicked")
    }
}

impl Drop for FlushPoller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The `q`-quantile (nearest rank) of `xs`, which need not be sorted.
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    assert!(!xs.is_empty(), "quantile of nothing");
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

//! A fixed-bucket latency histogram, cheap enough for the hot path.
//!
//! Buckets are the Prometheus-style cumulative upper bounds in
//! [`LATENCY_BOUNDS`] (50 µs to 60 s, roughly 2–2.5× apart); recording is a
//! binary search and two additions. The admin crate exposes it as an
//! OpenMetrics histogram at scrape time, so nothing metric-specific runs
//! per frame.

/// Upper bounds in seconds: 50 µs … 60 s.
pub const LATENCY_BOUNDS: [f64; 20] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 20.0, 30.0, 60.0,
];

/// Counts of observations per bucket, plus sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Non-cumulative count per bucket; the last slot is `+Inf`.
    counts: [u64; LATENCY_BOUNDS.len() + 1],
    sum: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: [0; LATENCY_BOUNDS.len() + 1], sum: 0.0, count: 0 }
    }
}

impl Histogram {
    /// Records one observation in seconds (negative values count as 0).
    pub fn record(&mut self, secs: f64) {
        let v = if secs.is_finite() { secs.max(0.0) } else { f64::MAX };
        let i = LATENCY_BOUNDS.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of observations in seconds.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// `(upper bound, count in this bucket alone)`, ending with `+Inf`.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BOUNDS.iter().copied().chain([f64::INFINITY]).zip(self.counts.iter().copied()).collect()
    }

    /// `(upper bound, cumulative count)` per bucket, ending with `+Inf`.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        let mut out: Vec<(f64, u64)> = LATENCY_BOUNDS
            .iter()
            .zip(self.counts.iter())
            .map(|(b, c)| {
                acc += c;
                (*b, acc)
            })
            .collect();
        out.push((f64::INFINITY, self.count));
        out
    }

    /// The `q`-quantile (0..=1) as the upper bound of the bucket holding it
    /// (an upper estimate, like Prometheus' `histogram_quantile` without
    /// interpolation); `None` when empty.
    pub fn quantile_upper(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        self.cumulative().into_iter().find(|(_, c)| *c >= rank).map(|(b, _)| b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let mut h = Histogram::default();
        for v in [0.0, 0.00005, 0.00006, 0.003, 70.0, -1.0] {
            h.record(v);
        }
        let c = h.cumulative();
        assert_eq!(c[0], (0.00005, 3), "0, 50 µs (inclusive) and the negative one");
        assert_eq!(c[1], (0.0001, 4));
        assert_eq!(c.iter().find(|(b, _)| *b == 0.005).map(|x| x.1), Some(5));
        assert_eq!(c.last(), Some(&(f64::INFINITY, 6)), "70 s lands in +Inf");
        assert_eq!(h.count(), 6);
        assert!((h.sum() - 70.00311).abs() < 1e-9, "{}", h.sum());
        assert_eq!(h.quantile_upper(0.5), Some(0.00005));
        assert_eq!(h.quantile_upper(0.99), Some(f64::INFINITY));
        assert_eq!(Histogram::default().quantile_upper(0.5), None);
    }
}

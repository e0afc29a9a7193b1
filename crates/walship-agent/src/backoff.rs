//! Capped exponential backoff with jitter for reconnects.
use std::time::Duration;

/// Reconnect delays: `initial`, doubling up to `max`, each with up to 25 %
/// random jitter so that many senders do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    /// A backoff starting at `initial`, never above `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let seed = u64::from(std::process::id()) ^ 0x9E37_79B9_7F4A_7C15;
        Backoff { initial, max: max.max(initial), next: initial, seed }
    }

    /// The delay before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // xorshift: cheap jitter, no dependency.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = base.mul_f64((self.seed % 1000) as f64 / 4000.0);
        (base + jitter).min(self.max)
    }

    /// Back to `initial`, after a session that worked.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(100) && d[0] <= Duration::from_millis(125), "{d:?}");
        assert!(d[1] >= Duration::from_millis(200) && d[1] <= Duration::from_millis(250), "{d:?}");
        assert!(d.iter().all(|x| *x <= Duration::from_secs(1)), "{d:?}");
        assert_eq!(d[5], Duration::from_secs(1), "capped");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }
}

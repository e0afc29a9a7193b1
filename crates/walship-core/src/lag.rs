//! Lag accounting on the sender's monotonic clock.
//!
//! [`LagTracker`] remembers when the sender first observed each range of
//! WAL bytes as a list of `(end, observed_at)` points in position order:
//! byte `p` was first observed at the time of the first point whose `end`
//! is greater than `p`. The list is bounded: past its capacity, adjacent
//! points are merged pairwise, keeping the *earlier* time for the merged
//! range, so a merge can only make lag look larger, never smaller; and
//! points every receiver has acknowledged at every level are forgotten.
//!
//! From it, per receiver and ack level ([`LevelLag`]):
//! * a **sample** when an ack moves the position: `now − observed(newest
//!   byte covered)`, recorded in a [`Histogram`];
//! * the **current lag**: the age of the oldest byte not yet acknowledged,
//!   `now − observed(pos)`, and exactly zero when the position is at the
//!   end of what was observed.
//!
//! No clock is read here; `now` comes from the caller.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::Position;
use crate::histogram::Histogram;

/// Default capacity of a tracker, in points.
pub const DEFAULT_CAPACITY: usize = 4096;

/// When WAL ranges were first observed.
#[derive(Debug, Clone)]
pub struct LagTracker {
    points: VecDeque<(Position, Instant)>,
    capacity: usize,
    merges: u64,
}

impl LagTracker {
    /// A tracker holding at most `capacity` points (at least 2).
    pub fn new(capacity: usize) -> Self {
        LagTracker { points: VecDeque::new(), capacity: capacity.max(2), merges: 0 }
    }

    /// The source's observed end moved to `end` at `now`.
    pub fn observe(&mut self, end: Position, now: Instant) {
        if self.points.back().is_some_and(|(e, _)| *e >= end) {
            return;
        }
        self.points.push_back((end, now));
        if self.points.len() > self.capacity {
            self.merge();
        }
    }

    fn merge(&mut self) {
        // Keep the newest point as is (it holds the end); merge the rest pairwise.
        let newest = self.points.pop_back();
        let old: Vec<_> = self.points.drain(..).collect();
        for pair in old.chunks(2) {
            // The later end with the earlier time: the merged range counts as
            // observed when its oldest bytes were.
            let end = pair[pair.len() - 1].0;
            self.points.push_back((end, pair[0].1));
        }
        self.points.extend(newest);
        self.merges += 1;
    }

    /// The end of the observed bytes.
    pub fn end(&self) -> Position {
        self.points.back().map(|p| p.0).unwrap_or_default()
    }

    /// When the byte at `pos` was first observed; `None` when it has not
    /// been observed yet or was forgotten.
    pub fn observed_at(&self, pos: Position) -> Option<Instant> {
        let i = self.points.partition_point(|(end, _)| *end <= pos);
        self.points.get(i).map(|p| p.1)
    }

    /// Age at `now` of the oldest byte at or after `pos`: the current lag of
    /// a position. Zero when `pos` has everything observed.
    pub fn age(&self, pos: Position, now: Instant) -> Duration {
        match self.observed_at(pos) {
            Some(t) if pos < self.end() => now.saturating_duration_since(t),
            _ => Duration::ZERO,
        }
    }

    /// The lag sample for a position that just advanced to `pos`: the age
    /// of the newest byte it now covers.
    pub fn sample(&self, pos: Position, now: Instant) -> Option<Duration> {
        let newest = Position(pos.get().checked_sub(1)?);
        self.observed_at(newest).map(|t| now.saturating_duration_since(t))
    }

    /// The observation times of the ranges that end in `(from, to]`: the
    /// ranges an ack moving a position from `from` to `to` completes.
    pub fn completed(&self, from: Position, to: Position) -> impl Iterator<Item = Instant> + '_ {
        let first = self.points.partition_point(|(end, _)| *end <= from);
        self.points.range(first..).take_while(move |(end, _)| *end <= to).map(|p| p.1)
    }

    /// Every receiver has everything below `pos` at every level.
    pub fn forget_before(&mut self, pos: Position) {
        // Keep the last point even when covered: it marks the end.
        while self.points.len() > 1 && self.points.front().is_some_and(|(end, _)| *end <= pos) {
            self.points.pop_front();
        }
    }

    /// Number of points held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when nothing was observed yet.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// How many times the list was thinned to stay within capacity.
    pub fn merges(&self) -> u64 {
        self.merges
    }
}

/// Lag of one ack level (write, flush or apply) of one receiver.
#[derive(Debug, Clone, Default)]
pub struct LevelLag {
    pos: Position,
    /// Samples taken when acks moved the position.
    pub histogram: Histogram,
    /// The newest sample.
    pub last_sample: Option<Duration>,
}

impl LevelLag {
    /// The level's position moved to `pos` (an ack). Records one sample per
    /// observed range the ack completes, so that an ack covering five
    /// writes counts five latencies, the oldest included, rather than only
    /// the newest; when it completes none (it ends inside a range), one
    /// sample for the newest byte it covers.
    pub fn advance(&mut self, tracker: &LagTracker, pos: Position, now: Instant) {
        if pos <= self.pos {
            return;
        }
        let from = std::mem::replace(&mut self.pos, pos);
        let mut newest = None;
        for t in tracker.completed(from, pos) {
            let s = now.saturating_duration_since(t);
            self.histogram.record(s.as_secs_f64());
            newest = Some(s);
        }
        if newest.is_none() {
            newest = tracker.sample(pos, now);
            if let Some(s) = newest {
                self.histogram.record(s.as_secs_f64());
            }
        }
        if newest.is_some() {
            self.last_sample = newest;
        }
    }

    /// Resets the position without a sample (a new session resumed at `pos`).
    pub fn reset(&mut self, pos: Position) {
        self.pos = pos;
    }

    /// The level's position.
    pub fn pos(&self) -> Position {
        self.pos
    }

    /// Current lag: age of the oldest byte not yet acknowledged at this level.
    pub fn current(&self, tracker: &LagTracker, now: Instant) -> Duration {
        tracker.age(self.pos, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ages_and_samples_follow_first_observation() {
        let t0 = Instant::now();
        let mut t = LagTracker::new(16);
        t.observe(Position(100), t0);
        t.observe(Position(250), t0 + ms(10));
        t.observe(Position(250), t0 + ms(20)); // no growth: ignored
        assert_eq!(t.observed_at(Position(0)), Some(t0));
        assert_eq!(t.observed_at(Position(99)), Some(t0));
        assert_eq!(t.observed_at(Position(100)), Some(t0 + ms(10)));
        assert_eq!(t.observed_at(Position(250)), None, "not observed yet");
        let now = t0 + ms(30);
        assert_eq!(t.age(Position(50), now), ms(30));
        assert_eq!(t.age(Position(150), now), ms(20));
        assert_eq!(t.age(Position(250), now), Duration::ZERO, "caught up reads zero, never stale");
        assert_eq!(t.sample(Position(250), now), Some(ms(20)), "newest covered byte was seen at +10 ms");
        assert_eq!(t.sample(Position(100), now), Some(ms(30)));
        assert_eq!(t.sample(Position(0), now), None);
    }

    #[test]
    fn stays_bounded_and_merging_only_overstates_lag() {
        let t0 = Instant::now();
        let mut t = LagTracker::new(8);
        for i in 1..=100u64 {
            t.observe(Position(i * 10), t0 + ms(i));
        }
        assert!(t.len() <= 8, "bounded: {}", t.len());
        assert!(t.merges() > 0);
        let now = t0 + ms(200);
        for p in (0..1000).step_by(7) {
            let truth = t0 + ms(p / 10 + 1);
            let seen = t.observed_at(Position(p)).expect("observed");
            assert!(seen <= truth, "byte {p}: merged time {seen:?} must not be later than the truth {truth:?}");
        }
        assert_eq!(t.end(), Position(1000));
        assert_eq!(t.age(Position(1000), now), Duration::ZERO);
    }

    #[test]
    fn forgetting_keeps_the_end() {
        let t0 = Instant::now();
        let mut t = LagTracker::new(16);
        t.observe(Position(10), t0);
        t.observe(Position(20), t0 + ms(1));
        t.forget_before(Position(20));
        assert_eq!(t.len(), 1);
        assert_eq!(t.end(), Position(20));
        assert_eq!(t.age(Position(20), t0 + ms(5)), Duration::ZERO);
    }

    #[test]
    fn an_ack_covering_several_writes_samples_each_of_them() {
        let t0 = Instant::now();
        let mut t = LagTracker::new(16);
        for i in 1..=5u64 {
            t.observe(Position(i * 100), t0 + ms(i * 10));
        }
        let mut l = LevelLag::default();
        l.advance(&t, Position(500), t0 + ms(60));
        let mut h = crate::histogram::Histogram::default();
        for s in [50, 40, 30, 20, 10] {
            h.record(ms(s).as_secs_f64());
        }
        assert_eq!(l.histogram, h, "one sample per completed write, the oldest (50 ms) included");
        assert_eq!(l.last_sample, Some(ms(10)));
        // An ack ending inside a range completes none: one sample for its newest byte.
        t.observe(Position(1000), t0 + ms(70));
        l.advance(&t, Position(700), t0 + ms(75));
        assert_eq!(l.histogram.count(), 6);
        assert_eq!(l.last_sample, Some(ms(5)));
    }

    #[test]
    fn level_lag_samples_on_advance_only() {
        let t0 = Instant::now();
        let mut t = LagTracker::new(16);
        t.observe(Position(100), t0);
        let mut l = LevelLag::default();
        l.advance(&t, Position(100), t0 + ms(3));
        l.advance(&t, Position(100), t0 + ms(9)); // no movement: no sample
        assert_eq!(l.histogram.count(), 1);
        assert_eq!(l.last_sample, Some(ms(3)));
        assert_eq!(l.current(&t, t0 + ms(50)), Duration::ZERO);
        t.observe(Position(200), t0 + ms(60));
        assert_eq!(l.current(&t, t0 + ms(70)), ms(10), "now behind: the oldest missing byte's age");
    }
}

//! Cost of lag accounting on the hot path, in ns per frame.
//!
//! Per frame batch the sender observes the source's new end once (source
//! loop) and, per ack, advances three levels (write, flush, apply) of one
//! receiver, each a binary search in the tracker plus a histogram record.
//! The tracker is measured full (4096 points) because that is its worst
//! case: a receiver far behind.
//!
//! ```text
//! cargo bench -p walship-bench --bench lag
//! ```
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use walship_core::Position;
use walship_core::lag::{DEFAULT_CAPACITY, LagTracker, LevelLag};

const FRAME: u64 = 128 << 10;

fn full_tracker(t0: Instant) -> LagTracker {
    let mut t = LagTracker::new(DEFAULT_CAPACITY);
    for i in 1..=DEFAULT_CAPACITY as u64 {
        t.observe(Position(i * FRAME), t0 + Duration::from_micros(i * 100));
    }
    t
}

fn lag(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut g = c.benchmark_group("lag");
    g.bench_function("observe_new_end", |b| {
        let mut t = full_tracker(t0);
        let mut end = t.end().get();
        let mut now = t0 + Duration::from_secs(1);
        b.iter(|| {
            end += FRAME;
            now += Duration::from_micros(100);
            t.observe(black_box(Position(end)), now);
        })
    });
    g.bench_function("ack_three_levels", |b| {
        let t = full_tracker(t0);
        let mut levels: [LevelLag; 3] = Default::default();
        let mut pos = 0u64;
        let end = t.end().get();
        let now = t0 + Duration::from_secs(1);
        b.iter(|| {
            pos = if pos + FRAME >= end { FRAME } else { pos + FRAME };
            if pos == FRAME {
                levels = Default::default();
            }
            for l in levels.iter_mut() {
                l.advance(&t, black_box(Position(pos)), now);
            }
        })
    });
    g.bench_function("current_lag_and_exposure", |b| {
        let t = full_tracker(t0);
        let now = t0 + Duration::from_secs(1);
        let mut pos = 0u64;
        b.iter(|| {
            pos = (pos + 7 * FRAME) % t.end().get();
            black_box(t.age(black_box(Position(pos)), now))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Criterion's own HTML plots would draw text through the plotters build that
    // `walship-bench`'s report plots configure (ab_glyph, no system fonts): numbers only.
    config = Criterion::default().without_plots();
    targets = lag
}
criterion_main!(benches);

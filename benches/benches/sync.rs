//! Sender-side cost of semi-sync bookkeeping with 3 receivers: per ack, the
//! quorum position over three positions plus a tracker update; per commit,
//! registering a waiter and releasing it.
//!
//! ```text
//! cargo bench -p walship-bench --bench sync
//! ```
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use walship_core::Position;
use walship_core::sync::{AckLevel, SyncConfig, SyncTracker};

fn sync(c: &mut Criterion) {
    let cfg = SyncConfig { quorum: 2, level: AckLevel::Flush, timeout: Some(Duration::from_secs(10)) };
    let t0 = Instant::now();
    let mut g = c.benchmark_group("sync");
    g.bench_function("ack_quorum_of_3_and_update", |b| {
        let mut t = SyncTracker::new(cfg);
        let mut p = 0u64;
        b.iter(|| {
            p += 4096;
            let q = SyncTracker::quorum_of(2, black_box(&[Position(p), Position(p - 1024), Position(p - 8192)]));
            t.update(q, Position(p), t0);
        })
    });
    g.bench_function("register_and_release_one_waiter", |b| {
        let mut t = SyncTracker::new(cfg);
        let mut p = 0u64;
        b.iter(|| {
            p += 4096;
            t.register(Position(p), None, t0);
            t.update(Some(Position(p)), Position(p), t0);
            black_box(t.poll_released())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Criterion's own HTML plots would draw text through the plotters build that
    // `walship-bench`'s report plots configure (ab_glyph, no system fonts): numbers only.
    config = Criterion::default().without_plots();
    targets = sync
}
criterion_main!(benches);

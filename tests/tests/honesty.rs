//! Is the lag the sender reports the lag there is?
//!
//! The test writes WAL itself at a steady rate (4 KiB every 10 ms,
//! fdatasync after each write) so it knows where each write ends and when
//! its fdatasync returned. A thread polls the receiver's `/v1/lag` about
//! every millisecond and records when `flushed_pos` moved. From those two
//! logs alone, independent of walship's own accounting, each write gets a
//! lag: fdatasync return → first reading whose `flushed_pos` covers it.
//! That distribution is compared with the sender's
//! `walship_flush_lag_seconds` histogram for the same window; then the
//! receiver's flush is slowed down by 50 ms and both must show it.
use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use walship_tests::http::{self, FlushPoller, Hist, Reading};
use walship_tests::{Env, Proc, field};

const CHUNK: usize = 4096;
const EVERY: Duration = Duration::from_millis(10);
/// Writes before the measured window (the initial catch-up): 1 s.
const WARMUP_WRITES: usize = 100;
/// Writes in the measured window: 4 s.
const MEASURED_WRITES: usize = 400;

/// A receiver and a sender with admin endpoints, shipping `env.wal`.
/// Fields drop in order: the processes before the temp dir.
struct Pair {
    _send: Proc,
    _recv: Proc,
    /// The sender's `--to`, which is the `receiver` label.
    to: String,
    recv_admin: String,
    send_admin: String,
    env: Env,
}

fn start(recv_extra: &[&str]) -> Pair {
    let env = Env::new();
    let mut args = vec!["--admin-addr", "127.0.0.1:0"];
    args.extend_from_slice(recv_extra);
    let recv = env.receiver_with("receiver", "127.0.0.1:0", &args);
    let to = field(&recv.wait_log("receiver listening", Duration::from_secs(5)), "listen").expect("listen addr");
    let recv_admin =
        field(&recv.wait_log("admin endpoint listening", Duration::from_secs(10)), "admin").expect("admin addr");
    // One write before the sender starts, so the segment exists and the
    // first durable position proves the pair streams.
    write_chunk(&mut File::create(env.wal.join(walship_tests::writer::segment_name(0))).expect("segment"), 0);
    let send = env.sender("sender", &to, &["--admin-addr", "127.0.0.1:0"]);
    let send_admin =
        field(&send.wait_log("admin endpoint listening", Duration::from_secs(10)), "admin").expect("admin addr");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http::lag(&recv_admin)["flushed_pos"].as_u64() < Some(CHUNK as u64) {
        assert!(Instant::now() < deadline, "the first 4 KiB never became durable; sender log:\n{}", send.log_text());
        std::thread::sleep(Duration::from_millis(10));
    }
    Pair { _send: send, _recv: recv, to, recv_admin, send_admin, env }
}

fn write_chunk(f: &mut File, i: usize) {
    let byte = (i % 251) as u8;
    f.write_all(&[byte; CHUNK]).expect("write");
    f.sync_data().expect("fdatasync");
}

fn flush_hist(pair: &Pair) -> Hist {
    let text = http::metrics(&pair.send_admin);
    http::histogram(&text, "walship_flush_lag_seconds", &[("receiver", pair.to.as_str())])
        .unwrap_or_else(|| panic!("no walship_flush_lag_seconds{{receiver={:?}}} in:\n{text}", pair.to))
}

/// What one run measured.
struct Measured {
    /// Independent per-write lags (seconds), writes after the warm-up.
    independent: Lags,
    /// Writes that were durable on the receiver before the writer's own fdatasync returned.
    early: usize,
    /// The sender's histogram over the same window.
    reported: Hist,
    /// Median time between two readings of the receiver.
    poll_step: Duration,
}

/// Writes at the steady rate while polling the receiver; returns both views of the lag.
fn measure(pair: &Pair) -> Measured {
    let poller = FlushPoller::start(&pair.recv_admin, Duration::from_millis(1));
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let path = pair.env.wal.join(walship_tests::writer::segment_name(0));
    let writer = std::thread::spawn(move || {
        let mut f = File::options().append(true).open(path).expect("open segment");
        let mut log = Vec::with_capacity(WARMUP_WRITES + MEASURED_WRITES);
        let start = Instant::now();
        for i in 0..WARMUP_WRITES + MEASURED_WRITES {
            if let Some(wait) = (start + EVERY * i as u32).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            write_chunk(&mut f, i + 1);
            log.push((((i + 2) * CHUNK) as u64, Instant::now()));
            d.store(i + 1, Ordering::Release);
        }
        log
    });
    // The window starts after the catch-up: the histogram is cumulative
    // since the sender started, so read it now and subtract at the end.
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.load(Ordering::Acquire) < WARMUP_WRITES {
        assert!(Instant::now() < deadline, "writer stalled");
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = flush_hist(pair);
    let window_start = Instant::now();
    let log = writer.join().expect("writer thread");
    let total = log.last().expect("writes").0;

    // Writer stopped: once the mirror caught up, the sender's current lag
    // is exactly 0 (not null, not the last sample).
    let deadline = Instant::now() + Duration::from_secs(20);
    let caught_up = loop {
        let l = http::lag(&pair.send_admin);
        let r = &l["receivers"][0];
        if l["source"]["end_pos"].as_u64() == Some(total) && r["flush_pos"].as_u64() == Some(total) {
            break l;
        }
        assert!(Instant::now() < deadline, "sender never saw {total} flushed: {l}");
        std::thread::sleep(Duration::from_millis(5));
    };
    let r = &caught_up["receivers"][0];
    assert_eq!(r["name"].as_str(), Some(pair.to.as_str()), "receiver name is the --to address");
    assert_eq!(r["flush_lag_seconds"].as_f64(), Some(0.0), "flush lag when caught up: {caught_up}");
    assert_eq!(r["lag_bytes"].as_u64(), Some(0), "byte lag when caught up: {caught_up}");
    assert_eq!(caught_up["rpo_exposure_seconds"].as_f64(), Some(0.0), "RPO exposure when caught up: {caught_up}");
    let after = flush_hist(pair);
    let readings = poller.stop();

    let (independent, early) = independent_lags(&log, &readings, window_start);
    assert_eq!(
        independent.mid.len(),
        log.iter().filter(|(_, t)| *t >= window_start).count(),
        "every write seen durable"
    );
    let mut steps: Vec<f64> = readings.windows(2).map(|w| (w[1].sent - w[0].sent).as_secs_f64()).collect();
    steps.sort_by(f64::total_cmp);
    let poll_step = Duration::from_secs_f64(steps[steps.len() / 2]);
    Measured { independent, early, reported: after.since(&before), poll_step }
}

/// Per-write lags, each known only up to the polling resolution.
#[derive(Default)]
struct Lags {
    /// Middle of the covering reading's request minus the fdatasync return.
    mid: Vec<f64>,
    /// Lower bound: the previous reading (still not covering) went out then.
    lo: Vec<f64>,
    /// Upper bound: the covering reading came back then.
    hi: Vec<f64>,
}

/// For each write synced at or after `from`: the time from its fdatasync
/// returning to the first reading whose `flushed_pos` covers it. A reading
/// shows the state at some instant between sending the request and getting
/// the answer, so the moment the write became durable lies after the
/// previous reading was sent and before the covering one came back: that
/// interval is `lo..hi`. Negative times (durable on the receiver before the
/// writer's own fdatasync returned) count as 0 and are counted in `early`.
fn independent_lags(log: &[(u64, Instant)], readings: &[Reading], from: Instant) -> (Lags, usize) {
    let mut early = 0;
    let mut lags = Lags::default();
    for (end, synced) in log.iter().filter(|(_, synced)| *synced >= from) {
        // flushed_pos only grows, so the readings are sorted by it.
        let i = readings.partition_point(|r| r.flushed_pos < *end);
        let Some(r) = readings.get(i) else { continue };
        if r.at() < *synced {
            early += 1;
        }
        let since = |t: Instant| t.saturating_duration_since(*synced).as_secs_f64();
        lags.mid.push(since(r.at()));
        lags.hi.push(since(r.received));
        lags.lo.push(i.checked_sub(1).map_or(0.0, |p| since(readings[p].sent)));
    }
    (lags, early)
}

fn ms(s: f64) -> String {
    format!("{:.2}ms", s * 1e3)
}

/// Checks one quantile.
///
/// Tolerance, one bucket: with the sender's value as the upper bound `b[i]`
/// of bucket `i`, the independent value must lie in `(b[i-2], b[i]]`, i.e.
/// in the same bucket or the one below. It may not exceed the reported
/// bound (the sender must not under-state lag); it may be up to a bucket
/// lower because the sender dates bytes from the first inotify event, which
/// comes at the write(), before the writer's fdatasync returns, and it
/// takes the sample when the ack arrives, after the receiver's position
/// moved. The independent value is itself only known to within the polling
/// step (about 1 ms; see `independent_lags`), so its lower bound must be
/// `<= b[i]` and its upper bound `> b[i-2]`.
fn check_quantile(name: &str, q: f64, m: &Measured) {
    let (lo, mid, hi) = (
        http::quantile(&m.independent.lo, q),
        http::quantile(&m.independent.mid, q),
        http::quantile(&m.independent.hi, q),
    );
    let i = m.reported.quantile_index(q).expect("reported samples in the window");
    let b = m.reported.bounds();
    let low = if i >= 2 { b[i - 2] } else { 0.0 };
    eprintln!(
        "{name}: p{:.0} independent {} ({}..{}) reported bucket ({}, {}]",
        q * 100.0,
        ms(mid),
        ms(lo),
        ms(hi),
        ms(low),
        ms(b[i])
    );
    assert!(
        lo <= b[i] && (i < 2 || hi > low),
        "{name}: p{q} independent {} ({}..{}) is not within one bucket of the reported bound {} (allowed ({}, {}])",
        ms(mid),
        ms(lo),
        ms(hi),
        ms(b[i]),
        ms(low),
        ms(b[i])
    );
}

fn describe(name: &str, m: &Measured) {
    let h = &m.reported;
    eprintln!(
        "{name}: {} writes measured (poll step {:?}, {} durable before the writer's fdatasync returned); \
         independent p50 {} p90 {} max {}; reported {} samples, mean {}, p50 <= {} p90 <= {}; buckets {:?}",
        m.independent.mid.len(),
        m.poll_step,
        m.early,
        ms(http::quantile(&m.independent.mid, 0.5)),
        ms(http::quantile(&m.independent.mid, 0.9)),
        ms(http::quantile(&m.independent.mid, 1.0)),
        h.count,
        ms(if h.count > 0 { h.sum / h.count as f64 } else { 0.0 }),
        h.quantile_upper(0.5).map_or("-".into(), ms),
        h.quantile_upper(0.9).map_or("-".into(), ms),
        h.buckets.iter().filter(|(_, c)| *c > 0).take(6).collect::<Vec<_>>(),
    );
}

#[test]
fn reported_flush_lag_matches_an_independent_measurement_and_shows_a_slow_flush() {
    // Phase 1: nothing slowed down.
    let base = {
        let pair = start(&[]);
        let m = measure(&pair);
        describe("baseline", &m);
        // The histogram holds one sample per completed write (or per ack,
        // for an ack inside a write); with a write every 10 ms, about one each.
        assert!(m.reported.count >= MEASURED_WRITES as u64 / 4, "too few acks: {}", m.reported.count);
        check_quantile("baseline", 0.5, &m);
        check_quantile("baseline", 0.9, &m);
        m
    };

    // Phase 2: the receiver sleeps 50 ms before each flush that follows a
    // drained queue, i.e. before every flush at this rate.
    let pair = start(&["--debug-flush-delay", "50ms"]);
    let slow = measure(&pair);
    describe("with --debug-flush-delay 50ms", &slow);
    let (p50_base, p50_slow) = (http::quantile(&base.independent.mid, 0.5), http::quantile(&slow.independent.mid, 0.5));
    assert!(
        p50_slow >= p50_base + 0.040,
        "independent p50 rose from {} to {} only, expected >= 40 ms more",
        ms(p50_base),
        ms(p50_slow)
    );
    let reported = slow.reported.quantile_upper(0.5).expect("reported samples");
    assert!(reported >= 0.050, "the sender's p50 bucket bound is {} with a 50 ms flush delay", ms(reported));
    // Each ack now covers several writes; the sender samples every write it
    // completes, so the quantiles agree here too.
    check_quantile("with --debug-flush-delay 50ms", 0.5, &slow);
    check_quantile("with --debug-flush-delay 50ms", 0.9, &slow);
}

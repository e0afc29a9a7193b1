//! The knobs of one run, all drawn from the seed.
use std::time::Duration;

use walship_core::sync::AckLevel;

use crate::rng::Rng;

/// Probabilities of each fault (per tick and receiver, unless noted).
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// The connection breaks (QUIC's answer to persistent loss).
    pub break_conn: f64,
    /// Per frame: one byte of the frame is flipped on the wire.
    pub corrupt: f64,
    /// Per frame: the frame reaches the receiver twice, or after the next one.
    pub violate: f64,
    /// The link partitions (the connection breaks, reconnects fail until it heals).
    pub partition: f64,
    /// The receiver crashes, losing everything not durable, and restarts later.
    pub crash: f64,
    /// Per tick of a streaming session: an ack of an older epoch shows up.
    pub stale_ack: f64,
    /// Per ack: it is delivered late (5–60 ms).
    pub late_ack: f64,
    /// Per frame: QUIC retransmits it (a loss, duplicate or reorder below the stream).
    pub retransmit: f64,
}

/// Everything that varies between runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Receivers (1..=3).
    pub receivers: usize,
    /// Semi-sync quorum (0..=receivers).
    pub quorum: u32,
    /// Semi-sync level (flush or apply).
    pub level: AckLevel,
    /// Semi-sync timeout.
    pub sync_timeout: Option<Duration>,
    /// Largest data frame payload.
    pub max_frame: u32,
    /// The receiver runs an apply step that reports applied positions of its own.
    pub separate_apply: bool,
    /// Per tick and receiver: the apply step applies part of what is durable.
    pub p_apply: f64,
    /// Sender window.
    pub max_inflight: u64,
    /// Receiver acks written after this many bytes.
    pub ack_bytes: u64,
    /// Ticks (1 ms each) during which the writer appends and faults happen.
    pub active_ticks: u64,
    /// Per tick: the writer appends a chunk.
    pub p_append: f64,
    /// Largest chunk the writer appends.
    pub max_chunk: u64,
    /// Per append: the writer rolls to a new segment first.
    pub p_roll: f64,
    /// Per tick and receiver: the receiver fdatasyncs.
    pub p_fsync: f64,
    /// Per tick: a waiter is registered for the current end.
    pub p_waiter: f64,
    /// Frames the sender may put on each link per tick.
    pub frames_per_tick: u64,
    /// Link latency range in microseconds.
    pub latency_us: (u64, u64),
    /// Fault probabilities.
    pub faults: Faults,
}

impl Config {
    /// A configuration drawn from `rng`: mostly light faults, some none, some heavy.
    pub fn from_rng(rng: &mut Rng) -> Self {
        let intensity = match rng.below(4) {
            0 => 0.0,
            1 | 2 => 1.0,
            _ => 4.0,
        };
        Self::with_intensity(rng, intensity, false)
    }

    /// A configuration with fault probabilities scaled by `k` (1 is light),
    /// with or without a separate apply step on the receivers.
    pub fn with_intensity(rng: &mut Rng, k: f64, separate_apply: bool) -> Self {
        let receivers = rng.range(1, 3) as usize;
        let max_frame = rng.range(256, 16 << 10) as u32;
        let lat_lo = rng.range(100, 2000);
        Config {
            receivers,
            quorum: rng.below(receivers as u64 + 1) as u32,
            level: if rng.chance(0.5) { AckLevel::Flush } else { AckLevel::Apply },
            sync_timeout: rng.chance(0.5).then(|| Duration::from_millis(rng.range(2, 80))),
            max_frame,
            separate_apply,
            p_apply: rng.float(0.05, 0.5),
            max_inflight: rng.range(u64::from(max_frame), 96 << 10),
            ack_bytes: rng.range(256, 32 << 10),
            active_ticks: rng.range(40, 200),
            p_append: rng.float(0.2, 0.9),
            max_chunk: rng.range(64, 4 << 10),
            p_roll: rng.float(0.0, 0.15),
            p_fsync: rng.float(0.02, 0.5),
            p_waiter: rng.float(0.0, 0.3),
            frames_per_tick: rng.range(1, 12),
            latency_us: (lat_lo, lat_lo + rng.range(0, 3000)),
            faults: Faults {
                break_conn: 0.002 * k,
                corrupt: 0.002 * k,
                violate: 0.001 * k,
                partition: 0.001 * k,
                crash: 0.002 * k,
                stale_ack: (0.02 * k).min(0.5),
                late_ack: (0.03 * k).min(0.5),
                retransmit: (0.02 * k).min(0.5),
            },
        }
    }
}

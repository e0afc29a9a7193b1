//! The world: source, sender sessions, links, receivers, the semi-sync
//! tracker and the virtual clock, advanced one tick (1 ms) at a time.
use std::time::{Duration, Instant};

use walship_core::Position;
use walship_core::proto;
use walship_core::receiver::ReceiverSession;
use walship_core::sender::{SenderConfig, SenderSession, SessionPositions};
use walship_core::sync::{AckLevel, SyncConfig, SyncTracker};

use crate::config::Config;
use crate::disk::Disk;
use crate::link::Conn;
use crate::rng::Rng;
use crate::source::Source;

/// Virtual microseconds per tick.
pub const TICK_US: u64 = 1000;
/// Ticks allowed for the quiet phase to converge.
const MAX_QUIET_TICKS: u64 = 10_000;
/// First and largest reconnect backoff.
const BACKOFF_US: (u64, u64) = (2_000, 64_000);

/// Counters of one run, for the report and for tests that want to see
/// faults actually happen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub ticks: u64,
    pub bytes: u64,
    pub segments: u64,
    pub sessions: u64,
    pub breaks: u64,
    pub partitions: u64,
    pub crashes: u64,
    pub corruptions_detected: u64,
    pub violations_detected: u64,
    pub retransmits: u64,
    pub late_acks: u64,
    pub stale_acks_ignored: u64,
    pub waits_durable: u64,
    pub waits_other: u64,
    pub fsyncs: u64,
}

/// One receiver and everything between it and the sender.
#[derive(Debug)]
pub(crate) struct Peer {
    /// The sender's session for this receiver (`None` between connections).
    pub sess: Option<SenderSession>,
    pub next_connect: u64,
    pub backoff: u64,
    /// Positions of the current sender session, last seen (invariant 4).
    pub last_pos: SessionPositions,
    /// Highest flushed/applied position any sender session accepted (invariant 1).
    pub max_flushed_seen: Position,
    /// Highest applied position any sender session accepted (invariant 1).
    pub max_applied_seen: Position,
    pub conn: Option<Conn>,
    pub partition_until: u64,
    /// Acks of closed connections, to be replayed as stale acks.
    pub ghosts: Vec<Vec<u8>>,
    pub disk: Disk,
    pub rsess: Option<ReceiverSession>,
    /// Crashed; restarts at this time.
    pub down_until: Option<u64>,
    pub last_durable: Position,
    pub rng: Rng,
}

/// The simulation of one seed.
#[derive(Debug)]
pub struct World {
    pub seed: u64,
    pub cfg: Config,
    pub(crate) rng: Rng,
    pub(crate) base: Instant,
    /// Virtual time in microseconds.
    pub t: u64,
    pub source: Source,
    pub(crate) peers: Vec<Peer>,
    pub(crate) tracker: SyncTracker,
    pub(crate) active: bool,
    pub stats: Stats,
    pub(crate) trace: bool,
}

impl World {
    /// A world for `seed` with configuration `cfg`.
    pub fn new(seed: u64, cfg: Config, mut rng: Rng) -> Self {
        let peers = (0..cfg.receivers)
            .map(|_| Peer {
                sess: None,
                next_connect: 0,
                backoff: BACKOFF_US.0,
                last_pos: SessionPositions::default(),
                max_flushed_seen: Position::ZERO,
                max_applied_seen: Position::ZERO,
                conn: None,
                partition_until: 0,
                ghosts: Vec::new(),
                disk: Disk::default(),
                rsess: None,
                down_until: None,
                last_durable: Position::ZERO,
                rng: rng.fork(),
            })
            .collect();
        let tracker = SyncTracker::new(SyncConfig { quorum: cfg.quorum, level: cfg.level, timeout: cfg.sync_timeout });
        World {
            seed,
            cfg,
            rng,
            base: Instant::now(),
            t: 0,
            source: Source::default(),
            peers,
            tracker,
            active: true,
            stats: Stats::default(),
            trace: std::env::var_os("WALSHIP_SIM_TRACE").is_some(),
        }
    }

    /// The virtual clock as an `Instant` (only differences ever matter).
    pub(crate) fn now(&self) -> Instant {
        self.base + Duration::from_micros(self.t)
    }

    pub(crate) fn log(&self, msg: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:>8.3} ms] {}", self.t as f64 / 1000.0, msg());
        }
    }

    pub(crate) fn sender_config(&self) -> SenderConfig {
        SenderConfig {
            source_id: "sim-source".into(),
            format: proto::Format::Raw,
            segment_size: 0,
            timeline: 0,
            sender_name: "sim-sender".into(),
            max_frame: self.cfg.max_frame,
            max_inflight: self.cfg.max_inflight,
        }
    }

    /// A link latency draw for receiver `i`.
    pub(crate) fn latency(&mut self, i: usize) -> u64 {
        let (lo, hi) = self.cfg.latency_us;
        self.peers[i].rng.range(lo, hi)
    }

    /// Runs the active phase, then the quiet phase until everything converged.
    pub fn run(&mut self) -> Result<Stats, String> {
        for _ in 0..self.cfg.active_ticks {
            self.tick()?;
        }
        self.active = false;
        self.log(|| "quiet phase: writer stopped, faults off".into());
        for p in &mut self.peers {
            p.partition_until = 0;
        }
        for _ in 0..MAX_QUIET_TICKS {
            self.tick()?;
            if self.converged() {
                self.check_final()?;
                return Ok(self.stats.clone());
            }
        }
        Err(format!("did not converge within {MAX_QUIET_TICKS} quiet ticks: {}", self.describe()))
    }

    fn tick(&mut self) -> Result<(), String> {
        self.t += TICK_US;
        self.stats.ticks += 1;
        if self.active {
            self.write_source();
            self.inject_faults();
        }
        for i in 0..self.peers.len() {
            self.sender_step(i)?;
        }
        for i in 0..self.peers.len() {
            self.receiver_step(i)?;
        }
        if self.active && self.rng.chance(self.cfg.p_waiter) {
            let caller = self.rng.chance(0.2).then(|| Duration::from_millis(self.rng.range(0, 50)));
            let end = self.source.end();
            self.tracker.register(end, caller, self.now());
        }
        let now = self.now();
        self.tracker.handle_timeout(now);
        self.drain_released()?;
        self.check_step()
    }

    fn write_source(&mut self) {
        if !self.rng.chance(self.cfg.p_append) {
            return;
        }
        if self.source.segs.is_empty() || self.rng.chance(self.cfg.p_roll) {
            self.source.roll();
            self.stats.segments += 1;
        }
        let n = self.rng.range(1, self.cfg.max_chunk) as usize;
        self.source.append(&mut self.rng, n);
        self.stats.bytes += n as u64;
        // A new end may let a degraded tracker recover, or not.
        self.update_tracker();
    }

    fn inject_faults(&mut self) {
        let f = self.cfg.faults;
        for i in 0..self.peers.len() {
            let t = self.t;
            let p = &mut self.peers[i];
            if p.down_until.is_none() && p.rng.chance(f.crash) {
                let ms = p.rng.range(1, 30);
                p.down_until = Some(t + ms * 1000);
                p.disk.crash();
                self.stats.crashes += 1;
                self.log(|| format!("r{i}: crash, down for {ms} ms"));
                self.break_conn(i, "receiver crashed");
            } else if p.rng.chance(f.partition) {
                let ms = p.rng.range(2, 60);
                p.partition_until = t + ms * 1000;
                self.stats.partitions += 1;
                self.log(|| format!("r{i}: partition for {ms} ms"));
                self.break_conn(i, "partition");
            } else if p.conn.is_some() && p.rng.chance(f.break_conn) {
                self.break_conn(i, "connection lost");
            }
        }
    }

    /// The connection to receiver `i` is gone: both sessions end, what was
    /// in flight is lost, and the sender retries after a backoff.
    pub(crate) fn break_conn(&mut self, i: usize, why: &str) {
        let t = self.t;
        let p = &mut self.peers[i];
        let Some(conn) = p.conn.take() else { return };
        p.sess = None;
        p.rsess = None;
        p.last_pos = SessionPositions::default();
        if let Some(a) = conn.last_ack {
            p.ghosts.push(a);
            if p.ghosts.len() > 3 {
                p.ghosts.remove(0);
            }
        }
        p.next_connect = t + p.backoff;
        p.backoff = (p.backoff * 2).min(BACKOFF_US.1);
        self.stats.breaks += 1;
        self.log(|| format!("r{i}: connection closed: {why}"));
        self.update_tracker();
    }

    /// A session reached streaming: its backoff starts over.
    pub(crate) fn reset_backoff(&mut self, i: usize) {
        self.peers[i].backoff = BACKOFF_US.0;
    }

    /// Feeds the tracker the quorum position over the streaming sessions.
    pub(crate) fn update_tracker(&mut self) {
        let level = self.cfg.level;
        let ps: Vec<Position> = self
            .peers
            .iter()
            .filter_map(|p| p.sess.as_ref().filter(|s| s.is_streaming()))
            .map(|s| match level {
                AckLevel::Apply => s.positions().applied,
                AckLevel::Flush | AckLevel::Write => s.positions().flushed,
            })
            .collect();
        let q = SyncTracker::quorum_of(self.cfg.quorum, &ps);
        let (end, now) = (self.source.end(), self.now());
        self.tracker.update(q, end, now);
    }

    fn converged(&self) -> bool {
        let end = self.source.end();
        self.tracker.waiting() == 0
            && self.peers.iter().all(|p| {
                p.down_until.is_none()
                    && p.rsess.is_some()
                    && p.disk.durable() == end
                    && p.conn.as_ref().is_some_and(Conn::idle)
                    && p.sess.as_ref().is_some_and(|s| {
                        let q = s.positions();
                        s.is_streaming() && q.sent == end && q.flushed == end && q.applied == end
                    })
            })
    }

    /// A one-line picture of every receiver, for failure messages.
    pub(crate) fn describe(&self) -> String {
        let mut out = format!("source end {}, waiting {}", self.source.end(), self.tracker.waiting());
        for (i, p) in self.peers.iter().enumerate() {
            out.push_str(&format!(
                "; r{i}: written {} durable {} down {:?} conn {} sender {:?}",
                p.disk.written(),
                p.disk.durable(),
                p.down_until,
                p.conn.as_ref().map_or("none", |c| if c.idle() { "idle" } else { "busy" }),
                p.sess.as_ref().map(|s| (s.is_streaming(), s.positions())),
            ));
        }
        out
    }
}

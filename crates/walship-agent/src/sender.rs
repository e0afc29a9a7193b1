//! The sender runtime: one tailer shared by one session loop per receiver.
//!
//! A source task waits for the [`Watcher`] and refreshes the [`Tailer`],
//! publishing the source's end position on a watch channel. Each receiver
//! gets its own task that connects, runs a session (see `sender_session`)
//! and, when the session ends for any reason, reconnects with capped
//! exponential backoff, so a dead receiver never stops the others and
//! neither side needs a restart.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use walship_core::Position;
use walship_core::histogram::Histogram;
use walship_core::lag::{DEFAULT_CAPACITY, LagTracker, LevelLag};
use walship_core::proto;
use walship_net::TlsMode;
use walship_source::{SourceFormat, Tailer, TailerConfig, Watcher};

use crate::AgentError;
use crate::backoff::Backoff;
use crate::receiver::lock;
use crate::sender_session;

/// One receiver to ship to.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Name the receiver's certificate must carry.
    pub server_name: String,
    /// How logs and status name this receiver (`host:port` as given).
    pub label: String,
}

/// Settings of a sender.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    pub wal_dir: PathBuf,
    pub tailer: TailerConfig,
    pub source_id: String,
    pub sender_name: String,
    pub targets: Vec<Target>,
    /// Mutual TLS files, or `--insecure`.
    pub tls: TlsMode,
    pub max_frame: u32,
    pub max_inflight: u64,
    /// Safety-net directory poll interval (inotify does the fast path).
    pub poll_interval: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// `--rpo-target`: count seconds within and outside it.
    pub rpo_target: Option<Duration>,
    /// `--sync-quorum`, `--sync-level`, `--sync-timeout`.
    pub sync: walship_core::sync::SyncConfig,
    /// `--max-retained`: unshipped bytes beyond which segment waits (archive_command) are let go.
    pub max_retained: Option<u64>,
    /// Test hook (`--debug-ack-log`): append `<receiver label> <flushed>` to
    /// this file for every ack that advances a receiver's flushed position,
    /// before the ack is acted on, so a test can check after a crash that
    /// no acknowledged flush was lost. `None` in production.
    pub debug_ack_log: Option<PathBuf>,
    /// Largest UDP payload MTU discovery probes for; `None`: 65000 to a
    /// loopback receiver, 1452 (Ethernet) to any other.
    pub mtu_upper_bound: Option<u16>,
}

impl SenderOptions {
    /// Options with the defaults of `walship send` (async, 128 KiB frames,
    /// 64 MiB in flight, reconnects from 100 ms to 5 s).
    pub fn new(wal_dir: PathBuf, source_id: impl Into<String>, targets: Vec<Target>, tls: impl Into<TlsMode>) -> Self {
        SenderOptions {
            wal_dir,
            tailer: TailerConfig::default(),
            source_id: source_id.into(),
            sender_name: "walship".into(),
            targets,
            tls: tls.into(),
            max_frame: crate::DEFAULT_MAX_FRAME,
            max_inflight: 64 << 20,
            poll_interval: Duration::from_millis(100),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            rpo_target: None,
            sync: walship_core::sync::SyncConfig {
                quorum: 0,
                level: walship_core::sync::AckLevel::Flush,
                timeout: Some(Duration::from_secs(10)),
            },
            max_retained: None,
            debug_ack_log: None,
            mtu_upper_bound: None,
        }
    }
}

/// Connection state of one receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    Connecting,
    Handshaking,
    Streaming,
    /// Waiting before the next attempt.
    Backoff,
    Stopped,
}

impl ConnState {
    /// Lowercase name for logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Connecting => "connecting",
            ConnState::Handshaking => "handshaking",
            ConnState::Streaming => "streaming",
            ConnState::Backoff => "backoff",
            ConnState::Stopped => "stopped",
        }
    }
}

/// What the sender knows about one receiver.
#[derive(Debug, Clone)]
pub struct ReceiverStatus {
    pub label: String,
    pub state: ConnState,
    pub epoch: u64,
    pub sent: Position,
    pub written: Position,
    pub flushed: Position,
    pub applied: Position,
    /// Where the last session resumed.
    pub resume_pos: Position,
    pub sessions: u64,
    pub reconnects: u64,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    /// Sessions the receiver closed because a frame failed its checks.
    pub crc_errors: u64,
    pub last_error: Option<String>,
    /// Lag of the write, flush and apply levels, in that order.
    pub levels: [LevelLag; 3],
}

/// Index of each ack level in [`ReceiverStatus::levels`].
pub const WRITE: usize = 0;
/// See [`WRITE`].
pub const FLUSH: usize = 1;
/// See [`WRITE`].
pub const APPLY: usize = 2;

/// Lag of one receiver at the moment of a snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiverLag {
    /// `end - flushed`.
    pub lag_bytes: u64,
    /// Age of the oldest byte not yet acknowledged at each level (0 when caught up).
    pub write: Duration,
    pub flush: Duration,
    pub apply: Duration,
}

/// A sender's state at one moment.
#[derive(Debug, Clone)]
pub struct SenderSnapshot {
    pub source_id: String,
    pub format: &'static str,
    pub end: Position,
    pub receivers: Vec<ReceiverStatus>,
    /// Lag per receiver, same order as `receivers`, computed at the snapshot.
    pub lags: Vec<ReceiverLag>,
    /// Age of the oldest byte not flushed on the best receiver (async); 0 when caught up.
    pub rpo_exposure: Duration,
    pub rpo_target: Option<Duration>,
    /// Seconds spent with the exposure within and outside the target.
    pub rpo_within_secs: f64,
    pub rpo_outside_secs: f64,
    /// The position flushed on the quorum (async: the best receiver).
    pub quorum_pos: Position,
    /// File event → tailer refresh.
    pub detection: Histogram,
    pub source_error: Option<String>,
    pub source_errors: u64,
    /// Points held by the lag tracker (bounded).
    pub lag_points: usize,
    pub sync: SyncSnapshot,
}

/// Semi-sync at the moment of a snapshot.
#[derive(Debug, Clone)]
pub struct SyncSnapshot {
    pub quorum: u32,
    pub level: walship_core::sync::AckLevel,
    pub timeout: Option<Duration>,
    pub state: walship_core::sync::SyncState,
    pub quorum_pos: Option<Position>,
    pub waiting: usize,
    pub fallbacks: u64,
    pub recoveries: u64,
    /// Wait durations by outcome: durable, degraded, timeout.
    pub waits: [Histogram; 4],
    /// Segment waits let go by the `--max-retained` guard.
    pub released: u64,
    /// `--max-retained`.
    pub max_retained: Option<u64>,
}

/// Seconds within and outside the RPO target.
#[derive(Debug, Default)]
pub(crate) struct RpoClock {
    pub(crate) within: f64,
    pub(crate) outside: f64,
    pub(crate) errors: u64,
}

pub(crate) struct Shared {
    pub(crate) opts: SenderOptions,
    pub(crate) base: Instant,
    pub(crate) tailer: Mutex<Tailer>,
    pub(crate) end: watch::Sender<Position>,
    pub(crate) receivers: Mutex<Vec<ReceiverStatus>>,
    pub(crate) source_error: Mutex<Option<String>>,
    /// When WAL ranges were first observed. Lock order: `receivers` before `lag`.
    pub(crate) lag: Mutex<LagTracker>,
    pub(crate) detection: Mutex<Histogram>,
    pub(crate) rpo: Mutex<RpoClock>,
    pub(crate) watcher: Watcher,
    pub(crate) sync: crate::sync::SyncShared,
}

impl Shared {
    pub(crate) fn update(&self, idx: usize, f: impl FnOnce(&mut ReceiverStatus)) {
        if let Some(r) = lock(&self.receivers).get_mut(idx) {
            f(r);
        }
    }

    /// True when another receiver's session is streaming (then positions
    /// must not be re-anchored under it).
    pub(crate) fn others_streaming(&self, idx: usize) -> bool {
        lock(&self.receivers).iter().enumerate().any(|(i, r)| i != idx && r.state == ConnState::Streaming)
    }

    /// Lets the tailer and the lag tracker drop what every receiver has
    /// durably (and applied).
    pub(crate) fn release(&self) {
        // Mappings follow the receivers that are streaming: a receiver that
        // is down must not pin every segment the others read since (the
        // sender's memory would grow with its outage). If it comes back and
        // its bytes were deleted meanwhile, its session reports exactly that.
        let (flushed, applied) = {
            let r = lock(&self.receivers);
            let streaming = r.iter().filter(|r| r.state == ConnState::Streaming);
            (streaming.map(|r| r.flushed).min(), r.iter().map(|r| r.applied).min())
        };
        if let Some(min) = flushed {
            lock(&self.tailer).release_before(min);
        }
        if let Some(min) = applied {
            lock(&self.lag).forget_before(min);
        }
    }

    /// The position flushed on the quorum (async: the best receiver), over
    /// every receiver's last known flushed position — a receiver that is
    /// disconnected still holds what it flushed. For RPO exposure.
    pub(crate) fn quorum_pos(&self, receivers: &[ReceiverStatus]) -> Position {
        let flushed: Vec<Position> = receivers.iter().map(|r| r.flushed).collect();
        walship_core::sync::SyncTracker::quorum_of(self.opts.sync.quorum, &flushed).unwrap_or_default()
    }

    pub(crate) fn snapshot(&self, now: Instant) -> SenderSnapshot {
        let receivers = lock(&self.receivers).clone();
        let end = *self.end.borrow();
        let quorum_pos = self.quorum_pos(&receivers);
        let (lags, rpo_exposure, lag_points) = {
            let t = lock(&self.lag);
            let lags = receivers
                .iter()
                .map(|r| ReceiverLag {
                    lag_bytes: end.since(r.flushed),
                    write: r.levels[WRITE].current(&t, now),
                    flush: r.levels[FLUSH].current(&t, now),
                    apply: r.levels[APPLY].current(&t, now),
                })
                .collect();
            (lags, t.age(quorum_pos, now), t.len())
        };
        let rpo = lock(&self.rpo);
        SenderSnapshot {
            source_id: self.opts.source_id.clone(),
            format: match self.opts.tailer.format {
                SourceFormat::Raw => "raw",
                SourceFormat::Postgres => "postgres",
            },
            end,
            receivers,
            lags,
            rpo_exposure,
            rpo_target: self.opts.rpo_target,
            rpo_within_secs: rpo.within,
            rpo_outside_secs: rpo.outside,
            quorum_pos,
            detection: lock(&self.detection).clone(),
            source_error: lock(&self.source_error).clone(),
            source_errors: rpo.errors,
            lag_points,
            sync: {
                let t = lock(&self.sync.tracker);
                let cfg = t.config();
                SyncSnapshot {
                    quorum: cfg.quorum,
                    level: cfg.level,
                    timeout: cfg.timeout,
                    state: t.state(),
                    quorum_pos: t.quorum_pos(),
                    waiting: t.waiting(),
                    fallbacks: t.fallbacks(),
                    recoveries: t.recoveries(),
                    waits: lock(&self.sync.waits).clone(),
                    released: self.sync.released.load(std::sync::atomic::Ordering::Relaxed),
                    max_retained: self.opts.max_retained,
                }
            },
        }
    }
}

/// A cheap handle to read a running sender's state.
#[derive(Clone)]
pub struct SenderHandle(Arc<Shared>);

impl std::fmt::Debug for SenderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SenderHandle")
    }
}

impl SenderHandle {
    pub(crate) fn shared(&self) -> &Shared {
        &self.0
    }

    /// The current state, with lags computed now.
    pub fn snapshot(&self) -> SenderSnapshot {
        self.0.snapshot(Instant::now())
    }
}

/// A sender, ready to [`run`](Sender::run).
pub struct Sender {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("wal_dir", &self.shared.opts.wal_dir).finish_non_exhaustive()
    }
}

impl Sender {
    /// Opens the WAL directory and its watcher. Must be called inside a tokio runtime.
    pub fn new(opts: SenderOptions) -> Result<Sender, AgentError> {
        if opts.targets.is_empty() {
            return Err(AgentError::Config("no receiver given (--to)".into()));
        }
        if opts.max_frame == 0 || opts.max_frame > walship_core::frame::DEFAULT_MAX_PAYLOAD {
            return Err(AgentError::Config(format!(
                "frame size {} is out of range 1..={}",
                opts.max_frame,
                walship_core::frame::DEFAULT_MAX_PAYLOAD
            )));
        }
        if opts.max_inflight < u64::from(opts.max_frame) {
            return Err(AgentError::Config(format!(
                "max in-flight bytes {} is smaller than one frame ({})",
                opts.max_inflight, opts.max_frame
            )));
        }
        if opts.sync.quorum as usize > opts.targets.len() {
            return Err(AgentError::Config(format!(
                "--sync-quorum {} needs at least that many receivers, but only {} --to given",
                opts.sync.quorum,
                opts.targets.len()
            )));
        }
        let sync = opts.sync;
        let mut opts = opts;
        let tailer = Tailer::open(&opts.wal_dir, opts.tailer.clone())?;
        if opts.tailer.format == SourceFormat::Postgres {
            let Some(pg) = tailer.postgres() else {
                return Err(AgentError::Config(format!(
                    "no PostgreSQL WAL in {}: no segment with a valid long page header (is it a pg_wal directory?)",
                    opts.wal_dir.display()
                )));
            };
            // The source id of a PostgreSQL cluster is its system identifier.
            let sysid = pg.system_identifier.to_string();
            if !opts.source_id.is_empty() && opts.source_id != sysid {
                return Err(AgentError::Config(format!(
                    "--source-id {} does not match the database system identifier {sysid} of {}",
                    opts.source_id,
                    opts.wal_dir.display()
                )));
            }
            opts.source_id = sysid;
            info!(
                system_identifier = pg.system_identifier,
                segment_size = pg.geometry.seg_size(),
                block_size = pg.geometry.block_size(),
                timeline = pg.timeline,
                "postgres wal"
            );
        }
        let watcher = Watcher::new(&opts.wal_dir, opts.poll_interval, Duration::from_millis(1))?;
        if watcher.is_polling_only() {
            warn!(dir = %opts.wal_dir.display(), "file notifications unavailable; polling every 1 ms");
        }
        let (end, _) = watch::channel(tailer.end());
        let receivers = opts
            .targets
            .iter()
            .map(|t| ReceiverStatus {
                label: t.label.clone(),
                state: ConnState::Connecting,
                epoch: 0,
                sent: Position::ZERO,
                written: Position::ZERO,
                flushed: Position::ZERO,
                applied: Position::ZERO,
                resume_pos: Position::ZERO,
                sessions: 0,
                reconnects: 0,
                frames_sent: 0,
                bytes_sent: 0,
                crc_errors: 0,
                last_error: None,
                levels: Default::default(),
            })
            .collect();
        let started = Instant::now();
        // Bytes already there at start count as observed now: we cannot know
        // when they were written.
        let mut lag = LagTracker::new(DEFAULT_CAPACITY);
        lag.observe(tailer.end(), started);
        let shared = Arc::new(Shared {
            opts,
            base: started,
            tailer: Mutex::new(tailer),
            end,
            receivers: Mutex::new(receivers),
            source_error: Mutex::new(None),
            lag: Mutex::new(lag),
            detection: Mutex::new(Histogram::default()),
            rpo: Mutex::new(RpoClock::default()),
            watcher,
            sync: crate::sync::SyncShared::new(sync),
        });
        Ok(Sender { shared })
    }

    /// A handle for snapshots.
    pub fn handle(&self) -> SenderHandle {
        SenderHandle(self.shared.clone())
    }

    /// Ships until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let Sender { shared } = self;
        info!(
            wal_dir = %shared.opts.wal_dir.display(),
            source_id = %shared.opts.source_id,
            end_pos = %*shared.end.borrow(),
            receivers = shared.opts.targets.len(),
            "sender started"
        );
        let mut tasks = tokio::task::JoinSet::new();
        for (idx, target) in shared.opts.targets.clone().into_iter().enumerate() {
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { target_loop(shared, idx, target, shutdown).await });
        }
        {
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { rpo_clock(&shared, &shutdown).await });
        }
        {
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { crate::sync::timer(&shared, &shutdown).await });
        }
        source_loop(&shared, &shutdown).await;
        while tasks.join_next().await.is_some() {}
        info!("sender stopped");
        Ok(())
    }
}

async fn source_loop(shared: &Shared, shutdown: &CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.watcher.changed() => {}
        }
        let _ = shared.refresh_source();
    }
}

impl Shared {
    /// Re-reads the WAL directory; when it grew, records when the new bytes
    /// were first observed, publishes the new end and lets semi-sync see it.
    /// Returns the end. Called by the source loop and, for a wait without a
    /// position, by the wait itself, so the end is read fresh at the call.
    pub(crate) fn refresh_source(&self) -> Result<Position, walship_source::SourceError> {
        // The first file event since the last refresh is the earliest moment
        // the bytes this refresh finds can have been seen.
        let first_event = self.watcher.take_first_event();
        let before = Instant::now();
        let r = {
            let mut t = lock(&self.tailer);
            // Decided under the tailer's lock, so that of two concurrent
            // refreshes the one that takes the flag is the one that lists.
            let relist = self.watcher.take_entries_changed();
            t.refresh_hinted(relist).map(|changed| (changed, t.end()))
        };
        match r {
            Ok((changed, end)) => {
                if changed {
                    let now = Instant::now();
                    let observed = first_event.filter(|t| *t <= before).unwrap_or(before);
                    if let Some(ev) = first_event {
                        lock(&self.detection).record(now.saturating_duration_since(ev).as_secs_f64());
                    }
                    lock(&self.lag).observe(end, observed);
                    self.end.send_replace(end);
                    self.sync_update(now);
                }
                if let Some(prev) = lock(&self.source_error).take() {
                    info!("wal directory readable again (was: {prev})");
                }
                Ok(end)
            }
            Err(e) => {
                lock(&self.rpo).errors += 1;
                let msg = e.to_string();
                let mut cur = lock(&self.source_error);
                if cur.as_deref() != Some(msg.as_str()) {
                    error!("{msg}");
                    *cur = Some(msg);
                }
                Err(e)
            }
        }
    }
}

async fn target_loop(shared: Arc<Shared>, idx: usize, target: Target, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(shared.opts.backoff_initial, shared.opts.backoff_max);
    let endpoint = match walship_net::client_endpoint_for(target.addr, &shared.opts.tls, shared.opts.mtu_upper_bound) {
        Ok(e) => e,
        Err(e) => {
            error!(receiver = %target.label, "cannot create the client endpoint: {e}");
            shared.update(idx, |r| {
                r.state = ConnState::Stopped;
                r.last_error = Some(e.to_string());
            });
            return;
        }
    };
    let mut last_logged: Option<String> = None;
    loop {
        shared.update(idx, |r| r.state = ConnState::Connecting);
        let outcome = sender_session::run(&shared, idx, &endpoint, &target, &shutdown).await;
        if shutdown.is_cancelled() {
            break;
        }
        let streamed = match outcome {
            Ok(streamed) => streamed,
            Err((streamed, e)) => {
                // A receiver whose disk is full accepts the handshake and
                // fails at the first write: that is no progress.
                let streamed = streamed && !e.is_receiver_storage();
                let msg = e.to_string();
                // Log each distinct failure once at warn; repeats at debug.
                if last_logged.as_deref() != Some(msg.as_str()) {
                    if e.is_fatal_for_data() {
                        error!(receiver = %target.label, "session failed: {msg}");
                    } else {
                        warn!(receiver = %target.label, "session ended: {msg}");
                    }
                    last_logged = Some(msg.clone());
                } else {
                    tracing::debug!(receiver = %target.label, "session ended: {msg}");
                }
                let bad_frame = e.is_bad_frame();
                shared.update(idx, |r| {
                    r.last_error = Some(msg);
                    r.crc_errors += u64::from(bad_frame);
                });
                streamed
            }
        };
        if streamed {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        shared.update(idx, |r| {
            r.state = ConnState::Backoff;
            r.reconnects += 1;
        });
        // One receiver fewer: the quorum may have moved.
        shared.sync_update(Instant::now());
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    shared.update(idx, |r| r.state = ConnState::Stopped);
    endpoint.close(walship_net::close::SHUTDOWN, b"shutdown");
    endpoint.wait_idle().await;
}

/// The sender's config for session cores.
pub(crate) fn core_config(opts: &SenderOptions, tailer: &Tailer) -> walship_core::sender::SenderConfig {
    let (format, segment_size, timeline) = match tailer.postgres() {
        Some(pg) => (proto::Format::Postgres, pg.geometry.seg_size(), pg.timeline),
        None => (proto::Format::Raw, 0, 0),
    };
    walship_core::sender::SenderConfig {
        source_id: opts.source_id.clone(),
        format,
        segment_size,
        timeline,
        sender_name: opts.sender_name.clone(),
        max_frame: opts.max_frame,
        max_inflight: opts.max_inflight,
    }
}

/// Integrates time within and outside the RPO target, ten times a second.
async fn rpo_clock(shared: &Shared, shutdown: &CancellationToken) {
    let Some(target) = shared.opts.rpo_target else { return };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let quorum = shared.quorum_pos(&lock(&shared.receivers));
        let exposure = lock(&shared.lag).age(quorum, now);
        let dt = now.duration_since(last).as_secs_f64();
        last = now;
        let mut rpo = lock(&shared.rpo);
        if exposure <= target {
            rpo.within += dt;
        } else {
            rpo.outside += dt;
        }
    }
}

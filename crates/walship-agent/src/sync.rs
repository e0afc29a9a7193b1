//! Semi-sync in the sender runtime: drives the core's [`SyncTracker`] from
//! acks, source growth, connection changes and a deadline timer, and hands
//! each finished wait to the caller waiting for it.
//!
//! Lock order: `receivers`, then `lag`; the tracker's lock is taken alone
//! (never while holding `receivers`).
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use walship_core::histogram::Histogram;
use walship_core::sync::{AckLevel, Released, SyncConfig, SyncEvent, SyncTracker, WaitId, WaitOutcome};
use walship_core::{Position, SegmentName};

use crate::receiver::lock;
use crate::sender::{ConnState, SenderHandle, Shared};

/// The sender's semi-sync state.
#[derive(Debug)]
pub(crate) struct SyncShared {
    pub(crate) tracker: Mutex<SyncTracker>,
    waiters: Mutex<HashMap<WaitId, oneshot::Sender<Released>>>,
    wake: Notify,
    /// Wait durations by outcome: durable, degraded, timeout.
    pub(crate) waits: Mutex<[Histogram; 4]>,
    /// Segment waits let go by the `--max-retained` guard.
    pub(crate) released: std::sync::atomic::AtomicU64,
}

impl SyncShared {
    pub(crate) fn new(cfg: SyncConfig) -> Self {
        SyncShared {
            tracker: Mutex::new(SyncTracker::new(cfg)),
            waiters: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            waits: Mutex::new(Default::default()),
            released: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// What to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitTarget {
    /// Everything in the WAL at the moment of the call (read fresh).
    End,
    /// Everything below this position.
    Position(Position),
    /// The whole of this segment (it must be complete: a later one exists).
    Segment(SegmentName),
}

/// A finished wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitResult {
    pub outcome: WaitOutcome,
    pub position: Position,
    pub waited: Duration,
}

/// Why a wait could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// Reading the WAL directory failed.
    #[error(transparent)]
    Source(#[from] walship_source::SourceError),
    /// The segment is still being written.
    #[error("segment {0} is not complete in the source yet")]
    SegmentIncomplete(SegmentName),
    /// No such segment in the WAL directory.
    #[error("segment {0} is not in the wal directory")]
    SegmentUnknown(SegmentName),
    /// The sender is shutting down.
    #[error("the sender is shutting down")]
    ShuttingDown,
}

/// How long a segment wait without a caller timeout waits for the segment to complete.
const SEGMENT_APPEAR: Duration = Duration::from_secs(10);

fn outcome_index(o: WaitOutcome) -> usize {
    match o {
        WaitOutcome::Durable => 0,
        WaitOutcome::Degraded => 1,
        WaitOutcome::Timeout => 2,
        WaitOutcome::Released => 3,
    }
}

fn level_pos(r: &crate::sender::ReceiverStatus, level: AckLevel) -> Position {
    match level {
        AckLevel::Write => r.written,
        AckLevel::Flush => r.flushed,
        AckLevel::Apply => r.applied,
    }
}

impl Shared {
    /// Recomputes the quorum position from the streaming receivers and
    /// releases what it covers. Call after acks, growth and state changes.
    pub(crate) fn sync_update(&self, now: Instant) {
        let cfg = self.opts.sync;
        let positions: Vec<Position> = lock(&self.receivers)
            .iter()
            .filter(|r| r.state == ConnState::Streaming)
            .map(|r| level_pos(r, cfg.level))
            .collect();
        let quorum = SyncTracker::quorum_of(cfg.quorum, &positions);
        let end = *self.end.borrow();
        let mut t = lock(&self.sync.tracker);
        t.update(quorum, end, now);
        self.deliver(&mut t);
    }

    /// Hands finished waits to their callers; logs state changes.
    fn deliver(&self, t: &mut SyncTracker) {
        while let Some(r) = t.poll_released() {
            lock(&self.sync.waits)[outcome_index(r.outcome)].record(r.waited.as_secs_f64());
            if let Some(tx) = lock(&self.sync.waiters).remove(&r.id) {
                let _ = tx.send(r);
            }
        }
        while let Some(ev) = t.poll_event() {
            match ev {
                SyncEvent::Degraded(reason) => warn!("semi-sync degraded to async: {reason}"),
                SyncEvent::Recovered => info!("semi-sync restored: the quorum caught up with the end of the wal"),
            }
        }
    }

    /// The `--max-retained` guard for a segment wait: when the WAL not yet
    /// flushed on the quorum exceeds the limit and the segment is not on it,
    /// let the caller (PostgreSQL's archive_command) go so that the primary
    /// can recycle the segment: its disk matters more than the chain then.
    fn retention_guard(&self, name: &SegmentName, seg_end: Position) -> Option<WaitResult> {
        let max = self.opts.max_retained?;
        let quorum = self.quorum_pos(&lock(&self.receivers));
        let end = *self.end.borrow();
        let retained = end.since(quorum);
        if quorum >= seg_end || retained <= max {
            return None;
        }
        let n = self.sync.released.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        error!(
            segment = %name,
            retained_bytes = retained,
            max_retained = max,
            quorum_pos = %quorum,
            released_total = n,
            "released a segment that is NOT durable on the receivers: unshipped wal exceeds --max-retained; \
             the primary may now recycle it, and a receiver that misses it needs a new base backup and mirror"
        );
        lock(&self.sync.waits)[outcome_index(WaitOutcome::Released)].record(0.0);
        Some(WaitResult { outcome: WaitOutcome::Released, position: seg_end, waited: Duration::ZERO })
    }

    /// The end of segment `name` once it is complete in the source. PostgreSQL
    /// calls archive_command as soon as it has written a segment, which can
    /// be a moment before the sender sees it complete (its last record may
    /// run into the next segment): a segment that is still open, or not seen
    /// yet but newer than every known one, is waited for up to `limit`.
    async fn segment_end(&self, name: &SegmentName, limit: Duration) -> Result<Position, WaitError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut end_rx = self.end.subscribe();
        loop {
            end_rx.borrow_and_update();
            self.refresh_source()?;
            let state = {
                let t = lock(&self.tailer);
                match t.segments().iter().find(|s| s.name == *name) {
                    Some(s) if s.sealed => return Ok(s.end()),
                    Some(_) => WaitError::SegmentIncomplete(name.clone()),
                    None if t.segments().last().is_some_and(|l| *name > l.name) => {
                        WaitError::SegmentIncomplete(name.clone())
                    }
                    None => return Err(WaitError::SegmentUnknown(name.clone())),
                }
            };
            tokio::select! {
                r = end_rx.changed() => if r.is_err() { return Err(WaitError::ShuttingDown) },
                _ = tokio::time::sleep_until(deadline) => return Err(state),
            }
        }
    }

    async fn wait(&self, target: WaitTarget, timeout: Option<Duration>) -> Result<WaitResult, WaitError> {
        let mut timeout = timeout;
        let position = match target {
            WaitTarget::End => self.refresh_source()?,
            WaitTarget::Position(p) => p,
            WaitTarget::Segment(name) => {
                let started = Instant::now();
                let end = self.segment_end(&name, timeout.unwrap_or(SEGMENT_APPEAR)).await?;
                if let Some(r) = self.retention_guard(&name, end) {
                    return Ok(r);
                }
                // The time spent waiting for the segment to complete counts against the caller's timeout.
                timeout = timeout.map(|t| t.saturating_sub(started.elapsed()));
                end
            }
        };
        let now = Instant::now();
        self.sync_update(now);
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut t = lock(&self.sync.tracker);
            let id = t.register(position, timeout, now);
            lock(&self.sync.waiters).insert(id, tx);
            self.deliver(&mut t);
            id
        };
        self.sync.wake.notify_one();
        let guard = CancelOnDrop { shared: self, id: Some(id) };
        let r = rx.await.map_err(|_| WaitError::ShuttingDown)?;
        std::mem::forget(guard);
        Ok(WaitResult { outcome: r.outcome, position: r.position, waited: r.waited })
    }
}

/// Forgets a waiter whose caller went away (an HTTP client hung up).
struct CancelOnDrop<'a> {
    shared: &'a Shared,
    id: Option<WaitId>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            lock(&self.shared.sync.tracker).cancel(id);
            lock(&self.shared.sync.waiters).remove(&id);
        }
    }
}

/// Expires waits at their deadlines.
pub(crate) async fn timer(shared: &Shared, shutdown: &CancellationToken) {
    loop {
        let deadline = lock(&shared.sync.tracker).poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = shared.sync.wake.notified() => {}
            _ = sleep => {
                let mut t = lock(&shared.sync.tracker);
                t.handle_timeout(Instant::now());
                shared.deliver(&mut t);
            }
        }
    }
    // Nobody will release the remaining waiters: their callers get ShuttingDown.
    lock(&shared.sync.waiters).clear();
}

impl SenderHandle {
    /// Blocks until `target` is on the quorum at the configured level, the
    /// sender degrades (`Degraded`), or `timeout` passes (`Timeout`).
    /// Cancel-safe: dropping the future forgets the wait.
    pub async fn wait(&self, target: WaitTarget, timeout: Option<Duration>) -> Result<WaitResult, WaitError> {
        self.shared().wait(target, timeout).await
    }
}

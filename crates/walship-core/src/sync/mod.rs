//! Semi-synchronous waits: the quorum position, waiters, and the
//! sync / degraded state machine. No I/O, no clock.
//!
//! * The **quorum position** at a level (write, flush, apply) is the N-th
//!   highest position at that level among connected receivers (`None` when
//!   fewer than N are connected).
//! * A **waiter** asks for a position. It is released as
//!   [`WaitOutcome::Durable`] the moment the quorum position covers it;
//!   waiters are released in position order.
//! * When a waiter's `sync_timeout` expires it is released as
//!   [`WaitOutcome::Degraded`], and the tracker switches to
//!   [`SyncState::Degraded`], releasing every other waiter the same way
//!   (MySQL's fallback to async). While degraded, new waits return
//!   `Degraded` at once. When the quorum position reaches the end of the
//!   WAL, the state returns to [`SyncState::Sync`] by itself.
//! * A caller's own, shorter timeout releases only that waiter, as
//!   [`WaitOutcome::Timeout`].
//! * With quorum 0 (async) nothing degrades: a wait blocks until the best
//!   receiver has the position (quorum 1) or a timeout passes, and the
//!   state stays [`SyncState::Async`].
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::Position;

/// Which acknowledgement a wait needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckLevel {
    /// Written to the mirror file.
    Write,
    /// fdatasync returned.
    Flush,
    /// Applied (complete segment or durable `.partial`, or the apply command ran).
    Apply,
}

impl AckLevel {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            AckLevel::Write => "write",
            AckLevel::Flush => "flush",
            AckLevel::Apply => "apply",
        }
    }
}

impl std::str::FromStr for AckLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "write" => Ok(AckLevel::Write),
            "flush" => Ok(AckLevel::Flush),
            "apply" => Ok(AckLevel::Apply),
            _ => Err(format!("invalid sync level {s:?}: use write, flush or apply")),
        }
    }
}

/// The sender's replication mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// Quorum 0: waits never degrade the sender.
    Async,
    /// Semi-synchronous: waits block until the quorum has their position.
    Sync,
    /// A wait timed out; waits return at once until the quorum catches up.
    Degraded,
}

impl SyncState {
    /// Lowercase name, as in `/v1/lag` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Async => "async",
            SyncState::Sync => "sync",
            SyncState::Degraded => "degraded",
        }
    }
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The position is on the quorum at the configured level.
    Durable,
    /// Semi-sync degraded (by this wait's sync timeout or an earlier one).
    Degraded,
    /// The caller's own timeout passed first.
    Timeout,
    /// A segment wait let go without the segment being durable: the WAL not
    /// yet on the quorum exceeded the sender's `--max-retained` (never
    /// produced by the tracker; the sender decides it before registering).
    Released,
}

impl WaitOutcome {
    /// Lowercase name, as in the wait API.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitOutcome::Durable => "durable",
            WaitOutcome::Degraded => "degraded",
            WaitOutcome::Timeout => "timeout",
            WaitOutcome::Released => "released",
        }
    }
}

/// Semi-sync settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncConfig {
    /// Receivers that must have a position (0 = async).
    pub quorum: u32,
    pub level: AckLevel,
    /// `None` waits forever (fully synchronous).
    pub timeout: Option<Duration>,
}

/// Identifies a waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WaitId(u64);

impl fmt::Display for WaitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A finished wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub id: WaitId,
    pub outcome: WaitOutcome,
    pub position: Position,
    pub waited: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Waiter {
    started: Instant,
    sync_deadline: Option<Instant>,
    caller_deadline: Option<Instant>,
}

/// A state change worth logging and counting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// Switched to degraded; the reason names the waiter's position and timeout.
    Degraded(String),
    /// Back to sync: the quorum caught up with the end.
    Recovered,
}

/// Quorum position, waiters and state.
#[derive(Debug)]
pub struct SyncTracker {
    cfg: SyncConfig,
    state: SyncState,
    waiters: BTreeMap<(Position, WaitId), Waiter>,
    next_id: u64,
    released: VecDeque<Released>,
    events: VecDeque<SyncEvent>,
    quorum_pos: Option<Position>,
    fallbacks: u64,
    recoveries: u64,
}

impl SyncTracker {
    /// A tracker in `Async` (quorum 0) or `Sync` state.
    pub fn new(cfg: SyncConfig) -> Self {
        let state = if cfg.quorum == 0 { SyncState::Async } else { SyncState::Sync };
        SyncTracker {
            cfg,
            state,
            waiters: BTreeMap::new(),
            next_id: 0,
            released: VecDeque::new(),
            events: VecDeque::new(),
            quorum_pos: None,
            fallbacks: 0,
            recoveries: 0,
        }
    }

    /// The quorum position for `quorum` receivers among `positions` (one per
    /// connected receiver, at the level): the `quorum`-th highest; `None`
    /// when fewer are given. Quorum 0 counts as 1 (the best receiver).
    pub fn quorum_of(quorum: u32, positions: &[Position]) -> Option<Position> {
        let n = quorum.max(1) as usize;
        if positions.len() < n {
            return None;
        }
        let mut p = positions.to_vec();
        p.sort_unstable_by(|a, b| b.cmp(a));
        Some(p[n - 1])
    }

    /// Settings.
    pub fn config(&self) -> SyncConfig {
        self.cfg
    }

    /// Current state.
    pub fn state(&self) -> SyncState {
        self.state
    }

    /// The last quorum position given to [`update`](Self::update).
    pub fn quorum_pos(&self) -> Option<Position> {
        self.quorum_pos
    }

    /// Times the tracker fell back to degraded, and recovered.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks
    }

    /// See [`fallbacks`](Self::fallbacks).
    pub fn recoveries(&self) -> u64 {
        self.recoveries
    }

    /// Waiters still blocked.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// A new wait for `pos`, with the caller's own timeout. Its outcome
    /// comes from [`poll_released`](Self::poll_released), possibly at once.
    pub fn register(&mut self, pos: Position, caller_timeout: Option<Duration>, now: Instant) -> WaitId {
        let id = WaitId(self.next_id);
        self.next_id += 1;
        let done = |outcome| Released { id, outcome, position: pos, waited: Duration::ZERO };
        if self.quorum_pos.is_some_and(|q| q >= pos) {
            self.released.push_back(done(WaitOutcome::Durable));
        } else if self.state == SyncState::Degraded {
            self.released.push_back(done(WaitOutcome::Degraded));
        } else if caller_timeout == Some(Duration::ZERO) {
            self.released.push_back(done(WaitOutcome::Timeout));
        } else {
            let w = Waiter {
                started: now,
                sync_deadline: self.cfg.timeout.map(|t| now + t),
                caller_deadline: caller_timeout.map(|t| now + t),
            };
            self.waiters.insert((pos, id), w);
        }
        id
    }

    /// Drops a waiter whose caller went away.
    pub fn cancel(&mut self, id: WaitId) {
        self.waiters.retain(|(_, i), _| *i != id);
    }

    /// The quorum position (see [`quorum_of`](Self::quorum_of)) and the end
    /// of the WAL, after any ack or source change.
    pub fn update(&mut self, quorum_pos: Option<Position>, end: Position, now: Instant) {
        self.quorum_pos = quorum_pos;
        if let Some(q) = quorum_pos {
            // In position order: the front of the map is the lowest position.
            while let Some(entry) = self.waiters.first_entry() {
                if entry.key().0 > q {
                    break;
                }
                let ((position, id), w) = entry.remove_entry();
                self.released.push_back(Released {
                    id,
                    outcome: WaitOutcome::Durable,
                    position,
                    waited: now.saturating_duration_since(w.started),
                });
            }
            if self.state == SyncState::Degraded && q >= end {
                self.state = SyncState::Sync;
                self.recoveries += 1;
                self.events.push_back(SyncEvent::Recovered);
            }
        }
    }

    /// Expires waiters whose deadlines passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<_> = self
            .waiters
            .iter()
            .filter_map(|(k, w)| {
                let sync = w.sync_deadline.is_some_and(|d| d <= now);
                let caller = w.caller_deadline.is_some_and(|d| d <= now);
                // The earlier deadline decides; a tie goes to the sync timeout.
                let outcome = match (sync, caller) {
                    (true, true) if w.caller_deadline < w.sync_deadline => WaitOutcome::Timeout,
                    (true, _) => WaitOutcome::Degraded,
                    (false, true) => WaitOutcome::Timeout,
                    (false, false) => return None,
                };
                Some((*k, outcome))
            })
            .collect();
        let mut degrade = None;
        for (key, outcome) in expired {
            if let Some(w) = self.waiters.remove(&key) {
                self.released.push_back(Released {
                    id: key.1,
                    outcome,
                    position: key.0,
                    waited: now.saturating_duration_since(w.started),
                });
                if outcome == WaitOutcome::Degraded && degrade.is_none() {
                    degrade = Some((key.0, w));
                }
            }
        }
        if let Some((pos, w)) = degrade
            && self.state == SyncState::Sync
        {
            self.state = SyncState::Degraded;
            self.fallbacks += 1;
            let waited = now.saturating_duration_since(w.started);
            self.events.push_back(SyncEvent::Degraded(format!(
                "a wait for position {pos} found it on fewer than {} receivers at level {} within {:?} \
                 (quorum position {})",
                self.cfg.quorum,
                self.cfg.level.as_str(),
                waited,
                self.quorum_pos.map_or("none".into(), |q| q.to_string()),
            )));
            // MySQL's fallback: everyone waiting proceeds.
            for ((position, id), w) in std::mem::take(&mut self.waiters) {
                self.released.push_back(Released {
                    id,
                    outcome: WaitOutcome::Degraded,
                    position,
                    waited: now.saturating_duration_since(w.started),
                });
            }
        }
    }

    /// The earliest deadline of any waiter.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.waiters.values().flat_map(|w| [w.sync_deadline, w.caller_deadline]).flatten().min()
    }

    /// The next finished wait.
    pub fn poll_released(&mut self) -> Option<Released> {
        self.released.pop_front()
    }

    /// The next state change.
    pub fn poll_event(&mut self) -> Option<SyncEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests;

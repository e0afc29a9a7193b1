//! The receiver's simulated disk: an in-memory mirror with a written and a
//! durable mark, modelled on `walship-store`'s `Mirror`.
//!
//! Writes are append-only at the written position, so one buffer holds
//! both: bytes below `durable` survive a crash, the rest are page cache.
//! The segment table has the same split: a segment start (except the first,
//! which the store records at once) and a segment's completion reach the
//! durable table only through an fdatasync. The epoch counter is durable.
use walship_core::receiver::{MirrorResume, StoreOp};
use walship_core::{Position, SegmentName};

/// The window of bytes before the durable position that a Welcome checksums
/// (the agent's `CHECK_WINDOW`).
pub const CHECK_WINDOW: u64 = 64 << 10;

/// One segment of the mirror's table: name, start, end once complete.
pub type SegRecord = (SegmentName, Position, Option<Position>);

/// The mirror.
#[derive(Debug, Default)]
pub struct Disk {
    /// Written bytes; `data[..durable]` is durable.
    pub data: Vec<u8>,
    durable: u64,
    table: Vec<SegRecord>,
    durable_table: Vec<SegRecord>,
    epoch: u64,
    /// Applied by the apply step (`<= durable`); recorded durably by it.
    applied: u64,
    /// fdatasyncs that moved the durable mark.
    pub syncs: u64,
}

impl Disk {
    /// Everything below is written (page cache).
    pub fn written(&self) -> Position {
        Position(self.data.len() as u64)
    }

    /// Everything below survives a crash.
    pub fn durable(&self) -> Position {
        Position(self.durable)
    }

    /// Everything below was applied by the apply step.
    pub fn applied(&self) -> Position {
        Position(self.applied)
    }

    /// The apply step applied (and recorded) everything below `pos`.
    pub fn set_applied(&mut self, pos: Position) {
        self.applied = self.applied.max(pos.get().min(self.durable));
    }

    /// Performs a store operation; `Ok(true)` when it synced (segment end).
    pub fn apply(&mut self, op: StoreOp) -> Result<bool, String> {
        match op {
            // Side files do not move positions; the simulation does not model them.
            StoreOp::WriteFile { .. } => Ok(false),
            StoreOp::StartSegment { name, start } => {
                if let Some((last, _, None)) = self.table.last() {
                    return Err(format!("store: segment {name} starts while {last} is open"));
                }
                if self.table.iter().any(|s| s.0 == name) {
                    return Err(format!("store: segment {name} already exists"));
                }
                if start != self.written() {
                    return Err(format!("store: segment {name} starts at {start}, written is {}", self.written()));
                }
                let first = self.table.is_empty();
                self.table.push((name, start, None));
                if first {
                    self.durable_table = self.table.clone();
                    self.applied = start.get();
                }
                Ok(false)
            }
            StoreOp::Write { pos, data } => {
                if !matches!(self.table.last(), Some((_, _, None))) {
                    return Err(format!("store: write at {pos} outside an open segment"));
                }
                if pos != self.written() {
                    return Err(format!("store: write at {pos}, written is {}", self.written()));
                }
                for chunk in data.chunks() {
                    self.data.extend_from_slice(chunk);
                }
                Ok(false)
            }
            StoreOp::CompleteSegment { end } => {
                let written = self.written();
                let Some(last) = self.table.last_mut().filter(|s| s.2.is_none()) else {
                    return Err(format!("store: complete at {end} without an open segment"));
                };
                if end != written {
                    return Err(format!("store: complete at {end}, written is {written}"));
                }
                last.2 = Some(end);
                self.fsync();
                Ok(true)
            }
        }
    }

    /// fdatasync and record: everything written becomes durable. True when it moved.
    pub fn fsync(&mut self) -> bool {
        self.durable_table.clone_from(&self.table);
        let moved = self.durable < self.data.len() as u64;
        self.durable = self.data.len() as u64;
        self.syncs += u64::from(moved);
        moved
    }

    /// A crash: page cache and unrecorded table changes are lost.
    pub fn crash(&mut self) {
        self.data.truncate(self.durable as usize);
        self.table.clone_from(&self.durable_table);
    }

    /// What a new session does first (`discard_unflushed`): trim to durable.
    pub fn discard_unflushed(&mut self) {
        self.data.truncate(self.durable as usize);
    }

    /// Takes the next epoch (durably).
    pub fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    /// The resume point and checksum, as `resume_point` and `checksum_before` give them.
    /// `separate_apply`: the agent runs an apply step, so the applied mark is
    /// its own; otherwise it is the durable position.
    pub fn resume(&self, separate_apply: bool) -> MirrorResume {
        let durable = self.durable();
        let segment = self.table.last().map(|(n, s, e)| (n.clone(), *s, e.is_some()));
        let (check_start, check_crc) = match self.table.last() {
            None => (durable, crc32fast::hash(&[])),
            Some((_, start, _)) => {
                let from = (*start).max(Position(durable.get().saturating_sub(CHECK_WINDOW)));
                if from >= durable {
                    (durable, crc32fast::hash(&[]))
                } else {
                    (from, crc32fast::hash(&self.data[from.get() as usize..durable.get() as usize]))
                }
            }
        };
        let applied_pos = if separate_apply { self.applied() } else { durable };
        MirrorResume { durable_pos: durable, segment, check_start, check_crc, applied_pos }
    }
}

//! The mirror's write path: binding, fencing epochs, segments, positional
//! writes, batched fdatasync and `.partial` → final renames.
//!
//! # Files
//!
//! A segment in progress is `NAME.partial`; the byte at position `p` of a
//! segment starting at `start` is at file offset `p - start`. A complete
//! segment is renamed to `NAME`. With a fixed segment size (PostgreSQL
//! format, `segment_size > 0`) the `.partial` is created at full size,
//! zero-filled past the received bytes, as pg_receivewal does; with the raw
//! format (`segment_size == 0`) it is exactly as long as what was written.
//!
//! # Positions
//!
//! * written: every byte below is in the segment file (page cache).
//! * durable: every byte below is fdatasync'ed *and* recorded in the control
//!   file. Only this one may be acknowledged as flushed.
//!
//! # Failures
//!
//! A failed write leaves the written position where it was (the torn bytes
//! past it are trimmed), so the write can be retried. A failed fdatasync
//! discards everything past the durable position (after a failed fsync the
//! page cache cannot be trusted), so the sender must resend from
//! [`Mirror::durable_pos`]. A failure after the directory changed in a way
//! memory cannot follow (a rename that was done but not recorded) poisons the
//! mirror: every call fails with [`StoreError::Poisoned`] until it is reopened,
//! and recovery sorts the directory out.
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use walship_core::{Position, SegmentName};

use crate::control::{self, ControlState, MAX_COMPLETE_RECORDS, SegmentRecord};
use crate::fsio::{
    crc_range, create, failpoint, pwrite_all, rename, set_len, sync_all, sync_data, sync_dir, zero_range,
};
use crate::{Identity, ResumePoint, ResumeSegment, StoreError};

/// A segment in memory: the control file's record, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seg {
    pub(crate) name: SegmentName,
    pub(crate) start: Position,
    pub(crate) end: Option<Position>,
    pub(crate) crc32: Option<u32>,
}

impl Seg {
    /// The position of the file's first byte (see [`file_base`]).
    pub(crate) fn base(&self, size: u64) -> Position {
        file_base(self.start, size)
    }

    /// Whether the segment is complete but shorter than its file: its
    /// timeline ended inside it. It keeps its `.partial` name.
    pub(crate) fn is_short(&self, size: u64) -> bool {
        size > 0 && self.end.is_some_and(|e| e.since(self.base(size)) < size)
    }

    /// The file holding the segment: `NAME` when complete, else `NAME.partial`.
    pub(crate) fn file_name(&self, size: u64) -> String {
        if self.end.is_some() && !self.is_short(size) { self.name.to_string() } else { self.name.partial_name() }
    }
}

/// The position of the first byte of the file of a segment starting at
/// `start`. Fixed-size segments (PostgreSQL) are aligned files: a segment
/// that starts mid-file (a new timeline that branched inside it) holds the
/// previous segment's bytes before its start. Raw segments start at their file's start.
/// Whether recovery can find how far the current (last) segment is valid
/// from its WAL records: a PostgreSQL segment whose file holds it from its
/// first byte (the long page header with the cluster's geometry included),
/// following a complete segment on the mirror (which holds the start of a
/// record continued across the boundary). Then `walship.pos` needs no
/// fdatasync of its own (see [`crate::posfile`]).
pub(crate) fn wal_checkable(id: &Identity, segments: &[Seg]) -> bool {
    let [.., prev, seg] = segments else { return false };
    id.format == POSTGRES_FORMAT
        && id.segment_size > 0
        && seg.end.is_none()
        && seg.start == seg.base(id.segment_size)
        && prev.end == Some(seg.start)
}

/// [`Identity::format`] of PostgreSQL WAL.
pub const POSTGRES_FORMAT: &str = "postgres";

pub(crate) fn file_base(start: Position, size: u64) -> Position {
    if size > 0 { Position(start.0 - start.0 % size) } else { start }
}

/// The open `.partial` of the current segment (the last in the table).
pub(crate) struct Current {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    /// CRC-32 of the segment's bytes below the written position.
    pub(crate) hasher: crc32fast::Hasher,
    /// CRC-32 of the segment's bytes below the durable position.
    pub(crate) durable_hasher: crc32fast::Hasher,
}

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Current").field("path", &self.path).finish_non_exhaustive()
    }
}

/// The receiver's mirror directory. Synchronous; owned by one thread.
#[derive(Debug)]
pub struct Mirror {
    pub(crate) dir: PathBuf,
    pub(crate) identity: Option<Identity>,
    pub(crate) epoch: u64,
    /// Oldest first; only the last may be incomplete, and then `current` is its open file.
    pub(crate) segments: Vec<Seg>,
    pub(crate) current: Option<Current>,
    pub(crate) written: Position,
    pub(crate) durable: Position,
    /// The segment table changed since the control file was last written.
    pub(crate) dirty: bool,
    pub(crate) poisoned: Option<String>,
    /// The durable position between control-file writes.
    pub(crate) pos: crate::posfile::PosFile,
    /// Held (flock) for as long as the mirror is open.
    pub(crate) _lock: File,
}

impl Mirror {
    /// The mirror directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The source the mirror is bound to, if any sender has bound it.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Binds the mirror to a source (durably, on the first bind). Later binds
    /// must name the same source id, format and segment size.
    pub fn bind(&mut self, id: &Identity) -> Result<(), StoreError> {
        self.check_poisoned()?;
        if let Some(m) = &self.identity {
            if m.source_id != id.source_id {
                return Err(StoreError::SourceMismatch { mirror: m.source_id.clone(), sender: id.source_id.clone() });
            }
            if m.format != id.format {
                return Err(StoreError::FormatMismatch { mirror: m.format.clone(), sender: id.format.clone() });
            }
            if m.segment_size != id.segment_size {
                return Err(StoreError::SegmentSizeMismatch { mirror: m.segment_size, sender: id.segment_size });
            }
            return Ok(());
        }
        let mut state = self.state();
        state.identity = Some(id.clone());
        control::store(&self.dir, &state)?;
        self.identity = Some(id.clone());
        self.dirty = false;
        Ok(())
    }

    /// The fencing epoch of the latest accepted session.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Increments the epoch and persists it durably before returning it, so
    /// that no two sessions, across crashes too, ever get the same epoch.
    pub fn next_epoch(&mut self) -> Result<u64, StoreError> {
        self.check_poisoned()?;
        let mut state = self.state();
        state.epoch = self.epoch.checked_add(1).ok_or_else(|| StoreError::Encode("epoch overflow".into()))?;
        control::store(&self.dir, &state)?;
        self.epoch = state.epoch;
        self.dirty = false;
        Ok(self.epoch)
    }

    /// Every byte below is written to its segment file (maybe only in the page cache).
    pub fn written_pos(&self) -> Position {
        self.written
    }

    /// Every byte below is fdatasync'ed and recorded in the control file.
    pub fn durable_pos(&self) -> Position {
        self.durable
    }

    /// Bytes written but not yet durable.
    pub fn unflushed_bytes(&self) -> u64 {
        self.written.since(self.durable)
    }

    /// Where a sender should resume: the durable position and its segment.
    pub fn resume_point(&self) -> ResumePoint {
        ResumePoint {
            durable_pos: self.durable,
            segment: self.segments.last().map(|s| ResumeSegment {
                name: s.name.clone(),
                start: s.start,
                complete: s.end.is_some(),
            }),
        }
    }

    /// CRC-32 of the mirror's bytes in `[max(start, durable - window), durable)`
    /// of the resume segment, and where that range starts. An empty range
    /// (no segment, or durable at the segment start) gives `(durable, 0)`.
    pub fn checksum_before(&self, window: u64) -> Result<(Position, u32), StoreError> {
        self.check_poisoned()?;
        let Some(seg) = self.segments.last() else {
            return Ok((self.durable, crc32fast::hash(&[])));
        };
        let from = seg.start.max(Position(self.durable.0.saturating_sub(window)));
        if from >= self.durable {
            return Ok((self.durable, crc32fast::hash(&[])));
        }
        let size = self.identity.as_ref().map_or(0, |i| i.segment_size);
        let (off, len) = (from.since(seg.base(size)), self.durable.since(from));
        let h = match &self.current {
            Some(cur) => crc_range(&cur.file, &cur.path, off, len)?,
            None => {
                let path = self.dir.join(seg.file_name(size));
                failpoint("open").map_err(StoreError::io("open", &path))?;
                let f = File::open(&path).map_err(StoreError::io("open", &path))?;
                crc_range(&f, &path, off, len)?
            }
        };
        Ok((from, h.finalize()))
    }

    /// Starts segment `name` at `start`: the previous segment must be complete,
    /// and `start` must be the written position, except for the first segment
    /// of an empty mirror, which may start anywhere. Creates `NAME.partial`
    /// (full size and zero-filled for fixed-size segments) and fsyncs the directory.
    ///
    /// A fixed-size segment may start mid-file only right after a segment
    /// that ended there in the same file range (a timeline switch inside a
    /// PostgreSQL segment): its file then begins with that segment's bytes,
    /// as PostgreSQL's own file for the new timeline does.
    pub fn start_segment(&mut self, name: &SegmentName, start: Position) -> Result<(), StoreError> {
        self.check_poisoned()?;
        let Some(id) = &self.identity else { return Err(StoreError::Unbound) };
        let size = id.segment_size;
        // The mirror keeps its own files under `walship.*`.
        if name.as_str().starts_with("walship.") {
            return Err(StoreError::ReservedName(name.to_string()));
        }
        if let Some(last) = self.segments.last() {
            if last.end.is_none() {
                return Err(StoreError::SegmentInProgress { current: last.name.to_string(), new: name.to_string() });
            }
            if start != self.written {
                return Err(StoreError::SegmentStart { name: name.to_string(), expected: self.written, got: start });
            }
        }
        let final_path = self.dir.join(name.as_str());
        if self.segments.iter().any(|s| s.name == *name) || final_path.exists() {
            return Err(StoreError::SegmentExists { name: name.to_string(), path: final_path });
        }
        let base = file_base(start, size);
        let inherit = match self.segments.last() {
            _ if base == start => None,
            Some(prev) if prev.end == Some(start) && prev.base(size) == base => {
                Some(self.dir.join(prev.file_name(size)))
            }
            _ => return Err(StoreError::MidFileStart { name: name.to_string(), start, base }),
        };
        let path = self.dir.join(name.partial_name());
        failpoint("create").map_err(StoreError::io("create", &path))?;
        let file = create(&path, true, true)?;
        if size > 0 {
            set_len(&file, &path, size)?;
        }
        if let Some(prev) = &inherit {
            let n = start.since(base);
            let mut head = vec![0u8; usize::try_from(n).unwrap_or(usize::MAX)];
            let f = File::open(prev).map_err(StoreError::io("open", prev))?;
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0).map_err(StoreError::io("read", prev))?;
            pwrite_all(&file, &path, &head, 0)?;
        }
        sync_all(&file, &path)?;
        sync_dir(&self.dir)?;
        let first = self.segments.is_empty();
        self.segments.push(Seg { name: name.clone(), start, end: None, crc32: None });
        if first {
            // The durable position jumps to `start`; record that before anyone can read it.
            let mut state = self.state();
            state.durable_pos = start.0;
            if let Err(e) = control::store(&self.dir, &state) {
                self.segments.pop();
                return Err(e);
            }
            self.written = start;
            self.durable = start;
        } else {
            self.dirty = true;
        }
        let hasher = crc32fast::Hasher::new();
        self.current = Some(Current { path, file, durable_hasher: hasher.clone(), hasher });
        Ok(())
    }

    /// Writes `data` at `pos`, which must be the written position, into the
    /// current segment (it must fit, for fixed-size segments).
    pub fn write(&mut self, pos: Position, data: &[u8]) -> Result<(), StoreError> {
        self.write_chunks(pos, &[data])
    }

    /// Writes `chunks`, one after the other, at `pos` as [`write`](Self::write)
    /// writes one buffer: checked once for the whole, and all or nothing (a
    /// failure leaves the written position where it was). A receiver hands
    /// over a frame's payload in the chunks it arrived in.
    pub fn write_chunks<B: AsRef<[u8]>>(&mut self, pos: Position, chunks: &[B]) -> Result<(), StoreError> {
        self.check_poisoned()?;
        let (Some(cur), Some(seg)) = (self.current.as_mut(), self.segments.last()) else {
            return Err(StoreError::NoOpenSegment { pos });
        };
        if pos != self.written {
            return Err(StoreError::OutOfOrder { expected: self.written, got: pos });
        }
        let len: u64 = chunks.iter().map(|c| c.as_ref().len() as u64).sum();
        if pos.get().checked_add(len).is_none() {
            return Err(StoreError::PastEnd { pos, len });
        }
        let size = self.identity.as_ref().map_or(0, |i| i.segment_size);
        let base = seg.base(size);
        if size > 0 && pos.since(base).saturating_add(len) > size {
            let end = base.add(size);
            return Err(StoreError::DoesNotFit { name: seg.name.to_string(), pos, len, end });
        }
        if len == 0 {
            return Ok(());
        }
        let start = pos.since(base);
        let mut off = start;
        for chunk in chunks.iter().map(AsRef::as_ref) {
            if let Err(e) = pwrite_all(&cur.file, &cur.path, chunk, off) {
                // Bytes may have landed past the written position: put the tail back.
                let tail = if size > 0 {
                    zero_range(&cur.file, &cur.path, start, off + chunk.len() as u64)
                } else {
                    set_len(&cur.file, &cur.path, start)
                };
                if let Err(t) = tail {
                    self.poisoned = Some(format!("after a failed write, restoring the tail failed: {t}"));
                }
                return Err(e);
            }
            off += chunk.len() as u64;
        }
        for chunk in chunks {
            cur.hasher.update(chunk.as_ref());
        }
        self.written = pos.add(len);
        Ok(())
    }

    /// Makes everything written durable: fdatasync the `.partial`, then record
    /// the new durable position (in `walship.pos` when nothing but the position
    /// changed, otherwise in the control file). For a PostgreSQL segment
    /// received from its first byte that record is not synced: recovery can
    /// read the durable end off the WAL itself (see [`crate::posfile`]). Returns the durable
    /// position; a no-op when nothing is unflushed. On a failed fdatasync the
    /// unflushed bytes are discarded (see the module docs).
    pub fn flush(&mut self) -> Result<Position, StoreError> {
        self.check_poisoned()?;
        if self.written == self.durable && !self.dirty {
            return Ok(self.durable);
        }
        let synced = match &self.current {
            Some(cur) if self.written > self.durable => sync_data(&cur.file, &cur.path),
            _ => Ok(()),
        };
        if let Err(e) = synced {
            self.discard_after_sync_failure();
            return Err(e);
        }
        match self.segments.last() {
            // Only the position moved inside the current segment: the cheap record.
            Some(seg) if !self.dirty && seg.end.is_none() => {
                let sync = !self.identity.as_ref().is_some_and(|id| wal_checkable(id, &self.segments));
                self.pos.write(seg.start.0, self.written.0, sync)?
            }
            _ => {
                let mut state = self.state();
                state.durable_pos = self.written.0;
                control::store(&self.dir, &state)?;
            }
        }
        self.durable = self.written;
        self.dirty = false;
        if let Some(cur) = &mut self.current {
            cur.durable_hasher = cur.hasher.clone();
        }
        Ok(self.durable)
    }

    /// Forgets the bytes past the durable position (trimming or zeroing them
    /// in the `.partial`), so that a sender can resend from the durable
    /// position. Returns how many bytes were discarded.
    pub fn discard_unflushed(&mut self) -> Result<u64, StoreError> {
        self.check_poisoned()?;
        let size = self.identity.as_ref().map_or(0, |i| i.segment_size);
        let discarded = self.unflushed_bytes();
        let (Some(cur), Some(seg)) = (self.current.as_mut(), self.segments.last()) else {
            return Ok(0);
        };
        let base = seg.base(size);
        let (keep, upto) = (self.durable.since(base), self.written.since(base));
        if size > 0 {
            zero_range(&cur.file, &cur.path, keep, upto)?;
        } else {
            set_len(&cur.file, &cur.path, keep)?;
        }
        cur.hasher = cur.durable_hasher.clone();
        self.written = self.durable;
        Ok(discarded)
    }

    /// Writes side file `name` (e.g. a PostgreSQL timeline history file)
    /// durably and atomically: `.NAME.tmp`, fdatasync, rename, directory
    /// fsync. A file already there with the same contents is left alone; with
    /// other contents, or under a segment's name, it is refused: the mirror
    /// never replaces what it holds.
    pub fn write_file(&mut self, name: &SegmentName, contents: &[u8]) -> Result<(), StoreError> {
        self.check_poisoned()?;
        if name.as_str().starts_with("walship.") {
            return Err(StoreError::ReservedName(name.to_string()));
        }
        let path = self.dir.join(name.as_str());
        if self.segments.iter().any(|s| s.name == *name) {
            return Err(StoreError::SegmentExists { name: name.to_string(), path });
        }
        match std::fs::read(&path) {
            Ok(old) if old == contents => return Ok(()),
            Ok(_) => return Err(StoreError::FileConflict { path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("read", &path)(e)),
        }
        let tmp = self.dir.join(format!(".{}.tmp", name.as_str()));
        let file = create(&tmp, false, true)?;
        pwrite_all(&file, &tmp, contents, 0)?;
        sync_data(&file, &tmp)?;
        rename(&tmp, &path)?;
        sync_dir(&self.dir)
    }

    /// Completes the current segment at `end` (the written position; the
    /// segment size for fixed-size segments): fdatasync, rename `NAME.partial`
    /// to `NAME`, fsync the directory, record end and CRC, durable = `end`.
    /// A fixed-size segment may end short of its file's end (its timeline
    /// ended inside it): it is complete but keeps its `.partial` name, as
    /// pg_receivewal and PostgreSQL leave such a segment.
    pub fn complete_segment(&mut self, end: Position) -> Result<(), StoreError> {
        self.check_poisoned()?;
        let (Some(cur), Some(seg)) = (self.current.as_ref(), self.segments.last()) else {
            return Err(StoreError::NothingToComplete { end });
        };
        if end != self.written {
            return Err(StoreError::SegmentEnd { name: seg.name.to_string(), expected: self.written, got: end });
        }
        let size = self.identity.as_ref().map_or(0, |i| i.segment_size);
        let len = end.since(seg.base(size));
        if size > 0 && len > size {
            return Err(StoreError::WrongSegmentLength { name: seg.name.to_string(), len, size });
        }
        if let Err(e) = sync_data(&cur.file, &cur.path) {
            self.discard_after_sync_failure();
            return Err(e);
        }
        if size == 0 || len == size {
            let final_path = self.dir.join(seg.name.as_str());
            rename(&cur.path, &final_path)?;
        }
        let crc = cur.hasher.clone().finalize();
        let mut segments = self.segments.clone();
        if let Some(last) = segments.last_mut() {
            last.end = Some(end);
            last.crc32 = Some(crc);
        }
        bound_table(&mut segments);
        let mut state = self.state();
        state.durable_pos = end.0;
        state.segments = records(&segments);
        if let Err(e) = sync_dir(&self.dir).and_then(|()| control::store(&self.dir, &state)) {
            self.poisoned = Some(format!("segment {} was renamed but not recorded: {e}", seg.name));
            return Err(e);
        }
        self.segments = segments;
        self.current = None;
        self.durable = end;
        self.dirty = false;
        Ok(())
    }

    /// The control state that memory describes (durable position included).
    pub(crate) fn state(&self) -> ControlState {
        ControlState {
            identity: self.identity.clone(),
            epoch: self.epoch,
            durable_pos: self.durable.0,
            segments: records(&self.segments),
            ..ControlState::empty()
        }
    }

    fn check_poisoned(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(why) => Err(StoreError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn discard_after_sync_failure(&mut self) {
        if let Err(e) = self.discard_unflushed() {
            self.poisoned = Some(format!("after a failed fdatasync, discarding unflushed bytes failed: {e}"));
        }
    }
}

/// Drops the oldest complete records beyond [`MAX_COMPLETE_RECORDS`].
pub(crate) fn bound_table(segments: &mut Vec<Seg>) {
    let complete = segments.iter().filter(|s| s.end.is_some()).count();
    let excess = complete.saturating_sub(MAX_COMPLETE_RECORDS);
    segments.drain(..excess);
}

fn records(segments: &[Seg]) -> Vec<SegmentRecord> {
    segments
        .iter()
        .map(|s| SegmentRecord { name: s.name.to_string(), start: s.start.0, end: s.end.map(|e| e.0), crc32: s.crc32 })
        .collect()
}

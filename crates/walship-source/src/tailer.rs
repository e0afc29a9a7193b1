//! Tailing a directory of raw WAL segments.
//!
//! # The raw format
//!
//! The segments are the regular files of the WAL directory whose name does
//! not start with `.`, matches [`TailerConfig::pattern`] when one is set, and
//! is a valid [`SegmentName`] (others are skipped with one warning), in name
//! order. The stream is their concatenation: the position of a byte is
//! its offset in that concatenation, counted from an *anchor* — the first
//! segment, at position 0, unless [`Tailer::rebase`] moved it.
//!
//! * Only the last segment grows. A segment is *sealed* once a later one
//!   exists; its length is stat'ed after the later one was seen, so it is
//!   final. Bytes below the observed end never change.
//! * A new segment must sort after every known one: one that sorts before the
//!   last known segment has no place in the stream ([`SourceError::OutOfOrder`]).
//! * A segment that shrinks is an error ([`SourceError::Truncated`]), and so is
//!   one that disappears while some of its bytes have not been released
//!   ([`SourceError::SegmentRemoved`]). Segments wholly below the release
//!   position ([`Tailer::release_before`]) may be removed at will; they then
//!   leave [`Tailer::segments`], whose first entry may thus start after the anchor.
//!
//! The PostgreSQL format ([`SourceFormat::Postgres`]) reuses the mapping,
//! reading and release rules with its own listing, positions and end; see
//! [`crate::pgtail`].
use std::path::{Path, PathBuf};

use bytes::Bytes;
use walship_core::{Position, SegmentName};

use crate::error::SourceError;
use crate::list::Lister;
use crate::map::{MapError, SegmentMap};
use crate::pgtail::{PgSource, PgState};

/// One segment of the stream as last observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The file name.
    pub name: SegmentName,
    /// Position of its first byte.
    pub start: Position,
    /// Observed length in bytes.
    pub len: u64,
    /// Whether a later segment exists, which makes `len` final.
    pub sealed: bool,
}

impl SegmentInfo {
    /// Position just past its last observed byte.
    pub fn end(&self) -> Position {
        self.start.add(self.len)
    }
}

/// How the WAL directory is laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SourceFormat {
    /// Any files, concatenated in name order (see the module docs).
    #[default]
    Raw,
    /// A PostgreSQL `pg_wal` directory: LSN positions, the stream ends at the
    /// valid end (see [`crate::pgtail`]).
    Postgres,
}

/// How to find segments.
#[derive(Debug, Clone, Default)]
pub struct TailerConfig {
    /// Only names matching this glob are segments (hidden files never are). Raw format only.
    pub pattern: Option<glob::Pattern>,
    /// The format.
    pub format: SourceFormat,
}

/// Follows the segments of a WAL directory and hands out their bytes by position.
#[derive(Debug)]
pub struct Tailer {
    pub(crate) dir: PathBuf,
    lister: Lister,
    /// Names below this are not part of the stream (set by a rebase).
    floor: Option<SegmentName>,
    /// Where the first segment starts when none is known yet.
    pub(crate) anchor: Position,
    /// Every byte below this is held by every receiver.
    pub(crate) released: Position,
    pub(crate) segs: Vec<SegmentInfo>,
    /// Open file and mapping per entry of `segs` (same indices); `None` until read.
    pub(crate) maps: Vec<Option<SegmentMap>>,
    /// The walk's state, for the PostgreSQL format.
    pub(crate) pg: Option<PgState>,
    /// The last listing of the directory, reused by [`Tailer::refresh_hinted`]
    /// while no entry of the directory changed.
    pub(crate) listing: Option<Listing>,
}

/// What one read of the directory found.
#[derive(Debug, Clone)]
pub(crate) enum Listing {
    /// Raw format: the segments at or above the floor, sorted.
    Raw(Vec<SegmentName>),
    /// PostgreSQL format: segment names and history files, each sorted.
    Postgres(Vec<String>, Vec<String>),
}

impl Tailer {
    /// Lists `dir` and stats its segments; the first one starts at position 0.
    pub fn open(dir: &Path, cfg: TailerConfig) -> Result<Tailer, SourceError> {
        if cfg.format == SourceFormat::Postgres {
            let mut t = Tailer {
                dir: dir.to_path_buf(),
                lister: Lister::new(None),
                floor: None,
                anchor: Position::ZERO,
                released: Position::ZERO,
                segs: Vec::new(),
                maps: Vec::new(),
                pg: Some(PgState::default()),
                listing: None,
            };
            t.refresh_pg()?;
            return Ok(t);
        }
        let mut t = Tailer {
            dir: dir.to_path_buf(),
            lister: Lister::new(cfg.pattern),
            floor: None,
            anchor: Position::ZERO,
            released: Position::ZERO,
            segs: Vec::new(),
            maps: Vec::new(),
            pg: None,
            listing: None,
        };
        let names = t.lister.list(&t.dir, None)?;
        let segs = t.scan(&names, Position::ZERO, false)?;
        t.maps = segs.iter().map(|_| None).collect();
        t.segs = segs;
        Ok(t)
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-lists the directory and re-stats the open (last) segment. Returns whether the
    /// observed stream changed: growth, a new segment, a segment sealed. On error the
    /// observed state is left as it was.
    pub fn refresh(&mut self) -> Result<bool, SourceError> {
        self.refresh_hinted(true)
    }

    /// [`Tailer::refresh`], reading the directory again only when `entries_changed`
    /// (a file was created, removed or renamed since the last call, or the caller
    /// cannot tell) and otherwise reusing the last listing: appends to the open
    /// segment, the common case, then cost a stat and no directory read.
    pub fn refresh_hinted(&mut self, entries_changed: bool) -> Result<bool, SourceError> {
        if entries_changed {
            self.listing = None;
        }
        if self.pg.is_some() {
            return self.refresh_pg();
        }
        let listed = match self.listing.take() {
            Some(Listing::Raw(names)) => names,
            _ => self.lister.list(&self.dir, self.floor.as_ref())?,
        };
        let r = self.refresh_raw(&listed);
        // A failed refresh lists again next time: what failed may have been the listing's fault.
        if r.is_ok() {
            self.listing = Some(Listing::Raw(listed));
        }
        r
    }

    fn refresh_raw(&mut self, listed: &[SegmentName]) -> Result<bool, SourceError> {
        let present = |name: &SegmentName| listed.binary_search(name).is_ok();

        // Known segments that are gone: fine when released, an error otherwise.
        let mut gone_prefix = 0;
        for (i, seg) in self.segs.iter().enumerate() {
            if present(&seg.name) {
                continue;
            }
            if !(seg.sealed && seg.end() <= self.released) {
                return Err(self.removed(seg, seg.start.max(self.released)));
            }
            if i == gone_prefix {
                gone_prefix += 1;
            }
        }

        // Newcomers must sort after the last known segment.
        let new_from = match self.segs.last() {
            None => 0,
            Some(last) => {
                let new_from = listed.partition_point(|n| n <= &last.name);
                for name in &listed[..new_from] {
                    if self.segs.binary_search_by(|s| s.name.cmp(name)).is_err() {
                        return Err(SourceError::OutOfOrder {
                            dir: self.dir.clone(),
                            segment: name.clone(),
                            last: last.name.clone(),
                        });
                    }
                }
                new_from
            }
        };
        let newcomers = &listed[new_from..];

        // Stat after listing: a segment seen followed by a later one has its final length.
        let mut changed = false;
        let mut last_len = None;
        if let Some(last) = self.segs.last() {
            let len = self.stat(last, last.start.max(self.released))?;
            if len < last.len {
                return Err(self.truncated(last, len));
            }
            changed |= len > last.len || !newcomers.is_empty();
            last_len = Some(len);
        }
        let base = match (self.segs.last(), last_len) {
            (Some(last), Some(len)) => last.start.add(len),
            _ => self.anchor,
        };
        // With nothing known yet, a newcomer that vanished at once is skipped as when opening.
        let new_segs = self.scan(newcomers, base, !self.segs.is_empty())?;
        changed |= !new_segs.is_empty();

        // Everything checked: apply.
        if let (Some(last), Some(len)) = (self.segs.last_mut(), last_len) {
            last.len = len;
            last.sealed = !new_segs.is_empty();
        }
        self.maps.extend(new_segs.iter().map(|_| None));
        self.segs.extend(new_segs);
        self.segs.drain(..gone_prefix);
        self.maps.drain(..gone_prefix);
        Ok(changed)
    }

    /// The known segments, contiguous and in order: from the anchor on, minus released
    /// segments that have been removed from the directory.
    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segs
    }

    /// The position just past the last observed byte.
    pub fn end(&self) -> Position {
        self.segs.last().map_or(self.anchor, SegmentInfo::end)
    }

    /// The first position still available.
    pub fn first(&self) -> Position {
        self.segs.first().map_or(self.anchor, |s| s.start)
    }

    /// The segment containing `pos`, or starting at `pos` (the open segment when `pos` is
    /// the end of the stream and the open segment is empty).
    pub fn segment_at(&self, pos: Position) -> Option<&SegmentInfo> {
        self.index_at(pos).map(|i| &self.segs[i])
    }

    /// The known segment called `name`.
    pub fn segment(&self, name: &SegmentName) -> Option<&SegmentInfo> {
        self.segs.binary_search_by(|s| s.name.cmp(name)).ok().map(|i| &self.segs[i])
    }

    /// The first known segment whose name sorts after `after` (the first one of all when
    /// `after` is `None`).
    pub fn segment_after(&self, after: Option<&SegmentName>) -> Option<&SegmentInfo> {
        let i = after.map_or(0, |a| self.segs.partition_point(|s| s.name <= *a));
        self.segs.get(i)
    }

    fn index_at(&self, pos: Position) -> Option<usize> {
        // The last segment starting at or before `pos`: with empty segments sharing a start,
        // that is the one holding the bytes.
        let i = self.segs.partition_point(|s| s.start <= pos).checked_sub(1)?;
        let s = &self.segs[i];
        (pos < s.end() || pos == s.start).then_some(i)
    }

    /// Up to `max_len` bytes from `pos`, zero-copy: a slice of a read-only map of the segment
    /// holding `pos`. Never crosses the segment's end nor its observed length, so a short
    /// result does not mean the end of the stream; an empty one at [`Tailer::end`] does.
    /// Checks (fstat) that the segment was not truncated before handing out a slice.
    pub fn read(&mut self, pos: Position, max_len: usize) -> Result<Bytes, SourceError> {
        let end = self.end();
        if pos > end {
            return Err(SourceError::BeyondEnd { dir: self.dir.clone(), pos, end });
        }
        let first = self.first();
        if pos < first {
            return Err(SourceError::BeforeStart { dir: self.dir.clone(), pos, first });
        }
        if pos == end || max_len == 0 {
            return Ok(Bytes::new());
        }
        // pos < end and the segments are contiguous, so the lookup finds one.
        let Some(i) = self.index_at(pos) else {
            return Err(SourceError::BeyondEnd { dir: self.dir.clone(), pos, end });
        };
        let seg = &self.segs[i];
        // Where the segment's file begins: PostgreSQL files are aligned, and a
        // segment that starts mid-file (a new timeline) skips the bytes before it.
        let skip = match self.pg.as_ref().and_then(PgState::source) {
            Some(pg) => pg.geometry.segment_offset(seg.start.0),
            None => 0,
        };
        let map = match &mut self.maps[i] {
            Some(map) => map,
            slot @ None => {
                let path = self.dir.join(seg.name.as_str());
                match SegmentMap::open(&path) {
                    Ok(map) => slot.insert(map),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(SourceError::SegmentRemoved {
                            dir: self.dir.clone(),
                            segment: seg.name.clone(),
                            needed: pos,
                        });
                    }
                    Err(source) => {
                        return Err(SourceError::Io {
                            dir: self.dir.clone(),
                            segment: seg.name.clone(),
                            op: "open",
                            source,
                        });
                    }
                }
            }
        };
        let bytes = map.slice(skip + seg.len, skip + pos.since(seg.start), max_len).map_err(|e| match e {
            MapError::Shorter { now } => {
                SourceError::Truncated { dir: self.dir.clone(), segment: seg.name.clone(), observed: seg.len, now }
            }
            MapError::Io { op, source } => {
                SourceError::Io { dir: self.dir.clone(), segment: seg.name.clone(), op, source }
            }
        })?;
        if let Some(pg) = self.pg.as_ref().and_then(PgState::source)
            && let Some(at) = crate::pgtail::foreign_page(&bytes, pos, pg.geometry)
        {
            // A page that is not WAL for its own position: the file was recycled under us.
            return Err(SourceError::Recycled { dir: self.dir.clone(), segment: seg.name.clone(), pos: at });
        }
        Ok(bytes)
    }

    /// CRC-32 (IEEE, as `crc32fast`) of the bytes `[start, end)`, which may span segments.
    pub fn checksum(&mut self, start: Position, end: Position) -> Result<u32, SourceError> {
        if end < start {
            return Err(SourceError::InvalidRange { dir: self.dir.clone(), start, end });
        }
        if end > self.end() {
            return Err(SourceError::BeyondEnd { dir: self.dir.clone(), pos: end, end: self.end() });
        }
        let mut hasher = crc32fast::Hasher::new();
        let mut pos = start;
        while pos < end {
            let want = usize::try_from(end.since(pos)).unwrap_or(usize::MAX).min(1 << 30);
            let chunk = self.read(pos, want)?;
            if chunk.is_empty() {
                return Err(SourceError::BeyondEnd { dir: self.dir.clone(), pos, end: self.end() });
            }
            hasher.update(&chunk);
            pos = pos.add(chunk.len() as u64);
        }
        Ok(hasher.finalize())
    }

    /// Re-anchors the stream: segment `name` starts at `start`, and only segments whose name
    /// sorts at or after it are part of the stream. Forgets every release.
    pub fn rebase(&mut self, name: &SegmentName, start: Position) -> Result<(), SourceError> {
        if self.pg.is_some() {
            return self.check_fixed(self.segment(name).map(|s| s.start), name, start);
        }
        let listed = self.lister.list(&self.dir, Some(name))?;
        if listed.first() != Some(name) {
            return Err(SourceError::SegmentNotFound { dir: self.dir.clone(), segment: name.clone() });
        }
        self.reanchor(&listed, start)
    }

    /// Re-anchors the stream for a receiver whose last segment `after` is complete (and may
    /// be gone from the directory): the first segment sorting after `after` starts at `start`.
    pub fn rebase_after(&mut self, after: &SegmentName, start: Position) -> Result<(), SourceError> {
        if self.pg.is_some() {
            let next = self.segment_after(Some(after)).map(|s| (s.name.clone(), s.start));
            let Some((name, at)) = next else {
                return Err(SourceError::NoSegmentAfter { dir: self.dir.clone(), after: after.clone() });
            };
            return self.check_fixed(Some(at), &name, start);
        }
        let mut listed = self.lister.list(&self.dir, Some(after))?;
        if listed.first() == Some(after) {
            listed.remove(0);
        }
        if listed.is_empty() {
            return Err(SourceError::NoSegmentAfter { dir: self.dir.clone(), after: after.clone() });
        }
        self.reanchor(&listed, start)
    }

    /// Whether positions are fixed by the format (PostgreSQL LSNs), so that
    /// [`Tailer::rebase`] can only confirm them.
    pub fn fixed_positions(&self) -> bool {
        self.pg.is_some()
    }

    /// The PostgreSQL cluster, once a segment has been read (PostgreSQL format only).
    pub fn postgres(&self) -> Option<PgSource> {
        self.pg.as_ref().and_then(PgState::source)
    }

    /// The timeline history files (`TTTTTTTT.history`) in the directory, sorted
    /// (PostgreSQL format only; they travel beside the stream).
    pub fn history_files(&self) -> &[String] {
        self.pg.as_ref().map_or(&[], PgState::histories)
    }

    /// Where and why the last walk to the valid end stopped (PostgreSQL format only).
    pub fn last_stop(&self) -> Option<&crate::postgres::Stop> {
        self.pg.as_ref().and_then(PgState::last_stop)
    }

    fn check_fixed(&self, ours: Option<Position>, name: &SegmentName, asked: Position) -> Result<(), SourceError> {
        match ours {
            Some(ours) if ours == asked => Ok(()),
            Some(ours) => {
                Err(SourceError::FixedPositions { dir: self.dir.clone(), segment: name.clone(), ours, asked })
            }
            None => Err(SourceError::SegmentNotFound { dir: self.dir.clone(), segment: name.clone() }),
        }
    }

    fn reanchor(&mut self, listed: &[SegmentName], start: Position) -> Result<(), SourceError> {
        let segs = self.scan(listed, start, true)?;
        self.listing = None;
        self.floor = listed.first().cloned();
        self.anchor = start;
        self.released = start;
        self.maps = segs.iter().map(|_| None).collect();
        self.segs = segs;
        Ok(())
    }

    /// Every receiver holds every byte below `pos`: closes the files and drops the mappings
    /// of sealed segments ending at or before it, and lets them be removed from the directory
    /// without error. Mappings handed out as `Bytes` stay valid until those are dropped.
    pub fn release_before(&mut self, pos: Position) {
        self.released = self.released.max(pos);
        for (seg, map) in self.segs.iter().zip(self.maps.iter_mut()) {
            if !(seg.sealed && seg.end() <= self.released) {
                break;
            }
            *map = None;
        }
    }

    /// The release position: bytes below it may be removed from the directory.
    pub fn released(&self) -> Position {
        self.released
    }

    /// Stats `names` (in order, just listed) into contiguous segments from `start`; all but
    /// the last are sealed. A file that vanished since the listing is an error if `strict`,
    /// or when it is not at the front (at the front, when opening, it was removed before the
    /// stream was anchored on it, so it is skipped).
    fn scan(&self, names: &[SegmentName], start: Position, strict: bool) -> Result<Vec<SegmentInfo>, SourceError> {
        let mut segs: Vec<SegmentInfo> = Vec::with_capacity(names.len());
        let mut pos = start;
        for (i, name) in names.iter().enumerate() {
            let seg = SegmentInfo { name: name.clone(), start: pos, len: 0, sealed: i + 1 < names.len() };
            match std::fs::metadata(self.dir.join(name.as_str())) {
                Ok(m) => {
                    let seg = SegmentInfo { len: m.len(), ..seg };
                    pos = seg.end();
                    segs.push(seg);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !strict && segs.is_empty() => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(self.removed(&seg, seg.start)),
                Err(source) => {
                    return Err(SourceError::Io { dir: self.dir.clone(), segment: name.clone(), op: "stat", source });
                }
            }
        }
        Ok(segs)
    }

    fn stat(&self, seg: &SegmentInfo, needed: Position) -> Result<u64, SourceError> {
        match std::fs::metadata(self.dir.join(seg.name.as_str())) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self.removed(seg, needed)),
            Err(source) => {
                Err(SourceError::Io { dir: self.dir.clone(), segment: seg.name.clone(), op: "stat", source })
            }
        }
    }

    pub(crate) fn removed(&self, seg: &SegmentInfo, needed: Position) -> SourceError {
        SourceError::SegmentRemoved { dir: self.dir.clone(), segment: seg.name.clone(), needed }
    }

    fn truncated(&self, seg: &SegmentInfo, now: u64) -> SourceError {
        SourceError::Truncated { dir: self.dir.clone(), segment: seg.name.clone(), observed: seg.len, now }
    }
}

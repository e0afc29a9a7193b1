//! The PostgreSQL flavour of the [`Tailer`] ([`SourceFormat::Postgres`]).
//!
//! Positions are LSNs: segment `segno` starts at `segno × segment size`, so
//! positions are fixed by the files' names and never re-anchored. The
//! segment and page size come from the first long page header found.
//!
//! * **Which files.** `pg_wal` holds the segments in use, but also
//!   preallocated and *recycled* segments under future names (zeros, or stale
//!   WAL of an older position), `.partial`, `.backup` and `.history` files.
//!   A segment enters the stream only when its first page header is valid
//!   for its own LSN (PostgreSQL has started writing it), and only in LSN
//!   order, each after the previous one is complete. `TTTTTTTT.history` files
//!   are listed for shipping beside the stream ([`Tailer::history_files`]).
//! * **Where the stream ends.** At the *valid end*: the end of the last
//!   complete record whose CRC-32C checks, found by walking the records
//!   ([`crate::postgres::valid_end`]), incrementally from where the previous
//!   refresh stopped. Bytes past it (the rest of the tail page) may still
//!   change and are not part of the stream until records complete there.
//! * **After an `XLOG_SWITCH`** the rest of the segment is padding, which
//!   PostgreSQL writes right after the switch record: zero pages (14+; 13
//!   keeps a page header on each). A recycled file still holds stale bytes
//!   there until then, so the padding joins the stream page by page, once
//!   each page is seen in its final form; the segment is complete when all
//!   of it has.
use std::path::Path;

use walship_core::{Position, SegmentName};

use crate::error::SourceError;
use crate::map::{MapError, SegmentMap};
use crate::postgres::page::{LONG_HEADER_LEN, PageExpect, PageHeader, validate_page};
use crate::postgres::{PgSegmentName, Stop, WalGeometry, WalInput, WalkOptions, Walker, find_first_record, valid_end};
use crate::tailer::{Listing, SegmentInfo, Tailer};

/// What is known about the PostgreSQL cluster whose WAL is tailed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgSource {
    /// The system identifier (`xlp_sysid`).
    pub system_identifier: u64,
    /// Segment and page size.
    pub geometry: WalGeometry,
    /// The timeline of the newest segment in the stream.
    pub timeline: u32,
}

/// The walk's state between refreshes.
#[derive(Debug, Default)]
pub(crate) struct PgState {
    geometry: Option<WalGeometry>,
    sysid: Option<u64>,
    magic: Option<u16>,
    /// Where the next record begins (after a switch: the next segment's start).
    next: u64,
    /// The LSN of the last valid record.
    prev: Option<u64>,
    /// Whether a record has been validated (before that, nothing is final).
    verified: bool,
    /// The end of the stream: `next`, or less while a switch's padding is pending.
    end: u64,
    timeline: u32,
    /// Why the last walk stopped.
    stop: Option<Stop>,
    /// `TTTTTTTT.history` files present, sorted.
    histories: Vec<String>,
    /// Segments whose timeline ended inside them (a promotion), kept readable
    /// through their open file while PostgreSQL renames or removes them.
    retired: Vec<SegmentName>,
    /// Complete segments PostgreSQL removed or recycled before every receiver had them.
    lost: Vec<SegmentName>,
}

impl PgState {
    pub(crate) fn source(&self) -> Option<PgSource> {
        Some(PgSource { system_identifier: self.sysid?, geometry: self.geometry?, timeline: self.timeline })
    }

    pub(crate) fn histories(&self) -> &[String] {
        &self.histories
    }

    pub(crate) fn last_stop(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }
}

/// A segment file of the directory.
#[derive(Clone, Debug)]
struct PgFile {
    pg: PgSegmentName,
    name: SegmentName,
}

fn is_hex_upper(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Segment names (24 upper-case hex digits) and history files, each sorted.
fn list(dir: &Path) -> Result<(Vec<String>, Vec<String>), SourceError> {
    let list_err = |source| SourceError::ListDir { dir: dir.to_path_buf(), source };
    let (mut segs, mut hist) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir).map_err(list_err)? {
        let entry = entry.map_err(list_err)?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        let Ok(ft) = entry.file_type() else { continue };
        if !(ft.is_file() || ft.is_symlink()) {
            continue;
        }
        if name.len() == 24 && is_hex_upper(&name) {
            segs.push(name);
        } else if let Some(tli) = name.strip_suffix(".history")
            && tli.len() == 8
            && is_hex_upper(tli)
        {
            hist.push(name);
        }
    }
    segs.sort_unstable();
    hist.sort_unstable();
    Ok((segs, hist))
}

/// The first bytes of a file: its long page header, when it has one.
fn read_first_header(path: &Path) -> Option<[u8; LONG_HEADER_LEN]> {
    use std::io::Read;
    let mut buf = [0u8; LONG_HEADER_LEN];
    std::fs::File::open(path).ok()?.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// Reads the first page header of a file: the long header with the cluster's sizes.
fn read_long_header(path: &Path) -> Option<(PageHeader, WalGeometry)> {
    let buf = read_first_header(path)?;
    let h = PageHeader::parse(&buf).ok()?;
    h.version()?;
    let long = h.long?;
    let g = WalGeometry::new(u64::from(long.seg_size), u64::from(long.block_size)).ok()?;
    Some((h, g))
}

/// What the pages of the stream must agree on.
#[derive(Clone, Copy)]
struct Cluster {
    sysid: Option<u64>,
    magic: Option<u16>,
}

impl Tailer {
    fn pg(&mut self) -> &mut PgState {
        self.pg.as_mut().expect("postgres state in postgres mode")
    }

    /// [`Tailer::refresh`] for the PostgreSQL format.
    pub(crate) fn refresh_pg(&mut self) -> Result<bool, SourceError> {
        let (names, histories) = match self.listing.take() {
            Some(Listing::Postgres(names, histories)) => (names, histories),
            _ => list(&self.dir)?,
        };
        let r = self.refresh_pg_listed(&names, &histories);
        // A failed refresh lists again next time: what failed may have been the listing's fault.
        if r.is_ok() {
            self.listing = Some(Listing::Postgres(names, histories));
        }
        r
    }

    fn refresh_pg_listed(&mut self, names: &[String], histories: &[String]) -> Result<bool, SourceError> {
        let mut changed = false;
        if self.pg().histories != histories {
            self.pg().histories = histories.to_vec();
            changed = true;
        }
        let g = match self.pg().geometry {
            Some(g) => g,
            None => {
                // Any segment's long header tells the sizes (a zero-filled preallocated one does not).
                let Some((h, g)) = names.iter().find_map(|n| read_long_header(&self.dir.join(n))) else {
                    return Ok(changed);
                };
                let pg = self.pg();
                pg.geometry = Some(g);
                pg.magic = Some(h.magic);
                g
            }
        };
        let mut files: Vec<PgFile> = names
            .iter()
            .filter_map(|n| Some(PgFile { pg: PgSegmentName::parse(n, g)?, name: SegmentName::new(n).ok()? }))
            .collect();
        files.sort_unstable_by_key(|f| (f.pg.segno, f.pg.timeline));

        // A promotion ended the current segment's timeline inside it: go on in the new timeline's file.
        changed |= self.follow_switch(g, &files)?;
        // Known segments that are gone: fine when released, an error otherwise.
        let mut gone_prefix = 0;
        let mut lost = Vec::new();
        for (i, seg) in self.segs.iter().enumerate() {
            let present = names.binary_search_by(|n| n.as_str().cmp(seg.name.as_str())).is_ok();
            let released = seg.sealed && seg.end() <= self.released;
            if !present && released && i == gone_prefix {
                gone_prefix += 1;
            }
            if present || released {
                continue;
            }
            // The old timeline's last segment, renamed or removed by PostgreSQL after a
            // promotion: still read through the open file until every receiver has it.
            if self.pg.as_ref().is_some_and(|p| p.retired.contains(&seg.name)) && self.maps[i].is_some() {
                continue;
            }
            if !seg.sealed {
                return Err(self.removed(seg, seg.start.max(self.released)));
            }
            // A complete segment PostgreSQL removed or recycled (renamed to a future name, to
            // be overwritten) before every receiver had it: never read it again through the old
            // mapping. The receivers that still need it fail with a clear error; the others go on.
            lost.push(i);
        }
        for i in lost {
            let name = self.segs[i].name.clone();
            let needed = self.segs[i].start.max(self.released);
            self.maps[i] = None;
            let pg = self.pg();
            if !pg.lost.contains(&name) {
                tracing::error!(
                    segment = %name, needed_from = %needed.lsn(),
                    "postgres recycled or removed a segment that a receiver still needs; that receiver needs a \
                     new base backup and a new mirror (archive_command `walship wait --segment %f` prevents this)"
                );
                pg.lost.push(name);
            }
        }
        if self.segs.is_empty() {
            if !self.start_pg(g, &files)? {
                return Ok(changed);
            }
            changed = true;
        }

        changed |= self.walk_pg(g, &files)?;
        if gone_prefix > 0 && gone_prefix < self.segs.len() {
            self.segs.drain(..gone_prefix);
            self.maps.drain(..gone_prefix);
        }
        Ok(changed)
    }

    /// The file for `segno` that PostgreSQL has started writing: the highest
    /// timeline at or above `min_tli` whose first page is valid for its LSN.
    fn started_file<'f>(&self, g: WalGeometry, files: &'f [PgFile], segno: u64, min_tli: u32) -> Option<&'f PgFile> {
        let c = self.cluster();
        files.iter().rev().filter(|f| f.pg.segno == segno && f.pg.timeline >= min_tli).find(|f| {
            read_first_header(&self.dir.join(f.name.as_str())).is_some_and(|page| {
                let expect = PageExpect {
                    geometry: g,
                    pageaddr: g.segment_start(segno),
                    sysid: c.sysid,
                    magic: c.magic,
                    min_tli: 0,
                    max_tli: Some(f.pg.timeline),
                };
                validate_page(&page, &expect).is_ok()
            })
        })
    }

    fn cluster(&self) -> Cluster {
        let pg = self.pg.as_ref().expect("postgres state in postgres mode");
        Cluster { sysid: pg.sysid, magic: pg.magic }
    }

    /// Anchors the stream on the oldest segment PostgreSQL has written, at its first record.
    fn start_pg(&mut self, g: WalGeometry, files: &[PgFile]) -> Result<bool, SourceError> {
        let mut segnos: Vec<u64> = files.iter().map(|f| f.pg.segno).collect();
        segnos.dedup();
        for segno in segnos {
            let Some(f) = self.started_file(g, files, segno, 0).cloned() else { continue };
            let start = g.segment_start(segno);
            let mut map = self.open_map(&f.name, start)?;
            let bytes = whole(&mut map, &self.dir, &f.name, g)?;
            let slices = [&bytes[..]];
            let input = WalInput::new(g, start, &slices);
            let Some((h, _)) = read_long_header(&self.dir.join(f.name.as_str())) else { continue };
            let opts = WalkOptions { system_identifier: h.long.map(|l| l.sysid), ..WalkOptions::default() };
            match find_first_record(input, start, opts) {
                Ok(first) => {
                    tracing::info!(segment = %f.name, first_record = %first.lsn(), "postgres wal: stream starts");
                    let pg = self.pg();
                    pg.sysid = h.long.map(|l| l.sysid);
                    pg.next = first.0;
                    pg.end = start;
                    pg.prev = None;
                    pg.timeline = f.pg.timeline;
                    self.anchor = Position(start);
                    self.released = Position(start);
                    self.segs.push(SegmentInfo { name: f.name.clone(), start: Position(start), len: 0, sealed: false });
                    self.maps.push(Some(map));
                    return Ok(true);
                }
                Err(stop) => {
                    tracing::debug!(segment = %f.name, %stop, "postgres wal: no record starts in the oldest segment");
                    return Ok(false);
                }
            }
        }
        Ok(false)
    }

    /// Where timeline `tli` ended, according to the newest history file.
    fn switch_point(&self, tli: u32) -> Option<u64> {
        let newest = self.pg.as_ref()?.histories.last()?;
        let newest_tli = u32::from_str_radix(newest.strip_suffix(".history")?, 16).ok()?;
        if newest_tli <= tli {
            return None;
        }
        let text = std::fs::read_to_string(self.dir.join(newest)).ok()?;
        parse_history(&text).into_iter().find(|(parent, _)| *parent == tli).map(|(_, lsn)| lsn)
    }

    /// Follows a promotion that ended the current segment's timeline inside
    /// it: the old segment ends at the switch point (walked up to it through
    /// its still-open file), and the new timeline's file for the same
    /// segment continues the stream from there.
    fn follow_switch(&mut self, g: WalGeometry, files: &[PgFile]) -> Result<bool, SourceError> {
        let Some(last) = self.segs.last() else { return Ok(false) };
        if last.sealed {
            return Ok(false);
        }
        let (name, start) = (last.name.clone(), last.start.0);
        let Some(cur) = PgSegmentName::parse(name.as_str(), g) else { return Ok(false) };
        let Some(switch) = self.switch_point(cur.timeline) else { return Ok(false) };
        let base = g.segment_start(cur.segno);
        if switch < start || switch >= base + g.seg_size() {
            return Ok(false);
        }
        let Some(f) = self.started_file(g, files, cur.segno, cur.timeline + 1).cloned() else { return Ok(false) };
        // The old timeline's bytes up to the switch point, through the open (maybe renamed) file.
        let i = self.segs.len() - 1;
        let bytes = self.whole_at(i, g)?;
        let c = self.cluster();
        let (mut next, mut prev, mut end) = {
            let pg = self.pg();
            (pg.next, pg.prev, if pg.verified { pg.end } else { start })
        };
        let slices = [&bytes[..]];
        let mut w = Walker::new(
            WalInput::new(g, base, &slices),
            next,
            WalkOptions { system_identifier: c.sysid, max_timeline: Some(cur.timeline), prev },
        );
        while end < switch {
            let Ok(r) = w.read_record() else { break };
            (next, prev, end) = (r.next.0, Some(r.lsn.0), r.end.0);
        }
        if end != switch {
            return Err(SourceError::TimelineSwitch {
                dir: self.dir.clone(),
                segment: name,
                switch: Position(switch),
                reached: Position(end),
            });
        }
        tracing::info!(
            old = %name, new = %f.name, switch = %Position(switch).lsn(),
            "postgres wal: timeline {} ended inside the segment; following timeline {}", cur.timeline, f.pg.timeline
        );
        let pg = self.pg();
        (pg.next, pg.prev, pg.end, pg.verified, pg.timeline) = (next, prev, end, true, f.pg.timeline);
        pg.retired.push(name);
        self.segs[i].len = switch - start;
        self.segs[i].sealed = true;
        self.segs.push(SegmentInfo { name: f.name.clone(), start: Position(switch), len: 0, sealed: false });
        self.maps.push(None);
        Ok(true)
    }

    /// Walks new records from where the last walk stopped, extending the
    /// last segment and adding the next ones as PostgreSQL starts them.
    fn walk_pg(&mut self, g: WalGeometry, files: &[PgFile]) -> Result<bool, SourceError> {
        let mut changed = false;
        let seg_size = g.seg_size();
        let c = self.cluster();
        loop {
            let i = self.segs.len() - 1;
            let (name, start) = (self.segs[i].name.clone(), self.segs[i].start.0);
            // A segment that begins mid-file (a new timeline) still reads its whole file.
            let base = start - start % seg_size;
            let seg_end = base + seg_size;
            let Some(cur) = PgSegmentName::parse(name.as_str(), g) else { return Ok(changed) };
            let (verified, end, next, prev) = {
                let pg = self.pg();
                (pg.verified, pg.end, pg.next, pg.prev)
            };
            if verified && end >= seg_end {
                if !self.segs[i].sealed {
                    self.segs[i].len = seg_end - start;
                    self.segs[i].sealed = true;
                    changed = true;
                }
                let Some(f) = self.started_file(g, files, cur.segno + 1, cur.timeline).cloned() else {
                    return Ok(changed);
                };
                let len = end.min(seg_end + seg_size) - seg_end;
                self.segs.push(SegmentInfo { name: f.name.clone(), start: Position(seg_end), len, sealed: false });
                self.maps.push(None);
                self.pg().timeline = f.pg.timeline;
                changed = true;
                continue;
            }
            let bytes = self.whole_at(i, g)?;
            if verified && end < next {
                // The padding after a switch: final page by page.
                let new_end = final_padding(&bytes, base, end, g, c);
                if new_end == end {
                    return Ok(changed);
                }
                self.pg().end = new_end;
                self.segs[i].len = new_end - start;
                changed = true;
                continue;
            }
            let opts = WalkOptions { system_identifier: c.sysid, max_timeline: None, prev };
            let slices = [&bytes[..]];
            let mut ve = valid_end(WalInput::new(g, start, &slices), next, opts);
            if ve.stop.at.0 >= seg_end
                && let Some(f) = self.started_file(g, files, cur.segno + 1, cur.timeline).cloned()
            {
                // A record runs into the next segment: walk again with it.
                let mut map = self.open_map(&f.name, seg_end)?;
                let nb = whole(&mut map, &self.dir, &f.name, g)?;
                let slices = [&bytes[..], &nb[..]];
                ve = valid_end(WalInput::new(g, start, &slices), next, opts);
            }
            let mut new_end = ve.end.0;
            if ve.records > 0 && ve.next != ve.end {
                // An XLOG_SWITCH: its padding joins once final.
                new_end = final_padding(&bytes, base, new_end, g, c);
            }
            let pg = self.pg();
            pg.stop = Some(ve.stop);
            if ve.records == 0 {
                return Ok(changed);
            }
            pg.verified = true;
            pg.prev = ve.last_record.map(|p| p.0);
            pg.next = ve.next.0;
            pg.end = new_end;
            let len = new_end.min(seg_end) - start;
            changed |= len != self.segs[i].len;
            self.segs[i].len = len;
            if new_end < seg_end {
                return Ok(changed);
            }
            // Complete (a record ends exactly at, or runs past, its end): the next pass seals it.
        }
    }

    fn open_map(&self, name: &SegmentName, needed: u64) -> Result<SegmentMap, SourceError> {
        SegmentMap::open(&self.dir.join(name.as_str())).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SourceError::SegmentRemoved { dir: self.dir.clone(), segment: name.clone(), needed: Position(needed) }
            } else {
                SourceError::Io { dir: self.dir.clone(), segment: name.clone(), op: "open", source: e }
            }
        })
    }

    /// The whole file of stream segment `i`, mapped.
    fn whole_at(&mut self, i: usize, g: WalGeometry) -> Result<bytes::Bytes, SourceError> {
        if self.maps[i].is_none() {
            let seg = &self.segs[i];
            self.maps[i] = Some(self.open_map(&seg.name, seg.start.0)?);
        }
        let name = self.segs[i].name.clone();
        let map = self.maps[i].as_mut().expect("just opened");
        whole(map, &self.dir, &name, g)
    }
}

/// The `(parent timeline, switch point)` lines of a timeline history file
/// (`parentTLI <tab> X/Y <tab> reason`; `#` comments and blank lines skipped).
pub fn parse_history(text: &str) -> Vec<(u32, u64)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let tli = f.next()?.parse().ok()?;
            let lsn = f.next()?.parse::<Position>().ok()?;
            Some((tli, lsn.0))
        })
        .collect()
}

/// The first page header inside `bytes` (which hold the stream from `pos`)
/// that is not a page header for its own LSN: PostgreSQL recycled the file
/// and began overwriting it. Cheap: one 16-byte look per page.
pub(crate) fn foreign_page(bytes: &[u8], pos: Position, g: WalGeometry) -> Option<Position> {
    let blk = g.block_size();
    let mut page = pos.0.div_ceil(blk) * blk;
    while let Some(h) = usize::try_from(page - pos.0).ok().and_then(|o| bytes.get(o..o + 16)) {
        let magic = u16::from_le_bytes([h[0], h[1]]);
        let addr = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
        // Zero pages are the padding after an XLOG_SWITCH (PostgreSQL 14+).
        let zero = h.iter().all(|b| *b == 0);
        if !zero && (crate::postgres::PgVersion::from_magic(magic).is_none() || addr != page) {
            return Some(Position(page));
        }
        page += blk;
    }
    None
}

/// The whole file (at most one segment), mapped.
fn whole(map: &mut SegmentMap, dir: &Path, name: &SegmentName, g: WalGeometry) -> Result<bytes::Bytes, SourceError> {
    let len = map
        .file_len()
        .map_err(|source| SourceError::Io { dir: dir.to_path_buf(), segment: name.clone(), op: "stat", source })?
        .min(g.seg_size());
    map.slice(len, 0, usize::try_from(len).unwrap_or(usize::MAX)).map_err(|e| match e {
        MapError::Shorter { now } => {
            SourceError::Truncated { dir: dir.to_path_buf(), segment: name.clone(), observed: len, now }
        }
        MapError::Io { op, source } => SourceError::Io { dir: dir.to_path_buf(), segment: name.clone(), op, source },
    })
}

/// How far the padding after an `XLOG_SWITCH` ending at `from` is final in
/// `bytes` (the segment starting at `seg_start`): the rest of the switch's
/// page must be zeros, and every later page a fresh page — valid header for
/// its own LSN, zero body. Returns the end of the final part.
fn final_padding(bytes: &[u8], seg_start: u64, from: u64, g: WalGeometry, c: Cluster) -> u64 {
    let blk = g.block_size();
    let seg_end = seg_start + g.seg_size();
    let rel = |lsn: u64| usize::try_from(lsn - seg_start).unwrap_or(usize::MAX);
    let mut end = from;
    if !from.is_multiple_of(blk) {
        let page_end = (g.page_start(from) + blk).min(seg_end);
        match bytes.get(rel(from)..rel(page_end)) {
            Some(rest) if rest.iter().all(|b| *b == 0) => end = page_end,
            _ => return from,
        }
    }
    while end < seg_end {
        let Some(page) = bytes.get(rel(end)..rel(end + blk)) else { return end };
        // PostgreSQL 14+ zeroes padding pages whole; 13 leaves a page header.
        let body = if page.iter().all(|b| *b == 0) {
            &[][..]
        } else {
            let expect =
                PageExpect { geometry: g, pageaddr: end, sysid: c.sysid, magic: c.magic, min_tli: 0, max_tli: None };
            let Ok(h) = validate_page(page, &expect) else { return end };
            &page[h.header_len()..]
        };
        if !body.iter().all(|b| *b == 0) {
            return end;
        }
        end += blk;
    }
    end
}

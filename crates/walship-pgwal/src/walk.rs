//! Walking records to the valid end of the WAL, as `XLogDecodeNextRecord`
//! and `XLogFindNextRecord` in `xlogreader.c` do, over segment slices.
//!
//! The walker holds the reader state PostgreSQL keeps (`NextRecPtr`,
//! `DecodeRecPtr`, `latestPagePtr`/`latestPageTLI`, the system identifier
//! once seen) and validates every page header it enters, and the first page
//! of every segment it enters, before trusting a byte of it.
use walship_core::Position;

use super::page::{PageError, PageExpect, PageHeader, validate_page};
use super::record::{MAX_RECORD_LEN, RECORD_HEADER_LEN, RecordCrc, RecordHeader};
pub use super::stop::{Stop, StopReason};
use super::{WalGeometry, maxalign};

/// The bytes to walk: consecutive segments, in LSN order, starting with the
/// segment at `first_segment_start`. A slice may be shorter than a segment
/// (bytes not available yet); bytes past its end are treated as missing.
#[derive(Clone, Copy, Debug)]
pub struct WalInput<'a> {
    geometry: WalGeometry,
    first_segment_start: u64,
    segments: &'a [&'a [u8]],
}

impl<'a> WalInput<'a> {
    /// `first_segment_start` is rounded down to its segment's start.
    pub fn new(geometry: WalGeometry, first_segment_start: u64, segments: &'a [&'a [u8]]) -> Self {
        let first_segment_start = first_segment_start - geometry.segment_offset(first_segment_start);
        WalInput { geometry, first_segment_start, segments }
    }

    /// Segment and block size.
    pub fn geometry(&self) -> WalGeometry {
        self.geometry
    }

    /// The available bytes from `lsn` to the end of its segment's slice.
    fn avail(&self, lsn: u64) -> &'a [u8] {
        let Some(rel) = lsn.checked_sub(self.first_segment_start) else { return &[] };
        let seg_size = self.geometry.seg_size();
        let Some(seg) = usize::try_from(rel / seg_size).ok().and_then(|i| self.segments.get(i)) else {
            return &[];
        };
        let seg = &seg[..seg.len().min(usize::try_from(seg_size).unwrap_or(usize::MAX))];
        usize::try_from(rel % seg_size).ok().and_then(|o| seg.get(o..)).unwrap_or(&[])
    }

    /// The available bytes of the page starting at `page_ptr`.
    fn page(&self, page_ptr: u64) -> &'a [u8] {
        let a = self.avail(page_ptr);
        &a[..a.len().min(self.geometry.block_size() as usize)]
    }
}

/// What the walker may assume.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkOptions {
    /// The cluster's system identifier; when `None`, the first long page
    /// header read sets it.
    pub system_identifier: Option<u64>,
    /// The highest plausible `xlp_tli` (e.g. the timeline in the file name).
    pub max_timeline: Option<u32>,
    /// The start of the record before the first one read, when known: the
    /// first record's `xl_prev` must then equal it. Otherwise it must only lie
    /// before the record (PostgreSQL's random-access rule).
    pub prev: Option<u64>,
}

/// A record that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its LSN (first header byte).
    pub lsn: Position,
    /// Its end, MAXALIGNed (PostgreSQL's `EndRecPtr` before the switch rule).
    pub end: Position,
    /// Where the next record begins: `end`, or the next segment's start
    /// after an `XLOG_SWITCH`.
    pub next: Position,
    /// Its header.
    pub header: RecordHeader,
}

/// Reads records one after another; an [`Iterator`] that ends at the first
/// record that does not check, with the reason in [`Walker::stop`].
#[derive(Clone, Debug)]
pub struct Walker<'a> {
    input: WalInput<'a>,
    opts: WalkOptions,
    next: u64,
    prev: Option<u64>,
    latest_page: u64,
    latest_tli: u32,
    sysid: Option<u64>,
    magic: Option<u16>,
    checked_segment: Option<u64>,
    stop: Option<Stop>,
    overwritten: Option<u64>,
}

fn stop(at: u64, reason: StopReason) -> Stop {
    Stop { at: Position(at), reason }
}

impl<'a> Walker<'a> {
    /// A walker whose first record starts at `start` (a record's LSN, or a
    /// page start where a record begins right after the header).
    pub fn new(input: WalInput<'a>, start: u64, opts: WalkOptions) -> Self {
        Walker {
            input,
            opts,
            next: start,
            prev: opts.prev,
            latest_page: 0,
            latest_tli: 0,
            sysid: opts.system_identifier,
            magic: None,
            checked_segment: None,
            stop: None,
            overwritten: None,
        }
    }

    /// Why the walk ended, once it has.
    pub fn stop(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }

    /// Where the next record would begin.
    pub fn next_lsn(&self) -> Position {
        Position(self.next)
    }

    /// The system identifier from the long page headers read (or the options).
    pub fn system_identifier(&self) -> Option<u64> {
        self.sysid
    }

    /// The LSN of a record abandoned at an `XLP_FIRST_IS_OVERWRITE_CONTRECORD`
    /// page, if one was met.
    pub fn overwritten_record(&self) -> Option<Position> {
        self.overwritten.map(Position)
    }

    /// Validates the page at `ptr` (and first its segment's first page, when
    /// entering a segment elsewhere) and returns its header and bytes.
    fn read_page(&mut self, ptr: u64) -> Result<(PageHeader, &'a [u8]), Stop> {
        let g = self.input.geometry;
        let offset = g.segment_offset(ptr);
        if offset != 0 && self.checked_segment != Some(g.segno(ptr)) {
            self.read_page(ptr - offset)?;
        }
        let page = self.input.page(ptr);
        let expect = PageExpect {
            geometry: g,
            pageaddr: ptr,
            sysid: self.sysid,
            magic: self.magic,
            min_tli: if ptr > self.latest_page { self.latest_tli } else { 0 },
            max_tli: self.opts.max_timeline,
        };
        match validate_page(page, &expect) {
            Ok(h) => {
                if let Some(long) = h.long {
                    self.sysid = Some(long.sysid);
                }
                self.magic = Some(h.magic);
                self.latest_page = ptr;
                self.latest_tli = h.tli;
                self.checked_segment = Some(g.segno(ptr));
                Ok((h, page))
            }
            Err(PageError::Truncated { have, .. }) => Err(stop(ptr + have as u64, StopReason::EndOfInput)),
            Err(e) => Err(stop(ptr, StopReason::Page(e))),
        }
    }

    fn check_header(&self, rec: u64, h: &RecordHeader) -> Result<(), Stop> {
        if (h.tot_len as usize) < RECORD_HEADER_LEN {
            return Err(stop(rec, StopReason::InvalidRecordLength(h.tot_len)));
        }
        let ok = match self.prev {
            Some(p) => h.prev == p,
            None => h.prev < rec,
        };
        if !ok {
            return Err(stop(rec, StopReason::BadPrevLink { found: h.prev, expected: self.prev }));
        }
        Ok(())
    }

    /// Reads and checks the next record.
    pub fn read_record(&mut self) -> Result<Record, Stop> {
        if let Some(s) = self.stop {
            return Err(s);
        }
        let r = self.read_record_inner();
        if let Err(s) = r {
            self.stop = Some(s);
        }
        r
    }

    fn read_record_inner(&mut self) -> Result<Record, Stop> {
        let blk = self.input.geometry.block_size();
        let mut rec = self.next;
        'restart: loop {
            let mut page_ptr = self.input.geometry.page_start(rec);
            let (hdr, page) = self.read_page(page_ptr)?;
            let hlen = hdr.header_len() as u64;
            let mut off = rec - page_ptr;
            if off == 0 {
                rec += hlen;
                off = hlen;
            } else if off < hlen {
                return Err(stop(rec, StopReason::InvalidRecordOffset(off as u32)));
            }
            if hdr.is_contrecord() && off == hlen {
                return Err(stop(rec, StopReason::ContrecordRequested));
            }
            let off = off as usize;
            let eoi = |p: &[u8]| stop(page_ptr + p.len() as u64, StopReason::EndOfInput);
            let Some(len_bytes) = page.get(off..off + 4) else { return Err(eoi(page)) };
            let tot_len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
            let mut header_checked = false;
            if off as u64 + RECORD_HEADER_LEN as u64 <= blk {
                let Some(h) = page.get(off..).and_then(RecordHeader::parse) else { return Err(eoi(page)) };
                self.check_header(rec, &h)?;
                header_checked = true;
            } else if (tot_len as usize) < RECORD_HEADER_LEN {
                return Err(stop(rec, StopReason::InvalidRecordLength(tot_len)));
            }
            if tot_len > MAX_RECORD_LEN {
                return Err(stop(rec, StopReason::RecordTooLong(tot_len)));
            }
            let total = u64::from(tot_len);
            let first = total.min(blk - off as u64) as usize;
            let Some(frag) = page.get(off..off + first) else { return Err(eoi(page)) };
            let mut crc = RecordCrc::new();
            crc.update(frag);
            let mut got = first as u64;
            let mut end = rec + got;
            while got < total {
                page_ptr += blk;
                let (h, p) = self.read_page(page_ptr)?;
                if h.is_overwrite_contrecord() {
                    self.overwritten = Some(rec);
                    rec = page_ptr;
                    continue 'restart;
                }
                if !h.is_contrecord() {
                    return Err(stop(rec, StopReason::NoContrecordFlag));
                }
                let remaining = total - got;
                if h.rem_len == 0 || u64::from(h.rem_len) != remaining {
                    let reason = StopReason::BadContrecordLength { found: h.rem_len, expected: remaining };
                    return Err(stop(rec, reason));
                }
                let hl = h.header_len();
                let n = remaining.min(blk - hl as u64) as usize;
                let Some(frag) = p.get(hl..hl + n) else {
                    return Err(stop(page_ptr + p.len() as u64, StopReason::EndOfInput));
                };
                crc.update(frag);
                got += n as u64;
                end = page_ptr + (hl + n) as u64;
                if !header_checked && let Some(rh) = crc.header() {
                    self.check_header(rec, &rh)?;
                    header_checked = true;
                }
            }
            let Some(header) = crc.header() else {
                return Err(stop(rec, StopReason::InvalidRecordLength(tot_len)));
            };
            let computed = crc.value();
            if computed != header.crc {
                return Err(stop(rec, StopReason::BadCrc { stored: header.crc, computed }));
            }
            let end = maxalign(end);
            let mut next = end;
            if header.is_xlog_switch() {
                let seg = self.input.geometry.seg_size();
                next = end.div_ceil(seg).saturating_mul(seg);
            }
            self.prev = Some(rec);
            self.next = next;
            return Ok(Record { lsn: Position(rec), end: Position(end), next: Position(next), header });
        }
    }

    /// Skips continuation data at the start of the page holding `self.next`
    /// (which may span several pages) and points the walker at the first
    /// record that begins after it, as `XLogFindNextRecord` does.
    fn skip_continuation(&mut self) -> Result<u64, Stop> {
        let blk = self.input.geometry.block_size();
        let mut ptr = self.input.geometry.page_start(self.next);
        loop {
            let (h, _) = self.read_page(ptr)?;
            let hl = h.header_len() as u64;
            if !h.is_contrecord() {
                return Ok(ptr + hl);
            }
            let rem = maxalign(u64::from(h.rem_len));
            if rem >= blk - hl {
                ptr += blk;
            } else {
                return Ok(ptr + hl + rem);
            }
        }
    }
}

impl Iterator for Walker<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        self.read_record().ok()
    }
}

/// The first record that begins on or after the page holding `from` (e.g.
/// a segment's start), skipping continuation data of a record that began
/// earlier, as `XLogFindNextRecord` does. Fails when a page on the way is
/// not valid (the segment holds no WAL for its position yet).
pub fn find_first_record(input: WalInput<'_>, from: u64, opts: WalkOptions) -> Result<Position, Stop> {
    let mut w = Walker::new(input, from, opts);
    w.skip_continuation().map(Position)
}

/// The result of [`valid_end`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidEnd {
    /// The end (MAXALIGNed) of the last complete record whose CRC checks;
    /// the start position when no record does. Bytes below it are final.
    pub end: Position,
    /// Where the next record would begin: `end`, or the next segment's start
    /// when the last record is an `XLOG_SWITCH` (its padding is final too).
    pub next: Position,
    /// The LSN of the last valid record.
    pub last_record: Option<Position>,
    /// How many records were read.
    pub records: u64,
    /// Where and why the walk stopped.
    pub stop: Stop,
}

/// Walks records from `start` (a record's LSN, e.g. from
/// [`find_first_record`]) to the end of valid WAL in `input`.
pub fn valid_end(input: WalInput<'_>, start: u64, opts: WalkOptions) -> ValidEnd {
    let mut w = Walker::new(input, start, opts);
    let (mut end, mut next, mut last_record, mut records) = (Position(start), Position(start), None, 0);
    loop {
        match w.read_record() {
            Ok(r) => {
                (end, next, last_record) = (r.end, r.next, Some(r.lsn));
                records += 1;
            }
            Err(stop) => return ValidEnd { end, next, last_record, records, stop },
        }
    }
}

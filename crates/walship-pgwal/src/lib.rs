//! The PostgreSQL WAL format: file names, page headers, records, and the
//! *valid end* of the WAL — the end of the last complete record whose CRC
//! checks — found without trusting stale or half-written bytes.
//!
//! Everything here is pure: functions take `&[u8]` slices of segments (for
//! example read-only memory maps) and never do I/O, so the rules can be tested
//! against real segments byte for byte.
//!
//! # Layout (PostgreSQL 13–17)
//!
//! * **Positions** are LSNs: `segno × segment size + offset`, printed `X/Y`.
//! * **Segment files** are named `TTTTTTTTXXXXXXXXYYYYYYYY` (timeline, then the
//!   segment number split into `segno / (2³² / segsize)` and
//!   `segno % (2³² / segsize)`), see `XLogFileName` in `xlog_internal.h`.
//!   `TTTTTTTT.history` holds a timeline's history, `NAME.partial` an
//!   incomplete segment (as `pg_receivewal` and a promoted standby leave
//!   it), `NAME.OOOOOOOO.backup` a backup label copy. See [`name`].
//! * A segment is a sequence of **pages** of `XLOG_BLCKSZ` bytes, each starting
//!   with an `XLogPageHeaderData` (24 bytes after MAXALIGN); the first page of a
//!   segment has the long form `XLogLongPageHeaderData` (40 bytes) which adds the
//!   system identifier, segment size and block size (`xlog_internal.h`). See
//!   [`page`].
//! * **Records** (`XLogRecord`, `xlogrecord.h`) have a 24-byte header —
//!   `xl_tot_len`, `xl_xid`, `xl_prev`, `xl_info`, `xl_rmid`, 2 padding bytes,
//!   `xl_crc` — and start on 8-byte (MAXALIGN) boundaries. A record that does
//!   not fit on its page continues after the next page's header; that page has
//!   `XLP_FIRST_IS_CONTRECORD` and `xlp_rem_len` = bytes of the record still to
//!   come. The header itself may be split across two pages (only `xl_tot_len`
//!   is sure to be on the first). See [`record`].
//!
//! # Validity rules (as `xlogreader.c` applies them)
//!
//! A page header is valid for its position when (`XLogReaderValidatePageHeader`)
//! its magic is `XLOG_PAGE_MAGIC` of a supported version (and the same on
//! every page), no unknown `xlp_info` bit is set, the first page of a segment
//! has the long header (whose system identifier, segment size and block size
//! agree with the cluster), `xlp_pageaddr` is the page's own LSN, and
//! `xlp_tli` never decreases from one page to the next. PostgreSQL
//! preallocates and *recycles* segments: a recycled file still holds the pages
//! of its earlier life (good magic, wrong `xlp_pageaddr`), a fresh one is
//! zeros. Either is the **end of WAL**, not corruption.
//!
//! A record is valid when (`XLogDecodeNextRecord`, `ValidXLogRecordHeader`,
//! `ValidXLogRecord`) it starts past the page header, `xl_tot_len` ≥ 24, its
//! `xl_prev` is the start of the previous record (or, for the first record
//! read, lies before it), every continuation page is flagged
//! `XLP_FIRST_IS_CONTRECORD` with `xlp_rem_len` equal to what remains, and the
//! CRC-32C over the record body and then the header up to `xl_crc` matches.
//! After an `XLOG_SWITCH` record (`xl_rmid` 0, `xl_info & 0xF0 == 0x40`) the rest
//! of the segment is padding and the next record begins in the next segment.
//! A continuation page flagged `XLP_FIRST_IS_OVERWRITE_CONTRECORD` means the
//! record being assembled was abandoned by crash recovery: reading restarts
//! at that page.
//!
//! [`walk::valid_end`] applies these rules from a known record start and
//! reports where and why the walk stopped ([`walk::StopReason`]). Differences
//! from PostgreSQL: `xl_rmid` is not checked (custom resource managers make
//! every id possible since 15), a long page header is rejected anywhere but on
//! a segment's first page, and the magic may be that of any supported version.
pub mod name;
pub mod page;
pub mod record;
pub mod stop;
pub mod walk;

pub use name::{PgSegmentName, WalFileName};
pub use page::{LongPageHeader, PageError, PageExpect, PageHeader, PgVersion};
pub use record::RecordHeader;
pub use walk::{Record, Stop, StopReason, ValidEnd, WalInput, WalkOptions, Walker, find_first_record, valid_end};

/// Segment and page size of a cluster (`wal_segment_size`, `XLOG_BLCKSZ`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalGeometry {
    seg_size: u64,
    block_size: u64,
}

/// A segment or block size PostgreSQL does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// `wal_segment_size` must be a power of two from 1 MiB to 1 GiB.
    #[error("invalid WAL segment size {0}: expected a power of two from 1 MiB to 1 GiB")]
    SegmentSize(u64),
    /// `XLOG_BLCKSZ` must be a power of two from 1 KiB to 64 KiB.
    #[error("invalid WAL block size {0}: expected a power of two from 1 KiB to 64 KiB")]
    BlockSize(u64),
}

impl WalGeometry {
    /// The PostgreSQL defaults: 16 MiB segments, 8 KiB pages.
    pub const DEFAULT: WalGeometry = WalGeometry { seg_size: 16 << 20, block_size: 8192 };

    /// Checks the sizes the way PostgreSQL does (`IsValidWalSegSize`).
    pub fn new(seg_size: u64, block_size: u64) -> Result<Self, GeometryError> {
        if !seg_size.is_power_of_two() || !((1 << 20)..=(1 << 30)).contains(&seg_size) {
            return Err(GeometryError::SegmentSize(seg_size));
        }
        if !block_size.is_power_of_two() || !(1024..=65536).contains(&block_size) {
            return Err(GeometryError::BlockSize(block_size));
        }
        Ok(WalGeometry { seg_size, block_size })
    }

    /// Bytes per segment file.
    pub const fn seg_size(self) -> u64 {
        self.seg_size
    }

    /// Bytes per page.
    pub const fn block_size(self) -> u64 {
        self.block_size
    }

    /// The segment holding `lsn`.
    pub const fn segno(self, lsn: u64) -> u64 {
        lsn / self.seg_size
    }

    /// The LSN of the first byte of segment `segno` (saturating).
    pub const fn segment_start(self, segno: u64) -> u64 {
        segno.saturating_mul(self.seg_size)
    }

    /// Offset of `lsn` in its segment.
    pub const fn segment_offset(self, lsn: u64) -> u64 {
        lsn % self.seg_size
    }

    /// The start of the page holding `lsn`.
    pub const fn page_start(self, lsn: u64) -> u64 {
        lsn - lsn % self.block_size
    }

    /// Segments per "xlogid" (the `XXXXXXXX` part of a name): 2³² / segsize.
    pub const fn segments_per_xlogid(self) -> u64 {
        0x1_0000_0000 / self.seg_size
    }
}

/// Rounds up to a multiple of 8 (`MAXALIGN` on the 64-bit platforms
/// PostgreSQL writes WAL on).
pub const fn maxalign(v: u64) -> u64 {
    v.saturating_add(7) & !7
}

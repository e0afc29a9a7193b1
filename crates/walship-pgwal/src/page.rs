//! WAL page headers (`XLogPageHeaderData`, `XLogLongPageHeaderData` in
//! `xlog_internal.h`) and their validation (`XLogReaderValidatePageHeader` in
//! `xlogreader.c`).
//!
//! Short header, little-endian, 24 bytes after MAXALIGN:
//! `xlp_magic u16 | xlp_info u16 | xlp_tli u32 | xlp_pageaddr u64 | xlp_rem_len u32 | pad 4`.
//! Long header (with `XLP_LONG_HEADER`, first page of each segment), 40 bytes:
//! the short fields, then `xlp_sysid u64 | xlp_seg_size u32 | xlp_xlog_blcksz u32`.
use super::WalGeometry;

/// The record continuing from the previous page fills the start of this one.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// The header is the long form.
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// Backup blocks starting on this page are optional.
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// The record that should continue here was abandoned (crash recovery wrote
/// an `XLOG_OVERWRITE_CONTRECORD` record instead).
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// Every defined `xlp_info` bit.
pub const XLP_ALL_FLAGS: u16 = 0x000F;
/// `SizeOfXLogShortPHD`.
pub const SHORT_HEADER_LEN: usize = 24;
/// `SizeOfXLogLongPHD`.
pub const LONG_HEADER_LEN: usize = 40;

/// A PostgreSQL major version, known by its `XLOG_PAGE_MAGIC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PgVersion {
    /// PostgreSQL 13, magic 0xD106.
    V13,
    /// PostgreSQL 14, magic 0xD10D.
    V14,
    /// PostgreSQL 15, magic 0xD110.
    V15,
    /// PostgreSQL 16, magic 0xD113.
    V16,
    /// PostgreSQL 17, magic 0xD116.
    V17,
}

impl PgVersion {
    /// The version whose `XLOG_PAGE_MAGIC` is `magic`, if supported.
    pub fn from_magic(magic: u16) -> Option<PgVersion> {
        Some(match magic {
            0xD106 => PgVersion::V13,
            0xD10D => PgVersion::V14,
            0xD110 => PgVersion::V15,
            0xD113 => PgVersion::V16,
            0xD116 => PgVersion::V17,
            _ => return None,
        })
    }

    /// The version's `XLOG_PAGE_MAGIC`.
    pub fn magic(self) -> u16 {
        match self {
            PgVersion::V13 => 0xD106,
            PgVersion::V14 => 0xD10D,
            PgVersion::V15 => 0xD110,
            PgVersion::V16 => 0xD113,
            PgVersion::V17 => 0xD116,
        }
    }
}

/// The extra fields of a long page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongPageHeader {
    /// `xlp_sysid`: the cluster's system identifier.
    pub sysid: u64,
    /// `xlp_seg_size`.
    pub seg_size: u32,
    /// `xlp_xlog_blcksz`.
    pub block_size: u32,
}

/// A decoded page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageHeader {
    /// `xlp_magic`.
    pub magic: u16,
    /// `xlp_info`.
    pub info: u16,
    /// `xlp_tli`: timeline of the first record on the page.
    pub tli: u32,
    /// `xlp_pageaddr`: the LSN the page was written for.
    pub pageaddr: u64,
    /// `xlp_rem_len`: bytes of a continued record at the start of the page.
    pub rem_len: u32,
    /// The long-header fields, when `XLP_LONG_HEADER` is set.
    pub long: Option<LongPageHeader>,
}

/// Why a page is not a valid WAL page for its position: the end of WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// Fewer bytes than the header needs are available (yet).
    #[error("page header truncated: {have} of {need} bytes available")]
    Truncated {
        /// Bytes available.
        have: usize,
        /// Bytes the header needs.
        need: usize,
    },
    /// The header is all zeros: a preallocated or zero-filled page.
    #[error("zero page")]
    Zero,
    /// `xlp_magic` of no supported version (13–17).
    #[error("invalid magic number {0:04X}")]
    BadMagic(u16),
    /// A magic of another supported version than the previous pages'.
    #[error("magic number {found:04X} differs from {expected:04X} on earlier pages")]
    MagicChanged {
        /// On this page.
        found: u16,
        /// On earlier pages.
        expected: u16,
    },
    /// `xlp_info` has bits outside `XLP_ALL_FLAGS`.
    #[error("invalid info bits {0:04X}")]
    UnknownFlags(u16),
    /// The first page of a segment lacks `XLP_LONG_HEADER`.
    #[error("first page of a segment without a long header (info {0:04X})")]
    MissingLongHeader(u16),
    /// `XLP_LONG_HEADER` on a page other than a segment's first.
    #[error("long header on a page that does not start a segment (info {0:04X})")]
    MisplacedLongHeader(u16),
    /// `xlp_sysid` is another cluster's.
    #[error("WAL from another database system: system identifier {found}, expected {expected}")]
    SysidMismatch {
        /// In the header.
        found: u64,
        /// Expected.
        expected: u64,
    },
    /// `xlp_seg_size` disagrees with the segment size.
    #[error("incorrect segment size {0} in page header")]
    SegSizeMismatch(u32),
    /// `xlp_xlog_blcksz` disagrees with the block size.
    #[error("incorrect XLOG_BLCKSZ {0} in page header")]
    BlockSizeMismatch(u32),
    /// `xlp_pageaddr` is not the page's LSN: a recycled segment's stale page.
    #[error("unexpected pageaddr {found:#X}, expected {expected:#X}")]
    StalePageAddr {
        /// In the header.
        found: u64,
        /// The page's LSN.
        expected: u64,
    },
    /// `xlp_tli` is lower than the previous page's.
    #[error("out-of-sequence timeline ID {found} (after {previous})")]
    TimelineRegressed {
        /// On this page.
        found: u32,
        /// On the previous page.
        previous: u32,
    },
    /// `xlp_tli` is above the highest timeline the caller allows.
    #[error("timeline ID {found} above the maximum {max}")]
    TimelineTooHigh {
        /// On this page.
        found: u32,
        /// Allowed maximum.
        max: u32,
    },
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

impl PageHeader {
    /// Decodes the header at the start of `page` without judging it; only
    /// [`PageError::Truncated`] can come back.
    pub fn parse(page: &[u8]) -> Result<PageHeader, PageError> {
        if page.len() < SHORT_HEADER_LEN {
            return Err(PageError::Truncated { have: page.len(), need: SHORT_HEADER_LEN });
        }
        let info = u16_at(page, 2);
        let long = if info & XLP_LONG_HEADER != 0 {
            if page.len() < LONG_HEADER_LEN {
                return Err(PageError::Truncated { have: page.len(), need: LONG_HEADER_LEN });
            }
            Some(LongPageHeader { sysid: u64_at(page, 24), seg_size: u32_at(page, 32), block_size: u32_at(page, 36) })
        } else {
            None
        };
        Ok(PageHeader {
            magic: u16_at(page, 0),
            info,
            tli: u32_at(page, 4),
            pageaddr: u64_at(page, 8),
            rem_len: u32_at(page, 16),
            long,
        })
    }

    /// Bytes before the page's data: 40 with a long header, else 24.
    pub fn header_len(&self) -> usize {
        if self.long.is_some() { LONG_HEADER_LEN } else { SHORT_HEADER_LEN }
    }

    /// `XLP_FIRST_IS_CONTRECORD` is set.
    pub fn is_contrecord(&self) -> bool {
        self.info & XLP_FIRST_IS_CONTRECORD != 0
    }

    /// `XLP_FIRST_IS_OVERWRITE_CONTRECORD` is set.
    pub fn is_overwrite_contrecord(&self) -> bool {
        self.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0
    }

    /// The PostgreSQL version the magic belongs to.
    pub fn version(&self) -> Option<PgVersion> {
        PgVersion::from_magic(self.magic)
    }
}

/// What a page at a given position must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageExpect {
    /// Segment and block size.
    pub geometry: WalGeometry,
    /// The page's own LSN (a multiple of the block size).
    pub pageaddr: u64,
    /// The cluster's system identifier, when known.
    pub sysid: Option<u64>,
    /// The magic of the earlier pages, when known.
    pub magic: Option<u16>,
    /// The previous page's `xlp_tli` (0 when there is none): it must not decrease.
    pub min_tli: u32,
    /// The highest plausible timeline (e.g. the one in the file name).
    pub max_tli: Option<u32>,
}

/// Decodes and validates the header at the start of `page` (at least the
/// header's bytes; the rest of the page is not looked at).
pub fn validate_page(page: &[u8], expect: &PageExpect) -> Result<PageHeader, PageError> {
    let h = PageHeader::parse(page)?;
    if h.magic == 0 && page[..SHORT_HEADER_LEN].iter().all(|b| *b == 0) {
        return Err(PageError::Zero);
    }
    if h.version().is_none() {
        return Err(PageError::BadMagic(h.magic));
    }
    if let Some(expected) = expect.magic.filter(|m| *m != h.magic) {
        return Err(PageError::MagicChanged { found: h.magic, expected });
    }
    if h.info & !XLP_ALL_FLAGS != 0 {
        return Err(PageError::UnknownFlags(h.info));
    }
    let first_in_segment = expect.geometry.segment_offset(expect.pageaddr) == 0;
    match (h.long, first_in_segment) {
        (Some(long), true) => {
            if let Some(expected) = expect.sysid.filter(|s| *s != long.sysid) {
                return Err(PageError::SysidMismatch { found: long.sysid, expected });
            }
            if u64::from(long.seg_size) != expect.geometry.seg_size() {
                return Err(PageError::SegSizeMismatch(long.seg_size));
            }
            if u64::from(long.block_size) != expect.geometry.block_size() {
                return Err(PageError::BlockSizeMismatch(long.block_size));
            }
        }
        (None, true) => return Err(PageError::MissingLongHeader(h.info)),
        (Some(_), false) => return Err(PageError::MisplacedLongHeader(h.info)),
        (None, false) => {}
    }
    if h.pageaddr != expect.pageaddr {
        return Err(PageError::StalePageAddr { found: h.pageaddr, expected: expect.pageaddr });
    }
    if h.tli < expect.min_tli {
        return Err(PageError::TimelineRegressed { found: h.tli, previous: expect.min_tli });
    }
    if let Some(max) = expect.max_tli.filter(|m| h.tli > *m) {
        return Err(PageError::TimelineTooHigh { found: h.tli, max });
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(info: u16, tli: u32, pageaddr: u64, rem_len: u32) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        b[2..4].copy_from_slice(&info.to_le_bytes());
        b[4..8].copy_from_slice(&tli.to_le_bytes());
        b[8..16].copy_from_slice(&pageaddr.to_le_bytes());
        b[16..20].copy_from_slice(&rem_len.to_le_bytes());
        if info & XLP_LONG_HEADER != 0 {
            b[24..32].copy_from_slice(&42u64.to_le_bytes());
            b[32..36].copy_from_slice(&(1u32 << 20).to_le_bytes());
            b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        }
        b
    }

    fn expect(pageaddr: u64) -> PageExpect {
        let geometry = WalGeometry::new(1 << 20, 8192).expect("geometry");
        PageExpect { geometry, pageaddr, sysid: Some(42), magic: None, min_tli: 1, max_tli: Some(2) }
    }

    #[test]
    fn accepts_valid_short_and_long_headers() {
        let h = validate_page(&header(7, 1, 0x60_0000, 209), &expect(0x60_0000)).expect("long");
        assert_eq!((h.header_len(), h.rem_len, h.is_contrecord()), (40, 209, true));
        assert_eq!(h.long.map(|l| l.sysid), Some(42));
        let h = validate_page(&header(5, 2, 0x60_2000, 9), &expect(0x60_2000)).expect("short");
        assert_eq!((h.header_len(), h.version()), (24, Some(PgVersion::V15)));
    }

    #[test]
    fn rejects_each_broken_field() {
        let e = |b: Vec<u8>, at: u64| validate_page(&b, &expect(at)).expect_err("invalid");
        assert_eq!(e(vec![0; 8192], 0x60_2000), PageError::Zero);
        assert_eq!(e(vec![0; 10], 0x60_2000), PageError::Truncated { have: 10, need: 24 });
        assert_eq!(
            e(header(6, 1, 0x60_0000, 0)[..30].to_vec(), 0x60_0000),
            PageError::Truncated { have: 30, need: 40 }
        );
        let mut bad = header(0, 1, 0x60_2000, 0);
        bad[0] = 0x11;
        assert_eq!(e(bad, 0x60_2000), PageError::BadMagic(0xD111));
        assert_eq!(e(header(0x10, 1, 0x60_2000, 0), 0x60_2000), PageError::UnknownFlags(0x10));
        assert_eq!(e(header(0, 1, 0x60_0000, 0), 0x60_0000), PageError::MissingLongHeader(0));
        assert_eq!(e(header(2, 1, 0x60_2000, 0), 0x60_2000), PageError::MisplacedLongHeader(2));
        let found = 0x40_4000;
        assert_eq!(e(header(0, 1, found, 0), 0x70_4000), PageError::StalePageAddr { found, expected: 0x70_4000 });
        assert_eq!(e(header(0, 0, 0x60_2000, 0), 0x60_2000), PageError::TimelineRegressed { found: 0, previous: 1 });
        assert_eq!(e(header(0, 3, 0x60_2000, 0), 0x60_2000), PageError::TimelineTooHigh { found: 3, max: 2 });
        let mut other = expect(0x60_0000);
        other.sysid = Some(7);
        let err = validate_page(&header(2, 1, 0x60_0000, 0), &other).expect_err("sysid");
        assert_eq!(err, PageError::SysidMismatch { found: 42, expected: 7 });
        other.sysid = None;
        other.magic = Some(0xD113);
        let err = validate_page(&header(2, 1, 0x60_0000, 0), &other).expect_err("magic");
        assert_eq!(err, PageError::MagicChanged { found: 0xD110, expected: 0xD113 });
        let mut sizes = header(2, 1, 0x60_0000, 0);
        sizes[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        assert_eq!(e(sizes.clone(), 0x60_0000), PageError::SegSizeMismatch(16 << 20));
        sizes[32..36].copy_from_slice(&(1u32 << 20).to_le_bytes());
        sizes[36..40].copy_from_slice(&4096u32.to_le_bytes());
        assert_eq!(e(sizes, 0x60_0000), PageError::BlockSizeMismatch(4096));
    }

    #[test]
    fn magic_table_round_trips() {
        for v in [PgVersion::V13, PgVersion::V14, PgVersion::V15, PgVersion::V16, PgVersion::V17] {
            assert_eq!(PgVersion::from_magic(v.magic()), Some(v));
        }
        assert_eq!(PgVersion::from_magic(0xD101), None);
    }
}

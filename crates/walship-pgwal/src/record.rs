//! The WAL record header (`XLogRecord` in `xlogrecord.h`) and its CRC-32C
//! (`ValidXLogRecord` in `xlogreader.c`).
//!
//! Header, little-endian, 24 bytes:
//! `xl_tot_len u32 | xl_xid u32 | xl_prev u64 | xl_info u8 | xl_rmid u8 | pad 2 | xl_crc u32`.
//! `xl_tot_len` counts the header and everything after it, without padding.
//! The CRC is computed over the bytes after the header first, then over the
//! header up to (not including) `xl_crc`:
//! `INIT_CRC32C; COMP_CRC32C(body); COMP_CRC32C(header[..20]); FIN_CRC32C`.
use super::page::{u32_at, u64_at};

/// `SizeOfXLogRecord`.
pub const RECORD_HEADER_LEN: usize = 24;
/// Offset of `xl_crc` in the header.
pub const CRC_OFFSET: usize = 20;
/// `XLogRecordMaxSize` (PostgreSQL 16+; older versions write nothing larger).
pub const MAX_RECORD_LEN: u32 = 1020 * 1024 * 1024;
/// `RM_XLOG_ID`.
pub const RM_XLOG_ID: u8 = 0;
/// `XLOG_SWITCH` (the high four bits of `xl_info`).
pub const XLOG_SWITCH: u8 = 0x40;
/// `XLR_INFO_MASK`: the low bits of `xl_info` that belong to the WAL machinery.
pub const XLR_INFO_MASK: u8 = 0x0F;

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// `xl_tot_len`.
    pub tot_len: u32,
    /// `xl_xid`.
    pub xid: u32,
    /// `xl_prev`: start of the previous record.
    pub prev: u64,
    /// `xl_info`.
    pub info: u8,
    /// `xl_rmid`: the resource manager.
    pub rmid: u8,
    /// `xl_crc`.
    pub crc: u32,
}

impl RecordHeader {
    /// Decodes the first 24 bytes of `b`; `None` when there are fewer.
    pub fn parse(b: &[u8]) -> Option<RecordHeader> {
        if b.len() < RECORD_HEADER_LEN {
            return None;
        }
        Some(RecordHeader {
            tot_len: u32_at(b, 0),
            xid: u32_at(b, 4),
            prev: u64_at(b, 8),
            info: b[16],
            rmid: b[17],
            crc: u32_at(b, CRC_OFFSET),
        })
    }

    /// An `XLOG_SWITCH` record: the rest of its segment is padding.
    pub fn is_xlog_switch(&self) -> bool {
        self.rmid == RM_XLOG_ID && self.info & !XLR_INFO_MASK == XLOG_SWITCH
    }
}

/// A CRC-32C fed with a record's bytes in order, fragment by fragment (a
/// record may be spread over many pages), that sets the header aside so it
/// can be checksummed last, as PostgreSQL does.
#[derive(Clone, Debug, Default)]
pub struct RecordCrc {
    header: [u8; RECORD_HEADER_LEN],
    seen: usize,
    body_crc: u32,
}

impl RecordCrc {
    /// A fresh accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the record.
    pub fn update(&mut self, mut bytes: &[u8]) {
        if self.seen < RECORD_HEADER_LEN {
            let n = bytes.len().min(RECORD_HEADER_LEN - self.seen);
            self.header[self.seen..self.seen + n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.seen += n;
        }
        self.seen = self.seen.saturating_add(bytes.len());
        self.body_crc = crc32c::crc32c_append(self.body_crc, bytes);
    }

    /// The header, once all of it has been fed.
    pub fn header(&self) -> Option<RecordHeader> {
        (self.seen >= RECORD_HEADER_LEN).then(|| RecordHeader::parse(&self.header)).flatten()
    }

    /// The CRC over what was fed (body, then header up to `xl_crc`).
    pub fn value(&self) -> u32 {
        crc32c::crc32c_append(self.body_crc, &self.header[..CRC_OFFSET])
    }

    /// The header is complete and its `xl_crc` matches the computed CRC.
    pub fn matches(&self) -> bool {
        self.header().is_some_and(|h| h.crc == self.value())
    }
}

/// Checks the CRC of a record held contiguously in `record` (exactly
/// `xl_tot_len` bytes or more; the excess is ignored).
pub fn record_crc_ok(record: &[u8]) -> bool {
    let Some(h) = RecordHeader::parse(record) else { return false };
    let Some(whole) = record.get(..h.tot_len as usize) else { return false };
    if (h.tot_len as usize) < RECORD_HEADER_LEN {
        return false;
    }
    let mut crc = RecordCrc::new();
    crc.update(whole);
    crc.matches()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a record the way `XLogInsert` does: header, body, CRC.
    fn record(rmid: u8, info: u8, prev: u64, body: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; RECORD_HEADER_LEN];
        r[0..4].copy_from_slice(&((RECORD_HEADER_LEN + body.len()) as u32).to_le_bytes());
        r[4..8].copy_from_slice(&7u32.to_le_bytes());
        r[8..16].copy_from_slice(&prev.to_le_bytes());
        r[16] = info;
        r[17] = rmid;
        r.extend_from_slice(body);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&r[RECORD_HEADER_LEN..]), &r[..CRC_OFFSET]);
        r[20..24].copy_from_slice(&crc.to_le_bytes());
        r
    }

    #[test]
    fn crc_is_body_then_header_and_fragments_do_not_matter() {
        let r = record(10, 0x00, 0x60_0100, b"some heap tuple bytes");
        assert!(record_crc_ok(&r));
        for split in [1, 5, 20, 23, 24, 25, r.len() - 1] {
            let mut crc = RecordCrc::new();
            crc.update(&r[..split]);
            crc.update(&r[split..]);
            assert!(crc.matches(), "split at {split}");
        }
        let mut bad = r.clone();
        bad[30] ^= 1;
        assert!(!record_crc_ok(&bad));
        let mut bad = r;
        bad[9] ^= 1;
        assert!(!record_crc_ok(&bad));
        assert!(!record_crc_ok(&[0u8; 24]));
        assert!(!record_crc_ok(&[1u8; 10]));
    }

    #[test]
    fn recognises_xlog_switch() {
        let h = RecordHeader::parse(&record(RM_XLOG_ID, 0x40, 1, &[])).expect("header");
        assert!(h.is_xlog_switch());
        let h = RecordHeader::parse(&record(RM_XLOG_ID, 0x4F, 1, &[])).expect("header");
        assert!(h.is_xlog_switch(), "low info bits are not part of the type");
        let h = RecordHeader::parse(&record(RM_XLOG_ID, 0x50, 1, &[])).expect("header");
        assert!(!h.is_xlog_switch());
        let h = RecordHeader::parse(&record(1, 0x40, 1, &[])).expect("header");
        assert!(!h.is_xlog_switch());
    }
}

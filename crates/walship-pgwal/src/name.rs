//! WAL file names (`XLogFileName`, `IsXLogFileName`, `IsPartialXLogFileName`,
//! `IsTLHistoryFileName`, `IsBackupHistoryFileName` in `xlog_internal.h`).
//!
//! A segment is `TTTTTTTTXXXXXXXXYYYYYYYY`: 24 upper-case hex digits, the
//! timeline, then the segment number as `segno / segments_per_xlogid` and
//! `segno % segments_per_xlogid`, where `segments_per_xlogid` = 2³² / segment
//! size. Which segment a name denotes therefore depends on the segment size.
use std::fmt;

use super::WalGeometry;

/// A segment: timeline and segment number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgSegmentName {
    /// The timeline (`TTTTTTTT`), at least 1.
    pub timeline: u32,
    /// The segment number: LSN / segment size.
    pub segno: u64,
}

/// What a file in `pg_wal/` (or in a mirror of it) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WalFileName {
    /// A segment under its final name.
    Segment(PgSegmentName),
    /// `NAME.partial`: a segment that was not completed on this timeline.
    Partial(PgSegmentName),
    /// `TTTTTTTT.history`: the history of timeline `TTTTTTTT`.
    History(u32),
    /// `NAME.OOOOOOOO.backup`: a backup history file, with the start offset.
    Backup(PgSegmentName, u32),
}

fn hex8(s: &str) -> Option<u32> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

impl PgSegmentName {
    /// Parses a bare 24-character segment name; `None` for anything else
    /// (lower-case hex, a timeline of 0, a `YYYYYYYY` out of range for the
    /// segment size).
    pub fn parse(name: &str, geometry: WalGeometry) -> Option<PgSegmentName> {
        if name.len() != 24 || !name.is_ascii() {
            return None;
        }
        let timeline = hex8(&name[0..8])?;
        let log = u64::from(hex8(&name[8..16])?);
        let seg = u64::from(hex8(&name[16..24])?);
        let per = geometry.segments_per_xlogid();
        if timeline == 0 || seg >= per {
            return None;
        }
        Some(PgSegmentName { timeline, segno: log * per + seg })
    }

    /// The segment on `timeline` that holds `lsn`.
    pub fn containing(timeline: u32, lsn: u64, geometry: WalGeometry) -> PgSegmentName {
        PgSegmentName { timeline, segno: geometry.segno(lsn) }
    }

    /// The file name, `TTTTTTTTXXXXXXXXYYYYYYYY`.
    pub fn file_name(self, geometry: WalGeometry) -> String {
        let per = geometry.segments_per_xlogid();
        format!("{:08X}{:08X}{:08X}", self.timeline, self.segno / per, self.segno % per)
    }

    /// The LSN of the segment's first byte.
    pub fn start_lsn(self, geometry: WalGeometry) -> u64 {
        geometry.segment_start(self.segno)
    }

    /// The LSN of the first byte after the segment.
    pub fn end_lsn(self, geometry: WalGeometry) -> u64 {
        geometry.segment_start(self.segno.saturating_add(1))
    }
}

impl WalFileName {
    /// Recognises a WAL-directory file name (no directory part).
    pub fn parse(name: &str, geometry: WalGeometry) -> Option<WalFileName> {
        if let Some(seg) = name.strip_suffix(".partial") {
            return PgSegmentName::parse(seg, geometry).map(WalFileName::Partial);
        }
        if let Some(tli) = name.strip_suffix(".history") {
            return hex8(tli).filter(|t| *t != 0).map(WalFileName::History);
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (seg, off) = rest.split_once('.')?;
            return Some(WalFileName::Backup(PgSegmentName::parse(seg, geometry)?, hex8(off)?));
        }
        PgSegmentName::parse(name, geometry).map(WalFileName::Segment)
    }

    /// The file name again.
    pub fn file_name(self, geometry: WalGeometry) -> String {
        match self {
            WalFileName::Segment(s) => s.file_name(geometry),
            WalFileName::Partial(s) => format!("{}.partial", s.file_name(geometry)),
            WalFileName::History(t) => format!("{t:08X}.history"),
            WalFileName::Backup(s, off) => format!("{}.{off:08X}.backup", s.file_name(geometry)),
        }
    }

    /// The segment a segment, partial or backup file refers to.
    pub fn segment(self) -> Option<PgSegmentName> {
        match self {
            WalFileName::Segment(s) | WalFileName::Partial(s) | WalFileName::Backup(s, _) => Some(s),
            WalFileName::History(_) => None,
        }
    }
}

impl fmt::Display for PgSegmentName {
    /// Timeline and segment number; use [`PgSegmentName::file_name`] for the
    /// file name, which needs the segment size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timeline {} segment {}", self.timeline, self.segno)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(seg: u64) -> WalGeometry {
        WalGeometry::new(seg, 8192).expect("valid geometry")
    }

    #[test]
    fn round_trips_with_the_segment_size() {
        let n = PgSegmentName::parse("000000010000000000000007", g(1 << 20)).expect("name");
        assert_eq!(n, PgSegmentName { timeline: 1, segno: 7 });
        assert_eq!(n.start_lsn(g(1 << 20)), 0x70_0000);
        // 16 MiB: 256 segments per xlogid; 1 GiB: 4.
        let n = PgSegmentName::parse("0000000200000003000000FF", g(16 << 20)).expect("name");
        assert_eq!(n, PgSegmentName { timeline: 2, segno: 3 * 256 + 255 });
        assert_eq!(n.file_name(g(16 << 20)), "0000000200000003000000FF");
        assert_eq!(PgSegmentName::parse("000000010000000000000004", g(1 << 30)), None);
        let n = PgSegmentName::containing(1, 0x16_B374_D848, g(16 << 20));
        assert_eq!(n.file_name(g(16 << 20)), "0000000100000016000000B3");
        assert_eq!(n.end_lsn(g(16 << 20)), 0x16_B400_0000);
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "",
            "00000001000000000000000",
            "0000000100000000000000070",
            "00000001000000000000000d",
            "000000000000000000000007",
            "00000001000000000000000G",
            "000000010000000000000100",
        ] {
            assert_eq!(WalFileName::parse(bad, g(16 << 20)), None, "{bad:?}");
        }
    }

    #[test]
    fn recognises_partial_history_and_backup() {
        let geo = g(1 << 20);
        let seg = PgSegmentName { timeline: 1, segno: 8 };
        let cases = [
            ("000000010000000000000008.partial", WalFileName::Partial(seg)),
            ("00000002.history", WalFileName::History(2)),
            ("000000010000000000000008.00000028.backup", WalFileName::Backup(seg, 0x28)),
            ("000000010000000000000008", WalFileName::Segment(seg)),
        ];
        for (text, want) in cases {
            assert_eq!(WalFileName::parse(text, geo), Some(want), "{text}");
            assert_eq!(want.file_name(geo), text);
        }
        assert_eq!(WalFileName::parse("00000000.history", geo), None);
        assert_eq!(WalFileName::parse("0000002.history", geo), None);
        assert_eq!(WalFileName::History(2).segment(), None);
    }
}

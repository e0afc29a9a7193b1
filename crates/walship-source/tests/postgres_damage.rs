//! Damaged, truncated and rewritten copies of real segments: the valid end
//! stops before the first record that no longer checks, and never moves past
//! the unmodified one.
#[path = "postgres_common.rs"]
mod common;

use common::{expected, geometry, opts, read};
use proptest::prelude::*;
use walship_core::Position;
use walship_source::postgres::{
    PageError, Record, StopReason, ValidEnd, WalInput, WalkOptions, Walker, find_first_record, valid_end,
};

const SEG6: u64 = 0x60_0000;
const CONT6: &str = "contrecord/000000010000000000000006";
const CONT7: &str = "contrecord/000000010000000000000007";
const TAIL: &str = "tail-zero/00000001000000000000000B";
const TAIL_START: u64 = 0xB0_0000;

fn end_of(segs: &[&[u8]], start: u64, o: WalkOptions) -> ValidEnd {
    let input = WalInput::new(geometry(), start, segs);
    match find_first_record(input, start, o) {
        Ok(first) => valid_end(input, first.0, o),
        Err(stop) => ValidEnd { end: Position(start), next: Position(start), last_record: None, records: 0, stop },
    }
}

fn records(segs: &[&[u8]], start: u64) -> Vec<Record> {
    let input = WalInput::new(geometry(), start, segs);
    let first = find_first_record(input, start, WalkOptions::default()).expect("first record");
    Walker::new(input, first.0, WalkOptions::default()).collect()
}

#[test]
fn a_flipped_byte_inside_a_record_ends_the_wal_before_it() {
    let seg = read(TAIL);
    let recs = records(&[&seg], TAIL_START);
    let victim = recs.iter().skip(3000).find(|r| r.header.tot_len > 60).expect("a record with a body");
    let at = (victim.lsn.0 - TAIL_START) as usize;
    for (offset, want) in [
        (40, StopReason::BadCrc { stored: victim.header.crc, computed: 0 }),
        (9, StopReason::BadPrevLink { found: 0, expected: None }),
        (17, StopReason::BadCrc { stored: victim.header.crc, computed: 0 }),
    ] {
        let mut bad = seg.clone();
        bad[at + offset] ^= 0x20;
        let ve = end_of(&[&bad], TAIL_START, WalkOptions::default());
        assert_eq!(ve.end, victim.lsn, "flip at +{offset}: the previous record's end is the record's start");
        assert_eq!(ve.stop.at, victim.lsn);
        assert_eq!(std::mem::discriminant(&ve.stop.reason), std::mem::discriminant(&want), "{:?}", ve.stop);
    }
}

#[test]
fn damaged_continuation_pages_end_the_wal_before_the_long_record() {
    let (s6, s7) = (read(CONT6), read(CONT7));
    // Page 1 of …07 (0/702000): wrong xlp_rem_len, then no contrecord flag.
    let mut bad = s7.clone();
    bad[0x2000 + 16] ^= 1;
    let ve = end_of(&[&s6, &bad], SEG6, WalkOptions::default());
    assert_eq!(ve.end, Position(0x6F_A9C0));
    assert!(matches!(ve.stop.reason, StopReason::BadContrecordLength { found: 9878, expected: 9879 }), "{ve:?}");
    let mut bad = s7.clone();
    bad[0x2002] &= !1;
    let ve = end_of(&[&s6, &bad], SEG6, WalkOptions::default());
    assert_eq!((ve.end, ve.stop.reason), (Position(0x6F_A9C0), StopReason::NoContrecordFlag));
    // Another cluster's segment next: the long header's system identifier differs.
    let other = read("switch/000000010000000000000007");
    let ve = end_of(&[&s6, &other], SEG6, WalkOptions::default());
    assert_eq!(ve.end, Position(0x6F_A9C0));
    assert!(matches!(ve.stop.reason, StopReason::Page(PageError::SysidMismatch { .. })), "{ve:?}");
    // A timeline that goes down from one page to the next.
    let mut tl = read("timeline/000000020000000000000008");
    tl[12 * 8192 + 4] = 1;
    let ve = end_of(&[&tl], 0x80_0000, WalkOptions::default());
    assert_eq!(ve.stop.at, Position(0x81_8000));
    assert_eq!(ve.stop.reason, StopReason::Page(PageError::TimelineRegressed { found: 1, previous: 2 }));
}

#[test]
fn truncated_input_ends_at_the_last_complete_record() {
    let (s6, s7) = (read(CONT6), read(CONT7));
    let ve = end_of(&[&s6, &s7[..0x3000]], SEG6, WalkOptions::default());
    assert_eq!((ve.end, ve.stop.reason), (Position(0x6F_A9C0), StopReason::EndOfInput));
    assert_eq!(ve.stop.at, Position(0x70_3000));
    let ve = end_of(&[&s6, &s7[..0x46C8]], SEG6, WalkOptions::default());
    assert_eq!(ve.end.lsn().to_string(), "0/7046C8", "the long record is complete, the next is not");
    let seg = read(TAIL);
    let recs = records(&[&seg], TAIL_START);
    for cut in [0usize, 23, 39, 40, 41, 0x2000, 0x2017, 0x5_0000 + 13, 0x7_0000] {
        let ve = end_of(&[&seg[..cut]], TAIL_START, WalkOptions::default());
        let want = recs.iter().rev().map(|r| r.end).find(|e| e.0 - TAIL_START <= cut as u64);
        if let Some(want) = want {
            assert_eq!(ve.end, want, "cut at {cut:#x}");
        }
        assert_eq!(ve.stop.reason, StopReason::EndOfInput, "cut at {cut:#x}");
    }
}

/// Crash recovery abandoned the record at 0/6FA9C0 and wrote an
/// `XLOG_OVERWRITE_CONTRECORD` record where its continuation should have
/// been, flagging the page `XLP_FIRST_IS_OVERWRITE_CONTRECORD`.
#[test]
fn an_overwrite_contrecord_page_restarts_the_read() {
    let (s6, s7) = (read(CONT6), read(CONT7));
    let mut s7 = s7;
    s7[2..4].copy_from_slice(&0x000Au16.to_le_bytes());
    s7[16..20].copy_from_slice(&0u32.to_le_bytes());
    s7[40..0x2000].fill(0);
    let mut rec = vec![0u8; 24];
    rec[0..4].copy_from_slice(&40u32.to_le_bytes());
    rec[8..16].copy_from_slice(&0x6F_A998u64.to_le_bytes());
    rec[16] = 0xD0;
    rec.extend_from_slice(&[0xFF, 14, 0xC0, 0xA9, 0x6F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&rec[24..]), &rec[..20]);
    rec[20..24].copy_from_slice(&crc.to_le_bytes());
    s7[40..80].copy_from_slice(&rec);
    let segs: [&[u8]; 2] = [&s6, &s7];
    let input = WalInput::new(geometry(), SEG6, &segs);
    let first = find_first_record(input, SEG6, WalkOptions::default()).expect("first");
    let mut w = Walker::new(input, first.0, WalkOptions::default());
    let last = w.by_ref().last().expect("records");
    assert_eq!(w.overwritten_record(), Some(Position(0x6F_A9C0)));
    assert_eq!((last.lsn, last.end, last.header.rmid), (Position(0x70_0028), Position(0x70_0050), 0));
    assert_eq!(w.stop().map(|s| s.reason), Some(StopReason::InvalidRecordLength(0)));
}

fn baseline() -> &'static (Vec<u8>, Vec<u8>, ValidEnd) {
    static BASE: std::sync::OnceLock<(Vec<u8>, Vec<u8>, ValidEnd)> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let (s6, s7) = (read(CONT6), read(CONT7));
        let ve = end_of(&[&s6, &s7], SEG6, opts(&expected(), "contrecord"));
        assert_eq!(ve.end.lsn().to_string(), "0/704788");
        (s6, s7, ve)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random truncations and byte flips never panic and never move the
    /// valid end past the unmodified one.
    #[test]
    fn damage_never_extends_the_valid_end(
        cut6 in prop_oneof![Just(1usize << 20), 0usize..=1 << 20],
        cut7 in prop_oneof![Just(1usize << 20), 0usize..0x8000, 0usize..=1 << 20],
        flips in proptest::collection::vec((0usize..(2 << 20), 1u8..=255), 0..6),
        near_end in proptest::collection::vec((0usize..0x6000, 1u8..=255), 0..3),
    ) {
        let (s6, s7, base) = baseline();
        let (mut s6, mut s7) = (s6.clone(), s7.clone());
        for (at, x) in flips {
            if at < 1 << 20 { s6[at] ^= x } else { s7[at - (1 << 20)] ^= x }
        }
        for (at, x) in near_end {
            s7[at] ^= x;
        }
        let segs: [&[u8]; 2] = [&s6[..cut6], &s7[..cut7]];
        let ve = end_of(&segs, SEG6, WalkOptions::default());
        prop_assert!(ve.end <= base.end, "{:?} beyond {:?}", ve, base);
        prop_assert!(ve.next <= base.next.max(base.end));
    }
}

//! Recovery on open ("discard past durable") and control-file integrity,
//! with crashes simulated by dropping the mirror or editing its files.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;

use common::*;
use walship_core::Position;
use walship_store::{Mirror, StoreError};

fn append(path: &std::path::Path, data: &[u8]) {
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(data).unwrap();
}

#[test]
fn unflushed_bytes_are_discarded_and_durable_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&raw("src")).unwrap();
    m.start_segment(&name("a"), Position(0)).unwrap();
    m.write(Position(0), &bytes(0, 100)).unwrap();
    m.flush().unwrap();
    m.write(Position(100), &bytes(100, 37)).unwrap();
    drop(m); // crash: the unflushed 37 bytes are in the file but not recorded

    let (m, report) = reopen(tmp.path());
    assert_eq!(report.durable_pos, Position(100));
    assert_eq!(report.discarded_bytes, 37);
    assert!(report.actions.iter().any(|a| a.contains("truncated") && a.contains("a.partial")), "{report:?}");
    assert_eq!((m.written_pos(), m.durable_pos()), (Position(100), Position(100)));
    assert_eq!(read(tmp.path(), "a.partial"), bytes(0, 100));
}

#[test]
fn garbage_past_the_durable_point_is_cut_and_writing_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&raw("src")).unwrap();
    m.start_segment(&name("a"), Position(10)).unwrap();
    m.write(Position(10), b"good").unwrap();
    m.flush().unwrap();
    drop(m);
    append(&tmp.path().join("a.partial"), b"torn-garbage");

    let (mut m, report) = reopen(tmp.path());
    assert_eq!(report.discarded_bytes, 12);
    assert_eq!(read(tmp.path(), "a.partial"), b"good");
    m.write(Position(14), b"more").unwrap();
    m.complete_segment(Position(18)).unwrap();
    assert_eq!(read(tmp.path(), "a"), b"goodmore");
    let (_, crc) = m.checksum_before(8).unwrap();
    assert_eq!(crc, crc32fast::hash(b"goodmore"));
}

#[test]
fn rename_done_but_control_not_updated_is_undone() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&raw("src")).unwrap();
    m.start_segment(&name("a"), Position(0)).unwrap();
    m.write(Position(0), b"0123").unwrap();
    m.flush().unwrap();
    m.write(Position(4), b"4567").unwrap();
    drop(m);
    // The crash came after complete_segment's rename, before its control update.
    std::fs::rename(tmp.path().join("a.partial"), tmp.path().join("a")).unwrap();

    let (mut m, report) = reopen(tmp.path());
    assert!(report.actions.iter().any(|a| a.contains("renamed")), "{report:?}");
    assert_eq!(report.discarded_bytes, 4);
    assert_eq!(files(tmp.path()), ["a.partial", "walship.control", "walship.lock", "walship.pos"]);
    assert_eq!(read(tmp.path(), "a.partial"), b"0123");
    let seg = m.resume_point().segment.unwrap();
    assert_eq!((seg.name.as_str(), seg.complete), ("a", false));
    m.write(Position(4), b"4567").unwrap();
    m.complete_segment(Position(8)).unwrap();
    assert_eq!(read(tmp.path(), "a"), b"01234567");
}

#[test]
fn orphan_partials_and_leftover_tmp_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&raw("src")).unwrap();
    m.start_segment(&name("a"), Position(0)).unwrap();
    m.write(Position(0), b"aaaa").unwrap();
    m.complete_segment(Position(4)).unwrap();
    m.start_segment(&name("b"), Position(4)).unwrap(); // not yet in the control file
    m.write(Position(4), b"bb").unwrap();
    drop(m);
    std::fs::write(tmp.path().join("stray.partial"), b"xyz").unwrap();
    std::fs::write(tmp.path().join("walship.control.tmp"), b"half-written").unwrap();

    let (m, report) = reopen(tmp.path());
    assert_eq!(files(tmp.path()), ["a", "walship.control", "walship.lock", "walship.pos"]);
    assert_eq!(report.discarded_bytes, 5);
    assert!(report.actions.iter().any(|a| a.contains("walship.control.tmp")), "{report:?}");
    assert!(report.actions.iter().any(|a| a.contains("b.partial")), "{report:?}");
    assert_eq!(m.durable_pos(), Position(4));
    let seg = m.resume_point().segment.unwrap();
    assert_eq!((seg.name.as_str(), seg.complete), ("a", true));
}

#[test]
fn corrupt_or_truncated_control_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&raw("src")).unwrap();
    m.next_epoch().unwrap();
    drop(m);
    let ctl = tmp.path().join("walship.control");
    let good = std::fs::read(&ctl).unwrap();

    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x40;
    std::fs::write(&ctl, &flipped).unwrap();
    let err = Mirror::open(tmp.path()).unwrap_err();
    assert!(matches!(err, StoreError::CorruptControl { .. }), "{err}");
    assert!(err.to_string().contains("walship.control") && err.to_string().contains("checksum"), "{err}");

    std::fs::write(&ctl, &good[..good.len() - 3]).unwrap();
    let err = Mirror::open(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("walship.control") && err.to_string().contains("truncated"), "{err}");

    std::fs::write(&ctl, &good[..5]).unwrap();
    let err = Mirror::open(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("walship.control") && err.to_string().contains("truncated"), "{err}");

    std::fs::write(&ctl, &good).unwrap();
    assert_eq!(open(tmp.path()).epoch(), 1, "the file itself was not reset");
}

#[test]
fn segment_files_without_a_control_file_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("000000010000000000000001"), b"wal").unwrap();
    let err = Mirror::open(tmp.path()).unwrap_err();
    assert!(matches!(err, StoreError::MissingControl { .. }), "{err}");
    assert!(err.to_string().contains("000000010000000000000001"), "{err}");
}

#[test]
fn missing_or_short_current_segment_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&raw("src")).unwrap();
    m.start_segment(&name("a"), Position(0)).unwrap();
    m.write(Position(0), b"durable").unwrap();
    m.flush().unwrap();
    drop(m);
    let partial = tmp.path().join("a.partial");
    std::fs::write(&partial, b"dur").unwrap();
    let err = Mirror::open(tmp.path()).unwrap_err();
    assert!(matches!(err, StoreError::Inconsistent { .. }) && err.to_string().contains("a.partial"), "{err}");
    std::fs::remove_file(&partial).unwrap();
    let err = Mirror::open(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn fixed_size_partial_is_full_size_zero_padded_and_rezeroed_on_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&fixed(256)).unwrap();
    m.start_segment(&name("000000010000000000000001"), Position(256)).unwrap();
    let p = "000000010000000000000001.partial";
    assert_eq!(read(tmp.path(), p), vec![0u8; 256]);
    m.write(Position(256), &[0xAA; 100]).unwrap();
    m.flush().unwrap();
    m.write(Position(356), &[0xBB; 50]).unwrap();
    let err = m.write(Position(406), &[0xCC; 107]).unwrap_err();
    assert!(matches!(err, StoreError::DoesNotFit { end: Position(512), .. }), "{err}");
    drop(m); // crash with 50 unflushed bytes

    let (mut m, report) = reopen(tmp.path());
    assert_eq!(report.discarded_bytes, 50);
    let mut expect = vec![0xAA; 100];
    expect.resize(256, 0);
    assert_eq!(read(tmp.path(), p), expect, "full size kept, zeroed past the durable point");
    assert_eq!(m.written_pos(), Position(356));

    m.write(Position(356), &[0xCC; 156]).unwrap();
    m.complete_segment(Position(512)).unwrap();
    let whole = read(tmp.path(), "000000010000000000000001");
    assert_eq!(whole.len(), 256);
    assert_eq!(&whole[100..], &[0xCC; 156][..]);
    let state = walship_store::control::load(tmp.path()).unwrap().unwrap();
    assert_eq!(state.segments[0].crc32, Some(crc32fast::hash(&whole)));
}

#[test]
fn a_timeline_switch_inside_a_fixed_size_segment_keeps_both_files_as_postgresql_does() {
    // Segment 2 of timeline 1 ends at 600 (its timeline ended there); timeline 2's segment 2
    // starts at 600, inside the same file range [512, 768), and begins with those 88 bytes.
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&fixed(256)).unwrap();
    let (tl1, tl2) = (name("000000010000000000000002"), name("000000020000000000000002"));
    m.start_segment(&tl1, Position(512)).unwrap();
    m.write(Position(512), &[0x11; 88]).unwrap();
    m.complete_segment(Position(600)).unwrap();
    let mut old = vec![0x11; 88];
    old.resize(256, 0);
    assert_eq!(read(tmp.path(), "000000010000000000000002.partial"), old, "short: keeps .partial, full size");
    assert!(!tmp.path().join("000000010000000000000002").exists());
    // Not right after it, or in another file range: refused.
    assert!(matches!(m.start_segment(&tl2, Position(601)), Err(StoreError::SegmentStart { .. })));
    m.start_segment(&tl2, Position(600)).unwrap();
    m.write(Position(600), &[0x22; 40]).unwrap();
    m.flush().unwrap();
    m.write(Position(640), &[0x33; 10]).unwrap();
    drop(m); // crash with 10 unflushed bytes

    let (mut m, report) = reopen(tmp.path());
    assert_eq!(report.durable_pos, Position(640));
    assert!(tmp.path().join("000000010000000000000002.partial").exists(), "recovery keeps the short segment");
    let mut new = vec![0x11; 88];
    new.extend_from_slice(&[0x22; 40]);
    new.resize(256, 0);
    assert_eq!(read(tmp.path(), "000000020000000000000002.partial"), new, "inherited head, own bytes, zeros");
    let (from, crc) = m.checksum_before(1000).unwrap();
    assert_eq!((from, crc), (Position(600), crc32fast::hash(&[0x22; 40])), "the checksum covers its own bytes");
    m.write(Position(640), &[0x44; 128]).unwrap();
    m.complete_segment(Position(768)).unwrap();
    let whole = read(tmp.path(), "000000020000000000000002");
    assert_eq!(&whole[..88], &[0x11; 88][..]);
    assert_eq!(&whole[128..], &[0x44; 128][..]);
    // A mid-file start with nothing before it cannot be filled in.
    let tmp2 = tempfile::tempdir().unwrap();
    let mut m2 = open(tmp2.path());
    m2.bind(&fixed(256)).unwrap();
    assert!(matches!(m2.start_segment(&tl2, Position(600)), Err(StoreError::MidFileStart { .. })));
}

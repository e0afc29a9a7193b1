//! Failpoint tests: ENOSPC injected into named operations (see `fsio::failpoints`),
//! checking that a failure never advances a position past what is on disk and
//! that the documented retry (same position, or resend from durable) works.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use walship_core::{Position, SegmentName};

use crate::fsio::failpoints::arm;
use crate::{Identity, Mirror, StoreError};

fn raw() -> Identity {
    Identity { source_id: "src".into(), format: "raw".into(), segment_size: 0 }
}

fn name(s: &str) -> SegmentName {
    SegmentName::new(s).unwrap()
}

fn open(dir: &Path) -> Mirror {
    Mirror::open(dir).unwrap().0
}

fn is_enospc(e: &StoreError, op: &str) -> bool {
    matches!(e, StoreError::Io { op: o, source, .. } if *o == op && source.raw_os_error() == Some(libc::ENOSPC))
}

#[test]
fn failed_pwrite_keeps_written_pos_and_trims_the_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&raw()).unwrap();
    m.start_segment(&name("s1"), Position(100)).unwrap();
    m.write(Position(100), b"hello").unwrap();
    m.flush().unwrap();

    arm("pwrite");
    let err = m.write(Position(105), b"world!").unwrap_err();
    assert!(is_enospc(&err, "pwrite"), "{err}");
    assert!(err.to_string().contains("s1.partial"), "{err}");
    assert_eq!(m.written_pos(), Position(105));
    // Half of the bytes landed before the failure; they must be gone again.
    assert_eq!(std::fs::read(tmp.path().join("s1.partial")).unwrap(), b"hello");

    m.write(Position(105), b"world!").unwrap();
    assert_eq!(m.flush().unwrap(), Position(111));
    drop(m);
    let m = open(tmp.path());
    assert_eq!(m.durable_pos(), Position(111));
    assert_eq!(std::fs::read(tmp.path().join("s1.partial")).unwrap(), b"helloworld!");
}

#[test]
fn a_frame_in_chunks_is_written_whole_or_not_at_all() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&Identity { segment_size: 16, ..raw() }).unwrap();
    m.start_segment(&name("s1"), Position(0)).unwrap();
    m.write_chunks(Position(0), &[&b"hel"[..], b"", b"lo"]).unwrap();
    assert_eq!(m.written_pos(), Position(5));
    // Checked as one: the last chunk would not fit, so none is written.
    let err = m.write_chunks(Position(5), &[&[1u8; 8][..], &[2u8; 4]]).unwrap_err();
    assert!(matches!(err, StoreError::DoesNotFit { len: 12, .. }), "{err}");
    assert_eq!(m.written_pos(), Position(5));
    // A failed write puts every chunk's bytes back.
    arm("pwrite");
    assert!(m.write_chunks(Position(5), &[&b"wor"[..], b"ld"]).is_err());
    assert_eq!(m.written_pos(), Position(5));
    m.write_chunks(Position(5), &[&b"wor"[..], b"ld"]).unwrap();
    assert_eq!(m.flush().unwrap(), Position(10));
    let mut want = b"helloworld".to_vec();
    want.resize(16, 0);
    assert_eq!(std::fs::read(tmp.path().join("s1.partial")).unwrap(), want);
}

#[test]
fn failed_pwrite_in_fixed_segment_rezeroes_the_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&Identity { segment_size: 64, ..raw() }).unwrap();
    m.start_segment(&name("s1"), Position(0)).unwrap();
    arm("pwrite");
    assert!(m.write(Position(0), &[7u8; 10]).is_err());
    assert_eq!(m.written_pos(), Position(0));
    assert_eq!(std::fs::read(tmp.path().join("s1.partial")).unwrap(), vec![0u8; 64]);
}

#[test]
fn failed_fdatasync_discards_unflushed_and_resend_from_durable_works() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&raw()).unwrap();
    m.start_segment(&name("s1"), Position(0)).unwrap();
    m.write(Position(0), b"aaaa").unwrap();
    m.flush().unwrap();
    m.write(Position(4), b"bbbb").unwrap();

    arm("fdatasync");
    let err = m.flush().unwrap_err();
    assert!(is_enospc(&err, "fdatasync"), "{err}");
    assert_eq!(m.durable_pos(), Position(4));
    assert_eq!(m.written_pos(), Position(4), "unsynced bytes cannot be trusted after a failed fsync");
    assert_eq!(m.unflushed_bytes(), 0);

    // The sender resends from the durable position.
    m.write(m.durable_pos(), b"BBBB").unwrap();
    m.complete_segment(Position(8)).unwrap();
    drop(m);
    let m = open(tmp.path());
    assert_eq!(m.durable_pos(), Position(8));
    assert_eq!(std::fs::read(tmp.path().join("s1")).unwrap(), b"aaaaBBBB");
    let (_, crc) = m.checksum_before(8).unwrap();
    assert_eq!(crc, crc32fast::hash(b"aaaaBBBB"), "segment crc follows the rewritten bytes");
}

#[test]
fn failed_control_write_keeps_durable_and_flush_can_be_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&raw()).unwrap();
    m.start_segment(&name("s1"), Position(0)).unwrap();
    m.write(Position(0), b"abc").unwrap();
    // Inside a segment a flush records the position in walship.pos.
    arm("write pos");
    let err = m.flush().unwrap_err();
    assert!(is_enospc(&err, "write"), "pos: {err}");
    assert_eq!((m.durable_pos(), m.written_pos()), (Position(0), Position(3)));
    assert_eq!(m.flush().unwrap(), Position(3));
    // A new segment changes the table, so that flush replaces the control file.
    m.complete_segment(Position(3)).unwrap();
    m.start_segment(&name("s2"), Position(3)).unwrap();
    m.write(Position(3), b"de").unwrap();
    for (point, op) in [("write control", "write"), ("rename", "rename"), ("fsync dir", "fsync dir")] {
        arm(point);
        let err = m.flush().unwrap_err();
        assert!(is_enospc(&err, op), "{op}: {err}");
        assert_eq!(m.durable_pos(), Position(3), "{op}");
        assert_eq!(m.written_pos(), Position(5), "{op}");
    }
    assert_eq!(m.flush().unwrap(), Position(5));
    drop(m);
    assert_eq!(open(tmp.path()).durable_pos(), Position(5));
}

#[test]
fn failure_after_rename_poisons_and_reopen_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&raw()).unwrap();
    m.start_segment(&name("s1"), Position(0)).unwrap();
    m.write(Position(0), b"0123").unwrap();
    m.flush().unwrap();
    m.write(Position(4), b"4567").unwrap();

    arm("write control");
    let err = m.complete_segment(Position(8)).unwrap_err();
    assert!(is_enospc(&err, "write"), "{err}");
    assert!(tmp.path().join("s1").exists());
    let again = m.write(Position(8), b"x").unwrap_err();
    assert!(matches!(again, StoreError::Poisoned(_)), "{again}");
    drop(m);

    let (mut m, report) = Mirror::open(tmp.path()).unwrap();
    assert!(report.actions.iter().any(|a| a.contains("renamed")), "{report:?}");
    assert_eq!(m.durable_pos(), Position(4));
    let resume = m.resume_point().segment.unwrap();
    assert!(!resume.complete);
    assert_eq!(std::fs::read(tmp.path().join("s1.partial")).unwrap(), b"0123");
    m.write(Position(4), b"4567").unwrap();
    m.complete_segment(Position(8)).unwrap();
    assert_eq!(std::fs::read(tmp.path().join("s1")).unwrap(), b"01234567");
}

#[test]
fn failed_start_segment_and_epoch_leave_no_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&raw()).unwrap();
    arm("rename");
    assert!(m.next_epoch().is_err());
    assert_eq!(m.epoch(), 0);
    assert_eq!(m.next_epoch().unwrap(), 1);

    arm("create");
    assert!(m.start_segment(&name("s1"), Position(0)).is_err());
    assert!(m.resume_point().segment.is_none());
    m.start_segment(&name("s1"), Position(0)).unwrap();
    m.write(Position(0), b"z").unwrap();
    assert_eq!(m.flush().unwrap(), Position(1));
}

#[test]
fn a_second_process_cannot_open_a_mirror_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(dir.path());
    let err = Mirror::open(dir.path()).expect_err("locked");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use by another process"), "{err}");
    drop(first);
    Mirror::open(dir.path()).expect("free again once the first is closed");
}

#[test]
fn read_durable_sees_position_only_flushes_while_the_mirror_is_open() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    assert_eq!(crate::read_durable(tmp.path()).unwrap(), Position(0));
    m.bind(&raw()).unwrap();
    m.start_segment(&name("s1"), Position(100)).unwrap();
    m.write(Position(100), b"abcdef").unwrap();
    assert_eq!(crate::read_durable(tmp.path()).unwrap(), Position(100), "written is not durable");
    m.flush().unwrap();
    assert_eq!(crate::read_durable(tmp.path()).unwrap(), Position(106));
    m.complete_segment(Position(106)).unwrap();
    m.start_segment(&name("s2"), Position(106)).unwrap();
    // A stale walship.pos record of s1 must not be applied to s2.
    assert_eq!(crate::read_durable(tmp.path()).unwrap(), Position(106));
}

#[test]
fn side_files_are_written_once_and_never_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&raw()).unwrap();
    m.start_segment(&name("s1"), Position(0)).unwrap();
    let hist = name("00000002.history");
    m.write_file(&hist, b"1\t0/815D20\tx\n").unwrap();
    assert_eq!(std::fs::read(tmp.path().join("00000002.history")).unwrap(), b"1\t0/815D20\tx\n");
    m.write_file(&hist, b"1\t0/815D20\tx\n").unwrap();
    let err = m.write_file(&hist, b"1\t0/999999\ty\n").unwrap_err();
    assert!(matches!(err, StoreError::FileConflict { .. }), "{err}");
    assert_eq!(std::fs::read(tmp.path().join("00000002.history")).unwrap(), b"1\t0/815D20\tx\n", "kept");
    assert!(matches!(m.write_file(&name("s1"), b"x").unwrap_err(), StoreError::SegmentExists { .. }));
    assert!(matches!(m.write_file(&name("walship.control"), b"x").unwrap_err(), StoreError::ReservedName(_)));
    assert!(!tmp.path().join(".00000002.history.tmp").exists(), "no temp file left behind");
    // Nothing of this moved a position, and the mirror reopens fine with the file in it.
    m.write(Position(0), b"abc").unwrap();
    m.flush().unwrap();
    drop(m);
    let m = open(tmp.path());
    assert_eq!(m.durable_pos(), Position(3));
}

#[test]
fn a_write_past_the_largest_position_is_refused_and_overwrites_nothing() {
    // Found by the receiver_session fuzz target: positions saturate, so a
    // write that would wrap used to land on bytes already acknowledged.
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&raw()).unwrap();
    let top = Position(u64::MAX - 4);
    m.start_segment(&name("top"), top).unwrap();
    m.write(top, b"AAA").unwrap();
    m.flush().unwrap();
    let err = m.write(top.add(3), b"BB").unwrap_err();
    assert!(matches!(err, StoreError::PastEnd { .. }), "{err}");
    assert_eq!(m.written_pos(), top.add(3));
    assert_eq!(std::fs::read(tmp.path().join("top.partial")).unwrap(), b"AAA");
}

//! The write path against real files: round trip, binding, epochs, contiguity
//! rules, checksums, the bounded segment table.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;
use walship_core::Position;
use walship_store::{StoreError, control};

#[test]
fn write_flush_complete_reopen_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mirror"); // created by open
    let (mut m, report) = walship_store::Mirror::open(&dir).unwrap();
    assert_eq!(report.durable_pos, Position(0));
    assert!(report.actions.is_empty());
    m.bind(&raw("db-1")).unwrap();
    assert_eq!(m.next_epoch().unwrap(), 1);

    let s1 = bytes(1000, 3000);
    m.start_segment(&name("seg1"), Position(1000)).unwrap();
    assert_eq!((m.written_pos(), m.durable_pos()), (Position(1000), Position(1000)));
    m.write(Position(1000), &s1[..1200]).unwrap();
    assert_eq!(m.written_pos(), Position(2200));
    assert_eq!(m.durable_pos(), Position(1000), "a write is not durable until flushed");
    assert_eq!(m.unflushed_bytes(), 1200);
    assert_eq!(m.flush().unwrap(), Position(2200));
    assert_eq!(m.unflushed_bytes(), 0);
    m.write(Position(2200), &s1[1200..]).unwrap();
    m.complete_segment(Position(4000)).unwrap();
    assert_eq!(m.durable_pos(), Position(4000));

    let s2 = bytes(4000, 500);
    m.start_segment(&name("seg2"), Position(4000)).unwrap();
    m.write(Position(4000), &s2).unwrap();
    m.flush().unwrap();
    drop(m);

    let (m, report) = reopen(&dir);
    assert!(report.actions.is_empty(), "{:?}", report.actions);
    assert_eq!(report.discarded_bytes, 0);
    assert_eq!(m.identity(), Some(&raw("db-1")));
    assert_eq!(m.epoch(), 1);
    assert_eq!(m.durable_pos(), Position(4500));
    assert_eq!(m.written_pos(), Position(4500));
    let seg = m.resume_point().segment.unwrap();
    assert_eq!((seg.name.as_str(), seg.start, seg.complete), ("seg2", Position(4000), false));
    assert_eq!(files(&dir), ["seg1", "seg2.partial", "walship.control", "walship.lock", "walship.pos"]);
    assert_eq!(read(&dir, "seg1"), s1);
    assert_eq!(read(&dir, "seg2.partial"), s2);

    let state = control::load(&dir).unwrap().unwrap();
    assert_eq!(state.durable_pos, 4500);
    assert_eq!(state.epoch, 1);
    assert_eq!(state.segments.len(), 2);
    assert_eq!(state.segments[0].end, Some(4000));
    assert_eq!(state.segments[0].crc32, Some(crc32fast::hash(&s1)));
    assert_eq!((state.segments[1].start, state.segments[1].end), (4000, None));
}

#[test]
fn bind_refuses_another_source_and_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    assert!(m.identity().is_none());
    m.bind(&raw("alpha")).unwrap();
    m.bind(&raw("alpha")).unwrap();
    let err = m.bind(&raw("beta")).unwrap_err();
    assert!(matches!(err, StoreError::SourceMismatch { .. }));
    let msg = err.to_string();
    assert!(msg.contains("alpha") && msg.contains("beta"), "{msg}");
    drop(m);

    let mut m = open(tmp.path());
    assert_eq!(m.identity().map(|i| i.source_id.as_str()), Some("alpha"));
    assert!(matches!(m.bind(&raw("beta")), Err(StoreError::SourceMismatch { .. })));
    let other_format = walship_store::Identity { format: "postgres".into(), ..raw("alpha") };
    assert!(matches!(m.bind(&other_format), Err(StoreError::FormatMismatch { .. })));
    let other_size = walship_store::Identity { segment_size: 16, ..raw("alpha") };
    assert!(matches!(m.bind(&other_size), Err(StoreError::SegmentSizeMismatch { .. })));
    m.bind(&raw("alpha")).unwrap();
}

#[test]
fn epochs_increase_across_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    assert_eq!(m.epoch(), 0);
    assert_eq!(m.next_epoch().unwrap(), 1);
    assert_eq!(m.next_epoch().unwrap(), 2);
    drop(m);
    let mut m = open(tmp.path());
    assert_eq!(m.epoch(), 2);
    assert_eq!(m.next_epoch().unwrap(), 3);
    drop(m);
    assert_eq!(open(tmp.path()).epoch(), 3);
}

#[test]
fn contiguity_is_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    assert!(matches!(m.start_segment(&name("a"), Position(0)), Err(StoreError::Unbound)));
    m.bind(&raw("src")).unwrap();
    assert!(matches!(m.write(Position(0), b"x"), Err(StoreError::NoOpenSegment { .. })));
    assert!(matches!(m.complete_segment(Position(0)), Err(StoreError::NothingToComplete { .. })));
    assert!(matches!(m.start_segment(&name("walship.control"), Position(0)), Err(StoreError::ReservedName(_))));

    m.start_segment(&name("a"), Position(50)).unwrap();
    m.write(Position(50), b"12345").unwrap();
    let err = m.write(Position(60), b"x").unwrap_err();
    assert!(matches!(err, StoreError::OutOfOrder { expected: Position(55), got: Position(60) }));
    assert!(err.to_string().contains("expects position 55"), "{err}");
    assert!(matches!(m.write(Position(50), b"x"), Err(StoreError::OutOfOrder { .. })), "no rewrite behind");
    assert_eq!(m.written_pos(), Position(55));

    let err = m.start_segment(&name("b"), Position(55)).unwrap_err();
    assert!(matches!(err, StoreError::SegmentInProgress { .. }), "{err}");
    assert!(err.to_string().contains('a') && err.to_string().contains('b'));
    assert!(matches!(m.complete_segment(Position(54)), Err(StoreError::SegmentEnd { .. })));
    m.complete_segment(Position(55)).unwrap();

    let err = m.start_segment(&name("b"), Position(56)).unwrap_err();
    assert!(matches!(err, StoreError::SegmentStart { expected: Position(55), got: Position(56), .. }), "{err}");
    assert!(err.to_string().contains("55"), "{err}");
    assert!(matches!(m.start_segment(&name("a"), Position(55)), Err(StoreError::SegmentExists { .. })));
    m.start_segment(&name("b"), Position(55)).unwrap();
    m.write(Position(55), b"6").unwrap();
    assert_eq!(m.flush().unwrap(), Position(56));
}

#[test]
fn checksum_before_covers_exactly_the_window() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    assert_eq!(m.checksum_before(100).unwrap(), (Position(0), 0), "empty mirror");
    m.bind(&raw("src")).unwrap();
    let data = bytes(1000, 400);
    m.start_segment(&name("a"), Position(1000)).unwrap();
    m.write(Position(1000), &data[..300]).unwrap();
    assert_eq!(m.checksum_before(50).unwrap(), (Position(1000), 0), "nothing durable yet");
    m.flush().unwrap();
    m.write(Position(1300), &data[300..]).unwrap(); // unflushed: not covered

    assert_eq!(m.checksum_before(100).unwrap(), (Position(1200), crc32fast::hash(&data[200..300])));
    assert_eq!(m.checksum_before(1).unwrap(), (Position(1299), crc32fast::hash(&data[299..300])));
    assert_eq!(m.checksum_before(10_000).unwrap(), (Position(1000), crc32fast::hash(&data[..300])), "clamped");
    assert_eq!(m.checksum_before(0).unwrap(), (Position(1300), 0));

    m.complete_segment(Position(1400)).unwrap();
    assert_eq!(m.checksum_before(64).unwrap(), (Position(1336), crc32fast::hash(&data[336..])));
    drop(m);
    let m = open(tmp.path());
    assert_eq!(m.checksum_before(64).unwrap(), (Position(1336), crc32fast::hash(&data[336..])), "after reopen");
}

#[test]
fn flush_with_nothing_unflushed_does_not_touch_the_control_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&raw("src")).unwrap();
    m.start_segment(&name("a"), Position(0)).unwrap();
    m.write(Position(0), b"abc").unwrap();
    m.flush().unwrap();
    let ino = |p: &std::path::Path| std::fs::metadata(p.join("walship.control")).unwrap().ino();
    let before = ino(tmp.path());
    assert_eq!(m.flush().unwrap(), Position(3));
    assert_eq!(ino(tmp.path()), before, "a no-op flush must not replace the control file");
    // A flush inside the segment records the position in walship.pos only.
    m.write(Position(3), b"d").unwrap();
    assert_eq!(m.flush().unwrap(), Position(4));
    assert_eq!(ino(tmp.path()), before, "a position-only flush leaves the control file alone");
    drop(m);
    assert_eq!(open(tmp.path()).durable_pos(), Position(4), "recovery reads the position from walship.pos");
}

#[test]
fn segment_table_keeps_the_current_and_64_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&raw("src")).unwrap();
    let mut pos = Position(0);
    for i in 0..70u64 {
        m.start_segment(&name(&format!("{i:04}")), pos).unwrap();
        m.write(pos, &bytes(pos.0, 3)).unwrap();
        pos = pos.add(3);
        m.complete_segment(pos).unwrap();
    }
    m.start_segment(&name("0070"), pos).unwrap();
    m.write(pos, b"zz").unwrap();
    m.flush().unwrap();
    let state = control::load(tmp.path()).unwrap().unwrap();
    assert_eq!(state.segments.len(), 65);
    assert_eq!(state.segments[0].name, "0006");
    assert_eq!(state.segments[64].name, "0070");
    drop(m);
    assert_eq!(open(tmp.path()).durable_pos(), Position(212));
}

#[test]
fn discard_unflushed_allows_resending_from_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = open(tmp.path());
    m.bind(&raw("src")).unwrap();
    m.start_segment(&name("a"), Position(0)).unwrap();
    m.write(Position(0), b"keep").unwrap();
    m.flush().unwrap();
    m.write(Position(4), b"drop").unwrap();
    assert_eq!(m.discard_unflushed().unwrap(), 4);
    assert_eq!(m.written_pos(), Position(4));
    assert_eq!(read(tmp.path(), "a.partial"), b"keep");
    m.write(Position(4), b"new!").unwrap();
    m.complete_segment(Position(8)).unwrap();
    assert_eq!(read(tmp.path(), "a"), b"keepnew!");
    assert_eq!(control::load(tmp.path()).unwrap().unwrap().segments[0].crc32, Some(crc32fast::hash(b"keepnew!")));
}

//! `verify`: a mirror built through the `Mirror` API compared with its source.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use walship_core::Position;
use walship_store::{SegmentStatus, verify};

/// Writes `sizes.len()` source segments to `wal` and mirrors them into
/// `mirror`: all complete except the last, of which `durable_tail` bytes are
/// flushed (and 10 more written but not flushed).
fn build(wal: &Path, mirror: &Path, sizes: &[usize], durable_tail: usize) {
    let mut m = open(mirror);
    m.bind(&raw("src")).unwrap();
    let mut pos = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        let seg = format!("seg{i:03}");
        let data = bytes(pos, size);
        std::fs::write(wal.join(&seg), &data).unwrap();
        m.start_segment(&name(&seg), Position(pos)).unwrap();
        if i + 1 < sizes.len() {
            m.write(Position(pos), &data).unwrap();
            m.complete_segment(Position(pos + size as u64)).unwrap();
            pos += size as u64;
        } else {
            m.write(Position(pos), &data[..durable_tail]).unwrap();
            m.flush().unwrap();
            m.write(Position(pos + durable_tail as u64), &data[durable_tail..durable_tail + 10]).unwrap();
        }
    }
}

fn dirs() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, mirror) = (tmp.path().join("wal"), tmp.path().join("mirror"));
    std::fs::create_dir(&wal).unwrap();
    (tmp, wal, mirror)
}

#[test]
fn identical_mirror_verifies() {
    let (_tmp, wal, mirror) = dirs();
    build(&wal, &mirror, &[3_000_000, 1000, 500], 200);
    let r = verify(&wal, &mirror).unwrap();
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.durable_pos, Position(3_001_200));
    assert_eq!(r.bytes_compared, 3_001_200, "complete segments whole, the partial up to durable");
    let starts: Vec<_> = r.segments.iter().map(|s| (s.name.as_str(), s.start, s.complete)).collect();
    assert_eq!(
        starts,
        [("seg000", Position(0), true), ("seg001", Position(3_000_000), true), ("seg002", Position(3_001_000), false)]
    );
    let text = r.to_string();
    assert!(text.contains("seg001") && text.contains("identical"), "{text}");
}

#[test]
fn flipped_byte_is_reported_at_its_position() {
    let (_tmp, wal, mirror) = dirs();
    build(&wal, &mirror, &[3_000_000, 1000, 500], 200);
    // In the second 1 MiB chunk of the first segment, and in the partial.
    for (file, off, pos) in [("seg000", 1_500_001usize, 1_500_001u64), ("seg002.partial", 150, 3_001_150)] {
        let path = mirror.join(file);
        let mut data = std::fs::read(&path).unwrap();
        data[off] ^= 0xFF;
        std::fs::write(&path, &data).unwrap();
        let r = verify(&wal, &mirror).unwrap();
        assert_eq!(r.first_diff, Some(Position(1_500_001)), "{r}");
        let seg = r.segments.iter().find(|s| file.starts_with(&s.name)).unwrap();
        assert_eq!(seg.status, SegmentStatus::Mismatch { first_diff_pos: Position(pos) });
        assert!(r.to_string().contains(&format!("first difference at position {}", 1_500_001)), "{r}");
    }
}

#[test]
fn bytes_past_durable_in_the_source_do_not_matter_but_missing_ones_do() {
    let (_tmp, wal, mirror) = dirs();
    build(&wal, &mirror, &[100, 50], 20);
    std::fs::write(wal.join("seg001"), bytes(100, 25)).unwrap(); // still has the 20 durable bytes
    assert!(verify(&wal, &mirror).unwrap().is_ok());
    std::fs::write(wal.join("seg001"), bytes(100, 15)).unwrap();
    let r = verify(&wal, &mirror).unwrap();
    assert_eq!(r.segments[1].status, SegmentStatus::SourceShorter { source_len: 15 });
    assert_eq!(r.first_diff, Some(Position(115)));
    std::fs::write(wal.join("seg000"), bytes(0, 101)).unwrap();
    let r = verify(&wal, &mirror).unwrap();
    assert_eq!(r.segments[0].status, SegmentStatus::SourceLonger { source_len: 101 });
    assert_eq!(r.first_diff, Some(Position(100)));
}

#[test]
fn segment_missing_in_source_is_reported() {
    let (_tmp, wal, mirror) = dirs();
    build(&wal, &mirror, &[100, 100, 50], 20);
    std::fs::remove_file(wal.join("seg001")).unwrap();
    let r = verify(&wal, &mirror).unwrap();
    assert!(!r.is_ok());
    assert_eq!(r.segments[1].status, SegmentStatus::MissingInSource);
    assert_eq!(r.first_diff, Some(Position(100)));
    assert_eq!(r.segments[0].status, SegmentStatus::Ok);
    assert!(r.to_string().contains("MISSING"), "{r}");
}

#[test]
fn segments_older_than_the_table_get_derived_starts() {
    let (_tmp, wal, mirror) = dirs();
    let sizes: Vec<usize> = (0..70).map(|i| 20 + i).collect();
    build(&wal, &mirror, &sizes, 5);
    let r = verify(&wal, &mirror).unwrap();
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.segments.len(), 70);
    let mut pos = 0u64;
    for (s, size) in r.segments.iter().zip(&sizes) {
        assert_eq!(s.start, Position(pos), "{}", s.name);
        pos += *size as u64;
    }
    // A flip in an old segment (not in the table any more) is found at its real position.
    let mut data = std::fs::read(mirror.join("seg002")).unwrap();
    data[3] ^= 1;
    std::fs::write(mirror.join("seg002"), data).unwrap();
    assert_eq!(verify(&wal, &mirror).unwrap().first_diff, Some(Position(20 + 21 + 3)));
}

#[test]
fn report_is_a_readable_table() {
    let (_tmp, wal, mirror) = dirs();
    build(&wal, &mirror, &[100, 100, 50], 20);
    std::fs::remove_file(wal.join("seg001")).unwrap();
    let text = verify(&wal, &mirror).unwrap().to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("segment") && lines[0].ends_with("status"), "{text}");
    assert_eq!(lines[1].find("complete"), lines[0].find("state"), "columns align:\n{text}");
    assert!(lines[2].contains("seg001") && lines[2].contains("MISSING in source"), "{text}");
    assert!(lines[3].contains("partial") && lines[3].ends_with("ok"), "{text}");
    assert_eq!(lines[4], "durable position 220; 120 bytes compared; first difference at position 100");
}

//! The raw-format tailer against real files in a temporary directory.
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use walship_core::{Position, SegmentName};
use walship_source::{SourceError, Tailer, TailerConfig};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result {
    fs::write(dir.join(name), bytes)?;
    Ok(())
}

fn append(dir: &Path, name: &str, bytes: &[u8]) -> Result {
    OpenOptions::new().append(true).open(dir.join(name))?.write_all(bytes)?;
    Ok(())
}

/// Deterministic, position-dependent content so that misplaced bytes show.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_mul(31).wrapping_add((i % 251) as u8)).collect()
}

fn name(s: &str) -> SegmentName {
    SegmentName::new(s).expect("test segment names are valid")
}

fn open(dir: &Path) -> Result<Tailer> {
    Ok(Tailer::open(dir, TailerConfig::default())?)
}

/// Reads from `start` to the end, chunk by chunk, checking that no chunk crosses a segment end.
fn read_all(t: &mut Tailer, start: Position, chunk: usize) -> Result<Vec<u8>> {
    let end = t.end();
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let seg_end = t.segment_at(pos).ok_or("no segment at a position below the end")?.end();
        let b = t.read(pos, chunk)?;
        assert!(!b.is_empty(), "empty read at {pos} below the end {end}");
        assert!(b.len() <= chunk);
        assert!(pos.add(b.len() as u64) <= seg_end, "read at {pos} crossed the segment end {seg_end}");
        out.extend_from_slice(&b);
        pos = pos.add(b.len() as u64);
    }
    Ok(out)
}

#[test]
fn positions_are_offsets_in_the_concatenation() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "0003", &pattern(3, 5))?;
    write(d.path(), "0001", &pattern(1, 10))?;
    write(d.path(), "0002", &pattern(2, 20))?;
    let t = open(d.path())?;
    let segs = t.segments();
    let summary: Vec<_> = segs.iter().map(|s| (s.name.as_str(), s.start.get(), s.len, s.sealed)).collect();
    assert_eq!(summary, [("0001", 0, 10, true), ("0002", 10, 20, true), ("0003", 30, 5, false)]);
    assert_eq!(t.end(), Position(35));
    let at = |p| t.segment_at(Position(p)).map(|s| s.name.as_str().to_string());
    assert_eq!(at(0).as_deref(), Some("0001"));
    assert_eq!(at(9).as_deref(), Some("0001"));
    assert_eq!(at(10).as_deref(), Some("0002"));
    assert_eq!(at(34).as_deref(), Some("0003"));
    assert_eq!(at(35), None);
    assert_eq!(t.segment(&name("0002")).map(|s| s.start), Some(Position(10)));
    assert_eq!(t.segment(&name("0004")), None);
    let after = |a: Option<&str>| t.segment_after(a.map(name).as_ref()).map(|s| s.name.as_str().to_string());
    assert_eq!(after(None).as_deref(), Some("0001"));
    assert_eq!(after(Some("0001")).as_deref(), Some("0002"));
    assert_eq!(after(Some("00015")).as_deref(), Some("0002"));
    assert_eq!(after(Some("0003")), None);
    Ok(())
}

#[test]
fn empty_segments_take_no_positions() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "a", b"abc")?;
    write(d.path(), "b", b"")?;
    write(d.path(), "c", b"de")?;
    let mut t = open(d.path())?;
    assert_eq!(t.segment_at(Position(3)).map(|s| s.name.as_str()), Some("c"));
    assert_eq!(read_all(&mut t, Position(0), 100)?, b"abcde");
    Ok(())
}

#[test]
fn an_empty_directory_fills_up() -> Result {
    let d = tempfile::tempdir()?;
    let mut t = open(d.path())?;
    assert!(t.segments().is_empty());
    assert_eq!(t.end(), Position(0));
    assert_eq!(t.read(Position(0), 10)?.len(), 0);
    assert!(!t.refresh()?);
    write(d.path(), "s1", b"xyz")?;
    assert!(t.refresh()?);
    assert_eq!(t.end(), Position(3));
    assert_eq!(&t.read(Position(0), 10)?[..], b"xyz");
    Ok(())
}

#[test]
fn a_segment_is_sealed_when_a_later_one_appears() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "s1", &pattern(1, 100))?;
    let mut t = open(d.path())?;
    assert!(!t.segments()[0].sealed);
    // The writer finishes s1 and moves on: s1's final length is what is stat'ed after s2 is seen.
    append(d.path(), "s1", &pattern(2, 28))?;
    write(d.path(), "s2", &pattern(3, 7))?;
    assert!(t.refresh()?);
    let segs = t.segments();
    assert_eq!((segs[0].len, segs[0].sealed), (128, true));
    assert_eq!((segs[1].start, segs[1].len, segs[1].sealed), (Position(128), 7, false));
    assert_eq!(t.end(), Position(135));
    assert!(!t.refresh()?, "nothing changed since");
    Ok(())
}

#[test]
fn growth_is_seen_after_refresh() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "s1", b"hello")?;
    let mut t = open(d.path())?;
    append(d.path(), "s1", b" world")?;
    assert_eq!(t.end(), Position(5), "nothing is seen before a refresh");
    assert_eq!(t.read(Position(5), 10)?.len(), 0);
    assert!(t.refresh()?);
    assert_eq!(t.end(), Position(11));
    assert!(!t.refresh()?);
    Ok(())
}

#[test]
fn reads_return_the_file_bytes_and_never_cross_a_segment_end() -> Result {
    let d = tempfile::tempdir()?;
    let mut all = Vec::new();
    for (i, len) in [4096usize, 1, 10_000, 333].into_iter().enumerate() {
        let bytes = pattern(i as u8, len);
        write(d.path(), &format!("seg{i}"), &bytes)?;
        all.extend_from_slice(&bytes);
    }
    let mut t = open(d.path())?;
    for chunk in [1, 7, 1000, 1 << 20] {
        assert_eq!(read_all(&mut t, Position(0), chunk)?, all, "chunk {chunk}");
    }
    // A read that would straddle the first boundary stops at it.
    assert_eq!(t.read(Position(4090), 100)?.len(), 6);
    assert_eq!(t.read(Position(4096), 100)?.len(), 1);
    // Middle positions, read from the middle.
    assert_eq!(&t.read(Position(5000), 50)?[..], &all[5000..5050]);
    Ok(())
}

#[test]
fn a_growing_segment_is_remapped() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "s1", b"0123456789")?;
    let mut t = open(d.path())?;
    let first = t.read(Position(0), 100)?;
    assert_eq!(&first[..], b"0123456789");
    append(d.path(), "s1", b"abcdef")?;
    t.refresh()?;
    let second = t.read(Position(8), 100)?;
    assert_eq!(&second[..], b"89abcdef");
    assert_eq!(&first[..], b"0123456789", "slices of the old mapping stay valid");
    assert_eq!(&t.read(Position(0), 100)?[..], b"0123456789abcdef");
    Ok(())
}

#[test]
fn reads_of_one_mapping_share_memory() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "s1", &pattern(9, 64 * 1024))?;
    let mut t = open(d.path())?;
    let a = t.read(Position(0), 1000)?;
    let b = t.read(Position(1000), 1000)?;
    let c = t.read(Position(40_000), 10)?;
    assert_eq!(b.as_ptr() as usize - a.as_ptr() as usize, 1000, "second read is a slice of the same map");
    assert_eq!(c.as_ptr() as usize - a.as_ptr() as usize, 40_000);
    Ok(())
}

#[test]
fn truncating_the_open_segment_is_an_error() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "s1", &pattern(1, 1000))?;
    let mut t = open(d.path())?;
    File::options().write(true).open(d.path().join("s1"))?.set_len(10)?;
    match t.refresh() {
        Err(SourceError::Truncated { segment, observed: 1000, now: 10, .. }) => assert_eq!(segment.as_str(), "s1"),
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert_eq!(t.end(), Position(1000), "a failed refresh changes nothing");
    Ok(())
}

#[test]
fn truncating_a_mapped_segment_is_an_error_not_a_crash() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "s1", &pattern(1, 64 * 1024))?;
    write(d.path(), "s2", &pattern(2, 10))?;
    let mut t = open(d.path())?;
    let before = t.read(Position(0), 10)?;
    assert_eq!(before.len(), 10);
    File::options().write(true).open(d.path().join("s1"))?.set_len(100)?;
    // The sealed segment is not re-stat'ed by refresh; the read's fstat catches it.
    match t.read(Position(50_000), 10) {
        Err(e @ SourceError::Truncated { observed: 65_536, now: 100, .. }) => {
            assert!(e.to_string().contains("s1"), "{e}");
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    Ok(())
}

#[test]
fn removing_a_needed_segment_is_an_error() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "s1", &pattern(1, 100))?;
    write(d.path(), "s2", &pattern(2, 100))?;
    write(d.path(), "s3", &pattern(3, 100))?;
    let mut t = open(d.path())?;
    t.release_before(Position(50));
    fs::remove_file(d.path().join("s1"))?;
    match t.refresh() {
        Err(e @ SourceError::SegmentRemoved { needed: Position(50), .. }) => {
            let msg = e.to_string();
            assert!(msg.starts_with("segment s1 was removed from "), "{msg}");
            assert!(msg.ends_with("while bytes from position 50 were still needed"), "{msg}");
        }
        other => panic!("expected SegmentRemoved, got {other:?}"),
    }
    // A read of a segment never opened before fails the same way.
    match t.read(Position(60), 10) {
        Err(SourceError::SegmentRemoved { segment, needed: Position(60), .. }) => assert_eq!(segment.as_str(), "s1"),
        other => panic!("expected SegmentRemoved, got {other:?}"),
    }
    Ok(())
}

#[test]
fn a_mapped_segment_stays_readable_after_removal() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "s1", &pattern(1, 100))?;
    write(d.path(), "s2", &pattern(2, 100))?;
    let mut t = open(d.path())?;
    let a = t.read(Position(0), 10)?;
    fs::remove_file(d.path().join("s1"))?;
    assert_eq!(&t.read(Position(10), 90)?[..], &pattern(1, 100)[10..]);
    assert_eq!(&a[..], &pattern(1, 100)[..10]);
    Ok(())
}

#[test]
fn removing_released_segments_is_fine() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "s1", &pattern(1, 100))?;
    write(d.path(), "s2", &pattern(2, 100))?;
    write(d.path(), "s3", &pattern(3, 100))?;
    let mut t = open(d.path())?;
    read_all(&mut t, Position(0), 64)?;
    t.release_before(Position(200));
    fs::remove_file(d.path().join("s1"))?;
    fs::remove_file(d.path().join("s2"))?;
    assert!(!t.refresh()?, "removal of released segments is not a change of the stream");
    let segs = t.segments();
    assert_eq!(segs.len(), 1);
    assert_eq!((segs[0].name.as_str(), segs[0].start), ("s3", Position(200)));
    assert_eq!(t.end(), Position(300));
    assert!(matches!(t.read(Position(150), 1), Err(SourceError::BeforeStart { first: Position(200), .. })));
    // The stream goes on where it was.
    write(d.path(), "s4", b"more")?;
    assert!(t.refresh()?);
    assert_eq!(&t.read(Position(300), 10)?[..], b"more");
    Ok(())
}

#[test]
fn the_open_segment_is_needed_even_when_released() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "s1", b"abc")?;
    let mut t = open(d.path())?;
    t.release_before(Position(3));
    fs::remove_file(d.path().join("s1"))?;
    assert!(matches!(t.refresh(), Err(SourceError::SegmentRemoved { needed: Position(3), .. })));
    Ok(())
}

#[test]
fn a_new_segment_sorting_before_the_last_is_out_of_order() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "s1", b"a")?;
    write(d.path(), "s3", b"b")?;
    let mut t = open(d.path())?;
    write(d.path(), "s2", b"c")?;
    match t.refresh() {
        Err(e @ SourceError::OutOfOrder { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("s2") && msg.contains("s3"), "{msg}");
        }
        other => panic!("expected OutOfOrder, got {other:?}"),
    }
    Ok(())
}

#[test]
fn rebase_moves_the_anchor() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "s1", &pattern(1, 100))?;
    write(d.path(), "s2", &pattern(2, 50))?;
    write(d.path(), "s3", &pattern(3, 10))?;
    let mut t = open(d.path())?;
    t.rebase(&name("s2"), Position(1_000_000))?;
    let starts: Vec<_> = t.segments().iter().map(|s| (s.name.as_str(), s.start.get())).collect();
    assert_eq!(starts, [("s2", 1_000_000), ("s3", 1_000_050)]);
    assert_eq!(t.end(), Position(1_000_060));
    assert_eq!(&t.read(Position(1_000_050), 100)?[..], &pattern(3, 10)[..]);
    // Backwards, to a segment outside the stream so far.
    t.rebase(&name("s1"), Position(0))?;
    assert_eq!(t.end(), Position(160));
    // s1 is not part of the stream after this one, and may go.
    t.rebase(&name("s2"), Position(7))?;
    fs::remove_file(d.path().join("s1"))?;
    assert!(!t.refresh()?);
    assert!(matches!(t.rebase(&name("s1"), Position(0)), Err(SourceError::SegmentNotFound { .. })));
    assert!(matches!(t.rebase(&name("s2x"), Position(0)), Err(SourceError::SegmentNotFound { .. })));
    assert_eq!(t.segments()[0].start, Position(7), "a failed rebase changes nothing");
    Ok(())
}

#[test]
fn rebase_after_starts_at_the_next_segment() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "s2", &pattern(2, 50))?;
    write(d.path(), "s3", &pattern(3, 10))?;
    let mut t = open(d.path())?;
    // The receiver's last complete segment, s1, is gone from the source.
    t.rebase_after(&name("s1"), Position(100))?;
    assert_eq!(t.segments()[0].name.as_str(), "s2");
    assert_eq!(t.segments()[0].start, Position(100));
    // And when it is still there.
    t.rebase_after(&name("s2"), Position(150))?;
    let starts: Vec<_> = t.segments().iter().map(|s| (s.name.as_str(), s.start.get())).collect();
    assert_eq!(starts, [("s3", 150)]);
    match t.rebase_after(&name("s3"), Position(160)) {
        Err(e @ SourceError::NoSegmentAfter { .. }) => assert!(e.to_string().contains("after s3"), "{e}"),
        other => panic!("expected NoSegmentAfter, got {other:?}"),
    }
    Ok(())
}

#[test]
fn only_matching_visible_valid_regular_files_are_segments() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "000000010000000000000001", b"one")?;
    write(d.path(), "000000010000000000000002", b"two")?;
    write(d.path(), "000000010000000000000001.history", b"hist")?;
    write(d.path(), ".000000010000000000000003.tmp", b"hidden")?;
    write(d.path(), "000000010000000000000003.partial", b"invalid name")?;
    fs::create_dir(d.path().join("archive_status"))?;

    let by_default = open(d.path())?;
    let names: Vec<_> = by_default.segments().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["000000010000000000000001", "000000010000000000000001.history", "000000010000000000000002"]);

    let pattern = glob::Pattern::new("[0-9A-F]*[0-9A-F]")?;
    let mut t = Tailer::open(d.path(), TailerConfig { pattern: Some(pattern), ..TailerConfig::default() })?;
    let names: Vec<_> = t.segments().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["000000010000000000000001", "000000010000000000000002"]);
    // Newcomers that do not match change nothing.
    write(d.path(), "000000010000000000000004.backup", b"x")?;
    write(d.path(), ".tmp", b"x")?;
    assert!(!t.refresh()?);
    Ok(())
}

#[test]
fn checksum_spans_segments() -> Result {
    let d = tempfile::tempdir()?;
    let mut all = Vec::new();
    for (i, len) in [1000usize, 0, 4096, 17].into_iter().enumerate() {
        let bytes = pattern(i as u8 + 40, len);
        write(d.path(), &format!("w{i}"), &bytes)?;
        all.extend_from_slice(&bytes);
    }
    let mut t = open(d.path())?;
    let end = t.end().get() as usize;
    for (s, e) in [(0, end), (0, 0), (999, 1001), (500, 5100), (1000, end), (end, end)] {
        assert_eq!(t.checksum(Position(s as u64), Position(e as u64))?, crc32fast::hash(&all[s..e]), "[{s}, {e})");
    }
    assert!(matches!(t.checksum(Position(10), Position(5)), Err(SourceError::InvalidRange { .. })));
    assert!(matches!(t.checksum(Position(0), Position(end as u64 + 1)), Err(SourceError::BeyondEnd { .. })));
    Ok(())
}

#[test]
fn positions_out_of_range_are_errors() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "s1", b"abc")?;
    let mut t = open(d.path())?;
    t.rebase(&name("s1"), Position(10))?;
    assert!(matches!(t.read(Position(9), 1), Err(SourceError::BeforeStart { .. })));
    assert!(matches!(t.read(Position(14), 1), Err(SourceError::BeyondEnd { .. })));
    assert_eq!(t.read(Position(13), 1)?.len(), 0);
    assert_eq!(t.read(Position(10), 0)?.len(), 0);
    Ok(())
}

#[test]
fn a_missing_directory_is_an_error() {
    let err = Tailer::open(Path::new("/nonexistent/walship/dir"), TailerConfig::default());
    match err {
        Err(e @ SourceError::ListDir { .. }) => assert!(e.to_string().contains("/nonexistent/walship/dir"), "{e}"),
        other => panic!("expected ListDir, got {other:?}"),
    }
}

#[test]
fn a_hinted_refresh_reuses_the_listing_until_entries_change() -> Result {
    let d = tempfile::tempdir()?;
    write(d.path(), "000000010000000000000001", &pattern(1, 100))?;
    let mut t = open(d.path())?;
    assert_eq!(t.end(), Position(100));
    // Growth of the open segment is seen without listing.
    append(d.path(), "000000010000000000000001", &pattern(2, 50))?;
    assert!(t.refresh_hinted(false)?);
    assert_eq!(t.end(), Position(150));
    // A new segment is not, until the caller says entries changed.
    write(d.path(), "000000010000000000000002", &pattern(3, 10))?;
    assert!(!t.refresh_hinted(false)?, "the cached listing does not hold the new segment");
    assert_eq!(t.segments().len(), 1);
    assert!(t.refresh_hinted(true)?);
    assert_eq!(t.segments().len(), 2);
    assert!(t.segments()[0].sealed);
    assert_eq!(t.end(), Position(160));
    // A removed segment that is still needed is an error once listed (the open one's stat
    // would fail at once; a sealed one is only missed by a listing).
    fs::remove_file(d.path().join("000000010000000000000001"))?;
    assert!(t.refresh_hinted(false).is_ok(), "no listing, no news");
    assert!(matches!(t.refresh_hinted(true), Err(SourceError::SegmentRemoved { .. })));
    // ... and the failed refresh does not keep a listing: the next one lists again.
    assert!(matches!(t.refresh_hinted(false), Err(SourceError::SegmentRemoved { .. })));
    Ok(())
}

//! The tailer in PostgreSQL mode over real PostgreSQL 15 segments: LSN
//! positions, the stream ends at the valid end, recycled and stale files
//! never join it, and a segment written bit by bit is only ever exposed up
//! to bytes that are final.
#[path = "postgres_common.rs"]
mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{dir, expected, lsn, opts};
use walship_core::Position;
use walship_source::{SourceFormat, Tailer, TailerConfig};

fn pg_config() -> TailerConfig {
    TailerConfig { format: SourceFormat::Postgres, ..TailerConfig::default() }
}

/// A pg_wal with copies of the corpus files of `case` (segments and history files only).
fn pg_wal(case: &str, files: &[&str]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("temp dir");
    for f in files {
        std::fs::copy(dir().join(case).join(f), tmp.path().join(f)).expect("copy corpus file");
    }
    tmp
}

fn stream_bytes(t: &mut Tailer) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = t.first();
    while pos < t.end() {
        let b = t.read(pos, 1 << 20).expect("read");
        assert!(!b.is_empty());
        out.extend_from_slice(&b);
        pos = pos.add(b.len() as u64);
    }
    out
}

fn source_bytes(case: &str, files: &[&str]) -> Vec<u8> {
    files.iter().flat_map(|f| std::fs::read(dir().join(case).join(f)).expect("read")).collect()
}

#[test]
fn each_case_streams_from_its_first_segment_to_the_valid_end() {
    let exp = expected();
    let cases: [(&str, &[&str], &str, &str); 5] = [
        ("switch", &["000000010000000000000006", "000000010000000000000007"], "0/600000", "0/703F98"),
        ("contrecord", &["000000010000000000000006", "000000010000000000000007"], "0/600000", "0/704788"),
        ("recycled", &["00000001000000000000000D", "00000001000000000000000E"], "0/D00000", "0/D0EF08"),
        ("tail-zero", &["00000001000000000000000B"], "0/B00000", "0/BA9898"),
        ("timeline", &["000000020000000000000008", "00000002.history"], "0/800000", "0/826B50"),
    ];
    for (case, files, first, end) in cases {
        let wal = pg_wal(case, files);
        let mut t = Tailer::open(wal.path(), pg_config()).expect("open");
        assert_eq!(t.first(), Position(lsn(first)), "{case}: positions are LSNs");
        assert_eq!(t.end().lsn().to_string(), end, "{case}: stream ends at the valid end");
        let src = t.postgres().expect("cluster known");
        let want_sysid: u64 = exp["clusters"][case]["system_identifier"].as_str().expect("sysid").parse().expect("num");
        assert_eq!(src.system_identifier, want_sysid, "{case}");
        assert_eq!((src.geometry.seg_size(), src.geometry.block_size()), (1 << 20, 8192), "{case}");
        // The bytes handed out are the files' bytes, up to the valid end and no further.
        let got = stream_bytes(&mut t);
        let seg_files: Vec<&str> = files.iter().copied().filter(|f| f.len() == 24).collect();
        let src_bytes = source_bytes(case, &seg_files);
        assert_eq!(got.len() as u64, t.end().since(t.first()), "{case}");
        assert!(got == src_bytes[..got.len()], "{case}: stream bytes differ from the files");
        assert!(!t.refresh().expect("refresh"), "{case}: nothing changes without writes");
    }
}

#[test]
fn a_recycled_segment_full_of_stale_wal_never_joins_the_stream() {
    // 0E in the corpus is a recycled file: good magic, stale xlp_pageaddr.
    let wal = pg_wal("recycled", &["00000001000000000000000D", "00000001000000000000000E"]);
    let mut t = Tailer::open(wal.path(), pg_config()).expect("open");
    let names: Vec<String> = t.segments().iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["00000001000000000000000D"], "the stale file is not part of the stream");
    assert!(!t.segments()[0].sealed, "0D is not complete: its records end inside it");
    // Also under a name further ahead (PostgreSQL renames recycled files to future names).
    std::fs::copy(wal.path().join("00000001000000000000000E"), wal.path().join("00000001000000000000000F"))
        .expect("copy");
    t.refresh().expect("refresh");
    assert_eq!(t.segments().len(), 1);
    assert_eq!(t.end().lsn().to_string(), "0/D0EF08");
    assert!(t.last_stop().is_some());
}

#[test]
fn history_files_are_listed_beside_the_stream() {
    let wal = pg_wal("timeline", &["000000020000000000000008", "00000002.history", "000000010000000000000008.partial"]);
    let t = Tailer::open(wal.path(), pg_config()).expect("open");
    assert_eq!(t.history_files(), ["00000002.history"]);
    let names: Vec<String> = t.segments().iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["000000020000000000000008"], ".partial files are not streamed");
    assert_eq!(t.postgres().map(|p| p.timeline), Some(2));
}

/// Copies `src` into `dst` (which starts as a same-size file of zeros, or of
/// other stale bytes) `step` bytes at a time, refreshing after each step.
/// Returns the ends seen.
fn write_gradually(t: &mut Tailer, src: &[u8], dst: &File, from: usize, step: usize, finals: &[u8]) -> Vec<Position> {
    let mut ends = Vec::new();
    let mut off = from;
    while off < src.len() {
        let n = step.min(src.len() - off);
        dst.write_all_at(&src[off..off + n], off as u64).expect("write");
        off += n;
        t.refresh().expect("refresh");
        let end = t.end();
        if let Some(prev) = ends.last() {
            assert!(end >= *prev, "the end never goes back");
        }
        // Every byte below the end is final: equal to the finished file's byte.
        let got = stream_bytes(t);
        assert!(got[..] == finals[..got.len()], "bytes below the end {end} are not final");
        ends.push(end);
    }
    ends
}

#[test]
fn a_segment_written_bit_by_bit_over_stale_bytes_only_exposes_final_bytes() {
    let exp = expected();
    let _ = opts(&exp, "switch");
    // Start with segment 06 of the switch case complete, and 07 as a recycled
    // file holding 06's bytes (stale: wrong page addresses), then write 07's
    // real bytes 3000 bytes at a time.
    let wal = pg_wal("switch", &["000000010000000000000006"]);
    let six = std::fs::read(dir().join("switch/000000010000000000000006")).expect("read");
    let seven = std::fs::read(dir().join("switch/000000010000000000000007")).expect("read");
    let path = wal.path().join("000000010000000000000007");
    File::create(&path).and_then(|mut f| f.write_all(&six)).expect("recycled file");
    let mut t = Tailer::open(wal.path(), pg_config()).expect("open");
    // 06 ends with a switch whose padding is final: 06 is complete, 07 not started.
    assert_eq!(t.segments().len(), 1);
    assert!(t.segments()[0].sealed, "06 is complete after its switch and padding");
    assert_eq!(t.end(), Position(0x70_0000));
    let f = OpenOptions::new().write(true).open(&path).expect("open 07");
    let finals: Vec<u8> = six.iter().chain(seven.iter()).copied().collect();
    let ends = write_gradually(&mut t, &seven, &f, 0, 3000, &finals);
    assert_eq!(ends.last().map(|p| p.lsn().to_string()).as_deref(), Some("0/703F98"));
    assert!(ends.iter().filter(|e| e.0 > 0x70_0000).count() > 10, "the end advanced record by record");
}

#[test]
fn a_record_crossing_the_segment_boundary_joins_when_its_end_is_written() {
    let wal = pg_wal("contrecord", &["000000010000000000000006"]);
    let six = std::fs::read(dir().join("contrecord/000000010000000000000006")).expect("read");
    let seven = std::fs::read(dir().join("contrecord/000000010000000000000007")).expect("read");
    let path = wal.path().join("000000010000000000000007");
    std::fs::write(&path, vec![0u8; seven.len()]).expect("preallocated file");
    let mut t = Tailer::open(wal.path(), pg_config()).expect("open");
    assert_eq!(t.end().lsn().to_string(), "0/6FA9C0", "the long record is not complete");
    let f = OpenOptions::new().write(true).open(&path).expect("open 07");
    let finals: Vec<u8> = six.iter().chain(seven.iter()).copied().collect();
    let ends = write_gradually(&mut t, &seven, &f, 0, 4096, &finals);
    assert_eq!(ends.first(), Some(&Position(0x6F_A9C0)), "nothing of the long record before its end is written");
    assert!(ends.iter().all(|e| *e == Position(0x6F_A9C0) || *e >= Position(0x70_46C8)), "{ends:?}");
    assert_eq!(t.end().lsn().to_string(), "0/704788");
    assert!(t.segments()[0].sealed);
}

#[test]
fn positions_are_fixed_and_cannot_be_rebased() {
    let wal = pg_wal("tail-zero", &["00000001000000000000000B"]);
    let mut t = Tailer::open(wal.path(), pg_config()).expect("open");
    assert!(t.fixed_positions());
    let name = t.segments()[0].name.clone();
    t.rebase(&name, Position(0xB0_0000)).expect("the same start is fine");
    let e = t.rebase(&name, Position(0)).expect_err("another start is refused");
    assert!(e.to_string().contains("fixed"), "{e}");
}

#[test]
fn an_empty_or_zero_filled_directory_has_no_stream_yet() {
    let wal = tempfile::tempdir().expect("tmp");
    let mut t = Tailer::open(wal.path(), pg_config()).expect("open");
    assert_eq!(t.segments().len(), 0);
    std::fs::write(wal.path().join("000000010000000000000001"), vec![0u8; 1 << 20]).expect("zeros");
    assert!(!t.refresh().expect("refresh"));
    assert!(t.postgres().is_none());
    assert!(Path::new(wal.path()).exists());
}

#[test]
fn switch_padding_joins_only_once_the_stale_bytes_are_overwritten() {
    let wal = pg_wal("switch", &["000000010000000000000006"]);
    let path = wal.path().join("000000010000000000000006");
    let six = std::fs::read(&path).expect("read");
    // As in a recycled file before PostgreSQL wrote the padding: stale bytes from page 60 on.
    let f = OpenOptions::new().write(true).open(&path).expect("open");
    let stale_at = 60 * 8192;
    f.write_all_at(&vec![0x5Au8; six.len() - stale_at], stale_at as u64).expect("stale");
    let mut t = Tailer::open(wal.path(), pg_config()).expect("open");
    assert!(!t.segments()[0].sealed, "stale padding is not final");
    assert_eq!(t.end(), Position(0x60_0000 + stale_at as u64), "the zero pages before it are");
    f.write_all_at(&six[stale_at..], stale_at as u64).expect("padding written");
    assert!(t.refresh().expect("refresh"));
    assert!(t.segments()[0].sealed);
    assert_eq!(t.end(), Position(0x70_0000));
}

#[test]
fn a_promotion_inside_the_current_segment_is_followed_onto_the_new_timeline() {
    // Before: a standby's pg_wal with timeline 1's segment 8 (the corpus keeps it as .partial).
    let wal = tempfile::tempdir().expect("tmp");
    let tl1 = wal.path().join("000000010000000000000008");
    std::fs::copy(dir().join("timeline/000000010000000000000008.partial"), &tl1).expect("copy");
    let mut t = Tailer::open(wal.path(), pg_config()).expect("open");
    assert_eq!(t.end().lsn().to_string(), "0/815D20");
    assert_eq!(t.postgres().map(|p| p.timeline), Some(1));
    let before = stream_bytes(&mut t);

    // The promotion: timeline 2's history and segment appear, timeline 1's segment is renamed away.
    for f in ["00000002.history", "000000020000000000000008"] {
        std::fs::copy(dir().join("timeline").join(f), wal.path().join(f)).expect("copy");
    }
    std::fs::rename(&tl1, wal.path().join("000000010000000000000008.partial")).expect("rename");
    assert!(t.refresh().expect("refresh follows the switch"));
    let segs: Vec<(String, String, u64, bool)> =
        t.segments().iter().map(|s| (s.name.to_string(), s.start.lsn().to_string(), s.len, s.sealed)).collect();
    assert_eq!(
        segs,
        [
            ("000000010000000000000008".into(), "0/800000".into(), 0x1_5D20, true),
            ("000000020000000000000008".into(), "0/815D20".into(), 0x2_6B50 - 0x1_5D20, false),
        ]
    );
    assert_eq!(t.end().lsn().to_string(), "0/826B50");
    assert_eq!(t.postgres().map(|p| p.timeline), Some(2));
    // Bytes: timeline 1's up to the switch point, then timeline 2's file from the same offset on.
    let after = stream_bytes(&mut t);
    let new = std::fs::read(dir().join("timeline/000000020000000000000008")).expect("read");
    assert!(after[..before.len()] == before[..]);
    assert!(after[before.len()..] == new[0x1_5D20..0x2_6B50]);
    // Once every receiver has it, the renamed segment is let go.
    t.release_before(Position(0x81_5D20));
    t.refresh().expect("refresh");
    assert_eq!(t.segments()[0].name.as_str(), "000000020000000000000008");
}

#[test]
fn a_segment_recycled_before_every_receiver_had_it_is_never_read_again() {
    let wal = pg_wal("switch", &["000000010000000000000006", "000000010000000000000007"]);
    let mut t = Tailer::open(wal.path(), pg_config()).expect("open");
    assert_eq!(t.end().lsn().to_string(), "0/703F98");
    t.read(Position(0x60_0000), 8192).expect("readable while present");
    // PostgreSQL overwrites a page of it in place (as after a recycle): a read notices.
    let six = wal.path().join("000000010000000000000006");
    let f = OpenOptions::new().write(true).open(&six).expect("open");
    let mut foreign = std::fs::read(&six).expect("read")[..8192].to_vec();
    foreign[8..16].copy_from_slice(&0x90_0000u64.to_le_bytes());
    f.write_all_at(&foreign, 8192).expect("overwrite page 1");
    let e = t.read(Position(0x60_0000), 3 * 8192).expect_err("a foreign page is refused");
    assert!(e.to_string().contains("recycled"), "{e}");
    // It is renamed to a future name: not fatal for the stream, but never read through the old mapping.
    std::fs::rename(&six, wal.path().join("00000001000000000000000A")).expect("rename");
    t.refresh().expect("the stream goes on for the receivers that do not need it");
    let e = t.read(Position(0x60_0000), 100).expect_err("removed");
    assert!(e.to_string().contains("000000010000000000000006"), "{e}");
    assert_eq!(t.read(Position(0x70_0000), 100).expect("07 still readable").len(), 100);
}

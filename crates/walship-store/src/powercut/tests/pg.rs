//! PostgreSQL mirrors flush with one fdatasync: `walship.pos` is not synced
//! for a segment whose WAL recovery can walk, and after a power cut that
//! lost it, recovery finds the durable end from the records. Real
//! PostgreSQL 15 segments (1 MiB): a record continued across a segment
//! boundary, and an XLOG_SWITCH.
use std::path::PathBuf;

use walship_pgwal::{WalGeometry, WalInput, WalkOptions, Walker, find_first_record};

use super::*;

const SEG: u64 = 1 << 20;
/// Both clusters' streams start at segment 6.
const BASE: u64 = 0x60_0000;

/// A stream of two real segments: segment 6 whole, then segment 7 up to the
/// end of its valid WAL (stale recycled pages follow in the files).
struct Cluster {
    dir: &'static str,
    end_of_wal: u64,
}

/// 6's last record (a 40 KB logical message) ends in 7 at 0/7046C8; three
/// more records follow.
const CONTRECORD: Cluster = Cluster { dir: "contrecord", end_of_wal: 0x70_4788 };
/// 6 ends with an XLOG_SWITCH and zeros; 7 holds 204 records.
const SWITCH: Cluster = Cluster { dir: "switch", end_of_wal: 0x70_3F98 };

impl Cluster {
    fn stream(&self) -> Vec<u8> {
        let read = |name: &str| {
            let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../walship-source/testdata/postgres-wal")
                .join(self.dir)
                .join(name);
            std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        let mut s = read("000000010000000000000006");
        s.extend_from_slice(&read("000000010000000000000007")[..(self.end_of_wal - BASE - SEG) as usize]);
        s
    }
}

/// The end of every record in a stream, by the walker over both segments.
fn record_ends(s: &[u8]) -> Vec<u64> {
    let geometry = WalGeometry::new(SEG, 8192).unwrap();
    let segs = [&s[..SEG as usize], &s[SEG as usize..]];
    let input = WalInput::new(geometry, BASE, &segs);
    let first = find_first_record(input, BASE, WalkOptions::default()).unwrap();
    let mut w = Walker::new(input, first.0, WalkOptions::default());
    let mut ends = Vec::new();
    while let Ok(r) = w.read_record() {
        ends.push(r.end.0);
    }
    assert!(ends.len() > 4000, "{} records", ends.len());
    ends
}

fn pg() -> Identity {
    Identity { source_id: "pg".into(), format: crate::POSTGRES_FORMAT.into(), segment_size: SEG }
}

fn seg_name(n: u64) -> SegmentName {
    name(&format!("0000000100000000000000{n:02X}"))
}

/// Writes the stream up to `upto` into a mirror bound to the cluster,
/// flushing at every position in `flushes` (sorted, below `upto`) and
/// completing segment 6 on the way; the last bytes stay unflushed.
fn write_stream(m: &mut Mirror, s: &[u8], flushes: &[u64], upto: u64) -> Result<(), StoreError> {
    m.bind(&pg())?;
    m.start_segment(&seg_name(6), Position(BASE))?;
    let mut at = BASE;
    for &f in flushes.iter().chain([&upto]) {
        while at < f {
            let seg_end = (at / SEG + 1) * SEG;
            let to = f.min(seg_end);
            m.write(Position(at), &s[(at - BASE) as usize..(to - BASE) as usize])?;
            at = to;
            if at == seg_end && at < upto {
                m.complete_segment(Position(at))?;
                m.start_segment(&seg_name(at / SEG), Position(at))?;
            }
        }
        if f != upto {
            m.flush()?;
        }
    }
    Ok(())
}

#[test]
fn a_flush_syncs_the_data_but_not_the_position_record() {
    let _s = serial();
    let s = CONTRECORD.stream();
    let ends = record_ends(&s);
    // The record continued from segment 6 ends at 0/7046C8; acknowledged
    // 8 bytes into the next one, so only a walk from segment 6 finds it.
    let crossing = 0x70_46C8;
    assert!(ends.contains(&crossing) && !ends.contains(&(crossing + 8)));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    arm(dir);
    let (mut m, _) = Mirror::open(dir).unwrap();
    write_stream(&mut m, &s, &[BASE + 4096, SEG + BASE + 100, crossing + 8], CONTRECORD.end_of_wal).unwrap();
    assert_eq!(m.durable_pos(), Position(crossing + 8));
    let report = cut();
    assert!(report.errors.is_empty(), "{report:?}");
    // The unflushed bytes and the unsynced position records were lost.
    assert!(report.bytes_by_file.get("walship.pos").is_some_and(|b| *b > 0), "{report:?}");
    let seg7 = format!("{}.partial", seg_name(7));
    let unflushed = CONTRECORD.end_of_wal - crossing - 8;
    assert_eq!(report.bytes_by_file.get(&seg7), Some(&unflushed), "{report:?}");
    drop(m);
    reset();

    let (m, rec) = Mirror::open(dir).unwrap();
    assert_eq!(rec.durable_pos, Position(crossing), "{rec:?}");
    assert!(rec.actions.iter().any(|a| a.contains("from the WAL records")), "{rec:?}");
    assert_eq!(m.durable_pos(), Position(crossing));
    let got = std::fs::read(dir.join(&seg7)).unwrap();
    let keep = (crossing - BASE - SEG) as usize;
    assert_eq!(&got[..keep], &s[SEG as usize..][..keep], "bytes below durable are the stream's");
    assert!(got[keep..].iter().all(|b| *b == 0), "the torn record's head is zeroed");
    assert_eq!(got.len() as u64, SEG);
}

#[test]
fn without_the_previous_segment_the_walk_starts_in_the_current_one() {
    let _s = serial();
    let s = CONTRECORD.stream();
    let crossing = 0x70_46C8;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    arm(dir);
    let (mut m, _) = Mirror::open(dir).unwrap();
    write_stream(&mut m, &s, &[SEG + BASE + 100, crossing + 8], CONTRECORD.end_of_wal).unwrap();
    assert!(cut().errors.is_empty());
    drop(m);
    reset();
    // Segment 6 damaged after the fact: cut short.
    let seg6 = dir.join(seg_name(6).as_str());
    std::fs::OpenOptions::new().write(true).open(&seg6).unwrap().set_len(SEG / 2).unwrap();
    let (m, rec) = Mirror::open(dir).unwrap();
    assert!(rec.actions.iter().any(|a| a.contains("could not read") && a.contains(seg_name(6).as_str())), "{rec:?}");
    // The record continued from segment 6 cannot be checked, and none begins
    // and ends in segment 7 below the acknowledged position: what is left is
    // the position recorded durably, by the first flush in the segment (it
    // went to the control file with the segment's start).
    let first_flush = BASE + SEG + 100;
    assert_eq!(m.durable_pos(), Position(first_flush), "{rec:?}");
    let got = std::fs::read(dir.join(format!("{}.partial", seg_name(7)))).unwrap();
    assert_eq!(&got[..100], &s[SEG as usize..][..100]);
    assert!(got[100..].iter().all(|b| *b == 0), "nothing unchecked is kept");
}

#[test]
fn the_mirrors_first_segment_still_syncs_the_position_record() {
    let _s = serial();
    let s = CONTRECORD.stream();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    arm(dir);
    let (mut m, _) = Mirror::open(dir).unwrap();
    // Inside segment 6, the mirror's first: nothing before it to walk from.
    write_stream(&mut m, &s, &[BASE + 5000], BASE + 9000).unwrap();
    let acked = m.durable_pos().0;
    assert_eq!(unsynced_bytes(), 4000, "the unflushed bytes only; the position record was synced");
    let report = cut();
    assert_eq!(report.bytes_by_file.get("walship.pos"), None, "{report:?}");
    drop(m);
    reset();
    let (m, _) = Mirror::open(dir).unwrap();
    assert_eq!(m.durable_pos(), Position(acked), "exactly the acknowledged position");
}

/// Random writes and flushes over segments 6 and 7, a power cut (exact or
/// harsh, between operations or inside one), recovery.
#[test]
fn random_flushes_then_a_power_cut_keep_every_acknowledged_record() {
    let _s = serial();
    let s = SWITCH.stream();
    let end_of_wal = SWITCH.end_of_wal;
    let ends = record_ends(&s);
    let cases: u64 = std::env::var("WALSHIP_POWERCUT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300) / 10;
    let (mut walked, mut beyond, mut gave_back, mut most_given_back) = (0, 0, 0, 0);
    for seed in 1..=cases.max(8) {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let harsh = seed % 2 == 0;
        if harsh {
            arm_harsh(dir, seed)
        } else {
            arm(dir)
        }
        let (mut m, _) = Mirror::open(dir).unwrap();
        // Mostly into segment 7, where the position record goes unsynced.
        let upto = if seed % 7 == 0 {
            BASE + 1 + rng.below(SEG - 1)
        } else {
            BASE + SEG + 1 + rng.below(end_of_wal - BASE - SEG - 1)
        };
        // A few flushes anywhere, the rest in the last 24 KiB written.
        let recent = upto.saturating_sub(24 << 10).max(BASE + 1);
        let (anywhere, late) = (rng.below(4), 1 + rng.below(20));
        let mut flushes: Vec<u64> = (0..anywhere).map(|_| BASE + 1 + rng.below(upto - BASE - 1)).collect();
        flushes.extend((0..late).map(|_| recent + rng.below(upto - recent)));
        flushes.sort_unstable();
        flushes.dedup();
        if seed % 3 == 0 {
            cut_after(1 + rng.below(12));
        }
        let mode = if harsh { "harsh" } else { "exact" };
        let ctx = format!("seed {seed} ({mode}, upto {upto:#X}, flushes {flushes:X?})");
        match write_stream(&mut m, &s, &flushes, upto) {
            Ok(()) => {}
            Err(_) if is_cut() => {}
            Err(e) => panic!("{ctx}: failure before the cut: {e}"),
        }
        // Everything a flush or a completion returned.
        let (acked, written) = (m.durable_pos().0, m.written_pos().0);
        let report = take_trip_report().unwrap_or_else(cut);
        assert!(report.errors.is_empty(), "{ctx}: {report:?}");
        drop(m);
        reset();

        let (m, rec) = Mirror::open(dir).unwrap_or_else(|e| panic!("{ctx}: recovery failed: {e}"));
        let durable = rec.durable_pos.0;
        // Every record complete at the acknowledged position is kept, and the
        // segment boundary once a segment was acknowledged complete.
        let floor = ends.iter().chain(&[0, BASE, BASE + SEG]).copied().filter(|e| *e <= acked).max().unwrap_or(0);
        assert!(durable >= floor, "{ctx}: recovered {durable:#X} < {floor:#X}, the last record acknowledged");
        assert!(durable <= written.max(acked), "{ctx}: recovered {durable:#X} past written {written:#X}");
        walked += u64::from(rec.actions.iter().any(|a| a.contains("from the WAL records")));
        beyond += u64::from(durable > acked);
        // The head of a record incomplete at the acknowledged position.
        gave_back += u64::from(durable < acked);
        most_given_back = most_given_back.max(acked.saturating_sub(durable));
        if durable == 0 {
            // Cut before the first segment was recorded.
            continue;
        }
        // The segment holding the byte before the durable position.
        let n = (durable - 1) / SEG;
        let fin = dir.join(seg_name(n).as_str());
        let path = if fin.exists() { fin } else { dir.join(format!("{}.partial", seg_name(n))) };
        let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{ctx}: {}: {e}", path.display()));
        let keep = (durable - n * SEG) as usize;
        let from = (n * SEG - BASE) as usize;
        assert_eq!(&got[..keep], &s[from..from + keep], "{ctx}: bytes below durable differ");
        assert!(got[keep..].iter().all(|b| *b == 0), "{ctx}: bytes past durable {durable:#X} survived");
        drop(m);
    }
    println!(
        "pg powercut model: {} cuts; {walked} recoveries took the durable end from the WAL; {beyond} ended past the \
         acknowledged position, {gave_back} before it (the head of an incomplete record, at most {most_given_back} bytes)",
        cases.max(8)
    );
    assert!(walked > 0, "some cut lost the position record and the walk found the records");
}

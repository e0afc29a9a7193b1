//! The layer bites (unsynced bytes and names are gone after a cut), and a
//! seeded model: random store operations, a cut at a random point, and
//! recovery must keep every acknowledged byte and discard the torn tail.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use walship_core::{Position, SegmentName};

use super::*;
use crate::{Identity, Mirror, StoreError};

/// The layer is process-global: its tests take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn name(s: &str) -> SegmentName {
    SegmentName::new(s).unwrap()
}

fn raw() -> Identity {
    Identity { source_id: "src".into(), format: "raw".into(), segment_size: 0 }
}

fn is_eio(e: &StoreError) -> bool {
    matches!(e, StoreError::Io { source, .. } if source.raw_os_error() == Some(EIO))
}

#[test]
fn unsynced_bytes_and_names_are_gone_after_a_cut() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    arm(dir);
    let (mut m, _) = Mirror::open(dir).unwrap();
    m.bind(&raw()).unwrap();
    m.start_segment(&name("s1"), Position(0)).unwrap();
    m.write(Position(0), b"hello").unwrap();
    assert_eq!(m.flush().unwrap(), Position(5));
    m.write(Position(5), b"world").unwrap();
    // A name change that no directory fsync made durable.
    let side = dir.join("side");
    let f = crate::fsio::create(&side, false, true).unwrap();
    crate::fsio::pwrite_all(&f, &side, b"abc", 0).unwrap();
    crate::fsio::sync_data(&f, &side).unwrap();
    crate::fsio::rename(&side, &dir.join("side2")).unwrap();
    assert_eq!(std::fs::read(dir.join("s1.partial")).unwrap(), b"helloworld", "in the page cache");
    assert!(unsynced_bytes() >= 5);

    let report = cut();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(std::fs::read(dir.join("s1.partial")).unwrap(), b"hello", "unsynced bytes rolled back");
    assert_eq!(report.bytes_by_file.get("s1.partial"), Some(&5), "{report:?}");
    assert!(!dir.join("side2").exists() && !side.exists(), "unsynced rename and creation undone");
    assert_eq!(report.names_undone, 2, "{report:?}");
    // Nothing can become durable after the cut.
    let err = m.write(Position(10), b"again").unwrap_err();
    assert!(is_eio(&err), "{err}");
    drop(m);
    assert!(Mirror::open(dir).is_err(), "no I/O until the power is back");
    reset();
    let (m, rep) = Mirror::open(dir).unwrap();
    assert_eq!((m.durable_pos(), rep.discarded_bytes), (Position(5), 0));
}

#[test]
fn synced_changes_survive_a_cut() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    arm_harsh(dir, 7);
    let (mut m, _) = Mirror::open(dir).unwrap();
    m.bind(&raw()).unwrap();
    m.start_segment(&name("s1"), Position(0)).unwrap();
    m.write(Position(0), b"0123").unwrap();
    m.complete_segment(Position(4)).unwrap();
    m.write_file(&name("h.history"), b"hist").unwrap();
    assert_eq!(unsynced_bytes(), 0, "everything was synced");
    let report = cut();
    assert_eq!((report.data_changes, report.name_changes), (0, 0), "{report:?}");
    drop(m);
    reset();
    let (m, _) = Mirror::open(dir).unwrap();
    assert_eq!(m.durable_pos(), Position(4));
    assert_eq!(std::fs::read(dir.join("s1")).unwrap(), b"0123");
    assert_eq!(std::fs::read(dir.join("h.history")).unwrap(), b"hist");
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The stream's byte at position `p`.
fn byte(p: u64) -> u8 {
    (p.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 29) as u8
}

fn bytes(from: u64, len: u64) -> Vec<u8> {
    (from..from + len).map(byte).collect()
}

#[derive(Debug, Default)]
struct Figures {
    cuts: u64,
    rolled_back: u64,
    discarded: u64,
    beyond_ack: u64,
    kept: u64,
    zeroed: u64,
    torn: u64,
}

struct ModelSeg {
    name: String,
    start: u64,
    end: Option<u64>,
}

/// One case: random operations, a cut, recovery, the checks.
fn case(seed: u64, fig: &mut Figures) {
    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let harsh = !seed.is_multiple_of(3);
    if harsh {
        arm_harsh(dir, seed)
    } else {
        arm(dir)
    }
    // Raw segments of any length, or fixed 4 KiB ones.
    let size = if seed.is_multiple_of(2) { 0 } else { 4096 };
    let id = Identity { segment_size: size, ..raw() };
    let (mut m, _) = Mirror::open(dir).unwrap();
    m.bind(&id).unwrap();
    let first = 8192 * (1 + rng.below(4));
    let mut segs: Vec<ModelSeg> = Vec::new();
    let mut side: Vec<(String, Vec<u8>)> = Vec::new();
    let mut acked = 0u64;
    let ops = 5 + rng.below(40);
    // Between two operations, or inside one: at the k-th I/O call.
    let cut_at = rng.below(ops + 1);
    let inside = seed % 4 == 1;
    if inside {
        cut_after(1 + rng.below(80));
    }
    let ctx = |what: &str| {
        let mode = if harsh { "harsh" } else { "exact" };
        format!("seed {seed} ({mode}, size {size}, cut {}): {what}", if inside { "inside" } else { "between" })
    };
    // An error is expected only once the power is cut.
    let ok = |r: Result<(), StoreError>| match r {
        Ok(()) => true,
        Err(_) if is_cut() => false,
        Err(e) => panic!("{}", ctx(&format!("unexpected failure before the cut: {e}"))),
    };
    for i in 0..ops {
        if i == cut_at && !inside {
            break;
        }
        let open = segs.last().is_some_and(|s| s.end.is_none());
        let done = match rng.below(14) {
            0..=1 if !open => {
                let start = segs.last().and_then(|s| s.end).unwrap_or(first);
                let n = format!("{:08X}", segs.len() + 1);
                let r = ok(m.start_segment(&name(&n), Position(start)));
                if r && segs.is_empty() {
                    acked = start;
                }
                if r {
                    segs.push(ModelSeg { name: n, start, end: None });
                } else if m.resume_point().segment.as_ref().is_some_and(|s| s.name.as_str() == n) {
                    // Failed after its first-segment setup: it is in the table anyway.
                    segs.push(ModelSeg { name: n, start, end: None });
                }
                r
            }
            2..=7 if open => {
                let w = m.written_pos().0;
                let seg_start = segs.last().map_or(0, |s| s.start);
                let mut len = 1 + rng.below(700);
                if size > 0 {
                    len = len.min(size - (w - seg_start));
                }
                len == 0 || ok(m.write(Position(w), &bytes(w, len)))
            }
            8..=10 if open => match m.flush() {
                Ok(p) => {
                    acked = acked.max(p.0);
                    true
                }
                r => ok(r.map(|_| ())),
            },
            11..=12 if open => {
                let w = m.written_pos().0;
                let seg = segs.last_mut().unwrap();
                if size > 0 && w - seg.start != size {
                    continue;
                }
                let r = ok(m.complete_segment(Position(w)));
                // Even a failed completion may have ended the segment on disk.
                seg.end = Some(w);
                if r {
                    acked = acked.max(m.durable_pos().0);
                }
                r
            }
            13 if !segs.is_empty() => {
                let n = format!("{:08X}.history", side.len() + 1);
                let contents = format!("history {seed} {i}").into_bytes();
                let r = ok(m.write_file(&name(&n), &contents));
                if r {
                    side.push((n, contents));
                }
                r
            }
            _ => true,
        };
        if !done {
            break;
        }
    }
    let written = m.written_pos().0;
    let report = match take_trip_report() {
        Some(r) => r,
        None => cut(),
    };
    assert!(report.errors.is_empty(), "{}", ctx(&format!("{report:?}")));
    fig.cuts += 1;
    fig.rolled_back += report.bytes_rolled_back;
    fig.kept += report.kept as u64;
    fig.zeroed += report.zeroed as u64;
    fig.torn += report.torn as u64;
    // After the cut nothing moves forward: a write fails, a flush acks nothing new.
    if segs.last().is_some_and(|s| s.end.is_none()) && (size == 0 || written < segs[segs.len() - 1].start + size) {
        let err = m.write(Position(written), &[1]).unwrap_err();
        let poisoned = matches!(err, StoreError::Poisoned(_));
        assert!(is_eio(&err) || poisoned, "{}", ctx(&format!("write after the cut: {err}")));
    }
    if let Ok(p) = m.flush() {
        assert!(p.0 <= acked.max(first), "{}", ctx(&format!("flush after the cut acked {p}")));
    }
    drop(m);
    reset();

    let (mut m, rec) = Mirror::open(dir).unwrap_or_else(|e| panic!("{}", ctx(&format!("recovery failed: {e}"))));
    let durable = rec.durable_pos.0;
    fig.discarded += rec.discarded_bytes;
    assert!(durable >= acked, "{}", ctx(&format!("recovered durable {durable} < acknowledged {acked}")));
    assert!(durable <= written.max(first), "{}", ctx(&format!("durable {durable} past written {written}")));
    fig.beyond_ack += u64::from(durable > acked);
    // The bytes below the durable position are the stream's.
    for s in segs.iter().filter(|s| s.start <= durable) {
        let fin = dir.join(&s.name);
        let path = if fin.exists() { fin } else { dir.join(format!("{}.partial", s.name)) };
        if s.start == durable && !path.exists() {
            // Started at the durable position but never recorded: recovery removed it.
            continue;
        }
        let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}", ctx(&format!("{}: {e}", path.display()))));
        let upto = s.end.map_or(durable, |e| e.min(durable));
        let keep = (upto - s.start) as usize;
        assert!(got.len() >= keep, "{}", ctx(&format!("{} is {} bytes, needs {keep}", s.name, got.len())));
        assert!(
            got[..keep] == bytes(s.start, keep as u64)[..],
            "{}",
            ctx(&format!("{} differs below durable", s.name))
        );
        // The torn tail past the durable position is gone.
        if s.end.is_none_or(|e| e > durable) {
            let tail = &got[keep..];
            assert!(
                if size == 0 { tail.is_empty() } else { tail.iter().all(|b| *b == 0) && got.len() as u64 == size },
                "{}",
                ctx(&format!("{}: {} bytes past durable {durable} survived recovery", s.name, tail.len()))
            );
        }
    }
    let partials = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".partial"))
        .count();
    assert!(partials <= 1, "{}", ctx(&format!("{partials} .partial files after recovery")));
    for (n, contents) in &side {
        assert_eq!(&std::fs::read(dir.join(n)).unwrap(), contents, "{}", ctx(&format!("side file {n}")));
    }
    // The mirror carries on from the durable position.
    if size == 0 && !segs.is_empty() {
        let rp = m.resume_point();
        if rp.segment.as_ref().is_none_or(|s| s.complete) {
            m.start_segment(&name("FFFFFFFF"), Position(durable)).unwrap();
        }
        m.write(Position(durable), &bytes(durable, 100)).unwrap();
        assert_eq!(m.flush().unwrap(), Position(durable + 100), "{}", ctx("flush after recovery"));
    }
}

#[test]
fn random_operations_then_a_power_cut_keep_every_acknowledged_byte() {
    let _s = serial();
    let cases: u64 = std::env::var("WALSHIP_POWERCUT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let base: u64 = std::env::var("WALSHIP_POWERCUT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut fig = Figures::default();
    for seed in base..base + cases {
        case(seed, &mut fig);
    }
    println!("powercut model: {fig:?}");
    // The cuts hit live data, and recovery had torn tails to discard.
    assert!(fig.rolled_back > 0 && fig.discarded > 0, "{fig:?}");
    assert!(fig.kept > 0 && fig.zeroed > 0 && fig.torn > 0, "every harsh fate drawn: {fig:?}");
}

mod pg;

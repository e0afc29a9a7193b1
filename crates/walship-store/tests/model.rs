//! Model test: random sequences of start / write / flush / complete / crash
//! (with or without garbage appended to the torn tail) against a model that
//! knows what must survive. After every step positions must agree; after
//! every crash the files must hold exactly the durable stream.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;

use common::*;
use proptest::prelude::*;
use walship_core::Position;
use walship_store::Mirror;

#[derive(Clone, Debug)]
enum Op {
    Start,
    Write(usize),
    Flush,
    Complete,
    Crash { garbage: usize },
    Epoch,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Start),
        6 => (1usize..300).prop_map(Op::Write),
        3 => Just(Op::Flush),
        2 => Just(Op::Complete),
        2 => (0usize..40).prop_map(|garbage| Op::Crash { garbage }),
        1 => Just(Op::Epoch),
    ]
}

#[derive(Debug)]
struct Seg {
    name: String,
    start: u64,
    end: Option<u64>,
}

/// What the mirror must look like.
#[derive(Debug, Default)]
struct Model {
    segs: Vec<Seg>,
    written: u64,
    durable: u64,
    epoch: u64,
    /// The current segment is recorded in the control file.
    current_recorded: bool,
    next_name: usize,
}

/// Equality with a short message: lengths and the first differing offset.
fn same(got: &[u8], want: &[u8], what: &str) {
    let diff = got.iter().zip(want).position(|(a, b)| a != b);
    assert!(
        got.len() == want.len() && diff.is_none(),
        "{what}: {} vs {} bytes, first diff {diff:?}",
        got.len(),
        want.len()
    );
}

/// Where a segment's file begins: fixed-size files are aligned, and one that
/// starts mid-file holds the bytes before its start too.
fn base(start: u64, fixed: u64) -> u64 {
    if fixed > 0 { start - start % fixed } else { start }
}

fn check_files(dir: &Path, model: &Model, fixed: u64) {
    let mut short = 0;
    for s in &model.segs {
        let b = base(s.start, fixed);
        match s.end {
            Some(end) if fixed == 0 || end - b == fixed => {
                same(&read(dir, &s.name), &bytes(b, (end - b) as usize), &s.name)
            }
            _ => {
                // Short (its timeline ended inside it) or current: `.partial`, zero-padded.
                let upto = s.end.unwrap_or(model.durable);
                short += usize::from(s.end.is_some());
                let mut want = bytes(b, (upto - b) as usize);
                if fixed > 0 {
                    want.resize(fixed as usize, 0);
                }
                same(&read(dir, &format!("{}.partial", s.name)), &want, &s.name);
            }
        }
    }
    let partials = files(dir).into_iter().filter(|f| f.ends_with(".partial")).count();
    assert!(partials <= 1 + short, "{:?}", files(dir));
}

fn run(ops: &[Op], fixed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut m = open(dir);
    let id = if fixed > 0 { common::fixed(fixed) } else { raw("model") };
    m.bind(&id).unwrap();
    let mut model = Model::default();
    for op in ops {
        let open_seg = model.segs.last().is_some_and(|s| s.end.is_none());
        match op {
            Op::Start if !open_seg => {
                let first = model.segs.is_empty();
                // Fixed-size segments are aligned files: the first starts on a boundary.
                let start = if first { 1024 } else { model.written };
                let name = format!("{:08}", model.next_name);
                model.next_name += 1;
                m.start_segment(&common::name(&name), Position(start)).unwrap();
                model.segs.push(Seg { name, start, end: None });
                model.current_recorded = first;
                if first {
                    (model.written, model.durable) = (start, start);
                }
            }
            Op::Write(n) if open_seg => {
                let b = base(model.segs.last().unwrap().start, fixed);
                let room = if fixed > 0 { (b + fixed - model.written) as usize } else { *n };
                let n = (*n).min(room);
                m.write(Position(model.written), &bytes(model.written, n)).unwrap();
                model.written += n as u64;
            }
            Op::Flush => {
                let before = model.written != model.durable || !model.current_recorded;
                assert_eq!(m.flush().unwrap(), Position(model.written));
                model.durable = model.written;
                if before && open_seg {
                    model.current_recorded = true;
                }
            }
            Op::Complete if open_seg => {
                // A fixed-size segment completed short of its file's end keeps its `.partial` name;
                // the next one starts mid-file and inherits the bytes before it.
                m.complete_segment(Position(model.written)).unwrap();
                model.segs.last_mut().unwrap().end = Some(model.written);
                model.durable = model.written;
            }
            Op::Crash { garbage } => {
                drop(m);
                if open_seg && *garbage > 0 {
                    let name = format!("{}.partial", model.segs.last().unwrap().name);
                    let mut f = std::fs::OpenOptions::new().write(true).open(dir.join(name)).unwrap();
                    // Garbage lands only past the written position: below it is the stream.
                    let at = model.written - base(model.segs.last().unwrap().start, fixed);
                    let len = if fixed > 0 { (*garbage as u64).min(fixed - at) as usize } else { *garbage };
                    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(at)).unwrap();
                    f.write_all(&vec![0x5A; len]).unwrap();
                }
                if open_seg && !model.current_recorded {
                    model.segs.pop();
                }
                model.written = model.durable;
                let (reopened, report) = Mirror::open(dir).unwrap();
                m = reopened;
                assert_eq!(report.durable_pos, Position(model.durable));
                check_files(dir, &model, fixed);
                let resume = m.resume_point();
                assert_eq!(resume.segment.map(|s| s.name.to_string()), model.segs.last().map(|s| s.name.clone()));
            }
            Op::Epoch => {
                model.epoch += 1;
                assert_eq!(m.next_epoch().unwrap(), model.epoch);
                if open_seg {
                    model.current_recorded = true;
                }
            }
            _ => {}
        }
        assert_eq!(m.written_pos(), Position(model.written), "after {op:?}");
        assert_eq!(m.durable_pos(), Position(model.durable), "after {op:?}");
        assert_eq!(m.epoch(), model.epoch);
        if let Some(s) = model.segs.last() {
            let (from, crc) = m.checksum_before(64).unwrap();
            let from_model = s.start.max(model.durable.saturating_sub(64));
            assert_eq!(from, Position(from_model));
            assert_eq!(crc, crc32fast::hash(&bytes(from_model, (model.durable - from_model) as usize)));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        // Failing cases are saved next to this file (tests/model.proptest-regressions) and replayed first.
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn raw_mirror_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops, 0);
    }

    #[test]
    fn fixed_size_mirror_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops, 512);
    }
}

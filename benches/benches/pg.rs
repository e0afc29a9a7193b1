//! PostgreSQL WAL parsing, over real PostgreSQL 15 segments (the corpus of
//! `crates/walship-source/testdata/postgres-wal`, 1 MiB segments of 8 KiB
//! pages): page-header validation, and the record walker that finds the
//! valid end (page headers, record headers, `xl_prev` chain, CRC-32C of
//! every record), as the PostgreSQL tailer runs them.
//!
//! * `validate_page/all_128_pages`: `validate_page` on every page of a
//!   segment whose 128 pages are all valid, each against its expected
//!   address and the previous page's timeline. Throughput in pages.
//! * `valid_end/*`: `valid_end` from the segment's first record. `full` is
//!   a segment holding records on every page (8752 of them; the last one
//!   continues into the next segment, which is given too, so the walk ends
//!   just after it, 18 KiB into that segment); `tail_zero` is a segment
//!   PostgreSQL was still writing (records to 0/BA9898, then zeros).
//!   Throughput in bytes of valid WAL walked. The corpus has 1 MiB segments;
//!   per-byte cost does not depend on the segment size, so a default 16 MiB
//!   segment takes about 16 times the `full` figure.
//!
//! ```text
//! cargo bench -p walship-bench --bench pg
//! ```
use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use walship_source::postgres::page::{PageExpect, validate_page};
use walship_source::postgres::{WalGeometry, WalInput, WalkOptions, find_first_record, valid_end};

/// 1 MiB segments, 8 KiB pages, as the corpus was made.
fn geometry() -> WalGeometry {
    WalGeometry::new(1 << 20, 8192).expect("the corpus geometry is valid")
}

/// A corpus file, by its path relative to the corpus.
fn read(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/walship-source/testdata/postgres-wal").join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading the WAL corpus file {}: {e}", p.display()))
}

fn validate_pages(c: &mut Criterion) {
    let g = geometry();
    let seg = read("contrecord/000000010000000000000006");
    let start = 6 << 20;
    let pages = seg.len() / g.block_size() as usize;
    let mut group = c.benchmark_group("validate_page");
    group.throughput(Throughput::Elements(pages as u64));
    group.bench_function("all_128_pages", |b| {
        b.iter(|| {
            let (mut magic, mut min_tli) = (None, 0);
            for (i, page) in black_box(&seg).chunks_exact(g.block_size() as usize).enumerate() {
                let expect = PageExpect {
                    geometry: g,
                    pageaddr: start + (i as u64) * g.block_size(),
                    sysid: None,
                    magic,
                    min_tli,
                    max_tli: Some(1),
                };
                let h = validate_page(page, &expect).expect("every page of this segment is valid");
                (magic, min_tli) = (Some(h.magic), h.tli);
            }
            min_tli
        })
    });
    group.finish();
}

fn walk(c: &mut Criterion) {
    let g = geometry();
    let mut group = c.benchmark_group("valid_end");
    let cases: [(&str, u64, Vec<Vec<u8>>); 2] = [
        (
            "full",
            6 << 20,
            vec![read("contrecord/000000010000000000000006"), read("contrecord/000000010000000000000007")],
        ),
        ("tail_zero", 0xB << 20, vec![read("tail-zero/00000001000000000000000B")]),
    ];
    for (name, seg_start, files) in &cases {
        let segs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
        let input = WalInput::new(g, *seg_start, &segs);
        let first = find_first_record(input, *seg_start, WalkOptions::default()).expect("a first record").0;
        let ve = valid_end(input, first, WalkOptions::default());
        assert!(ve.records > 0, "{name}: no valid record");
        group.throughput(Throughput::Bytes(ve.end.0 - first));
        group.bench_function(*name, |b| {
            b.iter(|| valid_end(black_box(input), black_box(first), WalkOptions::default()).end)
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Criterion's own HTML plots would draw text through the plotters build that
    // `walship-bench`'s report plots configure (ab_glyph, no system fonts): numbers only.
    config = Criterion::default().without_plots();
    targets = validate_pages, walk
}
criterion_main!(benches);

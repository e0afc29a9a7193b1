//! Checksum throughput over the buffer sizes walship checksums: the CRC-32
//! (IEEE, `crc32fast`) that every frame carries over its header and payload,
//! and the CRC-32C that every PostgreSQL WAL record carries, computed the way
//! the record walker does it (`RecordCrc`, fed in fragments as pages split a
//! record).
//!
//! ```text
//! cargo bench -p walship-bench --bench crc
//! ```
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use walship_source::postgres::record::RecordCrc;

const SIZES: [(usize, &str); 4] = [(64, "64B"), (4 << 10, "4KiB"), (128 << 10, "128KiB"), (1 << 20, "1MiB")];

/// Incompressible-looking bytes (xorshift), as in the frame benchmark.
fn payload(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        v.extend_from_slice(&state.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The frame checksum: a hasher over the 28 header bytes, then the payload
/// (as `walship_core::frame` encodes and decodes).
fn crc32_frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32_ieee_frame");
    let header = [0x5Au8; 28];
    for (len, name) in SIZES {
        let p = payload(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &p, |b, p| {
            b.iter(|| {
                let mut h = crc32fast::Hasher::new();
                h.update(black_box(&header));
                h.update(black_box(p));
                h.finalize()
            })
        });
    }
    g.finish();
}

/// The PostgreSQL record checksum: CRC-32C over the record, 8 KiB at a time
/// (a record longer than a page reaches the walker in page-sized pieces).
fn crc32c_record(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32c_pg_record");
    for (len, name) in SIZES {
        let p = payload(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &p, |b, p| {
            b.iter(|| {
                let mut crc = RecordCrc::new();
                for piece in black_box(p).chunks(8192) {
                    crc.update(piece);
                }
                crc.value()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // Criterion's own HTML plots would draw text through the plotters build that
    // `walship-bench`'s report plots configure (ab_glyph, no system fonts): numbers only.
    config = Criterion::default().without_plots();
    targets = crc32_frame, crc32c_record
}
criterion_main!(benches);

//! Frame codec throughput: `encode_header` (which checksums the payload) and
//! `decode` of whole frames, at the frame sizes the sender cuts.
//!
//! ```text
//! cargo bench -p walship-bench --bench frame
//! ```
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use walship_core::Position;
use walship_core::frame::{self, DEFAULT_MAX_PAYLOAD, Frame};

const SIZES: [(usize, &str); 3] = [(64 << 10, "64KiB"), (256 << 10, "256KiB"), (1 << 20, "1MiB")];

/// Incompressible-looking bytes (xorshift), so nothing is special about them.
fn payload(len: usize) -> Bytes {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        v.extend_from_slice(&state.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

fn encode_header(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_header");
    for (len, name) in SIZES {
        let p = payload(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &p, |b, p| {
            b.iter(|| frame::encode_header(black_box(Position(1 << 30)), black_box(42), black_box(p)))
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (len, name) in SIZES {
        let wire = Frame::Data { pos: Position(1 << 30), timestamp_us: 42, payload: payload(len).into() }.to_bytes();
        // Throughput counts the payload, as for encode_header (the header is 32 bytes).
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &wire, |b, wire| {
            // The copy into a fresh buffer happens in the untimed setup; one
            // input per iteration keeps memory flat at 1 MiB frames.
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| black_box(frame::decode(buf, DEFAULT_MAX_PAYLOAD)),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // Criterion's own HTML plots would draw text through the plotters build that
    // `walship-bench`'s report plots configure (ab_glyph, no system fonts): numbers only.
    config = Criterion::default().without_plots();
    targets = encode_header, decode
}
criterion_main!(benches);

//! Arbitrary bytes as PostgreSQL WAL segments through the page and record
//! walker that finds the valid end (`walship_source::postgres`).
//!
//! Input layout: byte 0 picks the options (bit 0: two segments, the split
//! given by bytes 1..3; bit 1: start at the first record found, else at the
//! segment start; bit 2: the page size is 1 KiB instead of 8 KiB), the rest
//! is the bytes of segment 6 of a cluster with 1 MiB segments. Committed seeds in
//! `seeds/pg_walk` (copy them into `corpus/pg_walk`) are the first pages of
//! real PostgreSQL 15 segments.
//!
//! Oracles: no panic; the valid end lies between the start and the end of
//! the bytes given; walking again gives the same answer (the walker keeps no
//! hidden state); every record the iterator yields ends at or before the
//! valid end and follows the previous one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walship_source::postgres::{WalGeometry, WalInput, WalkOptions, Walker, find_first_record, valid_end};

fuzz_target!(|data: &[u8]| {
    let Some((opts, rest)) = data.split_first() else { return };
    let Some((split, bytes)) = rest.split_first_chunk::<2>() else { return };
    let block = if opts & 4 != 0 { 1024 } else { 8192 };
    let Ok(g) = WalGeometry::new(1 << 20, block) else { return };
    let start_lsn = 6u64 << 20;
    let split = usize::from(u16::from_le_bytes(*split)).min(bytes.len());
    let two = [&bytes[..split], &bytes[split..]];
    let one = [bytes];
    let segs: &[&[u8]] = if opts & 1 != 0 { &two } else { &one };
    let input = WalInput::new(g, start_lsn, segs);
    let avail_end = start_lsn + segs.iter().map(|s| s.len() as u64).sum::<u64>();

    let start = if opts & 2 != 0 {
        match find_first_record(input, start_lsn, WalkOptions::default()) {
            Ok(p) => p.0,
            Err(_) => return,
        }
    } else {
        start_lsn
    };
    let ve = valid_end(input, start, WalkOptions::default());
    assert!(ve.end.0 >= start, "valid end {} before the start {start}", ve.end.0);
    if ve.records > 0 {
        // MAXALIGN may round the last record's end up past the bytes given by at most 7.
        assert!(ve.end.0 <= avail_end + 7, "valid end {} past the bytes given ({avail_end})", ve.end.0);
    }
    let again = valid_end(input, start, WalkOptions::default());
    assert_eq!(ve, again, "walking twice differs");

    let mut prev_end = start;
    let mut n = 0u64;
    for r in Walker::new(input, start, WalkOptions::default()) {
        assert!(r.lsn.0 >= prev_end, "record at {} overlaps the previous one ending at {prev_end}", r.lsn.0);
        assert!(r.end.0 <= ve.end.0 && r.next.0 >= r.end.0);
        prev_end = r.next.0;
        n += 1;
    }
    assert_eq!(n, ve.records);
});

//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

use walship_core::SegmentName;
use walship_store::{Identity, Mirror, RecoveryReport};

pub fn raw(id: &str) -> Identity {
    Identity { source_id: id.into(), format: "raw".into(), segment_size: 0 }
}

pub fn fixed(size: u64) -> Identity {
    Identity { source_id: "pg-7301".into(), format: "postgres".into(), segment_size: size }
}

pub fn name(s: &str) -> SegmentName {
    SegmentName::new(s).unwrap()
}

pub fn open(dir: &Path) -> Mirror {
    Mirror::open(dir).unwrap().0
}

pub fn reopen(dir: &Path) -> (Mirror, RecoveryReport) {
    Mirror::open(dir).unwrap()
}

pub fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap()
}

/// Deterministic test bytes: position-dependent so misplaced bytes show.
pub fn bytes(from: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| ((from + i) * 31 % 251) as u8).collect()
}

/// Sorted file names in `dir`.
pub fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

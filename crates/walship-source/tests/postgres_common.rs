//! Shared helpers for the PostgreSQL format tests (included with `#[path]`).
#![allow(dead_code)]
use std::path::PathBuf;

use serde_json::Value;
use walship_core::Position;
use walship_source::postgres::{WalGeometry, WalkOptions};

/// The copied corpus of real PostgreSQL 15 segments (see its README.md).
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/postgres-wal")
}

/// 1 MiB segments, 8 KiB pages, as the corpus was made.
pub fn geometry() -> WalGeometry {
    WalGeometry::new(1 << 20, 8192).expect("valid geometry")
}

/// A corpus file's bytes, by its path relative to the corpus.
pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(dir().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// expected.json.
pub fn expected() -> Value {
    let text = std::fs::read_to_string(dir().join("expected.json")).expect("read expected.json");
    serde_json::from_str(&text).expect("parse expected.json")
}

/// `X/Y` to a number.
pub fn lsn(s: &str) -> u64 {
    s.parse::<Position>().unwrap_or_else(|e| panic!("{e}")).0
}

/// The expected.json entry for a file.
pub fn file<'a>(exp: &'a Value, path: &str) -> &'a Value {
    exp["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("no entry for {path}"))
}

/// Walk options with the case's system identifier from pg_controldata.
pub fn opts(exp: &Value, case: &str) -> WalkOptions {
    let sysid = exp["clusters"][case]["system_identifier"].as_str().expect("sysid");
    WalkOptions { system_identifier: Some(sysid.parse().expect("sysid number")), ..WalkOptions::default() }
}

/// The records pg_waldump listed (it keeps the first and last 20 lines):
/// (lsn, prev, tot_len).
pub fn waldump_records(path: &str) -> Vec<(u64, u64, u32)> {
    let text = std::fs::read_to_string(dir().join(format!("{path}.waldump.txt"))).expect("read waldump");
    text.lines()
        .filter_map(|l| {
            let after = |key: &str| l.split(key).nth(1).map(|s| s.trim_start());
            let word = |key: &str| after(key).and_then(|s| s.split([',', ' ']).next());
            let tot = after("len (rec/tot):")?.split('/').nth(1)?.split(',').next()?.trim().parse().ok()?;
            Some((lsn(word("lsn:")?), lsn(word("prev")?), tot))
        })
        .collect()
}

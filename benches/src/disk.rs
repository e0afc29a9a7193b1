//! Case d: what the disk under the mirror can do with the receiver's flush
//! discipline and no network, as the bar for case c.
//!
//! The source segments are read (plain reads, tmpfs) and written in 256 KiB
//! chunks to files of the same names in the target directory, one file per
//! 16 MiB segment as the mirror does. fdatasync follows the receiver's
//! `FlushPolicy` defaults: when 20 ms have passed since the last flush with
//! bytes unflushed, or when 64 MiB are unflushed, checked after every write
//! (as the store thread does after every op); and fsync once at the end of
//! each segment, as the mirror completes one. Not modelled: the receiver's
//! extra flush whenever its queue drains (it only adds syncs), its rename
//! of a completed segment, the directory fsync and the control file.
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use walship_agent::store_thread::FlushPolicy;

use crate::data;

/// Size of one write.
pub const CHUNK: usize = 256 << 10;

/// The outcome of the plain write loop.
#[derive(Debug, Clone, Serialize)]
pub struct DiskResult {
    pub bytes: u64,
    pub secs: f64,
    pub mb_per_s: f64,
    pub fdatasyncs: u64,
    pub fsyncs: u64,
    /// Time spent inside fdatasync and fsync.
    pub sync_secs: f64,
    pub flush_interval_ms: u64,
    pub flush_max_unflushed: u64,
}

/// Copies the `total` bytes of `source` into `target` with the flush policy above.
pub fn run(source: &Path, target: &Path, total: u64) -> Result<DiskResult> {
    let policy = FlushPolicy::default();
    let mut buf = vec![0u8; CHUNK];
    let mut fdatasyncs = 0u64;
    let mut fsyncs = 0u64;
    let mut sync_time = Duration::ZERO;
    let start = Instant::now();
    let mut last_flush = Instant::now();
    for (name, len) in data::segments(total) {
        let src_path = source.join(&name);
        let dst_path = target.join(&name);
        let mut src = File::open(&src_path).with_context(|| format!("opening {}", src_path.display()))?;
        let mut dst = File::create(&dst_path).with_context(|| format!("creating {}", dst_path.display()))?;
        let mut unflushed = 0u64;
        let mut left = len;
        while left > 0 {
            let k = left.min(CHUNK as u64) as usize;
            src.read_exact(&mut buf[..k]).with_context(|| format!("reading {}", src_path.display()))?;
            dst.write_all(&buf[..k]).with_context(|| format!("writing {}", dst_path.display()))?;
            left -= k as u64;
            unflushed += k as u64;
            let due = last_flush.elapsed() >= policy.interval || unflushed >= policy.max_unflushed;
            if due && left > 0 {
                let t = Instant::now();
                dst.sync_data().with_context(|| format!("fdatasync {}", dst_path.display()))?;
                sync_time += t.elapsed();
                fdatasyncs += 1;
                unflushed = 0;
                last_flush = Instant::now();
            }
        }
        // Segment end: the whole file, metadata included, is made durable.
        let t = Instant::now();
        dst.sync_all().with_context(|| format!("fsync {}", dst_path.display()))?;
        sync_time += t.elapsed();
        fsyncs += 1;
        last_flush = Instant::now();
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(DiskResult {
        bytes: total,
        secs,
        mb_per_s: total as f64 / secs / 1e6,
        fdatasyncs,
        fsyncs,
        sync_secs: sync_time.as_secs_f64(),
        flush_interval_ms: policy.interval.as_millis() as u64,
        flush_max_unflushed: policy.max_unflushed,
    })
}

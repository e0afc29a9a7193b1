//! A WAL writer: appends deterministic pseudo-random bytes to numbered
//! segment files, fdatasync after each write, rolling every `segment_size`.
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A writer thread.
#[derive(Debug)]
pub struct Writer {
    handle: Option<JoinHandle<u64>>,
    written: Arc<AtomicU64>,
}

/// Settings of a writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub total: u64,
    pub segment_size: u64,
    pub chunk: usize,
    /// Bytes per second; `None` for as fast as possible.
    pub rate: Option<u64>,
    /// After the last byte, create an empty next segment so every data segment is sealed.
    pub seal_last: bool,
}

impl Writer {
    pub fn start(dir: &Path, cfg: WriterConfig) -> Writer {
        let written = Arc::new(AtomicU64::new(0));
        let w = written.clone();
        let dir = dir.to_path_buf();
        let handle = std::thread::spawn(move || write(&dir, &cfg, &w));
        Writer { handle: Some(handle), written }
    }

    /// Bytes written (and fdatasync'ed) so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Waits until at least `n` bytes are written.
    pub fn wait_written(&self, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.written() < n {
            assert!(Instant::now() < deadline, "writer reached only {} of {n} bytes", self.written());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the writer to finish; returns the total.
    pub fn join(mut self) -> u64 {
        self.handle.take().expect("joined once").join().expect("writer thread panicked")
    }
}

/// The name of segment `n`.
pub fn segment_name(n: u64) -> String {
    format!("{n:016X}")
}

fn path(dir: &Path, n: u64) -> PathBuf {
    dir.join(segment_name(n))
}

fn write(dir: &Path, cfg: &WriterConfig, written: &AtomicU64) -> u64 {
    let start = Instant::now();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; cfg.chunk];
    let mut seg = 0u64;
    let mut file = File::create(path(dir, seg)).expect("create segment");
    let mut in_seg = 0u64;
    let mut total = 0u64;
    while total < cfg.total {
        if in_seg == cfg.segment_size {
            file.sync_all().expect("sync segment");
            seg += 1;
            file = File::create(path(dir, seg)).expect("create segment");
            in_seg = 0;
        }
        let n = (cfg.chunk as u64).min(cfg.total - total).min(cfg.segment_size - in_seg) as usize;
        for b in buf[..n].iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = (state >> 24) as u8;
        }
        file.write_all(&buf[..n]).expect("write segment");
        file.sync_data().expect("fdatasync segment");
        in_seg += n as u64;
        total += n as u64;
        written.store(total, Ordering::Release);
        if let Some(rate) = cfg.rate {
            let due = start + Duration::from_secs_f64(total as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    file.sync_all().expect("sync segment");
    if cfg.seal_last {
        File::create(path(dir, seg + 1)).expect("create sealing segment").sync_all().expect("sync");
    }
    total
}

//! Resident memory of this process while a case runs.
//!
//! The peak (`VmHWM`) is reset through `/proc/self/clear_refs` before the
//! case when the kernel allows it, and a thread samples `VmRSS` and its
//! parts every 20 ms. Pages of a tmpfs file mapped by the sender count as
//! `RssShmem`, heap as `RssAnon`: a sender whose memory grew with the
//! backlog would show it in one of those.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

/// Memory figures of one `/proc/self/status` read, in bytes.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Mem {
    pub vm_rss: u64,
    pub vm_hwm: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    pub rss_shmem: u64,
}

impl Mem {
    /// The current figures (zeros where /proc is not available).
    pub fn now() -> Mem {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        Mem {
            vm_rss: field("VmRSS:"),
            vm_hwm: field("VmHWM:"),
            rss_anon: field("RssAnon:"),
            rss_file: field("RssFile:"),
            rss_shmem: field("RssShmem:"),
        }
    }

    fn max(self, o: Mem) -> Mem {
        Mem {
            vm_rss: self.vm_rss.max(o.vm_rss),
            vm_hwm: self.vm_hwm.max(o.vm_hwm),
            rss_anon: self.rss_anon.max(o.rss_anon),
            rss_file: self.rss_file.max(o.rss_file),
            rss_shmem: self.rss_shmem.max(o.rss_shmem),
        }
    }
}

/// What the sampler saw during one case.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RssReport {
    /// Right before the case started.
    pub before: Mem,
    /// The maximum of each figure over all samples.
    pub peak: Mem,
    /// Whether the kernel peak was reset before the case (else `peak.vm_hwm`
    /// may come from earlier in the process, e.g. writing the source).
    pub hwm_reset: bool,
}

/// A running sampler; [`stop`](Sampler::stop) returns the report.
#[derive(Debug)]
pub struct Sampler {
    before: Mem,
    hwm_reset: bool,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Mem>,
}

impl Sampler {
    pub fn start() -> Sampler {
        // "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0).
        let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let before = Mem::now();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = Mem::now();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                peak = peak.max(Mem::now());
            }
            peak.max(Mem::now())
        });
        Sampler { before, hwm_reset, stop, thread }
    }

    pub fn stop(self) -> RssReport {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.thread.join().unwrap_or_else(|_| Mem::now());
        RssReport { before: self.before, peak, hwm_reset: self.hwm_reset }
    }
}

//! The table on stdout and the JSON report.
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::bare::BareResult;
use crate::disk::DiskResult;
use crate::ship::ShipResult;
use crate::tcp_tls::TcpTlsResult;

/// The project's bar: a ≥ 0.8 × b and c ≥ 0.8 × d.
pub const BAR: f64 = 0.8;

/// Everything one `ship` run measured. Rates are decimal MB/s (10^6 bytes).
#[derive(Debug, Serialize)]
pub struct Report {
    pub bytes: u64,
    pub max_frame: u32,
    pub max_inflight: u64,
    pub tmpfs_dir: String,
    pub disk_dir: String,
    pub cpus: usize,
    /// a: walship, mirror on tmpfs.
    pub a: Option<ShipResult>,
    /// b: bare quinn, one uni stream, discard.
    pub b: Option<BareResult>,
    /// c: walship, mirror on disk.
    pub c: Option<ShipResult>,
    /// d: plain write + fdatasync loop on that disk.
    pub d: Option<DiskResult>,
    /// e: TCP + TLS 1.3 (tokio-rustls), one connection, discard.
    pub e: Option<TcpTlsResult>,
    /// Every round's MB/s for a, b, c, d, e (the cases above are the medians).
    pub rounds_mb_per_s: [Vec<f64>; 5],
    pub ratio_a_b: Option<f64>,
    /// walship against the conventional transport.
    pub ratio_a_e: Option<f64>,
    pub ratio_c_d: Option<f64>,
    /// c against the slower of its two limits, the transport (b) and the
    /// disk (d): on a machine whose disk outruns loopback QUIC, c/d cannot
    /// reach the bar however good walship is.
    pub ratio_c_min_bd: Option<f64>,
    pub bar: f64,
}

/// Anything with a rate, for the progress lines.
pub trait Rate {
    fn mb_per_s(&self) -> f64;
    fn secs(&self) -> f64;
}

impl Rate for ShipResult {
    fn mb_per_s(&self) -> f64 {
        self.mb_per_s
    }
    fn secs(&self) -> f64 {
        self.secs
    }
}

impl Rate for BareResult {
    fn mb_per_s(&self) -> f64 {
        self.mb_per_s
    }
    fn secs(&self) -> f64 {
        self.secs
    }
}

impl Rate for TcpTlsResult {
    fn mb_per_s(&self) -> f64 {
        self.mb_per_s
    }
    fn secs(&self) -> f64 {
        self.secs
    }
}

impl Rate for DiskResult {
    fn mb_per_s(&self) -> f64 {
        self.mb_per_s
    }
    fn secs(&self) -> f64 {
        self.secs
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

impl Report {
    pub fn new(bytes: u64, max_frame: u32, max_inflight: u64, tmpfs: &Path, disk: &Path) -> Report {
        Report {
            bytes,
            max_frame,
            max_inflight,
            tmpfs_dir: tmpfs.display().to_string(),
            disk_dir: disk.display().to_string(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            a: None,
            b: None,
            c: None,
            d: None,
            e: None,
            rounds_mb_per_s: Default::default(),
            ratio_a_b: None,
            ratio_a_e: None,
            ratio_c_d: None,
            ratio_c_min_bd: None,
            bar: BAR,
        }
    }

    /// One progress line as each case ends.
    pub fn case_done(&self, name: &str, r: &dyn Rate) {
        println!("case {name}: {:>8.1} MB/s ({:.2} s)", r.mb_per_s(), r.secs());
    }

    fn ratios(&mut self) {
        self.ratio_a_b = self.a.as_ref().zip(self.b.as_ref()).map(|(a, b)| a.mb_per_s / b.mb_per_s);
        self.ratio_a_e = self.a.as_ref().zip(self.e.as_ref()).map(|(a, e)| a.mb_per_s / e.mb_per_s);
        self.ratio_c_d = self.c.as_ref().zip(self.d.as_ref()).map(|(c, d)| c.mb_per_s / d.mb_per_s);
        self.ratio_c_min_bd = match (&self.b, &self.c, &self.d) {
            (Some(b), Some(c), Some(d)) => Some(c.mb_per_s / b.mb_per_s.min(d.mb_per_s)),
            _ => None,
        };
    }

    pub fn print(&mut self) {
        self.ratios();
        println!();
        let n = self.rounds_mb_per_s.iter().map(Vec::len).max().unwrap_or(0);
        for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            if !self.rounds_mb_per_s[i].is_empty() {
                let v: Vec<String> = self.rounds_mb_per_s[i].iter().map(|x| format!("{x:.1}")).collect();
                println!("rounds {name}: {} MB/s", v.join(", "));
            }
        }
        println!("median of {n} round(s):");
        println!("{:<4} {:<44} {:>10} {:>9}", "case", "what", "MB/s", "seconds");
        let row = |c: &str, what: &str, r: Option<&dyn Rate>| match r {
            Some(r) => println!("{c:<4} {what:<44} {:>10.1} {:>9.2}", r.mb_per_s(), r.secs()),
            None => println!("{c:<4} {what:<44} {:>10} {:>9}", "-", "-"),
        };
        row("a", "walship, mirror on tmpfs", self.a.as_ref().map(|r| r as &dyn Rate));
        row("b", "bare quinn, one uni stream, discard", self.b.as_ref().map(|r| r as &dyn Rate));
        row("c", "walship, mirror on disk", self.c.as_ref().map(|r| r as &dyn Rate));
        row("d", "write 256 KiB + fdatasync 20 ms/64 MiB, disk", self.d.as_ref().map(|r| r as &dyn Rate));
        row("e", "TCP + TLS 1.3 (tokio-rustls), discard", self.e.as_ref().map(|r| r as &dyn Rate));
        let verdict = |r: Option<f64>| match r {
            Some(r) if r >= BAR => format!("{r:.2} (meets >= {BAR})"),
            Some(r) => format!("{r:.2} (BELOW {BAR})"),
            None => "-".into(),
        };
        println!("a/b = {}", verdict(self.ratio_a_b));
        println!("c/d = {}", verdict(self.ratio_c_d));
        if let Some(r) = self.ratio_a_e {
            println!("a/e = {r:.2} (walship against TCP + TLS; no target, for comparison)");
        }
        if let Some(r) = self.ratio_c_min_bd {
            println!("c/min(b,d) = {r:.2} (c cannot beat the transport either)");
        }
        for (name, r) in [("a", &self.a), ("c", &self.c)] {
            let Some(r) = r else { continue };
            let (p, b) = (r.rss.peak, r.rss.before);
            println!(
                "{name}: peak VmRSS {:.1} MiB (before {:.1}; anon {:.1}, file {:.1}, shmem {:.1}), VmHWM {:.1} MiB{}; \
                 handshake {:.3} s, {} frames, {} reconnects{}",
                mib(p.vm_rss),
                mib(b.vm_rss),
                mib(p.rss_anon),
                mib(p.rss_file),
                mib(p.rss_shmem),
                mib(p.vm_hwm),
                if r.rss.hwm_reset { "" } else { " (not reset: process lifetime)" },
                r.handshake_secs,
                r.frames_sent,
                r.reconnects,
                match r.verified {
                    Some(true) => ", mirror verified",
                    Some(false) => ", MIRROR DIFFERS",
                    None => "",
                }
            );
            let l = &r.admin_latency;
            println!(
                "{name}: GET /v1/lag while shipping: {} requests, {} failed, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                l.requests, l.failures, l.p50_ms, l.p99_ms, l.max_ms
            );
        }
        if let Some(b) = &self.b {
            println!(
                "b: mtu {}, {} packets, {} lost, {} congestion events",
                b.mtu, b.sent_packets, b.lost_packets, b.congestion_events
            );
        }
        if let Some(e) = &self.e {
            println!("e: cipher suite {}", e.cipher_suite);
        }
        if let Some(d) = &self.d {
            println!("d: {} fdatasync + {} fsync, {:.2} s inside them", d.fdatasyncs, d.fsyncs, d.sync_secs);
        }
    }

    pub fn write(&mut self, path: &Path) -> Result<()> {
        self.ratios();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self).context("encoding the report")?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

//! The markdown section, the plot and the JSON report of `ship`.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

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
    /// f: the loop of d, writing into the tmpfs that holds a's mirror: the
    /// mirror medium's own speed (on a VM, writes to fresh tmpfs pages can
    /// cost more than the network path).
    pub f: Option<DiskResult>,
    /// Every round's MB/s for a, b, c, d, e, f (the cases above are the medians).
    pub rounds_mb_per_s: [Vec<f64>; 6],
    pub ratio_a_b: Option<f64>,
    /// walship against the conventional transport.
    pub ratio_a_e: Option<f64>,
    pub ratio_c_d: Option<f64>,
    /// c against the slower of its two limits, the transport (b) and the
    /// disk (d): on a machine whose disk outruns loopback QUIC, c/d cannot
    /// reach the bar however good walship is.
    pub ratio_c_min_bd: Option<f64>,
    /// a against the slower of its two limits, the transport (b) and the
    /// tmpfs medium (f).
    pub ratio_a_min_bf: Option<f64>,
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
            f: None,
            rounds_mb_per_s: Default::default(),
            ratio_a_b: None,
            ratio_a_e: None,
            ratio_c_d: None,
            ratio_c_min_bd: None,
            ratio_a_min_bf: None,
            bar: BAR,
        }
    }

    /// One progress line as each case ends.
    pub fn case_done(&self, name: &str, r: &dyn Rate) {
        println!("case {name}: {:>8.1} MB/s ({:.2} s)", r.mb_per_s(), r.secs());
    }

    /// Fills in the ratios from the cases measured (called by `run`, again by `write`).
    pub fn ratios(&mut self) {
        self.ratio_a_b = self.a.as_ref().zip(self.b.as_ref()).map(|(a, b)| a.mb_per_s / b.mb_per_s);
        self.ratio_a_e = self.a.as_ref().zip(self.e.as_ref()).map(|(a, e)| a.mb_per_s / e.mb_per_s);
        self.ratio_c_d = self.c.as_ref().zip(self.d.as_ref()).map(|(c, d)| c.mb_per_s / d.mb_per_s);
        self.ratio_c_min_bd = match (&self.b, &self.c, &self.d) {
            (Some(b), Some(c), Some(d)) => Some(c.mb_per_s / b.mb_per_s.min(d.mb_per_s)),
            _ => None,
        };
        self.ratio_a_min_bf = match (&self.a, &self.b, &self.f) {
            (Some(a), Some(b), Some(f)) => Some(a.mb_per_s / b.mb_per_s.min(f.mb_per_s)),
            _ => None,
        };
    }

    /// The cases measured: (case, what, the case's median run).
    fn cases(&self) -> Vec<(&'static str, &'static str, &dyn Rate)> {
        let mut v: Vec<(&'static str, &'static str, &dyn Rate)> = Vec::new();
        if let Some(r) = &self.a {
            v.push(("a", "walship, mirror on tmpfs", r));
        }
        if let Some(r) = &self.b {
            v.push(("b", "bare quinn, one uni stream, discard", r));
        }
        if let Some(r) = &self.c {
            v.push(("c", "walship, mirror on disk", r));
        }
        if let Some(r) = &self.d {
            v.push(("d", "write 256 KiB + fdatasync 20 ms/64 MiB, disk", r));
        }
        if let Some(r) = &self.e {
            v.push(("e", "TCP + TLS 1.3 (tokio-rustls), discard", r));
        }
        if let Some(r) = &self.f {
            v.push(("f", "the loop of d into tmpfs (the tmpfs mirror's medium)", r));
        }
        v
    }

    /// The markdown section: what ran, the table, the ratios against the bar.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let n = self.rounds_mb_per_s.iter().map(Vec::len).max().unwrap_or(0);
        let _ = writeln!(s, "### ship: shipping a backlog\n");
        let _ = writeln!(
            s,
            "{:.2} GiB of pre-written raw WAL (16 MiB segments on tmpfs, `{}`) shipped over loopback by each case; \
             walship cases are timed from sender start until the sender sees the last byte flushed on the receiver. \
             Largest frame {} KiB, at most {} MiB in flight, {} CPUs. {n} round(s), the cases alternated; each \
             case's figure is the median of its rounds. Rates are decimal MB/s (10^6 bytes per second). Disk cases \
             ran in `{}`.\n",
            self.bytes as f64 / (1u64 << 30) as f64,
            self.tmpfs_dir,
            self.max_frame >> 10,
            self.max_inflight >> 20,
            self.cpus,
            self.disk_dir
        );
        let _ = writeln!(s, "| case | what | MB/s (median) | seconds | MB/s per round |");
        let _ = writeln!(s, "|---|---|---:|---:|---|");
        for (c, what, r) in self.cases() {
            let i = usize::from(c.as_bytes()[0] - b'a');
            let rounds: Vec<String> = self.rounds_mb_per_s[i].iter().map(|x| format!("{x:.1}")).collect();
            let _ = writeln!(s, "| {c} | {what} | {:.1} | {:.2} | {} |", r.mb_per_s(), r.secs(), rounds.join(", "));
        }
        let _ = writeln!(s);
        let verdict = |r: f64| if r >= BAR { "met" } else { "MISSED" };
        let mut rows = Vec::new();
        if let Some(r) = self.ratio_a_b {
            rows.push(format!("| a / b (walship tmpfs vs bare quinn) | {r:.2} | >= {BAR} | {} |", verdict(r)));
        }
        if let Some(r) = self.ratio_c_d {
            rows.push(format!("| c / d (walship disk vs write + fdatasync) | {r:.2} | >= {BAR} | {} |", verdict(r)));
        }
        if let Some(r) = self.ratio_a_e {
            rows.push(format!("| a / e (walship vs TCP + TLS) | {r:.2} | none, for comparison | - |"));
        }
        if let Some(r) = self.ratio_c_min_bd {
            rows.push(format!(
                "| c / min(b, d) (c against the slower of its two limits, transport and disk) | {r:.2} | none | - |"
            ));
        }
        if let Some(r) = self.ratio_a_min_bf {
            rows.push(format!(
                "| a / min(b, f) (a against the slower of its two limits, transport and tmpfs) | {r:.2} | none | - |"
            ));
        }
        if !rows.is_empty() {
            let _ = writeln!(s, "| ratio | value | bar | status |\n|---|---:|---|---|");
            for r in rows {
                let _ = writeln!(s, "{r}");
            }
            let _ = writeln!(s);
        }
        for (name, r) in [("a", &self.a), ("c", &self.c)] {
            let Some(r) = r else { continue };
            let (p, b) = (r.rss.peak, r.rss.before);
            let _ = writeln!(
                s,
                "- {name}: peak VmRSS {:.1} MiB (before {:.1}; anon {:.1}, file {:.1}, shmem {:.1}), VmHWM {:.1} MiB{}; \
                 handshake {:.3} s, {} frames, {} reconnects{}.",
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
                    Some(true) => ", mirror verified identical",
                    Some(false) => ", MIRROR DIFFERS from the source",
                    None => "",
                }
            );
            let l = &r.admin_latency;
            let _ = writeln!(
                s,
                "- {name}: `GET /v1/lag` while shipping: {} requests, {} failed, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms.",
                l.requests, l.failures, l.p50_ms, l.p99_ms, l.max_ms
            );
            let f = &r.fsync;
            if f.count > 0 {
                let _ = writeln!(
                    s,
                    "- {name}: receiver fdatasync: {} calls, mean {:.2} ms, p50 <= {:.2} ms, p99 <= {:.2} ms \
                     (histogram bucket upper bounds).",
                    f.count, f.mean_ms, f.p50_upper_ms, f.p99_upper_ms
                );
            }
        }
        if let Some(b) = &self.b {
            let _ = writeln!(
                s,
                "- b: path MTU {}, {} packets sent, {} lost, {} congestion events; CPU s/GB: sending end {:.2}, \
                 receiving end {:.2} (each on its own thread).",
                b.mtu,
                b.sent_packets,
                b.lost_packets,
                b.congestion_events,
                b.sender_cpu_s_per_gb(),
                b.receiver_cpu_s_per_gb()
            );
        }
        if let Some(d) = &self.d {
            let _ =
                writeln!(s, "- d: {} fdatasync + {} fsync, {:.2} s inside them.", d.fdatasyncs, d.fsyncs, d.sync_secs);
        }
        if let Some(e) = &self.e {
            let _ = writeln!(s, "- e: cipher suite {}.", e.cipher_suite);
        }
        s
    }

    /// A bar chart of each measured case's median MB/s.
    pub fn plots(&self, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        let short = |c: &str| match c {
            "a" => "a walship tmpfs",
            "b" => "b bare quinn",
            "c" => "c walship disk",
            "d" => "d write+fdatasync",
            "e" => "e TCP+TLS",
            _ => "f write tmpfs",
        };
        let bars: Vec<(String, f64)> =
            self.cases().into_iter().map(|(c, _, r)| (short(c).to_string(), r.mb_per_s())).collect();
        if bars.is_empty() {
            return Ok(Vec::new());
        }
        let path = dir.join("ship_throughput.png");
        let n = self.rounds_mb_per_s.iter().map(Vec::len).max().unwrap_or(0);
        let title =
            format!("ship: {:.2} GiB backlog, MB/s, median of {n} round(s)", self.bytes as f64 / (1u64 << 30) as f64);
        crate::plot::bar_chart(&path, &title, "throughput (MB/s)", &bars)?;
        Ok(vec![("ship: throughput per case (MB/s)".into(), path)])
    }

    /// The markdown on stdout (the `ship` subcommand's output).
    pub fn print(&self) {
        println!("\n{}", self.markdown());
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

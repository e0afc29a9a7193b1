//! A real Prometheus scrapes the sender's `/metrics` and answers the
//! queries the docs suggest; `promtool check metrics` accepts the text.
//!
//! Needs Debian's `prometheus` package (`/usr/bin/prometheus`, `/usr/bin/promtool`).
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use walship_tests::writer::WriterConfig;
use walship_tests::{Env, Writer, field, http};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

fn require(bin: &str) -> PathBuf {
    let p = PathBuf::from(bin);
    assert!(p.exists(), "{bin} is missing: apt-get install prometheus");
    p
}

/// A Prometheus server child process; killed when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second as job `walship-send`.
    fn start(dir: &Path, target: &str) -> Prometheus {
        let bin = require(PROMETHEUS);
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: walship-send\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("prometheus.log");
        let f = std::fs::File::create(&log).expect("prometheus log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup log"))
            .stderr(f)
            .spawn()
            .expect("spawn prometheus");
        Prometheus { child, addr, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/-/ready` answers 200.
    fn wait_ready(&mut self, timeout: Duration) {
        let agent = http::agent();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = http::get_with(&agent, &self.addr, "/-/ready") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited with {status}; log:\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "prometheus not ready within {timeout:?}; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `/api/v1/query?query=...`: the result vector.
    fn query(&self, q: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", encode(q));
        let body = http::get(&self.addr, &path);
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("query {q}: not JSON ({e}): {body}"));
        assert_eq!(v["status"], "success", "query {q}: {v}");
        assert_eq!(v["data"]["resultType"], "vector", "query {q}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls `q` until `ok` holds for its result vector; returns that vector.
    fn wait_query(&self, q: &str, timeout: Duration, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.query(q);
            if ok(&r) {
                return r;
            }
            let targets = http::get(&self.addr, "/api/v1/targets");
            assert!(Instant::now() < deadline, "query {q} still {r:?} after {timeout:?}; targets: {targets}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The sample value of a vector element (a finite number, or panics).
fn value(e: &Value) -> f64 {
    e["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no value in {e}"))
}

/// Pipes the `/metrics` text of `admin` to `promtool check metrics`.
///
/// promtool (2.42, and `check metrics` in later 2.x) parses the classic
/// Prometheus text format, not OpenMetrics. In OpenMetrics a counter family
/// `x` is declared by `# HELP x` / `# TYPE x counter` and its sample is
/// `x_total`; the classic parser takes `x_total` for a separate family with
/// no HELP and lints "x_total no help text" (exit status 3). Exactly those
/// findings, for counters whose family does have HELP and TYPE, are
/// accepted; a parse error (exit 1) or any other finding fails.
fn lint(admin: &str) {
    let text = http::metrics(admin);
    let mut child = Command::new(require(PROMTOOL))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("pipe metrics to promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("promtool check metrics ({admin}): {}\n{said}", out.status);
    if out.status.success() {
        return;
    }
    assert_eq!(
        out.status.code(),
        Some(3),
        "promtool check metrics could not parse the text:\n{said}\nmetrics:\n{text}"
    );
    for line in said.lines().filter(|l| !l.trim().is_empty()) {
        let family = line
            .strip_suffix(" no help text")
            .and_then(|n| n.strip_suffix("_total"))
            .unwrap_or_else(|| panic!("promtool check metrics: unexpected finding {line:?}\nmetrics:\n{text}"));
        assert!(
            text.contains(&format!("# HELP {family} ")) && text.contains(&format!("# TYPE {family} counter\n")),
            "promtool: {line:?} is not the OpenMetrics counter naming artifact\nmetrics:\n{text}"
        );
    }
}

#[test]
fn prometheus_scrapes_the_sender_and_answers_lag_queries() {
    require(PROMETHEUS);
    require(PROMTOOL);
    let env = Env::new();
    let recv = env.receiver_with("receiver", "127.0.0.1:0", &["--admin-addr", "127.0.0.1:0"]);
    let to = field(&recv.wait_log("receiver listening", Duration::from_secs(5)), "listen").expect("listen addr");
    // Steady: 40 KiB/s in 4 KiB writes (one every 100 ms) for up to 60 s.
    let writer = Writer::start(
        &env.wal,
        WriterConfig {
            total: (60 * 40) << 10,
            segment_size: 16 << 20,
            chunk: 4096,
            rate: Some(40 << 10),
            seal_last: false,
        },
    );
    writer.wait_written(4096, Duration::from_secs(10));
    let send = env.sender("sender", &to, &["--admin-addr", "127.0.0.1:0", "--rpo-target", "1s"]);
    let admin = field(&send.wait_log("admin endpoint listening", Duration::from_secs(10)), "admin").expect("admin");

    let prom_dir = env.path("prometheus");
    std::fs::create_dir_all(&prom_dir).expect("prometheus dir");
    let mut prom = Prometheus::start(&prom_dir, &admin);
    prom.wait_ready(Duration::from_secs(30));

    let t = Duration::from_secs(25);
    let has_receiver = |r: &[Value]| !r.is_empty();
    let current = prom.wait_query("walship_receiver_flush_lag_current_seconds", t, has_receiver);
    assert_eq!(current.len(), 1, "one receiver: {current:?}");
    assert_eq!(current[0]["metric"]["receiver"].as_str(), Some(to.as_str()), "receiver label is --to: {current:?}");
    assert_eq!(current[0]["metric"]["job"].as_str(), Some("walship-send"));
    let up = prom.query("up{job=\"walship-send\"}");
    assert!(up.len() == 1 && value(&up[0]) == 1.0, "the scrape of {admin} succeeds: {up:?}");
    let rpo = prom.wait_query("walship_rpo_exposure_seconds", t, has_receiver);
    assert!(value(&rpo[0]) >= 0.0, "{rpo:?}");
    let target = prom.wait_query("walship_rpo_target_seconds", t, has_receiver);
    assert_eq!(value(&target[0]), 1.0, "--rpo-target 1s: {target:?}");
    let p50 = prom.wait_query("histogram_quantile(0.5, rate(walship_flush_lag_seconds_bucket[10s]))", t, |r| {
        r.first().is_some_and(|e| value(e).is_finite())
    });
    assert_eq!(p50[0]["metric"]["receiver"].as_str(), Some(to.as_str()), "receiver label is --to: {p50:?}");
    let p50 = value(&p50[0]);
    assert!(p50 > 0.0 && p50 < 60.0, "median flush lag {p50} s");
    let within =
        prom.wait_query("walship_rpo_within_target_seconds_total", t, |r| r.first().is_some_and(|e| value(e) > 0.0));
    let ratio = prom.query(
        "increase(walship_rpo_within_target_seconds_total[1m]) / (increase(walship_rpo_within_target_seconds_total[1m]) \
         + increase(walship_rpo_outside_target_seconds_total[1m]))",
    );
    eprintln!(
        "prometheus: flush lag now {} s, RPO exposure {} s, p50 (rate 10s) {p50} s, within target {} s, meets-RPO ratio {:?}",
        value(&current[0]),
        value(&rpo[0]),
        value(&within[0]),
        ratio.first().map(value)
    );

    // promtool lints the text both processes serve.
    lint(&admin);
    let recv_admin = field(&recv.wait_log("admin endpoint listening", Duration::from_secs(5)), "admin").expect("admin");
    lint(&recv_admin);

    drop(prom);
    drop(writer);
    drop(send);
    drop(recv);
}

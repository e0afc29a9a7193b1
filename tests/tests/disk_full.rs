//! The receiver's disk fills up: it stops acknowledging, says so in its log,
//! `/v1/lag` and metrics, the sender backs off instead of hammering it, and
//! once space is freed shipping resumes by itself with nothing acked lost
//! and nothing torn left behind.
//!
//! The mirror lives on a size-limited tmpfs the test mounts (root only, as
//! in CI); "freeing space" is a remount with a larger size.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use walship_tests::http::{lag, metrics, sample};
use walship_tests::writer::WriterConfig;
use walship_tests::{Env, Writer, field, file_crcs, mirror_durable};

const MIB: u64 = 1 << 20;
const T: Duration = Duration::from_secs(60);

/// A tmpfs of `size` MiB at `dir`, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size_mib: u64) -> Option<SmallFs> {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        if !out.status.success() {
            let euid = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(str::to_owned))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
            // Only root can mount; anywhere else this test cannot run. As root
            // (CI) a failure is a real failure.
            assert_ne!(euid.as_deref(), Some("0"), "mount tmpfs failed: {}", String::from_utf8_lossy(&out.stderr));
            eprintln!("SKIPPED: not root, cannot mount a small filesystem");
            return None;
        }
        Some(SmallFs(dir.to_owned()))
    }

    fn resize(&self, size_mib: u64) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size_mib}m")])
            .arg(&self.0)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "remount: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn wait_for<V>(what: &str, f: impl FnMut() -> Option<V>) -> V {
    walship_tests::eventually(what, T, f)
}

fn counter(admin: &str, name: &str) -> f64 {
    sample(&metrics(admin), name, &[]).unwrap_or_else(|| panic!("{name} missing"))
}

#[test]
fn a_full_disk_stops_acks_backs_off_and_resumes_once_space_is_freed() {
    let mut env = Env::new();
    let Some(fs) = SmallFs::mount(&env.path("small"), 12) else { return };
    env.mirror = env.path("small").join("mirror");

    let recv = env.receiver_with("receiver", "127.0.0.1:0", &["--admin-addr", "0"]);
    let addr = field(&recv.wait_log("receiver listening", T), "listen").expect("listen addr");
    let radmin = field(&recv.wait_log("admin endpoint listening", T), "admin").expect("admin addr");
    // 32 MiB of WAL for a 12 MiB disk.
    let w = Writer::start(
        &env.wal,
        WriterConfig { total: 32 * MIB, segment_size: 4 * MIB, chunk: 64 << 10, rate: None, seal_last: true },
    );
    let sender = env.sender("sender", &addr, &["--admin-addr", "0"]);
    let sadmin = field(&sender.wait_log("admin endpoint listening", T), "admin").expect("admin addr");
    let total = w.join();

    let line = recv.wait_log("storage failure", T);
    assert!(line.contains("No space left on device"), "the log names the cause: {line}");
    let report = lag(&radmin);
    let err = report["storage_error"].as_str().unwrap_or_else(|| panic!("storage_error in /v1/lag: {report}"));
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(counter(&radmin, "walship_storage_failing"), 1.0);

    // Stalled: what was acknowledged as flushed is durable, and no more.
    let acked = |admin: &str| lag(admin)["receivers"][0]["flush_pos"].as_u64().expect("flush_pos");
    let stuck = mirror_durable(&env.mirror);
    assert!(stuck < total, "the disk cannot hold it all");
    assert!(acked(&sadmin) <= stuck, "an ack never runs ahead of the durable position");
    let seen = wait_for("the sender to see the receiver's storage error", || {
        lag(&sadmin)["receivers"][0]["last_error"].as_str().filter(|e| e.contains("No space")).map(str::to_owned)
    });
    println!("sender's view: {seen}");

    // Backing off, not spinning: with the backoff reset after every
    // handshake it would retry every 50 ms (~60 times in 3 s); capped at 500 ms it is ~9.
    let before = counter(&radmin, "walship_storage_failures_total");
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let retries = counter(&radmin, "walship_storage_failures_total") - before;
    println!("storage failures in {:?} while full: {retries}", t0.elapsed());
    assert!(retries <= 15.0, "the sender must back off against a full disk, saw {retries} retries in 3 s");
    assert_eq!(mirror_durable(&env.mirror), stuck, "nothing moves while the disk is full");

    // Free space: shipping resumes by itself.
    fs.resize(128);
    walship_tests::wait_durable(&env.mirror, total, T);
    walship_tests::wait_complete(&env.wal, &env.mirror, T);
    let source: Vec<_> = file_crcs(&env.wal, |_| true).into_iter().filter(|f| f.1 > 0).collect();
    let mirror = file_crcs(&env.mirror, |n| !n.ends_with(".partial") && !n.starts_with("walship."));
    assert_eq!(mirror, source, "byte-identical after the disk was full");
    let out = env.verify();
    assert!(out.status.success(), "verify: {}", String::from_utf8_lossy(&out.stdout));
    wait_for("the storage error to clear", || lag(&radmin)["storage_error"].is_null().then_some(()));
    assert_eq!(counter(&radmin, "walship_storage_failing"), 0.0);
    wait_for("the sender's flush ack to reach the end", || (acked(&sadmin) == total).then_some(()));
    println!(
        "disk full: stalled at {stuck} of {total} bytes, {} storage failures, resumed after the remount",
        counter(&radmin, "walship_storage_failures_total")
    );
    drop(sender);
    drop(recv);
}

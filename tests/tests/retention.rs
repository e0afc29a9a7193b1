//! `walship wait --segment` as PostgreSQL's archive_command: it holds a
//! segment back while the receivers do not have it, lets it go once the
//! unshipped WAL exceeds `--max-retained` (logged and counted), and skips
//! the files PostgreSQL archives that are not segments of the stream.
use std::process::Command;
use std::time::Duration;

use walship_tests::{Env, field, http};

const T: Duration = Duration::from_secs(30);

fn wait_segment(admin: &str, segment: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(walship_tests::walship_bin())
        .args(["wait", "--admin", admin, "--segment", segment])
        .args(extra)
        .output()
        .expect("run walship wait");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // Errors (exit 2) print to stderr only.
    let json = serde_json::from_str(&line).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json)
}

fn write_segments(env: &Env, n: usize, size: usize) {
    for i in 1..=n {
        std::fs::write(env.wal.join(format!("seg-{i:04}")), vec![i as u8; size]).expect("write segment");
    }
}

/// A sender whose only receiver is down (nothing listens on the port).
fn sender_without_receiver(env: &Env, name: &str, extra: &[&str]) -> (walship_tests::Proc, String) {
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let to = dead.local_addr().expect("addr").to_string();
    drop(dead);
    let mut args = vec!["--admin-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let p = env.sender(name, &to, &args);
    let line = p.wait_log("admin endpoint listening", T);
    let admin = field(&line, "admin").expect("admin addr");
    (p, admin)
}

#[test]
fn segments_are_held_while_unshipped_and_released_past_max_retained() {
    let env = Env::new();
    write_segments(&env, 3, 1 << 20);
    // 3 MiB unshipped, limit 8 MiB: held back (the wait times out, archive_command fails, PostgreSQL retries).
    let (_held, admin) = sender_without_receiver(&env, "held", &["--max-retained", "8MiB"]);
    let (code, json) = wait_segment(&admin, "seg-0001", &["--timeout", "300ms"]);
    assert_eq!((code, json["outcome"].as_str()), (4, Some("timeout")), "{json}");
    drop(_held);

    // Limit 2 MiB: 3 MiB unshipped exceeds it, so the segment is let go, logged and counted.
    let (sender, admin) = sender_without_receiver(&env, "releasing", &["--max-retained", "2MiB"]);
    let (code, json) = wait_segment(&admin, "seg-0001", &["--timeout", "10s"]);
    assert_eq!((code, json["outcome"].as_str()), (0, Some("released")), "{json}");
    let line = sender.wait_log("released a segment that is NOT durable", T);
    assert!(line.contains("ERROR"), "logged at error level: {line}");
    assert!(line.contains("seg-0001"), "{line}");
    let metrics = http::get(&admin, "/metrics");
    assert!(metrics.contains("walship_retention_released_segments_total 1"), "{metrics}");
    assert!(metrics.contains("walship_retention_max_bytes 2097152"), "{metrics}");
    // The open last segment is not complete: an error, not a release.
    let (code, _) = wait_segment(&admin, "seg-0003", &["--timeout", "1s"]);
    assert_eq!(code, 2, "an incomplete segment cannot be archived");
}

#[test]
fn a_shipped_segment_is_durable_and_needs_no_release() {
    let env = Env::new();
    write_segments(&env, 2, 256 << 10);
    let receiver = env.receiver("receiver", "127.0.0.1:0");
    let addr = field(&receiver.wait_log("receiver listening", T), "listen").expect("listen");
    let sender = env.sender("sender", &addr, &["--admin-addr", "127.0.0.1:0", "--max-retained", "1KiB"]);
    let admin = field(&sender.wait_log("admin endpoint listening", T), "admin").expect("admin");
    // Once shipped, nothing is retained: the wait is durable, not released.
    walship_tests::wait_durable(&env.mirror, 512 << 10, T);
    let (code, json) = wait_segment(&admin, "seg-0001", &["--timeout", "20s"]);
    assert_eq!((code, json["outcome"].as_str()), (0, Some("durable")), "{json}");
    assert!(env.mirror.join("seg-0001").exists() || env.mirror.join("seg-0001.partial").exists());
    let metrics = http::get(&admin, "/metrics");
    assert!(metrics.contains("walship_retention_released_segments_total 0"), "{metrics}");
    // archive_command may run a moment before the sender sees its segment complete: the wait
    // waits for it, up to its timeout, instead of failing at once (seg-0002 is open until
    // seg-0003 appears).
    let t0 = std::time::Instant::now();
    let (code, _) = wait_segment(&admin, "seg-0002", &["--timeout", "400ms"]);
    assert_eq!(code, 2, "still open after the timeout");
    assert!(t0.elapsed() >= Duration::from_millis(400), "it waited for the segment: {:?}", t0.elapsed());
    let waiter = {
        let admin = admin.clone();
        std::thread::spawn(move || wait_segment(&admin, "seg-0002", &["--timeout", "20s"]))
    };
    write_segments_from(&env, 3, 1, 256 << 10);
    let (code, json) = waiter.join().expect("waiter");
    assert_eq!((code, json["outcome"].as_str()), (0, Some("durable")), "{json}");
}

fn write_segments_from(env: &Env, first: usize, n: usize, size: usize) {
    for i in first..first + n {
        std::fs::write(env.wal.join(format!("seg-{i:04}")), vec![i as u8; size]).expect("write segment");
    }
}

#[test]
fn postgres_files_that_are_not_segments_are_skipped_without_a_sender() {
    // Nothing listens at this admin address: these names never reach a sender.
    for name in ["00000002.history", "000000010000000000000002.00000028.backup", "000000010000000000000008.partial"] {
        let (code, json) = wait_segment("127.0.0.1:9", name, &[]);
        assert_eq!((code, json["outcome"].as_str()), (0, Some("skipped")), "{name}: {json}");
        assert!(json["reason"].as_str().is_some_and(|r| !r.is_empty()));
    }
    // A segment name does need the sender: unreachable is an error (exit 2), never success.
    let out = Command::new(walship_tests::walship_bin())
        .args(["wait", "--admin", "127.0.0.1:9", "--segment", "000000010000000000000002", "--timeout", "1s"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

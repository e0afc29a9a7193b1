//! Semi-synchronous waits with real processes: a quorum of two out of
//! three receivers, fallback to async when the quorum is lost, recovery
//! without restarting the sender, and `--sync-timeout never`.
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use walship_tests::{Env, Proc, field, http, tls_args};

const T: Duration = Duration::from_secs(30);

/// `walship wait` against `admin`: (exit code, JSON line).
fn wait(admin: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(walship_tests::walship_bin())
        .args(["wait", "--admin", admin])
        .args(extra)
        .output()
        .expect("run walship wait");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let json = serde_json::from_str(&line).unwrap_or_else(|e| {
        panic!("walship wait printed no JSON ({e}): {line:?} / {}", String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().unwrap_or(-1), json)
}

fn append(env: &Env, bytes: usize) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(env.wal.join("seg-0001")).expect("open");
    f.write_all(&vec![0x5a; bytes]).expect("append");
    f.sync_data().expect("fdatasync");
}

struct Mirror {
    dir: PathBuf,
    addr: String,
    proc: Option<Proc>,
}

fn start_receiver(env: &Env, i: usize, listen: &str) -> Mirror {
    let dir = env.path(&format!("mirror-{i}"));
    let mut args = vec!["receive".to_string(), "--listen".into(), listen.into(), "--dir".into()];
    args.push(dir.display().to_string());
    args.extend(tls_args(&env.certs, "server"));
    let p = Proc::spawn(&format!("receiver-{i}"), &args, &env.path(&format!("receiver-{i}.log")));
    let line = p.wait_log("receiver listening", T);
    Mirror { dir, addr: field(&line, "listen").expect("listen"), proc: Some(p) }
}

#[test]
fn quorum_of_two_survives_one_loss_degrades_on_two_and_recovers() {
    let env = Env::new();
    append(&env, 100_000);
    let mut rs: Vec<Mirror> = (0..3).map(|i| start_receiver(&env, i, "127.0.0.1:0")).collect();
    // env.sender passes --to for the first receiver; the other two go in the extra arguments.
    let sender = env.sender(
        "sender",
        &rs[0].addr,
        &[
            "--to",
            &rs[1].addr,
            "--to",
            &rs[2].addr,
            "--sync-quorum",
            "2",
            "--sync-timeout",
            "1s",
            "--admin-addr",
            "127.0.0.1:0",
        ],
    );
    let admin = field(&sender.wait_log("admin endpoint listening", T), "admin").expect("admin");

    let (code, j) = wait(&admin, &[]);
    assert_eq!((code, j["outcome"].as_str()), (0, Some("durable")), "all three up: {j}");
    assert_eq!(j["position"], 100_000);

    // One receiver dies: two remain, waits are still durable.
    rs[0].proc.take().expect("running").kill9();
    append(&env, 10_000);
    let (code, j) = wait(&admin, &[]);
    assert_eq!((code, j["outcome"].as_str()), (0, Some("durable")), "one down, quorum 2 of 2 left: {j}");
    assert_eq!(j["position"], 110_000);

    // A second dies: the wait degrades after --sync-timeout, and so does the sender.
    rs[1].proc.take().expect("running").kill9();
    append(&env, 10_000);
    let started = Instant::now();
    let (code, j) = wait(&admin, &[]);
    assert_eq!((code, j["outcome"].as_str()), (3, Some("degraded")), "quorum lost: {j}");
    assert!(started.elapsed() >= Duration::from_millis(900), "degraded only after the sync timeout");
    assert!(j["waited_ms"].as_u64().is_some_and(|ms| ms >= 900), "{j}");
    sender.wait_log("semi-sync degraded to async", T);
    let (code, j) = wait(&admin, &[]);
    assert_eq!((code, j["waited_ms"].as_u64()), (3, Some(0)), "while degraded, waits return at once: {j}");
    let lag = http::lag(&admin);
    assert_eq!(lag["sync"]["state"], "degraded");

    // Both come back on their old addresses: sync again without restarting the sender.
    for (i, r) in rs.iter_mut().enumerate().take(2) {
        r.proc = start_receiver(&env, i, &r.addr.clone()).proc;
    }
    sender.wait_log("semi-sync restored", T);
    append(&env, 10_000);
    let (code, j) = wait(&admin, &[]);
    assert_eq!((code, j["outcome"].as_str()), (0, Some("durable")), "recovered: {j}");
    let m = http::metrics(&admin);
    assert_eq!(http::sample(&m, "walship_sync_fallbacks_total", &[]), Some(1.0));
    assert_eq!(http::sample(&m, "walship_sync_recoveries_total", &[]), Some(1.0));
    assert_eq!(http::sample(&m, "walship_sync_state", &[("state", "sync")]), Some(1.0));

    // All three mirrors end byte-identical with the source.
    let total = 130_000u64;
    for r in &rs {
        walship_tests::wait_durable(&r.dir, total, T);
        let got = std::fs::read(r.dir.join("seg-0001.partial")).expect("mirror segment");
        assert_eq!(got, std::fs::read(env.wal.join("seg-0001")).expect("source"), "{}", r.dir.display());
    }
}

#[test]
fn sync_timeout_never_blocks_until_a_receiver_appears_and_catches_up() {
    let env = Env::new();
    append(&env, 50_000);
    let port = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
    let sender =
        env.sender("sender", &port, &["--sync-quorum", "1", "--sync-timeout", "never", "--admin-addr", "127.0.0.1:0"]);
    let admin = field(&sender.wait_log("admin endpoint listening", T), "admin").expect("admin");
    // A caller's own timeout still applies: exit 4, and the sender does not degrade.
    let (code, j) = wait(&admin, &["--timeout", "300ms"]);
    assert_eq!((code, j["outcome"].as_str()), (4, Some("timeout")), "{j}");
    assert_eq!(http::lag(&admin)["sync"]["state"], "sync");

    let waiter = {
        let admin = admin.clone();
        std::thread::spawn(move || (Instant::now(), wait(&admin, &[])))
    };
    // Nothing can make it durable yet; the waiter is blocked.
    let deadline = Instant::now() + T;
    while http::lag(&admin)["sync"]["waiting"] != 1 {
        assert!(Instant::now() < deadline, "the wait never registered");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500)); // longer than any default timeout: it must still block
    assert!(!waiter.is_finished(), "a wait under --sync-timeout never returned without a receiver");
    let r = start_receiver(&env, 0, &port);
    let (_, (code, j)) = waiter.join().expect("waiter thread");
    assert_eq!((code, j["outcome"].as_str()), (0, Some("durable")), "{j}");
    assert_eq!(j["position"], 50_000);
    assert_eq!(walship_tests::mirror_durable(&r.dir), 50_000, "durable on the receiver when the wait returned");
}

#[test]
fn a_failing_apply_command_holds_the_apply_position_and_is_retried() {
    let env = Env::new();
    let gate = env.path("archive-mounted");
    let archive = env.path("archive");
    std::fs::create_dir_all(&archive).expect("archive dir");
    // Fails, saying why on stderr, until the "archive" is mounted.
    let cmd = format!(
        "test -e {} || {{ echo 'archive volume not mounted' >&2; exit 7; }}; cp %p {}/%f",
        gate.display(),
        archive.display()
    );
    let recv = env.receiver_with("receiver", "127.0.0.1:0", &["--apply-command", &cmd, "--admin-addr", "127.0.0.1:0"]);
    let to = field(&recv.wait_log("receiver listening", T), "listen").expect("listen");
    let sender = env.sender(
        "sender",
        &to,
        &["--admin-addr", "127.0.0.1:0", "--sync-quorum", "1", "--sync-level", "apply", "--sync-timeout", "never"],
    );
    let admin = field(&sender.wait_log("admin endpoint listening", T), "admin").expect("admin");
    append(&env, 64 << 10);
    // A later segment seals seg-0001: it completes on the receiver and the apply command runs.
    std::fs::write(env.wal.join("seg-0002"), b"next").expect("seal");
    let err = recv.wait_log("apply command failed", T);
    assert!(err.contains("archive volume not mounted") && err.contains("seg-0001"), "stderr is logged: {err}");
    recv.wait_log_n("apply command failed", 2, T); // retried
    let lag = http::lag(&admin);
    let r = &lag["receivers"][0];
    assert_eq!(r["flush_pos"], (64 << 10) + 4, "{r}");
    assert_eq!(r["apply_pos"], 0, "a failing apply command does not advance apply: {r}");
    let (code, j) = wait(&admin, &["--position", &(64u64 << 10).to_string(), "--timeout", "300ms"]);
    assert_eq!((code, j["outcome"].as_str()), (4, Some("timeout")), "level apply waits for the command: {j}");

    std::fs::write(&gate, b"").expect("mount the archive");
    let (code, j) = wait(&admin, &["--position", &(64u64 << 10).to_string()]);
    assert_eq!((code, j["outcome"].as_str()), (0, Some("durable")), "{j}");
    assert_eq!(
        std::fs::read(archive.join("seg-0001")).expect("archived"),
        std::fs::read(env.wal.join("seg-0001")).expect("src")
    );
    recv.wait_log("apply command succeeded after earlier failures", T);
    assert_eq!(http::lag(&admin)["receivers"][0]["apply_pos"], 64 << 10);
}

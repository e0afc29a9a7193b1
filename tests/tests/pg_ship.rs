//! `--format postgres` end to end over real PostgreSQL 15 segments (the
//! corpus in crates/walship-source/testdata): LSN positions, the system
//! identifier as source id, full-size zero-padded `.partial` files,
//! timeline history files shipped beside the stream, and a mirror of one
//! cluster refusing another.
use std::path::{Path, PathBuf};
use std::time::Duration;

use walship_tests::{Env, field, http};

const T: Duration = Duration::from_secs(30);

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/walship-source/testdata/postgres-wal")
}

fn copy(case: &str, files: &[&str], to: &Path) {
    for f in files {
        std::fs::copy(corpus().join(case).join(f), to.join(f)).expect("copy corpus file");
    }
}

fn sysid(case: &str) -> String {
    let exp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(corpus().join("expected.json")).expect("read")).expect("json");
    exp["clusters"][case]["system_identifier"].as_str().expect("sysid").to_string()
}

#[test]
fn ships_a_new_timeline_with_its_history_into_a_zero_padded_partial() {
    let env = Env::new();
    copy("timeline", &["000000020000000000000008", "00000002.history", "000000010000000000000008.partial"], &env.wal);
    let receiver = env.receiver("receiver", "127.0.0.1:0");
    let addr = field(&receiver.wait_log("receiver listening", T), "listen").expect("listen");
    let sender = env.sender("sender", &addr, &["--format", "postgres", "--admin-addr", "127.0.0.1:0"]);
    let admin = field(&sender.wait_log("admin endpoint listening", T), "admin").expect("admin");
    let end = 0x82_6B50u64; // the valid end, as pg_waldump reports it
    walship_tests::wait_durable(&env.mirror, end, T);

    // The mirror is durable a moment before the sender has the receiver's ack for it.
    let lag = walship_tests::eventually("the sender to hold the flush ack for the valid end", T, || {
        let lag: serde_json::Value = serde_json::from_str(&http::get(&admin, "/v1/lag")).expect("lag json");
        (lag["receivers"][0]["flush_pos"].as_u64() == Some(end)).then_some(lag)
    });
    assert_eq!(lag["source"]["format"], "postgres");
    assert_eq!(lag["source"]["id"].as_str(), Some(sysid("timeline").as_str()), "the source id is the system id");
    assert_eq!(lag["source"]["end_pos"].as_u64(), Some(end), "positions are LSNs");
    assert_eq!(lag["source"]["end_lsn"], "0/826B50", "with PostgreSQL's spelling beside them");
    assert_eq!(lag["receivers"][0]["flush_lsn"], "0/826B50", "{lag}");
    assert_eq!(lag["sync"]["streaming"], 1, "{lag}");

    // The history file travels beside the stream, byte for byte.
    let hist = std::fs::read(env.mirror.join("00000002.history")).expect("history file on the mirror");
    assert_eq!(hist, std::fs::read(env.wal.join("00000002.history")).expect("source history"));
    // The segment: full size, the valid bytes, zeros past them (never the source's bytes past the end).
    let partial = std::fs::read(env.mirror.join("000000020000000000000008.partial")).expect("partial");
    let source = std::fs::read(env.wal.join("000000020000000000000008")).expect("source");
    assert_eq!(partial.len(), 1 << 20, "a .partial is kept at full segment size");
    let valid = (end - 0x80_0000) as usize;
    assert!(partial[..valid] == source[..valid], "valid bytes identical");
    assert!(partial[valid..].iter().all(|b| *b == 0), "zero-padded past the valid end");
    assert!(
        !env.mirror.join("000000010000000000000008.partial").exists(),
        "old-timeline .partial files are not shipped"
    );
    let out = std::process::Command::new(walship_tests::walship_bin())
        .args(["verify", "--format", "postgres", "--wal-dir"])
        .arg(&env.wal)
        .arg("--mirror")
        .arg(&env.mirror)
        .output()
        .expect("verify");
    assert!(out.status.success(), "verify: {}", String::from_utf8_lossy(&out.stdout));

    // Another cluster's WAL is refused by this mirror, naming both system identifiers.
    drop(sender);
    let other = env.path("other-wal");
    std::fs::create_dir_all(&other).expect("dir");
    copy("tail-zero", &["00000001000000000000000B"], &other);
    let mut args = vec!["send".to_string(), "--format".into(), "postgres".into(), "--wal-dir".into()];
    args.push(other.display().to_string());
    args.extend(["--to".into(), addr.clone()]);
    args.extend(env.client_tls());
    let intruder = walship_tests::Proc::spawn("intruder", &args, &env.path("intruder.log"));
    // Only the refusal can name the mirror's system id in the intruder's log.
    let line = intruder.wait_log(&sysid("timeline"), T);
    assert!(line.contains(&sysid("tail-zero")), "refusal names both ids: {line}");
    assert_eq!(walship_tests::mirror_durable(&env.mirror), end, "the mirror is untouched");
}

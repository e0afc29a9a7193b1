//! A promotion under a running sender: walship tails a streaming standby's
//! pg_wal, the primary dies, the standby is promoted inside a segment, and
//! the sender follows onto timeline 2 without a restart — the old
//! timeline's segment ends at the switch point (kept as `.partial`), the new
//! one continues from there with the history file beside it — and the
//! mirror restores a server holding every row of both timelines.
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use walship_tests::pg::{PgCluster, PgOptions, make_accessible};
use walship_tests::{Env, Proc, field};

const T: Duration = Duration::from_secs(60);

fn bin() -> String {
    walship_tests::walship_bin().display().to_string()
}

fn wait_durable(admin: &str, lsn: &str) {
    let out = Command::new(bin())
        .args(["wait", "--admin", admin, "--position", lsn, "--timeout", "30s"])
        .output()
        .expect("walship wait");
    assert!(out.status.success(), "wait for {lsn}: {}", String::from_utf8_lossy(&out.stdout));
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("walship."))
        .collect();
    v.sort();
    v
}

#[test]
fn the_sender_follows_a_standby_promoted_inside_a_segment() {
    let env = Env::new();
    let root = env.root.path();
    let opts = || PgOptions::new().wal_segsize_mb(1);
    let mut primary = PgCluster::init(root, "primary", opts());
    primary.start();
    primary.sql("CREATE TABLE t(id bigint PRIMARY KEY, pad text)");
    let backup = primary.base_backup(&root.join("backup"));

    // A streaming standby, archiving through walship like a primary would once promoted.
    let admin =
        format!("127.0.0.1:{}", TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port());
    let archive = format!("{} wait --admin {admin} --segment %f --timeout 30s", bin());
    let standby_opts = opts().archive(&archive).set("primary_conninfo", primary.conninfo());
    let mut standby = PgCluster::restore(root, "standby", &backup, "false", standby_opts);
    std::fs::write(standby.data_dir().join("standby.signal"), b"").expect("standby.signal");
    standby.start();
    standby.wait_sql("SELECT status FROM pg_stat_wal_receiver", "streaming", T);

    let mirror = root.join("mirror");
    make_accessible(&mirror);
    let mut args = vec!["receive".to_string(), "--listen".into(), "127.0.0.1:0".into(), "--dir".into()];
    args.push(mirror.display().to_string());
    args.extend(env.server_tls());
    let receiver = Proc::spawn("receiver", &args, &env.path("receiver.log"));
    let to = field(&receiver.wait_log("receiver listening", T), "listen").expect("listen");
    let mut args = vec!["send".to_string(), "--format".into(), "postgres".into(), "--wal-dir".into()];
    args.push(standby.wal_dir().display().to_string());
    args.extend(["--to".into(), to, "--admin-addr".into(), admin.clone()]);
    args.extend(env.client_tls());
    let sender = Proc::spawn("sender", &args, &env.path("sender.log"));
    sender.wait_log("streaming", T);

    // Timeline 1: rows written on the primary, replayed by the standby, shipped from its pg_wal.
    for k in 0..4 {
        primary.sql(&format!(
            "INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series({}, {}) g",
            k * 1000 + 1,
            k * 1000 + 1000
        ));
    }
    let lsn = primary.sql("SELECT pg_current_wal_flush_lsn()::text");
    standby.wait_sql(&format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'"), "t", T);
    wait_durable(&admin, &lsn);

    // The primary dies; the standby is promoted in the middle of a segment.
    primary.crash();
    standby.sql("SELECT pg_promote()");
    standby.wait_promoted(T);
    assert_eq!(standby.sql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), "00000002");
    standby.sql("INSERT INTO t SELECT g, 'y' FROM generate_series(4001, 5000) g");
    let lsn2 = standby.sql("SELECT pg_current_wal_flush_lsn()::text");
    wait_durable(&admin, &lsn2);

    let follow = sender.wait_log("following timeline 2", T);
    let switch = field(&follow, "switch").expect("switch point");
    let listed = files(&mirror);
    assert!(listed.contains(&"00000002.history".to_string()), "{listed:?}");
    let old = listed.iter().find(|n| n.starts_with("00000001") && n.ends_with(".partial")).cloned();
    let old = old.unwrap_or_else(|| panic!("timeline 1's last segment kept as .partial: {listed:?}"));
    let new_name = format!("00000002{}", &old[8..24]);
    assert!(listed.iter().any(|n| n.starts_with(&new_name)), "timeline 2's segment {new_name}: {listed:?}");
    let log = sender.log_text();
    assert!(!log.contains("ERROR"), "sender errors:\n{log}");
    eprintln!("promotion followed at {switch}; mirror: {listed:?}");

    // The mirror restores a server from the old base backup across the switch.
    standby.crash_with(&[sender.pid()]);
    let restore = format!("{} restore-wal --mirror {} --partial-ok %f %p", bin(), mirror.display());
    let mut restored = PgCluster::restore(root, "restored", &backup, &restore, opts());
    restored.start();
    restored.wait_promoted(T);
    assert_eq!(restored.sql("SELECT count(*) FROM t"), "5000", "rows of both timelines");
    assert_eq!(restored.sql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), "00000003");
}

//! A timeline switch with real PostgreSQL: a server restored from a walship
//! mirror and promoted (timeline 2) is shipped into a new mirror, history
//! file included, and that mirror restores a third server (timeline 3)
//! holding every row of both lives.
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use walship_tests::pg::{PgCluster, PgOptions, make_accessible};
use walship_tests::{Env, Proc, field};

const T: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

fn bin() -> String {
    walship_tests::walship_bin().display().to_string()
}

fn archive_command(admin: &str) -> String {
    format!("{} wait --admin {admin} --segment %f --timeout 30s", bin())
}

fn restore_command(mirror: &Path) -> String {
    format!("{} restore-wal --mirror {} --partial-ok %f %p", bin(), mirror.display())
}

fn receiver(env: &Env, name: &str, mirror: &Path) -> (Proc, String) {
    make_accessible(mirror);
    let mut args = vec!["receive".to_string(), "--listen".into(), "127.0.0.1:0".into(), "--dir".into()];
    args.push(mirror.display().to_string());
    args.extend(env.server_tls());
    let p = Proc::spawn(name, &args, &env.path(&format!("{name}.log")));
    let addr = field(&p.wait_log("receiver listening", T), "listen").expect("listen");
    (p, addr)
}

fn sender(env: &Env, name: &str, pg: &PgCluster, to: &str, admin: &str) -> Proc {
    let mut args = vec!["send".to_string(), "--format".into(), "postgres".into(), "--wal-dir".into()];
    args.push(pg.wal_dir().display().to_string());
    args.extend(["--to".into(), to.into(), "--admin-addr".into(), admin.into()]);
    args.extend(env.client_tls());
    let p = Proc::spawn(name, &args, &env.path(&format!("{name}.log")));
    p.wait_log("admin endpoint listening", T);
    p
}

/// Inserts ids `from..=to` and waits until the WAL that holds them is durable on the mirror.
fn insert_durably(pg: &PgCluster, admin: &str, from: i64, to: i64) {
    pg.sql(&format!("INSERT INTO t SELECT g FROM generate_series({from}, {to}) g"));
    let lsn = pg.sql("SELECT pg_current_wal_flush_lsn()::text");
    let out = Command::new(bin())
        .args(["wait", "--admin", admin, "--position", &lsn, "--timeout", "30s"])
        .output()
        .expect("walship wait");
    assert!(out.status.success(), "wait for {lsn}: {}", String::from_utf8_lossy(&out.stdout));
}

fn timeline(pg: &PgCluster) -> u32 {
    pg.sql("SELECT timeline_id FROM pg_control_checkpoint()").parse().expect("timeline")
}

#[test]
fn a_promoted_restore_ships_its_new_timeline_into_a_new_mirror_that_restores_again() {
    let env = Env::new();
    let root = env.root.path();
    let opts = || PgOptions::new().wal_segsize_mb(1);

    // Life 1: a primary on timeline 1, shipped into mirror 1.
    let admin1 = format!("127.0.0.1:{}", free_port());
    let mut p1 = PgCluster::init(root, "p1", opts().archive(&archive_command(&admin1)));
    p1.start();
    p1.sql("CREATE TABLE t(id bigint PRIMARY KEY)");
    let b1 = p1.base_backup(&root.join("b1"));
    let m1 = root.join("m1");
    let (_r1, to1) = receiver(&env, "r1", &m1);
    let s1 = sender(&env, "s1", &p1, &to1, &admin1);
    insert_durably(&p1, &admin1, 1, 3000);
    p1.crash_with(&[s1.pid()]);
    std::fs::remove_dir_all(p1.data_dir()).expect("the primary's data is gone");

    // Life 2: restored from mirror 1, promoted to timeline 2, shipped into mirror 2.
    let admin2 = format!("127.0.0.1:{}", free_port());
    let mut p2 = PgCluster::restore(root, "p2", &b1, &restore_command(&m1), opts().archive(&archive_command(&admin2)));
    p2.start();
    p2.wait_promoted(T);
    assert_eq!(p2.sql("SELECT count(*) FROM t"), "3000", "every durable row survived life 1");
    assert_eq!(timeline(&p2), 2);
    let m2 = root.join("m2");
    let (_r2, to2) = receiver(&env, "r2", &m2);
    let s2 = sender(&env, "s2", &p2, &to2, &admin2);
    s2.wait_log("streaming", T);
    let b2 = p2.base_backup(&root.join("b2"));
    insert_durably(&p2, &admin2, 3001, 6000);
    let history = p2.wal_dir().join("00000002.history");
    let shipped = std::fs::read(m2.join("00000002.history")).expect("history file on mirror 2");
    assert_eq!(shipped, std::fs::read(&history).expect("source history"));
    let s2_log = s2.log_text();
    assert!(!s2_log.contains("ERROR"), "sender 2 logged an error:\n{s2_log}");
    p2.crash_with(&[s2.pid()]);
    std::fs::remove_dir_all(p2.data_dir()).expect("gone");

    // Life 3: restored from mirror 2 on timeline 3, with every row.
    let mut p3 = PgCluster::restore(root, "p3", &b2, &restore_command(&m2), opts());
    p3.start();
    let took = p3.wait_promoted(T);
    assert_eq!(p3.sql("SELECT count(*) FROM t"), "6000", "rows of both lives are there");
    assert_eq!(p3.sql("SELECT min(id)::text || '-' || max(id)::text FROM t"), "1-6000");
    assert_eq!(timeline(&p3), 3, "recovery followed timeline 2's history and promoted to 3");
    eprintln!("timeline drill: life 3 recovered from mirror 2 in {took:?}");
}

//! The real-PostgreSQL harness end to end: a primary archives to a
//! directory, the machine vanishes, a new cluster restored from a base
//! backup plus the archive promotes itself on a new timeline with every
//! committed row.
use std::process::Command;
use std::time::Duration;

use walship_tests::pg::{self, PgCluster, PgOptions};

const T: Duration = Duration::from_secs(120);

#[test]
fn archive_crash_restore_promotes_with_every_committed_row() {
    let root = tempfile::Builder::new().prefix("walship-pg-").tempdir().expect("temp dir");
    let archive = root.path().join("archive");
    pg::make_accessible(&archive);

    let opts = PgOptions::new().archive(&format!("cp %p {}/%f", archive.display()));
    let mut primary = PgCluster::init(root.path(), "primary", opts);
    primary.start();
    primary.sql("CREATE TABLE t (id int PRIMARY KEY)");
    let backup = primary.base_backup(&root.path().join("backup"));
    assert!(backup.dir().join("backup_label").exists(), "base backup has no backup_label");

    // Ten committed transactions of a hundred known ids each, all after the backup.
    for batch in 0..10 {
        let (lo, hi) = (batch * 100 + 1, batch * 100 + 100);
        primary.sql(&format!("INSERT INTO t SELECT generate_series({lo}, {hi})"));
    }
    let segment = primary.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    primary.sql("SELECT pg_switch_wal()");
    // Counted only once archive_command succeeded, so the copy is whole.
    let archived = format!("SELECT coalesce(last_archived_wal >= '{segment}', false) FROM pg_stat_archiver");
    primary.wait_sql(&archived, "t", T);
    let size = std::fs::metadata(archive.join(&segment)).expect("archived segment").len();
    assert_eq!(size, 16 << 20, "archived segment {segment} has the wrong size");

    // A stand-in for a walship sender on the same machine: it must vanish in the same sweep.
    let mut bystander = Command::new("sleep").arg("600").spawn().expect("spawn sleep");
    let processes = primary.processes();
    assert!(processes.len() > 3, "expected a postmaster with children, got {processes:?}");
    primary.crash_with(&[bystander.id()]);
    assert!(!primary.is_running(), "postmaster survived the crash");
    let survivors: Vec<u32> = processes.iter().copied().filter(|&p| pg::is_alive(p)).collect();
    assert!(survivors.is_empty(), "processes survived the crash: {survivors:?}");
    assert!(bystander.try_wait().expect("wait sleep").is_some(), "the extra process survived the crash");
    std::fs::remove_dir_all(primary.data_dir()).expect("remove the primary's data dir");

    let restore_command = format!("cp {}/%f %p", archive.display());
    let mut restored = PgCluster::restore(root.path(), "restored", &backup, &restore_command, PgOptions::new());
    assert_ne!(restored.port(), primary.port());
    restored.start();
    let took = restored.wait_promoted(T);
    println!("archive recovery and promotion took {took:?}");

    let want: Vec<String> = (1..=1000).map(|i: i32| i.to_string()).collect();
    assert_eq!(restored.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t"), want.join(","));
    // The end-of-recovery checkpoint is on the new timeline.
    restored.wait_sql("SELECT timeline_id > 1 FROM pg_control_checkpoint()", "t", T);
    let timeline = restored.sql("SELECT timeline_id FROM pg_control_checkpoint()");
    assert!(timeline.parse::<u32>().expect("timeline") > 1, "still on timeline {timeline}");
    // Promoted: it takes writes.
    restored.sql("INSERT INTO t VALUES (1001)");
    assert_eq!(restored.sql("SELECT count(*) FROM t"), "1001");
    restored.stop();
}

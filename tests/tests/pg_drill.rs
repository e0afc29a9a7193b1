//! Disaster drills with a real PostgreSQL primary: commits run while
//! walship ships `pg_wal` to a mirror, then the primary's machine vanishes
//! (postmaster, every backend and the sender frozen and killed in one
//! sweep, the data directory deleted), and a new server restored from a
//! base backup taken before the workload plus the mirror
//! (`walship restore-wal --partial-ok` as `restore_command`) promotes
//! itself. What it has is compared with what the clients were told.
//!
//! * Semi-sync: a commit the sender said was durable on the quorum is never lost.
//! * Async: what is lost is no older than the RPO exposure the sender reported.
//!
//! The clusters use 1 MiB WAL segments, so that even a short run completes
//! segments: archive_command (`walship wait --segment %f`) lets them go
//! during the workload, and the restore replays complete segments from the
//! mirror before the last one's `.partial`.
//!
//! The workload runs `WALSHIP_DRILL_SECS` seconds: by default 8, which
//! keeps each test near 15 s and the file near 20 s on two cores (CI); set
//! 20 or more for the full drill.
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use walship_tests::pg::{self, BaseBackup, PgCluster, PgOptions};
use walship_tests::{Env, Proc, field, http, walship_bin};

const T: Duration = Duration::from_secs(60);

/// Concurrent client connections of the workload.
const CLIENTS: usize = 4;

/// Workload length when `WALSHIP_DRILL_SECS` is not set.
const DEFAULT_SECS: u64 = 8;

/// The least the write→event gap is allowed in the async bound (see
/// [`async_drill_reports_lost_window_within_rpo_exposure`]).
const DETECTION_FLOOR: Duration = Duration::from_millis(50);

fn drill_duration() -> Duration {
    let secs = match std::env::var("WALSHIP_DRILL_SECS") {
        Ok(v) => v.trim().parse::<u64>().unwrap_or_else(|e| panic!("WALSHIP_DRILL_SECS={v:?}: {e}")),
        Err(_) => DEFAULT_SECS,
    };
    assert!(secs >= 2, "WALSHIP_DRILL_SECS must be at least 2");
    Duration::from_secs(secs)
}

/// `'s'` for `sh -c` (archive_command and restore_command run through the shell).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A free TCP port on 127.0.0.1 (bound, then released for the sender's
/// admin endpoint, which `archive_command` must name before the sender runs).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// The walship program as the postgres user can run it: the build output
/// when its directories let postgres in, else a copy under `root`.
fn walship_for_postgres(root: &Path) -> PathBuf {
    let bin = walship_bin();
    let ok = Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(&bin)
        .current_dir("/")
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return bin;
    }
    let dir = root.join("bin");
    pg::make_accessible(&dir);
    let copy = dir.join("walship");
    std::fs::copy(&bin, &copy).unwrap_or_else(|e| panic!("copy {} to {}: {e}", bin.display(), copy.display()));
    copy
}

/// `name size` of every file in the mirror, for failure messages.
fn listing(dir: &Path) -> String {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| format!("{} {}", e.file_name().to_string_lossy(), e.metadata().map(|m| m.len()).unwrap_or(0)))
                .collect()
        })
        .unwrap_or_else(|e| vec![format!("cannot list {}: {e}", dir.display())]);
    out.sort();
    out.join("\n")
}

/// `POST /v1/wait` on the sender's admin endpoint: the answer's JSON, or
/// why there was none (the sender is gone).
fn wait_position(agent: &ureq::Agent, admin: &str, lsn: &str) -> Result<serde_json::Value, String> {
    let url = format!("http://{admin}/v1/wait");
    let body = serde_json::json!({ "position": lsn, "timeout_ms": 30_000 }).to_string();
    let mut resp = agent
        .post(&url)
        .header("content-type", "application/json")
        .send(body.as_bytes())
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().map_err(|e| format!("POST {url}: body: {e}"))?;
    if status != 200 {
        return Err(format!("POST {url} {body} answered {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("POST {url}: not JSON ({e}): {text}"))
}

/// The primary, its base backup, and walship shipping its `pg_wal`.
struct Drill {
    root: tempfile::TempDir,
    env: Env,
    walship: PathBuf,
    admin: String,
    primary: PgCluster,
    backup: BaseBackup,
    receiver: Proc,
    sender: Proc,
}

impl Drill {
    /// A receiver; a sender (`sync_args` added) tailing a fresh cluster's
    /// `pg_wal` before the server first starts; then the primary started
    /// with `walship wait --segment` as archive_command, table `t`, and a
    /// base backup whose WAL archive_command has let go.
    fn start(sync_args: &[&str]) -> Drill {
        let root = tempfile::Builder::new().prefix("walship-drill-").tempdir().expect("temp dir");
        let env = Env::new();
        // The receiver (root) creates the mirror's files inside; restore_command (postgres) reads them.
        pg::make_accessible(&env.mirror);
        let walship = walship_for_postgres(root.path());
        let admin = format!("127.0.0.1:{}", free_port());
        let archive =
            format!("{} wait --admin {admin} --segment %f --timeout 60s", sh_quote(&walship.to_string_lossy()));
        let mut primary = PgCluster::init(root.path(), "primary", PgOptions::new().wal_segsize_mb(1).archive(&archive));

        let receiver = env.receiver("receiver", "127.0.0.1:0");
        let to = field(&receiver.wait_log("receiver listening", T), "listen").expect("listen");
        let mut args: Vec<String> = vec!["send".into(), "--format".into(), "postgres".into(), "--wal-dir".into()];
        args.push(primary.wal_dir().display().to_string());
        args.extend(["--to".into(), to]);
        args.extend(env.client_tls());
        args.extend(["--admin-addr".into(), admin.clone()]);
        args.extend(["--reconnect-min".into(), "50ms".into(), "--reconnect-max".into(), "500ms".into()]);
        args.extend(sync_args.iter().map(|s| s.to_string()));
        let sender = Proc::spawn("sender", &args, &env.path("sender.log"));
        let line = sender.wait_log("admin endpoint listening", T);
        assert_eq!(field(&line, "admin").as_deref(), Some(admin.as_str()), "{line}");

        primary.start();
        primary.sql("CREATE TABLE t (id bigint PRIMARY KEY, client int, at timestamptz DEFAULT now())");
        let backup = primary.base_backup(&root.path().join("backup"));
        // The backup's last WAL segment and its `.backup` history file both
        // go through archive_command, which must let both go.
        let label = std::fs::read_to_string(backup.dir().join("backup_label")).expect("backup_label");
        let start_seg = label
            .lines()
            .find_map(|l| l.strip_prefix("START WAL LOCATION: ")?.split("(file ").nth(1)?.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no start segment in backup_label:\n{label}"))
            .to_string();
        // `SEG.XXXXXXXX.backup` sorts after SEG and before the next segment.
        let archived = format!("SELECT coalesce(last_archived_wal > '{start_seg}', false) FROM pg_stat_archiver");
        let deadline = Instant::now() + T;
        while primary.sql(&archived) != "t" {
            if Instant::now() > deadline {
                panic!(
                    "archive_command never archived past the backup's segment {start_seg} and its .backup file: {}\n\
                     server log:\n{}",
                    primary.sql("SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver"),
                    archive_lines(&primary)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Drill { root, env, walship, admin, primary, backup, receiver, sender }
    }

    /// `pg_stat_archiver`'s (archived_count, failed_count, last_failed_wal).
    fn archiver(&self) -> (u64, u64, String) {
        let rows = self.primary.rows("SELECT archived_count, failed_count, last_failed_wal FROM pg_stat_archiver");
        let v = |i: usize| rows[0][i].clone().unwrap_or_default();
        (v(0).parse().expect("archived_count"), v(1).parse().expect("failed_count"), v(2))
    }

    /// The machine vanishes; returns the instant just before the sweep.
    fn crash(&mut self) -> Instant {
        let at = Instant::now();
        self.primary.crash_with(&[self.sender.pid()]);
        eprintln!("the crash sweep (freeze, kill, wait for the deaths) took {:?}", at.elapsed());
        assert!(!pg::is_alive(self.sender.pid()), "the sender survived the crash");
        std::fs::remove_dir_all(self.primary.data_dir()).expect("remove the primary's data dir");
        at
    }

    /// After the crash: stops the receiver (SIGTERM: a clean exit, and a
    /// mirror nobody writes while the restore reads it), restores a new
    /// server from the backup and the mirror and waits for its promotion.
    /// Returns the server, the ids in `t` and the time from start to promotion.
    fn restore(&mut self) -> (PgCluster, HashSet<i64>, Duration) {
        assert_eq!(self.receiver.term(), Some(0), "receiver exit on SIGTERM; log:\n{}", self.receiver.log_text());
        // Whatever the umask was, postgres reads every file of the mirror.
        pg::make_accessible(&self.env.mirror);
        let restore_command = format!(
            "{} restore-wal --mirror {} --partial-ok %f %p",
            sh_quote(&self.walship.to_string_lossy()),
            sh_quote(&self.env.mirror.to_string_lossy())
        );
        let mut restored =
            PgCluster::restore(self.root.path(), "restored", &self.backup, &restore_command, PgOptions::new());
        restored.start();
        let took = restored.wait_promoted(T);
        let log = restored.log_text();
        eprintln!(
            "restore_command restored {} files from the mirror, {} of them a .partial",
            log.matches("walship restore-wal: restored").count(),
            log.matches("(--partial-ok)").count()
        );
        let ids: HashSet<i64> =
            restored.client().query("SELECT id FROM t", &[]).expect("read t").iter().map(|r| r.get(0)).collect();
        (restored, ids, took)
    }
}

/// What one client thread saw.
#[derive(Debug, Default)]
struct ClientLog {
    /// Ids whose INSERT returned success, with the instant it returned.
    committed: Vec<(i64, Instant)>,
    /// Ids whose wait answered `durable` (semi-sync only).
    acked: Vec<i64>,
    /// Ids committed but whose wait answered `degraded` or `timeout`.
    not_durable: Vec<(i64, String)>,
    /// The id whose INSERT was in flight when the loop ended (outcome unknown).
    in_doubt: Option<i64>,
    /// Why and when the loop ended (the crash, normally).
    ended: Option<(Instant, String)>,
}

/// Starts `CLIENTS` threads inserting rows of `t` in autocommit until an
/// error (the crash) or `stop`; with `admin`, each waits for its commit's
/// flush LSN to be durable before the next.
fn start_clients(conninfo: &str, admin: Option<&str>, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<ClientLog>> {
    let next_id = Arc::new(AtomicI64::new(1));
    (0..CLIENTS)
        .map(|n| {
            let (conninfo, admin, stop, next_id) =
                (conninfo.to_string(), admin.map(str::to_string), stop.clone(), next_id.clone());
            std::thread::spawn(move || {
                let mut log = ClientLog::default();
                let mut db = postgres::Client::connect(&conninfo, postgres::NoTls).expect("connect");
                let insert = db.prepare("INSERT INTO t (id, client) VALUES ($1, $2)").expect("prepare");
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(60)))
                    .http_status_as_error(false)
                    .build()
                    .into();
                let client = i32::try_from(n).expect("client number");
                let end = |e: String| Some((Instant::now(), e));
                while !stop.load(Ordering::Relaxed) {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    log.in_doubt = Some(id);
                    if let Err(e) = db.execute(&insert, &[&id, &client]) {
                        log.ended = end(format!("INSERT {id}: {e}"));
                        break;
                    }
                    log.in_doubt = None;
                    log.committed.push((id, Instant::now()));
                    let Some(admin) = &admin else { continue };
                    let lsn: String = match db.query_one("SELECT pg_current_wal_flush_lsn()::text", &[]) {
                        Ok(row) => row.get(0),
                        Err(e) => {
                            log.ended = end(format!("flush lsn after {id}: {e}"));
                            break;
                        }
                    };
                    match wait_position(&agent, admin, &lsn) {
                        Ok(j) if j["outcome"] == "durable" => log.acked.push(id),
                        Ok(j) => log.not_durable.push((id, j.to_string())),
                        Err(e) => {
                            log.ended = end(format!("wait for {id} at {lsn}: {e}"));
                            break;
                        }
                    }
                }
                log
            })
        })
        .collect()
}

/// Joins the client threads (they end on the crash's errors); panics if
/// one ended before `crash_at` (a failure that was not the crash) or hangs.
fn join_clients(handles: Vec<JoinHandle<ClientLog>>, stop: &AtomicBool, crash_at: Instant) -> Vec<ClientLog> {
    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + T;
    while !handles.iter().all(JoinHandle::is_finished) {
        assert!(Instant::now() < deadline, "client threads still running {T:?} after the crash");
        std::thread::sleep(Duration::from_millis(10));
    }
    let logs: Vec<ClientLog> = handles.into_iter().map(|h| h.join().expect("client thread panicked")).collect();
    for (n, log) in logs.iter().enumerate() {
        if let Some((at, why)) = &log.ended {
            assert!(*at >= crash_at, "client {n} failed before the crash: {why}");
        }
    }
    logs
}

/// The server log's lines about archiving (archive_command's own output included).
fn archive_lines(c: &PgCluster) -> String {
    let log = c.log_text();
    // PostgreSQL's lines start with the date; archive_command's own output does not.
    let ours = |l: &str| !l.starts_with("20") || l.contains("archiv");
    let lines: Vec<&str> = log.lines().filter(|l| ours(l)).collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Lines of the text with `needle`, for reports.
fn lines_with(text: &str, needle: &str) -> String {
    text.lines().filter(|l| l.contains(needle)).collect::<Vec<_>>().join("\n")
}

/// Semi-sync, quorum 1 at level flush: every commit whose wait answered
/// `durable` is in the server restored from the base backup and the mirror
/// after the primary's machine vanished mid-workload.
#[test]
fn semi_sync_drill_loses_no_acknowledged_commit() {
    let mut d = Drill::start(&["--sync-quorum", "1", "--sync-level", "flush", "--sync-timeout", "10s"]);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_clients(&d.primary.conninfo(), Some(&d.admin), &stop);
    let run = drill_duration();
    let started = Instant::now();
    let mut states = BTreeSet::new();
    let mut reads = 0;
    while started.elapsed() < run {
        let lag = http::lag(&d.admin);
        states.insert(lag["sync"]["state"].as_str().unwrap_or("?").to_string());
        reads += 1;
        assert!(!clients.iter().any(JoinHandle::is_finished), "a client stopped before the crash");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (archived, failed, last_failed) = d.archiver();
    let crash_at = d.crash();
    let logs = join_clients(clients, &stop, crash_at);
    let (restored, present, recovery) = d.restore();

    let acked: BTreeSet<i64> = logs.iter().flat_map(|l| l.acked.iter().copied()).collect();
    let committed: BTreeSet<i64> = logs.iter().flat_map(|l| l.committed.iter().map(|c| c.0)).collect();
    let unacked: Vec<i64> = committed.difference(&acked).copied().collect();
    let survived = unacked.iter().filter(|id| present.contains(id)).count();
    let in_doubt: Vec<i64> = logs.iter().filter_map(|l| l.in_doubt).collect();
    let not_durable: Vec<&(i64, String)> = logs.iter().flat_map(|l| &l.not_durable).collect();
    let missing: Vec<i64> = acked.iter().copied().filter(|id| !present.contains(id)).collect();
    let phantom: Vec<i64> =
        present.iter().copied().filter(|id| !committed.contains(id) && !in_doubt.contains(id)).collect();
    eprintln!(
        "semi-sync drill ({run:?} of {CLIENTS} clients): {} acknowledged commits, all {} present; \
         {} committed but unacknowledged: {survived} survived, {} lost; in doubt at the crash: {in_doubt:?}; \
         non-durable answers: {}; {archived} files archived during the run; \
         recovery and promotion took {recovery:?}",
        acked.len(),
        acked.len() - missing.len(),
        unacked.len(),
        unacked.len() - survived,
        not_durable.len(),
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged commits are missing after the restore: {:?}\nmirror:\n{}\nrestored server log:\n{}\n\
         sender log:\n{}",
        missing.len(),
        &missing[..missing.len().min(50)],
        listing(&d.env.mirror),
        restored.log_tail(),
        d.sender.log_text()
    );
    assert!(phantom.is_empty(), "rows nobody committed: {phantom:?}");
    assert!(acked.len() >= 300, "only {} commits acknowledged in {run:?}: the drill proves little", acked.len());
    assert!(not_durable.is_empty(), "waits that were not durable with a healthy receiver: {not_durable:?}");
    assert_eq!(
        failed,
        0,
        "archive_command failed ({last_failed}) with a healthy receiver; primary log:\n{}",
        archive_lines(&d.primary)
    );
    assert!(reads > 0 && states.iter().all(|s| s == "sync"), "sync states seen during the run: {states:?}");
}

/// Async: clients commit without waiting. What the restore lacks must
/// have been committed within the RPO exposure the sender reported just
/// before the crash.
///
/// The bound: a commit that returned at `c` was written to `pg_wal` before
/// `c`; the sender observed it (its lag clock starts at the first file
/// event of a refresh) at most a detection allowance later. If it is lost,
/// it was not flushed on the mirror at the last `/v1/lag` read `r` before
/// the crash either, so that read's exposure was at least `r − c −
/// allowance` (or the commit was observed after `r`, then `c > r −
/// allowance`). Hence `crash − c ≤ exposure(r) + allowance + (crash − r)`.
/// The allowance covers PostgreSQL's write to walship's file event, which
/// walship does not measure: the sender's own p99 detection delay from
/// `/metrics`, at least [`DETECTION_FLOOR`].
#[test]
fn async_drill_reports_lost_window_within_rpo_exposure() {
    let mut d = Drill::start(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_clients(&d.primary.conninfo(), None, &stop);
    let run = drill_duration();
    let started = Instant::now();
    // (request sent, exposure) of every read; the last one just before the crash.
    let mut reads: Vec<(Instant, f64)> = Vec::new();
    let mut detection_p99 = None;
    let mut archiver = None;
    let agent = http::agent();
    while started.elapsed() < run {
        let in_last_second = started.elapsed() + Duration::from_secs(1) >= run;
        if in_last_second && detection_p99.is_none() {
            let m = http::metrics(&d.admin);
            let h = http::histogram(&m, "walship_source_detection_delay_seconds", &[]).expect("detection histogram");
            detection_p99 = Some(h.quantile_upper(0.99).unwrap_or(0.0));
            archiver = Some(d.archiver());
        }
        let sent = Instant::now();
        let (status, body) = http::get_with(&agent, &d.admin, "/v1/lag").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, 200, "{body}");
        let lag: serde_json::Value = serde_json::from_str(&body).expect("/v1/lag JSON");
        assert_eq!(lag["sync"]["state"], "async", "{lag}");
        reads.push((sent, lag["rpo_exposure_seconds"].as_f64().expect("rpo_exposure_seconds")));
        assert!(!clients.iter().any(JoinHandle::is_finished), "a client stopped before the crash");
        if !in_last_second {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let crash_at = d.crash();
    let logs = join_clients(clients, &stop, crash_at);
    let (_restored, present, recovery) = d.restore();

    let (read_at, exposure) = *reads.last().expect("a /v1/lag read");
    let last_second: Vec<f64> =
        reads.iter().filter(|(at, _)| crash_at.duration_since(*at) <= Duration::from_secs(1)).map(|r| r.1).collect();
    let max_exposure = last_second.iter().copied().fold(0.0, f64::max);
    let detection_p99 = detection_p99.expect("metrics read");
    // The histogram's last bucket is +Inf; no detection takes a minute.
    let allowance = Duration::from_secs_f64(detection_p99.min(60.0)).max(DETECTION_FLOOR);
    let read_to_crash = crash_at.duration_since(read_at);
    let bound = Duration::from_secs_f64(exposure) + allowance + read_to_crash;

    let committed: Vec<(i64, Instant)> = logs.iter().flat_map(|l| l.committed.iter().copied()).collect();
    let mut lost: Vec<(i64, Instant)> = committed.iter().copied().filter(|(id, _)| !present.contains(id)).collect();
    lost.sort_by_key(|c| c.1);
    let during_sweep = lost.iter().filter(|c| c.1 >= crash_at).count();
    let (archived, failed, last_failed) = archiver.expect("archiver read");
    let window = lost.first().map(|c| crash_at.saturating_duration_since(c.1)).unwrap_or_default();
    let in_doubt: Vec<i64> = logs.iter().filter_map(|l| l.in_doubt).collect();
    let known: HashSet<i64> = committed.iter().map(|c| c.0).chain(in_doubt.iter().copied()).collect();
    let phantom: Vec<i64> = present.iter().copied().filter(|id| !known.contains(id)).collect();
    eprintln!(
        "async drill ({run:?} of {CLIENTS} clients): {} commits, {} lost ({during_sweep} of them returned during \
         the crash sweep, after the crash instant), lost window {window:?}; \
         RPO exposure at the last read {:.3} ms ({read_to_crash:?} before the crash), max in the last second \
         {:.3} ms over {} reads; detection p99 {:.3} ms, allowance {allowance:?}; bound {bound:?}; \
         in doubt: {in_doubt:?}; {archived} files archived; recovery and promotion took {recovery:?}",
        committed.len(),
        lost.len(),
        exposure * 1e3,
        max_exposure * 1e3,
        last_second.len(),
        detection_p99 * 1e3,
    );
    assert!(committed.len() >= 300, "only {} commits in {run:?}: the drill proves little", committed.len());
    assert!(phantom.is_empty(), "rows nobody committed: {phantom:?}");
    assert!(
        window <= bound,
        "lost commits from {window:?} before the crash, more than exposure {exposure} s + allowance {allowance:?} + \
         {read_to_crash:?} since the read; lost: {:?}\nmirror:\n{}\nsender log:\n{}",
        &lost.iter().map(|c| c.0).take(50).collect::<Vec<_>>(),
        listing(&d.env.mirror),
        lines_with(&d.sender.log_text(), "WARN")
    );
    assert_eq!(
        failed,
        0,
        "archive_command failed ({last_failed}) with a healthy receiver; primary log:\n{}",
        archive_lines(&d.primary)
    );
}

/// `TTTTTTTTXXXXXXXXYYYYYYYY` for segment `segno` of timeline 1.
fn segment_name(segno: u64, segsize: u64) -> String {
    let per_id = 0x1_0000_0000 / segsize;
    format!("00000001{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// The segment number of a segment file name (`None` for other files).
fn segment_no(name: &str, segsize: u64) -> Option<u64> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    Some(log * (0x1_0000_0000 / segsize) + seg)
}

/// `xlp_pageaddr` of the file's first page header (a u64 LE at offset 8).
fn first_pageaddr(path: &Path) -> u64 {
    use std::io::Read;
    let mut head = [0u8; 40];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"))
}

/// Segments of `wal_dir` named after `current` whose first page is
/// recycled WAL of an older position: (name, the position its page says).
fn stale_future_segments(wal_dir: &Path, current: u64, segsize: u64) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(wal_dir)
        .expect("list pg_wal")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let segno = segment_no(&name, segsize).filter(|&n| n > current)?;
            let addr = first_pageaddr(&e.path());
            // Only files whose earlier life filled them: one that ended in an early
            // XLOG_SWITCH is zeros past it and could not show stale bytes being shipped.
            let full = std::fs::read(e.path()).is_ok_and(|b| b[b.len() * 3 / 4..].iter().any(|&x| x != 0));
            (addr != 0 && addr != segno * segsize && full).then_some((name, addr))
        })
        .collect();
    out.sort();
    out
}

/// `X/Y` as a number.
fn parse_lsn(s: &str) -> u64 {
    let (hi, lo) = s.trim().split_once('/').unwrap_or_else(|| panic!("not an LSN: {s:?}"));
    let n = |h: &str| u64::from_str_radix(h, 16).unwrap_or_else(|e| panic!("LSN {s:?}: {e}"));
    (n(hi) << 32) | n(lo)
}

/// PostgreSQL recycles old segments under future names, stale bytes and
/// all. Shipping through a run that recycles (archive_command letting each
/// segment go once it is on the mirror, checkpoints recycling them), the
/// mirror gets none of them: the segment being written ends, in the
/// mirror's `.partial`, at the sender's end position with zeros where the
/// source file still holds stale WAL, no future-named file is in the
/// mirror, and `walship verify` finds mirror and source equal.
#[test]
fn recycled_segment_is_never_shipped_as_valid_data() {
    const SEG: u64 = 1 << 20;
    let mut d = Drill::start(&[]);
    let wal_dir = d.primary.wal_dir();
    d.primary.sql("CREATE TABLE big (id int, pad text)");
    let deadline = Instant::now() + T;
    let mut rounds = 0;
    let stale = loop {
        d.primary.sql("INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 4000) g");
        d.primary.sql("CHECKPOINT");
        rounds += 1;
        let current = segment_no(&d.primary.sql("SELECT pg_walfile_name(pg_current_wal_lsn())"), SEG).expect("name");
        let stale = stale_future_segments(&wal_dir, current, SEG);
        if !stale.is_empty() {
            break stale;
        }
        assert!(
            Instant::now() < deadline,
            "no recycled segment in pg_wal after {rounds} rounds of WAL and checkpoints: {:?}\n{}",
            d.archiver(),
            listing(&wal_dir)
        );
    };
    // Switch segments until the one being written is a recycled file: a few records at its
    // start, stale WAL after them. (Which future file holds a full earlier life depends on
    // PostgreSQL's recycling order, so look at the file being written instead of guessing.)
    let deadline = Instant::now() + T;
    let mut switches = 0;
    loop {
        d.primary.sql("INSERT INTO big VALUES (0, 'switching')");
        let lsn = parse_lsn(&d.primary.sql("SELECT pg_current_wal_lsn()::text"));
        let path = wal_dir.join(segment_name(lsn / SEG, SEG));
        let from = usize::try_from(lsn % SEG).expect("offset") + 16384;
        let bytes = std::fs::read(&path).unwrap_or_default();
        if bytes.get(from..).is_some_and(|rest| rest.iter().any(|&b| b != 0)) {
            break;
        }
        assert!(Instant::now() < deadline, "no recycled segment became current after {switches} switches");
        d.primary.sql("SELECT pg_switch_wal()");
        d.primary.sql("CHECKPOINT");
        switches += 1;
    }
    d.primary.stop();
    let controldata = Command::new(pg::pg_bin("pg_controldata")).arg(d.primary.data_dir()).output().expect("run");
    let controldata = String::from_utf8_lossy(&controldata.stdout).into_owned();
    let checkpoint = controldata
        .lines()
        .find_map(|l| l.strip_prefix("Latest checkpoint location:"))
        .map(parse_lsn)
        .unwrap_or_else(|| panic!("no checkpoint location in pg_controldata:\n{controldata}"));

    // Everything the stopped server wrote is shipped; the stream ends after its shutdown checkpoint.
    let deadline = Instant::now() + T;
    let end = loop {
        let lag = http::lag(&d.admin);
        let end = lag["source"]["end_pos"].as_u64().expect("end_pos");
        let flushed = lag["receivers"][0]["flush_pos"].as_u64().expect("flush_pos");
        if end > checkpoint && flushed == end {
            break end;
        }
        assert!(Instant::now() < deadline, "the shutdown checkpoint at {checkpoint} never became durable: {lag}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(d.sender.term(), Some(0), "sender exit on SIGTERM; log:\n{}", d.sender.log_text());
    assert_eq!(d.receiver.term(), Some(0), "receiver exit on SIGTERM; log:\n{}", d.receiver.log_text());

    let segno = end / SEG;
    let name = segment_name(segno, SEG);
    let off = usize::try_from(end % SEG).expect("offset");
    let source = std::fs::read(wal_dir.join(&name)).expect("source segment");
    assert!(
        source[off..].iter().any(|&b| b != 0),
        "{name} holds no stale bytes past the end {end}: the check below would prove nothing"
    );
    let mirrored = std::fs::read(d.env.mirror.join(format!("{name}.partial")))
        .unwrap_or_else(|e| panic!("{name}.partial in the mirror: {e}\nmirror:\n{}", listing(&d.env.mirror)));
    assert_eq!(mirrored.len(), source.len(), "{name}.partial is a full-size segment");
    assert!(mirrored[..off] == source[..off], "{name}: the mirror's bytes below the end {end} differ from the source");
    let first_nonzero = mirrored[off..].iter().position(|&b| b != 0);
    assert_eq!(first_nonzero, None, "{name}.partial holds bytes past the end {end} (stale WAL shipped?)");
    let shipped_future: Vec<String> = std::fs::read_dir(&d.env.mirror)
        .expect("list mirror")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| segment_no(n.trim_end_matches(".partial"), SEG).is_some_and(|s| s > segno))
        .collect();
    assert!(shipped_future.is_empty(), "recycled segments in the mirror: {shipped_future:?}");

    let out = Command::new(walship_bin())
        .args(["verify", "--format", "postgres", "--wal-dir"])
        .arg(&wal_dir)
        .arg("--mirror")
        .arg(&d.env.mirror)
        .output()
        .expect("run walship verify");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!(
        "recycling drill: {rounds} rounds, {} stale future segments (first {:?}); end {end} in {name} at offset \
         {off}, {} stale bytes past it in the source; verify:\n{report}",
        stale.len(),
        stale[0],
        source[off..].iter().filter(|&&b| b != 0).count(),
    );
    assert!(out.status.success(), "walship verify failed ({}):\n{report}\npg_wal:\n{}", out.status, listing(&wal_dir));
}

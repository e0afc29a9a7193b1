//! Network faults between a real sender and a real receiver, injected by
//! the user-space chaos proxy (`walship_tests::chaos`): loss with delay and
//! jitter, a partition longer than the QUIC idle timeout, many short
//! partitions, reordering with duplication, and semi-sync waits during a
//! partition. A writer appends all the while; every case ends with a
//! byte-identical mirror and prints a one-line report.
//!
//! CI runs short versions. The long mode:
//! `WALSHIP_CHAOS_SECS=30 WALSHIP_CHAOS_PARTITION_SECS=30 WALSHIP_CHAOS_PARTITIONS=100
//!  cargo nextest run -p walship-tests --test chaos --no-capture`;
//! `WALSHIP_CHAOS_FIGURES=FILE` appends each report to FILE,
//! `WALSHIP_CHAOS_LOGS=DIR` keeps the processes' logs there, and
//! `WALSHIP_CHAOS_SEED=N` changes the proxy's seed.
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use walship_tests::chaos::{Faults, Proxy, Rng, Stats};
use walship_tests::writer::WriterConfig;
use walship_tests::{Env, Proc, Writer, field, file_crcs, http, mirror_durable, wait_durable};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const T: Duration = Duration::from_secs(60);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|e| panic!("{name}={v:?}: {e}")),
        Err(_) => default,
    }
}

fn seed(case: u64) -> u64 {
    env_u64("WALSHIP_CHAOS_SEED", 0x5eed) ^ case
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn pos(line: &str, key: &str) -> u64 {
    field(line, key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no numeric {key} in {line:?}"))
}

/// What a thread polling the sender's `/v1/lag` saw.
#[derive(Debug, Clone, Default)]
struct LagSeen {
    samples: u64,
    max_lag_bytes: u64,
    max_flush_lag_s: f64,
    /// The highest flush position the sender had acknowledged.
    max_acked: u64,
    /// Samples where the sender held an acknowledgement beyond what the
    /// mirror's control file said was durable right afterwards.
    acked_not_durable: u64,
    reconnects: u64,
    states: Vec<String>,
    sync_states: Vec<String>,
}

/// Polls the sender's `/v1/lag` every 50 ms and, right after each answer,
/// the mirror's durable position on disk.
struct LagPoller {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<LagSeen>>,
}

impl LagPoller {
    fn start(admin: &str, mirror: &std::path::Path) -> LagPoller {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, admin, mirror) = (stop.clone(), admin.to_string(), mirror.to_path_buf());
        let handle = std::thread::spawn(move || {
            let agent = http::agent();
            let mut seen = LagSeen::default();
            while !s.load(Ordering::Relaxed) {
                let next = Instant::now() + ms(50);
                let (status, body) = http::get_with(&agent, &admin, "/v1/lag").unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(status, 200, "/v1/lag answered {status}: {body}");
                let durable = walship_store::read_durable(&mirror).ok().map(|p| p.get());
                let v: serde_json::Value = serde_json::from_str(&body).expect("/v1/lag JSON");
                let r = &v["receivers"][0];
                let acked = r["flush_pos"].as_u64().expect("flush_pos");
                seen.samples += 1;
                seen.max_lag_bytes = seen.max_lag_bytes.max(r["lag_bytes"].as_u64().expect("lag_bytes"));
                seen.max_flush_lag_s = seen.max_flush_lag_s.max(r["flush_lag_seconds"].as_f64().expect("lag s"));
                seen.max_acked = seen.max_acked.max(acked);
                seen.acked_not_durable += u64::from(durable.is_some_and(|d| acked > d));
                seen.reconnects = r["reconnects"].as_u64().expect("reconnects");
                for (list, s) in [(&mut seen.states, &r["state"]), (&mut seen.sync_states, &v["sync"]["state"])] {
                    let s = s.as_str().unwrap_or("?").to_string();
                    if list.last() != Some(&s) {
                        list.push(s);
                    }
                }
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            seen
        });
        LagPoller { stop, handle: Some(handle) }
    }

    fn stop(mut self) -> LagSeen {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().expect("once").join().expect("lag poller panicked")
    }
}

impl Drop for LagPoller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A receiver, the proxy in front of it, and a sender shipping through the proxy.
struct Rig {
    env: Env,
    recv: Proc,
    recv_admin: String,
    proxy: Proxy,
    sender: Proc,
    admin: String,
    poller: Option<LagPoller>,
    started: Instant,
}

impl Rig {
    fn start(case: u64, faults: Faults, sender_extra: &[&str]) -> Rig {
        let env = Env::new();
        let recv = env.receiver_with("receiver", "127.0.0.1:0", &["--admin-addr", "127.0.0.1:0"]);
        let listen: SocketAddr =
            field(&recv.wait_log("receiver listening", T), "listen").expect("listen").parse().expect("socket address");
        let recv_admin = field(&recv.wait_log("admin endpoint listening", T), "admin").expect("admin");
        let proxy = Proxy::start(listen, seed(case), faults);
        // The proxy stands for a WAN path: Ethernet-sized datagrams, as to a remote receiver
        // (to 127.0.0.1 the sender would otherwise send 65000-byte ones, and far fewer packets).
        let mut extra = vec!["--admin-addr", "127.0.0.1:0", "--server-name", "127.0.0.1", "--mtu-upper-bound", "1452"];
        extra.extend_from_slice(sender_extra);
        let sender = env.sender("sender", &proxy.addr().to_string(), &extra);
        let admin = field(&sender.wait_log("admin endpoint listening", T), "admin").expect("admin");
        let poller = Some(LagPoller::start(&admin, &env.mirror));
        Rig { env, recv, recv_admin, proxy, sender, admin, poller, started: Instant::now() }
    }

    fn writer(&self, rate: u64, secs: f64) -> Writer {
        Writer::start(
            &self.env.wal,
            WriterConfig {
                total: (rate as f64 * secs) as u64,
                segment_size: 4 * MIB,
                chunk: 16 << 10,
                rate: Some(rate),
                seal_last: true,
            },
        )
    }

    fn lag(&self) -> serde_json::Value {
        http::lag(&self.admin)
    }

    /// Waits for the writer, then for the mirror to be complete and
    /// identical; stops both processes cleanly and reports.
    fn finish(mut self, case: &str, w: Writer, extra: &str) -> Report {
        let total = w.join();
        let caught_up_from = Instant::now();
        wait_durable(&self.env.mirror, total, Duration::from_secs(180));
        let catch_up = caught_up_from.elapsed();
        walship_tests::wait_complete(&self.env.wal, &self.env.mirror, T);
        let source: Vec<_> = file_crcs(&self.env.wal, |_| true).into_iter().filter(|f| f.1 > 0).collect();
        let mirror = file_crcs(&self.env.mirror, |n| !n.ends_with(".partial") && !n.starts_with("walship."));
        assert_eq!(mirror, source, "{case}: mirror segments must equal the source's");
        let seen = self.poller.take().expect("poller").stop();
        let m = http::metrics(&self.admin);
        let sent = http::sample(&m, "walship_sent_bytes_total", &[]).expect("walship_sent_bytes_total") as u64;
        let crc = http::sample(&m, "walship_crc_errors_total", &[]).expect("walship_crc_errors_total") as u64;
        let rm = http::metrics(&self.recv_admin);
        let rejected =
            http::sample(&rm, "walship_frames_rejected_total", &[]).expect("walship_frames_rejected_total") as u64;
        let stats = self.proxy.stats();
        assert_eq!(self.sender.term(), Some(0), "{case}: the sender exits cleanly");
        assert_eq!(self.recv.term(), Some(0), "{case}: the receiver exits cleanly");
        let stopped = self.recv.wait_log("receiver stopped", T);
        if let Some(dir) = std::env::var_os("WALSHIP_CHAOS_LOGS") {
            let dir = std::path::PathBuf::from(dir);
            std::fs::create_dir_all(&dir).expect("log dir");
            for name in ["sender", "receiver"] {
                let _ = std::fs::copy(self.env.path(&format!("{name}.log")), dir.join(format!("{case}-{name}.log")));
            }
        }
        let durable = mirror_durable(&self.env.mirror);
        // Every acknowledgement the sender ever held is covered by the final mirror, which is identical.
        let lost_acked = seen.max_acked.saturating_sub(durable);
        let r = Report {
            case: case.to_string(),
            written: total,
            sent,
            received: pos(&stopped, "bytes_received"),
            sessions: pos(&stopped, "sessions"),
            seen,
            lost_acked,
            crc_errors: crc,
            frames_rejected: rejected,
            stats,
            catch_up,
            elapsed: self.started.elapsed(),
        };
        r.print(extra);
        assert_eq!(r.lost_acked, 0, "{case}: acknowledged bytes lost");
        assert_eq!(r.seen.acked_not_durable, 0, "{case}: the sender held an ack for bytes not durable on disk");
        assert_eq!((r.crc_errors, r.frames_rejected), (0, 0), "{case}: no frame was corrupted: {r:?}");
        assert!(r.seen.samples > 0, "{case}: the lag poller ran");
        r
    }
}

#[derive(Debug)]
struct Report {
    case: String,
    written: u64,
    sent: u64,
    received: u64,
    sessions: u64,
    seen: LagSeen,
    lost_acked: u64,
    crc_errors: u64,
    frames_rejected: u64,
    stats: Stats,
    catch_up: Duration,
    elapsed: Duration,
}

impl Report {
    fn print(&self, extra: &str) {
        let line = format!(
            "chaos[{}]: written={:.1}MiB sent={:.1}MiB received={:.1}MiB sessions={} reconnects={} \
             max_lag={:.2}MiB/{:.2}s catch_up={:.2}s lost_acked={} acked_not_durable={} elapsed={:.1}s {extra} | {}",
            self.case,
            self.written as f64 / MIB as f64,
            self.sent as f64 / MIB as f64,
            self.received as f64 / MIB as f64,
            self.sessions,
            self.seen.reconnects,
            self.seen.max_lag_bytes as f64 / MIB as f64,
            self.seen.max_flush_lag_s,
            self.catch_up.as_secs_f64(),
            self.lost_acked,
            self.seen.acked_not_durable,
            self.elapsed.as_secs_f64(),
            self.stats,
        );
        println!("{line}");
        if let Some(path) = std::env::var_os("WALSHIP_CHAOS_FIGURES") {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("figures file");
            writeln!(f, "{line}").expect("write figures");
        }
    }
}

/// `walship wait` against `admin`: (exit code, JSON line, wall time).
fn wait_cli(admin: &str, extra: &[&str]) -> (i32, serde_json::Value, Duration) {
    let started = Instant::now();
    let out = Command::new(walship_tests::walship_bin())
        .args(["wait", "--admin", admin])
        .args(extra)
        .output()
        .expect("run walship wait");
    let took = started.elapsed();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let json = serde_json::from_str(&line).unwrap_or_else(|e| {
        panic!("walship wait printed no JSON ({e}): {line:?} / {}", String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().unwrap_or(-1), json, took)
}

/// Waits until the writer has written more than `n` bytes.
fn wait_written_past(w: &Writer, n: u64) {
    w.wait_written(n + 1, T);
}

#[test]
fn loss_delay_and_jitter_under_continuous_writes() {
    let secs = env_u64("WALSHIP_CHAOS_SECS", 8);
    let faults = Faults { delay: ms(20), jitter: ms(10), loss: 0.05, ..Faults::default() };
    let rig = Rig::start(1, faults, &[]);
    // 5 % loss at 40 ms RTT leaves QUIC's congestion control with well under
    // 256 KiB/s of goodput (measured ~85 KiB/s); stay below that so the lag stays bounded.
    let w = rig.writer(64 * KIB, secs as f64);
    // The connection carries data in spite of the loss.
    wait_durable(&rig.env.mirror, 64 * KIB, T);
    let r = rig.finish("loss", w, &format!("loss=5% delay=20ms±10ms each way secs={secs} rate=64KiB/s"));
    assert!(r.stats.up.lost > 0 && r.stats.down.lost > 0, "loss was injected both ways: {}", r.stats);
    let lost = r.stats.up.lost as f64 / r.stats.up.received as f64;
    assert!((0.03..0.07).contains(&lost), "about 5 % lost: {lost}");
    assert_eq!(r.seen.reconnects, 0, "5 % loss does not break the connection");
    assert!(r.sent >= r.written, "everything was sent at least once: {r:?}");
}

#[test]
fn a_partition_longer_than_the_idle_timeout_reconnects_and_catches_up() {
    let part = Duration::from_secs(env_u64("WALSHIP_CHAOS_PARTITION_SECS", 12));
    let rate = 2 * MIB;
    let rig = Rig::start(2, Faults::default(), &[]);
    let w = rig.writer(rate, part.as_secs_f64() + 8.0);
    rig.sender.wait_log("streaming", T);
    wait_durable(&rig.env.mirror, 4 * MIB, T);

    rig.proxy.partition(true);
    let cut = Instant::now();
    let written_at_cut = w.written();
    // No acknowledgement can arrive any more: what the sender holds now is
    // everything the first session ever acknowledged.
    let acked = rig.lag()["receivers"][0]["flush_pos"].as_u64().expect("flush_pos");
    // The connection really dies: both sides notice the silence (QUIC idle timeout, 10 s).
    let ended = rig.sender.wait_log("session ended", part + T);
    assert!(cut.elapsed() < part, "the sender noticed the dead connection during the partition: {ended}");
    let died_after = cut.elapsed();
    // The writer keeps writing and the sender keeps tailing.
    wait_written_past(&w, written_at_cut + rate);
    let end = rig.lag()["source"]["end_pos"].as_u64().expect("end_pos");
    assert!(end > written_at_cut + rate / 2, "the sender tails while partitioned: end {end}, cut at {written_at_cut}");
    let durable_in_partition = mirror_durable(&rig.env.mirror);
    assert!(durable_in_partition < end, "nothing crosses the partition");
    if let Some(rest) = part.checked_sub(cut.elapsed()) {
        std::thread::sleep(rest); // the fault itself: the partition lasts `part`
    }
    assert_eq!(rig.recv.log_lines("session accepted").len(), 1, "no session got through the partition");
    rig.proxy.partition(false);
    let healed = Instant::now();

    // The sender reconnects by itself and resumes where the mirror is durable.
    let streaming = rig.sender.wait_log_n("streaming", 2, T);
    let reconnect_after = healed.elapsed();
    let accepted = rig.recv.wait_log_n("session accepted", 2, T);
    let resume = pos(&streaming, "resume_pos");
    assert_eq!(resume, pos(&accepted, "resume_pos"), "both sides agree where the second session starts");
    assert!(resume >= acked, "no acknowledged byte was lost: resumed at {resume}, {acked} were acknowledged");
    let durable_after = mirror_durable(&rig.env.mirror);
    assert!(resume <= durable_after, "resumed at {resume}, within what is durable ({durable_after})");
    // And catches up with a writer that never stopped.
    let target = w.written();
    wait_durable(&rig.env.mirror, target, T);
    let caught_up = healed.elapsed();
    let extra = format!(
        "partition={:.1}s session_died_after={:.1}s reconnected_after_heal={:.2}s resume_pos={resume} acked_at_cut={acked} \
         caught_up_with_{:.1}MiB_after_heal={:.2}s rate=2MiB/s",
        part.as_secs_f64(),
        died_after.as_secs_f64(),
        reconnect_after.as_secs_f64(),
        target as f64 / MIB as f64,
        caught_up.as_secs_f64()
    );
    let r = rig.finish("partition", w, &extra);
    assert!(r.seen.reconnects >= 1, "the sender counted a reconnect: {r:?}");
    assert!(r.sessions >= 2, "the receiver accepted a second session: {r:?}");
    assert!(r.seen.states.iter().any(|s| s != "streaming"), "the lag endpoint showed the outage: {:?}", r.seen);
    assert!(r.stats.up.blackholed > 0 && r.stats.partitions == 1, "{}", r.stats);
}

#[test]
fn many_short_partitions_lose_nothing() {
    let n = env_u64("WALSHIP_CHAOS_PARTITIONS", 30);
    let rig = Rig::start(3, Faults::default(), &[]);
    let w = rig.writer(MIB, 1.0 + n as f64 * 0.4);
    rig.sender.wait_log("streaming", T);
    wait_durable(&rig.env.mirror, 256 * KIB, T);
    let mut rng = Rng::new(seed(3) ^ 0xC0FFEE);
    let (mut cut, mut longest) = (Duration::ZERO, Duration::ZERO);
    let mut durable = mirror_durable(&rig.env.mirror);
    let mut progressed = 0;
    for _ in 0..n {
        let len = rng.between(ms(20), ms(400));
        let gap = rng.between(ms(50), ms(300));
        rig.proxy.partition(true);
        std::thread::sleep(len); // the fault: partitioned for `len`
        rig.proxy.partition(false);
        std::thread::sleep(gap); // and healed for `gap`
        let d = mirror_durable(&rig.env.mirror);
        progressed += u32::from(d > durable);
        durable = d;
        cut += len;
        longest = longest.max(len);
    }
    let extra = format!(
        "partitions={n} of 20-400ms (total {:.1}s, longest {}ms) gaps 50-300ms; progress between {progressed} of them; rate=1MiB/s",
        cut.as_secs_f64(),
        longest.as_millis()
    );
    let r = rig.finish("short-partitions", w, &extra);
    assert_eq!(r.stats.partitions, n, "{}", r.stats);
    assert!(r.stats.up.blackholed > 0 && r.stats.down.blackholed > 0, "{}", r.stats);
    // Short partitions usually leave the connection up, but QUIC's probe
    // timeout doubles with every unanswered probe and does not reset until
    // an ack arrives, so a run of partitions can stall the connection; the
    // sender's stall watchdog then reconnects (and a connection attempt that
    // lands in a partition may time out and be retried). Reconnects are
    // allowed (and reported); losing or duplicating data is not, and every
    // session must have come from a reconnect.
    assert!(r.sessions >= 1 && r.sessions <= r.seen.reconnects + 1, "sessions without a reconnect: {r:?}");
}

#[test]
fn reordering_and_duplication_are_harmless() {
    let secs = env_u64("WALSHIP_CHAOS_SECS", 8);
    let faults =
        Faults { delay: ms(2), reorder: 0.10, reorder_delay: (ms(5), ms(30)), duplicate: 0.05, ..Faults::default() };
    let rig = Rig::start(4, faults, &[]);
    let w = rig.writer(MIB, secs as f64);
    let r = rig.finish(
        "reorder-dup",
        w,
        &format!("reorder=10% by +5..30ms duplicate=5% delay=2ms secs={secs} rate=1MiB/s"),
    );
    for d in [&r.stats.up, &r.stats.down] {
        assert!(d.reordered > 0 && d.duplicated > 0, "reordering and duplication were injected: {}", r.stats);
    }
    assert_eq!(r.seen.reconnects, 0, "{r:?}");
    assert_eq!(r.sessions, 1, "{r:?}");
}

#[test]
fn semi_sync_waits_degrade_during_a_partition_and_recover_after() {
    let rig = Rig::start(5, Faults::default(), &["--sync-quorum", "1", "--sync-timeout", "2s"]);
    let w = rig.writer(256 * KIB, 12.0);
    rig.sender.wait_log("streaming", T);
    wait_durable(&rig.env.mirror, 64 * KIB, T);
    let (code, j, _) = wait_cli(&rig.admin, &[]);
    assert_eq!((code, j["outcome"].as_str()), (0, Some("durable")), "connected: {j}");
    assert_eq!(rig.lag()["sync"]["state"], "sync");

    rig.proxy.partition(true);
    let cut = Instant::now();
    // Bytes written after the cut cannot become durable until it heals.
    wait_written_past(&w, w.written());
    let (code, j, took) = wait_cli(&rig.admin, &[]);
    let durable = mirror_durable(&rig.env.mirror);
    assert_eq!((code, j["outcome"].as_str()), (3, Some("degraded")), "partitioned: {j}");
    let waited = j["waited_ms"].as_u64().expect("waited_ms");
    assert!((1900..3000).contains(&waited), "degraded after about the 2 s sync timeout: {j}");
    assert!(took < Duration::from_secs(6), "the wait returned, it did not hang: {took:?}");
    let position = j["position"].as_u64().expect("position");
    assert!(durable < position, "the degraded wait's position ({position}) is not durable ({durable})");
    rig.sender.wait_log("semi-sync degraded to async", T);
    assert_eq!(rig.lag()["sync"]["state"], "degraded");
    let (code, j, _) = wait_cli(&rig.admin, &[]);
    assert_eq!((code, j["waited_ms"].as_u64()), (3, Some(0)), "while degraded, waits return at once: {j}");
    let partitioned = cut.elapsed();
    rig.proxy.partition(false);
    let healed = Instant::now();

    rig.sender.wait_log("semi-sync restored", T);
    let restored_after = healed.elapsed();
    assert_eq!(rig.lag()["sync"]["state"], "sync");
    let (code, j, took) = wait_cli(&rig.admin, &[]);
    let durable = mirror_durable(&rig.env.mirror);
    assert_eq!((code, j["outcome"].as_str()), (0, Some("durable")), "healed: {j}");
    let position = j["position"].as_u64().expect("position");
    assert!(position <= durable, "durable means on the mirror's disk: {position} > {durable}");
    let m = http::metrics(&rig.admin);
    assert_eq!(http::sample(&m, "walship_sync_fallbacks_total", &[]), Some(1.0));
    assert_eq!(http::sample(&m, "walship_sync_recoveries_total", &[]), Some(1.0));
    let extra = format!(
        "sync-quorum=1 sync-timeout=2s partition={:.1}s degraded_wait={waited}ms restored_after_heal={:.2}s \
         durable_wait_after={}ms rate=256KiB/s",
        partitioned.as_secs_f64(),
        restored_after.as_secs_f64(),
        took.as_millis()
    );
    let r = rig.finish("semi-sync", w, &extra);
    assert!(r.seen.sync_states.iter().any(|s| s == "degraded"), "the lag endpoint showed degraded: {:?}", r.seen);
    assert_eq!(r.seen.sync_states.last().map(String::as_str), Some("sync"), "{:?}", r.seen);
    assert_eq!(r.seen.reconnects, 0, "a partition shorter than the idle timeout keeps the connection: {r:?}");
}

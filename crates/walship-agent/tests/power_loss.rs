//! Power loss on the receiver's real store, end to end: a sender and a
//! receiver in this process, real QUIC with mutual TLS on 127.0.0.1, real
//! fdatasync, a writer thread appending raw WAL segments. Each round arms
//! the power-cut layer (`walship_store::powercut`) on the mirror, lets it
//! stream, cuts the power at a random moment while unsynced bytes are at
//! stake (they are rolled back on disk, every later I/O fails with EIO),
//! stops the receiver, and brings up a new one on the same directory and
//! port. Its recovered durable position must cover every flush the sender
//! was ever acknowledged (and every flush the receiver ever reported), and
//! the sender must resume there. At the end the mirror is byte-identical.
//!
//! `WALSHIP_POWER_CUTS` (default 10) and `WALSHIP_POWER_SEED` pick the rounds.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use walship_agent::{ConnState, Receiver, ReceiverOptions, Sender, SenderHandle, SenderOptions, Target};
use walship_core::Position;
use walship_store::{Mirror, powercut};

const MIB: u64 = 1 << 20;
const SEGMENT: u64 = 2 * MIB;
const T: Duration = Duration::from_secs(60);

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Appends pseudo-random bytes to numbered segment files at about `rate`
/// bytes per second, fdatasync after every chunk, until `stop`; then
/// creates an empty next segment so that every data segment is sealed.
fn writer(dir: PathBuf, rate: u64, stop: Arc<AtomicBool>, written: Arc<AtomicU64>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut buf = vec![0u8; 64 << 10];
        let (mut seg, mut in_seg, mut total) = (0u64, 0u64, 0u64);
        let name = |n: u64| dir.join(format!("{n:016X}"));
        let mut file = File::create(name(seg)).unwrap();
        while !stop.load(Ordering::Acquire) {
            if in_seg == SEGMENT {
                file.sync_all().unwrap();
                seg += 1;
                in_seg = 0;
                file = File::create(name(seg)).unwrap();
            }
            let n = (buf.len() as u64).min(SEGMENT - in_seg) as usize;
            for b in &mut buf[..n] {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = (state >> 24) as u8;
            }
            file.write_all(&buf[..n]).unwrap();
            file.sync_data().unwrap();
            in_seg += n as u64;
            total += n as u64;
            written.store(total, Ordering::Release);
            let due = start + Duration::from_secs_f64(total as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        file.sync_all().unwrap();
        File::create(name(seg + 1)).unwrap().sync_all().unwrap();
        total
    })
}

/// Polls `f` (every 5 ms) until it is true; fails after `T` naming `what`.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn status(h: &SenderHandle) -> walship_agent::ReceiverStatus {
    h.snapshot().receivers.into_iter().next().unwrap()
}

/// (name, bytes) of every non-empty file in the WAL, and the same names in the mirror.
fn compare(wal: &Path, mirror: &Path) -> (Vec<(String, u64)>, Vec<String>) {
    let mut names: Vec<String> = std::fs::read_dir(wal)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| std::fs::metadata(wal.join(n)).unwrap().len() > 0)
        .collect();
    names.sort();
    let mut sizes = Vec::new();
    let mut differ = Vec::new();
    for n in names {
        let src = std::fs::read(wal.join(&n)).unwrap();
        if std::fs::read(mirror.join(&n)).ok().as_deref() != Some(&src[..]) {
            differ.push(n.clone());
        }
        sizes.push((n, src.len() as u64));
    }
    (sizes, differ)
}

/// Binds a receiver; the previous one's UDP socket on the same port is
/// released by quinn's endpoint driver a moment after `run` returned.
async fn bind(opts: ReceiverOptions) -> Receiver {
    let deadline = Instant::now() + T;
    loop {
        match Receiver::bind(opts.clone()) {
            Ok(r) => return r,
            Err(e) if e.to_string().contains("in use") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("binding the receiver: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_never_loses_an_acknowledged_flush() {
    let cuts: u64 = std::env::var("WALSHIP_POWER_CUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let seed: u64 = std::env::var("WALSHIP_POWER_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5EED);
    let mut rng = Rng(seed | 1);
    let root = tempfile::tempdir().unwrap();
    let certs = walship_net::certs::ephemeral(&root.path().join("certs")).unwrap();
    let (wal, mirror) = (root.path().join("wal"), root.path().join("mirror"));
    std::fs::create_dir_all(&wal).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = writer(wal.clone(), 8 * MIB, stop.clone(), written.clone());

    // The first receiver picks a port; every later one binds the same address.
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 0));
    // A disk that takes 1-10 ms before each flush (the store's own slow-disk
    // hook) keeps bytes unsynced long enough for a cut to find them.
    let options = |listen: SocketAddr, delay_ms: u64| {
        let mut opts = ReceiverOptions::new(listen, mirror.clone(), certs.server(), "power");
        opts.flush.debug_delay = Duration::from_millis(delay_ms);
        opts
    };
    let mut receiver = bind(options(listen, 1 + rng.below(10))).await;
    listen = receiver.local_addr().unwrap();
    let target = Target { addr: listen, server_name: "localhost".into(), label: listen.to_string() };
    let mut sopts = SenderOptions::new(wal.clone(), "power-source", vec![target], certs.client());
    sopts.backoff_initial = Duration::from_millis(20);
    sopts.backoff_max = Duration::from_millis(200);
    let sender = Sender::new(sopts).unwrap();
    let sender_h = sender.handle();
    let sender_stop = CancellationToken::new();
    let sender_task = tokio::spawn(sender.run(sender_stop.clone()));

    let (mut rolled_back, mut segment_bytes_lost, mut discarded, mut max_ack) = (0u64, 0u64, 0u64, 0u64);
    let mut recovered = Position::ZERO;
    for round in 0..cuts {
        // Exact rollback, or the harsh mix (new bytes kept, zeroed, torn).
        let harsh = round % 2 == 1;
        if harsh {
            powercut::arm_harsh(&mirror, seed ^ round);
        } else {
            powercut::arm(&mirror);
        }
        let h = receiver.handle();
        let rstop = CancellationToken::new();
        let task = tokio::spawn(receiver.run(rstop.clone()));
        // The sender resumes exactly at the recovered position and makes progress.
        until("the sender to stream", || {
            let s = status(&sender_h);
            s.state == ConnState::Streaming && s.resume_pos == recovered && s.flushed > recovered
        })
        .await;
        // A random moment, then the first one with unsynced bytes at stake.
        tokio::time::sleep(Duration::from_millis(50 + rng.below(400))).await;
        until("unsynced bytes", || powercut::unsynced_bytes() > 0).await;
        let report = powercut::cut();
        assert!(report.errors.is_empty(), "round {round}: {report:?}");
        // The store fails at its next I/O; the receiver goes down completely.
        rstop.cancel();
        task.await.unwrap().unwrap();
        until("the sender to notice", || status(&sender_h).state != ConnState::Streaming).await;
        let acked = status(&sender_h).flushed;
        let reported = h.stats().flushed_pos;
        powercut::reset();

        let (m, rep) = Mirror::open(&mirror).unwrap();
        drop(m);
        recovered = rep.durable_pos;
        assert!(
            recovered >= acked,
            "round {round}: {} acknowledged bytes lost: recovered {recovered}, sender acked {acked}",
            acked.since(recovered)
        );
        assert!(recovered >= reported, "round {round}: recovered {recovered} < flushed reported {reported}");
        rolled_back += report.bytes_rolled_back;
        segment_bytes_lost +=
            report.bytes_by_file.iter().filter(|(n, _)| !n.starts_with("walship.")).map(|(_, b)| b).sum::<u64>();
        discarded += rep.discarded_bytes;
        max_ack = max_ack.max(acked.get());
        println!(
            "round {round} ({}): acked {acked} recovered {recovered} rolled back {} {:?} discarded {}",
            if harsh { "harsh" } else { "exact" },
            report.bytes_rolled_back,
            report.bytes_by_file,
            rep.discarded_bytes
        );
        receiver = bind(options(listen, 1 + rng.below(10))).await;
        assert_eq!(receiver.handle().stats().flushed_pos, recovered, "the receiver resumes where recovery left it");
    }

    // The last receiver runs without faults to the end of the stream.
    let rstop = CancellationToken::new();
    let task = tokio::spawn(receiver.run(rstop.clone()));
    stop.store(true, Ordering::Release);
    let total = tokio::task::spawn_blocking(move || writer.join().unwrap()).await.unwrap();
    until("the mirror to hold every segment", || {
        let (_, differ) = compare(&wal, &mirror);
        differ.is_empty()
    })
    .await;
    let (files, differ) = compare(&wal, &mirror);
    assert!(differ.is_empty(), "mirror differs from the source in {differ:?}");
    assert_eq!(files.iter().map(|f| f.1).sum::<u64>(), total);
    sender_stop.cancel();
    sender_task.await.unwrap().unwrap();
    rstop.cancel();
    task.await.unwrap().unwrap();

    println!(
        "power loss (seed {seed:#x}): {cuts} cuts, {total} bytes shipped in {} segments, {rolled_back} unsynced bytes \
         rolled back ({segment_bytes_lost} of them segment data), {discarded} bytes discarded by recovery, \
         acked bytes lost 0 (highest ack at a cut {max_ack})",
        files.len()
    );
    assert!(segment_bytes_lost > 0, "the cuts never hit unsynced segment data");
}

//! `walship demo`: the whole pipeline on loopback, in one process.
//!
//! Temp directories, ephemeral certificates, a synthetic WAL writer that
//! appends with fdatasync at a steady rate across several segment
//! rollovers, a receiver and a sender on 127.0.0.1. It prints throughput
//! and lag as it goes, then waits for the mirror to catch up and verifies
//! it byte for byte: exit 0 when identical, 1 on any mismatch.
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use walship_agent::{Receiver, ReceiverOptions, Sender, SenderOptions, Target};

use crate::cli::DemoArgs;

const MIB: f64 = 1048576.0;

pub async fn run(a: DemoArgs) -> Result<ExitCode> {
    let tmp = tempfile::Builder::new().prefix("walship-demo-").tempdir().context("creating a temp dir")?;
    let root = tmp.path().to_path_buf();
    let (wal, mirror, certs) = (root.join("wal"), root.join("mirror"), root.join("certs"));
    std::fs::create_dir_all(&wal).with_context(|| format!("creating {}", wal.display()))?;
    let paths = walship_net::certs::ephemeral(&certs).context("creating ephemeral certificates")?;
    println!("walship demo: wal {} -> mirror {}", wal.display(), mirror.display());
    println!(
        "writer: {:.1} MiB/s for {:?}, segments of {:.1} MiB, fdatasync after every write",
        a.rate as f64 / MIB,
        a.duration,
        a.segment_size as f64 / MIB
    );

    let receiver =
        Receiver::bind(ReceiverOptions::new("127.0.0.1:0".parse()?, mirror.clone(), paths.server(), "demo-receiver"))?;
    let addr = receiver.local_addr()?;
    let shutdown = CancellationToken::new();
    let recv_task = tokio::spawn(receiver.run(shutdown.clone()));

    // The writer starts first, so the sender sees a growing directory.
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (wal, written, stop) = (wal.clone(), written.clone(), stop.clone());
        let (rate, seg, dur) = (a.rate, a.segment_size, a.duration);
        std::thread::spawn(move || write_wal(&wal, rate, seg, dur, &written, &stop))
    };
    while written.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let sender = Sender::new(SenderOptions {
        sender_name: "demo-sender".into(),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_secs(1),
        ..SenderOptions::new(
            wal.clone(),
            "walship-demo",
            vec![Target { addr, server_name: "localhost".into(), label: addr.to_string() }],
            paths.client(),
        )
    })?;
    let handle = sender.handle();
    let send_task = tokio::spawn(sender.run(shutdown.clone()));

    let start = Instant::now();
    let mut last = (start, 0u64);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut writer_done = false;
    let deadline_after_writer = Duration::from_secs(30);
    let mut writer_end: Option<Instant> = None;
    loop {
        ticker.tick().await;
        let snap = handle.snapshot();
        let r = &snap.receivers[0];
        let now = Instant::now();
        let rate = (r.flushed.get().saturating_sub(last.1)) as f64 / now.duration_since(last.0).as_secs_f64() / MIB;
        last = (now, r.flushed.get());
        println!(
            "t={:>4.1}s  written {:>7.1} MiB  shipped+durable {:>7.1} MiB  {:>6.1} MiB/s  lag {:>8} bytes  [{}]",
            now.duration_since(start).as_secs_f64(),
            written.load(Ordering::Relaxed) as f64 / MIB,
            r.flushed.get() as f64 / MIB,
            rate,
            snap.end.since(r.flushed),
            r.state.as_str(),
        );
        if !writer_done && writer.is_finished() {
            writer_done = true;
            writer_end = Some(now);
        }
        if writer_done && r.flushed.get() >= written.load(Ordering::Relaxed) && snap.end == r.flushed {
            break;
        }
        if writer_end.is_some_and(|t| now.duration_since(t) > deadline_after_writer) {
            println!("the mirror did not catch up within {deadline_after_writer:?} after the writer stopped");
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let total = writer.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    shutdown.cancel();
    send_task.await??;
    recv_task.await??;

    let report = walship_store::verify::verify(&wal, &mirror)?;
    println!("{report}");
    let secs = start.elapsed().as_secs_f64();
    let ok = report.is_ok() && report.durable_pos.get() == total;
    println!(
        "{}: {:.1} MiB written, {:.1} MiB durable on the mirror, in {:.1} s",
        if ok { "OK" } else { "MISMATCH" },
        total as f64 / MIB,
        report.durable_pos.get() as f64 / MIB,
        secs
    );
    if a.keep {
        let kept = tmp.keep();
        println!("kept {}", kept.display());
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Appends pseudo-random bytes at `rate` bytes/s in 10 ms steps, fdatasync
/// after each step, rolling to a new segment every `seg` bytes.
fn write_wal(dir: &Path, rate: u64, seg: u64, dur: Duration, written: &AtomicU64, stop: &AtomicBool) -> Result<u64> {
    let step = (rate / 100).max(1);
    let start = Instant::now();
    let mut total = 0u64;
    let mut n = 0u32;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut buf = vec![0u8; step as usize];
    let seg_path = |n: u32| -> PathBuf { dir.join(format!("{n:08}.wal")) };
    let mut file = OpenOptions::new().create(true).append(true).open(seg_path(n))?;
    let mut in_seg = 0u64;
    let mut tick = 0u64;
    while start.elapsed() < dur && !stop.load(Ordering::Relaxed) {
        let mut remaining = step;
        while remaining > 0 {
            if in_seg == seg {
                file.sync_all()?;
                n += 1;
                file = OpenOptions::new().create(true).append(true).open(seg_path(n))?;
                in_seg = 0;
            }
            let k = remaining.min(seg - in_seg) as usize;
            for b in buf[..k].iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            file.write_all(&buf[..k])?;
            file.sync_data()?;
            in_seg += k as u64;
            remaining -= k as u64;
            total += k as u64;
            written.store(total, Ordering::Relaxed);
        }
        tick += 1;
        let next = start + Duration::from_millis(10 * tick);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(total)
}

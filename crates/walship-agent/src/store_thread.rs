//! The receiver's store thread: owns the [`Mirror`] for one session.
//!
//! The session task hands it [`StoreOp`]s through a bounded channel (so a
//! slow disk slows the network reads, and through QUIC flow control, the
//! sender) and gets [`StoreEvent`]s back. fdatasync is batched the way
//! neon's safekeeper does it: when the queue drains, when `flush_interval`
//! has passed with unflushed bytes, and at every segment end (completing a
//! segment syncs it). A flush is reported only after it returned.
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use walship_core::Position;
use walship_core::receiver::StoreOp;
use walship_store::{Mirror, StoreError};

/// What the store thread reports.
#[derive(Debug)]
pub enum StoreEvent {
    /// Everything below is written to the mirror files.
    Written(Position),
    /// Everything below is on stable storage.
    Flushed { pos: Position, fsync: Duration },
    /// A segment was completed and renamed.
    SegmentCompleted { name: String, end: Position },
    /// The store failed; the session must end. The mirror stays consistent
    /// up to its durable position.
    Failed(String),
}

/// Settings of the store thread.
#[derive(Debug, Clone, Copy)]
pub struct FlushPolicy {
    /// Flush at least this often while bytes are unflushed.
    pub interval: Duration,
    /// Flush when this many bytes are unflushed, even if the queue never drains.
    pub max_unflushed: u64,
    /// Test hook: sleep this long before every flush, to prove that a slow
    /// disk shows up in the reported lag. Zero in production.
    pub debug_delay: Duration,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy { interval: Duration::from_millis(20), max_unflushed: 64 << 20, debug_delay: Duration::ZERO }
    }
}

/// Runs the store loop until `ops` closes or the store fails; flushes what
/// it can on the way out and hands the mirror back.
pub fn run(
    mut mirror: Mirror,
    mut ops: mpsc::Receiver<StoreOp>,
    events: mpsc::UnboundedSender<StoreEvent>,
    policy: FlushPolicy,
) -> Mirror {
    let mut last_flush = Instant::now();
    // Written positions are reported in batches: when the queue drains, and
    // every REPORT_BYTES under continuous load (one event per write would
    // wake the session task for every frame).
    let mut reported = mirror.written_pos();
    loop {
        let op = match ops.try_recv() {
            Ok(op) => Some(op),
            Err(mpsc::error::TryRecvError::Empty) => {
                report_written(&mirror, &mut reported, &events);
                // The queue drained: make what we have durable before waiting.
                if mirror.unflushed_bytes() > 0 {
                    if !policy.debug_delay.is_zero() {
                        std::thread::sleep(policy.debug_delay);
                    }
                    if let Err(e) = flush(&mut mirror, &events) {
                        let _ = events.send(StoreEvent::Failed(e.to_string()));
                        break;
                    }
                    last_flush = Instant::now();
                    continue;
                }
                ops.blocking_recv()
            }
            Err(mpsc::error::TryRecvError::Disconnected) => None,
        };
        let Some(op) = op else { break };
        if let Err(e) = apply(&mut mirror, op, &events) {
            let _ = events.send(StoreEvent::Failed(e.to_string()));
            break;
        }
        if mirror.written_pos().since(reported) >= REPORT_BYTES {
            report_written(&mirror, &mut reported, &events);
        }
        let due = last_flush.elapsed() >= policy.interval || mirror.unflushed_bytes() >= policy.max_unflushed;
        if due && mirror.unflushed_bytes() > 0 {
            if let Err(e) = flush(&mut mirror, &events) {
                let _ = events.send(StoreEvent::Failed(e.to_string()));
                break;
            }
            last_flush = Instant::now();
        }
    }
    // Whatever was written is worth keeping: a later session resumes after it.
    if mirror.unflushed_bytes() > 0 && flush(&mut mirror, &events).is_err() {
        // Still consistent up to the durable position; the next session discards the rest.
        let _ = mirror.discard_unflushed();
    }
    mirror
}

fn apply(mirror: &mut Mirror, op: StoreOp, events: &mpsc::UnboundedSender<StoreEvent>) -> Result<(), StoreError> {
    match op {
        StoreOp::StartSegment { name, start } => {
            mirror.start_segment(&name, start)?;
            let _ = events.send(StoreEvent::Written(mirror.written_pos()));
        }
        StoreOp::Write { pos, data } => mirror.write_chunks(pos, data.chunks())?,
        StoreOp::WriteFile { name, contents } => {
            mirror.write_file(&name, &contents)?;
            tracing::info!(file = %name, bytes = contents.len(), "side file written");
        }
        StoreOp::CompleteSegment { end } => {
            let t = Instant::now();
            let name = mirror.resume_point().segment.map(|s| s.name.to_string()).unwrap_or_default();
            mirror.complete_segment(end)?;
            let _ = events.send(StoreEvent::Written(mirror.written_pos()));
            let _ = events.send(StoreEvent::Flushed { pos: mirror.durable_pos(), fsync: t.elapsed() });
            let _ = events.send(StoreEvent::SegmentCompleted { name, end });
        }
    }
    Ok(())
}

/// Report the written position under continuous load at least this often.
const REPORT_BYTES: u64 = 1 << 20;

fn report_written(mirror: &Mirror, reported: &mut Position, events: &mpsc::UnboundedSender<StoreEvent>) {
    let w = mirror.written_pos();
    if w > *reported {
        *reported = w;
        let _ = events.send(StoreEvent::Written(w));
    }
}

fn flush(mirror: &mut Mirror, events: &mpsc::UnboundedSender<StoreEvent>) -> Result<(), StoreError> {
    let t = Instant::now();
    // The ack for a flush must not claim more written than reported.
    let _ = events.send(StoreEvent::Written(mirror.written_pos()));
    let pos = mirror.flush()?;
    let _ = events.send(StoreEvent::Flushed { pos, fsync: t.elapsed() });
    Ok(())
}

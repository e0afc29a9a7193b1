//! The invariants, checked after every step (and at the end of a run).
//!
//! 1. No flush position a sender session accepted covers a byte that is not
//!    durable on that receiver, and no apply position one that is not
//!    applied (durable, without an apply step).
//! 2. A waiter released as durable had its position durable (at level
//!    apply with an apply step: applied) on at least `max(quorum, 1)`
//!    receivers at that moment.
//! 3. At the end, every receiver's durable mirror equals the source.
//! 4. A sender session's positions never go backwards, and neither does a
//!    receiver's durable position.
use walship_core::sync::{AckLevel, WaitOutcome};

use crate::world::World;

impl World {
    /// Invariants 1 and 4 for the sender session of receiver `i`.
    pub(crate) fn note_sender_positions(&mut self, i: usize) -> Result<(), String> {
        let p = &mut self.peers[i];
        let Some(sess) = p.sess.as_ref() else { return Ok(()) };
        let (now, last) = (sess.positions(), p.last_pos);
        if now.sent < last.sent
            || now.written < last.written
            || now.flushed < last.flushed
            || now.applied < last.applied
        {
            return Err(format!(
                "invariant 4: sender positions for r{i} went backwards in epoch {}: {last:?} -> {now:?}",
                sess.epoch()
            ));
        }
        p.last_pos = now;
        if sess.is_streaming() {
            p.max_flushed_seen = p.max_flushed_seen.max(now.flushed);
            p.max_applied_seen = p.max_applied_seen.max(now.applied);
        }
        if p.max_flushed_seen > p.disk.durable() {
            return Err(format!(
                "invariant 1: the sender accepted r{i} as flushed to {} but only {} is durable there (written {})",
                p.max_flushed_seen,
                p.disk.durable(),
                p.disk.written()
            ));
        }
        let applied = if self.cfg.separate_apply { p.disk.applied() } else { p.disk.durable() };
        if p.max_applied_seen > applied {
            return Err(format!(
                "invariant 1: the sender accepted r{i} as applied to {} but only {applied} is applied there \
                 (durable {})",
                p.max_applied_seen,
                p.disk.durable()
            ));
        }
        Ok(())
    }

    /// Invariant 2 for every waiter the tracker released.
    pub(crate) fn drain_released(&mut self) -> Result<(), String> {
        while let Some(r) = self.tracker.poll_released() {
            if r.outcome != WaitOutcome::Durable {
                self.stats.waits_other += 1;
                continue;
            }
            self.stats.waits_durable += 1;
            let need = self.cfg.quorum.max(1) as usize;
            let apply = self.cfg.level == AckLevel::Apply && self.cfg.separate_apply;
            let mark = |p: &&crate::world::Peer| if apply { p.disk.applied() } else { p.disk.durable() };
            let have = self.peers.iter().filter(|p| mark(p) >= r.position).count();
            if have < need {
                return Err(format!(
                    "invariant 2: wait {} for position {} released as durable, but it is durable on {have} \
                     receivers and quorum {} needs {need}",
                    r.id, r.position, self.cfg.quorum
                ));
            }
        }
        Ok(())
    }

    /// Invariants 1 and 4 for every receiver, after every tick.
    pub(crate) fn check_step(&mut self) -> Result<(), String> {
        for i in 0..self.peers.len() {
            let p = &mut self.peers[i];
            let d = p.disk.durable();
            if d < p.last_durable {
                return Err(format!("invariant 4: r{i}'s durable position went back from {} to {d}", p.last_durable));
            }
            p.last_durable = d;
            self.note_sender_positions(i)?;
        }
        Ok(())
    }

    /// Invariant 3: every mirror holds the source, byte for byte.
    pub(crate) fn check_final(&self) -> Result<(), String> {
        for (i, p) in self.peers.iter().enumerate() {
            let d = p.disk.durable().get() as usize;
            let mirror = &p.disk.data[..d.min(p.disk.data.len())];
            if mirror != self.source.data.as_slice() {
                let first = mirror.iter().zip(&self.source.data).position(|(a, b)| a != b);
                return Err(format!(
                    "invariant 3: r{i}'s durable mirror ({} bytes) differs from the source ({} bytes), \
                     first differing byte {first:?}",
                    mirror.len(),
                    self.source.data.len()
                ));
            }
        }
        Ok(())
    }
}

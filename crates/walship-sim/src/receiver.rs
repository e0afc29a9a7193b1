//! The receiver's side of each link: the handshake (`check_hello`,
//! `welcome`), frames through the codec into the session and the simulated
//! disk, fdatasync at random times and at segment ends, and acks back.
//!
//! Acks are built only from what the disk reports, as in the agent: written
//! after the store wrote, flushed after [`Disk::fsync`](crate::disk::Disk::fsync) returned.
use walship_core::frame::{self, DEFAULT_MAX_PAYLOAD};
use walship_core::proto::Control;
use walship_core::receiver::{self, ReceiverConfig, ReceiverSession};

use crate::world::World;

/// How a receiver step ended the connection, if it did.
enum End {
    /// The decoder rejected a corrupted frame.
    Corrupt(String),
    /// The session rejected a duplicated or reordered frame.
    Violation(String),
}

impl World {
    pub(crate) fn receiver_step(&mut self, i: usize) -> Result<(), String> {
        let t = self.t;
        if let Some(until) = self.peers[i].down_until {
            if t < until {
                return Ok(());
            }
            self.peers[i].down_until = None;
            self.log(|| format!("r{i}: restarted, durable {}", self.peers[i].disk.durable()));
        }
        self.receiver_handshake(i)?;
        match self.receiver_frames(i)? {
            Some(End::Corrupt(e)) => {
                self.stats.corruptions_detected += 1;
                self.break_conn(i, &format!("bad frame: {e}"));
            }
            Some(End::Violation(e)) => {
                self.stats.violations_detected += 1;
                self.break_conn(i, &format!("stream error: {e}"));
            }
            None => {}
        }
        self.receiver_sync(i)?;
        self.receiver_apply(i)?;
        self.receiver_acks(i);
        Ok(())
    }

    fn receiver_handshake(&mut self, i: usize) -> Result<(), String> {
        let (ack_bytes, separate_apply) = (self.cfg.ack_bytes, self.cfg.separate_apply);
        loop {
            let at = self.t + self.latency(i);
            let p = &mut self.peers[i];
            let Some(conn) = p.conn.as_mut() else { return Ok(()) };
            let Some(bytes) = conn.up_ctl.pop_due(self.t) else { return Ok(()) };
            let msg = Control::from_slice(&bytes).map_err(|e| format!("r{i}: undecodable control: {e}"))?;
            if p.rsess.is_some() {
                return Err(format!("r{i}: a second control message from the sender: {msg:?}"));
            }
            let peer = receiver::check_hello(msg, DEFAULT_MAX_PAYLOAD).map_err(|e| format!("r{i}: hello: {e}"))?;
            p.disk.discard_unflushed();
            let epoch = p.disk.next_epoch();
            let resume = p.disk.resume(separate_apply);
            let w = receiver::welcome(epoch, &resume, &format!("r{i}"));
            conn.down_ctl.push(at, Control::of(w).to_vec());
            p.rsess = Some(ReceiverSession::new(
                ReceiverConfig { max_frame: peer.max_frame, ack_bytes, separate_apply },
                epoch,
                &resume,
            ));
        }
    }

    /// Decodes and applies every frame due; the error ends the connection.
    fn receiver_frames(&mut self, i: usize) -> Result<Option<End>, String> {
        let now = self.now();
        let p = &mut self.peers[i];
        let Some(conn) = p.conn.as_mut() else { return Ok(None) };
        while let Some(chunk) = conn.data.pop_due(self.t) {
            let Some(rs) = p.rsess.as_mut() else {
                return Err(format!("r{i}: a frame arrived before the handshake"));
            };
            conn.rbuf.extend_from_slice(&chunk.bytes);
            loop {
                let f = match frame::decode(&mut conn.rbuf, DEFAULT_MAX_PAYLOAD) {
                    Ok(None) => break,
                    Ok(Some(f)) => f,
                    Err(e) if conn.corrupted => return Ok(Some(End::Corrupt(e.to_string()))),
                    Err(e) => return Err(format!("r{i}: decode failed on a clean link: {e}")),
                };
                match rs.handle_frame(f, now) {
                    Ok(None) => {}
                    Ok(Some(op)) => {
                        if p.disk.apply(op).map_err(|e| format!("r{i}: {e}"))? {
                            // Completing a segment synced it: written, then flushed.
                            rs.handle_written(p.disk.written(), now).map_err(|e| format!("r{i}: {e}"))?;
                            rs.handle_flushed(p.disk.durable(), now).map_err(|e| format!("r{i}: {e}"))?;
                        }
                    }
                    Err(e) if conn.violated => return Ok(Some(End::Violation(e.to_string()))),
                    Err(e) => return Err(format!("r{i}: stream error on a clean link: {e}")),
                }
            }
            if chunk.corrupt {
                return Err(format!("r{i}: a corrupted frame was decoded without error"));
            }
            rs.handle_written(p.disk.written(), now).map_err(|e| format!("r{i}: {e}"))?;
        }
        Ok(None)
    }

    /// fdatasync at random times (always in the quiet phase); only after it
    /// returned does the session hear of it.
    fn receiver_sync(&mut self, i: usize) -> Result<(), String> {
        let now = self.now();
        let p_fsync = if self.active { self.cfg.p_fsync } else { 1.0 };
        let p = &mut self.peers[i];
        if !p.rng.chance(p_fsync) || !p.disk.fsync() {
            return Ok(());
        }
        self.stats.fsyncs += 1;
        if let Some(rs) = p.rsess.as_mut() {
            rs.handle_flushed(p.disk.durable(), now).map_err(|e| format!("r{i}: {e}"))?;
        }
        Ok(())
    }

    /// The apply step (with `separate_apply`): applies a random part of what
    /// is durable, records it, then reports it.
    fn receiver_apply(&mut self, i: usize) -> Result<(), String> {
        let now = self.now();
        let (on, p_apply) = (self.cfg.separate_apply, if self.active { self.cfg.p_apply } else { 1.0 });
        let p = &mut self.peers[i];
        if !on || p.disk.applied() >= p.disk.durable() || !p.rng.chance(p_apply) {
            return Ok(());
        }
        let (a, d) = (p.disk.applied().get(), p.disk.durable().get());
        let to = if self.active { p.rng.range(a + 1, d) } else { d };
        p.disk.set_applied(walship_core::Position(to));
        if let Some(rs) = p.rsess.as_mut() {
            // The session may still believe in less than the disk (a new
            // session starts from the durable state): report no more than it flushed.
            let pos = p.disk.applied().min(rs.positions().1);
            rs.handle_applied(pos, now).map_err(|e| format!("r{i}: {e}"))?;
        }
        Ok(())
    }

    fn receiver_acks(&mut self, i: usize) {
        let late = if self.active { self.cfg.faults.late_ack } else { 0.0 };
        loop {
            let at = self.t + self.latency(i);
            let p = &mut self.peers[i];
            let (Some(conn), Some(rs)) = (p.conn.as_mut(), p.rsess.as_mut()) else { return };
            let Some(m) = rs.poll_control() else { return };
            let bytes = Control::of(m).to_vec();
            conn.last_ack = Some(bytes.clone());
            let extra = if p.rng.chance(late) {
                self.stats.late_acks += 1;
                p.rng.range(5_000, 60_000)
            } else {
                0
            };
            conn.down_ctl.push(at + extra, bytes);
        }
    }
}

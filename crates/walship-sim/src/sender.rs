//! The sender's side of each link: connect (with backoff), handshake and
//! resume check, acks, and streaming frames with the faults a frame can
//! meet on the wire. Sessions are driven exactly as the agent's
//! `sender_session` drives them: `cursor` → view → `poll_transmit`.
use bytes::{Bytes, BytesMut};
use walship_core::frame::Frame;
use walship_core::proto::{Control, control::Msg};
use walship_core::sender::{SenderSession, Transmit};

use crate::link::{Chunk, Conn};
use crate::world::World;

impl World {
    pub(crate) fn sender_step(&mut self, i: usize) -> Result<(), String> {
        if self.peers[i].conn.is_none() {
            self.try_connect(i);
            return Ok(());
        }
        self.sender_receive(i)?;
        if self.peers[i].conn.is_none() {
            return Ok(());
        }
        self.maybe_replay_stale_ack(i);
        self.sender_transmit(i)
    }

    fn try_connect(&mut self, i: usize) {
        let t = self.t;
        let p = &mut self.peers[i];
        if t < p.next_connect {
            return;
        }
        if t < p.partition_until || p.down_until.is_some() {
            p.next_connect = t + p.backoff;
            p.backoff = (p.backoff * 2).min(64_000);
            return;
        }
        let mut s = SenderSession::new(self.sender_config(), self.base);
        let mut conn = Conn::default();
        while let Some(m) = s.poll_control() {
            let at = t + self.latency(i);
            conn.up_ctl.push(at, Control::of(m).to_vec());
        }
        let p = &mut self.peers[i];
        p.sess = Some(s);
        p.conn = Some(conn);
        self.log(|| format!("r{i}: connect, hello sent"));
    }

    /// Welcome and acks from the receiver.
    fn sender_receive(&mut self, i: usize) -> Result<(), String> {
        let now = self.now();
        loop {
            let p = &mut self.peers[i];
            let (Some(conn), Some(sess)) = (p.conn.as_mut(), p.sess.as_mut()) else { return Ok(()) };
            let Some(bytes) = conn.down_ctl.pop_due(self.t) else { return Ok(()) };
            let msg = Control::from_slice(&bytes).map_err(|e| format!("sender: r{i} sent undecodable control: {e}"))?;
            let stale = match &msg {
                Msg::Ack(a) if sess.is_streaming() && a.epoch != sess.epoch() => Some(a.epoch),
                _ => None,
            };
            let before = (sess.positions(), sess.stale_acks());
            let req = sess.handle_control(msg, now).map_err(|e| format!("sender session with r{i} failed: {e}"))?;
            if let Some(epoch) = stale {
                if sess.positions() != before.0 || sess.stale_acks() != before.1 + 1 {
                    return Err(format!(
                        "sender: an ack of epoch {epoch} in session epoch {} was not ignored: {:?} -> {:?}",
                        sess.epoch(),
                        before.0,
                        sess.positions()
                    ));
                }
                self.stats.stale_acks_ignored += 1;
            }
            if let Some(req) = req {
                let check = self.source.resume_check(&req);
                let sess = self.peers[i].sess.as_mut().ok_or("sender: session vanished")?;
                sess.handle_resume(check.clone(), now)
                    .map_err(|e| format!("sender: resume of r{i} refused ({check:?}): {e}; request {req:?}"))?;
                self.stats.sessions += 1;
                self.reset_backoff(i);
                self.log(|| format!("r{i}: streaming, epoch {} from {}", req.epoch, req.durable_pos));
            }
            self.note_sender_positions(i)?;
            self.update_tracker();
            self.drain_released()?;
        }
    }

    /// Replays an ack of a closed connection on the current one, as a
    /// confused network or receiver might: the sender must ignore it.
    fn maybe_replay_stale_ack(&mut self, i: usize) {
        let p_stale = self.cfg.faults.stale_ack;
        let at = self.t + self.latency(i);
        let active = self.active;
        let p = &mut self.peers[i];
        let streaming = p.sess.as_ref().is_some_and(SenderSession::is_streaming);
        if !active || !streaming || p.ghosts.is_empty() || !p.rng.chance(p_stale) {
            return;
        }
        let ghost = p.ghosts.remove(0);
        if let Some(conn) = p.conn.as_mut() {
            conn.down_ctl.push(at, ghost);
        }
    }

    fn sender_transmit(&mut self, i: usize) -> Result<(), String> {
        let now = self.now();
        for _ in 0..self.cfg.frames_per_tick {
            let p = &mut self.peers[i];
            let Some(sess) = p.sess.as_mut() else { break };
            let view = self.source.view_for(sess.cursor());
            let tr = sess.poll_transmit(view, now).map_err(|e| format!("sender: poll_transmit for r{i}: {e}"))?;
            let frame = match tr {
                None => break,
                Some(Transmit::SegmentStart { name, pos, timestamp_us }) => {
                    self.log(|| format!("r{i}: send segment start {name} at {pos}"));
                    Frame::SegmentStart { pos, timestamp_us, name }
                }
                Some(Transmit::SegmentEnd { pos, timestamp_us }) => Frame::SegmentEnd { pos, timestamp_us },
                Some(Transmit::Data { pos, len, timestamp_us }) => {
                    Frame::Data { pos, timestamp_us, payload: self.source.read(pos, len)?.into() }
                }
            };
            self.send_frame(i, frame.to_bytes());
        }
        // A frame held back for reordering goes out after whatever followed it.
        let at = self.t + self.latency(i);
        if let Some(conn) = self.peers[i].conn.as_mut()
            && let Some(h) = conn.held.take()
        {
            conn.data.push(at, h);
        }
        self.note_sender_positions(i)
    }

    /// Puts one encoded frame on the data stream, through the wire's faults.
    fn send_frame(&mut self, i: usize, bytes: Bytes) {
        let f = self.cfg.faults;
        let active = self.active;
        let mut at = self.t + self.latency(i);
        let p = &mut self.peers[i];
        let Some(conn) = p.conn.as_mut() else { return };
        let mut chunk = Chunk { bytes, corrupt: false };
        if !active {
            conn.data.push(at, chunk);
            return;
        }
        if p.rng.chance(f.retransmit) {
            // QUIC repairs loss, duplication and packet reordering: the stream only sees delay.
            at += p.rng.range(1_000, 20_000);
            self.stats.retransmits += 1;
        }
        if p.rng.chance(f.corrupt) {
            // Flip one byte, but not in the length field: a longer length
            // would make the decoder wait for bytes that never come instead
            // of failing; every other single-byte flip must fail the CRC.
            let len = chunk.bytes.len() as u64;
            let mut off = p.rng.below(len - 4);
            if off >= 16 {
                off += 4;
            }
            let mut b = BytesMut::from(&chunk.bytes[..]);
            b[off as usize] ^= p.rng.range(1, 255) as u8;
            chunk = Chunk { bytes: b.freeze(), corrupt: true };
            conn.corrupted = true;
        }
        if p.rng.chance(f.violate) {
            // A transport that broke its promise: the stream itself carries a
            // frame twice or out of order. The receiver's checks must notice.
            conn.violated = true;
            if conn.held.is_none() && p.rng.chance(0.5) {
                conn.held = Some(chunk);
                return;
            }
            conn.data.push(at, chunk.clone());
        }
        conn.data.push(at, chunk);
        if let Some(h) = conn.held.take() {
            conn.data.push(at, h);
        }
    }
}

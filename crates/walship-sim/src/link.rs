//! The simulated link: one connection between the sender and one receiver.
//!
//! A connection has three ordered streams, like the real QUIC transport: the
//! sender's control stream (Hello), the data stream (frames), and the
//! receiver's control stream (Welcome, acks). Each stream delivers its
//! messages in order after a latency; the streams are independent, so an ack
//! may overtake a frame. Whatever QUIC repairs below the stream (loss,
//! duplication, reordering of packets) shows up here as extra delay; what
//! it cannot repair ends the connection ([`Conn`] is then dropped on both
//! sides, with everything in flight).
use std::collections::VecDeque;

use bytes::Bytes;

/// One ordered stream.
#[derive(Debug)]
pub struct Pipe<T> {
    q: VecDeque<(u64, T)>,
    last: u64,
}

impl<T> Default for Pipe<T> {
    fn default() -> Self {
        Pipe { q: VecDeque::new(), last: 0 }
    }
}

impl<T> Pipe<T> {
    /// Queues `msg` for delivery at `at`, but never before what was queued earlier.
    pub fn push(&mut self, at: u64, msg: T) {
        self.last = self.last.max(at);
        self.q.push_back((self.last, msg));
    }

    /// The next message due at `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<T> {
        if self.q.front().is_some_and(|(t, _)| *t <= now) { self.q.pop_front().map(|(_, m)| m) } else { None }
    }

    /// Nothing in flight.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

/// A chunk of the data stream: bytes, and whether a fault flipped one of them.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub bytes: Bytes,
    pub corrupt: bool,
}

/// One connection.
#[derive(Debug, Default)]
pub struct Conn {
    /// Sender → receiver control messages (encoded).
    pub up_ctl: Pipe<Vec<u8>>,
    /// Sender → receiver frames (encoded).
    pub data: Pipe<Chunk>,
    /// Receiver → sender control messages (encoded).
    pub down_ctl: Pipe<Vec<u8>>,
    /// A frame was corrupted on this connection: a decode error is expected.
    pub corrupted: bool,
    /// A frame was duplicated or reordered on the stream: a stream error is expected.
    pub violated: bool,
    /// A frame held back to be delivered after the next one.
    pub held: Option<Chunk>,
    /// The last ack the receiver sent, replayed as a stale ack after a reconnect.
    pub last_ack: Option<Vec<u8>>,
    /// Bytes received on the data stream not yet decoded.
    pub rbuf: bytes::BytesMut,
}

impl Conn {
    /// All three streams are drained.
    pub fn idle(&self) -> bool {
        self.up_ctl.is_empty() && self.data.is_empty() && self.down_ctl.is_empty() && self.held.is_none()
    }
}

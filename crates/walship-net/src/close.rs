//! Application close codes, shared by both ends.
//!
//! A connection is closed with one of these codes and a reason text that
//! starts with the code's name, e.g. `bad frame: frame crc mismatch at
//! position 4096 ...`; the peer sees it in
//! `ConnectionError::ApplicationClosed` (quinn prints it as
//! `closed by peer: bad frame: ... (code 2)`). The same codes serve for
//! resetting or stopping a single stream.
use quinn::{Connection, ConnectionError, VarInt};

use crate::NetError;

/// The session ended normally (sender shutting down, stream finished).
pub const NORMAL: VarInt = VarInt::from_u32(0);
/// The peer broke the protocol (unexpected or undecodable control message).
pub const PROTOCOL: VarInt = VarInt::from_u32(1);
/// A data frame failed to decode (magic, version, length, crc).
pub const BAD_FRAME: VarInt = VarInt::from_u32(2);
/// A newer session from the same source took over this mirror.
pub const SUPERSEDED: VarInt = VarInt::from_u32(3);
/// The receiver refused the session (unknown source, version, format, divergence).
pub const REFUSED: VarInt = VarInt::from_u32(4);
/// A frame or ack carried an epoch older than the current session (fencing).
pub const STALE_EPOCH: VarInt = VarInt::from_u32(5);
/// The process is shutting down.
pub const SHUTDOWN: VarInt = VarInt::from_u32(6);
/// A local failure unrelated to the peer (disk full, I/O error).
pub const INTERNAL: VarInt = VarInt::from_u32(7);

/// Longest reason text sent; quinn would truncate to the packet anyway.
const MAX_REASON: usize = 512;

/// The name of a close code, as it appears at the start of reasons.
pub fn name(code: VarInt) -> &'static str {
    match code.into_inner() {
        0 => "normal",
        1 => "protocol error",
        2 => "bad frame",
        3 => "superseded",
        4 => "refused",
        5 => "stale epoch",
        6 => "shutdown",
        7 => "internal error",
        _ => "unknown",
    }
}

/// Closes `conn` with `code` and the reason `"<name>: <detail>"` (or just the
/// name when `detail` is empty), cut to a size that fits one packet.
pub fn close(conn: &Connection, code: VarInt, detail: &str) {
    conn.close(code, reason(code, detail).as_bytes());
}

/// The reason text [`close`] sends.
pub fn reason(code: VarInt, detail: &str) -> String {
    let mut s = if detail.is_empty() { name(code).to_owned() } else { format!("{}: {detail}", name(code)) };
    if s.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The close code fitting a transport error detected locally:
/// [`BAD_FRAME`] for frames, [`PROTOCOL`] for control messages and
/// truncated streams, [`INTERNAL`] otherwise.
pub fn code_for(err: &NetError) -> VarInt {
    match err {
        NetError::Frame(_) => BAD_FRAME,
        NetError::Decode(_) | NetError::Control(_) | NetError::Truncated { .. } => PROTOCOL,
        _ => INTERNAL,
    }
}

/// The code and reason the peer closed with, if it closed the connection
/// at the application level.
pub fn peer_close(err: &ConnectionError) -> Option<(VarInt, String)> {
    match err {
        ConnectionError::ApplicationClosed(c) => Some((c.error_code, String::from_utf8_lossy(&c.reason).into_owned())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_start_with_the_name_and_fit_a_packet() {
        assert_eq!(reason(BAD_FRAME, "crc error"), "bad frame: crc error");
        assert_eq!(reason(SUPERSEDED, ""), "superseded");
        assert!(reason(PROTOCOL, &"é".repeat(1000)).len() <= MAX_REASON);
        assert_eq!(name(VarInt::from_u32(99)), "unknown");
    }
}

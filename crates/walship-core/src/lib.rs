//! walship-core: the sans-IO heart of walship.
//!
//! Positions, the data-frame codec, the control messages, and the sender and
//! receiver session state machines. Nothing here does I/O or reads a clock:
//! time comes in as `now` (a [`std::time::Instant`] chosen by the caller, or
//! a virtual one in simulation), bytes come in as [`bytes::Bytes`], and
//! decisions go out through `poll_*` methods.
pub mod frame;
pub mod histogram;
pub mod lag;
pub mod pos;
pub mod proto;
pub mod segment;
pub mod sync;

pub use pos::{Lsn, ParsePositionError, Position};
pub use segment::{SegmentName, SegmentNameError};

/// The protocol version carried in Hello and Welcome.
pub const PROTOCOL_VERSION: u32 = 1;
/// The ALPN identifier of the protocol.
pub const ALPN: &[u8] = b"walship/1";
pub mod receiver;
pub mod sender;

#[cfg(test)]
mod session_tests;

//! walship-store: the receiver's mirror directory.
//!
//! A [`Mirror`] is a synchronous store owned by one thread: it writes the
//! stream's bytes at their positions into `NAME.partial` segment files,
//! batches fdatasync, renames complete segments to their final names, and
//! keeps its durable state in an atomically replaced, checksummed control file
//! ([`control`]), with flushes inside a segment recording just the new
//! durable position in a two-slot file updated in place ([`posfile`]). Opening a mirror recovers a torn tail with the named policy
//! "discard past durable" ([`Mirror::open`]). [`verify()`] compares a
//! mirror byte for byte with the source WAL directory.
//!
//! Directory layout:
//! ```text
//! MIRROR/
//!   walship.control          control file (identity, epoch, durable position, segment table)
//!   walship.control.tmp      only while the control file is being replaced
//!   walship.pos              durable position between control-file writes ([`posfile`])
//!   walship.lock             held by the process that has the mirror open
//!   000000010000000000000001 complete segment
//!   000000010000000000000002.partial  segment in progress
//! ```
pub mod control;
mod error;
mod fsio;
mod mirror;
pub mod posfile;
#[cfg(any(test, feature = "powercut"))]
pub mod powercut;
mod recovery;
mod types;
pub mod verify;

#[cfg(test)]
mod tests;

pub use control::{ControlState, SegmentRecord};
pub use error::StoreError;
pub use mirror::{Mirror, POSTGRES_FORMAT};
pub use recovery::{RecoveryReport, read_durable};
pub use types::{Identity, ResumePoint, ResumeSegment};
pub use verify::{SegmentReport, SegmentStatus, VerifyReport, verify};

/// The receiver runtime moves the mirror onto its own thread.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Mirror>();
    send::<StoreError>();
};

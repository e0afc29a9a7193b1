//! walship-source: reading WAL where the database writes it.
//!
//! * [`Tailer`] follows the segment files of a WAL directory (the raw format:
//!   positions are offsets in the concatenation of the segments in name
//!   order; see the [`tailer`] module) and hands out their bytes as zero-copy
//!   [`bytes::Bytes`] slices of read-only memory maps.
//! * [`Watcher`] tells when the directory may have changed (inotify, read on
//!   the tokio runtime itself, with a polling safety net and fallback).
//!
//! * The PostgreSQL format (LSN positions, page and record validation, the
//!   valid end) uses the same tailer: [`SourceFormat::Postgres`], see [`pgtail`].
mod error;
mod list;
mod map;
pub mod pgtail;
/// The PostgreSQL WAL format (its own crate, shared with the store's recovery).
pub use walship_pgwal as postgres;
pub mod tailer;
mod watch;

pub use error::SourceError;
pub use pgtail::PgSource;
pub use tailer::{SegmentInfo, SourceFormat, Tailer, TailerConfig};
pub use watch::Watcher;

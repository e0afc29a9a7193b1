//! The one error type of this crate.
use std::io;
use std::path::PathBuf;

use walship_core::{Position, SegmentName};

/// Everything that can go wrong while reading a WAL directory.
///
/// Messages name the directory, the segment and the positions involved, so
/// that an operator can act on a log line alone.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The WAL directory could not be listed (missing, not a directory, no permission).
    #[error("cannot list wal directory {dir}: {source}")]
    ListDir {
        /// The WAL directory.
        dir: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A segment could not be opened, stat'ed or mapped.
    #[error("cannot {op} segment {segment} in {dir}: {source}")]
    Io {
        /// The WAL directory.
        dir: PathBuf,
        /// The segment.
        segment: SegmentName,
        /// What was being done ("open", "stat", "map").
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// A segment disappeared while some of its bytes had not been released.
    #[error("segment {segment} was removed from {dir} while bytes from position {needed} were still needed")]
    SegmentRemoved {
        /// The WAL directory.
        dir: PathBuf,
        /// The removed segment.
        segment: SegmentName,
        /// The first position of the segment that had not been released.
        needed: Position,
    },
    /// A segment is now shorter than a length already observed (and perhaps shipped).
    #[error("segment {segment} in {dir} shrank from {observed} to {now} bytes (truncated or replaced)")]
    Truncated {
        /// The WAL directory.
        dir: PathBuf,
        /// The truncated segment.
        segment: SegmentName,
        /// The length observed before.
        observed: u64,
        /// The length found now.
        now: u64,
    },
    /// A new segment appeared whose name sorts before a segment already known, so it has no place in the stream.
    #[error(
        "new segment {segment} in {dir} sorts before the already known segment {last}; segments must appear in name order"
    )]
    OutOfOrder {
        /// The WAL directory.
        dir: PathBuf,
        /// The newcomer.
        segment: SegmentName,
        /// The last segment known before it appeared.
        last: SegmentName,
    },
    /// A rebase named a segment that is not in the directory.
    #[error("segment {segment} is not in {dir} (removed, or never written there)")]
    SegmentNotFound {
        /// The WAL directory.
        dir: PathBuf,
        /// The segment asked for.
        segment: SegmentName,
    },
    /// A rebase asked for the segment after one, and there is none yet.
    #[error("no segment in {dir} sorts after {after}")]
    NoSegmentAfter {
        /// The WAL directory.
        dir: PathBuf,
        /// The name every candidate had to sort after.
        after: SegmentName,
    },
    /// A position before the first segment still present.
    #[error("position {pos} in {dir} is before the first available byte at position {first}")]
    BeforeStart {
        /// The WAL directory.
        dir: PathBuf,
        /// The position asked for.
        pos: Position,
        /// The first position still available.
        first: Position,
    },
    /// A position past the end of the bytes observed so far.
    #[error("position {pos} in {dir} is past the end of the observed wal at position {end}")]
    BeyondEnd {
        /// The WAL directory.
        dir: PathBuf,
        /// The position asked for.
        pos: Position,
        /// The end of the observed bytes.
        end: Position,
    },
    /// A range whose end is before its start.
    #[error("invalid range [{start}, {end}) in {dir}: end is before start")]
    InvalidRange {
        /// The WAL directory.
        dir: PathBuf,
        /// Start of the range.
        start: Position,
        /// End of the range.
        end: Position,
    },
    /// A PostgreSQL-format source has fixed positions (LSNs): it cannot be re-anchored.
    #[error("segment {segment} in {dir} starts at LSN {ours}, not at position {asked}: PostgreSQL positions are fixed")]
    FixedPositions {
        /// The WAL directory.
        dir: PathBuf,
        /// The segment.
        segment: SegmentName,
        /// Where it starts (its LSN).
        ours: Position,
        /// Where it was asked to start.
        asked: Position,
    },
    /// A segment of another PostgreSQL cluster appeared in the WAL directory.
    #[error("segment {segment} in {dir} belongs to database system {found}, not {expected}")]
    OtherCluster {
        /// The WAL directory.
        dir: PathBuf,
        /// The segment.
        segment: SegmentName,
        /// The system identifier of the segments streamed so far.
        expected: u64,
        /// The one in the segment's long page header.
        found: u64,
    },
    /// A promotion ended the timeline at a switch point the old timeline's WAL does not reach exactly.
    #[error(
        "segment {segment} in {dir}: a new timeline starts at {switch} but the old timeline's valid wal there ends \
         at {reached}"
    )]
    TimelineSwitch {
        /// The WAL directory.
        dir: PathBuf,
        /// The old timeline's segment.
        segment: SegmentName,
        /// The switch point from the history file.
        switch: Position,
        /// Where the old timeline's valid WAL ends.
        reached: Position,
    },
    /// PostgreSQL-format bytes that are no longer WAL for their position: the file was recycled.
    #[error(
        "segment {segment} in {dir} was recycled by PostgreSQL: the page at {pos} now holds other WAL; a receiver that \
         still needed it must start over from a new base backup and mirror"
    )]
    Recycled {
        /// The WAL directory.
        dir: PathBuf,
        /// The segment.
        segment: SegmentName,
        /// The page that changed.
        pos: Position,
    },
}

//! The crate's one error type.
use std::io;
use std::path::PathBuf;

use walship_core::Position;

/// Everything that can go wrong in the mirror.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed (ENOSPC, EIO, permissions...); `op` names the operation.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation that failed ("pwrite", "fdatasync", "rename", ...).
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The control file exists but cannot be trusted: bad magic, truncated, crc mismatch, undecodable.
    #[error("control file {} is corrupt: {reason}", path.display())]
    CorruptControl {
        /// The control file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The control state could not be encoded (a bug, not a disk problem).
    #[error("encoding the control state: {0}")]
    Encode(String),
    /// The directory holds segment files but no control file, so positions are unknown.
    #[error(
        "mirror directory {} holds segment files ({files}) but no control file walship.control; refusing to guess positions",
        dir.display()
    )]
    MissingControl {
        /// The mirror directory.
        dir: PathBuf,
        /// Some of the files found, comma separated.
        files: String,
    },
    /// The files of the mirror disagree with the control file in a way recovery must not paper over.
    #[error("mirror file {} is inconsistent with the control file: {reason}", path.display())]
    Inconsistent {
        /// The segment file (or the one that is missing).
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// Another process has the mirror open.
    #[error("mirror {dir} is in use by another process (walship.lock is held)")]
    Locked {
        /// The mirror directory.
        dir: PathBuf,
    },
    /// A sender of another source tried to use a mirror that is bound to a different one.
    #[error("mirror holds source {mirror:?} but the sender is source {sender:?}")]
    SourceMismatch {
        /// The source id recorded in the mirror.
        mirror: String,
        /// The source id the sender announced.
        sender: String,
    },
    /// The sender's WAL format differs from the mirror's.
    #[error("mirror holds format {mirror:?} but the sender ships format {sender:?}")]
    FormatMismatch {
        /// The format recorded in the mirror.
        mirror: String,
        /// The format the sender announced.
        sender: String,
    },
    /// The sender's segment size differs from the mirror's.
    #[error("mirror holds segments of {mirror} bytes but the sender ships segments of {sender} bytes")]
    SegmentSizeMismatch {
        /// The segment size recorded in the mirror (0 = variable).
        mirror: u64,
        /// The segment size the sender announced.
        sender: u64,
    },
    /// A segment was started before any sender bound the mirror to a source.
    #[error("mirror is not bound to a source; bind before starting a segment")]
    Unbound,
    /// The segment name is one the mirror uses for itself.
    #[error("segment name {0:?} is reserved for the mirror's control file")]
    ReservedName(String),
    /// A segment of that name is already in the mirror.
    #[error("segment {name} already exists in the mirror at {}", path.display())]
    SegmentExists {
        /// The segment.
        name: String,
        /// Where it is.
        path: PathBuf,
    },
    /// A side file arrived whose name exists in the mirror with other contents.
    #[error("file {} already exists in the mirror with different contents; refusing to replace it", path.display())]
    FileConflict {
        /// Where it is.
        path: PathBuf,
    },
    /// A fixed-size segment starting inside its file, but not right where the previous segment of that file ended.
    #[error(
        "segment {name} starts at position {start}, inside its file (which begins at {base}), but the previous \
         segment does not end there in the same file range"
    )]
    MidFileStart {
        /// The segment.
        name: String,
        /// Where it starts.
        start: Position,
        /// Where its file begins.
        base: Position,
    },
    /// A new segment was started while the current one is incomplete.
    #[error("cannot start segment {new}: segment {current} is still in progress")]
    SegmentInProgress {
        /// The incomplete segment.
        current: String,
        /// The segment that was to be started.
        new: String,
    },
    /// A segment was started somewhere other than where the stream continues.
    #[error("segment {name} starts at position {got} but the stream continues at position {expected}")]
    SegmentStart {
        /// The segment.
        name: String,
        /// Where the mirror expects the next segment to start (written position).
        expected: Position,
        /// Where the caller said it starts.
        got: Position,
    },
    /// Bytes arrived while no segment is open.
    #[error("write at position {pos} but no segment is in progress; start a segment first")]
    NoOpenSegment {
        /// The position of the refused write.
        pos: Position,
    },
    /// Bytes arrived that do not continue the stream.
    #[error("write at position {got} but the mirror expects position {expected}")]
    OutOfOrder {
        /// The written position: where the next write must land.
        expected: Position,
        /// Where the refused write was.
        got: Position,
    },
    /// A write whose end would lie past the largest position (2^64 - 1).
    #[error("{len} bytes at position {pos} run past the largest position")]
    PastEnd {
        /// Position of the refused write.
        pos: Position,
        /// Its length.
        len: u64,
    },
    /// Bytes arrived that would run past the end of a fixed-size segment.
    #[error("{len} bytes at position {pos} do not fit segment {name}, which ends at position {end}")]
    DoesNotFit {
        /// The current segment.
        name: String,
        /// Position of the refused write.
        pos: Position,
        /// Its length.
        len: u64,
        /// The segment's last position + 1.
        end: Position,
    },
    /// A segment was completed at a position other than the written position.
    #[error("segment {name} cannot end at position {got}: the mirror has written up to position {expected}")]
    SegmentEnd {
        /// The current segment.
        name: String,
        /// The written position.
        expected: Position,
        /// The end the caller gave.
        got: Position,
    },
    /// A fixed-size segment was completed with the wrong length.
    #[error("segment {name} would be {len} bytes long but this mirror's segments are {size} bytes")]
    WrongSegmentLength {
        /// The current segment.
        name: String,
        /// Its length at completion.
        len: u64,
        /// The fixed segment size.
        size: u64,
    },
    /// A segment was completed while none is in progress.
    #[error("no segment is in progress to complete at position {end}")]
    NothingToComplete {
        /// The end the caller gave.
        end: Position,
    },
    /// An earlier failure left the directory in a state only recovery can sort out; reopen the mirror.
    #[error("mirror must be reopened (recovery) after an earlier failure: {0}")]
    Poisoned(String),
}

impl StoreError {
    /// An I/O error constructor for `map_err`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }
}

//! Why a walk over the WAL stopped: the end of valid WAL and its reason.
use walship_core::Position;

use super::page::PageError;

/// Why a walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StopReason {
    /// The available bytes end before the next record is complete: more WAL
    /// may still be written there.
    #[error("end of available data")]
    EndOfInput,
    /// A page header is not valid for its position (zero page, stale
    /// pageaddr of a recycled segment, bad magic, …).
    #[error("invalid page: {0}")]
    Page(PageError),
    /// A record would start inside a page header.
    #[error("invalid record offset {0} in its page")]
    InvalidRecordOffset(u32),
    /// A record would start where a page says continuation data is.
    #[error("contrecord is requested")]
    ContrecordRequested,
    /// `xl_tot_len` below the header size (zero bytes end here).
    #[error("invalid record length {0}")]
    InvalidRecordLength(u32),
    /// `xl_tot_len` above `XLogRecordMaxSize`.
    #[error("record length {0} over the maximum")]
    RecordTooLong(u32),
    /// `xl_prev` is not the previous record (or, for the first record read,
    /// not before the record).
    #[error("incorrect prev-link {found:#X} (expected {expected:?})")]
    BadPrevLink {
        /// `xl_prev`.
        found: u64,
        /// The previous record's start, when known.
        expected: Option<u64>,
    },
    /// The CRC-32C does not match `xl_crc`.
    #[error("incorrect record checksum {computed:08X}, stored {stored:08X}")]
    BadCrc {
        /// `xl_crc`.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// The record continues, but the next page lacks `XLP_FIRST_IS_CONTRECORD`.
    #[error("there is no contrecord flag")]
    NoContrecordFlag,
    /// `xlp_rem_len` disagrees with what remains of the record.
    #[error("invalid contrecord length {found} (expected {expected})")]
    BadContrecordLength {
        /// `xlp_rem_len`.
        found: u32,
        /// Bytes of the record still to come.
        expected: u64,
    },
}

/// Where and why a walk stopped. `at` is the page's LSN for a page error,
/// the first missing byte for [`StopReason::EndOfInput`], and the record's
/// LSN otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("WAL ends at {}: {reason}", at.lsn())]
pub struct Stop {
    /// Where.
    pub at: Position,
    /// Why.
    pub reason: StopReason,
}

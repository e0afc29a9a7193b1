//! Read-only memory maps of segment files, handed out as zero-copy [`Bytes`].
//!
//! A segment is mapped in steps of [`MAP_STEP`] bytes, past the end of the
//! file if need be: the whole mapping becomes one `Bytes`
//! (`Bytes::from_owner(mmap)`), and every read is a `slice` of it, so frames
//! cut from a segment share the mapping and nothing is copied. When the
//! segment grows past the mapping, it is mapped again, one step longer;
//! slices of the old mapping keep the old mapping alive until they are
//! dropped. A raw segment being appended to is so mapped once per 16 MiB,
//! not once per append. (The PostgreSQL tailer maps its preallocated
//! segments whole, so they were mapped once already.)
//!
//! This is the only module of the crate with `unsafe` code (`Mmap::map`).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::path::Path;

use bytes::Bytes;
use memmap2::MmapOptions;

/// Mappings grow in steps of this many bytes (16 MiB, PostgreSQL's default
/// segment size).
pub(crate) const MAP_STEP: usize = 16 << 20;

/// Why a slice could not be handed out.
#[derive(Debug)]
pub(crate) enum MapError {
    /// fstat or mmap failed; `op` names which.
    Io { op: &'static str, source: io::Error },
    /// The file is now shorter than the length already observed.
    Shorter { now: u64 },
}

/// One open segment file and its current mapping.
pub(crate) struct SegmentMap {
    /// Kept open so that the mapping can be renewed even if the name is removed.
    file: File,
    /// The whole mapping (empty until the first non-empty read).
    map: Bytes,
}

// Not derived: `Bytes`' Debug would print the whole mapping.
impl std::fmt::Debug for SegmentMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentMap").field("file", &self.file).field("mapped_len", &self.mapped_len()).finish()
    }
}

impl SegmentMap {
    /// Opens the segment read-only; maps nothing yet.
    pub(crate) fn open(path: &Path) -> io::Result<SegmentMap> {
        Ok(SegmentMap { file: File::open(path)?, map: Bytes::new() })
    }

    /// The file's current length (fstat).
    pub(crate) fn file_len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Length of the current mapping.
    pub(crate) fn mapped_len(&self) -> usize {
        self.map.len()
    }

    /// Up to `max_len` bytes from `offset`, never past `observed` (the segment length the
    /// tailer has observed, which only grows). Checks with fstat that the file still holds
    /// `observed` bytes, and maps it again if the current mapping is shorter.
    pub(crate) fn slice(&mut self, observed: u64, offset: u64, max_len: usize) -> Result<Bytes, MapError> {
        if offset >= observed || max_len == 0 {
            return Ok(Bytes::new());
        }
        // Check first: the mapping (old or new) must never extend past the end of the file.
        let now = self.file.metadata().map_err(|source| MapError::Io { op: "stat", source })?.len();
        if now < observed {
            return Err(MapError::Shorter { now });
        }
        let observed_usize = usize::try_from(observed).map_err(|_| MapError::Io {
            op: "map",
            source: io::Error::new(io::ErrorKind::InvalidInput, "segment larger than the address space"),
        })?;
        if self.map.len() < observed_usize {
            let len = observed_usize.div_ceil(MAP_STEP).checked_mul(MAP_STEP).unwrap_or(observed_usize);
            // SAFETY: `Mmap::map` is unsafe because the mapped file may be changed under us:
            // writes show through (fine: bytes below the observed length of a WAL segment are
            // final, only later bytes are appended) and, what matters, touching a page past
            // the end of the file raises SIGBUS. The mapping may reach past the end of the file
            // (mapping there is allowed; only touching is not), but no byte at or past
            // `observed` is ever handed out, fstat just showed the file holds at least
            // `observed` bytes, and every later slice is preceded by the same fstat check,
            // so a truncation is reported as `Shorter` instead of being touched. What remains
            // is the window between that check and the moment the consumer reads the slice;
            // a WAL writer never truncates a segment that holds data it has written (segments
            // are append-only, then sealed, then removed whole: removal keeps the inode and
            // our mapping intact), so that window is only open to an operator truncating live
            // WAL files by hand.
            let mmap = unsafe { MmapOptions::new().len(len).map(&self.file) }
                .map_err(|source| MapError::Io { op: "map", source })?;
            self.map = Bytes::from_owner(mmap);
        }
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(observed_usize);
        let end = start.saturating_add(max_len).min(observed_usize);
        Ok(self.map.slice(start..end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_in_steps_and_remaps_only_past_the_mapping() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("seg");
        let mut f = File::create(&path)?;
        f.write_all(b"hello world")?;
        let mut m = SegmentMap::open(&path)?;
        let a = m.slice(5, 0, 100).map_err(|e| format!("{e:?}"))?;
        assert_eq!(&a[..], b"hello");
        assert_eq!(m.mapped_len(), MAP_STEP, "one step, past the end of the file");
        // Growth inside the mapping: no new mapping, the same memory.
        let b = m.slice(11, 5, 100).map_err(|e| format!("{e:?}"))?;
        assert_eq!(&b[..], b" world");
        assert_eq!(m.mapped_len(), MAP_STEP);
        assert_eq!(b.as_ptr(), a.as_ptr().wrapping_add(5));
        // Growth past it: mapped again, one step longer (a sparse tail reads as zeros).
        let big = (MAP_STEP + 100) as u64;
        f.set_len(big)?;
        let c = m.slice(big, MAP_STEP as u64, 10).map_err(|e| format!("{e:?}"))?;
        assert_eq!(&c[..], &[0u8; 10]);
        assert_eq!(m.mapped_len(), 2 * MAP_STEP);
        assert_eq!(&a[..], b"hello", "old slices stay valid after a remap");
        // Nothing at or past the observed length is handed out, whatever is mapped.
        assert!(m.slice(11, 11, 5).map_err(|e| format!("{e:?}"))?.is_empty());
        assert_eq!(m.slice(11, 8, 100).map_err(|e| format!("{e:?}"))?.len(), 3);
        f.set_len(3)?;
        assert!(matches!(m.slice(11, 0, 1), Err(MapError::Shorter { now: 3 })));
        Ok(())
    }
}

//! The control file, `walship.control`: the mirror's durable state.
//!
//! # Format
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"WSCTRL01"
//! 8       4     payload length N, u32 little-endian
//! 12      N     payload: ControlState, bincode 2 (serde, config::standard())
//! 12+N    4     CRC-32 (crc32fast) of the payload, u32 little-endian
//! ```
//!
//! The file must be exactly `16 + N` bytes. Anything else — short file, bad
//! magic, length that disagrees with the file size, CRC mismatch, payload that
//! does not decode or has an unknown `version` — is
//! [`StoreError::CorruptControl`] naming the file: the mirror never silently
//! resets its state.
//!
//! # Replacement
//!
//! The file is never written in place: the new contents go to
//! `walship.control.tmp`, which is fdatasync'ed and renamed over
//! `walship.control`, then the directory is fsync'ed. A crash leaves either
//! the old or the new file; a leftover `.tmp` is removed by recovery.
//!
//! # Contents
//!
//! [`ControlState`] holds the identity the mirror is bound to, the fencing
//! epoch, the durable position, and a bounded segment table: the current
//! (incomplete) segment, if any, last, after at most [`MAX_COMPLETE_RECORDS`]
//! complete ones.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsio::{create, failpoint, pwrite_all, rename, sync_data, sync_dir};
use crate::{Identity, StoreError};

/// File name of the control file inside the mirror directory.
pub const CONTROL_FILE: &str = "walship.control";
/// File name of the control file while it is being replaced.
pub const CONTROL_TMP: &str = "walship.control.tmp";
/// The lock file that keeps a second process off a mirror in use.
pub const LOCK_FILE: &str = "walship.lock";
/// Magic bytes at the start of the control file.
pub const MAGIC: &[u8; 8] = b"WSCTRL01";
/// The `version` written by this code.
pub const CONTROL_VERSION: u32 = 1;
/// How many complete segments the table remembers.
pub const MAX_COMPLETE_RECORDS: usize = 64;
/// Largest payload accepted (a sanity bound: a real one is a few KiB).
const MAX_PAYLOAD: u32 = 16 << 20;
/// Magic + length + crc.
const OVERHEAD: usize = 8 + 4 + 4;

/// The durable state of a mirror, as stored in the control file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlState {
    /// Layout version of this struct; [`CONTROL_VERSION`].
    pub version: u32,
    /// The source the mirror is bound to, once a sender has bound it.
    pub identity: Option<Identity>,
    /// The fencing epoch of the latest accepted session.
    pub epoch: u64,
    /// Every byte below this position is fdatasync'ed in its segment file.
    pub durable_pos: u64,
    /// Oldest first; only the last record may be incomplete.
    pub segments: Vec<SegmentRecord>,
}

/// One segment in the control file's table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// Segment file name (without `.partial`).
    pub name: String,
    /// Position of the segment's first byte.
    pub start: u64,
    /// Position one past its last byte, once complete.
    pub end: Option<u64>,
    /// CRC-32 of the whole complete segment file, computed while writing.
    pub crc32: Option<u32>,
}

impl ControlState {
    /// The state of a mirror that has never been written.
    pub fn empty() -> Self {
        ControlState { version: CONTROL_VERSION, identity: None, epoch: 0, durable_pos: 0, segments: Vec::new() }
    }

    /// Encodes the state in the control-file format (magic, length, payload, crc).
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let payload = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| StoreError::Encode(e.to_string()))?;
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l <= MAX_PAYLOAD)
            .ok_or_else(|| StoreError::Encode(format!("control state of {} bytes is too large", payload.len())))?;
        let mut out = Vec::with_capacity(payload.len() + OVERHEAD);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        Ok(out)
    }

    /// Decodes a control file's bytes; `path` is only used in error messages.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::CorruptControl { path: path.to_path_buf(), reason };
        if bytes.len() < OVERHEAD {
            return Err(corrupt(format!("truncated: {} bytes, a control file has at least {OVERHEAD}", bytes.len())));
        }
        let (magic, rest) = bytes.split_at(8);
        if magic != MAGIC {
            return Err(corrupt(format!("bad magic {magic:02x?}, expected {:?}", "WSCTRL01")));
        }
        let (len_bytes, rest) = rest.split_at(4);
        let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        if len > MAX_PAYLOAD {
            return Err(corrupt(format!("payload length {len} exceeds the limit of {MAX_PAYLOAD}")));
        }
        let len = len as usize;
        if rest.len() != len + 4 {
            let what = if rest.len() < len + 4 { "truncated" } else { "trailing bytes" };
            return Err(corrupt(format!(
                "{what}: header says {len} payload bytes, so the file should be {} bytes but it is {}",
                len + OVERHEAD,
                bytes.len()
            )));
        }
        let (payload, crc_bytes) = rest.split_at(len);
        let stored = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
        let actual = crc32fast::hash(payload);
        if stored != actual {
            return Err(corrupt(format!("checksum mismatch: stored crc {stored:08x}, payload crc {actual:08x}")));
        }
        let (state, used): (ControlState, usize) =
            bincode::serde::decode_from_slice(payload, bincode::config::standard())
                .map_err(|e| corrupt(format!("payload does not decode: {e}")))?;
        if used != len {
            return Err(corrupt(format!("payload has {} undecoded trailing bytes", len - used)));
        }
        if state.version != CONTROL_VERSION {
            return Err(corrupt(format!(
                "unknown version {}, this build reads version {CONTROL_VERSION}",
                state.version
            )));
        }
        Ok(state)
    }
}

/// Path of the control file in `dir`.
pub fn control_path(dir: &Path) -> PathBuf {
    dir.join(CONTROL_FILE)
}

/// Reads the control file of the mirror in `dir`; `Ok(None)` if there is none.
pub fn load(dir: &Path) -> Result<Option<ControlState>, StoreError> {
    let path = control_path(dir);
    failpoint("read control").map_err(StoreError::io("read", &path))?;
    match std::fs::read(&path) {
        Ok(bytes) => ControlState::decode(&bytes, &path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read", path)(e)),
    }
}

/// Durably replaces the control file of the mirror in `dir` with `state`
/// (write tmp, fdatasync, rename over, fsync the directory).
pub fn store(dir: &Path, state: &ControlState) -> Result<(), StoreError> {
    let bytes = state.encode()?;
    let tmp = dir.join(CONTROL_TMP);
    let f = create(&tmp, false, true)?;
    failpoint("write control").map_err(StoreError::io("write", &tmp))?;
    pwrite_all(&f, &tmp, &bytes, 0)?;
    sync_data(&f, &tmp)?;
    drop(f);
    rename(&tmp, &control_path(dir))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ControlState {
        ControlState {
            version: CONTROL_VERSION,
            identity: Some(Identity { source_id: "db1".into(), format: "raw".into(), segment_size: 0 }),
            epoch: 7,
            durable_pos: 1234,
            segments: vec![
                SegmentRecord { name: "a".into(), start: 0, end: Some(1000), crc32: Some(42) },
                SegmentRecord { name: "b".into(), start: 1000, end: None, crc32: None },
            ],
        }
    }

    #[test]
    fn round_trips() -> Result<(), StoreError> {
        let s = sample();
        let bytes = s.encode()?;
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(ControlState::decode(&bytes, Path::new("x"))?, s);
        Ok(())
    }

    #[test]
    fn every_single_byte_flip_is_detected() -> Result<(), StoreError> {
        let bytes = sample().encode()?;
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(ControlState::decode(&b, Path::new("x")).is_err(), "flip at byte {i} not detected");
        }
        for cut in 0..bytes.len() {
            assert!(ControlState::decode(&bytes[..cut], Path::new("x")).is_err(), "truncation to {cut} not detected");
        }
        Ok(())
    }

    #[test]
    fn unknown_version_is_refused() -> Result<(), StoreError> {
        let mut s = sample();
        s.version = 99;
        let err = ControlState::decode(&s.encode()?, Path::new("ctl")).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("unknown version 99") && e.contains("ctl")));
        Ok(())
    }
}

//! The data-frame codec.
//!
//! WAL bytes travel in frames on unidirectional QUIC streams. A frame is a
//! fixed 32-byte little-endian header followed by `len` payload bytes:
//!
//! | offset | size | field     | meaning                                                   |
//! |-------:|-----:|-----------|-----------------------------------------------------------|
//! | 0      | 4    | magic     | `57 53 48 46` (`"WSHF"`)                                   |
//! | 4      | 1    | version   | `1`                                                       |
//! | 5      | 1    | kind      | `0` data, `1` segment start, `2` segment end, `3` file    |
//! | 6      | 2    | flags     | reserved, `0` in version 1                                |
//! | 8      | 8    | position  | data: position of the first payload byte; start/end: the segment's first / end position |
//! | 16     | 4    | len       | payload length in bytes                                   |
//! | 20     | 8    | timestamp | sender monotonic clock, microseconds                      |
//! | 28     | 4    | crc       | CRC-32 (IEEE) over header bytes 0..28, then the payload   |
//!
//! A segment-start frame carries the segment's file name as its payload; a
//! segment-end frame has no payload. A file frame carries a whole side file
//! that travels beside the stream (a PostgreSQL timeline history file): a
//! 2-byte little-endian name length, the name, then the contents; its
//! position is the stream position when it was sent (the receiver writes the
//! file, in order with the data, without moving any position). `proto/FORMAT.md` has the same table and
//! golden vectors that the tests below check against this code.
use bytes::{Buf, Bytes, BytesMut};

use crate::Position;
use crate::segment::{SegmentName, SegmentNameError};

mod payload;
pub use payload::Payload;

/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 32;
/// The four magic bytes that open every frame.
pub const MAGIC: [u8; 4] = *b"WSHF";
/// The frame layout version this code reads and writes.
pub const VERSION: u8 = 1;
/// Largest payload a receiver accepts unless configured otherwise.
pub const DEFAULT_MAX_PAYLOAD: u32 = 4 << 20;

const KIND_DATA: u8 = 0;
const KIND_SEGMENT_START: u8 = 1;
const KIND_SEGMENT_END: u8 = 2;
const KIND_FILE: u8 = 3;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// WAL bytes starting at `pos`.
    Data { pos: Position, timestamp_us: u64, payload: Payload },
    /// A new segment begins at `pos`; its bytes follow in data frames.
    SegmentStart { pos: Position, timestamp_us: u64, name: SegmentName },
    /// The current segment is complete; it ends at `pos` (exclusive).
    SegmentEnd { pos: Position, timestamp_us: u64 },
    /// A whole side file (e.g. `00000002.history`), sent at stream position `pos`.
    File { pos: Position, timestamp_us: u64, name: SegmentName, contents: Bytes },
}

impl Frame {
    /// The position the frame names.
    pub fn pos(&self) -> Position {
        match self {
            Frame::Data { pos, .. }
            | Frame::SegmentStart { pos, .. }
            | Frame::SegmentEnd { pos, .. }
            | Frame::File { pos, .. } => *pos,
        }
    }

    /// The sender timestamp carried by the frame.
    pub fn timestamp_us(&self) -> u64 {
        match self {
            Frame::Data { timestamp_us, .. }
            | Frame::SegmentStart { timestamp_us, .. }
            | Frame::SegmentEnd { timestamp_us, .. }
            | Frame::File { timestamp_us, .. } => *timestamp_us,
        }
    }

    /// Encodes the frame into one contiguous buffer (copies the payload;
    /// the hot path uses [`encode_header`] and sends the payload as is).
    pub fn to_bytes(&self) -> Bytes {
        let file;
        let data;
        let (kind, payload): (u8, &[u8]) = match self {
            Frame::Data { payload, .. } => {
                data = payload.to_bytes();
                (KIND_DATA, &data[..])
            }
            Frame::SegmentStart { name, .. } => (KIND_SEGMENT_START, name.as_str().as_bytes()),
            Frame::SegmentEnd { .. } => (KIND_SEGMENT_END, &[]),
            Frame::File { name, contents, .. } => {
                let n = name.as_str().as_bytes();
                let mut b = Vec::with_capacity(2 + n.len() + contents.len());
                b.extend_from_slice(&u16::try_from(n.len()).unwrap_or(u16::MAX).to_le_bytes());
                b.extend_from_slice(n);
                b.extend_from_slice(contents);
                file = b;
                (KIND_FILE, &file[..])
            }
        };
        let header = encode_raw(kind, self.pos(), self.timestamp_us(), payload);
        let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(payload);
        out.freeze()
    }
}

/// The header of a data frame carrying `payload` at `pos`.
pub fn encode_header(pos: Position, timestamp_us: u64, payload: &[u8]) -> [u8; HEADER_LEN] {
    encode_raw(KIND_DATA, pos, timestamp_us, payload)
}

/// The whole segment-start frame for `name` at `pos`.
pub fn encode_segment_start(pos: Position, timestamp_us: u64, name: &SegmentName) -> Bytes {
    Frame::SegmentStart { pos, timestamp_us, name: name.clone() }.to_bytes()
}

/// The whole file frame for side file `name` sent at stream position `pos`.
pub fn encode_file(pos: Position, timestamp_us: u64, name: &SegmentName, contents: Bytes) -> Bytes {
    Frame::File { pos, timestamp_us, name: name.clone(), contents }.to_bytes()
}

/// The whole segment-end frame at `pos`.
pub fn encode_segment_end(pos: Position, timestamp_us: u64) -> Bytes {
    Frame::SegmentEnd { pos, timestamp_us }.to_bytes()
}

fn encode_raw(kind: u8, pos: Position, timestamp_us: u64, payload: &[u8]) -> [u8; HEADER_LEN] {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h[5] = kind;
    // h[6..8]: flags, zero.
    h[8..16].copy_from_slice(&pos.get().to_le_bytes());
    h[16..20].copy_from_slice(&len.to_le_bytes());
    h[20..28].copy_from_slice(&timestamp_us.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[..28]);
    crc.update(payload);
    h[28..32].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

/// Why bytes could not be decoded as a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first four bytes are not the frame magic.
    #[error("bad frame magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// A frame layout version this code does not know.
    #[error("unsupported frame version {0}")]
    BadVersion(u8),
    /// A frame kind this code does not know.
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    /// Reserved flag bits are set.
    #[error("reserved frame flags set: {0:#06x}")]
    BadFlags(u16),
    /// The payload is longer than the receiver accepts.
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLong { len: u32, max: u32 },
    /// The checksum does not match header and payload.
    #[error("frame crc mismatch at position {pos}: header says {expected:#010x}, computed {actual:#010x}")]
    Crc { pos: Position, expected: u32, actual: u32 },
    /// A segment-end frame with a payload.
    #[error("segment-end frame at position {0} carries a payload")]
    EndWithPayload(Position),
    /// A segment-start frame whose name is not a plain file name.
    #[error("segment-start frame at position {pos}: {source}")]
    BadSegmentName { pos: Position, source: SegmentNameError },
    /// A file frame whose payload is shorter than its name length says.
    #[error("file frame at position {0}: payload shorter than its name")]
    FileTooShort(Position),
    /// A data frame finished before all of its payload arrived.
    #[error("data frame at position {pos}: {missing} payload bytes missing")]
    Incomplete { pos: Position, missing: usize },
    /// More payload bytes were offered than a data frame's header says it holds.
    #[error("data frame at position {pos}: {extra} bytes past its payload")]
    Overrun { pos: Position, extra: usize },
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame (nothing is
/// consumed), `Ok(Some(frame))` after consuming it, and an error as soon as
/// the header or checksum proves the bytes are not a valid frame: the caller
/// must then drop the connection, since the stream is no longer in sync.
pub fn decode(buf: &mut BytesMut, max_payload: u32) -> Result<Option<Frame>, FrameError> {
    if buf.len() < HEADER_LEN {
        // Reject garbage as early as possible, before a whole header arrives.
        let n = buf.len().min(4);
        if buf[..n] != MAGIC[..n] {
            let mut m = [0u8; 4];
            m[..n].copy_from_slice(&buf[..n]);
            return Err(FrameError::BadMagic(m));
        }
        return Ok(None);
    }
    let h: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().map_err(|_| FrameError::BadMagic([0; 4]))?;
    let Header { kind, pos, len, timestamp_us, expected } = parse_header(&h, max_payload)?;
    let total = HEADER_LEN + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[..28]);
    crc.update(&buf[HEADER_LEN..total]);
    let actual = crc.finalize();
    if actual != expected {
        return Err(FrameError::Crc { pos, expected, actual });
    }
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(len as usize).freeze();
    let frame = match kind {
        KIND_DATA => Frame::Data { pos, timestamp_us, payload: payload.into() },
        KIND_SEGMENT_START => {
            let name =
                SegmentName::from_bytes(&payload).map_err(|source| FrameError::BadSegmentName { pos, source })?;
            Frame::SegmentStart { pos, timestamp_us, name }
        }
        KIND_FILE => {
            let n = match payload.get(..2) {
                Some(l) => usize::from(u16::from_le_bytes([l[0], l[1]])),
                None => return Err(FrameError::FileTooShort(pos)),
            };
            let Some(raw) = payload.get(2..2 + n) else { return Err(FrameError::FileTooShort(pos)) };
            let name = SegmentName::from_bytes(raw).map_err(|source| FrameError::BadSegmentName { pos, source })?;
            Frame::File { pos, timestamp_us, name, contents: payload.slice(2 + n..) }
        }
        _ => {
            if !payload.is_empty() {
                return Err(FrameError::EndWithPayload(pos));
            }
            Frame::SegmentEnd { pos, timestamp_us }
        }
    };
    Ok(Some(frame))
}

/// A checked header's fields.
struct Header {
    kind: u8,
    pos: Position,
    len: u32,
    timestamp_us: u64,
    expected: u32,
}

/// Checks magic, version, kind, flags and length (the checksum needs the payload).
fn parse_header(h: &[u8; HEADER_LEN], max_payload: u32) -> Result<Header, FrameError> {
    let magic = [h[0], h[1], h[2], h[3]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    if h[4] != VERSION {
        return Err(FrameError::BadVersion(h[4]));
    }
    let kind = h[5];
    if kind > KIND_FILE {
        return Err(FrameError::BadKind(kind));
    }
    let flags = u16::from_le_bytes([h[6], h[7]]);
    if flags != 0 {
        return Err(FrameError::BadFlags(flags));
    }
    let pos = Position(u64::from_le_bytes(h[8..16].try_into().unwrap_or_default()));
    let len = u32::from_le_bytes(h[16..20].try_into().unwrap_or_default());
    let timestamp_us = u64::from_le_bytes(h[20..28].try_into().unwrap_or_default());
    let expected = u32::from_le_bytes(h[28..32].try_into().unwrap_or_default());
    if len > max_payload {
        return Err(FrameError::TooLong { len, max: max_payload });
    }
    Ok(Header { kind, pos, len, timestamp_us, expected })
}

/// A data frame whose header has been checked ([`start`]) and whose payload
/// is still arriving: the streaming counterpart of [`decode`] for a receiver
/// that takes the payload in the transport's chunks instead of copying it
/// into one buffer. Feed it exactly [`remaining`](Self::remaining) bytes with
/// [`push`](Self::push), then [`finish`](Self::finish) checks the CRC.
#[derive(Debug)]
pub struct DataInProgress {
    pos: Position,
    timestamp_us: u64,
    expected: u32,
    remaining: usize,
    crc: crc32fast::Hasher,
    payload: Payload,
}

/// What a whole header says comes next.
#[derive(Debug)]
pub enum Started {
    /// A data frame: take its payload chunk by chunk.
    Data(DataInProgress),
    /// Another kind: [`decode`] the frame once `total` bytes (header included) are in.
    Whole { total: usize },
}

/// Reads a whole header, with the checks [`decode`] makes before the payload.
pub fn start(h: &[u8; HEADER_LEN], max_payload: u32) -> Result<Started, FrameError> {
    let Header { kind, pos, len, timestamp_us, expected } = parse_header(h, max_payload)?;
    if kind != KIND_DATA {
        return Ok(Started::Whole { total: HEADER_LEN + len as usize });
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[..28]);
    // A 128 KiB frame over loopback QUIC arrives in two or three chunks.
    let payload = Payload::with_capacity(4);
    Ok(Started::Data(DataInProgress { pos, timestamp_us, expected, remaining: len as usize, crc, payload }))
}

impl DataInProgress {
    /// Payload bytes still to come.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Payload bytes taken so far.
    pub fn received(&self) -> usize {
        self.payload.len()
    }

    /// Takes the next chunk of the payload; a chunk longer than
    /// [`remaining`](Self::remaining) is refused and nothing is taken.
    pub fn push(&mut self, chunk: Bytes) -> Result<(), FrameError> {
        if chunk.len() > self.remaining {
            return Err(FrameError::Overrun { pos: self.pos, extra: chunk.len() - self.remaining });
        }
        self.remaining -= chunk.len();
        self.crc.update(&chunk);
        self.payload.push(chunk);
        Ok(())
    }

    /// The frame, once every payload byte arrived and the CRC matches.
    /// Called early, it reports the frame as truncated by the bytes missing.
    pub fn finish(self) -> Result<Frame, FrameError> {
        if self.remaining > 0 {
            return Err(FrameError::Incomplete { pos: self.pos, missing: self.remaining });
        }
        let actual = self.crc.finalize();
        if actual != self.expected {
            return Err(FrameError::Crc { pos: self.pos, expected: self.expected, actual });
        }
        Ok(Frame::Data { pos: self.pos, timestamp_us: self.timestamp_us, payload: self.payload })
    }
}

#[cfg(test)]
mod tests;

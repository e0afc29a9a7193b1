//! A data frame's payload as the chunks it arrived in.
use bytes::{Bytes, BytesMut};

/// The payload of a data frame: one or more byte chunks, in order.
///
/// A receiver assembles a frame from the transport's chunks (a 128 KiB
/// frame arrives as two or three QUIC packets' worth) and hands them on as
/// they are, so the payload is never copied into one buffer; the store
/// writes the chunks one after the other. Equality compares contents, not
/// how they are chunked.
#[derive(Clone, Debug, Default)]
pub struct Payload {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Payload {
    /// An empty payload with room for `n` chunks.
    pub fn with_capacity(n: usize) -> Self {
        Payload { chunks: Vec::with_capacity(n), len: 0 }
    }

    /// Appends a chunk (empty chunks are dropped).
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push(chunk);
        }
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order; none is empty.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// The payload as one buffer: free for a single chunk, a copy otherwise.
    pub fn to_bytes(&self) -> Bytes {
        match &self.chunks[..] {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut b = BytesMut::with_capacity(self.len);
                for c in many {
                    b.extend_from_slice(c);
                }
                b.freeze()
            }
        }
    }

    /// The bytes in order, one at a time (for comparisons, not hot paths).
    fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.chunks.iter().flat_map(|c| c.iter().copied())
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        let mut p = Payload::with_capacity(1);
        p.push(b);
        p
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload::from(Bytes::from(v))
    }
}

impl From<&'static [u8]> for Payload {
    fn from(s: &'static [u8]) -> Self {
        Payload::from(Bytes::from_static(s))
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.bytes().eq(other.bytes())
    }
}

impl Eq for Payload {}

impl PartialEq<[u8]> for Payload {
    fn eq(&self, other: &[u8]) -> bool {
        self.len == other.len() && self.bytes().eq(other.iter().copied())
    }
}

impl PartialEq<Bytes> for Payload {
    fn eq(&self, other: &Bytes) -> bool {
        *self == other[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_does_not_change_contents_or_equality() {
        let whole = Payload::from(Bytes::from_static(b"hello world"));
        let mut parts = Payload::with_capacity(3);
        for c in [&b"hel"[..], b"", b"lo wo", b"rld"] {
            parts.push(Bytes::from_static(c));
        }
        assert_eq!(parts.chunks().len(), 3, "the empty chunk is dropped");
        assert_eq!(parts.len(), 11);
        assert_eq!(parts, whole);
        assert_eq!(parts.to_bytes(), Bytes::from_static(b"hello world"));
        assert!(parts == *b"hello world".as_slice());
        let mut other = Payload::default();
        other.push(Bytes::from_static(b"hello worle"));
        assert_ne!(parts, other);
        assert!(Payload::default().is_empty());
        assert_eq!(Payload::default().to_bytes(), Bytes::new());
    }

    #[test]
    fn a_single_chunk_is_handed_back_without_a_copy() {
        let b = Bytes::from(vec![7u8; 1000]);
        let p = Payload::from(b.clone());
        assert_eq!(p.to_bytes().as_ptr(), b.as_ptr());
    }
}

//! Segment names: the one place where a name from the network or a
//! directory listing becomes a value that is safe to use as a file name.
use std::fmt;

/// Longest segment name accepted (a common file-system limit).
pub const MAX_NAME_LEN: usize = 255;

/// A segment's file name: non-empty, at most 255 bytes of UTF-8, no `/`, no
/// NUL, not `.` or `..`, not starting with `.` (hidden and temporary files),
/// and not ending in `.partial` (the receiver's in-progress suffix).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName(String);

/// Why a string is not a usable segment name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentNameError {
    /// The name is empty.
    #[error("segment name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("segment name is {0} bytes long; the limit is 255")]
    TooLong(usize),
    /// The name is not UTF-8.
    #[error("segment name is not valid UTF-8")]
    NotUtf8,
    /// The name contains a character that would escape the mirror directory or is not a plain name.
    #[error(
        "segment name {0:?} is not a plain file name (contains '/', '\\\\' or NUL, is '.' or '..', or starts with '.')"
    )]
    NotPlain(String),
    /// The name ends with the receiver's reserved suffix.
    #[error("segment name {0:?} ends with the reserved suffix \".partial\"")]
    Reserved(String),
}

impl SegmentName {
    /// Validates `s` as a segment name.
    pub fn new(s: &str) -> Result<Self, SegmentNameError> {
        if s.is_empty() {
            return Err(SegmentNameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(SegmentNameError::TooLong(s.len()));
        }
        if s.starts_with('.') || s.contains(['/', '\\', '\0']) {
            return Err(SegmentNameError::NotPlain(s.to_string()));
        }
        if s.ends_with(".partial") {
            return Err(SegmentNameError::Reserved(s.to_string()));
        }
        Ok(SegmentName(s.to_string()))
    }

    /// Validates raw bytes (from the network) as a segment name.
    pub fn from_bytes(b: &[u8]) -> Result<Self, SegmentNameError> {
        if b.len() > MAX_NAME_LEN {
            return Err(SegmentNameError::TooLong(b.len()));
        }
        let s = std::str::from_utf8(b).map_err(|_| SegmentNameError::NotUtf8)?;
        Self::new(s)
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The receiver's name for the segment while it is incomplete.
    pub fn partial_name(&self) -> String {
        format!("{}.partial", self.0)
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_names_that_are_not_plain() {
        for bad in ["", ".", "..", "../etc/passwd", "a/b", "a\0b", ".hidden", "x.partial", "a\\b"] {
            assert!(SegmentName::new(bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(SegmentName::new(&"a".repeat(256)).is_err());
        assert!(SegmentName::from_bytes(&[0xff, 0xfe]).is_err());
        for good in ["000000010000000000000001", "seg-0001", "a.b", "x..y"] {
            assert_eq!(SegmentName::new(good).map(|n| n.as_str().to_string()), Ok(good.to_string()));
        }
    }
}

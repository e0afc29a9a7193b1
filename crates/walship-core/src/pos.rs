//! Positions in the WAL stream.
//!
//! Every byte the sender ships has one 64-bit position. For PostgreSQL it is
//! the LSN; for the raw format the byte offset in the concatenation of the
//! segments in name order. A `Position` is printed as a decimal number; the
//! PostgreSQL `X/Y` spelling is available through [`Position::lsn`] and is
//! accepted by [`Position::from_str`].
use std::fmt;
use std::str::FromStr;

/// A byte position in the WAL stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub u64);

impl Position {
    /// The first byte of the stream.
    pub const ZERO: Position = Position(0);

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The position `n` bytes later; saturates instead of wrapping.
    #[must_use]
    pub const fn add(self, n: u64) -> Position {
        Position(self.0.saturating_add(n))
    }

    /// Bytes from `earlier` to `self`, 0 when `earlier` is not earlier.
    pub const fn since(self, earlier: Position) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The PostgreSQL `X/Y` spelling (upper-case hex, as PostgreSQL prints it).
    pub fn lsn(self) -> Lsn {
        Lsn(self)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Displays a position as a PostgreSQL LSN, `X/Y`.
#[derive(Clone, Copy, Debug)]
pub struct Lsn(Position);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0.0;
        write!(f, "{:X}/{:X}", v >> 32, v & 0xFFFF_FFFF)
    }
}

/// A position string that is neither a decimal number nor `X/Y`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid position {0:?}: expected a decimal byte position or a PostgreSQL LSN like 16/B374D848")]
pub struct ParsePositionError(String);

impl FromStr for Position {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePositionError(s.to_string());
        let t = s.trim();
        if let Some((hi, lo)) = t.split_once('/') {
            let valid = |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid(hi) || !valid(lo) {
                return Err(err());
            }
            let hi = u64::from_str_radix(hi, 16).map_err(|_| err())?;
            let lo = u64::from_str_radix(lo, 16).map_err(|_| err())?;
            Ok(Position((hi << 32) | lo))
        } else if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            t.parse::<u64>().map(Position).map_err(|_| err())
        } else {
            Err(err())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_and_lsn() {
        assert_eq!("12345".parse::<Position>(), Ok(Position(12345)));
        assert_eq!("16/B374D848".parse::<Position>(), Ok(Position(0x16_B374_D848)));
        assert_eq!("0/0".parse::<Position>(), Ok(Position(0)));
        for bad in ["", "x", "1/", "/1", "1/2/3", "-5", "123456789/0", "1.5", "0x10"] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn lsn_round_trips() {
        for v in [0u64, 1, 0x1_0000_0000, 0x16_B374_D848, u64::MAX] {
            let p = Position(v);
            assert_eq!(p.lsn().to_string().parse::<Position>(), Ok(p));
        }
        assert_eq!(Position(0x7046C8).lsn().to_string(), "0/7046C8");
    }
}

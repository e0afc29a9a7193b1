//! Arbitrary bytes through the frame decoder, fed in chunks as the network
//! would (like the proptests in `crates/walship-core/src/frame/tests.rs`).
//!
//! Input layout: byte 0 picks the options, bytes 1..3 the payload limit,
//! byte 3 the chunk size; the rest is the stream. Random bytes almost never
//! carry a valid CRC, so when option bit 0 is set the harness rewrites the
//! CRC field of the first header to match, which lets the fuzzer reach the
//! kind-specific checks (segment names, end frames with payloads) too.
//!
//! Oracles: no panic; `Ok(None)` consumes nothing; a decoded frame re-encodes
//! to exactly the bytes it was decoded from; an error ends the stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use walship_core::frame::{self, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((opts, rest)) = data.split_first() else { return };
    let Some((limit, rest)) = rest.split_first_chunk::<2>() else { return };
    let Some((chunk, stream)) = rest.split_first() else { return };
    // Small limits exercise TooLong; bit 1 picks the product default.
    let max_payload = if opts & 2 != 0 { frame::DEFAULT_MAX_PAYLOAD } else { u32::from(u16::from_le_bytes(*limit)) };
    let chunk = usize::from(*chunk).max(1);
    let mut wire = stream.to_vec();
    if opts & 1 != 0 {
        fix_first_crc(&mut wire);
    }

    let mut buf = BytesMut::new();
    let mut consumed = 0usize;
    for piece in wire.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match frame::decode(&mut buf, max_payload) {
                Ok(Some(f)) => {
                    let used = before - buf.len();
                    let encoded = f.to_bytes();
                    assert_eq!(&encoded[..], &wire[consumed..consumed + used], "re-encoding differs: {f:?}");
                    consumed += used;
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "need-more consumed bytes");
                    break;
                }
                // The stream is out of sync: the receiver drops the connection.
                Err(_) => return,
            }
        }
    }
    assert_eq!(consumed + buf.len(), wire.len());
});

/// Makes the CRC of the header at the front of `wire` match its header and
/// as much of the payload as is present.
fn fix_first_crc(wire: &mut [u8]) {
    if wire.len() < HEADER_LEN {
        return;
    }
    let len = u32::from_le_bytes([wire[16], wire[17], wire[18], wire[19]]) as usize;
    let end = wire.len().min(HEADER_LEN.saturating_add(len));
    let mut crc = crc32fast::Hasher::new();
    crc.update(&wire[..28]);
    crc.update(&wire[HEADER_LEN..end]);
    wire[28..32].copy_from_slice(&crc.finalize().to_le_bytes());
}

//! The receiver's session core fed a script of frames, store progress,
//! position reports and reconnects: see `src/session.rs` for the input
//! layout and the oracles.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| walship_fuzz::session::run(data));

//! Arbitrary bytes as a control message: decoding must never panic, and a
//! message that decodes must survive a re-encode/decode round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walship_core::proto::Control;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Control::from_slice(data) {
        let again = Control::of(msg.clone()).to_vec();
        let back = Control::from_slice(&again).expect("a re-encoded control message decodes");
        assert_eq!(back, msg, "control message changed in a round trip");
    }
});

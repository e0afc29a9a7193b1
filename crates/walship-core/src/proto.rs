//! Control messages, generated from `proto/walship.proto` by prost.
#![allow(missing_docs, clippy::all, missing_debug_implementations)]

include!(concat!(env!("OUT_DIR"), "/walship.v1.rs"));

use prost::Message;

impl Control {
    /// Wraps a message in the control envelope.
    pub fn of(msg: control::Msg) -> Self {
        Control { msg: Some(msg) }
    }

    /// Encodes to bytes (without the length prefix, which the transport adds).
    pub fn to_vec(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Decodes from bytes; an unknown or empty envelope is an error.
    pub fn from_slice(b: &[u8]) -> Result<control::Msg, DecodeControlError> {
        Control::decode(b)?.msg.ok_or(DecodeControlError::Empty)
    }
}

/// A control message that could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeControlError {
    /// The bytes are not a valid protobuf `Control` message.
    #[error("malformed control message: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The envelope holds no message (or one this version does not know).
    #[error("empty or unknown control message")]
    Empty,
}

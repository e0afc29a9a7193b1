//! The control stream: one bidirectional QUIC stream per connection carrying
//! length-delimited protobuf messages.
//!
//! Each message is a `walship.v1.Control` envelope, prefixed by its length
//! as a 4-byte big-endian integer (tokio-util's `LengthDelimitedCodec`
//! defaults). A length over [`MAX_CONTROL_MESSAGE`] is refused before any
//! of the message is buffered. The sender of a session opens the stream
//! ([`open`]) and speaks first (Hello), which is what makes the stream
//! visible to the receiver ([`accept`]).
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use quinn::{Connection, RecvStream, SendStream};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use walship_core::proto::{Control, control};

use crate::NetError;

/// Largest control message accepted or sent.
pub const MAX_CONTROL_MESSAGE: usize = 1 << 20;

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_CONTROL_MESSAGE).new_codec()
}

/// Opens the control stream (the side that speaks first).
pub async fn open(conn: &Connection) -> Result<(ControlSend, ControlRecv), NetError> {
    let (send, recv) = conn.open_bi().await?;
    Ok((ControlSend::new(send), ControlRecv::new(recv)))
}

/// Accepts the control stream opened by the peer. Cancel-safe.
pub async fn accept(conn: &Connection) -> Result<(ControlSend, ControlRecv), NetError> {
    let (send, recv) = conn.accept_bi().await?;
    Ok((ControlSend::new(send), ControlRecv::new(recv)))
}

/// The sending half of the control stream.
#[derive(Debug)]
pub struct ControlSend {
    inner: FramedWrite<SendStream, LengthDelimitedCodec>,
}

impl ControlSend {
    /// Wraps the send half of the control stream.
    pub fn new(stream: SendStream) -> Self {
        ControlSend { inner: FramedWrite::new(stream, codec()) }
    }

    /// Sends one message and flushes it to quinn.
    ///
    /// Not cancel-safe: if the future is dropped, the message may sit
    /// (whole or partly written) in the internal buffer; it goes out with
    /// the next `send` or `finish`, so a cancelled message is either lost
    /// or sent late, never corrupted.
    pub async fn send(&mut self, msg: control::Msg) -> Result<(), NetError> {
        let bytes = Bytes::from(Control::of(msg).to_vec());
        self.inner.send(bytes).await.map_err(NetError::from_stream_io)
    }

    /// Flushes anything buffered and finishes the stream (the peer's
    /// [`ControlRecv::recv`] then returns `Ok(None)`). Not cancel-safe.
    pub async fn finish(mut self) -> Result<(), NetError> {
        SinkExt::<Bytes>::flush(&mut self.inner).await.map_err(NetError::from_stream_io)?;
        self.inner.into_inner().finish()?;
        Ok(())
    }

    /// The underlying quinn stream.
    pub fn get_mut(&mut self) -> &mut SendStream {
        self.inner.get_mut()
    }
}

/// The receiving half of the control stream.
#[derive(Debug)]
pub struct ControlRecv {
    inner: FramedRead<RecvStream, LengthDelimitedCodec>,
}

impl ControlRecv {
    /// Wraps the receive half of the control stream.
    pub fn new(stream: RecvStream) -> Self {
        ControlRecv { inner: FramedRead::new(stream, codec()) }
    }

    /// The next message; `Ok(None)` when the peer finished the stream
    /// cleanly. Bytes that are not a valid message give
    /// [`NetError::Decode`]; a stream that ends inside a message, or a
    /// length prefix over the limit, gives [`NetError::Control`].
    ///
    /// Cancel-safe: `FramedRead::next` keeps a partly received message in
    /// its buffer, so dropping this future (e.g. in `tokio::select!`) loses
    /// nothing and the next call resumes where it stopped.
    pub async fn recv(&mut self) -> Result<Option<control::Msg>, NetError> {
        match self.inner.next().await {
            None => Ok(None),
            Some(Err(e)) => Err(NetError::from_stream_io(e)),
            Some(Ok(bytes)) => Ok(Some(Control::from_slice(&bytes)?)),
        }
    }

    /// The underlying quinn stream.
    pub fn get_mut(&mut self) -> &mut RecvStream {
        self.inner.get_mut()
    }
}

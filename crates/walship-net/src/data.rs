//! Data streams: unidirectional QUIC streams carrying data frames.
//!
//! The frame layout is `walship_core::frame` (32-byte header, then the
//! payload). This module moves frames without looking into them on the
//! sending side (payloads are handed to quinn as the `Bytes` they came in,
//! typically slices of a memory-mapped segment, never copied here) and
//! decodes them on the receiving side.
use bytes::{Bytes, BytesMut};
use quinn::{Connection, RecvStream, SendStream};
use walship_core::frame::{self, Frame, HEADER_LEN, Started};

use crate::NetError;

/// Opens a new data stream.
pub async fn open(conn: &Connection) -> Result<DataSend, NetError> {
    Ok(DataSend::new(conn.open_uni().await?))
}

/// Accepts the next data stream opened by the peer. Cancel-safe.
pub async fn accept(conn: &Connection, max_payload: u32) -> Result<DataRecv, NetError> {
    Ok(DataRecv::new(conn.accept_uni().await?, max_payload))
}

/// The sending end of a data stream.
#[derive(Debug)]
pub struct DataSend {
    stream: SendStream,
}

impl DataSend {
    /// Wraps a unidirectional send stream.
    pub fn new(stream: SendStream) -> Self {
        DataSend { stream }
    }

    /// Sends one frame: `header` (from `frame::encode_header`) then
    /// `payload`, without copying the payload.
    ///
    /// Not cancel-safe: if the future is dropped, a prefix of the frame may
    /// have been queued and the stream is no longer at a frame boundary;
    /// the only safe thing left to do with it is to reset it.
    pub async fn send_frame(&mut self, header: [u8; HEADER_LEN], payload: Bytes) -> Result<(), NetError> {
        let mut chunks = [Bytes::copy_from_slice(&header), payload];
        self.stream.write_all_chunks(&mut chunks).await?;
        Ok(())
    }

    /// Sends bytes that already hold whole encoded frames (segment start and
    /// end frames, or a pre-encoded batch). Not cancel-safe, as
    /// [`send_frame`](Self::send_frame).
    pub async fn send_bytes(&mut self, bytes: Bytes) -> Result<(), NetError> {
        self.stream.write_chunk(bytes).await?;
        Ok(())
    }

    /// Ends the stream after everything queued so far; the peer's
    /// [`DataRecv::next_frame`] then returns `Ok(None)`. Delivery is not
    /// awaited (acks are the protocol's business, not the transport's).
    pub fn finish(&mut self) -> Result<(), NetError> {
        self.stream.finish()?;
        Ok(())
    }

    /// Abandons the stream: queued bytes are dropped and the peer's reads
    /// fail with this code.
    pub fn reset(&mut self, code: quinn::VarInt) -> Result<(), NetError> {
        self.stream.reset(code)?;
        Ok(())
    }

    /// The underlying quinn stream (priority, id, `stopped()`).
    pub fn get_mut(&mut self) -> &mut SendStream {
        &mut self.stream
    }
}

/// The receiving end of a data stream.
///
/// Reads never run past the frame in hand (`read_chunk` is asked for at most
/// the bytes the frame still needs), so a data frame's payload is kept as the
/// chunks quinn hands over, never copied together: headers and the small
/// control-like frames (segment start/end, side files) go through `buf`.
#[derive(Debug)]
pub struct DataRecv {
    stream: RecvStream,
    /// A header being assembled, or a whole non-data frame.
    buf: BytesMut,
    /// The data frame whose payload is arriving.
    data: Option<frame::DataInProgress>,
    max_payload: u32,
}

impl DataRecv {
    /// Wraps a unidirectional receive stream; frames with payloads over
    /// `max_payload` bytes are refused.
    pub fn new(stream: RecvStream, max_payload: u32) -> Self {
        DataRecv { stream, buf: BytesMut::with_capacity(HEADER_LEN), data: None, max_payload }
    }

    /// The next frame, or `Ok(None)` when the peer finished the stream at a
    /// frame boundary. A frame that does not decode gives
    /// [`NetError::Frame`] (the stream is then out of sync: close the
    /// connection); a stream that ends inside a frame gives
    /// [`NetError::Truncated`].
    ///
    /// Cancel-safe: the only await is quinn's `read_chunk`, which is
    /// cancel-safe, and received bytes are moved into the state kept in
    /// `self` before anything else can happen, so dropping the future loses
    /// nothing; the next call continues with the same partial frame.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, NetError> {
        loop {
            if let Some(d) = &mut self.data {
                if d.remaining() == 0 {
                    let d = self.data.take().expect("checked above");
                    return Ok(Some(d.finish()?));
                }
                // read_chunk hands back at most the length asked for.
                match self.stream.read_chunk(d.remaining(), true).await? {
                    Some(chunk) => d.push(chunk.bytes)?,
                    None => return Err(NetError::Truncated { buffered: HEADER_LEN + d.received() }),
                }
                continue;
            }
            // How many bytes `buf` needs: the rest of the header, or the rest of a non-data frame.
            let want = if self.buf.len() < HEADER_LEN {
                // decode refuses a wrong magic before the whole header is in.
                frame::decode(&mut self.buf, self.max_payload)?;
                HEADER_LEN - self.buf.len()
            } else {
                let h: [u8; HEADER_LEN] = self.buf[..HEADER_LEN].try_into().expect("length checked");
                match frame::start(&h, self.max_payload)? {
                    Started::Data(d) => {
                        self.buf.clear();
                        self.data = Some(d);
                        continue;
                    }
                    Started::Whole { total } if self.buf.len() >= total => {
                        let frame = frame::decode(&mut self.buf, self.max_payload)?;
                        return Ok(Some(frame.expect("a whole frame is in the buffer")));
                    }
                    Started::Whole { total } => total - self.buf.len(),
                }
            };
            match self.stream.read_chunk(want, true).await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk.bytes),
                None if self.buf.is_empty() => return Ok(None),
                None => return Err(NetError::Truncated { buffered: self.buf.len() }),
            }
        }
    }

    /// Tells the peer to stop sending on this stream.
    pub fn stop(&mut self, code: quinn::VarInt) -> Result<(), NetError> {
        self.stream.stop(code)?;
        Ok(())
    }

    /// The underlying quinn stream.
    pub fn get_mut(&mut self) -> &mut RecvStream {
        &mut self.stream
    }
}

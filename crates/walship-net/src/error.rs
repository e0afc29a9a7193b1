//! The one error type of the crate.
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use walship_core::frame::FrameError;

/// Everything that can go wrong in the transport: loading or writing TLS
/// material, binding sockets, connecting, and moving bytes on streams.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile { path: PathBuf, source: io::Error },
    /// A file or directory could not be written.
    #[error("cannot write {path}: {source}")]
    WriteFile { path: PathBuf, source: io::Error },
    /// A file is not well-formed PEM.
    #[error("{path}: malformed PEM: {source}")]
    Pem { path: PathBuf, source: rustls_pki_types::pem::Error },
    /// A certificate file holds no certificate.
    #[error("{path}: no certificate in it (expected a PEM \"CERTIFICATE\" block)")]
    NoCertificate { path: PathBuf },
    /// A key file holds no private key.
    #[error("{path}: no private key in it (expected a PEM PKCS#8, SEC1 or PKCS#1 private key)")]
    NoPrivateKey { path: PathBuf },
    /// A CA certificate cannot serve as a trust anchor.
    #[error("{path}: not usable as a certificate authority: {source}")]
    BadCa { path: PathBuf, source: rustls::Error },
    /// The certificate and key were refused by TLS (e.g. the key does not match the certificate).
    #[error("certificate {cert} with key {key}: {source}")]
    BadCertKey { cert: PathBuf, key: PathBuf, source: rustls::Error },
    /// The TLS configuration could not be built.
    #[error("tls configuration: {0}")]
    TlsConfig(String),
    /// `cert init` would overwrite an existing file.
    #[error("refusing to overwrite {path}: it already exists (use force to replace it)")]
    Exists { path: PathBuf },
    /// A certificate name is neither an IP address nor a valid DNS name.
    #[error("invalid certificate name {name:?}: {source}")]
    BadName { name: String, source: rcgen::Error },
    /// A client certificate name that cannot be a file name and DNS name.
    #[error("invalid client name {name:?}: {why}")]
    BadClientName { name: String, why: String },
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    CertGen(#[from] rcgen::Error),
    /// The UDP socket could not be created, tuned or bound.
    #[error("udp socket on {addr}: {source}")]
    Socket { addr: SocketAddr, source: io::Error },
    /// A connection could not be started (bad server name, no client config, ...).
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: quinn::ConnectError },
    /// A connection attempt or an established connection failed.
    #[error("connection to {addr}: {source}")]
    Handshake { addr: SocketAddr, source: quinn::ConnectionError },
    /// The connection was lost or closed while opening or accepting a stream.
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing to a stream failed (connection lost, peer stopped the stream).
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from a stream failed (connection lost, peer reset the stream).
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// The stream was already finished or reset locally.
    #[error("stream already closed")]
    ClosedStream(#[from] quinn::ClosedStream),
    /// The control stream failed below the message layer (e.g. an oversized length prefix).
    #[error("control stream: {0}")]
    Control(io::Error),
    /// A control message is not valid protobuf or is empty.
    #[error("bad control message: {0}")]
    Decode(#[from] walship_core::proto::DecodeControlError),
    /// A data frame failed to decode (magic, version, length, crc).
    #[error("bad data frame: {0}")]
    Frame(#[from] FrameError),
    /// A data stream ended in the middle of a frame.
    #[error("data stream ended in the middle of a frame ({buffered} bytes of it received)")]
    Truncated { buffered: usize },
}

impl NetError {
    /// Turns an I/O error from a codec over a quinn stream back into the quinn
    /// error it wraps, so callers can match on it.
    pub(crate) fn from_stream_io(e: io::Error) -> Self {
        if let Some(inner) = e.get_ref() {
            if let Some(r) = inner.downcast_ref::<quinn::ReadError>() {
                return NetError::Read(r.clone());
            }
            if let Some(w) = inner.downcast_ref::<quinn::WriteError>() {
                return NetError::Write(w.clone());
            }
        }
        NetError::Control(e)
    }
}

//! walship-net: the transport, and nothing else.
//!
//! QUIC (quinn) with mutual TLS 1.3 (rustls, *ring* provider only) and ALPN
//! `walship/1`. A connection carries one bidirectional control stream of
//! length-delimited protobuf messages ([`control`]) and data frames on
//! unidirectional streams ([`data`]). This crate opens sockets, loads and
//! writes certificates and moves bytes; what the bytes mean and when to send
//! them is decided in `walship-core` and `walship-agent`.
//!
//! Typical use, receiver side:
//! ```no_run
//! # async fn run(files: walship_net::TlsFiles) -> Result<(), walship_net::NetError> {
//! let endpoint = walship_net::server_endpoint("0.0.0.0:7000".parse().unwrap(), &files)?;
//! while let Some(conn) = walship_net::accept(&endpoint).await {
//!     let conn = conn?;
//!     let (mut ctl_tx, mut ctl_rx) = walship_net::control::accept(&conn).await?;
//!     let mut data = walship_net::data::accept(&conn, walship_core::frame::DEFAULT_MAX_PAYLOAD).await?;
//!     while let Some(frame) = data.next_frame().await? { /* ... */ }
//! }
//! # Ok(()) }
//! ```
pub mod certs;
pub mod close;
pub mod control;
pub mod data;
pub mod endpoint;
mod error;
pub mod tls;

pub use certs::CertPaths;
pub use control::{ControlRecv, ControlSend};
pub use data::{DataRecv, DataSend};
pub use endpoint::{
    accept, client_endpoint, client_endpoint_for, connect, peer_name, peer_names, server_endpoint, server_endpoint_for,
};
pub use error::NetError;
pub use tls::{TlsFiles, TlsMode, client_config, server_config, transport_config};

/// Re-exported so users need no direct quinn dependency for the basics.
pub use quinn::{Connection, Endpoint, Incoming, VarInt};

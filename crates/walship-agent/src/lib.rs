//! walship-agent: the two runtimes that wire the adapters to the core.
//!
//! * [`sender`]: tailer → sender session cores → QUIC, one session per
//!   receiver, each reconnecting with capped exponential backoff.
//! * [`receiver`]: QUIC → receiver session core → store thread, one
//!   session (one writer) per mirror at a time.
//!
//! Both expose cheap snapshot handles for logs, tests and the admin API.
pub mod apply;
pub mod backoff;
pub mod receiver;
pub mod sender;
mod sender_session;
pub mod store_thread;
mod sync;

pub use sync::{WaitError, WaitResult, WaitTarget};

pub use receiver::{Receiver, ReceiverHandle, ReceiverOptions, ReceiverStats};
pub use sender::{ConnState, ReceiverStatus, Sender, SenderHandle, SenderOptions, SenderSnapshot, Target};

/// Default largest data frame payload. Measured with `walship-bench ship`
/// (1 GiB, 3 rounds, tmpfs mirror): 32 KiB frames cost per-frame overhead,
/// 256 KiB and 1 MiB frames lose pipelining between network and store;
/// 64–128 KiB were fastest.
pub const DEFAULT_MAX_FRAME: u32 = 128 << 10;

/// Errors that stop a runtime from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The mirror could not be opened or recovered.
    #[error(transparent)]
    Store(#[from] walship_store::StoreError),
    /// The WAL source could not be opened.
    #[error(transparent)]
    Source(#[from] walship_source::SourceError),
    /// The transport could not be set up.
    #[error(transparent)]
    Net(#[from] walship_net::NetError),
    /// Another local I/O failure.
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    /// Invalid settings.
    #[error("invalid configuration: {0}")]
    Config(String),
}

//! The receiver runtime: QUIC listener → receiver session core → store thread.
//!
//! One mirror, one writer: the [`Mirror`] lives in a slot that exactly one
//! session holds at a time. A new connection from the same source cancels
//! the session that holds the slot (so a restarted sender never waits for a
//! dead connection to time out), waits for it to hand the mirror back, and
//! takes a new, durably recorded epoch before answering `Welcome`.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use walship_core::proto::{self, ErrorCode, control::Msg};
use walship_core::receiver::{self, MirrorResume, ReceiverConfig, ReceiverSession};
use walship_core::{Position, frame};
use walship_net::{Connection, NetError, TlsMode, close};
use walship_store::{Identity, Mirror};

use crate::AgentError;
use crate::store_thread::{self, FlushPolicy, StoreEvent};

/// How many bytes before the durable position the handshake checksums.
pub const CHECK_WINDOW: u64 = 64 << 10;

/// Default `--max-connections`: one mirror has one writer, so a handful
/// covers a restarting sender overlapping its old session; the rest is abuse.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;
/// Default `--handshake-timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a receiver.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    pub listen: SocketAddr,
    pub dir: PathBuf,
    /// Mutual TLS files, or `--insecure`.
    pub tls: TlsMode,
    /// `--allow-client`: when not empty, only client certificates carrying
    /// one of these names (common name or DNS name) may open a session.
    pub allow_clients: Vec<String>,
    /// Connections (handshaking or streaming) served at once; more are refused.
    pub max_connections: usize,
    /// A connection must finish TLS and say hello within this long.
    pub handshake_timeout: Duration,
    /// This receiver's name, reported to senders.
    pub name: String,
    /// Largest data frame payload accepted.
    pub max_payload: u32,
    pub flush: FlushPolicy,
    /// `--apply-command`: run for every completed segment; only its success moves "applied".
    pub apply_command: Option<String>,
}

impl ReceiverOptions {
    /// Options with the defaults of `walship receive`.
    pub fn new(listen: SocketAddr, dir: PathBuf, tls: impl Into<TlsMode>, name: impl Into<String>) -> Self {
        ReceiverOptions {
            listen,
            dir,
            tls: tls.into(),
            allow_clients: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            name: name.into(),
            max_payload: walship_core::frame::DEFAULT_MAX_PAYLOAD,
            flush: FlushPolicy::default(),
            apply_command: None,
        }
    }
}

/// Counters and positions of a receiver, for tests, logs and the admin API.
#[derive(Debug, Clone, Default)]
pub struct ReceiverStats {
    pub sessions_accepted: u64,
    pub sessions_refused: u64,
    /// Connections refused before or during the handshake: over
    /// `--max-connections`, handshake timeout, failed TLS, not allowed.
    pub connections_refused: u64,
    /// Connections open now (handshaking or in a session).
    pub connections_open: u64,
    /// The last storage failure (e.g. disk full), until a later flush succeeds.
    pub storage_error: Option<String>,
    /// Sessions ended by a storage failure.
    pub storage_errors: u64,
    /// Bytes of WAL received in data frames, over all sessions.
    pub bytes_received: u64,
    pub frames_received: u64,
    pub bad_frames: u64,
    pub segments_completed: u64,
    pub written_pos: Position,
    pub flushed_pos: Position,
    /// Where the current (or last) session resumed.
    pub resume_pos: Position,
    pub source_id: Option<String>,
    pub connected: bool,
    pub last_frame_at: Option<Instant>,
    /// fdatasync of the data plus the durable-position record.
    pub fsync: walship_core::histogram::Histogram,
    /// Applied position and apply-command failures (`None` without an apply command).
    pub apply: Option<crate::apply::ApplyStats>,
}

struct Shared {
    opts: ReceiverOptions,
    slot: tokio::sync::Mutex<Option<Mirror>>,
    current: Mutex<Option<CancellationToken>>,
    stats: Mutex<ReceiverStats>,
    applier: Option<crate::apply::Applier>,
}

/// A bound receiver, ready to [`run`](Receiver::run).
pub struct Receiver {
    endpoint: walship_net::Endpoint,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("dir", &self.shared.opts.dir).finish_non_exhaustive()
    }
}

/// A cheap handle to read a running receiver's stats.
#[derive(Clone)]
pub struct ReceiverHandle(Arc<Shared>);

impl std::fmt::Debug for ReceiverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiverHandle")
    }
}

impl ReceiverHandle {
    /// A snapshot of the counters.
    pub fn stats(&self) -> ReceiverStats {
        let mut st = lock(&self.0.stats).clone();
        st.apply = self.0.applier.as_ref().map(|a| a.stats());
        st
    }
}

impl Receiver {
    /// Opens (and recovers) the mirror and binds the QUIC endpoint.
    /// Must be called inside a tokio runtime.
    pub fn bind(opts: ReceiverOptions) -> Result<Receiver, AgentError> {
        let (mirror, report) = Mirror::open(&opts.dir)?;
        info!(
            dir = %opts.dir.display(),
            durable_pos = %report.durable_pos,
            discarded_bytes = report.discarded_bytes,
            "mirror recovered"
        );
        for action in &report.actions {
            info!(dir = %opts.dir.display(), "recovery: {action}");
        }
        let endpoint = walship_net::server_endpoint_for(opts.listen, &opts.tls)?;
        let stats = ReceiverStats {
            written_pos: mirror.written_pos(),
            flushed_pos: mirror.durable_pos(),
            resume_pos: mirror.durable_pos(),
            source_id: mirror.identity().map(|i| i.source_id.clone()),
            ..Default::default()
        };
        let applier = match &opts.apply_command {
            Some(cmd) => Some(crate::apply::Applier::start(&opts.dir, cmd.clone())?),
            None => None,
        };
        let shared = Arc::new(Shared {
            opts,
            slot: tokio::sync::Mutex::new(Some(mirror)),
            current: Mutex::new(None),
            stats: Mutex::new(stats),
            applier,
        });
        Ok(Receiver { endpoint, shared })
    }

    /// The address the endpoint listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, AgentError> {
        self.endpoint.local_addr().map_err(|e| AgentError::Io { what: "reading the listen address", source: e })
    }

    /// A handle for stats.
    pub fn handle(&self) -> ReceiverHandle {
        ReceiverHandle(self.shared.clone())
    }

    /// Accepts connections until `shutdown` is cancelled; then ends the
    /// current session (flushing what was written) and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let opts = &self.shared.opts;
        info!(listen = %self.local_addr()?, dir = %opts.dir.display(), insecure = opts.tls.is_insecure(), "receiver listening");
        if opts.tls.is_insecure() {
            error!(
                "INSECURE: --insecure is set: no client certificate is asked for, so anyone who can reach {} can \
                 write this mirror",
                opts.listen
            );
        }
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            lock(&self.shared.stats).connections_open = tasks.len() as u64;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let remote = incoming.remote_address();
                    // Every connection costs buffers and a task: past the
                    // limit, refuse before any TLS work.
                    if tasks.len() >= self.shared.opts.max_connections {
                        lock(&self.shared.stats).connections_refused += 1;
                        warn!(%remote, open = tasks.len(), "connection refused: --max-connections reached");
                        incoming.refuse();
                        continue;
                    }
                    let shared = self.shared.clone();
                    let shutdown = shutdown.clone();
                    // The handshake runs in the connection's task, so a peer
                    // that stalls it never holds up anyone else's.
                    tasks.spawn(async move {
                        let deadline = tokio::time::Instant::now() + shared.opts.handshake_timeout;
                        match tokio::time::timeout_at(deadline, incoming).await {
                            Ok(Ok(conn)) => handle_connection(shared, conn, deadline, shutdown).await,
                            Ok(Err(e)) => {
                                lock(&shared.stats).connections_refused += 1;
                                warn!(%remote, error = %e, "connection refused during handshake");
                            }
                            Err(_) => {
                                lock(&shared.stats).connections_refused += 1;
                                warn!(%remote, "connection refused during handshake: no TLS handshake within --handshake-timeout");
                            }
                        }
                    });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        if let Some(t) = lock(&self.shared.current).take() {
            t.cancel();
        }
        while tasks.join_next().await.is_some() {}
        // Make sure the mirror is flushed and closed.
        let _ = self.shared.slot.lock().await.take();
        self.endpoint.close(close::SHUTDOWN, b"shutdown");
        self.endpoint.wait_idle().await;
        let st = lock(&self.shared.stats);
        info!(
            sessions = st.sessions_accepted,
            bytes_received = st.bytes_received,
            flushed_pos = %st.flushed_pos,
            "receiver stopped"
        );
        Ok(())
    }
}

async fn handle_connection(
    shared: Arc<Shared>,
    conn: Connection,
    deadline: tokio::time::Instant,
    shutdown: CancellationToken,
) {
    let remote = conn.remote_address();
    let peer = walship_net::peer_name(&conn).unwrap_or_default();
    debug!(%remote, %peer, "connection accepted");
    let allow = &shared.opts.allow_clients;
    if !allow.is_empty() {
        let names = walship_net::peer_names(&conn);
        if !names.iter().any(|n| allow.contains(n)) {
            lock(&shared.stats).connections_refused += 1;
            let msg = format!("client certificate {names:?} is not in the receiver's --allow-client list");
            warn!(%remote, "refused connection: {msg}");
            close::close(&conn, close::REFUSED, &msg);
            return;
        }
    }
    let shutdown_token = shutdown.clone();
    match session(&shared, &conn, deadline, shutdown).await {
        Ok(()) => info!(%remote, "session ended"),
        Err(SessionEnd::Superseded) if shutdown_token.is_cancelled() => {
            info!(%remote, "session ended: receiver shutting down");
            close::close(&conn, close::SHUTDOWN, "receiver shutting down");
        }
        Err(SessionEnd::Superseded) => {
            info!(%remote, "session superseded by a newer connection");
            close::close(&conn, close::SUPERSEDED, "a newer session from the same source took over");
        }
        Err(SessionEnd::Refused(code, msg)) => {
            lock(&shared.stats).sessions_refused += 1;
            warn!(%remote, %peer, "refused session: {msg}");
            close::close(&conn, close::REFUSED, &msg);
            let _ = code;
        }
        Err(SessionEnd::BadFrame(msg)) => {
            lock(&shared.stats).bad_frames += 1;
            error!(%remote, "closing connection: {msg}");
            close::close(&conn, close::BAD_FRAME, &msg);
        }
        Err(SessionEnd::Protocol(msg)) => {
            error!(%remote, "closing connection: {msg}");
            close::close(&conn, close::PROTOCOL, &msg);
        }
        Err(SessionEnd::Storage(msg)) => {
            {
                let mut st = lock(&shared.stats);
                st.storage_errors += 1;
                st.storage_error = Some(msg.clone());
            }
            error!(%remote, "closing connection after a storage failure (nothing past the durable position is acknowledged; the sender retries with backoff): {msg}");
            close::close(&conn, close::INTERNAL, &msg);
        }
        Err(SessionEnd::Lost(msg)) => match conn.close_reason().as_ref().and_then(close::peer_close) {
            // The sender closed the connection on purpose; its reason says why.
            Some((code, reason)) if code == close::SHUTDOWN || code == close::NORMAL => {
                info!(%remote, "session ended by the sender: {reason}")
            }
            Some((_, reason)) => warn!(%remote, %peer, "sender closed the connection: {reason}"),
            None => info!(%remote, "connection lost: {msg}"),
        },
        Err(SessionEnd::PeerError(msg)) => warn!(%remote, %peer, "sender ended the session: {msg}"),
    }
}

enum SessionEnd {
    Superseded,
    Refused(ErrorCode, String),
    BadFrame(String),
    Protocol(String),
    Storage(String),
    Lost(String),
    /// The sender ended the session with an error message.
    PeerError(String),
}

fn net_end(e: NetError) -> SessionEnd {
    match e {
        NetError::Frame(f) => SessionEnd::BadFrame(f.to_string()),
        NetError::Decode(d) => SessionEnd::Protocol(d.to_string()),
        // Not the transport: a length prefix over the limit, or a stream
        // that ended inside a message.
        NetError::Control(e) if e.kind() == std::io::ErrorKind::InvalidData => SessionEnd::Protocol(format!(
            "control stream: {e} (a message length over the {} byte limit)",
            walship_net::control::MAX_CONTROL_MESSAGE
        )),
        NetError::Control(e) => SessionEnd::Protocol(format!("control stream: {e}")),
        other => SessionEnd::Lost(other.to_string()),
    }
}

async fn session(
    shared: &Arc<Shared>,
    conn: &Connection,
    deadline: tokio::time::Instant,
    shutdown: CancellationToken,
) -> Result<(), SessionEnd> {
    let opts = &shared.opts;
    let late = || SessionEnd::Protocol(format!("no hello within {:?} (--handshake-timeout)", opts.handshake_timeout));
    let (mut ctl_tx, mut ctl_rx) = tokio::time::timeout_at(deadline, walship_net::control::accept(conn))
        .await
        .map_err(|_| late())?
        .map_err(net_end)?;
    let hello = tokio::time::timeout_at(deadline, ctl_rx.recv())
        .await
        .map_err(|_| late())?
        .map_err(net_end)?
        .ok_or_else(|| SessionEnd::Lost("control stream closed before hello".into()))?;
    let peer = match receiver::check_hello(hello, opts.max_payload) {
        Ok(p) => p,
        Err(e) => {
            let _ = ctl_tx.send(receiver::error_msg(e.code(), e.to_string())).await;
            return Err(SessionEnd::Refused(e.code(), e.to_string()));
        }
    };
    let identity = Identity {
        source_id: peer.source_id.clone(),
        format: format_name(peer.format).to_string(),
        segment_size: peer.segment_size,
    };
    // A quick refusal for a foreign source, before disturbing the current session.
    if let Some(msg) = foreign_source(shared, &identity) {
        let _ = ctl_tx.send(receiver::error_msg(ErrorCode::SourceMismatch, msg.clone())).await;
        return Err(SessionEnd::Refused(ErrorCode::SourceMismatch, msg));
    }

    // Supersede whoever holds the mirror, then take it.
    let token = shutdown.child_token();
    if let Some(old) = lock(&shared.current).replace(token.clone()) {
        old.cancel();
    }
    let mut slot = tokio::select! {
        s = shared.slot.lock() => s,
        _ = token.cancelled() => return Err(SessionEnd::Superseded),
    };
    let Some(mut mirror) = slot.take() else {
        return Err(SessionEnd::Storage("the mirror was lost by an earlier failure; restart the receiver".into()));
    };
    let setup = (|| {
        mirror.discard_unflushed()?;
        mirror.bind(&identity)?;
        let epoch = mirror.next_epoch()?;
        let (check_start, check_crc) = mirror.checksum_before(CHECK_WINDOW)?;
        Ok::<_, walship_store::StoreError>((epoch, check_start, check_crc))
    })();
    let (epoch, check_start, check_crc) = match setup {
        Ok(v) => v,
        Err(e) => {
            *slot = Some(mirror);
            let (code, end) = match e {
                walship_store::StoreError::SourceMismatch { .. }
                | walship_store::StoreError::FormatMismatch { .. }
                | walship_store::StoreError::SegmentSizeMismatch { .. } => {
                    (ErrorCode::SourceMismatch, SessionEnd::Refused(ErrorCode::SourceMismatch, e.to_string()))
                }
                _ => (ErrorCode::Storage, SessionEnd::Storage(e.to_string())),
            };
            let _ = ctl_tx.send(receiver::error_msg(code, e.to_string())).await;
            return Err(end);
        }
    };
    let rp = mirror.resume_point();
    let applied_pos = match &shared.applier {
        Some(a) => (*a.applied().borrow()).min(rp.durable_pos),
        None => rp.durable_pos,
    };
    let resume = MirrorResume {
        durable_pos: rp.durable_pos,
        segment: rp.segment.map(|s| (s.name, s.start, s.complete)),
        check_start,
        check_crc,
        applied_pos,
    };
    if let Err(e) = ctl_tx.send(receiver::welcome(epoch, &resume, &opts.name)).await {
        *slot = Some(mirror);
        return Err(net_end(e));
    }
    info!(
        sender = %peer.sender_name,
        source_id = %peer.source_id,
        epoch,
        resume_pos = %resume.durable_pos,
        "session accepted"
    );
    {
        let mut st = lock(&shared.stats);
        st.sessions_accepted += 1;
        st.resume_pos = resume.durable_pos;
        st.source_id = Some(peer.source_id.clone());
        st.connected = true;
    }

    let core = ReceiverSession::new(
        ReceiverConfig { max_frame: peer.max_frame, ack_bytes: 1 << 20, separate_apply: shared.applier.is_some() },
        epoch,
        &resume,
    );
    let (op_tx, op_rx) = mpsc::channel(64);
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let policy = opts.flush;
    let store = tokio::task::spawn_blocking(move || store_thread::run(mirror, op_rx, ev_tx, policy));
    let before = lock(&shared.stats).bytes_received;
    let result = stream(shared, conn, core, &mut ctl_tx, &mut ctl_rx, op_tx, ev_rx, &token).await;
    // The store thread flushes what was written and hands the mirror back.
    match store.await {
        Ok(m) => {
            let mut st = lock(&shared.stats);
            st.written_pos = m.written_pos();
            st.flushed_pos = m.durable_pos();
            st.connected = false;
            info!(
                epoch,
                resume_pos = %resume.durable_pos,
                bytes_received = st.bytes_received - before,
                flushed_pos = %st.flushed_pos,
                "session closed"
            );
            *slot = Some(m);
        }
        Err(e) => error!("store thread panicked: {e}"),
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn stream(
    shared: &Shared,
    conn: &Connection,
    mut core: ReceiverSession,
    ctl_tx: &mut walship_net::ControlSend,
    ctl_rx: &mut walship_net::ControlRecv,
    op_tx: mpsc::Sender<walship_core::receiver::StoreOp>,
    mut ev_rx: mpsc::UnboundedReceiver<StoreEvent>,
    token: &CancellationToken,
) -> Result<(), SessionEnd> {
    let max_payload = shared.opts.max_payload;
    let mut data: Option<walship_net::DataRecv> = None;
    let mut applied_rx = shared.applier.as_ref().map(|a| a.applied());
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => return Err(SessionEnd::Superseded),
            changed = async { applied_rx.as_mut().expect("guarded").changed().await }, if applied_rx.is_some() => {
                if changed.is_err() {
                    // The apply worker is gone; stop listening rather than spin.
                    applied_rx = None;
                    continue;
                }
                let applied = *applied_rx.as_mut().expect("guarded").borrow_and_update();
                let flushed = core.positions().1;
                core.handle_applied(applied.min(flushed), Instant::now()).map_err(|e| SessionEnd::Storage(e.to_string()))?;
                while let Some(m) = core.poll_control() {
                    ctl_tx.send(m).await.map_err(net_end)?;
                }
            }
            ev = ev_rx.recv() => {
                let Some(ev) = ev else { return Err(SessionEnd::Storage("store thread stopped".into())) };
                let now = Instant::now();
                match ev {
                    StoreEvent::Written(p) => {
                        core.handle_written(p, now).map_err(|e| SessionEnd::Storage(e.to_string()))?;
                        lock(&shared.stats).written_pos = p;
                    }
                    StoreEvent::Flushed { pos, fsync } => {
                        core.handle_flushed(pos, now).map_err(|e| SessionEnd::Storage(e.to_string()))?;
                        let mut st = lock(&shared.stats);
                        st.flushed_pos = pos;
                        st.storage_error = None;
                        st.fsync.record(fsync.as_secs_f64());
                    }
                    StoreEvent::SegmentCompleted { name, end } => {
                        lock(&shared.stats).segments_completed += 1;
                        if let Some(a) = &shared.applier {
                            a.submit(&name, end);
                        }
                    }
                    StoreEvent::Failed(msg) => {
                        let _ = ctl_tx.send(receiver::error_msg(ErrorCode::Storage, msg.clone())).await;
                        return Err(SessionEnd::Storage(msg));
                    }
                }
                while let Some(m) = core.poll_control() {
                    ctl_tx.send(m).await.map_err(net_end)?;
                }
            }
            msg = ctl_rx.recv() => match msg.map_err(net_end)? {
                None => return Ok(()),
                Some(Msg::Status(_)) => {}
                Some(Msg::Error(e)) => return Err(SessionEnd::PeerError(e.message)),
                Some(_) => return Err(SessionEnd::Protocol("unexpected control message while streaming".into())),
            },
            stream = conn.accept_uni(), if data.is_none() => {
                let stream = stream.map_err(|e| SessionEnd::Lost(e.to_string()))?;
                data = Some(walship_net::DataRecv::new(stream, max_payload));
            }
            frame = async { data.as_mut().map(|d| d.next_frame()).expect("guarded").await }, if data.is_some() => {
                let Some(frame) = frame.map_err(net_end)? else {
                    data = None;
                    continue;
                };
                let len = match &frame { frame::Frame::Data { payload, .. } => payload.len() as u64, _ => 0 };
                let op = core.handle_frame(frame, Instant::now()).map_err(|e| SessionEnd::Protocol(e.to_string()))?;
                {
                    let mut st = lock(&shared.stats);
                    st.frames_received += 1;
                    st.bytes_received += len;
                    st.last_frame_at = Some(Instant::now());
                }
                if let Some(op) = op {
                    // Backpressure: a full queue stops reading, and QUIC flow control stops the sender.
                    if op_tx.send(op).await.is_err() {
                        return Err(SessionEnd::Storage("store thread stopped".into()));
                    }
                }
            }
        }
    }
}

fn foreign_source(shared: &Shared, id: &Identity) -> Option<String> {
    let st = lock(&shared.stats);
    match &st.source_id {
        Some(held) if held != &id.source_id => {
            Some(format!("mirror holds source {held:?} but the sender is source {:?}", id.source_id))
        }
        _ => None,
    }
}

/// The format's name as stored in the mirror's identity.
pub fn format_name(f: proto::Format) -> &'static str {
    match f {
        proto::Format::Postgres => walship_store::POSTGRES_FORMAT,
        _ => "raw",
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

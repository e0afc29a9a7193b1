//! One sender session: connect, handshake, resume check, stream.
//!
//! The data loop never awaits a network read while it has something to
//! send: acks are read by a separate task and handed over on a channel, so
//! the loop drains them between frames (a pending `send_frame` is never
//! cancelled, since quinn's writes are not cancel-safe), and only when the
//! window is full or the source has nothing new does it wait — for an ack,
//! for the source to grow, or for shutdown.
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use walship_core::proto::{ErrorCode, control::Msg};
use walship_core::receiver::error_msg;
use walship_core::sender::{Cursor, ResumeCheck, ResumeRequest, SegmentView, SenderSession, SessionError, Transmit};
use walship_core::{SegmentName, frame};
use walship_net::{ControlSend, Endpoint, NetError, close};
use walship_source::{SegmentInfo, SourceError, Tailer};

use crate::receiver::lock;
use crate::sender::{APPLY, ConnState, FLUSH, Shared, Target, WRITE, core_config};

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Core(#[from] SessionError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}")]
    Closed(String),
    /// The receiver closed the connection with this code and reason.
    #[error("receiver closed the connection: {reason}")]
    ClosedBy { code: walship_net::VarInt, reason: String },
}

impl Failure {
    /// Failures that need an operator (divergence, lost source data), as
    /// opposed to a network hiccup that the next attempt cures.
    /// The receiver closed the session because a frame failed its checks.
    pub(crate) fn is_bad_frame(&self) -> bool {
        matches!(self, Failure::ClosedBy { code, .. } if *code == close::BAD_FRAME)
    }

    /// The receiver could not store what it was sent (disk full, I/O error):
    /// reconnecting at once would fail the same way, so the backoff keeps
    /// growing until a session stores something again.
    pub(crate) fn is_receiver_storage(&self) -> bool {
        matches!(self, Failure::Core(SessionError::Refused { code: walship_core::proto::ErrorCode::Storage, .. }))
            || matches!(self, Failure::ClosedBy { code, .. } if *code == close::INTERNAL)
    }

    pub(crate) fn is_fatal_for_data(&self) -> bool {
        matches!(self, Failure::Core(SessionError::Diverged { .. } | SessionError::SourceGone(_)) | Failure::Source(_))
    }
}

/// The receiver's address now: `--to HOST:PORT` is resolved again before
/// every attempt (a receiver that moved, a Service created late), keeping
/// to the address family of the endpoint's socket.
async fn resolve(target: &Target) -> Result<std::net::SocketAddr, Failure> {
    let v4 = target.addr.is_ipv4();
    match tokio::net::lookup_host(target.label.as_str()).await {
        Ok(addrs) => {
            let mut addrs = addrs.filter(|a| a.is_ipv4() == v4).peekable();
            match addrs.peek() {
                Some(a) => Ok(*a),
                None if !target.addr.ip().is_unspecified() => Ok(target.addr),
                None => Err(Failure::Closed(format!("receiver address {} has no usable address", target.label))),
            }
        }
        Err(_) if !target.addr.ip().is_unspecified() => Ok(target.addr),
        Err(e) => Err(Failure::Closed(format!("cannot resolve receiver address {}: {e}", target.label))),
    }
}

/// Runs one session. `Ok(streamed)` on shutdown; `Err((streamed, why))`
/// otherwise, where `streamed` says whether the session got past the
/// handshake (which resets the backoff).
pub(crate) async fn run(
    shared: &Shared,
    idx: usize,
    endpoint: &Endpoint,
    target: &Target,
    shutdown: &CancellationToken,
) -> Result<bool, (bool, Failure)> {
    let addr = resolve(target).await.map_err(|e| (false, e))?;
    let conn = tokio::select! {
        c = tokio::time::timeout(CONNECT_TIMEOUT, walship_net::connect(endpoint, addr, &target.server_name)) => match c {
            Ok(c) => c.map_err(|e| (false, e.into()))?,
            Err(_) => {
                return Err((false, Failure::Closed(format!("no QUIC handshake with {addr} within {CONNECT_TIMEOUT:?}"))));
            }
        },
        _ = shutdown.cancelled() => return Ok(false),
    };
    shared.update(idx, |r| r.state = ConnState::Handshaking);
    let r = session(shared, idx, &conn, shutdown).await;
    match &r {
        Ok(_) => close::close(&conn, close::SHUTDOWN, ""),
        Err((_, Failure::Net(_) | Failure::Closed(_) | Failure::ClosedBy { .. })) => {}
        Err((_, e)) => close::close(&conn, close::PROTOCOL, &e.to_string()),
    }
    r
}

async fn session(
    shared: &Shared,
    idx: usize,
    conn: &walship_net::Connection,
    shutdown: &CancellationToken,
) -> Result<bool, (bool, Failure)> {
    // When the receiver closed the connection, its close reason says why
    // (e.g. "refused: mirror holds source ..."); prefer it to the bare
    // stream error that the close caused.
    let early = |e: Failure| match (&e, conn.close_reason()) {
        (Failure::Net(_), Some(_)) => (false, closed_reason(conn)),
        _ => (false, e),
    };
    let (mut ctl_tx, mut ctl_rx) = walship_net::control::open(conn).await.map_err(|e| early(e.into()))?;
    let cfg = core_config(&shared.opts, &lock(&shared.tailer));
    let mut core = SenderSession::new(cfg, shared.base);
    while let Some(m) = core.poll_control() {
        ctl_tx.send(m).await.map_err(|e| early(e.into()))?;
    }
    let welcome = tokio::select! {
        m = tokio::time::timeout(Duration::from_secs(10), ctl_rx.recv()) => m
            .map_err(|_| early(Failure::Closed("no welcome within 10 s".into())))?
            .map_err(|e| early(e.into()))?
            .ok_or_else(|| early(closed_reason(conn)))?,
        _ = shutdown.cancelled() => return Ok(false),
    };
    let req = core
        .handle_control(welcome, Instant::now())
        .map_err(|e| early(e.into()))?
        .ok_or_else(|| early(Failure::Closed("receiver answered hello without welcome".into())))?;
    let check = {
        let mut t = lock(&shared.tailer);
        let may_rebase = !shared.others_streaming(idx);
        let c = resolve_resume(&mut t, &req, may_rebase);
        shared.end.send_replace(t.end());
        c
    };
    if let Err(e) = core.handle_resume(check, Instant::now()) {
        let code = match e {
            SessionError::Diverged { .. } => ErrorCode::Diverged,
            SessionError::SourceGone(_) => ErrorCode::SourceGone,
            _ => ErrorCode::Protocol,
        };
        let _ = ctl_tx.send(error_msg(code, e.to_string())).await;
        return Err(early(e.into()));
    }
    let resume_pos = core.positions().sent;
    info!(receiver = %req.receiver_name, epoch = req.epoch, resume_pos = %resume_pos, "streaming");
    shared.update(idx, |r| {
        r.state = ConnState::Streaming;
        r.epoch = req.epoch;
        r.resume_pos = resume_pos;
        r.sessions += 1;
        // The receiver's word now: written may have gone back if it lost
        // unflushed bytes in a crash. Flushed goes back only after a power
        // failure on a PostgreSQL mirror, and then only by the head of a
        // record that was incomplete at the old position (see
        // walship_store::posfile): every complete record stays flushed.
        let p = core.positions();
        r.sent = p.sent;
        r.written = p.written;
        r.flushed = p.flushed;
        r.applied = p.applied;
        r.levels[WRITE].reset(p.written);
        r.levels[FLUSH].reset(p.flushed);
        r.levels[APPLY].reset(p.applied);
    });
    shared.sync_update(Instant::now());
    let streamed = tokio::select! {
        r = stream(shared, idx, conn, core, ctl_tx, ctl_rx, shutdown) => r,
        why = stall_watchdog(shared, idx) => {
            warn!(receiver = %target_label(shared, idx), "{why}");
            Err(Failure::Closed(why))
        }
    };
    streamed.map(|()| true).map_err(|e| match (&e, conn.close_reason()) {
        (Failure::Net(_), Some(_)) => (true, closed_reason(conn)),
        _ => (true, e),
    })
}

/// Checks the mirror's resume point against the source and re-anchors the
/// source's positions when it is safe.
fn resolve_resume(t: &mut Tailer, req: &ResumeRequest, may_rebase: bool) -> ResumeCheck {
    let Some(seg) = &req.segment else {
        return ResumeCheck::Unverifiable;
    };
    let found = t.segments().iter().find(|s| s.name == seg.name).cloned();
    match found {
        Some(info) => {
            if info.start != seg.start {
                if !may_rebase || t.fixed_positions() {
                    return ResumeCheck::Diverged(format!(
                        "segment {} starts at position {} on the mirror but at {} in the source",
                        seg.name, seg.start, info.start
                    ));
                }
                if let Err(e) = t.rebase(&seg.name, seg.start) {
                    return ResumeCheck::Gone(e.to_string());
                }
            }
            let Some(info) = t.segments().iter().find(|s| s.name == seg.name).cloned() else {
                return ResumeCheck::Gone(format!("segment {} vanished while resuming", seg.name));
            };
            if req.durable_pos > info.end() && (info.sealed || seg.complete) {
                return ResumeCheck::Diverged(format!(
                    "the mirror holds {} bytes of segment {} but the source has only {}",
                    req.durable_pos.since(info.start),
                    seg.name,
                    info.len
                ));
            }
            if req.durable_pos > info.end() {
                // The source has not caught up with its own mirror: a restored
                // or rewound primary. Appending would fork history.
                return ResumeCheck::Diverged(format!(
                    "the mirror is durable to position {} but the source ends at {}",
                    req.durable_pos,
                    info.end()
                ));
            }
            match t.checksum(req.check_start, req.durable_pos) {
                Ok(crc) => ResumeCheck::Crc(crc),
                Err(e) => ResumeCheck::Gone(e.to_string()),
            }
        }
        None if seg.complete => {
            let next_ok = t.segments().iter().find(|s| s.name > seg.name).map(|s| s.start);
            match next_ok {
                Some(start) if start == req.durable_pos => ResumeCheck::Unverifiable,
                Some(_) if may_rebase && !t.fixed_positions() => match t.rebase_after(&seg.name, req.durable_pos) {
                    Ok(()) => ResumeCheck::Unverifiable,
                    Err(e) => ResumeCheck::Gone(e.to_string()),
                },
                Some(start) => ResumeCheck::Diverged(format!(
                    "the segment after {} starts at {start} for the other receivers but at {} on this mirror",
                    seg.name, req.durable_pos
                )),
                // Nothing after it yet: wait for the next segment at the mirror's position.
                None if may_rebase && !t.fixed_positions() => match t.rebase_after(&seg.name, req.durable_pos) {
                    Ok(()) => ResumeCheck::Unverifiable,
                    Err(_) => ResumeCheck::Unverifiable,
                },
                None => ResumeCheck::Unverifiable,
            }
        }
        None => ResumeCheck::Gone(format!(
            "segment {} that the receiver is filling (resume position {}) is no longer in {}",
            seg.name,
            req.durable_pos,
            t.dir().display()
        )),
    }
}

fn view_for<'a>(segs: &'a [SegmentInfo], cursor: &Cursor) -> Option<SegmentView<'a>> {
    let s = match cursor {
        Cursor::In(name) => segs.iter().find(|s| &s.name == name),
        Cursor::After { after: None, .. } => segs.first(),
        Cursor::After { after: Some(a), .. } => segs.iter().find(|s| &s.name > a),
    }?;
    Some(SegmentView { name: &s.name, start: s.start, end: s.end(), sealed: s.sealed })
}

enum Out {
    Header([u8; frame::HEADER_LEN], bytes::Bytes),
    Whole(bytes::Bytes),
}

/// The next side file (a PostgreSQL timeline history file) this session has
/// not sent, as a file frame. Sent before the stream moves on, so a new
/// timeline's history reaches the mirror before its segments.
fn next_file(t: &Tailer, core: &SenderSession, sent: &mut Vec<String>, now: Instant) -> Option<Out> {
    let name = t.history_files().iter().find(|n| !sent.contains(n))?.clone();
    sent.push(name.clone());
    let path = t.dir().join(&name);
    let contents = match std::fs::read(&path) {
        Ok(c) if c.len() + name.len() + 2 <= core.config().max_frame as usize => c,
        Ok(c) => {
            warn!(file = %path.display(), bytes = c.len(), "history file larger than a frame; not shipped");
            return None;
        }
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot read history file; not shipped");
            return None;
        }
    };
    let seg = SegmentName::new(&name).ok()?;
    let frame = frame::encode_file(core.positions().sent, core.timestamp_us(now), &seg, contents.into());
    info!(file = %name, "shipping history file");
    Some(Out::Whole(frame))
}

fn next_out(shared: &Shared, core: &mut SenderSession, files: &mut Vec<String>) -> Result<Option<(Out, u64)>, Failure> {
    let now = Instant::now();
    let mut t = lock(&shared.tailer);
    if let Some(out) = next_file(&t, core, files, now) {
        return Ok(Some((out, 0)));
    }
    let tr = {
        let view = view_for(t.segments(), core.cursor());
        core.poll_transmit(view, now)?
    };
    Ok(match tr {
        None => None,
        Some(Transmit::SegmentStart { name, pos, timestamp_us }) => {
            Some((Out::Whole(frame::encode_segment_start(pos, timestamp_us, &name)), 0))
        }
        Some(Transmit::SegmentEnd { pos, timestamp_us }) => {
            Some((Out::Whole(frame::encode_segment_end(pos, timestamp_us)), 0))
        }
        Some(Transmit::Data { pos, len, timestamp_us }) => {
            let payload = t.read(pos, len as usize)?;
            if payload.len() != len as usize {
                return Err(Failure::Closed(format!(
                    "source returned {} bytes at position {pos}, expected {len}",
                    payload.len()
                )));
            }
            let header = frame::encode_header(pos, timestamp_us, &payload);
            Some((Out::Header(header, payload), u64::from(len)))
        }
    })
}

async fn stream(
    shared: &Shared,
    idx: usize,
    conn: &walship_net::Connection,
    mut core: SenderSession,
    ctl_tx: ControlSend,
    mut ctl_rx: walship_net::ControlRecv,
    shutdown: &CancellationToken,
) -> Result<(), Failure> {
    let mut data = walship_net::data::open(conn).await?;
    // Bounded: a receiver that floods acks fills this and then QUIC flow
    // control, never the sender's memory.
    let (ack_tx, mut ack_rx) = mpsc::channel(ACK_QUEUE);
    let reader = tokio::spawn(async move {
        loop {
            let m = ctl_rx.recv().await;
            let end = !matches!(m, Ok(Some(_)));
            if ack_tx.send(m).await.is_err() || end {
                return;
            }
        }
    });
    let _abort = AbortOnDrop(reader);
    let mut ack_log = AckLog::open(shared, idx, core.positions().flushed)?;
    let mut end_rx = shared.end.subscribe();
    let mut files_sent = Vec::new();
    let mut frames = 0u64;
    let mut bytes = 0u64;
    let mut last_publish = Instant::now();
    loop {
        // Mark the source's end as seen *before* looking for work, so a
        // change that lands after the look wakes the wait below.
        end_rx.borrow_and_update();
        // Acks first: they open the window.
        let mut acked = false;
        while let Ok(m) = ack_rx.try_recv() {
            handle_ack(&mut core, m, conn, &mut ack_log)?;
            acked = true;
        }
        if acked {
            publish(shared, idx, &core, frames, bytes);
            (frames, bytes) = (0, 0);
            shared.release();
            last_publish = Instant::now();
        }
        match next_out(shared, &mut core, &mut files_sent)? {
            Some((out, n)) => {
                match out {
                    Out::Header(h, payload) => data.send_frame(h, payload).await?,
                    Out::Whole(b) => data.send_bytes(b).await?,
                }
                frames += 1;
                bytes += n;
                if last_publish.elapsed() > Duration::from_millis(50) {
                    publish(shared, idx, &core, frames, bytes);
                    (frames, bytes) = (0, 0);
                    last_publish = Instant::now();
                }
            }
            None => {
                publish(shared, idx, &core, frames, bytes);
                (frames, bytes) = (0, 0);
                tokio::select! {
                    m = ack_rx.recv() => match m {
                        Some(m) => {
                            handle_ack(&mut core, m, conn, &mut ack_log)?;
                            publish(shared, idx, &core, 0, 0);
                            shared.release();
                        }
                        None => return Err(closed_reason(conn)),
                    },
                    _ = end_rx.changed() => {}
                    _ = shutdown.cancelled() => {
                        let _ = data.finish();
                        let _ = ctl_tx.finish().await;
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn handle_ack(
    core: &mut SenderSession,
    m: Result<Option<Msg>, NetError>,
    conn: &walship_net::Connection,
    ack_log: &mut Option<AckLog>,
) -> Result<(), Failure> {
    match m {
        Ok(Some(m)) => {
            core.handle_control(m, Instant::now())?;
            if let Some(log) = ack_log {
                log.record(core.positions().flushed)?;
            }
            Ok(())
        }
        Ok(None) => Err(closed_reason(conn)),
        Err(e) => match conn.close_reason() {
            Some(_) => Err(closed_reason(conn)),
            None => Err(e.into()),
        },
    }
}

fn publish(shared: &Shared, idx: usize, core: &SenderSession, frames: u64, bytes: u64) {
    let p = core.positions();
    let now = Instant::now();
    shared.update(idx, |r| {
        if (r.written, r.flushed, r.applied) != (p.written, p.flushed, p.applied) {
            // Lock order: receivers, then lag.
            let t = lock(&shared.lag);
            r.levels[WRITE].advance(&t, p.written, now);
            r.levels[FLUSH].advance(&t, p.flushed, now);
            r.levels[APPLY].advance(&t, p.applied, now);
        }
        r.sent = p.sent;
        r.written = p.written;
        r.flushed = p.flushed;
        r.applied = p.applied;
        r.frames_sent += frames;
        r.bytes_sent += bytes;
    });
    shared.sync_update(now);
}

fn closed_reason(conn: &walship_net::Connection) -> Failure {
    match conn.close_reason() {
        Some(e) => match close::peer_close(&e) {
            Some((code, reason)) => Failure::ClosedBy { code, reason },
            None => Failure::Closed(format!("connection lost: {e}")),
        },
        None => Failure::Closed("receiver closed the control stream".into()),
    }
}

/// `--debug-ack-log`, a test hook: one line `<receiver label> <flushed>`
/// per ack that advanced the flushed position, appended (one `write_all` of
/// the whole line) before the ack is published or acted on.
struct AckLog {
    file: std::fs::File,
    label: String,
    last: walship_core::Position,
}

impl AckLog {
    fn open(shared: &Shared, idx: usize, flushed: walship_core::Position) -> Result<Option<AckLog>, Failure> {
        let Some(path) = &shared.opts.debug_ack_log else { return Ok(None) };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Failure::Closed(format!("opening the ack log {}: {e}", path.display())))?;
        let label = shared.opts.targets.get(idx).map(|t| t.label.clone()).unwrap_or_default();
        Ok(Some(AckLog { file, label, last: flushed }))
    }

    fn record(&mut self, flushed: walship_core::Position) -> Result<(), Failure> {
        if flushed <= self.last {
            return Ok(());
        }
        self.last = flushed;
        let line = format!("{} {}\n", self.label, flushed.get());
        std::io::Write::write_all(&mut self.file, line.as_bytes())
            .map_err(|e| Failure::Closed(format!("writing the ack log: {e}")))
    }
}

/// A connection attempt gives up after this long and the next one (after
/// the backoff) starts with fresh timers: a handshake whose first packets
/// were lost (a partition) would otherwise retry at ever longer intervals
/// until the 10 s idle timeout, long after the network came back.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A session whose receiver acknowledged nothing for this long while bytes
/// were in flight is given up and reconnected. QUIC's probe timer doubles
/// with every probe lost and resets only on an acknowledgement, so after a
/// burst of short partitions a live connection can sit silent for many
/// seconds before its idle timeout (10 s); a new connection starts with a
/// fresh timer. Well above any healthy round trip or write delay.
const STALL_TIMEOUT: Duration = Duration::from_secs(4);

/// Resolves (with the reason) once the session looks stalled: bytes in
/// flight and the written position unchanged for [`STALL_TIMEOUT`].
async fn stall_watchdog(shared: &Shared, idx: usize) -> String {
    let mut tick = tokio::time::interval(STALL_TIMEOUT / 8);
    let mut last: Option<(walship_core::Position, Instant)> = None;
    loop {
        tick.tick().await;
        let Some((sent, written)) = lock(&shared.receivers).get(idx).map(|r| (r.sent, r.written)) else {
            continue;
        };
        let now = Instant::now();
        match last {
            Some((w, since)) if w == written && sent > written => {
                if now.duration_since(since) >= STALL_TIMEOUT {
                    return format!(
                        "no acknowledgement for {STALL_TIMEOUT:?} with {} bytes in flight; reconnecting",
                        sent.since(written)
                    );
                }
            }
            _ => last = Some((written, now)),
        }
    }
}

fn target_label(shared: &Shared, idx: usize) -> String {
    shared.opts.targets.get(idx).map(|t| t.label.clone()).unwrap_or_default()
}

/// Control messages from the receiver queued for the streaming loop.
const ACK_QUEUE: usize = 1024;

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

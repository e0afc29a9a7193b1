//! The `walship` command, as a library so that end-to-end tests can build
//! the very same program as a binary of their own (see `tests/`).
pub mod cli;
mod config;
mod demo;
mod restore;
mod status;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::error;
use walship_agent::store_thread::FlushPolicy;
use walship_agent::{Receiver, ReceiverOptions, Sender, SenderOptions, Target};
use walship_net::{TlsFiles, TlsMode};

use crate::cli::{CertCmd, Cli, Command};

/// Runs the command line in `std::env::args` and returns the exit code.
pub fn main() -> ExitCode {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // restore_command: PostgreSQL takes any exit status up to 125 for "no such
    // file" and ends recovery there; a usage error must stop recovery instead.
    let is_restore = raw.iter().skip(1).any(|a| a == "restore-wal");
    let usage_error = if is_restore { ExitCode::from(restore::EXIT_ERROR) } else { ExitCode::from(2) };
    let args = match config::apply(raw) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return usage_error;
        }
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) if is_restore && e.use_stderr() => {
            let _ = e.print();
            return usage_error;
        }
        Err(e) => e.exit(),
    };
    init_tracing(&cli.log);
    let r = match cli.cmd {
        Command::Cert(CertCmd::Init(a)) => cert_init(a),
        Command::Cert(CertCmd::Client(a)) => cert_client(a),
        Command::Receive(a) => runtime(usize::from(a.worker_threads)).and_then(|rt| rt.block_on(receive(a))),
        Command::Send(a) => {
            let threads = a.worker_threads.map_or_else(|| send_threads(a.to.len()), usize::from);
            runtime(threads).and_then(|rt| rt.block_on(send(a)))
        }
        Command::Verify(a) => return verify(a),
        Command::Status(a) => status::run(&a.admin, a.watch, a.interval),
        Command::Wait(a) => return wait(a),
        Command::RestoreWal(a) => return restore::run(&a),
        Command::Demo(a) => {
            return runtime(default_threads()).and_then(|rt| rt.block_on(demo::run(a))).unwrap_or_else(|e| {
                error!("{e:#}");
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            });
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// The sender's default: a thread per receiver connection (each connection's
/// crypto runs in its own task), at most one per CPU. With one receiver, one
/// thread: measured per commit (4 KiB append, fdatasync, wait), 1 thread
/// instead of 2 took the sender from 12–16 to 7.5 context switches and cut
/// its CPU by 15–20 %, at the same throughput (docs/benchmarks.md).
fn send_threads(receivers: usize) -> usize {
    receivers.clamp(1, default_threads())
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

fn runtime(worker_threads: usize) -> Result<tokio::runtime::Runtime> {
    let mut builder = if worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(worker_threads);
        b
    };
    builder.enable_all().build().context("starting the tokio runtime")
}

/// Cancelled on SIGINT or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}

/// Mutual TLS from `--ca/--cert/--key`, or `--insecure` (said loudly).
fn tls(a: &cli::TlsArgs) -> Result<TlsMode> {
    if a.insecure {
        tracing::error!("INSECURE: --insecure is set: peers are not authenticated; do not use it in production");
        return Ok(TlsMode::Insecure);
    }
    match (&a.ca, &a.cert, &a.key) {
        (Some(ca), Some(cert), Some(key)) => {
            Ok(TlsMode::Mutual(TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() }))
        }
        _ => {
            let missing: Vec<&str> =
                [("--ca", a.ca.is_none()), ("--cert", a.cert.is_none()), ("--key", a.key.is_none())]
                    .into_iter()
                    .filter_map(|(f, m)| m.then_some(f))
                    .collect();
            bail!(
                "mutual TLS needs --ca, --cert and --key (missing {}); `walship cert init` makes a set. \
                 (--insecure runs without authentication: anyone who can reach the receiver can write its mirror.)",
                missing.join(", ")
            )
        }
    }
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn cert_client(a: cli::CertClientArgs) -> Result<()> {
    let (cert, key) = walship_net::certs::issue_client(&a.dir, &a.name, a.force)
        .with_context(|| format!("signing a client certificate with the CA in {}", a.dir.display()))?;
    println!("wrote client certificate {:?}", a.name);
    println!("  sender:   --cert {} --key {}", cert.display(), key.display());
    println!("  receiver: --allow-client {}", a.name);
    Ok(())
}

fn cert_init(a: cli::CertInitArgs) -> Result<()> {
    let paths = walship_net::certs::init(&a.dir, &a.names, a.force)
        .with_context(|| format!("creating certificates in {}", a.dir.display()))?;
    println!("wrote CA, server and client certificates to {}", a.dir.display());
    println!(
        "  receiver: --ca {} --cert {} --key {}",
        paths.ca_cert.display(),
        paths.server_cert.display(),
        paths.server_key.display()
    );
    println!(
        "  sender:   --ca {} --cert {} --key {}",
        paths.ca_cert.display(),
        paths.client_cert.display(),
        paths.client_key.display()
    );
    Ok(())
}

async fn receive(a: cli::ReceiveArgs) -> Result<()> {
    let opts = ReceiverOptions {
        listen: a.listen,
        dir: a.dir.clone(),
        tls: tls(&a.tls)?,
        allow_clients: a.allow_clients.clone(),
        max_connections: a.max_connections as usize,
        handshake_timeout: a.handshake_timeout,
        name: a.name.unwrap_or_else(hostname),
        max_payload: a.max_frame,
        flush: FlushPolicy {
            interval: a.flush_interval,
            max_unflushed: a.flush_bytes,
            debug_delay: a.debug_flush_delay,
        },
        apply_command: a.apply_command.clone(),
    };
    let receiver = Receiver::bind(opts).with_context(|| format!("starting the receiver for {}", a.dir.display()))?;
    let shutdown = shutdown_on_signal();
    let admin = start_admin(a.admin_addr, walship_admin::Role::Receiver(receiver.handle()), None, &shutdown).await?;
    receiver.run(shutdown).await.context("receiver failed")?;
    finish_admin(admin).await
}

/// Splits `HOST:PORT` (or `[v6]:PORT`) and resolves it. A name that does not
/// resolve yet (a receiver Service not created yet) is not fatal: the sender
/// resolves `HOST:PORT` again before every connection attempt.
pub(crate) fn parse_target(to: &str, server_name: Option<&str>) -> Result<Target> {
    let (host, port) =
        to.rsplit_once(':').with_context(|| format!("invalid receiver address {to:?}: expected HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("invalid receiver address {to:?}: the host is empty");
    }
    let port: u16 = port.parse().with_context(|| format!("invalid port in receiver address {to:?}"))?;
    let resolved = std::net::ToSocketAddrs::to_socket_addrs(to).map(|mut a| a.next());
    let addr = match resolved {
        Ok(Some(a)) => a,
        Ok(None) | Err(_) => {
            tracing::warn!(
                receiver = to,
                "receiver address does not resolve yet; retrying at every connection attempt"
            );
            std::net::SocketAddr::from(([0, 0, 0, 0], port))
        }
    };
    Ok(Target { addr, server_name: server_name.unwrap_or(host).to_string(), label: to.to_string() })
}

async fn send(a: cli::SendArgs) -> Result<()> {
    let wait_token = a.wait_token_file.as_deref().map(cli::read_token).transpose().map_err(anyhow::Error::msg)?;
    let targets = a.to.iter().map(|t| parse_target(t, a.server_name.as_deref())).collect::<Result<Vec<_>>>()?;
    let source_id = match a.source_id {
        Some(s) => s,
        // The database system identifier, read from the WAL by the sender.
        None if a.format == cli::Format::Postgres => String::new(),
        None => {
            let dir = std::fs::canonicalize(&a.wal_dir).with_context(|| format!("wal dir {}", a.wal_dir.display()))?;
            format!("raw:{}:{}", hostname(), dir.display())
        }
    };
    let opts = SenderOptions {
        wal_dir: a.wal_dir.clone(),
        tailer: walship_source::TailerConfig { pattern: a.pattern, format: a.format.source_format() },
        source_id,
        sender_name: hostname(),
        targets,
        tls: tls(&a.tls)?,
        max_frame: a.max_frame,
        max_inflight: a.max_inflight,
        max_retained: a.max_retained,
        poll_interval: a.poll_interval,
        backoff_initial: a.reconnect_min,
        backoff_max: a.reconnect_max,
        rpo_target: a.rpo_target,
        sync: walship_core::sync::SyncConfig { quorum: a.sync_quorum, level: a.sync_level, timeout: a.sync_timeout.0 },
        debug_ack_log: a.debug_ack_log.clone(),
        mtu_upper_bound: a.mtu_upper_bound,
    };
    let shutdown = shutdown_on_signal();
    if a.format == cli::Format::Postgres && !wait_for_postgres_wal(&opts.wal_dir, &shutdown).await {
        return Ok(());
    }
    let sender = Sender::new(opts).with_context(|| format!("starting the sender for {}", a.wal_dir.display()))?;
    let admin = start_admin(a.admin_addr, walship_admin::Role::Sender(sender.handle()), wait_token, &shutdown).await?;
    sender.run(shutdown).await.context("sender failed")?;
    finish_admin(admin).await
}

/// Waits until `dir` holds PostgreSQL WAL (a sidecar may start before
/// initdb, or before the volume is mounted). Returns false on shutdown.
async fn wait_for_postgres_wal(dir: &std::path::Path, shutdown: &CancellationToken) -> bool {
    let cfg = walship_source::TailerConfig { format: walship_source::SourceFormat::Postgres, ..Default::default() };
    let mut last_log: Option<std::time::Instant> = None;
    loop {
        let why = match walship_source::Tailer::open(dir, cfg.clone()) {
            Ok(t) if t.postgres().is_some() => return true,
            Ok(_) => "no segment with a valid long page header yet".to_string(),
            Err(e) => e.to_string(),
        };
        if last_log.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10)) {
            tracing::warn!(wal_dir = %dir.display(), "waiting for PostgreSQL WAL: {why}");
            last_log = Some(std::time::Instant::now());
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
}

type AdminTask = Option<tokio::task::JoinHandle<Result<(), walship_admin::AdminError>>>;

/// Binds the admin endpoint (failing early on a bad address) and serves it until shutdown.
async fn start_admin(
    addr: Option<std::net::SocketAddr>,
    role: walship_admin::Role,
    wait_token: Option<String>,
    shutdown: &CancellationToken,
) -> Result<AdminTask> {
    let Some(addr) = addr else { return Ok(None) };
    let server = walship_admin::AdminServer::bind(addr, role).await?.with_access(walship_admin::Access { wait_token });
    Ok(Some(tokio::spawn(server.run(shutdown.clone()))))
}

async fn finish_admin(task: AdminTask) -> Result<()> {
    if let Some(t) = task {
        t.await.context("admin endpoint task")?.context("admin endpoint")?;
    }
    Ok(())
}

fn verify(a: cli::VerifyArgs) -> ExitCode {
    let opts = walship_store::verify::VerifyOptions { source_removes_old: a.format == cli::Format::Postgres };
    match walship_store::verify::verify_with(&a.wal_dir, &a.mirror, opts) {
        Ok(report) => {
            println!("{report}");
            if report.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("error: verifying {} against {}: {e}", a.mirror.display(), a.wal_dir.display());
            ExitCode::from(2)
        }
    }
}

/// Why `walship wait --segment NAME` has nothing to wait for, when NAME is a
/// file PostgreSQL archives that is not a segment of the stream.
fn not_a_segment(name: &str) -> Option<&'static str> {
    if name.ends_with(".history") {
        Some("timeline history files stay in pg_wal for good; the sender ships them from there")
    } else if name.ends_with(".backup") {
        Some("backup history files are not needed to restore from the mirror")
    } else if name.ends_with(".partial") {
        Some("a .partial segment of an old timeline is not needed: the new timeline's segment holds its bytes")
    } else {
        None
    }
}

/// `walship wait`: one JSON line; exit 0 durable (or released / skipped for a
/// segment), 3 degraded, 4 timeout, 2 error.
fn wait(a: cli::WaitArgs) -> ExitCode {
    if let Some(why) = a.segment.as_deref().and_then(not_a_segment) {
        let name = a.segment.as_deref().unwrap_or_default();
        println!("{}", serde_json::json!({ "outcome": "skipped", "segment": name, "reason": why }));
        return ExitCode::SUCCESS;
    }
    let mut w = match (a.position, a.segment) {
        (Some(p), _) => walship_client::Wait::position(p.get().to_string()),
        (None, Some(s)) => walship_client::Wait::segment(s),
        (None, None) => walship_client::Wait::end(),
    };
    if let Some(t) = a.timeout {
        w = w.timeout(t);
    }
    let token = match a.token_file.as_deref().map(cli::read_token).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match walship_client::Client::new(&a.admin).with_token(token).wait(w) {
        Ok(r) => {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            match r.outcome {
                walship_client::Outcome::Durable | walship_client::Outcome::Skipped => ExitCode::SUCCESS,
                // The sender logged it at error level and counted it: the
                // primary's disk comes first (archive_command must succeed).
                walship_client::Outcome::Released => ExitCode::SUCCESS,
                walship_client::Outcome::Degraded => ExitCode::from(3),
                walship_client::Outcome::Timeout => ExitCode::from(4),
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

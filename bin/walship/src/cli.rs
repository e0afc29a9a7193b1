//! Command-line interface. Every flag also reads `WALSHIP_<FLAG>`.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "walship",
    version,
    about = "Ship write-ahead log segments to remote receivers over QUIC with mutual TLS"
)]
pub struct Cli {
    /// TOML file with defaults for any flag (keys as flags, top level or in a [send]/[receive]/... table).
    #[arg(long, global = true, env = "WALSHIP_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Log filter (tracing-subscriber EnvFilter syntax), e.g. `info` or `walship_agent=debug`.
    #[arg(long, global = true, env = "WALSHIP_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Certificates for mutual TLS.
    #[command(subcommand)]
    Cert(CertCmd),
    /// Receive WAL from a sender into a durable mirror directory.
    Receive(ReceiveArgs),
    /// Tail a WAL directory and ship it to one or more receivers.
    Send(SendArgs),
    /// Compare a WAL directory with a mirror, byte for byte.
    Verify(VerifyArgs),
    /// Run a writer, a sender and a receiver on loopback, then verify the mirror.
    Demo(DemoArgs),
    /// Show receivers, positions, lag and sync state from an admin endpoint.
    Status(StatusArgs),
    /// Block until a position (default: the WAL end now) is durable on the sender's quorum.
    /// Exit 0 durable (or, for --segment, released / skipped), 3 semi-sync degraded, 4 --timeout passed, 2 error.
    Wait(WaitArgs),
    /// PostgreSQL restore_command: copy segment %f from a mirror to %p.
    /// Exit 0 restored, 1 not in the mirror (yet), 126 error (above 125: PostgreSQL aborts recovery, never skips it).
    RestoreWal(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The mirror directory a receiver writes.
    #[arg(long, env = "WALSHIP_MIRROR")]
    pub mirror: PathBuf,
    /// Serve NAME.partial when the segment is not complete (the last segment in a disaster recovery).
    #[arg(long)]
    pub partial_ok: bool,
    /// The file PostgreSQL asks for (%f).
    pub file: String,
    /// Where to put it (%p).
    pub dest: PathBuf,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Admin endpoint of the sender, HOST:PORT.
    #[arg(long, env = "WALSHIP_ADMIN")]
    pub admin: String,
    /// Position to wait for: decimal bytes or PostgreSQL X/Y (default: the WAL end at the call).
    #[arg(long, conflicts_with = "segment", value_parser = parse_position)]
    pub position: Option<walship_core::Position>,
    /// Wait for this whole segment (e.g. PostgreSQL's archive_command %f). PostgreSQL `.history`, `.backup` and
    /// `.partial` names succeed at once (outcome "skipped"): they are not segments of the stream.
    #[arg(long)]
    pub segment: Option<String>,
    /// Give up after this long (exit 4).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// File holding the sender's wait token (its --wait-token-file).
    #[arg(long, env = "WALSHIP_WAIT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Admin endpoint of a sender or receiver, HOST:PORT.
    #[arg(long, env = "WALSHIP_ADMIN")]
    pub admin: String,
    /// Refresh in place until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Refresh interval with --watch.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
}

#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Create a CA plus a server and a client certificate signed by it.
    Init(CertInitArgs),
    /// Sign one more client certificate with the CA made by `cert init`, named for one sender (for
    /// `receive --allow-client`).
    Client(CertClientArgs),
}

#[derive(Debug, Args)]
pub struct CertClientArgs {
    /// Directory holding ca.pem and ca.key; client-NAME.pem and client-NAME.key are written there.
    #[arg(long, env = "WALSHIP_CERT_DIR")]
    pub dir: PathBuf,
    /// The sender's name: the certificate's common name and DNS name.
    #[arg(long)]
    pub name: String,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CertInitArgs {
    /// Directory to write ca.pem, ca.key, server.pem, server.key, client.pem, client.key into.
    /// (Its own variable: with a receiver's WALSHIP_DIR in the environment, keys must not land in the mirror.)
    #[arg(long, env = "WALSHIP_CERT_DIR")]
    pub dir: PathBuf,
    /// Extra name (DNS name or IP address) for the server certificate; localhost and 127.0.0.1 are always in it.
    #[arg(long = "name", env = "WALSHIP_CERT_NAME", value_delimiter = ',')]
    pub names: Vec<String>,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args, Clone)]
pub struct TlsArgs {
    /// CA certificate (PEM) that signed the peer's certificate.
    #[arg(long, env = "WALSHIP_CA")]
    pub ca: Option<PathBuf>,
    /// This side's certificate (PEM).
    #[arg(long, env = "WALSHIP_CERT")]
    pub cert: Option<PathBuf>,
    /// This side's private key (PEM).
    #[arg(long, env = "WALSHIP_KEY")]
    pub key: Option<PathBuf>,
    /// Run without mutual TLS: the receiver asks for no client certificate and the sender checks no server
    /// certificate (traffic is still encrypted). Anyone who can reach the receiver can write its mirror. For
    /// throw-away setups only; logged at error level.
    #[arg(long, env = "WALSHIP_INSECURE", conflicts_with_all = ["ca", "cert", "key"])]
    pub insecure: bool,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// UDP address to listen on, e.g. 0.0.0.0:7000.
    #[arg(long, env = "WALSHIP_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// Mirror directory (created if missing).
    #[arg(long, env = "WALSHIP_DIR")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// This receiver's name in senders' status (default: the host name).
    #[arg(long, env = "WALSHIP_NAME")]
    pub name: Option<String>,
    /// Largest data frame payload accepted, e.g. 4MiB.
    #[arg(long, env = "WALSHIP_MAX_FRAME", default_value = "4MiB", value_parser = parse_size_u32)]
    pub max_frame: u32,
    /// fdatasync at least this often while bytes are unflushed (it also syncs whenever the queue drains).
    #[arg(long, env = "WALSHIP_FLUSH_INTERVAL", default_value = "20ms", value_parser = parse_duration)]
    pub flush_interval: Duration,
    /// Serve /metrics, /v1/lag, /healthz and the status page on this TCP address; a bare port (9188) means
    /// 127.0.0.1:9188. Use 0.0.0.0:9188 to let Prometheus scrape it from elsewhere.
    #[arg(long, env = "WALSHIP_ADMIN_ADDR", value_parser = parse_admin_addr)]
    pub admin_addr: Option<std::net::SocketAddr>,
    /// Accept only client certificates carrying one of these names (common name or DNS name; see
    /// `walship cert client`). Default: any certificate signed by --ca.
    #[arg(long = "allow-client", env = "WALSHIP_ALLOW_CLIENT", value_delimiter = ',', conflicts_with = "insecure")]
    pub allow_clients: Vec<String>,
    /// Connections served at once (handshaking or streaming); more are refused before any TLS work.
    #[arg(long, env = "WALSHIP_MAX_CONNECTIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// A connection must complete TLS and send its hello within this long, or it is closed.
    #[arg(long, env = "WALSHIP_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// fdatasync once this many bytes are unflushed, even under continuous load.
    #[arg(long, env = "WALSHIP_FLUSH_BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub flush_bytes: u64,
    /// Run this for every completed segment (sh -c; %f = file name, %p = path); only its success
    /// moves the applied position, e.g. 'cp %p /archive/%f'. Failures are logged and retried.
    #[arg(long, env = "WALSHIP_APPLY_COMMAND")]
    pub apply_command: Option<String>,
    /// Threads for the network and the admin endpoint (the disk has a thread of its own). One is
    /// enough for a connection and spares a thread hand-off per frame.
    #[arg(long, env = "WALSHIP_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: u16,
    /// Test hook: sleep this long before each flush that follows a drained queue (proves a slow disk shows in lag).
    #[arg(long, hide = true, default_value = "0ms", value_parser = parse_duration)]
    pub debug_flush_delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Any append-only segment files, ordered by name.
    Raw,
    /// A PostgreSQL pg_wal directory (13–17): LSN positions, shipped up to the last complete, CRC-checked record.
    Postgres,
}

impl Format {
    /// The tailer's format.
    pub fn source_format(self) -> walship_source::SourceFormat {
        match self {
            Format::Raw => walship_source::SourceFormat::Raw,
            Format::Postgres => walship_source::SourceFormat::Postgres,
        }
    }
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Directory holding the WAL segments.
    #[arg(long, env = "WALSHIP_WAL_DIR")]
    pub wal_dir: PathBuf,
    /// WAL format.
    #[arg(long, env = "WALSHIP_FORMAT", value_enum, default_value = "raw")]
    pub format: Format,
    /// Receiver address HOST:PORT; give it once per receiver.
    #[arg(long = "to", env = "WALSHIP_TO", value_delimiter = ',', required = true)]
    pub to: Vec<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Name to verify in the receiver's certificate (default: the host part of --to).
    #[arg(long, env = "WALSHIP_SERVER_NAME")]
    pub server_name: Option<String>,
    /// Identity of this WAL source; a mirror refuses any other. Default: raw:<hostname>:<canonical wal dir>; for
    /// --format postgres, the database system identifier (a different value is refused).
    #[arg(long, env = "WALSHIP_SOURCE_ID")]
    pub source_id: Option<String>,
    /// Only file names matching this glob are segments (default: every file not starting with '.').
    #[arg(long, env = "WALSHIP_PATTERN", value_parser = parse_glob)]
    pub pattern: Option<glob::Pattern>,
    /// Largest number of sent bytes a receiver has not yet acknowledged as written, e.g. 64MiB.
    #[arg(long, env = "WALSHIP_MAX_INFLIGHT", default_value = "64MiB", value_parser = parse_size)]
    pub max_inflight: u64,
    /// Largest data frame payload, e.g. 256KiB.
    #[arg(long, env = "WALSHIP_MAX_FRAME", default_value = "128KiB", value_parser = parse_size_u32)]
    pub max_frame: u32,
    /// Directory poll interval, a safety net behind inotify.
    #[arg(long, env = "WALSHIP_POLL_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// First reconnect delay; doubles per failed attempt.
    #[arg(long, env = "WALSHIP_RECONNECT_MIN", default_value = "100ms", value_parser = parse_duration)]
    pub reconnect_min: Duration,
    /// Threads for tailing, the connections and the admin endpoint [default: one per receiver,
    /// at most the number of CPUs]. Fewer threads hand work across fewer threads per commit.
    #[arg(long, env = "WALSHIP_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,
    /// Serve /metrics, /v1/lag, /healthz and the status page on this TCP address; a bare port (9187) means
    /// 127.0.0.1:9187.
    #[arg(long, env = "WALSHIP_ADMIN_ADDR", value_parser = parse_admin_addr)]
    pub admin_addr: Option<std::net::SocketAddr>,
    /// File holding a token that `POST /v1/wait` must present (Authorization: Bearer; `walship wait
    /// --token-file`). Recommended whenever the admin endpoint listens beyond loopback.
    #[arg(long, env = "WALSHIP_WAIT_TOKEN_FILE")]
    pub wait_token_file: Option<PathBuf>,
    /// Recovery point objective: count the seconds RPO exposure is within and over it (metrics).
    #[arg(long, env = "WALSHIP_RPO_TARGET", value_parser = parse_duration)]
    pub rpo_target: Option<Duration>,
    /// Receivers that must have a position before a wait returns durable (0 = async).
    #[arg(long, env = "WALSHIP_SYNC_QUORUM", default_value_t = 0)]
    pub sync_quorum: u32,
    /// What "have" means: write, flush (fdatasync) or apply.
    #[arg(long, env = "WALSHIP_SYNC_LEVEL", default_value = "flush", value_parser = parse_level)]
    pub sync_level: walship_core::sync::AckLevel,
    /// How long a wait may block before semi-sync degrades to async; `never` waits forever.
    #[arg(long, env = "WALSHIP_SYNC_TIMEOUT", default_value = "10s", value_parser = parse_sync_timeout)]
    pub sync_timeout: SyncTimeout,
    /// Longest reconnect delay.
    #[arg(long, env = "WALSHIP_RECONNECT_MAX", default_value = "5s", value_parser = parse_duration)]
    pub reconnect_max: Duration,
    /// Retention guard for `walship wait --segment` as archive_command: once more than this much WAL (e.g. 8GiB)
    /// is not yet flushed on the quorum, segment waits succeed anyway (outcome "released", logged at error level,
    /// counted in walship_retention_released_segments_total) so that the primary can recycle them. Default: no limit.
    #[arg(long, env = "WALSHIP_MAX_RETAINED", value_parser = parse_size)]
    pub max_retained: Option<u64>,
    /// Test hook: append one line `<receiver label> <flushed position>` to this file for every
    /// ack that advances a receiver's flushed position, written before the ack is acted on (the
    /// crash-torture test checks that no acknowledged flush is ever lost). Not for production.
    #[arg(long, hide = true)]
    pub debug_ack_log: Option<PathBuf>,
    /// Largest UDP payload QUIC's path MTU discovery probes for (1200-65000) [default: 65000 to a
    /// loopback receiver, 1452 to others]; e.g. 8952 on a jumbo-frame network. Discovery falls back
    /// by itself where the path is smaller.
    #[arg(long, env = "WALSHIP_MTU_UPPER_BOUND", value_parser = clap::value_parser!(u16).range(1200..=65000))]
    pub mtu_upper_bound: Option<u16>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The source WAL directory.
    #[arg(long, env = "WALSHIP_WAL_DIR")]
    pub wal_dir: PathBuf,
    /// The mirror directory.
    #[arg(long, env = "WALSHIP_MIRROR")]
    pub mirror: PathBuf,
    /// WAL format.
    #[arg(long, env = "WALSHIP_FORMAT", value_enum, default_value = "raw")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long the synthetic writer writes.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Writer rate in bytes per second, e.g. 32MiB.
    #[arg(long, default_value = "32MiB", value_parser = parse_size)]
    pub rate: u64,
    /// Segment size of the synthetic WAL.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub segment_size: u64,
    /// Keep the demo's directories instead of deleting them.
    #[arg(long)]
    pub keep: bool,
}

/// Parses sizes: `123`, binary units `64K`/`64KiB`, `64M`/`64MiB`, `1G`/`1GiB`,
/// `1T`/`1TiB`, and decimal units `100KB`, `100MB`, `1GB`, `1TB` (10^3 steps).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}: expected e.g. 65536, 64KiB, 64MiB or 1GiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "invalid size unit in {s:?}: use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB for powers of 1000)"
            ));
        }
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
}

fn parse_size_u32(s: &str) -> Result<u32, String> {
    let v = parse_size(s)?;
    u32::try_from(v).map_err(|_| format!("size {s:?} is too large (at most 4GiB - 1)"))
}

/// `--admin-addr`: `HOST:PORT`, or a bare `PORT` / `:PORT` on 127.0.0.1 (the
/// admin endpoint is local unless asked otherwise).
pub fn parse_admin_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    let t = s.trim();
    let port = t.strip_prefix(':').unwrap_or(t);
    if let Ok(p) = port.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], p)));
    }
    t.parse().map_err(|_| format!("invalid admin address {s:?}: expected a port (9187) or HOST:PORT (0.0.0.0:9187)"))
}

/// Reads a token file (for `--wait-token-file` / `--token-file`): its
/// contents without surrounding whitespace, which must not be empty.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    let t = std::fs::read_to_string(path).map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    let t = t.trim();
    if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("token file {} must hold one token without spaces", path.display()));
    }
    Ok(t.to_string())
}

/// Parses durations like `500ms`, `10s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e} (e.g. 500ms, 10s, 2m)"))
}

/// `--sync-timeout`: a duration, or `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncTimeout(pub Option<Duration>);

fn parse_sync_timeout(s: &str) -> Result<SyncTimeout, String> {
    if s.trim() == "never" {
        return Ok(SyncTimeout(None));
    }
    parse_duration(s).map(|d| SyncTimeout(Some(d)))
}

fn parse_level(s: &str) -> Result<walship_core::sync::AckLevel, String> {
    s.trim().parse()
}

fn parse_position(s: &str) -> Result<walship_core::Position, String> {
    s.parse().map_err(|e: walship_core::ParsePositionError| e.to_string())
}

fn parse_glob(s: &str) -> Result<glob::Pattern, String> {
    glob::Pattern::new(s).map_err(|e| format!("invalid pattern {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size_u32("4GiB").is_err());
        // Decimal units are powers of 1000 (the benchmark harness's sizes too).
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("256KiB"), Ok(256 << 10));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("2 parsecs").is_err());
        assert!(parse_size("GiB").is_err());
    }

    #[test]
    fn sync_flags() {
        assert_eq!(parse_sync_timeout("never"), Ok(SyncTimeout(None)));
        assert_eq!(parse_sync_timeout("500ms"), Ok(SyncTimeout(Some(Duration::from_millis(500)))));
        assert!(parse_sync_timeout("sometimes").is_err());
        assert!(parse_level("fsync").is_err());
        assert_eq!(parse_position("0/16B3"), Ok(walship_core::Position(0x16B3)));
    }

    #[test]
    fn admin_addresses_default_to_loopback() {
        assert_eq!(parse_admin_addr("9187"), Ok("127.0.0.1:9187".parse().expect("addr")));
        assert_eq!(parse_admin_addr(":9187"), Ok("127.0.0.1:9187".parse().expect("addr")));
        assert_eq!(parse_admin_addr("0.0.0.0:9187"), Ok("0.0.0.0:9187".parse().expect("addr")));
        assert!(parse_admin_addr("localhost:x").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

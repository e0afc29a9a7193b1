//! Helpers for the end-to-end tests: temp environments with certificates,
//! walship processes with their logs, a WAL writer, and ways to wait for
//! what a process reports.
//!
//! Waiting is always for something a process or the mirror reports (a log
//! line, the control file's durable position), polled with a deadline;
//! nothing sleeps a fixed time and hopes.
pub mod browser;
pub mod chaos;
pub mod http;
pub mod pg;
pub mod proc;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use proc::Proc;
pub use writer::Writer;

/// Path of the walship program under test. Cargo builds the package's
/// `walship-e2e` binary before its integration tests and puts it next to
/// the `deps/` directory that holds the test executables.
pub fn walship_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CARGO_BIN_EXE_walship-e2e") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target profile dir");
    let bin = dir.join("walship-e2e");
    assert!(bin.exists(), "{} is missing: run the tests with cargo test / cargo nextest", bin.display());
    bin
}

/// A temp dir with certificates (`walship cert init`), a WAL dir and a mirror dir path.
#[derive(Debug)]
pub struct Env {
    pub root: tempfile::TempDir,
    pub certs: PathBuf,
    pub wal: PathBuf,
    pub mirror: PathBuf,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Env {
        let root = tempfile::Builder::new().prefix("walship-e2e-").tempdir().expect("temp dir");
        let certs = root.path().join("certs");
        let wal = root.path().join("wal");
        let mirror = root.path().join("mirror");
        std::fs::create_dir_all(&wal).expect("wal dir");
        let out = std::process::Command::new(walship_bin())
            .args(["cert", "init", "--dir"])
            .arg(&certs)
            .output()
            .expect("run walship cert init");
        assert!(out.status.success(), "cert init failed: {}", String::from_utf8_lossy(&out.stderr));
        Env { root, certs, wal, mirror }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// `--ca --cert --key` for the receiver (server certificate).
    pub fn server_tls(&self) -> Vec<String> {
        tls_args(&self.certs, "server")
    }

    /// `--ca --cert --key` for the sender (client certificate).
    pub fn client_tls(&self) -> Vec<String> {
        tls_args(&self.certs, "client")
    }

    /// Starts a receiver on `listen` (e.g. `127.0.0.1:0`) and waits until it listens.
    pub fn receiver(&self, name: &str, listen: &str) -> Proc {
        self.receiver_with(name, listen, &[])
    }

    /// Starts a receiver on `listen` with `extra` arguments and waits until it listens.
    pub fn receiver_with(&self, name: &str, listen: &str, extra: &[&str]) -> Proc {
        let mut args = vec!["receive".to_string(), "--listen".into(), listen.into(), "--dir".into()];
        args.push(self.mirror.display().to_string());
        args.extend(self.server_tls());
        args.extend(extra.iter().map(|s| s.to_string()));
        let p = Proc::spawn(name, &args, &self.path(&format!("{name}.log")));
        p.wait_log("receiver listening", Duration::from_secs(30));
        p
    }

    /// Runs `walship verify` on this environment's WAL and mirror.
    pub fn verify(&self) -> std::process::Output {
        std::process::Command::new(walship_bin())
            .args(["verify", "--wal-dir"])
            .arg(&self.wal)
            .arg("--mirror")
            .arg(&self.mirror)
            .output()
            .expect("run walship verify")
    }

    /// Starts a sender shipping `self.wal` to `to`.
    pub fn sender(&self, name: &str, to: &str, extra: &[&str]) -> Proc {
        let mut args = vec!["send".to_string(), "--wal-dir".into(), self.wal.display().to_string()];
        args.extend(["--to".into(), to.into()]);
        args.extend(self.client_tls());
        args.extend(["--reconnect-min".into(), "50ms".into(), "--reconnect-max".into(), "500ms".into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        Proc::spawn(name, &args, &self.path(&format!("{name}.log")))
    }
}

/// `--ca --cert --key` for `which` ("server" or "client") in `dir`.
pub fn tls_args(dir: &Path, which: &str) -> Vec<String> {
    vec![
        "--ca".into(),
        dir.join("ca.pem").display().to_string(),
        "--cert".into(),
        dir.join(format!("{which}.pem")).display().to_string(),
        "--key".into(),
        dir.join(format!("{which}.key")).display().to_string(),
    ]
}

/// The mirror's durable position as recorded on disk (0 when not a mirror yet).
pub fn mirror_durable(mirror: &Path) -> u64 {
    walship_store::read_durable(mirror).map(|p| p.get()).unwrap_or(0)
}

/// Waits until the mirror's control file says `target` bytes are durable.
pub fn wait_durable(mirror: &Path, target: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let d = mirror_durable(mirror);
        if d >= target {
            return;
        }
        assert!(Instant::now() < deadline, "mirror durable at {d} after {timeout:?}, waiting for {target}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until every non-empty file of `wal` is a complete segment (final
/// name, not `.partial`) in `mirror`. The durable position can reach the
/// end of a segment a moment before the segment's rename.
pub fn wait_complete(wal: &Path, mirror: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let wanted: Vec<String> = file_crcs(wal, |_| true).into_iter().filter(|f| f.1 > 0).map(|f| f.0).collect();
    loop {
        let missing: Vec<&String> = wanted.iter().filter(|n| !mirror.join(n.as_str()).exists()).collect();
        if missing.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "segments not complete on the mirror after {timeout:?}: {missing:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// CRC-32 of every regular file in `dir` matching `keep`, by name.
pub fn file_crcs(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<(String, u64, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir") {
        let e = e.expect("dir entry");
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().expect("file type").is_file() || !keep(&name) {
            continue;
        }
        let bytes = std::fs::read(e.path()).expect("read file");
        out.push((name, bytes.len() as u64, crc32fast::hash(&bytes)));
    }
    out.sort();
    out
}

/// Extracts `key=value` from a log line.
pub fn field(line: &str, key: &str) -> Option<String> {
    let pat = format!("{key}=");
    let i = line.find(&pat)? + pat.len();
    Some(line[i..].split_whitespace().next()?.trim_matches('"').to_string())
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `timeout`
/// naming `what`.
pub fn eventually<V>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<V>) -> V {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

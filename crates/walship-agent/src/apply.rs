//! The receiver's apply step: `--apply-command CMD` runs for every
//! completed segment, in order, and only its success moves the applied
//! position (e.g. "copy into the standby's archive").
//!
//! CMD runs under `sh -c` with `%f` replaced by the segment's file name and
//! `%p` by its path (PostgreSQL's archive_command conventions), and with
//! `WALSHIP_SEGMENT`, `WALSHIP_SEGMENT_PATH` and `WALSHIP_SEGMENT_END` in
//! its environment. A failure is logged with the command's stderr and
//! retried with capped backoff; later segments wait (apply is in order).
//! The applied position is kept in `walship.applied` (replaced atomically),
//! so a restarted receiver re-queues exactly the complete segments after it.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info};
use walship_core::Position;

use crate::AgentError;
use crate::backoff::Backoff;
use crate::receiver::lock;

/// The file holding the applied position.
pub const APPLIED_FILE: &str = "walship.applied";

/// Counters of the apply step.
#[derive(Debug, Clone, Default)]
pub struct ApplyStats {
    pub applied: Position,
    pub failures: u64,
    pub last_error: Option<String>,
}

struct Job {
    name: String,
    end: Position,
}

/// A running apply worker.
pub struct Applier {
    jobs: mpsc::Sender<Job>,
    applied: watch::Receiver<Position>,
    stats: Arc<Mutex<ApplyStats>>,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier").field("applied", &*self.applied.borrow()).finish_non_exhaustive()
    }
}

impl Applier {
    /// Starts the worker for the mirror in `dir` and queues every complete
    /// segment after the recorded applied position.
    pub fn start(dir: &Path, command: String) -> Result<Applier, AgentError> {
        let applied = read_applied(dir)?;
        let (tx, rx) = watch::channel(applied);
        let (jobs, queue) = mpsc::channel();
        let stats = Arc::new(Mutex::new(ApplyStats { applied, ..ApplyStats::default() }));
        if let Some(state) = walship_store::control::load(dir)? {
            for s in state.segments {
                if let Some(end) = s.end.filter(|e| *e > applied.get()) {
                    let _ = jobs.send(Job { name: s.name, end: Position(end) });
                }
            }
        }
        let (dir, st) = (dir.to_path_buf(), stats.clone());
        std::thread::Builder::new()
            .name("walship-apply".into())
            .spawn(move || run(&dir, &command, applied, queue, &tx, &st))
            .map_err(|e| AgentError::Io { what: "starting the apply thread", source: e })?;
        Ok(Applier { jobs, applied: rx, stats })
    }

    /// Queues a segment that was just completed.
    pub fn submit(&self, name: &str, end: Position) {
        let _ = self.jobs.send(Job { name: name.to_string(), end });
    }

    /// The applied position, as it moves.
    pub fn applied(&self) -> watch::Receiver<Position> {
        self.applied.clone()
    }

    /// Counters.
    pub fn stats(&self) -> ApplyStats {
        lock(&self.stats).clone()
    }
}

fn run(
    dir: &Path,
    command: &str,
    mut applied: Position,
    queue: mpsc::Receiver<Job>,
    tx: &watch::Sender<Position>,
    stats: &Mutex<ApplyStats>,
) {
    for job in queue {
        if job.end <= applied {
            continue;
        }
        let path = dir.join(&job.name);
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        loop {
            match apply_one(command, &job.name, &path, job.end) {
                Ok(()) => {
                    if let Err(e) = write_applied(dir, job.end) {
                        error!("apply: cannot record the applied position: {e}");
                    }
                    applied = job.end;
                    let mut st = lock(stats);
                    st.applied = applied;
                    if st.last_error.take().is_some() {
                        info!(segment = %job.name, "apply command succeeded after earlier failures");
                    }
                    drop(st);
                    tx.send_replace(applied);
                    break;
                }
                Err(msg) => {
                    let delay = backoff.next_delay();
                    error!(segment = %job.name, retry_in = ?delay, "apply command failed: {msg}");
                    let mut st = lock(stats);
                    st.failures += 1;
                    st.last_error = Some(msg);
                    drop(st);
                    std::thread::sleep(delay);
                }
            }
        }
    }
}

fn apply_one(command: &str, name: &str, path: &Path, end: Position) -> Result<(), String> {
    let cmd = command.replace("%f", name).replace("%p", &path.display().to_string());
    let out = Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .env("WALSHIP_SEGMENT", name)
        .env("WALSHIP_SEGMENT_PATH", path)
        .env("WALSHIP_SEGMENT_END", end.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = stderr.trim().chars().rev().take(500).collect::<Vec<_>>().into_iter().rev().collect();
    Err(format!("`{cmd}` exited with {}: {tail}", out.status))
}

fn applied_path(dir: &Path) -> PathBuf {
    dir.join(APPLIED_FILE)
}

fn read_applied(dir: &Path) -> Result<Position, AgentError> {
    match std::fs::read_to_string(applied_path(dir)) {
        Ok(s) => s
            .trim()
            .parse::<Position>()
            .map_err(|e| AgentError::Config(format!("{} is corrupt: {e}", applied_path(dir).display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Position::ZERO),
        Err(e) => Err(AgentError::Io { what: "reading walship.applied", source: e }),
    }
}

/// tmp + fsync + rename + directory fsync.
fn write_applied(dir: &Path, pos: Position) -> std::io::Result<()> {
    let tmp = dir.join(format!("{APPLIED_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{pos}")?;
    f.sync_data()?;
    std::fs::rename(&tmp, applied_path(dir))?;
    std::fs::File::open(dir)?.sync_all()
}

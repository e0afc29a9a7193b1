//! Child processes: the PG* environment. Logged child processes and the
//! walship binary are shared with the other process benchmarks ([`crate::procs`]).
use super::*;

pub(crate) use crate::procs::{Child, tail, walship_binary};

/// A client program without the caller's PG* environment (PGDATA, PGPORT...).
pub(crate) fn pg_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir("/");
    cmd
}

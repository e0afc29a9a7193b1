//! `walship restore-wal --mirror DIR %f %p`: PostgreSQL's `restore_command`.
//!
//! Copies the complete segment (or history file) `%f` from the mirror to
//! `%p` (written to a temporary file, fsynced, then renamed, so PostgreSQL
//! never reads half a file). Exit status as PostgreSQL expects: 0 when the
//! file was restored, 1 when the mirror does not have it (yet) — a normal
//! answer during recovery — and 2 for a usage or I/O error. With
//! `--partial-ok`, the in-progress `%f.partial` is served when no complete
//! file exists: the last segment of a disaster recovery.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::RestoreArgs;

pub fn run(a: &RestoreArgs) -> ExitCode {
    let name = match walship_core::SegmentName::new(&a.file) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("walship restore-wal: refusing {:?}: {e}", a.file);
            return ExitCode::from(2);
        }
    };
    let complete = a.mirror.join(name.as_str());
    let partial = a.mirror.join(name.partial_name());
    let source = if complete.is_file() {
        complete
    } else if a.partial_ok && partial.is_file() {
        eprintln!(
            "walship restore-wal: {name} is not complete in the mirror; serving {} (--partial-ok)",
            partial.display()
        );
        partial
    } else {
        // Not an error for PostgreSQL: it asks for files that do not exist yet.
        eprintln!("walship restore-wal: {name} is not in {}", a.mirror.display());
        return ExitCode::from(1);
    };
    match copy_durably(&source, &a.dest) {
        Ok(n) => {
            eprintln!("walship restore-wal: restored {name} ({n} bytes) to {}", a.dest.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("walship restore-wal: copying {} to {}: {e}", source.display(), a.dest.display());
            ExitCode::from(2)
        }
    }
}

fn copy_durably(from: &Path, to: &Path) -> std::io::Result<u64> {
    let bytes = std::fs::read(from)?;
    let file_name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "wal".into());
    let tmp: PathBuf = to.with_file_name(format!(".{file_name}.walship-tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, to)?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(bytes.len() as u64)
}

//! `walship restore-wal --mirror DIR %f %p`: PostgreSQL's `restore_command`.
//!
//! Copies the complete segment (or history file) `%f` from the mirror to
//! `%p` (written to a temporary file, fsynced, then renamed, so PostgreSQL
//! never reads half a file). Exit status as PostgreSQL expects: 0 when the
//! file was restored, 1 when the mirror does not have it (yet) — a normal
//! answer during recovery — and 126 for a usage or I/O error (an unreadable
//! mirror, a missing mirror directory): PostgreSQL treats any status up to
//! 125 as "no such file" and would end recovery early, losing every later
//! commit, while a status above 125 makes it stop with an error. With
//! `--partial-ok`, the in-progress `%f.partial` is served when no complete
//! file exists: the last segment of a disaster recovery.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::RestoreArgs;

/// Exit status for errors: above 125, so PostgreSQL aborts recovery instead of ending it.
pub const EXIT_ERROR: u8 = 126;

/// Whether `path` is a file: `Ok(false)` only when it does not exist; any
/// other failure (permissions, I/O) is an error, never "not there".
fn is_file(path: &Path) -> std::io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(true),
        Ok(_) => Err(std::io::Error::other("not a regular file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn run(a: &RestoreArgs) -> ExitCode {
    let fail = |what: String| {
        eprintln!("walship restore-wal: {what}");
        ExitCode::from(EXIT_ERROR)
    };
    let name = match walship_core::SegmentName::new(&a.file) {
        Ok(n) => n,
        Err(e) => return fail(format!("refusing {:?}: {e}", a.file)),
    };
    // A missing or unreadable mirror is an error, not "no such segment".
    if let Err(e) = std::fs::read_dir(&a.mirror) {
        return fail(format!("cannot read the mirror {}: {e}", a.mirror.display()));
    }
    let complete = a.mirror.join(name.as_str());
    let partial = a.mirror.join(name.partial_name());
    let (has_complete, has_partial) = match (is_file(&complete), is_file(&partial)) {
        (Ok(c), Ok(p)) => (c, p),
        (Err(e), _) => return fail(format!("{}: {e}", complete.display())),
        (_, Err(e)) => return fail(format!("{}: {e}", partial.display())),
    };
    let source = if has_complete {
        complete
    } else if a.partial_ok && has_partial {
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
        Err(e) => fail(format!("copying {} to {}: {e}", source.display(), a.dest.display())),
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

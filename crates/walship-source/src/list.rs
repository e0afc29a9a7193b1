//! Which files of the WAL directory are segments.
//!
//! A segment is a regular file (or a symlink to one) whose name does not start
//! with `.` (hidden and temporary files, e.g. an rsync or editor in progress),
//! matches the configured glob when there is one, and is a valid
//! [`SegmentName`]. Names that pass the first two tests but are not valid
//! segment names (not UTF-8, too long, ending in `.partial`) are skipped with
//! one warning per name.
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::path::Path;

use walship_core::SegmentName;

use crate::error::SourceError;

/// Lists segment names, sorted, skipping names below `floor`.
#[derive(Debug, Default)]
pub(crate) struct Lister {
    pattern: Option<glob::Pattern>,
    /// Invalid names already warned about (only those still present, so the set stays bounded).
    warned: HashSet<OsString>,
}

impl Lister {
    pub(crate) fn new(pattern: Option<glob::Pattern>) -> Lister {
        Lister { pattern, warned: HashSet::new() }
    }

    /// The segments of `dir` whose name is at least `floor`, in name order.
    pub(crate) fn list(&mut self, dir: &Path, floor: Option<&SegmentName>) -> Result<Vec<SegmentName>, SourceError> {
        let list_err = |source| SourceError::ListDir { dir: dir.to_path_buf(), source };
        let mut names = Vec::new();
        let mut invalid_now: Vec<OsString> = Vec::new();
        for entry in fs::read_dir(dir).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            let os_name = entry.file_name();
            if os_name.as_encoded_bytes().first() == Some(&b'.') {
                continue;
            }
            if let Some(pattern) = &self.pattern {
                // A name that is not UTF-8 cannot match a pattern.
                if !os_name.to_str().is_some_and(|s| pattern.matches(s)) {
                    continue;
                }
            }
            // The type comes from readdir on most file systems (no extra syscall). An entry
            // that vanished in the meantime is simply not listed.
            let Ok(ft) = entry.file_type() else { continue };
            let is_file = ft.is_file() || (ft.is_symlink() && fs::metadata(entry.path()).is_ok_and(|m| m.is_file()));
            if !is_file {
                continue;
            }
            let name = match os_name.to_str().map(SegmentName::new) {
                Some(Ok(name)) => name,
                Some(Err(e)) => {
                    if !self.warned.contains(&os_name) {
                        tracing::warn!(dir = %dir.display(), error = %e, "skipping file that is not a valid segment name");
                    }
                    invalid_now.push(os_name);
                    continue;
                }
                None => {
                    if !self.warned.contains(&os_name) {
                        tracing::warn!(dir = %dir.display(), name = ?os_name, "skipping file whose name is not utf-8");
                    }
                    invalid_now.push(os_name);
                    continue;
                }
            };
            if floor.is_some_and(|f| name < *f) {
                continue;
            }
            names.push(name);
        }
        self.warned = invalid_now.into_iter().collect();
        names.sort_unstable();
        Ok(names)
    }
}

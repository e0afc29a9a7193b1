//! The journal of changes not yet durable, and how a cut rolls them back.
use super::*;

#[derive(Debug)]
pub(super) struct Journal {
    pub(super) root: PathBuf,
    pub(super) canonical: Option<PathBuf>,
    /// `None`: exact rollback; `Some`: the harsh mix's generator state.
    pub(super) seed: Option<u64>,
    pub(super) seq: u64,
    pub(super) entries: Vec<(u64, Entry)>,
}

#[derive(Debug)]
pub(super) enum Entry {
    /// Restoring means: length back to `old_len`, then `old` written at `off`.
    /// `span` is how many bytes the change touched; `resize`: a length change
    /// (`set_len`, truncating create), not a write.
    Data {
        id: (u64, u64),
        path: PathBuf,
        old_len: u64,
        off: u64,
        old: Vec<u8>,
        span: u64,
        resize: bool,
    },
    Created {
        dir: PathBuf,
        path: PathBuf,
    },
    Renamed {
        dir: PathBuf,
        from: PathBuf,
        to: PathBuf,
        displaced: Option<Vec<u8>>,
    },
    Removed {
        dir: PathBuf,
        path: PathBuf,
        content: Vec<u8>,
    },
}

impl Entry {
    pub(super) fn dir(&self) -> Option<&Path> {
        match self {
            Entry::Data { .. } => None,
            Entry::Created { dir, .. } | Entry::Renamed { dir, .. } | Entry::Removed { dir, .. } => Some(dir),
        }
    }

    pub(super) fn span(&self) -> u64 {
        match self {
            Entry::Data { span, .. } => *span,
            _ => 0,
        }
    }
}

/// What happens to one unsynced write at the cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Restore,
    Keep,
    Zero,
    Torn,
}

impl Journal {
    pub(super) fn covers(&self, path: &Path) -> bool {
        path.starts_with(&self.root) || self.canonical.as_ref().is_some_and(|c| path.starts_with(c))
    }

    pub(super) fn next(&mut self) -> u64 {
        let Some(s) = self.seed.as_mut() else { return 0 };
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    pub(super) fn roll_back(&mut self) -> CutReport {
        let mut report = CutReport::default();
        let entries = std::mem::take(&mut self.entries);
        let names = entries.iter().filter(|(_, e)| e.dir().is_some()).count();
        // Harsh: the oldest `keep_names` name changes reached the disk.
        let keep_names = match self.seed {
            Some(_) => usize::try_from(self.next() % (names as u64 + 1)).unwrap_or(0),
            None => 0,
        };
        let mut name_idx = names;
        for (_, entry) in entries.into_iter().rev() {
            let r = match entry {
                Entry::Data { id, path, old_len, off, old, span, resize } => {
                    report.data_changes += 1;
                    let fate = match self.seed {
                        None => Fate::Restore,
                        // A length change either reached the disk or did not.
                        Some(_) if resize => [Fate::Restore, Fate::Keep][(self.next() % 2) as usize],
                        Some(_) => [Fate::Restore, Fate::Keep, Fate::Zero, Fate::Torn][(self.next() % 4) as usize],
                    };
                    match fate {
                        Fate::Keep => report.kept += 1,
                        Fate::Zero => report.zeroed += 1,
                        Fate::Torn => report.torn += 1,
                        Fate::Restore => {}
                    }
                    let lost = match fate {
                        Fate::Keep => 0,
                        Fate::Torn => span - span / 2,
                        _ => span,
                    };
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    let r = undo_data(id, &path, old_len, off, &old, span, fate);
                    if r.is_ok() && lost > 0 {
                        report.bytes_rolled_back += lost;
                        *report.bytes_by_file.entry(name).or_default() += lost;
                    }
                    r.map_err(|e| format!("restoring {}: {e}", path.display()))
                }
                other => {
                    report.name_changes += 1;
                    name_idx -= 1;
                    if name_idx < keep_names {
                        continue;
                    }
                    report.names_undone += 1;
                    undo_name(other)
                }
            };
            if let Err(e) = r {
                report.errors.push(e);
            }
        }
        report
    }
}

fn undo_data(id: (u64, u64), path: &Path, old_len: u64, off: u64, old: &[u8], span: u64, fate: Fate) -> io::Result<()> {
    if fate == Fate::Keep {
        return Ok(());
    }
    let Some(path) = locate(path, id)? else {
        // The file is gone (its creation was undone): nothing to restore.
        return Ok(());
    };
    let f = OpenOptions::new().write(true).open(&path)?;
    let len = f.metadata()?.len();
    match fate {
        Fate::Restore => {
            f.set_len(old_len)?;
            f.write_all_at(old, off)?;
        }
        Fate::Zero => {
            // The blocks were allocated but the data never landed.
            let end = (off + span).min(len.max(old_len));
            f.write_all_at(&vec![0u8; usize::try_from(end.saturating_sub(off)).unwrap_or(0)], off)?;
        }
        Fate::Torn => {
            // The first half landed; the rest is what was there before (or nothing).
            let mid = off + span / 2;
            if len > old_len.max(mid) {
                f.set_len(old_len.max(mid))?;
            }
            let from = usize::try_from(mid - off).unwrap_or(0).min(old.len());
            f.write_all_at(&old[from..], mid)?;
        }
        Fate::Keep => {}
    }
    Ok(())
}

fn undo_name(entry: Entry) -> Result<(), String> {
    let r = match &entry {
        Entry::Created { path, .. } => fs::remove_file(path).or_else(not_found_ok),
        Entry::Renamed { from, to, displaced, .. } => fs::rename(to, from).and_then(|()| match displaced {
            Some(content) => write_new(to, content),
            None => Ok(()),
        }),
        Entry::Removed { path, content, .. } => write_new(path, content),
        Entry::Data { .. } => Ok(()),
    };
    r.map_err(|e| format!("undoing {entry:?}: {e}").chars().take(300).collect())
}

fn write_new(path: &Path, content: &[u8]) -> io::Result<()> {
    let f = OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
    f.write_all_at(content, 0)
}

fn not_found_ok(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(e) }
}

/// Where the file with inode `id` is now: `path`, or another name in its
/// directory (it was renamed and the rename is durable).
fn locate(path: &Path, id: (u64, u64)) -> io::Result<Option<PathBuf>> {
    match fs::symlink_metadata(path) {
        Ok(m) if self::id(&m) == id => return Ok(Some(path.to_path_buf())),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let Some(dir) = path.parent() else { return Ok(None) };
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.metadata().is_ok_and(|m| self::id(&m) == id) {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

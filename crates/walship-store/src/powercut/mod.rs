//! Simulated power loss (cargo feature `powercut`, and the store's own tests).
//!
//! SIGKILL keeps the page cache: a killed receiver leaves every byte it
//! wrote on disk, synced or not, so killing it cannot show that an
//! acknowledged flush survives a power failure while unsynced bytes do not.
//! This layer can. All of the store's file I/O goes through `fsio`; while
//! the layer is *armed* for a directory it journals every change in that
//! directory that is not yet durable:
//!
//! * `pwrite`: the old bytes of the range, and the old length if the file grew;
//! * `set_len` (and `create` with truncation): the old length and the bytes cut off;
//! * `create`, `rename`, `remove`: the directory entry change (with the
//!   content of a file that a rename replaced or a remove deleted).
//!
//! `fdatasync`/`fsync` of a file retires that file's data entries (by inode,
//! so a renamed file keeps its journal); `fsync` of a directory retires that
//! directory's name changes. Only what was journaled *before* the sync
//! started is retired.
//!
//! [`cut`] is the power failing *now*: it waits for the I/O calls in flight
//! to return (an op either completes before the cut or fails after it),
//! makes every later I/O in the directory fail with EIO — so nothing can
//! become durable or be acknowledged afterwards — and rolls the journal back
//! on disk, newest first. [`arm`] rolls every change back exactly;
//! [`arm_harsh`] draws, per unsynced write from a seeded generator, one of:
//! old bytes back, new bytes kept (they may have reached the disk), the
//! range zeroed, or a torn write (first half new, rest old), and lets a
//! random prefix of the unsynced name changes survive (a journaling file
//! system commits them in order). [`reset`] disarms and re-enables I/O for
//! the restart.
//!
//! Unarmed, a hook costs one relaxed atomic load. One directory at a time
//! can be armed (the state is process-global: the cut must reach the
//! receiver's store thread).
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

const OFF: u8 = 0;
const ARMED: u8 = 1;
const CUT: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(OFF);
/// I/O in the armed directory holds this shared; [`cut`] takes it exclusively.
static GATE: RwLock<()> = RwLock::new(());
static JOURNAL: Mutex<Option<Journal>> = Mutex::new(None);
/// [`cut_after`]: I/O calls left before the power fails by itself (0: no trip).
static TRIP: AtomicU64 = AtomicU64::new(0);
static TRIP_REPORT: Mutex<Option<CutReport>> = Mutex::new(None);

/// What [`cut`] rolled back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Unsynced data changes found in the journal.
    pub data_changes: usize,
    /// Bytes whose unsynced contents were lost (restored to old bytes,
    /// zeroed, torn, or cut off), over all files.
    pub bytes_rolled_back: u64,
    /// The same, by file name.
    pub bytes_by_file: BTreeMap<String, u64>,
    /// Unsynced name changes (create, rename, remove) found in the journal.
    pub name_changes: usize,
    /// Name changes undone.
    pub names_undone: usize,
    /// Harsh mode: how many unsynced writes kept their new bytes, were
    /// zeroed, or were torn.
    pub kept: usize,
    pub zeroed: usize,
    pub torn: usize,
    /// Rollback steps that failed (a test should insist this is empty).
    pub errors: Vec<String>,
}

/// Arms the layer for `root` (the mirror directory, spelled as the mirror
/// is opened with): every later change under it is journaled until synced,
/// and [`cut`] rolls the unsynced ones back exactly.
pub fn arm(root: &Path) {
    arm_with(root, None);
}

/// Like [`arm`], but [`cut`] leaves a seeded mix of old bytes, new bytes,
/// zeros and torn writes in the unsynced ranges.
pub fn arm_harsh(root: &Path, seed: u64) {
    arm_with(root, Some(seed));
}

fn arm_with(root: &Path, seed: Option<u64>) {
    let _gate = GATE.write().unwrap_or_else(|p| p.into_inner());
    let canonical = fs::canonicalize(root).ok();
    *journal() =
        Some(Journal { root: root.to_path_buf(), canonical, seed: seed.map(|s| s | 1), seq: 0, entries: Vec::new() });
    STATE.store(ARMED, Ordering::SeqCst);
}

/// Whether the layer is armed (and not cut).
pub fn is_armed() -> bool {
    STATE.load(Ordering::SeqCst) == ARMED
}

/// Whether the power is cut (I/O under the armed directory fails).
pub fn is_cut() -> bool {
    STATE.load(Ordering::SeqCst) == CUT
}

/// Unsynced data bytes journaled right now (for tests that want to cut
/// while something is at stake).
pub fn unsynced_bytes() -> u64 {
    journal().as_ref().map_or(0, |j| j.entries.iter().map(|(_, e)| e.span()).sum())
}

/// The power fails now: waits for I/O in flight, fails every later I/O
/// under the armed directory with EIO, and rolls the unsynced changes back
/// on disk, newest first. Without [`arm`], only the failing part applies.
pub fn cut() -> CutReport {
    let _gate = GATE.write().unwrap_or_else(|p| p.into_inner());
    STATE.store(CUT, Ordering::SeqCst);
    let mut j = journal();
    match j.as_mut() {
        Some(j) => j.roll_back(),
        None => CutReport::default(),
    }
}

/// Makes the power fail by itself at the `n`-th I/O call (1-based) under
/// the armed directory from now on: that call and every later one fail
/// with EIO, in the middle of whatever store operation made them. Its
/// report is kept for [`take_trip_report`].
pub fn cut_after(n: u64) {
    TRIP.store(n, Ordering::SeqCst);
}

/// The report of the cut that [`cut_after`] tripped, if it tripped.
pub fn take_trip_report() -> Option<CutReport> {
    TRIP_REPORT.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// Power is back: disarms the layer, forgets the journal and lets I/O through again.
pub fn reset() {
    let _gate = GATE.write().unwrap_or_else(|p| p.into_inner());
    *journal() = None;
    TRIP.store(0, Ordering::SeqCst);
    STATE.store(OFF, Ordering::SeqCst);
}

fn journal() -> MutexGuard<'static, Option<Journal>> {
    JOURNAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Held by an fsio call on a path under the armed directory, for the whole call.
pub(crate) struct Gate {
    _read: RwLockReadGuard<'static, ()>,
}

/// Entered by every fsio call that touches `path`: `Err(EIO)` after a cut
/// (under the armed directory), `Some` when armed for it, `None` otherwise.
#[inline]
pub(crate) fn enter(path: &Path) -> io::Result<Option<Gate>> {
    if STATE.load(Ordering::Relaxed) == OFF {
        return Ok(None);
    }
    enter_slow(path)
}

#[cold]
fn enter_slow(path: &Path) -> io::Result<Option<Gate>> {
    if STATE.load(Ordering::SeqCst) == ARMED
        && TRIP.load(Ordering::SeqCst) > 0
        && journal().as_ref().is_some_and(|j| j.covers(path))
        && TRIP.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| t.checked_sub(1)) == Ok(1)
    {
        let report = cut();
        *TRIP_REPORT.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
    }
    let read = GATE.read().unwrap_or_else(|p| p.into_inner());
    let in_scope = journal().as_ref().is_some_and(|j| j.covers(path));
    match STATE.load(Ordering::SeqCst) {
        CUT if in_scope => Err(io::Error::from_raw_os_error(EIO)),
        ARMED if in_scope => Ok(Some(Gate { _read: read })),
        _ => Ok(None),
    }
}

/// EIO (5 on every Linux architecture), without a libc dependency.
const EIO: i32 = 5;

/// Before `pwrite(data.len() bytes at off)`.
pub(crate) fn before_write(_g: &Gate, file: &File, path: &Path, off: u64, len: u64) -> io::Result<()> {
    let meta = file.metadata()?;
    let old_len = meta.len();
    let end = off.saturating_add(len).min(old_len);
    let old = read_range(file, off, end.saturating_sub(off))?;
    push(Entry::Data { id: id(&meta), path: path.to_path_buf(), old_len, off, old, span: len, resize: false });
    Ok(())
}

/// Before `set_len(len)`.
pub(crate) fn before_set_len(_g: &Gate, file: &File, path: &Path, len: u64) -> io::Result<()> {
    let meta = file.metadata()?;
    let old_len = meta.len();
    if old_len == len {
        return Ok(());
    }
    let old = read_range(file, len, old_len.saturating_sub(len))?;
    let span = len.abs_diff(old_len);
    push(Entry::Data { id: id(&meta), path: path.to_path_buf(), old_len, off: len, old, span, resize: true });
    Ok(())
}

/// Before opening `path` with `create` (and `truncate`).
pub(crate) fn before_create(_g: &Gate, path: &Path, truncate: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if truncate && meta.len() > 0 => {
            let old = fs::read(path)?;
            let span = old.len() as u64;
            let (path, old_len) = (path.to_path_buf(), meta.len());
            push(Entry::Data { id: id(&meta), path, old_len, off: 0, old, span, resize: true });
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            push(Entry::Created { dir: parent(path), path: path.to_path_buf() });
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Before renaming `from` to `to`.
pub(crate) fn before_rename(_g: &Gate, from: &Path, to: &Path) -> io::Result<()> {
    let displaced = match fs::read(to) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    push(Entry::Renamed { dir: parent(to), from: from.to_path_buf(), to: to.to_path_buf(), displaced });
    Ok(())
}

/// Before removing `path`.
pub(crate) fn before_remove(_g: &Gate, path: &Path) -> io::Result<()> {
    match fs::read(path) {
        Ok(content) => {
            push(Entry::Removed { dir: parent(path), path: path.to_path_buf(), content });
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The journal's sequence number now: a sync started now retires what is below it.
pub(crate) fn mark(_g: &Gate) -> u64 {
    journal().as_ref().map_or(0, |j| j.seq)
}

/// After a successful fdatasync/fsync of `file` that started at `mark`.
pub(crate) fn synced_file(_g: &Gate, file: &File, mark: u64) -> io::Result<()> {
    let file_id = id(&file.metadata()?);
    if let Some(j) = journal().as_mut() {
        j.entries.retain(|(seq, e)| *seq >= mark || !matches!(e, Entry::Data { id, .. } if *id == file_id));
    }
    Ok(())
}

/// After a successful fsync of directory `dir` that started at `mark`.
pub(crate) fn synced_dir(_g: &Gate, dir: &Path, mark: u64) {
    if let Some(j) = journal().as_mut() {
        j.entries.retain(|(seq, e)| *seq >= mark || e.dir().is_none_or(|d| d != dir));
    }
}

fn push(e: Entry) {
    if let Some(j) = journal().as_mut() {
        j.entries.push((j.seq, e));
        j.seq += 1;
    }
}

fn id(meta: &fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn read_range(file: &File, off: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
    file.read_exact_at(&mut buf, off)?;
    Ok(buf)
}

mod journal;
#[cfg(test)]
mod tests;

use journal::{Entry, Journal};

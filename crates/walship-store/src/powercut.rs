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

#[derive(Debug)]
struct Journal {
    root: PathBuf,
    canonical: Option<PathBuf>,
    /// `None`: exact rollback; `Some`: the harsh mix's generator state.
    seed: Option<u64>,
    seq: u64,
    entries: Vec<(u64, Entry)>,
}

#[derive(Debug)]
enum Entry {
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
    fn dir(&self) -> Option<&Path> {
        match self {
            Entry::Data { .. } => None,
            Entry::Created { dir, .. } | Entry::Renamed { dir, .. } | Entry::Removed { dir, .. } => Some(dir),
        }
    }

    fn span(&self) -> u64 {
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
    fn covers(&self, path: &Path) -> bool {
        path.starts_with(&self.root) || self.canonical.as_ref().is_some_and(|c| path.starts_with(c))
    }

    fn next(&mut self) -> u64 {
        let Some(s) = self.seed.as_mut() else { return 0 };
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    fn roll_back(&mut self) -> CutReport {
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

#[cfg(test)]
mod tests {
    //! The layer bites (unsynced bytes and names are gone after a cut), and a
    //! seeded model: random store operations, a cut at a random point, and
    //! recovery must keep every acknowledged byte and discard the torn tail.
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use walship_core::{Position, SegmentName};

    use super::*;
    use crate::{Identity, Mirror, StoreError};

    /// The layer is process-global: its tests take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn name(s: &str) -> SegmentName {
        SegmentName::new(s).unwrap()
    }

    fn raw() -> Identity {
        Identity { source_id: "src".into(), format: "raw".into(), segment_size: 0 }
    }

    fn is_eio(e: &StoreError) -> bool {
        matches!(e, StoreError::Io { source, .. } if source.raw_os_error() == Some(EIO))
    }

    #[test]
    fn unsynced_bytes_and_names_are_gone_after_a_cut() {
        let _s = serial();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        arm(dir);
        let (mut m, _) = Mirror::open(dir).unwrap();
        m.bind(&raw()).unwrap();
        m.start_segment(&name("s1"), Position(0)).unwrap();
        m.write(Position(0), b"hello").unwrap();
        assert_eq!(m.flush().unwrap(), Position(5));
        m.write(Position(5), b"world").unwrap();
        // A name change that no directory fsync made durable.
        let side = dir.join("side");
        let f = crate::fsio::create(&side, false, true).unwrap();
        crate::fsio::pwrite_all(&f, &side, b"abc", 0).unwrap();
        crate::fsio::sync_data(&f, &side).unwrap();
        crate::fsio::rename(&side, &dir.join("side2")).unwrap();
        assert_eq!(std::fs::read(dir.join("s1.partial")).unwrap(), b"helloworld", "in the page cache");
        assert!(unsynced_bytes() >= 5);

        let report = cut();
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(std::fs::read(dir.join("s1.partial")).unwrap(), b"hello", "unsynced bytes rolled back");
        assert_eq!(report.bytes_by_file.get("s1.partial"), Some(&5), "{report:?}");
        assert!(!dir.join("side2").exists() && !side.exists(), "unsynced rename and creation undone");
        assert_eq!(report.names_undone, 2, "{report:?}");
        // Nothing can become durable after the cut.
        let err = m.write(Position(10), b"again").unwrap_err();
        assert!(is_eio(&err), "{err}");
        drop(m);
        assert!(Mirror::open(dir).is_err(), "no I/O until the power is back");
        reset();
        let (m, rep) = Mirror::open(dir).unwrap();
        assert_eq!((m.durable_pos(), rep.discarded_bytes), (Position(5), 0));
    }

    #[test]
    fn synced_changes_survive_a_cut() {
        let _s = serial();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        arm_harsh(dir, 7);
        let (mut m, _) = Mirror::open(dir).unwrap();
        m.bind(&raw()).unwrap();
        m.start_segment(&name("s1"), Position(0)).unwrap();
        m.write(Position(0), b"0123").unwrap();
        m.complete_segment(Position(4)).unwrap();
        m.write_file(&name("h.history"), b"hist").unwrap();
        assert_eq!(unsynced_bytes(), 0, "everything was synced");
        let report = cut();
        assert_eq!((report.data_changes, report.name_changes), (0, 0), "{report:?}");
        drop(m);
        reset();
        let (m, _) = Mirror::open(dir).unwrap();
        assert_eq!(m.durable_pos(), Position(4));
        assert_eq!(std::fs::read(dir.join("s1")).unwrap(), b"0123");
        assert_eq!(std::fs::read(dir.join("h.history")).unwrap(), b"hist");
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// The stream's byte at position `p`.
    fn byte(p: u64) -> u8 {
        (p.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 29) as u8
    }

    fn bytes(from: u64, len: u64) -> Vec<u8> {
        (from..from + len).map(byte).collect()
    }

    #[derive(Debug, Default)]
    struct Figures {
        cuts: u64,
        rolled_back: u64,
        discarded: u64,
        beyond_ack: u64,
        kept: u64,
        zeroed: u64,
        torn: u64,
    }

    struct ModelSeg {
        name: String,
        start: u64,
        end: Option<u64>,
    }

    /// One case: random operations, a cut, recovery, the checks.
    fn case(seed: u64, fig: &mut Figures) {
        let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let harsh = !seed.is_multiple_of(3);
        if harsh {
            arm_harsh(dir, seed)
        } else {
            arm(dir)
        }
        // Raw segments of any length, or fixed 4 KiB ones.
        let size = if seed.is_multiple_of(2) { 0 } else { 4096 };
        let id = Identity { segment_size: size, ..raw() };
        let (mut m, _) = Mirror::open(dir).unwrap();
        m.bind(&id).unwrap();
        let first = 8192 * (1 + rng.below(4));
        let mut segs: Vec<ModelSeg> = Vec::new();
        let mut side: Vec<(String, Vec<u8>)> = Vec::new();
        let mut acked = 0u64;
        let ops = 5 + rng.below(40);
        // Between two operations, or inside one: at the k-th I/O call.
        let cut_at = rng.below(ops + 1);
        let inside = seed % 4 == 1;
        if inside {
            cut_after(1 + rng.below(80));
        }
        let ctx = |what: &str| {
            let mode = if harsh { "harsh" } else { "exact" };
            format!("seed {seed} ({mode}, size {size}, cut {}): {what}", if inside { "inside" } else { "between" })
        };
        // An error is expected only once the power is cut.
        let ok = |r: Result<(), StoreError>| match r {
            Ok(()) => true,
            Err(_) if is_cut() => false,
            Err(e) => panic!("{}", ctx(&format!("unexpected failure before the cut: {e}"))),
        };
        for i in 0..ops {
            if i == cut_at && !inside {
                break;
            }
            let open = segs.last().is_some_and(|s| s.end.is_none());
            let done = match rng.below(14) {
                0..=1 if !open => {
                    let start = segs.last().and_then(|s| s.end).unwrap_or(first);
                    let n = format!("{:08X}", segs.len() + 1);
                    let r = ok(m.start_segment(&name(&n), Position(start)));
                    if r && segs.is_empty() {
                        acked = start;
                    }
                    if r {
                        segs.push(ModelSeg { name: n, start, end: None });
                    } else if m.resume_point().segment.as_ref().is_some_and(|s| s.name.as_str() == n) {
                        // Failed after its first-segment setup: it is in the table anyway.
                        segs.push(ModelSeg { name: n, start, end: None });
                    }
                    r
                }
                2..=7 if open => {
                    let w = m.written_pos().0;
                    let seg_start = segs.last().map_or(0, |s| s.start);
                    let mut len = 1 + rng.below(700);
                    if size > 0 {
                        len = len.min(size - (w - seg_start));
                    }
                    len == 0 || ok(m.write(Position(w), &bytes(w, len)))
                }
                8..=10 if open => match m.flush() {
                    Ok(p) => {
                        acked = acked.max(p.0);
                        true
                    }
                    r => ok(r.map(|_| ())),
                },
                11..=12 if open => {
                    let w = m.written_pos().0;
                    let seg = segs.last_mut().unwrap();
                    if size > 0 && w - seg.start != size {
                        continue;
                    }
                    let r = ok(m.complete_segment(Position(w)));
                    // Even a failed completion may have ended the segment on disk.
                    seg.end = Some(w);
                    if r {
                        acked = acked.max(m.durable_pos().0);
                    }
                    r
                }
                13 if !segs.is_empty() => {
                    let n = format!("{:08X}.history", side.len() + 1);
                    let contents = format!("history {seed} {i}").into_bytes();
                    let r = ok(m.write_file(&name(&n), &contents));
                    if r {
                        side.push((n, contents));
                    }
                    r
                }
                _ => true,
            };
            if !done {
                break;
            }
        }
        let written = m.written_pos().0;
        let report = match take_trip_report() {
            Some(r) => r,
            None => cut(),
        };
        assert!(report.errors.is_empty(), "{}", ctx(&format!("{report:?}")));
        fig.cuts += 1;
        fig.rolled_back += report.bytes_rolled_back;
        fig.kept += report.kept as u64;
        fig.zeroed += report.zeroed as u64;
        fig.torn += report.torn as u64;
        // After the cut nothing moves forward: a write fails, a flush acks nothing new.
        if segs.last().is_some_and(|s| s.end.is_none()) && (size == 0 || written < segs[segs.len() - 1].start + size) {
            let err = m.write(Position(written), &[1]).unwrap_err();
            let poisoned = matches!(err, StoreError::Poisoned(_));
            assert!(is_eio(&err) || poisoned, "{}", ctx(&format!("write after the cut: {err}")));
        }
        if let Ok(p) = m.flush() {
            assert!(p.0 <= acked.max(first), "{}", ctx(&format!("flush after the cut acked {p}")));
        }
        drop(m);
        reset();

        let (mut m, rec) = Mirror::open(dir).unwrap_or_else(|e| panic!("{}", ctx(&format!("recovery failed: {e}"))));
        let durable = rec.durable_pos.0;
        fig.discarded += rec.discarded_bytes;
        assert!(durable >= acked, "{}", ctx(&format!("recovered durable {durable} < acknowledged {acked}")));
        assert!(durable <= written.max(first), "{}", ctx(&format!("durable {durable} past written {written}")));
        fig.beyond_ack += u64::from(durable > acked);
        // The bytes below the durable position are the stream's.
        for s in segs.iter().filter(|s| s.start <= durable) {
            let fin = dir.join(&s.name);
            let path = if fin.exists() { fin } else { dir.join(format!("{}.partial", s.name)) };
            if s.start == durable && !path.exists() {
                // Started at the durable position but never recorded: recovery removed it.
                continue;
            }
            let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}", ctx(&format!("{}: {e}", path.display()))));
            let upto = s.end.map_or(durable, |e| e.min(durable));
            let keep = (upto - s.start) as usize;
            assert!(got.len() >= keep, "{}", ctx(&format!("{} is {} bytes, needs {keep}", s.name, got.len())));
            assert!(
                got[..keep] == bytes(s.start, keep as u64)[..],
                "{}",
                ctx(&format!("{} differs below durable", s.name))
            );
            // The torn tail past the durable position is gone.
            if s.end.is_none_or(|e| e > durable) {
                let tail = &got[keep..];
                assert!(
                    if size == 0 { tail.is_empty() } else { tail.iter().all(|b| *b == 0) && got.len() as u64 == size },
                    "{}",
                    ctx(&format!("{}: {} bytes past durable {durable} survived recovery", s.name, tail.len()))
                );
            }
        }
        let partials = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".partial"))
            .count();
        assert!(partials <= 1, "{}", ctx(&format!("{partials} .partial files after recovery")));
        for (n, contents) in &side {
            assert_eq!(&std::fs::read(dir.join(n)).unwrap(), contents, "{}", ctx(&format!("side file {n}")));
        }
        // The mirror carries on from the durable position.
        if size == 0 && !segs.is_empty() {
            let rp = m.resume_point();
            if rp.segment.as_ref().is_none_or(|s| s.complete) {
                m.start_segment(&name("FFFFFFFF"), Position(durable)).unwrap();
            }
            m.write(Position(durable), &bytes(durable, 100)).unwrap();
            assert_eq!(m.flush().unwrap(), Position(durable + 100), "{}", ctx("flush after recovery"));
        }
    }

    #[test]
    fn random_operations_then_a_power_cut_keep_every_acknowledged_byte() {
        let _s = serial();
        let cases: u64 = std::env::var("WALSHIP_POWERCUT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
        let base: u64 = std::env::var("WALSHIP_POWERCUT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
        let mut fig = Figures::default();
        for seed in base..base + cases {
            case(seed, &mut fig);
        }
        println!("powercut model: {fig:?}");
        // The cuts hit live data, and recovery had torn tails to discard.
        assert!(fig.rolled_back > 0 && fig.discarded > 0, "{fig:?}");
        assert!(fig.kept > 0 && fig.zeroed > 0 && fig.torn > 0, "every harsh fate drawn: {fig:?}");
    }
}

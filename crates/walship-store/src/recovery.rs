//! Opening a mirror and recovering its torn tail.
//!
//! # Policy: "discard past durable"
//!
//! The control file's `durable_pos` is the truth. Bytes past it may be in the
//! segment files (written, maybe even synced, but never recorded); they are
//! discarded, and the sender resends them from the durable position. Nothing
//! at or below the durable position is ever changed; if those bytes are
//! missing the mirror refuses to open ([`StoreError::Inconsistent`]) instead
//! of guessing.
//!
//! Steps, in order:
//! 1. A leftover `walship.control.tmp` (crash while replacing the control
//!    file) is removed.
//! 2. The control file is loaded and checked; a newer durable position for
//!    the current segment in `walship.pos` (see [`crate::posfile`]) wins. If there is none, the mirror is
//!    empty — unless the directory holds segment files, which is refused
//!    ([`StoreError::MissingControl`]).
//! 3. For the current segment of a PostgreSQL mirror, when bytes past that
//!    position are not zero and the segment follows a complete one (see
//!    [`crate::posfile`] for why `walship.pos` may be older than the last
//!    flush there): the WAL is walked from the previous segment's first
//!    record, as PostgreSQL's recovery does, and the end of the last
//!    complete record whose page headers and CRC check becomes the durable
//!    position if it is further (after an fdatasync, since those bytes may
//!    have been in the page cache only).
//! 4. For the current (incomplete) segment: if only the final `NAME` exists
//!    (crash between the rename and the control update), it is renamed back to
//!    `NAME.partial`; the sender will re-complete it. The `.partial` is then cut
//!    back to `durable_pos - start` bytes (raw format) or zeroed past that
//!    point while keeping its full size (fixed-size segments).
//! 5. Every other `*.partial` (a segment started after the last control
//!    update) is removed.
//!
//! Afterwards the written position equals the durable position.
use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use walship_core::{Position, SegmentName};

use crate::control::{self, CONTROL_FILE, CONTROL_TMP, ControlState, control_path};
use crate::fsio::{
    crc_range, end_of_nonzero, failpoint, remove_file, rename, set_len, sync_data, sync_dir, zero_range,
};
use crate::mirror::{Current, Seg, wal_checkable};
use crate::posfile::{POS_FILE, PosFile};
use crate::{Mirror, StoreError};

/// What recovery found and did, for logging.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The durable position the mirror resumes from.
    pub durable_pos: Position,
    /// Bytes past the durable position that were thrown away (for fixed-size
    /// segments: the zeroed span up to the last non-zero byte).
    pub discarded_bytes: u64,
    /// Every change made to the directory, in order, as sentences.
    pub actions: Vec<String>,
}

impl Mirror {
    /// Opens the mirror in `dir` (creating the directory if missing) and
    /// recovers it with the "discard past durable" policy (see the module docs).
    pub fn open(dir: &Path) -> Result<(Mirror, RecoveryReport), StoreError> {
        fs::create_dir_all(dir).map_err(StoreError::io("create directory", dir))?;
        let lock = lock_dir(dir)?;
        let mut report = RecoveryReport::default();
        let mut dir_changed = false;

        let tmp = dir.join(CONTROL_TMP);
        match remove_file(&tmp) {
            Ok(()) => {
                report.actions.push(format!("removed leftover {CONTROL_TMP}"));
                dir_changed = true;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("remove", tmp)(e)),
        }

        let state = match control::load(dir)? {
            Some(s) => s,
            None => {
                refuse_segments_without_control(dir)?;
                ControlState::empty()
            }
        };
        let (segments, mut durable) = parse_table(&state, &control_path(dir))?;
        let size = state.identity.as_ref().map_or(0, |i| i.segment_size);
        let pos = PosFile::open(dir)?;
        if let (Some(rec), Some(seg)) = (pos.read()?, segments.last())
            && seg.end.is_none()
            && rec.segment_start == seg.start.0
            && rec.durable_pos > durable.0
            && (size == 0 || rec.durable_pos - seg.base(size).0 <= size)
        {
            report.actions.push(format!(
                "durable position {} from {POS_FILE} (the control file recorded {durable})",
                rec.durable_pos
            ));
            durable = Position(rec.durable_pos);
        }

        let current = match segments.last() {
            Some(seg) if seg.end.is_none() => {
                let checkable = state.identity.as_ref().is_some_and(|id| wal_checkable(id, &segments));
                // The previous segment, complete, holds the start of a record continued into this one.
                let prev = segments.len().checked_sub(2).map(|i| dir.join(segments[i].file_name(size)));
                let prev = prev.filter(|_| checkable);
                let mut cur = CurrentSeg { seg, size, prev, durable };
                let current = recover_current(dir, &mut cur, &mut report, &mut dir_changed)?;
                durable = cur.durable;
                Some(current)
            }
            _ => None,
        };
        let keep = current.as_ref().map(|c| c.path.clone());
        // Complete segments whose timeline ended inside them keep their `.partial` name.
        let short: Vec<PathBuf> =
            segments.iter().filter(|s| s.is_short(size)).map(|s| dir.join(s.file_name(size))).collect();

        for entry in fs::read_dir(dir).map_err(StoreError::io("list", dir))? {
            let entry = entry.map_err(StoreError::io("list", dir))?;
            let path = entry.path();
            let is_partial = entry.file_name().to_str().is_some_and(|n| n.ends_with(".partial"));
            if !is_partial || keep.as_ref() == Some(&path) || short.contains(&path) {
                continue;
            }
            let len = entry.metadata().map(|m| m.len()).map_err(StoreError::io("stat", &path))?;
            failpoint("remove").map_err(StoreError::io("remove", &path))?;
            remove_file(&path).map_err(StoreError::io("remove", &path))?;
            report.discarded_bytes += len;
            report.actions.push(format!("removed {} ({len} bytes): not in the control file", path.display()));
            dir_changed = true;
        }
        if dir_changed {
            sync_dir(dir)?;
        }

        report.durable_pos = durable;
        let mirror = Mirror {
            pos,
            _lock: lock,
            dir: dir.to_path_buf(),
            identity: state.identity,
            epoch: state.epoch,
            segments,
            current,
            written: durable,
            durable,
            dirty: false,
            poisoned: None,
        };
        Ok((mirror, report))
    }
}

/// With no control file, any segment-like file means positions are unknown.
pub(crate) fn refuse_segments_without_control(dir: &Path) -> Result<(), StoreError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(StoreError::io("list", dir))? {
        let entry = entry.map_err(StoreError::io("list", dir))?;
        let is_file = entry.file_type().map_err(StoreError::io("stat", entry.path()))?.is_file();
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_file && !name.starts_with('.') && !name.starts_with("walship.") {
            found.push(name);
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    let more = found.len().saturating_sub(5);
    found.truncate(5);
    let mut files = found.join(", ");
    if more > 0 {
        files.push_str(&format!(" and {more} more"));
    }
    Err(StoreError::MissingControl { dir: dir.to_path_buf(), files })
}

/// Parses the control file's table into typed records and checks that it is
/// one the mirror could have written.
pub(crate) fn parse_table(state: &ControlState, path: &Path) -> Result<(Vec<Seg>, Position), StoreError> {
    let corrupt = |reason: String| StoreError::CorruptControl { path: path.to_path_buf(), reason };
    let size = state.identity.as_ref().map_or(0, |i| i.segment_size);
    if state.identity.is_none() && !state.segments.is_empty() {
        return Err(corrupt("segments recorded but no source identity".into()));
    }
    let mut segments: Vec<Seg> = Vec::with_capacity(state.segments.len());
    let mut names = HashSet::new();
    for (i, r) in state.segments.iter().enumerate() {
        let name = SegmentName::new(&r.name)
            .map_err(|e| corrupt(format!("segment table entry {i} has an invalid name: {e}")))?;
        if r.name == CONTROL_FILE || r.name == CONTROL_TMP || !names.insert(r.name.clone()) {
            return Err(corrupt(format!("segment table entry {i}: name {:?} is reserved or repeated", r.name)));
        }
        if let Some(prev) = segments.last()
            && prev.end != Some(Position(r.start))
        {
            return Err(corrupt(format!(
                "segment {} starts at position {} but the previous one, {}, ends at {:?}",
                r.name, r.start, prev.name, prev.end
            )));
        }
        if let Some(end) = r.end
            && (end < r.start
                || (size > 0 && end - crate::mirror::file_base(Position(r.start), size).0 > size)
                || r.crc32.is_none())
        {
            return Err(corrupt(format!("complete segment {} has a bad extent {}..{end} or no crc", r.name, r.start)));
        }
        segments.push(Seg { name, start: Position(r.start), end: r.end.map(Position), crc32: r.crc32 });
    }
    let durable = Position(state.durable_pos);
    if let Some(last) = segments.last() {
        let ok = match last.end {
            Some(end) => durable == end,
            None => durable >= last.start && (size == 0 || durable.since(last.base(size)) <= size),
        };
        if !ok {
            return Err(corrupt(format!("durable position {durable} does not fall in the last segment {}", last.name)));
        }
    }
    Ok((segments, durable))
}

/// The current segment as recovery sees it.
struct CurrentSeg<'a> {
    seg: &'a Seg,
    size: u64,
    /// When its WAL can be walked to find how far it is valid
    /// ([`wal_checkable`]): the previous segment's file.
    prev: Option<PathBuf>,
    /// The recorded durable position; recovery may raise it to the end of
    /// the valid WAL.
    durable: Position,
}

/// Brings the current segment's `.partial` back to exactly the durable point.
fn recover_current(
    dir: &Path,
    cur: &mut CurrentSeg<'_>,
    report: &mut RecoveryReport,
    dir_changed: &mut bool,
) -> Result<Current, StoreError> {
    let (seg, size) = (cur.seg, cur.size);
    let path = dir.join(seg.name.partial_name());
    let final_path = dir.join(seg.name.as_str());
    match (exists(&path)?, exists(&final_path)?) {
        (true, false) => {}
        (false, true) => {
            rename(&final_path, &path)?;
            *dir_changed = true;
            report.actions.push(format!(
                "renamed {} back to {}: it was completed but the control file was not updated",
                final_path.display(),
                path.display()
            ));
        }
        (true, true) => {
            return Err(StoreError::Inconsistent {
                path: final_path,
                reason: format!("both it and {} exist for the current segment", seg.name.partial_name()),
            });
        }
        (false, false) => {
            return Err(StoreError::Inconsistent {
                path,
                reason: format!(
                    "missing, but the control file records it as the current segment (durable position {})",
                    cur.durable
                ),
            });
        }
    }
    failpoint("open").map_err(StoreError::io("open", &path))?;
    let file = OpenOptions::new().read(true).write(true).open(&path).map_err(StoreError::io("open", &path))?;
    let len = file.metadata().map_err(StoreError::io("stat", &path))?.len();
    let durable = cur.durable;
    let (first, mut keep) = (seg.start.since(seg.base(size)), durable.since(seg.base(size)));
    if len < keep {
        return Err(StoreError::Inconsistent {
            path,
            reason: format!("{len} bytes long but the durable position {durable} needs {keep} bytes"),
        });
    }
    let mut changed = false;
    if size > 0 {
        let dirty_end = end_of_nonzero(&file, &path, keep, len)?;
        // `walship.pos` may be older than the last flush (it is not synced for
        // such segments): the WAL records past it that check are durable data.
        if let Some(prev) = &cur.prev
            && dirty_end > keep
            && let Some(end) = wal_valid_end(prev, &file, &path, seg.base(size), size, len, report)?
            && end > durable
        {
            report.actions.push(format!(
                "durable position {end} from the WAL records in {} (the position recorded was {durable})",
                path.display()
            ));
            cur.durable = end;
            keep = end.since(seg.base(size));
            // They may have reached only the page cache before a crash.
            changed = true;
        }
        let durable = cur.durable;
        if dirty_end > keep {
            zero_range(&file, &path, keep, dirty_end)?;
            report.discarded_bytes += dirty_end - keep;
            report.actions.push(format!(
                "zeroed {} bytes of {} past the durable position {durable}",
                dirty_end - keep,
                path.display()
            ));
            changed = true;
        }
        if len != size {
            set_len(&file, &path, size)?;
            report.actions.push(format!("resized {} from {len} to the segment size {size}", path.display()));
            changed = true;
        }
    } else if len > keep {
        set_len(&file, &path, keep)?;
        report.discarded_bytes += len - keep;
        report.actions.push(format!(
            "truncated {} from {len} to {keep} bytes: discarded {} bytes past the durable position {durable}",
            path.display(),
            len - keep
        ));
        changed = true;
    }
    if changed {
        sync_data(&file, &path)?;
    }
    let hasher = crc_range(&file, &path, first, keep - first)?;
    Ok(Current { path, file, durable_hasher: hasher.clone(), hasher })
}

/// The end of the last complete WAL record in the current PostgreSQL segment
/// (`path`, `size` bytes of which `len` are present, starting at `base`)
/// whose page headers and CRC check, walked as PostgreSQL's recovery does
/// from the first record of the previous segment (`prev`), so that a record
/// continued across the boundary counts too. When `prev` cannot be read (an
/// operator removed or damaged it) the walk starts at the current
/// segment's first record.
/// `None` when no record in the current segment checks.
fn wal_valid_end(
    prev: &Path,
    file: &fs::File,
    path: &Path,
    base: Position,
    size: u64,
    len: u64,
    report: &mut RecoveryReport,
) -> Result<Option<Position>, StoreError> {
    use walship_pgwal::{PageHeader, WalGeometry, WalInput, WalkOptions, find_first_record, valid_end};
    let read = |file: &fs::File, path: &Path, len: u64| -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0u8; usize::try_from(len.min(size)).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut buf, 0).map_err(StoreError::io("read", path))?;
        Ok(buf)
    };
    let cur = read(file, path, len)?;
    let Some(long) = PageHeader::parse(&cur).ok().and_then(|h| h.long) else { return Ok(None) };
    let Ok(geometry) = WalGeometry::new(u64::from(long.seg_size), u64::from(long.block_size)) else {
        return Ok(None);
    };
    if geometry.seg_size() != size {
        return Ok(None);
    }
    let opts = WalkOptions { system_identifier: Some(long.sysid), ..WalkOptions::default() };
    let walk = |from: u64, segments: &[&[u8]]| -> Option<Position> {
        let input = WalInput::new(geometry, from, segments);
        let first = find_first_record(input, from, opts).ok()?;
        let walk = valid_end(input, first.0, opts);
        (walk.records > 0 && walk.end > base).then_some(walk.end)
    };
    let prev_bytes = fs::File::open(prev).map_err(StoreError::io("open", prev)).and_then(|f| read(&f, prev, size));
    let prev_bytes = match prev_bytes {
        Ok(b) => Some(b),
        // Only a help: without it, the walk starts in the current segment.
        Err(e) => {
            report.actions.push(format!(
                "could not read {} ({e}): a record continued from it into {} cannot be checked",
                prev.display(),
                path.display()
            ));
            None
        }
    };
    let across = prev_bytes.as_deref().and_then(|p| walk(base.0 - size, &[p, &cur]));
    Ok(across.or_else(|| walk(base.0, &[&cur])))
}

fn exists(path: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io("stat", path)(e)),
    }
}

/// Takes the mirror's exclusive lock: two processes writing one mirror
/// would interleave segments and corrupt the control file.
fn lock_dir(dir: &Path) -> Result<fs::File, StoreError> {
    let path = dir.join(crate::control::LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StoreError::io("open", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked { dir: dir.to_path_buf() }),
        Err(fs::TryLockError::Error(e)) => Err(StoreError::io("lock", &path)(e)),
    }
}

/// The mirror's durable position as recorded on disk (control file and
/// `walship.pos`), read without opening or locking the mirror, so it works
/// while a receiver runs. `Position(0)` for a directory that is not (yet) a
/// mirror.
pub fn read_durable(dir: &Path) -> Result<Position, StoreError> {
    let Some(state) = control::load(dir)? else { return Ok(Position::ZERO) };
    let (segments, durable) = parse_table(&state, &control_path(dir))?;
    let rec = match fs::read(dir.join(POS_FILE)) {
        Ok(bytes) => crate::posfile::newest(&bytes),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(StoreError::io("read", dir.join(POS_FILE))(e)),
    };
    Ok(match (rec, segments.last()) {
        (Some(r), Some(seg)) if seg.end.is_none() && r.segment_start == seg.start.0 => {
            durable.max(Position(r.durable_pos))
        }
        _ => durable,
    })
}

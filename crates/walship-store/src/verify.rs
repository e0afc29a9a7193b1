//! Byte-for-byte comparison of a mirror with the source WAL directory.
//!
//! Each segment file in the mirror is compared with the source file of the
//! same name:
//! * a complete segment (`NAME`, recorded complete in the control file) must
//!   equal the source file entirely: same length, same bytes;
//! * the segment in progress (`NAME.partial`, or `NAME` when the crash came
//!   between the rename and the control update) must equal the source's
//!   prefix up to the mirror's durable position.
//!
//! Start positions come from the control file's table. Complete segments
//! older than the table (it keeps the last 64) get theirs derived backwards
//! from the next segment by length, as the raw format's positions are the
//! concatenation of the segments in name order. Files the control file does
//! not account for (a `.partial` that recovery would remove) are listed as
//! untracked and not compared. Files are read in 1 MiB chunks.
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;

use walship_core::{Position, SegmentName};

use crate::StoreError;
use crate::control::{self, control_path};
use crate::fsio::CHUNK;
use crate::recovery::{parse_table, refuse_segments_without_control};

/// The outcome for one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentStatus {
    /// Identical.
    Ok,
    /// The bytes differ; the first differing byte is at this position.
    Mismatch {
        /// Position of the first differing byte.
        first_diff_pos: Position,
    },
    /// The source directory has no file of this name.
    MissingInSource,
    /// The source file ends before the bytes the mirror holds.
    SourceShorter {
        /// The source file's length.
        source_len: u64,
    },
    /// The source file is longer than the mirror's complete segment.
    SourceLonger {
        /// The source file's length.
        source_len: u64,
    },
    /// The mirror's file holds fewer bytes than its durable position says.
    MirrorShorter {
        /// The mirror file's length.
        mirror_len: u64,
    },
    /// The control file does not account for this file; not compared.
    Untracked,
    /// A complete segment older than every segment left in a PostgreSQL
    /// pg_wal: PostgreSQL removed or recycled it after it was archived
    /// (shipped). Not a difference; nothing to compare.
    RemovedFromSource,
}

/// The comparison of one mirror segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentReport {
    /// Segment name (without `.partial`).
    pub name: String,
    /// Position of the segment's first byte.
    pub start: Position,
    /// Whether the mirror holds it complete.
    pub complete: bool,
    /// Bytes compared.
    pub compared: u64,
    /// The outcome.
    pub status: SegmentStatus,
}

impl SegmentReport {
    /// Position of the first byte that is not the same in both, if any.
    pub fn first_diff(&self) -> Option<Position> {
        match self.status {
            SegmentStatus::Ok | SegmentStatus::Untracked | SegmentStatus::RemovedFromSource => None,
            SegmentStatus::Mismatch { first_diff_pos } => Some(first_diff_pos),
            SegmentStatus::MissingInSource => Some(self.start),
            SegmentStatus::SourceShorter { source_len } => Some(self.start.add(source_len)),
            SegmentStatus::SourceLonger { .. } | SegmentStatus::MirrorShorter { .. } => {
                Some(self.start.add(self.compared))
            }
        }
    }
}

/// The result of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Per segment, in name order.
    pub segments: Vec<SegmentReport>,
    /// The first position at which mirror and source differ, if any.
    pub first_diff: Option<Position>,
    /// Total bytes compared.
    pub bytes_compared: u64,
    /// The mirror's durable position.
    pub durable_pos: Position,
}

impl VerifyReport {
    /// Every compared byte is identical and nothing is missing.
    pub fn is_ok(&self) -> bool {
        self.first_diff.is_none()
    }
}

/// How the source treats old segments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// The source removes segments once they are shipped (PostgreSQL's
    /// pg_wal): a complete mirror segment older than every segment left in
    /// the source is [`SegmentStatus::RemovedFromSource`], not missing.
    pub source_removes_old: bool,
}

/// Compares the mirror in `mirror_dir` with the source segments in `wal_dir`
/// (see the module docs). Reads only; works on a mirror in use.
pub fn verify(wal_dir: &Path, mirror_dir: &Path) -> Result<VerifyReport, StoreError> {
    verify_with(wal_dir, mirror_dir, VerifyOptions::default())
}

/// [`verify`] with options.
pub fn verify_with(wal_dir: &Path, mirror_dir: &Path, opts: VerifyOptions) -> Result<VerifyReport, StoreError> {
    let mut report = verify_inner(wal_dir, mirror_dir)?;
    if opts.source_removes_old {
        // The oldest PostgreSQL segment file still in the source.
        let oldest = fs::read_dir(wal_dir)
            .map_err(StoreError::io("list", wal_dir))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
            .map(|n| n[8..].to_string())
            .min();
        for s in &mut report.segments {
            let older = oldest.as_deref().is_some_and(|o| s.name.len() == 24 && s.name[8..] < *o);
            if s.status == SegmentStatus::MissingInSource && s.complete && older {
                s.status = SegmentStatus::RemovedFromSource;
            }
        }
        report.first_diff = report.segments.iter().filter_map(SegmentReport::first_diff).min();
    }
    Ok(report)
}

fn verify_inner(wal_dir: &Path, mirror_dir: &Path) -> Result<VerifyReport, StoreError> {
    let Some(state) = control::load(mirror_dir)? else {
        refuse_segments_without_control(mirror_dir)?;
        return Ok(VerifyReport { segments: vec![], first_diff: None, bytes_compared: 0, durable_pos: Position(0) });
    };
    let (table, _) = parse_table(&state, &control_path(mirror_dir))?;
    let size = state.identity.as_ref().map_or(0, |i| i.segment_size);
    // Flushes inside a segment record the position in walship.pos, not the control file.
    let durable = crate::read_durable(mirror_dir)?;
    let by_name: HashMap<&str, usize> = table.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();

    // (name, partial?) of every segment file, in name order.
    let mut files: Vec<(SegmentName, bool)> = Vec::new();
    for entry in fs::read_dir(mirror_dir).map_err(StoreError::io("list", mirror_dir))? {
        let entry = entry.map_err(StoreError::io("list", mirror_dir))?;
        if !entry.file_type().map_err(StoreError::io("stat", entry.path()))?.is_file() {
            continue;
        }
        let Some(fname) = entry.file_name().to_str().map(str::to_owned) else { continue };
        // The mirror's own files (control, position, lock, applied) are not segments.
        if fname.starts_with("walship.") {
            continue;
        }
        let (base, partial) = match fname.strip_suffix(".partial") {
            Some(b) => (b.to_owned(), true),
            None => (fname, false),
        };
        if let Ok(name) = SegmentName::new(&base) {
            files.push((name, partial));
        }
    }
    files.sort();

    let mut reports: Vec<SegmentReport> = Vec::new();
    // Older than the table: derive starts backwards from the first tracked segment.
    let first_tracked = table.first().map(|s| (s.name.clone(), s.start));
    let mut older: Vec<&(SegmentName, bool)> =
        files.iter().filter(|(n, p)| !by_name.contains_key(n.as_str()) && is_older(&table, n, *p)).collect();
    older.reverse();
    let mut next_start = first_tracked.map(|(_, s)| s);
    let mut older_reports = Vec::new();
    for (name, _) in older {
        let path = mirror_dir.join(name.as_str());
        let len = fs::metadata(&path).map_err(StoreError::io("stat", &path))?.len();
        let start = next_start.and_then(|s| s.0.checked_sub(len)).map(Position);
        next_start = start;
        older_reports.push(match start {
            Some(start) => compare(wal_dir, &path, name, start, true, len)?,
            None => untracked(name),
        });
    }
    older_reports.reverse();
    reports.extend(older_reports);

    for (name, partial) in &files {
        let path = mirror_dir.join(if *partial { name.partial_name() } else { name.to_string() });
        match by_name.get(name.as_str()).map(|&i| &table[i]) {
            Some(seg) if seg.end.is_some() && !partial => {
                let len = fs::metadata(&path).map_err(StoreError::io("stat", &path))?.len();
                reports.push(compare(wal_dir, &path, name, seg.base(size), true, len)?);
            }
            // Complete, but its timeline ended inside it: compared up to its end.
            Some(seg) if seg.is_short(size) && *partial => {
                let end = seg.end.unwrap_or(seg.start);
                reports.push(compare(wal_dir, &path, name, seg.base(size), false, end.since(seg.base(size)))?);
            }
            Some(seg) if seg.end.is_none() => {
                let base = seg.base(size);
                reports.push(compare(wal_dir, &path, name, base, false, durable.since(base))?);
            }
            Some(_) => reports.push(untracked(name)),
            None if is_older(&table, name, *partial) => {} // reported above
            None => reports.push(untracked(name)),
        }
    }
    reports.sort_by(|a, b| a.name.cmp(&b.name));

    let first_diff = reports.iter().filter_map(SegmentReport::first_diff).min();
    let bytes_compared = reports.iter().map(|r| r.compared).sum();
    Ok(VerifyReport { segments: reports, first_diff, bytes_compared, durable_pos: durable })
}

/// Whether a complete file named `name` predates the table (sorts before its first segment).
fn is_older(table: &[crate::mirror::Seg], name: &SegmentName, partial: bool) -> bool {
    !partial && table.first().is_some_and(|f| *name < f.name)
}

fn untracked(name: &SegmentName) -> SegmentReport {
    SegmentReport {
        name: name.to_string(),
        start: Position(0),
        complete: false,
        compared: 0,
        status: SegmentStatus::Untracked,
    }
}

/// Compares the first `want` bytes of the mirror file `path` with the source
/// file (`NAME`, or `NAME.partial` when PostgreSQL renamed it so); `start` is
/// the position of the files' first byte.
fn compare(
    wal_dir: &Path,
    path: &Path,
    name: &SegmentName,
    start: Position,
    complete: bool,
    want: u64,
) -> Result<SegmentReport, StoreError> {
    let report = |compared, status| SegmentReport { name: name.to_string(), start, complete, compared, status };
    let mut src_path = wal_dir.join(name.as_str());
    if !src_path.exists() && wal_dir.join(name.partial_name()).exists() {
        src_path = wal_dir.join(name.partial_name());
    }
    let src = match File::open(&src_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(report(0, SegmentStatus::MissingInSource));
        }
        Err(e) => return Err(StoreError::io("open", src_path)(e)),
    };
    let src_len = src.metadata().map_err(StoreError::io("stat", &src_path))?.len();
    let mir = File::open(path).map_err(StoreError::io("open", path))?;
    let mir_len = mir.metadata().map_err(StoreError::io("stat", path))?.len();
    let n = want.min(src_len).min(mir_len);
    if let Some(off) = first_difference(&mir, path, &src, &src_path, n)? {
        return Ok(report(off, SegmentStatus::Mismatch { first_diff_pos: start.add(off) }));
    }
    let status = if mir_len < want {
        SegmentStatus::MirrorShorter { mirror_len: mir_len }
    } else if src_len < want {
        SegmentStatus::SourceShorter { source_len: src_len }
    } else if complete && src_len > want {
        SegmentStatus::SourceLonger { source_len: src_len }
    } else {
        SegmentStatus::Ok
    };
    Ok(report(n, status))
}

/// Offset of the first differing byte among the first `len` bytes of `a` and `b`.
fn first_difference(a: &File, a_path: &Path, b: &File, b_path: &Path, len: u64) -> Result<Option<u64>, StoreError> {
    let cap = CHUNK.min(usize::try_from(len).unwrap_or(CHUNK));
    let (mut ba, mut bb) = (vec![0u8; cap], vec![0u8; cap]);
    let mut off = 0u64;
    while off < len {
        let n = usize::try_from((len - off).min(cap as u64)).unwrap_or(cap);
        a.read_exact_at(&mut ba[..n], off).map_err(StoreError::io("read", a_path))?;
        b.read_exact_at(&mut bb[..n], off).map_err(StoreError::io("read", b_path))?;
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(Some(off + i as u64));
        }
        off += n as u64;
    }
    Ok(None)
}

impl fmt::Display for SegmentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SegmentStatus::Ok => f.write_str("ok"),
            SegmentStatus::Mismatch { first_diff_pos } => write!(f, "MISMATCH at position {first_diff_pos}"),
            SegmentStatus::MissingInSource => f.write_str("MISSING in source"),
            SegmentStatus::SourceShorter { source_len } => write!(f, "SOURCE SHORTER ({source_len} bytes)"),
            SegmentStatus::SourceLonger { source_len } => write!(f, "SOURCE LONGER ({source_len} bytes)"),
            SegmentStatus::MirrorShorter { mirror_len } => write!(f, "MIRROR SHORTER ({mirror_len} bytes)"),
            SegmentStatus::Untracked => f.write_str("untracked (not compared)"),
            SegmentStatus::RemovedFromSource => f.write_str("removed from source after shipping (not compared)"),
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.segments.iter().map(|s| s.name.len()).max().unwrap_or(0).max(7);
        writeln!(f, "{:<w$}  {:>20}  {:>12}  {:<8}  status", "segment", "start", "compared", "state")?;
        for s in &self.segments {
            let state = if s.complete { "complete" } else { "partial" };
            // Position's Display ignores width, so align the raw number.
            writeln!(f, "{:<w$}  {:>20}  {:>12}  {:<8}  {}", s.name, s.start.0, s.compared, state, s.status)?;
        }
        write!(f, "durable position {}; {} bytes compared; ", self.durable_pos, self.bytes_compared)?;
        match self.first_diff {
            None => write!(f, "identical"),
            Some(p) => write!(f, "first difference at position {p}"),
        }
    }
}

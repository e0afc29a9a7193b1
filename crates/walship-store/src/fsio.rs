//! Small file-system helpers shared by the mirror, recovery and verify:
//! directory fsync, chunked positional reads, zeroing a range, and the
//! test-only failpoints that let unit tests inject ENOSPC/EIO into any named
//! operation. Every write-side call (and reads in chunks) passes through the
//! power-cut layer when it is compiled in (see `powercut`); without the
//! feature, its hooks are empty and compile away.
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::StoreError;
#[cfg(any(test, feature = "powercut"))]
use crate::powercut as pc;

/// The power-cut hooks when the layer is not compiled in: `enter` never
/// hands out a gate, so the others are unreachable.
#[cfg(not(any(test, feature = "powercut")))]
mod pc {
    use std::fs::File;
    use std::io;
    use std::path::Path;

    pub(crate) enum Gate {}

    #[inline(always)]
    pub(crate) fn enter(_: &Path) -> io::Result<Option<Gate>> {
        Ok(None)
    }
    pub(crate) fn before_write(g: &Gate, _: &File, _: &Path, _: u64, _: u64) -> io::Result<()> {
        match *g {}
    }
    pub(crate) fn before_set_len(g: &Gate, _: &File, _: &Path, _: u64) -> io::Result<()> {
        match *g {}
    }
    pub(crate) fn before_create(g: &Gate, _: &Path, _: bool) -> io::Result<()> {
        match *g {}
    }
    pub(crate) fn before_rename(g: &Gate, _: &Path, _: &Path) -> io::Result<()> {
        match *g {}
    }
    pub(crate) fn before_remove(g: &Gate, _: &Path) -> io::Result<()> {
        match *g {}
    }
    pub(crate) fn mark(g: &Gate) -> u64 {
        match *g {}
    }
    pub(crate) fn synced_file(g: &Gate, _: &File, _: u64) -> io::Result<()> {
        match *g {}
    }
    pub(crate) fn synced_dir(g: &Gate, _: &Path, _: u64) {
        match *g {}
    }
}

/// Chunk size for reading files (checksums, recovery scans, verify).
pub(crate) const CHUNK: usize = 1 << 20;

/// Fails if a test armed a failure for `op`; compiled to nothing outside tests.
#[inline]
pub(crate) fn failpoint(op: &'static str) -> io::Result<()> {
    #[cfg(test)]
    {
        failpoints::check(op)
    }
    #[cfg(not(test))]
    {
        let _ = op;
        Ok(())
    }
}

/// fsyncs a directory so that creations, renames and removals in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    failpoint("fsync dir").map_err(StoreError::io("fsync dir", dir))?;
    let gate = pc::enter(dir).map_err(StoreError::io("fsync dir", dir))?;
    let mark = gate.as_ref().map(pc::mark);
    File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io("fsync dir", dir))?;
    if let (Some(g), Some(mark)) = (&gate, mark) {
        pc::synced_dir(g, dir, mark);
    }
    Ok(())
}

/// fdatasyncs a file.
pub(crate) fn sync_data(file: &File, path: &Path) -> Result<(), StoreError> {
    failpoint("fdatasync").map_err(StoreError::io("fdatasync", path))?;
    let gate = pc::enter(path).map_err(StoreError::io("fdatasync", path))?;
    let mark = gate.as_ref().map(pc::mark);
    file.sync_data().map_err(StoreError::io("fdatasync", path))?;
    if let (Some(g), Some(mark)) = (&gate, mark) {
        pc::synced_file(g, file, mark).map_err(StoreError::io("fdatasync", path))?;
    }
    Ok(())
}

/// fsyncs a file (data and metadata).
pub(crate) fn sync_all(file: &File, path: &Path) -> Result<(), StoreError> {
    failpoint("fsync").map_err(StoreError::io("fsync", path))?;
    let gate = pc::enter(path).map_err(StoreError::io("fsync", path))?;
    let mark = gate.as_ref().map(pc::mark);
    file.sync_all().map_err(StoreError::io("fsync", path))?;
    if let (Some(g), Some(mark)) = (&gate, mark) {
        pc::synced_file(g, file, mark).map_err(StoreError::io("fsync", path))?;
    }
    Ok(())
}

/// Opens `path` for writing (and reading, with `read`), creating it if
/// missing and emptying it with `truncate`.
pub(crate) fn create(path: &Path, read: bool, truncate: bool) -> Result<File, StoreError> {
    let gate = pc::enter(path).map_err(StoreError::io("create", path))?;
    if let Some(g) = &gate {
        pc::before_create(g, path, truncate).map_err(StoreError::io("create", path))?;
    }
    OpenOptions::new()
        .read(read)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
        .map_err(StoreError::io("create", path))
}

/// Removes `path` (the raw result, so callers can tell NotFound apart).
pub(crate) fn remove_file(path: &Path) -> io::Result<()> {
    let gate = pc::enter(path)?;
    if let Some(g) = &gate {
        pc::before_remove(g, path)?;
    }
    std::fs::remove_file(path)
}

/// Reads `[from, from + len)` of `file` in chunks, handing each chunk to `f`.
/// A file shorter than the range is an `UnexpectedEof` I/O error.
pub(crate) fn for_each_chunk(
    file: &File,
    path: &Path,
    from: u64,
    len: u64,
    mut f: impl FnMut(u64, &[u8]),
) -> Result<(), StoreError> {
    let mut buf = vec![0u8; CHUNK.min(usize::try_from(len).unwrap_or(CHUNK))];
    let mut off = 0u64;
    while off < len {
        let n = usize::try_from((len - off).min(buf.len() as u64)).unwrap_or(buf.len());
        let chunk = &mut buf[..n];
        failpoint("read").map_err(StoreError::io("read", path))?;
        pc::enter(path).map_err(StoreError::io("read", path))?;
        file.read_exact_at(chunk, from + off).map_err(StoreError::io("read", path))?;
        f(from + off, chunk);
        off += n as u64;
    }
    Ok(())
}

/// CRC-32 of `[from, from + len)` of `file`, and the hasher state (to continue it).
pub(crate) fn crc_range(file: &File, path: &Path, from: u64, len: u64) -> Result<crc32fast::Hasher, StoreError> {
    let mut h = crc32fast::Hasher::new();
    for_each_chunk(file, path, from, len, |_, c| h.update(c))?;
    Ok(h)
}

/// Offset one past the last non-zero byte in `[from, to)`, or `from` if all are zero.
pub(crate) fn end_of_nonzero(file: &File, path: &Path, from: u64, to: u64) -> Result<u64, StoreError> {
    let mut end = from;
    for_each_chunk(file, path, from, to.saturating_sub(from), |at, c| {
        if let Some(i) = c.iter().rposition(|&b| b != 0) {
            end = at + i as u64 + 1;
        }
    })?;
    Ok(end)
}

/// Overwrites `[from, to)` of `file` with zeros.
pub(crate) fn zero_range(file: &File, path: &Path, from: u64, to: u64) -> Result<(), StoreError> {
    let zeros = vec![0u8; CHUNK.min(usize::try_from(to.saturating_sub(from)).unwrap_or(CHUNK))];
    let mut at = from;
    while at < to {
        let n = usize::try_from((to - at).min(zeros.len() as u64)).unwrap_or(zeros.len());
        pwrite_all(file, path, &zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Sets a file's length.
pub(crate) fn set_len(file: &File, path: &Path, len: u64) -> Result<(), StoreError> {
    failpoint("set_len").map_err(StoreError::io("set_len", path))?;
    let gate = pc::enter(path).map_err(StoreError::io("set_len", path))?;
    if let Some(g) = &gate {
        pc::before_set_len(g, file, path, len).map_err(StoreError::io("set_len", path))?;
    }
    file.set_len(len).map_err(StoreError::io("set_len", path))
}

/// Renames `from` to `to` (same directory).
pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    failpoint("rename").map_err(StoreError::io("rename", from))?;
    let gate = pc::enter(from).map_err(StoreError::io("rename", from))?;
    if let Some(g) = &gate {
        pc::before_rename(g, from, to).map_err(StoreError::io("rename", from))?;
    }
    std::fs::rename(from, to).map_err(StoreError::io("rename", from))
}

/// Positional write of all of `data` at file offset `off`.
pub(crate) fn pwrite_all(file: &File, path: &Path, data: &[u8], off: u64) -> Result<(), StoreError> {
    // A real ENOSPC often strikes mid-write; the failpoint imitates that by
    // landing half of the bytes first, so tests see the torn tail too.
    #[cfg(test)]
    if failpoints::is_armed("pwrite") {
        let _ = file.write_all_at(&data[..data.len() / 2], off);
    }
    failpoint("pwrite").map_err(StoreError::io("pwrite", path))?;
    let gate = pc::enter(path).map_err(StoreError::io("pwrite", path))?;
    if let Some(g) = &gate {
        pc::before_write(g, file, path, off, data.len() as u64).map_err(StoreError::io("pwrite", path))?;
    }
    file.write_all_at(data, off).map_err(StoreError::io("pwrite", path))
}

/// Test-only fault injection: `arm("fdatasync")` makes the next fdatasync on
/// this thread fail with ENOSPC. A `Mirror` is owned by one thread, and each
/// test runs on its own, so a thread-local keeps tests independent.
#[cfg(test)]
pub(crate) mod failpoints {
    use std::cell::RefCell;
    use std::io;

    thread_local! {
        static ARMED: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
    }

    /// Makes the next operation named `op` fail with ENOSPC.
    pub(crate) fn arm(op: &'static str) {
        ARMED.with(|a| a.borrow_mut().push(op));
    }

    /// Whether a failure is armed for `op` (without consuming it).
    pub(crate) fn is_armed(op: &'static str) -> bool {
        ARMED.with(|a| a.borrow().contains(&op))
    }

    pub(super) fn check(op: &'static str) -> io::Result<()> {
        ARMED.with(|a| {
            let mut a = a.borrow_mut();
            match a.iter().position(|o| *o == op) {
                Some(i) => {
                    a.remove(i);
                    Err(io::Error::from_raw_os_error(libc::ENOSPC))
                }
                None => Ok(()),
            }
        })
    }
}

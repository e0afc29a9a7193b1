//! Test data and scratch space: sizes, free-space checks, the pre-written
//! raw WAL and directories that remove themselves.
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Size of one raw WAL segment file.
pub const SEGMENT: u64 = 16 << 20;

/// Bytes available to an unprivileged writer on the file system of `dir`.
#[allow(unsafe_code)]
pub fn free_bytes(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).context("path with a NUL byte")?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable
    // memory of the right type; statvfs only writes into it.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("statvfs {}", dir.display()));
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Refuses to start when `dir`'s file system has less than `need` bytes free.
pub fn require_space(dir: &Path, need: u64, what: &str) -> Result<()> {
    let free = free_bytes(dir)?;
    if free < need {
        bail!(
            "not enough space in {} for {what}: need {:.2} GiB, {:.2} GiB free \
             (use a smaller --bytes, or another --dir / --disk-dir)",
            dir.display(),
            need as f64 / (1u64 << 30) as f64,
            free as f64 / (1u64 << 30) as f64,
        );
    }
    Ok(())
}

/// The nearest existing ancestor of `p` (for free-space checks before it exists).
pub fn existing_ancestor(p: &Path) -> PathBuf {
    let mut cur = p.to_path_buf();
    while !cur.exists() {
        match cur.parent() {
            Some(parent) => cur = parent.to_path_buf(),
            None => return PathBuf::from("/"),
        }
    }
    cur
}

/// A directory created fresh and removed (with its contents) on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates `path`, refusing to reuse one that already exists.
    pub fn create(path: PathBuf) -> Result<ScratchDir> {
        if path.exists() {
            bail!("{} already exists; remove it or pick another directory", path.display());
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("warning: could not remove {}: {e}", self.0.display());
        }
    }
}

/// The raw segment file names of a source holding `total` bytes, in order,
/// with their lengths.
pub fn segments(total: u64) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut left = total;
    let mut n = 0u32;
    while left > 0 {
        let len = left.min(SEGMENT);
        out.push((format!("{n:08}.wal"), len));
        left -= len;
        n += 1;
    }
    out
}

/// The source's `total` bytes in order, read (plain reads) `chunk` bytes at a
/// time: the sending side of the transport-only cases.
pub fn source_chunks(dir: &Path, total: u64, chunk: usize) -> impl Iterator<Item = Result<Vec<u8>>> + '_ {
    let mut segs = segments(total).into_iter();
    let mut open: Option<(PathBuf, File)> = None;
    std::iter::from_fn(move || {
        loop {
            let (path, f) = match &mut open {
                Some(o) => o,
                None => {
                    let (name, _) = segs.next()?;
                    let path = dir.join(&name);
                    match File::open(&path) {
                        Ok(f) => open.insert((path, f)),
                        Err(e) => return Some(Err(e).with_context(|| format!("opening {}", path.display()))),
                    }
                }
            };
            // No zeroing: read_to_end fills the spare capacity directly.
            let mut buf = Vec::with_capacity(chunk);
            match f.take(chunk as u64).read_to_end(&mut buf) {
                Ok(0) => open = None,
                Ok(_) => return Some(Ok(buf)),
                Err(e) => return Some(Err(e).with_context(|| format!("reading {}", path.display()))),
            }
        }
    })
}

/// Writes `total` bytes of pseudo-random raw WAL as [`SEGMENT`]-sized files
/// into `dir`. No fsync: the source only has to be readable, and it lives
/// on tmpfs.
pub fn write_source(dir: &Path, total: u64) -> Result<()> {
    write_source_paced(dir, total, None).map(|_| ())
}

/// [`write_source`], 1 MiB per write, at most `rate` MB/s when given (a
/// sender tailing `dir` sees it grow); returns the seconds it took.
pub fn write_source_paced(dir: &Path, total: u64, rate: Option<f64>) -> Result<f64> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut buf = vec![0u8; 1 << 20];
    let start = std::time::Instant::now();
    let mut written = 0u64;
    for (name, len) in segments(total) {
        let path = dir.join(name);
        let mut f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut left = len;
        while left > 0 {
            for word in buf.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
            let k = left.min(buf.len() as u64) as usize;
            f.write_all(&buf[..k]).with_context(|| format!("writing {}", path.display()))?;
            left -= k as u64;
            written += k as u64;
            if let Some(rate) = rate {
                let due = std::time::Duration::from_secs_f64(written as f64 / (rate * 1e6));
                std::thread::sleep(due.saturating_sub(start.elapsed()));
            }
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_split() {
        let s = segments(SEGMENT * 2 + 5);
        assert_eq!(s.len(), 3);
        assert_eq!(s[2], ("00000002.wal".to_string(), 5));
    }

    #[test]
    fn source_chunks_read_every_segment_in_order() {
        let dir = std::env::temp_dir().join(format!("walship-bench-chunks-{}", std::process::id()));
        let dir = ScratchDir::create(dir).expect("scratch dir");
        let total = SEGMENT + 300_000;
        write_source(dir.path(), total).expect("write source");
        let chunk = 1 << 20;
        let mut got = Vec::new();
        for c in source_chunks(dir.path(), total, chunk) {
            let c = c.expect("chunk");
            assert!(!c.is_empty() && c.len() <= chunk, "chunk of {} bytes", c.len());
            got.extend_from_slice(&c);
        }
        let mut want = std::fs::read(dir.path().join("00000000.wal")).expect("segment 0");
        want.extend(std::fs::read(dir.path().join("00000001.wal")).expect("segment 1"));
        assert_eq!(got.len() as u64, total);
        assert!(got == want, "the chunks differ from the segments");
        // A missing segment is an error naming it, not a short read.
        std::fs::remove_file(dir.path().join("00000001.wal")).expect("remove");
        let err = source_chunks(dir.path(), total, chunk).find_map(Result::err).expect("an error");
        assert!(format!("{err:#}").contains("00000001.wal"), "{err:#}");
    }
}

//! Change notification for the WAL directory.
//!
//! File events come from the `notify` crate (inotify on Linux): a write to a
//! segment raises `IN_MODIFY` on the directory watch, `notify`'s thread calls
//! our handler, and the handler wakes the tailer's task through a
//! [`tokio::sync::Notify`]. Waking is all it does: what changed is learnt by
//! [`crate::Tailer::refresh`], so a lost, merged or spurious event costs
//! nothing but a refresh. Because inotify queues can overflow, and some file
//! systems (network mounts) raise no events at all, [`Watcher::changed`] also
//! resolves on a poll tick; when no watcher can be created, polling is all
//! there is.
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::Notify;

use crate::error::SourceError;

/// Shortest poll interval: a zero interval would spin.
const MIN_POLL: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
struct Shared {
    notify: Notify,
    last_event: Mutex<Option<Instant>>,
    /// The first event since [`Watcher::take_first_event`] last ran.
    first_event: Mutex<Option<Instant>>,
    /// An entry of the directory may have been added, removed or renamed
    /// since [`Watcher::take_entries_changed`] last ran.
    entries_changed: AtomicBool,
    /// When [`Watcher::take_entries_changed`] last answered yes.
    last_relist: Mutex<Option<Instant>>,
}

/// Tells when the WAL directory may have changed.
pub struct Watcher {
    dir: PathBuf,
    shared: Arc<Shared>,
    /// Kept alive for as long as events are wanted; dropping it stops notify's thread.
    inner: Option<RecommendedWatcher>,
    poll_interval: Duration,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("dir", &self.dir)
            .field("polling_only", &self.is_polling_only())
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// Watches `dir` (non-recursively) for file events, and polls every `poll_interval` as a
    /// safety net. If no watcher can be created (no inotify instances left, unsupported file
    /// system), logs a warning and polls every `fallback_poll_interval` instead. Fails only if
    /// `dir` is not a readable directory.
    pub fn new(dir: &Path, poll_interval: Duration, fallback_poll_interval: Duration) -> Result<Watcher, SourceError> {
        check_dir(dir)?;
        let shared = Arc::new(Shared::default());
        match start_watcher(dir, Arc::clone(&shared)) {
            Ok(inner) => Ok(Watcher {
                dir: dir.to_path_buf(),
                shared,
                inner: Some(inner),
                poll_interval: poll_interval.max(MIN_POLL),
            }),
            Err(e) => {
                tracing::warn!(
                    dir = %dir.display(),
                    error = %e,
                    poll_interval_ms = fallback_poll_interval.as_millis() as u64,
                    "cannot watch wal directory for changes; polling instead"
                );
                Ok(Self::polling_only(dir, fallback_poll_interval)?)
            }
        }
    }

    /// A watcher that only polls, every `poll_interval` (for file systems without events,
    /// and for tests of the fallback).
    pub fn polling_only(dir: &Path, poll_interval: Duration) -> Result<Watcher, SourceError> {
        check_dir(dir)?;
        Ok(Watcher {
            dir: dir.to_path_buf(),
            shared: Arc::new(Shared::default()),
            inner: None,
            poll_interval: poll_interval.max(MIN_POLL),
        })
    }

    /// Resolves when the directory may have changed: a file event arrived since the last
    /// call returned (or while waiting), or a poll interval went by. Wake-ups may be spurious.
    ///
    /// Cancellation-safe: an event that arrives while nobody waits is kept for the next call,
    /// and one delivered to a call that is then cancelled is passed on to the next call, so
    /// using this in `tokio::select!` loses no event.
    pub async fn changed(&self) {
        tokio::select! {
            () = self.shared.notify.notified() => {}
            () = tokio::time::sleep(self.poll_interval) => {}
        }
    }

    /// When the last file event was seen (for detection-delay metrics); `None` if none yet,
    /// and always when polling only.
    pub fn last_event(&self) -> Option<Instant> {
        *self.shared.last_event.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first file event since the previous call, and forget it: the
    /// earliest moment the bytes a refresh then finds can have been seen,
    /// for detection delay and for honest "observed at" times.
    pub fn take_first_event(&self) -> Option<Instant> {
        self.shared.first_event.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Whether the directory should be listed again: an entry was created,
    /// removed or renamed since the last call that said yes (or the watcher
    /// lost events, or only polls), or a poll interval has passed since then.
    /// Appends to a segment do not count. Clears the flag *before* the
    /// caller lists, so an entry event during the listing is not lost.
    pub fn take_entries_changed(&self) -> bool {
        let flagged = self.shared.entries_changed.swap(false, Ordering::AcqRel);
        let mut last = self.shared.last_relist.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let due = last.is_none_or(|t| now.saturating_duration_since(t) >= self.poll_interval);
        if flagged || due || self.is_polling_only() {
            *last = Some(now);
            return true;
        }
        false
    }

    /// Whether changes are noticed only by polling.
    pub fn is_polling_only(&self) -> bool {
        self.inner.is_none()
    }

    /// The poll interval in use.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }
}

fn check_dir(dir: &Path) -> Result<(), SourceError> {
    let meta = std::fs::metadata(dir).map_err(|source| SourceError::ListDir { dir: dir.to_path_buf(), source })?;
    if !meta.is_dir() {
        let source = io::Error::new(io::ErrorKind::NotADirectory, "not a directory");
        return Err(SourceError::ListDir { dir: dir.to_path_buf(), source });
    }
    Ok(())
}

fn start_watcher(dir: &Path, shared: Arc<Shared>) -> notify::Result<RecommendedWatcher> {
    let log_dir = dir.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(event) => {
            // Opening or reading a segment (our own reads among them) changes nothing.
            if matches!(event.kind, EventKind::Access(AccessKind::Open(_) | AccessKind::Read)) {
                return;
            }
            // Data written to a segment needs a stat, not a directory read;
            // anything else (create, remove, rename, unknown) needs both.
            if !matches!(
                event.kind,
                EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Metadata(_)) | EventKind::Access(_)
            ) {
                shared.entries_changed.store(true, Ordering::Release);
            }
            let now = Instant::now();
            *shared.last_event.lock().unwrap_or_else(PoisonError::into_inner) = Some(now);
            shared.first_event.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(now);
            shared.notify.notify_one();
        }
        Err(e) => {
            // Typically a queue overflow: something changed, we do not know what.
            tracing::debug!(dir = %log_dir.display(), error = %e, "wal directory watcher error; refreshing");
            shared.entries_changed.store(true, Ordering::Release);
            shared.notify.notify_one();
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

//! Change notification for the WAL directory.
//!
//! File events come from inotify, read on the tokio runtime itself: the
//! inotify descriptor is registered with the reactor ([`AsyncFd`]), so a
//! write to a segment wakes the task waiting in [`Watcher::changed`]
//! directly, with no thread of our own in between (the `notify` crate's
//! thread used to sit there: one more wake-up and context switch per
//! commit). The watch asks only for changes (`IN_MODIFY`, `IN_ATTRIB`,
//! `IN_CLOSE_WRITE`, entry creation, removal and renames, and the directory
//! itself going away), so our own opens and reads of segments raise nothing.
//!
//! Waking is all an event does: what changed is learnt by
//! [`crate::Tailer::refresh`], so a lost, merged or spurious event costs
//! nothing but a refresh. Because inotify queues can overflow, and some file
//! systems (network mounts) raise no events at all, [`Watcher::changed`] also
//! resolves on a poll tick; when no watch can be created, polling is all
//! there is.
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchMask};
use tokio::io::unix::AsyncFd;

use crate::error::SourceError;

/// Shortest poll interval: a zero interval would spin.
const MIN_POLL: Duration = Duration::from_millis(1);

/// What the watch asks the kernel for: changes only.
const WATCH_MASK: WatchMask = WatchMask::MODIFY
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

/// Events that change a file's contents or metadata but no entry of the
/// directory: they need a stat, not a listing.
const DATA_ONLY: EventMask = EventMask::MODIFY.union(EventMask::ATTRIB).union(EventMask::CLOSE_WRITE);

#[derive(Debug, Default)]
struct Shared {
    last_event: Mutex<Option<Instant>>,
    /// The first event since [`Watcher::take_first_event`] last ran.
    first_event: Mutex<Option<Instant>>,
    /// An entry of the directory may have been added, removed or renamed
    /// since [`Watcher::take_entries_changed`] last ran.
    entries_changed: AtomicBool,
    /// When [`Watcher::take_entries_changed`] last answered yes.
    last_relist: Mutex<Option<Instant>>,
}

/// The inotify instance and its read buffer, behind a lock because reading
/// needs `&mut`, and the raw descriptor for the reactor.
struct Queue {
    inner: Mutex<(Inotify, Box<[u8]>)>,
    fd: RawFd,
}

impl AsRawFd for Queue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

/// Tells when the WAL directory may have changed.
pub struct Watcher {
    dir: PathBuf,
    shared: Shared,
    /// `None`: polling only.
    queue: Option<AsyncFd<Queue>>,
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
    /// safety net. If no watch can be created (no inotify instances left, unsupported file
    /// system, or no tokio runtime to read events on), logs a warning and polls every
    /// `fallback_poll_interval` instead. Fails only if `dir` is not a readable directory.
    pub fn new(dir: &Path, poll_interval: Duration, fallback_poll_interval: Duration) -> Result<Watcher, SourceError> {
        check_dir(dir)?;
        match start_watch(dir) {
            Ok(queue) => Ok(Watcher {
                dir: dir.to_path_buf(),
                shared: Shared::default(),
                queue: Some(queue),
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
            shared: Shared::default(),
            queue: None,
            poll_interval: poll_interval.max(MIN_POLL),
        })
    }

    /// Resolves when the directory may have changed: a file event arrived since events were
    /// last read (or arrives while waiting), or a poll interval went by. Wake-ups may be
    /// spurious.
    ///
    /// Cancellation-safe: events stay in the kernel's queue, and the descriptor's readiness
    /// in the reactor, until this reads them, which it does without waiting and then
    /// returns; so using this in `tokio::select!` loses no event.
    pub async fn changed(&self) {
        let Some(queue) = &self.queue else {
            tokio::time::sleep(self.poll_interval).await;
            return;
        };
        let tick = tokio::time::sleep(self.poll_interval);
        tokio::pin!(tick);
        loop {
            tokio::select! {
                ready = queue.readable() => match ready {
                    Ok(mut guard) => {
                        let seen = self.read_events();
                        // Read to EAGAIN: clear what this guard saw (an event after the
                        // read is a newer readiness, which this leaves set).
                        guard.clear_ready();
                        if seen {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(dir = %self.dir.display(), error = %e, "inotify readiness failed; polling");
                        tick.as_mut().await;
                        return;
                    }
                },
                () = tick.as_mut() => return,
            }
        }
    }

    /// Reads every queued event without waiting and notes what they say. Whether any was read.
    fn read_events(&self) -> bool {
        let Some(queue) = &self.queue else { return false };
        let mut guard = lock(&queue.get_ref().inner);
        let (inotify, buf) = &mut *guard;
        let mut seen = false;
        loop {
            match inotify.read_events(buf) {
                Ok(events) => {
                    for event in events {
                        seen = true;
                        if !DATA_ONLY.contains(event.mask.difference(EventMask::ISDIR)) {
                            // Created, removed, renamed, the directory itself, or a queue overflow.
                            self.shared.entries_changed.store(true, Ordering::Release);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // Something changed, we do not know what.
                    tracing::debug!(dir = %self.dir.display(), error = %e, "reading inotify events failed; refreshing");
                    self.shared.entries_changed.store(true, Ordering::Release);
                    seen = true;
                    break;
                }
            }
        }
        if seen {
            let now = Instant::now();
            *lock(&self.shared.last_event) = Some(now);
            lock(&self.shared.first_event).get_or_insert(now);
        }
        seen
    }

    /// When the last file event was read (for detection-delay metrics); `None` if none yet,
    /// and always when polling only.
    pub fn last_event(&self) -> Option<Instant> {
        *lock(&self.shared.last_event)
    }

    /// The first file event since the previous call, and forget it: the
    /// earliest moment the bytes a refresh then finds can have been seen,
    /// for detection delay and for honest "observed at" times. Events are
    /// timed when [`Watcher::changed`] reads them, as it wakes; one still
    /// queued counts from the next wake-up, and the refresh it causes.
    pub fn take_first_event(&self) -> Option<Instant> {
        lock(&self.shared.first_event).take()
    }

    /// Whether the directory should be listed again: an entry was created,
    /// removed or renamed since the last call that said yes (or the watcher
    /// lost events, or only polls), or a poll interval has passed since then.
    /// Appends to a segment do not count. Clears the flag *before* the
    /// caller lists, so an entry event during the listing is not lost; one
    /// not read yet sets it again when [`Watcher::changed`] reads it.
    pub fn take_entries_changed(&self) -> bool {
        let flagged = self.shared.entries_changed.swap(false, Ordering::AcqRel);
        let mut last = lock(&self.shared.last_relist);
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
        self.queue.is_none()
    }

    /// The poll interval in use.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn check_dir(dir: &Path) -> Result<(), SourceError> {
    let meta = std::fs::metadata(dir).map_err(|source| SourceError::ListDir { dir: dir.to_path_buf(), source })?;
    if !meta.is_dir() {
        let source = io::Error::new(io::ErrorKind::NotADirectory, "not a directory");
        return Err(SourceError::ListDir { dir: dir.to_path_buf(), source });
    }
    Ok(())
}

/// An inotify instance (non-blocking) watching `dir`, registered with the current runtime's reactor.
fn start_watch(dir: &Path) -> io::Result<AsyncFd<Queue>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other("no tokio runtime to read file events on"));
    }
    let inotify = Inotify::init()?;
    inotify.watches().add(dir, WATCH_MASK)?;
    let fd = inotify.as_raw_fd();
    let queue = Queue { inner: Mutex::new((inotify, vec![0u8; 4096].into_boxed_slice())), fd };
    // SAFETY: `fd` belongs to the `Inotify` that the `Queue` owns, so it stays
    // open, and refers to the same inotify instance, for as long as the `AsyncFd`
    // holds the `Queue`; `as_raw_fd` always returns that same `fd`.
    #[allow(unsafe_code)]
    let registered = unsafe { AsyncFd::register(queue) };
    registered.map_err(io::Error::from)
}

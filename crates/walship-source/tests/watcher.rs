//! Change notification: how fast growth is noticed, and the polling fallback.
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use walship_core::Position;
use walship_source::{Tailer, TailerConfig, Watcher};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const LONG: Duration = Duration::from_secs(3600);

/// From a writer's `write()` returning to `refresh()` seeing the new length, through inotify.
#[tokio::test]
async fn growth_is_noticed_within_a_millisecond() -> Result {
    const WRITES: usize = 200;
    const CHUNK: usize = 128;
    let d = tempfile::tempdir()?;
    let path = d.path().join("000000010000000000000001");
    fs::write(&path, b"")?;
    let mut tailer = Tailer::open(d.path(), TailerConfig::default())?;
    // A poll interval far longer than the test: only file events can wake us.
    let watcher = Watcher::new(d.path(), LONG, LONG)?;
    assert!(!watcher.is_polling_only(), "inotify is expected to work here");

    // Lock-step: the writer waits for the go, lets the test park in `changed()`, writes once
    // and reports when write() returned.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut f = OpenOptions::new().append(true).open(&path)?;
        let chunk = [0x5au8; CHUNK];
        while go_rx.recv().is_ok() {
            std::thread::sleep(Duration::from_micros(500));
            f.write_all(&chunk)?;
            let returned = Instant::now();
            if done_tx.send(returned).is_err() {
                break;
            }
        }
        Ok(())
    });

    let mut delays = Vec::with_capacity(WRITES);
    let run = async {
        for i in 1..=WRITES {
            go_tx.send(())?;
            let want = Position((i * CHUNK) as u64);
            while tailer.end() < want {
                watcher.changed().await;
                tailer.refresh()?;
            }
            let seen = Instant::now();
            let written = done_rx.recv().await.ok_or("writer stopped")?;
            // The event is raised inside write(), so detection can beat the writer's clock read.
            delays.push(seen.saturating_duration_since(written));
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    tokio::time::timeout(Duration::from_secs(60), run).await??;
    drop(go_tx);
    writer.join().map_err(|_| "writer panicked")??;

    delays.sort();
    let pct = |p: usize| delays[(delays.len() - 1) * p / 100];
    println!(
        "growth detection delay (write() return -> refresh() sees it), {} writes: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        delays.len(),
        pct(50),
        pct(90),
        pct(99),
        pct(100)
    );
    assert!(pct(50) < Duration::from_millis(50), "median detection delay {:?}", pct(50));
    assert!(watcher.last_event().is_some());
    Ok(())
}

#[tokio::test]
async fn polling_finds_growth_without_events() -> Result {
    let d = tempfile::tempdir()?;
    let path = d.path().join("seg1");
    fs::write(&path, b"abc")?;
    let mut tailer = Tailer::open(d.path(), TailerConfig::default())?;
    let watcher = Watcher::polling_only(d.path(), Duration::from_millis(20))?;
    assert!(watcher.is_polling_only());

    // A tick comes even when nothing happens.
    let t0 = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), watcher.changed()).await?;
    assert!(t0.elapsed() >= Duration::from_millis(15), "woke after {:?}", t0.elapsed());

    OpenOptions::new().append(true).open(&path)?.write_all(b"defg")?;
    let found = async {
        loop {
            watcher.changed().await;
            if tailer.refresh()? {
                return Ok::<_, walship_source::SourceError>(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), found).await??;
    assert_eq!(tailer.end(), Position(7));
    assert_eq!(watcher.last_event(), None);
    Ok(())
}

#[tokio::test]
async fn an_event_while_nobody_waits_is_not_lost() -> Result {
    let d = tempfile::tempdir()?;
    let watcher = Watcher::new(d.path(), LONG, LONG)?;
    assert!(!watcher.is_polling_only());
    // A cancelled wait must not eat the next event.
    assert!(tokio::time::timeout(Duration::from_millis(20), watcher.changed()).await.is_err());
    fs::write(d.path().join("seg1"), b"x")?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::time::timeout(Duration::from_secs(5), watcher.changed()).await?;
    Ok(())
}

#[tokio::test]
async fn reading_a_segment_does_not_wake_the_watcher() -> Result {
    let d = tempfile::tempdir()?;
    let path = d.path().join("seg1");
    fs::write(&path, b"some bytes")?;
    let watcher = Watcher::new(d.path(), LONG, LONG)?;
    // Drain whatever the setup raised.
    while tokio::time::timeout(Duration::from_millis(50), watcher.changed()).await.is_ok() {}
    let mut buf = Vec::new();
    fs::File::open(&path)?.read_to_end(&mut buf)?;
    let mut tailer = Tailer::open(d.path(), TailerConfig::default())?;
    tailer.read(Position(0), 4)?;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), watcher.changed()).await.is_err(),
        "opening or reading a segment must not look like a change"
    );
    Ok(())
}

#[test]
fn watching_a_missing_directory_is_an_error() {
    let missing = std::path::Path::new("/nonexistent/walship/wal");
    assert!(Watcher::new(missing, LONG, LONG).is_err());
    assert!(Watcher::polling_only(missing, LONG).is_err());
}

/// Whether the watcher asks for a listing within `limit`.
async fn asks_to_list_within(watcher: &Watcher, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if watcher.take_entries_changed() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = tokio::time::timeout(left, watcher.changed()).await;
    }
}

#[tokio::test]
async fn only_entry_events_ask_for_a_new_listing() -> Result {
    let d = tempfile::tempdir()?;
    let path = d.path().join("seg1");
    fs::write(&path, b"x")?;
    let watcher = Watcher::new(d.path(), LONG, LONG)?;
    assert!(!watcher.is_polling_only());
    assert!(watcher.take_entries_changed(), "the first call always lists");
    assert!(!watcher.take_entries_changed(), "nothing happened since");

    // An append wakes the tailer but needs no directory read: wait for its event, and for
    // anything after it, then ask.
    OpenOptions::new().append(true).open(&path)?.write_all(b"more")?;
    tokio::time::timeout(Duration::from_secs(5), watcher.changed()).await?;
    while tokio::time::timeout(Duration::from_millis(50), watcher.changed()).await.is_ok() {}
    assert!(!watcher.take_entries_changed(), "an append is not an entry change");

    // Creating, renaming and removing files are.
    let within = Duration::from_secs(5);
    fs::write(d.path().join("seg2"), b"y")?;
    assert!(asks_to_list_within(&watcher, within).await, "a created file");
    while tokio::time::timeout(Duration::from_millis(50), watcher.changed()).await.is_ok() {}
    let _ = watcher.take_entries_changed();
    assert!(!watcher.take_entries_changed(), "the flag is cleared once taken");
    fs::rename(d.path().join("seg2"), d.path().join("seg3"))?;
    assert!(asks_to_list_within(&watcher, within).await, "a renamed file");
    fs::remove_file(d.path().join("seg3"))?;
    assert!(asks_to_list_within(&watcher, within).await, "a removed file");
    Ok(())
}

#[test]
fn without_events_every_refresh_lists() -> Result {
    let d = tempfile::tempdir()?;
    let watcher = Watcher::polling_only(d.path(), LONG)?;
    assert!(watcher.take_entries_changed());
    assert!(watcher.take_entries_changed(), "a polling-only watcher cannot know; it always lists");
    Ok(())
}

#[tokio::test]
async fn a_poll_interval_without_events_lists_again() -> Result {
    let d = tempfile::tempdir()?;
    let poll = Duration::from_millis(30);
    let watcher = Watcher::new(d.path(), poll, poll)?;
    let listed = Instant::now();
    assert!(watcher.take_entries_changed());
    // Lost events (a full inotify queue, a network file system) are caught by the poll tick.
    while !watcher.take_entries_changed() {
        std::thread::yield_now();
    }
    assert!(listed.elapsed() >= poll, "listed again after {:?}, before the poll interval", listed.elapsed());
    Ok(())
}

/// The names of this process's threads.
fn thread_names() -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for task in fs::read_dir("/proc/self/task")? {
        names.push(fs::read_to_string(task?.path().join("comm"))?.trim().to_string());
    }
    Ok(names)
}

/// Events are read on the runtime's own thread: no watcher thread sits
/// between a write and the task waiting for it.
#[tokio::test]
async fn events_are_read_on_the_runtime_without_a_thread_of_their_own() -> Result {
    let d = tempfile::tempdir()?;
    let before = thread_names()?;
    let watcher = Watcher::new(d.path(), LONG, LONG)?;
    assert!(!watcher.is_polling_only());
    fs::write(d.path().join("seg1"), b"x")?;
    tokio::time::timeout(Duration::from_secs(5), watcher.changed()).await?;
    let after = thread_names()?;
    let new: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
    assert!(new.is_empty(), "the watcher started threads {new:?}");
    assert!(!after.iter().any(|n| n.contains("notify")), "threads: {after:?}");
    Ok(())
}

/// Outside a runtime there is no reactor to read events on: polling, said plainly.
#[test]
fn without_a_runtime_the_watcher_polls() -> Result {
    let d = tempfile::tempdir()?;
    let watcher = Watcher::new(d.path(), LONG, Duration::from_millis(5))?;
    assert!(watcher.is_polling_only());
    assert_eq!(watcher.poll_interval(), Duration::from_millis(5));
    Ok(())
}

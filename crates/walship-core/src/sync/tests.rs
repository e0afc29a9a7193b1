use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn tracker(quorum: u32, timeout: Option<u64>) -> SyncTracker {
    SyncTracker::new(SyncConfig { quorum, level: AckLevel::Flush, timeout: timeout.map(ms) })
}

fn drain(t: &mut SyncTracker) -> Vec<(WaitId, WaitOutcome, u64)> {
    std::iter::from_fn(|| t.poll_released()).map(|r| (r.id, r.outcome, r.position.get())).collect()
}

#[test]
fn quorum_is_the_nth_highest_of_connected() {
    let p = |v: &[u64]| v.iter().map(|x| Position(*x)).collect::<Vec<_>>();
    assert_eq!(SyncTracker::quorum_of(2, &p(&[10, 30, 20])), Some(Position(20)));
    assert_eq!(SyncTracker::quorum_of(3, &p(&[10, 30, 20])), Some(Position(10)));
    assert_eq!(SyncTracker::quorum_of(1, &p(&[10, 30, 20])), Some(Position(30)));
    assert_eq!(SyncTracker::quorum_of(0, &p(&[10, 30])), Some(Position(30)), "async uses the best receiver");
    assert_eq!(SyncTracker::quorum_of(2, &p(&[10])), None, "fewer connected than the quorum");
}

#[test]
fn waiters_are_released_in_position_order_when_the_quorum_covers_them() {
    let t0 = Instant::now();
    let mut t = tracker(2, Some(1000));
    let a = t.register(Position(300), None, t0);
    let b = t.register(Position(100), None, t0);
    let c = t.register(Position(200), None, t0);
    t.update(Some(Position(99)), Position(300), t0 + ms(1));
    assert!(drain(&mut t).is_empty());
    t.update(Some(Position(250)), Position(300), t0 + ms(2));
    assert_eq!(drain(&mut t), [(b, WaitOutcome::Durable, 100), (c, WaitOutcome::Durable, 200)]);
    t.update(Some(Position(300)), Position(300), t0 + ms(3));
    assert_eq!(drain(&mut t), [(a, WaitOutcome::Durable, 300)]);
    // Already covered: released at once.
    let d = t.register(Position(10), None, t0 + ms(4));
    assert_eq!(drain(&mut t), [(d, WaitOutcome::Durable, 10)]);
    assert_eq!(t.state(), SyncState::Sync);
}

#[test]
fn a_sync_timeout_degrades_everyone_and_the_quorum_catching_up_recovers() {
    let t0 = Instant::now();
    let mut t = tracker(2, Some(500));
    let a = t.register(Position(100), None, t0);
    let b = t.register(Position(200), None, t0 + ms(100));
    assert_eq!(t.poll_timeout(), Some(t0 + ms(500)));
    t.handle_timeout(t0 + ms(499));
    assert!(drain(&mut t).is_empty());
    t.handle_timeout(t0 + ms(500));
    assert_eq!(drain(&mut t), [(a, WaitOutcome::Degraded, 100), (b, WaitOutcome::Degraded, 200)]);
    assert_eq!(t.state(), SyncState::Degraded);
    assert_eq!(t.fallbacks(), 1);
    assert!(matches!(t.poll_event(), Some(SyncEvent::Degraded(reason)) if reason.contains("position 100")));
    // While degraded, waits return at once.
    let c = t.register(Position(300), None, t0 + ms(600));
    assert_eq!(drain(&mut t), [(c, WaitOutcome::Degraded, 300)]);
    // Not yet at the end: still degraded.
    t.update(Some(Position(250)), Position(300), t0 + ms(700));
    assert_eq!(t.state(), SyncState::Degraded);
    t.update(Some(Position(300)), Position(300), t0 + ms(800));
    assert_eq!(t.state(), SyncState::Sync);
    assert_eq!(t.poll_event(), Some(SyncEvent::Recovered));
    assert_eq!(t.recoveries(), 1);
}

#[test]
fn the_callers_shorter_timeout_is_a_timeout_not_a_fallback() {
    let t0 = Instant::now();
    let mut t = tracker(1, Some(1000));
    let a = t.register(Position(100), Some(ms(50)), t0);
    let b = t.register(Position(100), None, t0);
    t.handle_timeout(t0 + ms(50));
    assert_eq!(drain(&mut t), [(a, WaitOutcome::Timeout, 100)]);
    assert_eq!(t.state(), SyncState::Sync, "a caller's timeout does not degrade the sender");
    assert_eq!(t.waiting(), 1);
    t.cancel(b);
    assert_eq!(t.waiting(), 0);
}

#[test]
fn never_means_forever_and_async_never_degrades() {
    let t0 = Instant::now();
    let mut t = tracker(1, None);
    t.register(Position(100), None, t0);
    assert_eq!(t.poll_timeout(), None);
    t.handle_timeout(t0 + Duration::from_secs(3600));
    assert!(drain(&mut t).is_empty());
    t.update(Some(Position(100)), Position(100), t0 + Duration::from_secs(3601));
    assert_eq!(drain(&mut t).len(), 1);

    let mut t = tracker(0, Some(100));
    assert_eq!(t.state(), SyncState::Async);
    let a = t.register(Position(100), None, t0);
    t.handle_timeout(t0 + ms(100));
    assert_eq!(drain(&mut t), [(a, WaitOutcome::Degraded, 100)]);
    assert_eq!(t.state(), SyncState::Async, "async mode has nothing to fall back from");
    assert_eq!(t.fallbacks(), 0);
}

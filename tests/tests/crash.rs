//! kill -9 of either side mid-stream: the other side carries on, the
//! restarted side resumes exactly at the durable position, and the mirror
//! ends byte-identical.
use std::time::Duration;

use walship_tests::writer::WriterConfig;
use walship_tests::{Env, Writer, field, file_crcs, wait_durable};

const MIB: u64 = 1 << 20;
const T: Duration = Duration::from_secs(60);

fn writer(env: &Env) -> Writer {
    Writer::start(
        &env.wal,
        WriterConfig {
            total: 128 * MIB,
            segment_size: 8 * MIB,
            chunk: 128 << 10,
            rate: Some(32 * MIB),
            seal_last: true,
        },
    )
}

fn assert_identical(env: &Env) {
    walship_tests::wait_complete(&env.wal, &env.mirror, T);
    let source: Vec<_> = file_crcs(&env.wal, |_| true).into_iter().filter(|f| f.1 > 0).collect();
    let mirror = file_crcs(&env.mirror, |n| !n.ends_with(".partial") && !n.starts_with("walship."));
    assert_eq!(mirror, source, "mirror segments must equal the source's");
}

fn pos(line: &str, key: &str) -> u64 {
    field(line, key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no numeric {key} in {line:?}"))
}

#[test]
fn receiver_killed_mid_stream_resumes_at_its_durable_position() {
    let env = Env::new();
    let mut r1 = env.receiver("receiver", "127.0.0.1:0");
    let addr = field(&r1.wait_log("receiver listening", T), "listen").expect("listen addr");
    let w = writer(&env);
    let mut sender = env.sender("sender", &addr, &[]);
    wait_durable(&env.mirror, 24 * MIB, T);
    assert!(w.written() < 128 * MIB, "the writer must still be writing when the receiver dies");
    r1.kill9();

    // Same address: the sender must find it again by itself.
    let mut r2 = env.receiver("receiver", &addr);
    let recovered = pos(&r2.wait_log_n("mirror recovered", 2, T), "durable_pos");
    assert!(recovered >= 24 * MIB, "recovery kept the durable bytes: {recovered}");
    let accepted = r2.wait_log_n("session accepted", 2, T);
    assert_eq!(pos(&accepted, "resume_pos"), recovered, "the new session resumes at the recovered durable position");
    let streaming = sender.wait_log_n("streaming", 2, T);
    assert_eq!(pos(&streaming, "resume_pos"), recovered, "the sender resumes where the mirror is durable");
    // The restarted process reset the dead session's connection (its
    // stateless-reset key is derived from the TLS key, so the token
    // matches) instead of leaving the sender to the 10 s idle timeout.
    let ended = sender.wait_log("session ended", T);
    assert!(ended.contains("reset by peer"), "the old connection ends by a stateless reset: {ended}");

    let total = w.join();
    wait_durable(&env.mirror, total, T);
    assert_identical(&env);
    assert_eq!(sender.term(), Some(0));
    assert_eq!(r2.term(), Some(0));
    // The restarted receiver got every byte after the durable point exactly once, and none before it.
    let stopped = r2.wait_log("receiver stopped", T);
    assert_eq!(pos(&stopped, "bytes_received"), total - recovered, "nothing durable was re-requested");
}

#[test]
fn sender_killed_mid_stream_restarts_and_resumes_without_resending() {
    let env = Env::new();
    let mut recv = env.receiver("receiver", "127.0.0.1:0");
    let addr = field(&recv.wait_log("receiver listening", T), "listen").expect("listen addr");
    let w = writer(&env);
    let mut s1 = env.sender("sender", &addr, &[]);
    wait_durable(&env.mirror, 24 * MIB, T);
    assert!(w.written() < 128 * MIB, "the writer must still be writing when the sender dies");
    s1.kill9();

    let mut s2 = env.sender("sender", &addr, &[]);
    // The dead sender's session is superseded at once (not after an idle
    // timeout), flushes what it received, and the new one resumes there.
    let closed = recv.wait_log("session closed", T);
    let accepted = recv.wait_log_n("session accepted", 2, T);
    let first_bytes = pos(&closed, "bytes_received");
    assert_eq!(pos(&closed, "flushed_pos"), first_bytes, "everything received was flushed when the session ended");
    assert_eq!(pos(&accepted, "resume_pos"), first_bytes, "the new session resumes after everything received");
    // Both senders log to the same file: the second "streaming" line is the new one.
    let streaming = s2.wait_log_n("streaming", 2, T);
    assert_eq!(pos(&streaming, "resume_pos"), first_bytes);

    let total = w.join();
    wait_durable(&env.mirror, total, T);
    assert_identical(&env);
    assert_eq!(s2.term(), Some(0));
    assert_eq!(recv.term(), Some(0));
    let stopped = recv.wait_log("receiver stopped", T);
    assert_eq!(pos(&stopped, "bytes_received"), total, "every byte crossed the network exactly once");
}

//! A segment that a receiver still needs is truncated or deleted: the
//! sender reports it clearly, keeps running, and writes nothing wrong.
use std::time::Duration;

use walship_tests::Env;

const T: Duration = Duration::from_secs(30);

fn free_udp_port() -> String {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").to_string()
}

fn setup() -> (Env, String) {
    let env = Env::new();
    std::fs::write(env.wal.join("seg-a"), vec![7u8; 1 << 20]).expect("write a");
    std::fs::write(env.wal.join("seg-b"), vec![8u8; 1 << 20]).expect("write b");
    (env, free_udp_port())
}

#[test]
fn truncated_segment_is_an_error_not_a_crash() {
    let (env, addr) = setup();
    // No receiver yet: nothing of seg-a has shipped when it is truncated.
    let mut sender = env.sender("sender", &addr, &[]);
    sender.wait_log("sender started", T);
    std::fs::OpenOptions::new().write(true).open(env.wal.join("seg-a")).expect("open").set_len(100).expect("truncate");
    let recv = env.receiver("receiver", &addr);
    let err = sender.wait_log("truncated", T);
    assert!(err.contains("seg-a"), "names the segment: {err}");
    assert!(sender.exited().is_none(), "the sender must not crash (SIGBUS) or exit");
    // Nothing past the truncation point was written to the mirror.
    let partial = env.mirror.join("seg-a.partial");
    let len = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(len <= 100, "mirror holds {len} bytes of a 100-byte segment");
    drop(recv);
}

#[test]
fn deleted_segment_that_is_still_needed_is_an_error_not_a_crash() {
    let (env, addr) = setup();
    let mut sender = env.sender("sender", &addr, &[]);
    sender.wait_log("sender started", T);
    std::fs::remove_file(env.wal.join("seg-a")).expect("delete");
    let err = sender.wait_log("was removed from", T);
    assert!(err.contains("seg-a") && err.contains("still needed"), "names segment and need: {err}");
    assert!(sender.exited().is_none(), "the sender keeps running");
}

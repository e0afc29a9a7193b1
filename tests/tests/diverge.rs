//! A source that no longer matches its mirror: the sender refuses to
//! resume with a named error, and `walship verify` points at the byte.
use std::os::unix::fs::FileExt;
use std::time::Duration;

use walship_tests::writer::{WriterConfig, segment_name};
use walship_tests::{Env, Writer, field, wait_durable};

const T: Duration = Duration::from_secs(30);

#[test]
fn a_rewritten_source_is_detected_on_resume_and_by_verify() {
    let env = Env::new();
    let recv = env.receiver("receiver", "127.0.0.1:0");
    let addr = field(&recv.wait_log("receiver listening", T), "listen").expect("listen addr");
    let total = Writer::start(
        &env.wal,
        WriterConfig { total: 2 << 20, segment_size: 4 << 20, chunk: 65536, rate: None, seal_last: false },
    )
    .join();
    let mut first = env.sender("sender", &addr, &["--source-id", "db"]);
    wait_durable(&env.mirror, total, T);
    assert_eq!(first.term(), Some(0));

    // The source's history changes just before the mirror's durable point
    // (a restored or rewound primary).
    let at = total - 100;
    let f = std::fs::OpenOptions::new().write(true).open(env.wal.join(segment_name(0))).expect("open segment");
    f.write_all_at(b"X", at).expect("rewrite a byte");

    let second = env.sender("sender", &addr, &["--source-id", "db"]);
    let err = second.wait_log("mirror has diverged from source at position", T);
    assert!(err.contains("crc32"), "says what differs: {err}");
    let refused = recv.wait_log("diverged", T);
    assert!(refused.contains("mirror has diverged"), "the receiver hears why: {refused}");

    let out = env.verify();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "verify exits 1 on a mismatch: {stdout}");
    assert!(stdout.contains(&at.to_string()), "verify names the first differing position {at}: {stdout}");
}

//! `walship restore-wal` as PostgreSQL's restore_command, on a real mirror.
use std::process::Command;
use std::time::Duration;

use walship_tests::writer::{WriterConfig, segment_name};
use walship_tests::{Env, Writer, field, wait_durable};

const T: Duration = Duration::from_secs(30);

fn restore(env: &Env, args: &[&str]) -> (i32, String) {
    let out = Command::new(walship_tests::walship_bin())
        .args(["restore-wal", "--mirror"])
        .arg(&env.mirror)
        .args(args)
        .output()
        .expect("run restore-wal");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn restores_complete_segments_and_partials_only_when_asked() {
    let env = Env::new();
    let recv = env.receiver("receiver", "127.0.0.1:0");
    let to = field(&recv.wait_log("receiver listening", T), "listen").expect("listen");
    let total = Writer::start(
        &env.wal,
        WriterConfig { total: (2 << 20) + 1000, segment_size: 1 << 20, chunk: 65536, rate: None, seal_last: false },
    )
    .join();
    let _sender = env.sender("sender", &to, &[]);
    wait_durable(&env.mirror, total, T);
    // Segment 1 is sealed (segment 2 exists): wait for its final name.
    let deadline = std::time::Instant::now() + T;
    while !env.mirror.join(segment_name(1)).exists() {
        assert!(std::time::Instant::now() < deadline, "segment 1 never completed on the mirror");
        std::thread::sleep(Duration::from_millis(10));
    }

    let dest = env.path("RECOVERYXLOG");
    let (code, err) = restore(&env, &[&segment_name(1), dest.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&dest).expect("restored"), std::fs::read(env.wal.join(segment_name(1))).expect("src"));

    // Not there (yet): exit 1, as PostgreSQL expects, and nothing written.
    let missing = env.path("missing");
    let (code, _) = restore(&env, &[&segment_name(7), missing.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    assert!(!missing.exists());

    // The segment being filled is only served with --partial-ok.
    let last = env.path("LAST");
    let (code, _) = restore(&env, &[&segment_name(2), last.to_str().expect("utf8")]);
    assert_eq!(code, 1, "no partial without --partial-ok");
    let (code, err) = restore(&env, &["--partial-ok", &segment_name(2), last.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("--partial-ok"), "says it served a partial: {err}");
    assert_eq!(std::fs::read(&last).expect("partial"), std::fs::read(env.wal.join(segment_name(2))).expect("src"));

    // Errors exit above 125, so that PostgreSQL aborts recovery instead of
    // taking them for "no such file" and promoting without the later WAL.
    // A name that is not a plain file name is refused outright.
    let (code, err) = restore(&env, &["../walship.control", env.path("x").to_str().expect("utf8")]);
    assert_eq!(code, 126, "{err}");
    // An unreadable segment (here: a directory where the file should be) is an error, not "missing".
    std::fs::create_dir(env.mirror.join(segment_name(9))).expect("dir");
    let (code, err) = restore(&env, &[&segment_name(9), env.path("y").to_str().expect("utf8")]);
    assert_eq!(code, 126, "{err}");
    // A missing mirror directory too.
    let out = std::process::Command::new(walship_tests::walship_bin())
        .args(["restore-wal", "--mirror", "/nonexistent/walship-mirror", &segment_name(1), "/tmp/x"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(126), "{}", String::from_utf8_lossy(&out.stderr));
    // And a usage error (a misspelt flag in restore_command).
    let out = std::process::Command::new(walship_tests::walship_bin())
        .args(["restore-wal", "--mirorr", "x", &segment_name(1), "/tmp/x"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(126), "{}", String::from_utf8_lossy(&out.stderr));
}

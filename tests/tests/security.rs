//! Access control: only certificates from the receiver's CA get in, the
//! sender checks the receiver's name, and a mirror serves one source.
use std::time::Duration;

use walship_tests::writer::WriterConfig;
use walship_tests::{Env, Writer, field, file_crcs, tls_args, wait_durable};

const T: Duration = Duration::from_secs(30);

#[test]
fn client_certificate_from_another_ca_is_refused_and_the_mirror_untouched() {
    let env = Env::new();
    let recv = env.receiver("receiver", "127.0.0.1:0");
    let addr = field(&recv.wait_log("receiver listening", T), "listen").expect("listen addr");
    Writer::start(
        &env.wal,
        WriterConfig { total: 1 << 20, segment_size: 1 << 20, chunk: 4096, rate: None, seal_last: false },
    )
    .join();
    // A complete, valid PKI — just not the receiver's.
    let other = env.path("other-ca");
    let out = std::process::Command::new(walship_tests::walship_bin())
        .args(["cert", "init", "--dir"])
        .arg(&other)
        .output()
        .expect("cert init");
    assert!(out.status.success());
    let mut args = vec!["send".to_string(), "--wal-dir".into(), env.wal.display().to_string(), "--to".into(), addr];
    // Trusts the receiver's CA (so the client side of TLS is happy) but presents a foreign client cert.
    let mut tls = tls_args(&other, "client");
    tls[1] = env.certs.join("ca.pem").display().to_string();
    args.extend(tls);
    let _sender = walship_tests::Proc::spawn("sender", &args, &env.path("sender.log"));
    recv.wait_log("connection refused during handshake", T);
    // Several attempts, all refused; nothing reached the mirror.
    recv.wait_log_n("connection refused during handshake", 2, T);
    assert!(recv.log_lines("session accepted").is_empty(), "no session may start");
    let mut files: Vec<String> = std::fs::read_dir(&env.mirror)
        .expect("mirror dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    // Only what the receiver creates when it opens a mirror: no control file, no segment.
    assert_eq!(files, ["walship.lock", "walship.pos"], "mirror must be untouched");
    assert_eq!(walship_tests::mirror_durable(&env.mirror), 0);
}

#[test]
fn sender_refuses_a_receiver_whose_certificate_lacks_the_name() {
    let env = Env::new();
    let recv = env.receiver("receiver", "127.0.0.1:0");
    let addr = field(&recv.wait_log("receiver listening", T), "listen").expect("listen addr");
    let sender = env.sender("sender", &addr, &["--server-name", "db.example.com"]);
    let line = sender.wait_log("session ended", T);
    assert!(line.contains("certificate") || line.contains("name"), "error should name the certificate problem: {line}");
    assert!(recv.log_lines("session accepted").is_empty());
}

#[test]
fn a_mirror_refuses_a_different_source() {
    let env = Env::new();
    let recv = env.receiver("receiver", "127.0.0.1:0");
    let addr = field(&recv.wait_log("receiver listening", T), "listen").expect("listen addr");
    let total = Writer::start(
        &env.wal,
        WriterConfig { total: 3 << 20, segment_size: 1 << 20, chunk: 65536, rate: None, seal_last: true },
    )
    .join();
    let mut first = env.sender("sender-a", &addr, &["--source-id", "cluster-a"]);
    wait_durable(&env.mirror, total, T);
    walship_tests::wait_complete(&env.wal, &env.mirror, T);
    assert_eq!(first.term(), Some(0));
    recv.wait_log("session closed", T);
    let before = file_crcs(&env.mirror, |_| true);

    let second = env.sender("sender-b", &addr, &["--source-id", "cluster-b"]);
    let refused = recv.wait_log("refused session", T);
    assert!(refused.contains("cluster-a") && refused.contains("cluster-b"), "names both ids: {refused}");
    let err = second.wait_log("mirror holds source", T);
    assert!(err.contains("cluster-a") && err.contains("cluster-b"), "sender names both ids: {err}");
    assert_eq!(file_crcs(&env.mirror, |_| true), before, "mirror untouched, control file included");
}

//! Access control and limits: `--insecure` only when asked for (and said
//! loudly), the client allow-list, the admin endpoint's loopback default and
//! wait token, and peers that stall or lie about lengths.
use std::time::Duration;

use walship_core::proto::{self, control::Msg};
use walship_net::{TlsFiles, close};
use walship_tests::writer::WriterConfig;
use walship_tests::{Env, Proc, Writer, field, file_crcs, tls_args, wait_durable};

const T: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;

fn write_wal(env: &Env, total: u64) -> u64 {
    Writer::start(&env.wal, WriterConfig { total, segment_size: MIB, chunk: 64 << 10, rate: None, seal_last: true })
        .join()
}

fn run(args: &[&str]) -> std::process::Output {
    std::process::Command::new(walship_tests::walship_bin()).args(args).output().expect("run walship")
}

fn listen_addr(p: &Proc) -> String {
    field(&p.wait_log("receiver listening", T), "listen").expect("listen addr")
}

fn assert_identical(env: &Env) {
    walship_tests::wait_complete(&env.wal, &env.mirror, T);
    let source: Vec<_> = file_crcs(&env.wal, |_| true).into_iter().filter(|f| f.1 > 0).collect();
    let mirror = file_crcs(&env.mirror, |n| !n.ends_with(".partial") && !n.starts_with("walship."));
    assert_eq!(mirror, source, "mirror segments must equal the source's");
}

fn mirror_files(env: &Env) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(&env.mirror)
        .map(|d| d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn without_certificates_nothing_starts_unless_insecure_is_explicit() {
    let env = Env::new();
    let dir = env.mirror.display().to_string();
    let out = run(&["receive", "--listen", "127.0.0.1:0", "--dir", &dir]);
    assert_eq!(out.status.code(), Some(1), "a receiver without TLS files must not start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mutual TLS needs --ca, --cert and --key") && err.contains("--ca, --cert, --key"), "{err}");
    assert!(err.contains("--insecure"), "the error names the way out: {err}");
    assert!(!env.mirror.exists(), "nothing was created");
    // Half a set is named precisely.
    let ca = env.certs.join("ca.pem").display().to_string();
    let out = run(&["receive", "--listen", "127.0.0.1:0", "--dir", &dir, "--ca", &ca]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing --cert, --key"), "{err}");
    // --insecure cannot be mixed with certificates (which would mean two different things).
    let out = run(&["receive", "--listen", "127.0.0.1:0", "--dir", &dir, "--insecure", "--ca", &ca]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
}

#[test]
fn insecure_ships_when_both_ends_ask_for_it_and_says_so_loudly() {
    let env = Env::new();
    let args: Vec<String> = ["receive", "--listen", "127.0.0.1:0", "--dir", &env.mirror.display().to_string()]
        .iter()
        .map(|s| s.to_string())
        .chain(["--insecure".to_string()])
        .collect();
    let recv = Proc::spawn("receiver", &args, &env.path("receiver.log"));
    let addr = listen_addr(&recv);
    assert!(!recv.log_lines("INSECURE").is_empty(), "the receiver logs --insecure at error level");
    assert!(recv.log_lines("INSECURE").iter().all(|l| l.contains("ERROR")), "{:?}", recv.log_lines("INSECURE"));

    // A sender that insists on mutual TLS does not trust the throw-away certificate.
    let strict = env.sender("strict", &addr, &[]);
    let line = strict.wait_log("session ended", T);
    assert!(line.contains("certificate") || line.contains("UnknownIssuer"), "{line}");

    let total = write_wal(&env, 3 * MIB);
    drop(strict);
    let wal = env.wal.display().to_string();
    let args: Vec<String> = ["send", "--wal-dir", &wal, "--to", &addr, "--insecure", "--reconnect-min", "50ms"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let sender = Proc::spawn("sender", &args, &env.path("sender.log"));
    wait_durable(&env.mirror, total, T);
    assert_identical(&env);
    assert!(!sender.log_lines("INSECURE").is_empty(), "the sender logs --insecure too");
}

#[test]
fn an_insecure_sender_is_refused_by_a_receiver_that_requires_certificates() {
    let env = Env::new();
    let recv = env.receiver("receiver", "127.0.0.1:0");
    let addr = listen_addr(&recv);
    write_wal(&env, MIB);
    let wal = env.wal.display().to_string();
    let args: Vec<String> =
        ["send", "--wal-dir", &wal, "--to", &addr, "--insecure"].iter().map(|s| s.to_string()).collect();
    let _sender = Proc::spawn("sender", &args, &env.path("sender.log"));
    recv.wait_log_n("connection refused during handshake", 2, T);
    assert!(recv.log_lines("session accepted").is_empty());
    assert_eq!(mirror_files(&env), ["walship.lock", "walship.pos"], "mirror untouched");
}

#[test]
fn the_allow_list_admits_only_the_named_client() {
    let env = Env::new();
    let certs = env.certs.display().to_string();
    for name in ["db1", "db2"] {
        let out = run(&["cert", "client", "--dir", &certs, "--name", name]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("--allow-client {name}")));
    }
    let out = run(&["cert", "client", "--dir", &certs, "--name", "db1"]);
    assert!(!out.status.success(), "an existing certificate is not replaced without --force");
    let out = run(&["cert", "client", "--dir", &certs, "--name", "no spaces"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid client name"), "{out:?}");

    let recv = env.receiver_with("receiver", "127.0.0.1:0", &["--allow-client", "db1,backup-host"]);
    let addr = listen_addr(&recv);
    let total = write_wal(&env, 2 * MIB);
    let sender_with = |name: &str, client: &str| {
        let mut args = vec!["send".to_string(), "--wal-dir".into(), env.wal.display().to_string()];
        args.extend(["--to".into(), addr.clone(), "--reconnect-min".into(), "50ms".into()]);
        let mut tls = tls_args(&env.certs, client);
        tls[1] = env.certs.join("ca.pem").display().to_string();
        args.extend(tls);
        Proc::spawn(name, &args, &env.path(&format!("{name}.log")))
    };
    // Signed by the right CA, but not on the list (nor is the default client certificate).
    let db2 = sender_with("db2", "client-db2");
    let refused = recv.wait_log("not in the receiver's --allow-client list", T);
    assert!(refused.contains("db2"), "the refusal names the certificate: {refused}");
    let line = db2.wait_log("session ended", T);
    assert!(line.contains("--allow-client"), "the sender sees why: {line}");
    drop(db2);
    let default_client = sender_with("default", "client");
    recv.wait_log_n("not in the receiver's --allow-client list", 2, T);
    drop(default_client);
    assert!(recv.log_lines("session accepted").is_empty());
    assert_eq!(mirror_files(&env), ["walship.lock", "walship.pos"], "mirror untouched");

    let _db1 = sender_with("db1", "client-db1");
    wait_durable(&env.mirror, total, T);
    assert_identical(&env);
}

#[test]
fn admin_binds_loopback_for_a_bare_port_and_waits_need_the_token() {
    let env = Env::new();
    let recv = env.receiver("receiver", "127.0.0.1:0");
    let addr = listen_addr(&recv);
    let total = write_wal(&env, MIB);
    let token = env.path("wait.token");
    std::fs::write(&token, "s3cret-token\n").expect("token");
    let token_s = token.display().to_string();
    let sender = env.sender("sender", &addr, &["--admin-addr", "0", "--wait-token-file", &token_s]);
    let admin = field(&sender.wait_log("admin endpoint listening", T), "admin").expect("admin addr");
    assert!(admin.starts_with("127.0.0.1:"), "a bare port binds loopback: {admin}");
    wait_durable(&env.mirror, total, T);

    let agent = walship_tests::http::agent();
    let url = format!("http://{admin}/v1/wait");
    let post = |auth: Option<&str>| {
        let mut req = agent.post(&url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let mut resp = req.send("{}").expect("post");
        (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap_or_default())
    };
    let (status, body) = post(None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("wait token"), "{body}");
    assert_eq!(post(Some("Bearer wrong")).0, 403);
    assert_eq!(post(Some("Bearer s3cret-tokenX")).0, 403);
    let (status, body) = post(Some("Bearer s3cret-token"));
    assert_eq!(status, 200, "{body}");
    // Read-only paths stay open for Prometheus and probes.
    assert!(walship_tests::http::metrics(&admin).contains("walship_"));

    let wait = |extra: &[&str]| {
        let mut args = vec!["wait", "--admin", &admin, "--timeout", "5s"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let out = wait(&[]);
    assert_eq!(out.status.code(), Some(2), "no token: error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{out:?}");
    let out = wait(&["--token-file", &token_s]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("durable"));
}

fn client_tls(env: &Env) -> TlsFiles {
    TlsFiles { ca: env.certs.join("ca.pem"), cert: env.certs.join("client.pem"), key: env.certs.join("client.key") }
}

fn hello() -> Msg {
    Msg::Hello(proto::Hello {
        protocol_version: walship_core::PROTOCOL_VERSION,
        source_id: "access-test".into(),
        format: proto::Format::Raw as i32,
        segment_size: 0,
        timeline: 0,
        sender_name: "raw-client".into(),
        max_frame_len: 1 << 20,
    })
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_peers_are_closed_at_the_handshake_timeout_and_never_block_a_sender() {
    let env = Env::new();
    let recv = env.receiver_with("receiver", "127.0.0.1:0", &["--handshake-timeout", "1s"]);
    let addr: std::net::SocketAddr = listen_addr(&recv).parse().expect("addr");
    let endpoint = walship_net::client_endpoint(addr, &client_tls(&env)).expect("endpoint");
    // One opens nothing after TLS; one opens the control stream and never says hello.
    let silent = walship_net::connect(&endpoint, addr, "localhost").await.expect("connect");
    let mute = walship_net::connect(&endpoint, addr, "localhost").await.expect("connect");
    let (_mute_tx, _mute_rx) = walship_net::control::open(&mute).await.expect("control");

    // A real sender arriving meanwhile is served at once.
    let total = write_wal(&env, 2 * MIB);
    let _sender = env.sender("sender", &addr.to_string(), &[]);
    wait_durable(&env.mirror, total, T);

    for conn in [&silent, &mute] {
        let err = tokio::time::timeout(T, conn.closed()).await.expect("the receiver closes the staller");
        let (code, reason) = close::peer_close(&err).unwrap_or_else(|| panic!("closed by the receiver: {err}"));
        assert_eq!(code, close::PROTOCOL, "{reason}");
        assert!(reason.contains("no hello within 1s"), "{reason}");
    }
    assert_identical(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused_before_tls() {
    let env = Env::new();
    let recv = env.receiver_with(
        "receiver",
        "127.0.0.1:0",
        &["--max-connections", "2", "--handshake-timeout", "60s", "--admin-addr", "0"],
    );
    let addr: std::net::SocketAddr = listen_addr(&recv).parse().expect("addr");
    let admin = field(&recv.wait_log("admin endpoint listening", T), "admin").expect("admin addr");
    let endpoint = walship_net::client_endpoint(addr, &client_tls(&env)).expect("endpoint");
    let a = walship_net::connect(&endpoint, addr, "localhost").await.expect("first");
    let _b = walship_net::connect(&endpoint, addr, "localhost").await.expect("second");
    let third = walship_net::connect(&endpoint, addr, "localhost").await;
    let err = third.expect_err("a third connection is refused");
    assert!(err.to_string().contains("refused"), "{err}");
    recv.wait_log("--max-connections reached", T);
    let lag = walship_tests::http::lag(&admin);
    assert_eq!(lag["connections"]["open"], 2, "{lag}");
    assert!(lag["connections"]["refused"].as_u64() >= Some(1), "{lag}");
    let m = walship_tests::http::metrics(&admin);
    assert!(walship_tests::http::sample(&m, "walship_connections_refused_total", &[]) >= Some(1.0), "{m}");

    // Closing one makes room again.
    a.close(close::NORMAL, b"done");
    let deadline = std::time::Instant::now() + T;
    loop {
        match walship_net::connect(&endpoint, addr, "localhost").await {
            Ok(_c) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("a slot never freed up: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_length_fields_close_the_connection_without_allocating_them() {
    let env = Env::new();
    let recv = env.receiver("receiver", "127.0.0.1:0");
    let addr: std::net::SocketAddr = listen_addr(&recv).parse().expect("addr");
    let endpoint = walship_net::client_endpoint(addr, &client_tls(&env)).expect("endpoint");
    let before = vm_hwm_kib(recv.pid());

    // A control message claiming 4 GiB.
    let conn = walship_net::connect(&endpoint, addr, "localhost").await.expect("connect");
    let (mut send, _recv) = conn.open_bi().await.expect("bi stream");
    send.write_all(&0xFFFF_FFF0u32.to_be_bytes()).await.expect("write");
    send.write_all(&[0u8; 64]).await.expect("write");
    let err = tokio::time::timeout(T, conn.closed()).await.expect("closed");
    let (code, reason) = close::peer_close(&err).unwrap_or_else(|| panic!("closed by the receiver: {err}"));
    assert_eq!(code, close::PROTOCOL, "{reason}");
    assert!(reason.contains("length") || reason.contains("limit") || reason.contains("large"), "{reason}");

    // A data frame header claiming a 4 GiB payload, after a proper hello.
    let conn = walship_net::connect(&endpoint, addr, "localhost").await.expect("connect");
    let (mut ctl_tx, mut ctl_rx) = walship_net::control::open(&conn).await.expect("control");
    ctl_tx.send(hello()).await.expect("hello");
    let Some(Msg::Welcome(_)) = ctl_rx.recv().await.expect("welcome") else { panic!("expected welcome") };
    let mut header = walship_core::frame::encode_header(walship_core::Position(0), 1, b"x").to_vec();
    assert_eq!(header[LEN_AT..LEN_AT + 4], 1u32.to_le_bytes(), "the length field is where FORMAT.md says");
    header[LEN_AT..LEN_AT + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let mut data = conn.open_uni().await.expect("uni");
    data.write_all(&header).await.expect("write");
    data.write_all(&[0u8; 4096]).await.expect("write");
    let err = tokio::time::timeout(T, conn.closed()).await.expect("closed");
    let (code, reason) = close::peer_close(&err).unwrap_or_else(|| panic!("closed by the receiver: {err}"));
    assert_eq!(code, close::BAD_FRAME, "{reason}");
    assert!(reason.contains("4294967280") || reason.contains("length") || reason.contains("payload"), "{reason}");

    let grown = vm_hwm_kib(recv.pid()).saturating_sub(before);
    assert!(grown < 64 * 1024, "the receiver's peak RSS grew by {grown} KiB");
    println!("peak RSS growth over both attacks: {grown} KiB");
}

/// Offset of the header's payload length (proto/FORMAT.md: u32 little-endian at 16).
const LEN_AT: usize = 16;

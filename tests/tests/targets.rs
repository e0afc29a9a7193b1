//! `--to HOST:PORT` is resolved before every connection attempt: a name that
//! does not resolve yet does not stop the sender (it says why in /v1/lag),
//! and a DNS name reaches the receiver.
use std::time::{Duration, Instant};

use walship_tests::{Env, field, http};

const T: Duration = Duration::from_secs(30);

#[test]
fn an_unresolvable_receiver_is_retried_and_a_name_is_resolved() {
    let env = Env::new();
    std::fs::write(env.wal.join("seg-0001"), vec![7u8; 100_000]).expect("segment");
    let mut sender = env.sender("sender", "walship-no-such-host.invalid:7000", &["--admin-addr", "127.0.0.1:0"]);
    let admin = field(&sender.wait_log("admin endpoint listening", T), "admin").expect("admin");
    let deadline = Instant::now() + T;
    loop {
        let lag = http::lag(&admin);
        let err = lag["receivers"][0]["last_error"].as_str().unwrap_or("").to_string();
        if err.contains("resolve") {
            break;
        }
        assert!(Instant::now() < deadline, "no resolution error reported: {lag}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sender.exited().is_none(), "the sender keeps running");
    drop(sender);

    let receiver = env.receiver("receiver", "127.0.0.1:0");
    let addr = field(&receiver.wait_log("receiver listening", T), "listen").expect("listen");
    let port = addr.rsplit_once(':').expect("port").1;
    let _sender = env.sender("sender2", &format!("localhost:{port}"), &[]);
    walship_tests::wait_durable(&env.mirror, 100_000, T);
}

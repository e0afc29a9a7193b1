//! The admin endpoint of real processes: every documented endpoint, the
//! metrics an operator alerts on, `walship status`, and lag that reports a
//! dead receiver instead of going stale.
use std::time::Duration;

use walship_tests::writer::WriterConfig;
use walship_tests::{Env, Writer, field, http, wait_durable};

const T: Duration = Duration::from_secs(30);

/// Polls `f` until it returns `Some`, or panics after `T`.
fn eventually<V>(what: &str, f: impl FnMut() -> Option<V>) -> V {
    walship_tests::eventually(what, T, f)
}

#[test]
fn endpoints_metrics_status_and_a_receiver_that_dies() {
    let env = Env::new();
    let mut recv = env.receiver_with("receiver", "127.0.0.1:0", &["--admin-addr", "127.0.0.1:0"]);
    let to = field(&recv.wait_log("receiver listening", T), "listen").expect("listen");
    let recv_admin = field(&recv.wait_log("admin endpoint listening", T), "admin").expect("admin");
    let sender = env.sender("sender", &to, &["--admin-addr", "127.0.0.1:0", "--rpo-target", "2s"]);
    let admin = field(&sender.wait_log("admin endpoint listening", T), "admin").expect("admin");
    let total = Writer::start(
        &env.wal,
        WriterConfig { total: 4 << 20, segment_size: 1 << 20, chunk: 65536, rate: None, seal_last: false },
    )
    .join();
    wait_durable(&env.mirror, total, T);

    // Caught up: every lag reads exactly zero, not null and not a stale sample.
    let lag = eventually("the sender to see everything flushed", || {
        let l = http::lag(&admin);
        (l["receivers"][0]["flush_pos"] == total).then_some(l)
    });
    assert_eq!(lag["source"]["end_pos"], total);
    let r = &lag["receivers"][0];
    assert_eq!(r["name"], to.as_str());
    assert_eq!(r["state"], "streaming");
    for key in ["write_lag_seconds", "flush_lag_seconds", "apply_lag_seconds"] {
        assert_eq!(r[key].as_f64(), Some(0.0), "{key} when caught up: {r}");
    }
    assert_eq!(r["lag_bytes"], 0);
    assert_eq!(lag["rpo_exposure_seconds"].as_f64(), Some(0.0));
    assert_eq!(lag["sync"]["state"], "async");
    assert_eq!(lag["sync"]["quorum_pos"], total);

    // The metrics an operator alerts on are there, with real values.
    let m = http::metrics(&admin);
    let rl = [("receiver", to.as_str())];
    assert_eq!(http::sample(&m, "walship_source_end_position_bytes", &[]), Some(total as f64));
    assert_eq!(http::sample(&m, "walship_receiver_flushed_position_bytes", &rl), Some(total as f64));
    assert_eq!(http::sample(&m, "walship_receiver_up", &rl), Some(1.0));
    assert_eq!(http::sample(&m, "walship_receiver_lag_bytes", &rl), Some(0.0));
    assert_eq!(http::sample(&m, "walship_rpo_target_seconds", &[]), Some(2.0));
    let flush = http::histogram(&m, "walship_flush_lag_seconds", &rl).expect("flush lag histogram");
    assert!(flush.count > 0, "acks produced flush lag samples");
    assert!(m.contains("walship_sent_bytes_total{receiver="), "counters carry _total");
    let rm = http::metrics(&recv_admin);
    assert_eq!(http::sample(&rm, "walship_mirror_flushed_position_bytes", &[]), Some(total as f64));
    assert_eq!(http::sample(&rm, "walship_received_bytes_total", &[]), Some(total as f64));
    assert!(http::histogram(&rm, "walship_fsync_duration_seconds", &[]).expect("fsync histogram").count > 0);
    let rl_json = http::lag(&recv_admin);
    assert_eq!(rl_json["role"], "receiver");
    assert_eq!(rl_json["flushed_pos"], total);
    assert!(rl_json["seconds_since_last_frame"].as_f64().is_some());

    // The other endpoints.
    assert_eq!(http::get(&admin, "/healthz").trim(), "ok");
    let page = http::get(&admin, "/");
    assert!(page.contains("<title>walship status</title>") && !page.contains("http://") && !page.contains("https://"));
    let (status, _) = http::get_with(&http::agent(), &admin, "/v1/wait").expect("reachable");
    assert_eq!(status, 405, "wait is POST only");

    // walship status renders the same report as a table.
    let out = std::process::Command::new(walship_tests::walship_bin())
        .args(["status", "--admin", &admin])
        .output()
        .expect("run walship status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let row = text.lines().find(|l| l.starts_with(&to)).unwrap_or_else(|| panic!("no row for {to}: {text}"));
    assert!(row.contains("streaming") && row.contains(&total.to_string()), "{row}");

    // The receiver dies while the source grows: the lag grows with the
    // age of the oldest byte it lacks, and it is reported as down.
    recv.kill9();
    std::fs::write(env.wal.join(walship_tests::writer::segment_name(99)), vec![1u8; 4096]).expect("grow the source");
    let l = eventually("lag to show the dead receiver", || {
        let l = http::lag(&admin);
        let r = &l["receivers"][0];
        let lagging = r["lag_bytes"] == 4096 && r["flush_lag_seconds"].as_f64().is_some_and(|s| s >= 0.2);
        (lagging && r["state"] != "streaming").then_some(l)
    });
    assert!(l["rpo_exposure_seconds"].as_f64().is_some_and(|s| s >= 0.2), "{l}");
    let m = http::metrics(&admin);
    assert_eq!(http::sample(&m, "walship_receiver_up", &rl), Some(0.0));
    assert!(http::sample(&m, "walship_receiver_reconnects_total", &rl).is_some_and(|n| n >= 1.0));
}

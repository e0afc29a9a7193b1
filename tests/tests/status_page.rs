//! The sender's status page in a real headless Chromium (through
//! chromedriver's WebDriver API): it shows the receiver streaming, its chart
//! grows, and it loads nothing from anywhere but the admin endpoint.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`; without them
//! the test fails and says so.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use walship_tests::browser::{ChromeDriver, wait_for};
use walship_tests::writer::WriterConfig;
use walship_tests::{Env, Writer, field};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// The receivers table, one array of cell texts per row.
const ROWS_JS: &str = "return Array.from(document.querySelectorAll('#receivers tbody tr'))\
    .map((tr) => Array.from(tr.cells).map((td) => td.textContent));";
const POINTS_JS: &str = "return Number(document.getElementById('chart').dataset.points);";
const RESOURCES_JS: &str = "return { origin: location.origin, \
    names: performance.getEntriesByType('resource').map((e) => e.name) };";

/// `target/test-artifacts`, next to the profile dir that holds this test binary (`target/debug/deps/`).
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let target = exe.ancestors().nth(3).expect("target dir").to_path_buf();
    target.join("test-artifacts")
}

fn rows(v: &Value) -> Vec<Vec<String>> {
    v.as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r.as_array().into_iter().flatten().map(|c| c.as_str().unwrap_or_default().to_string()).collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn status_page_shows_the_receiver_streaming_in_headless_chromium() {
    let started = Instant::now();
    let env = Env::new();
    let recv = env.receiver("receiver", "127.0.0.1:0");
    let addr = field(&recv.wait_log("receiver listening", Duration::from_secs(5)), "listen").expect("listen addr");
    // A steady writer, so that positions and lags change while the page
    // watches. It outlives the test (64 s at 1 MiB/s, one segment) and is
    // left running: the test process ends with the test.
    let writer = Writer::start(
        &env.wal,
        WriterConfig {
            total: 64 * MIB,
            segment_size: 64 * MIB,
            chunk: 32 * KIB as usize,
            rate: Some(MIB),
            seal_last: false,
        },
    );
    writer.wait_written(64 * KIB, Duration::from_secs(10));
    let send = env.sender("sender", &addr, &["--admin-addr", "127.0.0.1:0"]);
    let admin =
        field(&send.wait_log("admin endpoint listening", Duration::from_secs(10)), "admin").expect("admin addr");
    let origin = format!("http://{admin}");

    let driver = ChromeDriver::start(&env.path("chromedriver.log"));
    let profile = env.path("chromium-profile");
    std::fs::create_dir_all(&profile).expect("profile dir");
    let session = driver.session(&profile);
    session.set_window_size(1280, 900);
    session.navigate(&format!("{origin}/"));
    assert_eq!(session.title(), "walship status");

    // One row: the receiver, streaming.
    let row = wait_for("one receiver row, streaming", Duration::from_secs(20), |last| {
        let v = session.execute(ROWS_JS, &[]);
        *last = v.to_string();
        let rows = rows(&v);
        (rows.len() == 1 && rows[0].len() >= 3 && rows[0][1] == "streaming").then(|| rows[0].clone())
    });
    assert_eq!(row[0], addr, "the row names the receiver by its address: {row:?}");
    assert_eq!(
        session.execute("return document.querySelector('h1').textContent;", &[]).as_str(),
        Some("walship sender"),
        "the heading names the role"
    );

    // The chart gains points as the page polls /v1/lag, and the sent
    // position moves with the writer.
    let points0 = session.execute(POINTS_JS, &[]).as_u64().expect("data-points is a number");
    let sent0: u64 = row[2].parse().unwrap_or_else(|_| panic!("sent cell {:?} is a position", row[2]));
    let points = wait_for("two more chart points", Duration::from_secs(15), |last| {
        let p = session.execute(POINTS_JS, &[]).as_u64().unwrap_or(0);
        *last = p.to_string();
        (p >= points0 + 2).then_some(p)
    });
    let sent = wait_for("the sent position to grow", Duration::from_secs(15), |last| {
        let rows = rows(&session.execute(ROWS_JS, &[]));
        let sent = rows.first().and_then(|r| r.get(2)).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        *last = format!("{rows:?}");
        (sent > sent0).then_some(sent)
    });

    // Nothing but the admin endpoint was asked for (no CDN, fonts, analytics).
    let res = session.execute(RESOURCES_JS, &[]);
    assert_eq!(res["origin"].as_str(), Some(origin.as_str()), "page origin");
    let names: Vec<&str> = res["names"].as_array().expect("resource names").iter().filter_map(Value::as_str).collect();
    assert!(names.iter().any(|n| *n == format!("{origin}/v1/lag")), "the page fetched /v1/lag: {names:?}");
    let foreign: Vec<&&str> = names.iter().filter(|n| !n.starts_with(&format!("{origin}/"))).collect();
    assert!(foreign.is_empty(), "requests to other hosts than {origin}: {foreign:?}");

    // A screenshot for a human to look at.
    let png = session.screenshot_png();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "screenshot is a PNG");
    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    let out = dir.join("status-page.png");
    std::fs::write(&out, &png).expect("write screenshot");
    let error = session.execute("return document.getElementById('error').textContent;", &[]);
    assert_eq!(error.as_str(), Some(""), "the page shows no fetch error");

    session.delete();
    drop(driver);
    eprintln!(
        "status page ok in {:?}: row {row:?}, {points} chart points, sent {sent0} -> {sent}, writer at {} bytes; screenshot {}",
        started.elapsed(),
        writer.written(),
        out.display()
    );
}

//! `walship status --admin ADDR [--watch]`: the `/v1/lag` report as a table.
use std::fmt::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

/// Fetches `/v1/lag` from `admin` (`host:port` or a URL).
pub fn fetch(admin: &str) -> Result<Value> {
    let base = if admin.starts_with("http://") { admin.to_string() } else { format!("http://{admin}") };
    let url = format!("{}/v1/lag", base.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
    let mut resp = agent.get(&url).call().with_context(|| format!("cannot reach the admin endpoint {url}"))?;
    resp.body_mut().read_json::<Value>().with_context(|| format!("{url} did not answer with JSON"))
}

fn secs(v: &Value) -> String {
    match v.as_f64() {
        None => "-".into(),
        Some(0.0) => "0".into(),
        Some(s) if s < 0.001 => format!("{:.0}µs", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1e3),
        Some(s) => format!("{s:.2}s"),
    }
}

fn num(v: &Value) -> String {
    v.as_u64().map(|n| n.to_string()).unwrap_or_else(|| "-".into())
}

/// Renders the report as text.
pub fn render(d: &Value) -> String {
    let mut out = String::new();
    if d["role"] == "receiver" {
        let _ = writeln!(
            out,
            "receiver  source {}  connected {}  written {}  flushed {}  last frame {} ago  sessions {}",
            d["source"]["id"].as_str().unwrap_or("none yet"),
            d["source"]["connected"],
            num(&d["written_pos"]),
            num(&d["flushed_pos"]),
            secs(&d["seconds_since_last_frame"]),
            num(&d["sessions"]),
        );
        return out;
    }
    let _ = writeln!(
        out,
        "source {} ({})  end {}  sync {} (quorum {}, level {}, quorum position {})  RPO exposure {}{}",
        d["source"]["id"].as_str().unwrap_or("?"),
        d["source"]["format"].as_str().unwrap_or("?"),
        num(&d["source"]["end_pos"]),
        d["sync"]["state"].as_str().unwrap_or("?"),
        num(&d["sync"]["quorum"]),
        d["sync"]["level"].as_str().unwrap_or("?"),
        num(&d["sync"]["quorum_pos"]),
        secs(&d["rpo_exposure_seconds"]),
        match d["rpo_target_seconds"].as_f64() {
            Some(_) => format!(" (target {})", secs(&d["rpo_target_seconds"])),
            None => String::new(),
        },
    );
    if let Some(err) = d["source"]["error"].as_str() {
        let _ = writeln!(out, "source error: {err}");
    }
    let _ = writeln!(
        out,
        "{:<24} {:<11} {:>14} {:>14} {:>14} {:>12} {:>10} {:>10} {:>10} {:>10}",
        "RECEIVER",
        "STATE",
        "SENT",
        "WRITTEN",
        "FLUSHED",
        "LAG BYTES",
        "WRITE LAG",
        "FLUSH LAG",
        "APPLY LAG",
        "RECONNECTS"
    );
    for r in d["receivers"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<24} {:<11} {:>14} {:>14} {:>14} {:>12} {:>10} {:>10} {:>10} {:>10}",
            r["name"].as_str().unwrap_or("?"),
            r["state"].as_str().unwrap_or("?"),
            num(&r["sent_pos"]),
            num(&r["write_pos"]),
            num(&r["flush_pos"]),
            num(&r["lag_bytes"]),
            secs(&r["write_lag_seconds"]),
            secs(&r["flush_lag_seconds"]),
            secs(&r["apply_lag_seconds"]),
            num(&r["reconnects"]),
        );
        if let Some(e) = r["last_error"].as_str() {
            let _ = writeln!(out, "  last error: {e}");
        }
    }
    out
}

/// Prints once, or every `interval` with `--watch` (redrawing in place).
pub fn run(admin: &str, watch: bool, interval: Duration) -> Result<()> {
    if !watch {
        print!("{}", render(&fetch(admin)?));
        return Ok(());
    }
    loop {
        let text = match fetch(admin) {
            Ok(d) => render(&d),
            Err(e) => format!("error: {e:#}\n"),
        };
        // Home, clear to the end: the table redraws in place without flicker.
        print!("\x1b[H\x1b[2J{text}\n(refreshing every {interval:?}; Ctrl-C to stop)\n");
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_sender_report() {
        let d = serde_json::json!({
            "role": "sender",
            "source": {"id": "db", "format": "raw", "end_pos": 300, "error": null},
            "receivers": [{"name": "r1:7000", "state": "streaming", "sent_pos": 300, "write_pos": 300, "flush_pos": 200,
                "apply_pos": 200, "lag_bytes": 100, "write_lag_seconds": 0.0, "flush_lag_seconds": 0.0042,
                "apply_lag_seconds": 0.0042, "reconnects": 2, "last_error": "connection lost"}],
            "sync": {"quorum": 0, "level": "flush", "state": "async", "quorum_pos": 200},
            "rpo_exposure_seconds": 0.0042, "rpo_target_seconds": 1.0
        });
        let t = render(&d);
        assert!(t.contains("source db (raw)") && t.contains("RPO exposure 4.2ms (target 1.00s)"), "{t}");
        let row = t.lines().find(|l| l.starts_with("r1:7000")).expect("receiver row");
        for field in ["streaming", "300", "200", "100", "4.2ms", "2"] {
            assert!(row.contains(field), "{field} missing in {row}");
        }
        assert!(t.contains("last error: connection lost"));
    }
}

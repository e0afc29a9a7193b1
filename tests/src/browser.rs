//! A real headless Chromium driven through chromedriver's W3C WebDriver
//! HTTP API, for tests of the admin status page.
//!
//! The Debian packages `chromium` and `chromium-driver` provide
//! `/usr/bin/chromium` and `/usr/bin/chromedriver`. When they are missing the
//! test fails (it does not skip) and says what to install.
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What to install when the browser or its driver is missing.
pub const INSTALL_HINT: &str =
    "install the Debian packages `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver)";

/// The Chromium binary the session runs.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Finds `name` in `PATH` (then in /usr/bin).
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A chromedriver child process in its own process group; the group (the
/// driver and any browser it started) is killed when dropped.
#[derive(Debug)]
pub struct ChromeDriver {
    child: Child,
    base: String,
    log: PathBuf,
    agent: ureq::Agent,
}

impl ChromeDriver {
    /// Starts chromedriver on a free 127.0.0.1 port, logging to `log`, and
    /// waits until `GET /status` says it is ready.
    pub fn start(log: &Path) -> ChromeDriver {
        let Some(bin) = which("chromedriver") else {
            panic!("chromedriver is not installed (not in PATH nor /usr/bin): {INSTALL_HINT}");
        };
        assert!(Path::new(CHROMIUM).is_file(), "{CHROMIUM} is missing: {INSTALL_HINT}");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let out = File::create(log).expect("chromedriver log");
        let child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            // Its own group, so that drop can kill the browser with the driver.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL_HINT}", bin.display()));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut d = ChromeDriver { child, base: format!("http://127.0.0.1:{port}"), log: log.to_path_buf(), agent };
        d.wait_ready(Duration::from_secs(30));
        d
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromedriver exited with {status}; {INSTALL_HINT}; log:\n{}", self.log_text());
            }
            let ready = self
                .agent
                .get(format!("{}/status", self.base))
                .config()
                .timeout_global(Some(Duration::from_secs(2)))
                .build()
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "chromedriver not ready within {timeout:?}; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The driver's log (its own and what the browser printed).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A WebDriver command: `method` `path` (relative to the driver) with an
    /// optional JSON body; returns the response's `value`, or panics with the
    /// WebDriver error.
    pub fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            ("POST", b) => self.agent.post(&url).send_json(b.cloned().unwrap_or_else(|| json!({}))),
            _ => panic!("unsupported WebDriver method {method}"),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}; log:\n{}", self.log_text()));
        let status = resp.status();
        let v: Value = resp.body_mut().read_json().unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        assert!(
            status.is_success(),
            "WebDriver {method} {path}: HTTP {status}: {} {}",
            v["value"]["error"],
            v["value"]["message"]
        );
        v["value"].clone()
    }

    /// A new headless Chromium session with a fresh profile in `profile`.
    pub fn session(&self, profile: &Path) -> Session<'_> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let v = self.command("POST", "/session", Some(&caps));
        let id = v["sessionId"].as_str().unwrap_or_else(|| panic!("no sessionId in {v}")).to_string();
        Session { driver: self, id, deleted: false }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and a browser it may have left.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebDriver session; deleted (closing the browser) when dropped.
#[derive(Debug)]
pub struct Session<'a> {
    driver: &'a ChromeDriver,
    pub id: String,
    deleted: bool,
}

impl Session<'_> {
    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.driver.command(method, &format!("/session/{}{path}", self.id), body)
    }

    pub fn navigate(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    pub fn title(&self) -> String {
        self.cmd("GET", "/title", None).as_str().unwrap_or_default().to_string()
    }

    pub fn set_window_size(&self, width: u32, height: u32) {
        self.cmd("POST", "/window/rect", Some(&json!({ "width": width, "height": height })));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns its result.
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.cmd("POST", "/execute/sync", Some(&json!({ "script": script, "args": args })))
    }

    /// A screenshot of the viewport as PNG bytes.
    pub fn screenshot_png(&self) -> Vec<u8> {
        let v = self.cmd("GET", "/screenshot", None);
        let b64 = v.as_str().unwrap_or_else(|| panic!("screenshot is not a string: {v}"));
        base64_decode(b64).unwrap_or_else(|| panic!("screenshot is not base64"))
    }

    /// Deletes the session (closes the browser).
    pub fn delete(mut self) {
        self.deleted = true;
        self.driver.command("DELETE", &format!("/session/{}", self.id), None);
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if !self.deleted {
            // Best effort while unwinding from a failed assertion.
            let _ = self.driver.agent.delete(format!("{}/session/{}", self.driver.base, self.id)).call();
        }
    }
}

/// Polls `f` until it returns `Some`, or panics after `timeout` with
/// `what` and the last value `f` saw (passed through `last`).
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut(&mut String) -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Some(v) = f(&mut last) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}; last seen: {last}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Decodes standard base64 (with or without padding); `None` if malformed.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let s = s.strip_suffix(b"==").or_else(|| s.strip_suffix(b"=")).unwrap_or(&s);
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
        assert_eq!(base64_decode("Zg==").as_deref(), Some(&b"f"[..]));
        assert_eq!(base64_decode("Zm8=").as_deref(), Some(&b"fo"[..]));
        assert_eq!(base64_decode("Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(base64_decode("Zm9vYmFy").as_deref(), Some(&b"foobar"[..]));
        assert_eq!(base64_decode("iVBORw0KGgo=").as_deref(), Some(&b"\x89PNG\r\n\x1a\n"[..]));
        assert_eq!(base64_decode("Zm9v!"), None);
    }
}

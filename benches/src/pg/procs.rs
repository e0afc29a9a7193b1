//! Child processes: logs, the PG* environment, the walship binary.
use super::*;

// ---------------------------------------------------------------- processes

/// A child process with its output in a log file; killed when dropped.
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) name: String,
    pub(crate) child: std::process::Child,
    pub(crate) log: PathBuf,
}

impl Child {
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Child> {
        let f = File::options().create(true).append(true).open(log).with_context(|| format!("{}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Child { name: name.into(), child, log: log.to_path_buf() })
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The latest log line containing `needle` that appeared after byte `from`.
    pub(crate) fn wait_log(&mut self, needle: &str, from: usize, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if let Some(line) = text.get(from..).unwrap_or("").lines().find(|l| l.contains(needle)) {
                return Ok(line.to_string());
            }
            if !self.alive() {
                bail!("{} exited before logging {needle:?}; log:\n{}", self.name, tail(&text, 30));
            }
            if Instant::now() > deadline {
                bail!("{} did not log {needle:?} within {timeout:?}; log:\n{}", self.name, tail(&text, 30));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `signal` (TERM, INT) and wait (SIGKILL after 15 s); Err if it exited unsuccessfully.
    pub(crate) fn stop(&mut self, signal: &str) -> Result<()> {
        if let Ok(Some(st)) = self.child.try_wait() {
            bail!("{} had already exited ({st}); log:\n{}", self.name, tail(&self.log_text(), 30));
        }
        let _ = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait()? {
                if !st.success() {
                    bail!("{} exited with {st} after SIG{signal}; log:\n{}", self.name, tail(&self.log_text(), 30));
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{} did not exit within 15 s of SIG{signal}", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A client program without the caller's PG* environment (PGDATA, PGPORT...).
pub(crate) fn pg_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir("/");
    cmd
}

/// `walship` next to this program, built by cargo with this program's profile.
pub(crate) fn walship_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        if !p.exists() {
            bail!("--walship-bin {} does not exist", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locating this program")?;
    let dir = exe.parent().context("this program has no directory")?.to_path_buf();
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_string();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "walship", "--bin", "walship"]).current_dir(crate::workspace_root());
    // `cargo run` gives this program CARGO_PKG_NAME, CARGO_MANIFEST_DIR...;
    // build scripts (ring's) rerun when those change, so passing them on
    // would rebuild ring and everything above it here, and again at the
    // next plain `cargo build`.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || ["CARGO_CRATE_NAME", "CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_RUSTC_CURRENT_DIR", "OUT_DIR"]
                .contains(&k.as_ref())
        {
            cmd.env_remove(&key);
        }
    }
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    println!("building the walship binary ({profile}) ...");
    let st = cmd.status().context("running cargo build -p walship")?;
    if !st.success() {
        bail!("cargo build -p walship failed ({st})");
    }
    let bin = dir.join("walship");
    if !bin.exists() {
        bail!("{} is missing after cargo build", bin.display());
    }
    Ok(bin)
}

//! A real PostgreSQL cluster for the end-to-end tests: initdb into a temp
//! dir, start and stop with `pg_ctl`, SQL through the sync client, base
//! backups, archive-recovery restores, and a crash in which the whole
//! machine vanishes at once.
//!
//! PostgreSQL refuses to run as root and the tests run as root, so every
//! server-side program runs as the `postgres` user (`runuser -u postgres`),
//! and every directory the server touches must be usable by that user: the
//! cluster's own directories are owned by it, their ancestors made
//! traversable. Directories the tests hand to the server (an archive, a
//! mirror read by `restore_command`) go through [`make_accessible`].
//!
//! Layout under the `root` given to [`PgCluster::init`] for cluster `NAME`:
//! `root/NAME/` is the data dir, `root/NAME.sock/` the unix socket dir and
//! `root/NAME.log` the server log (appended to across restarts).
//!
//! The harness's settings form a block at the end of `postgresql.conf`
//! after [`CONF_MARKER`]; a restore replaces that block, so a restored
//! server keeps none of its source's port, socket or archive settings.
//!
//! The sync client runs a tokio runtime of its own: call the SQL helpers
//! from plain `#[test]`s (or `spawn_blocking`), never inside an async task.
use std::collections::HashSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// First line of the harness's block in `postgresql.conf`.
pub const CONF_MARKER: &str = "# ---- walship test harness: everything below is rewritten by tests/src/pg.rs ----";

const INSTALL_HINT: &str = "install PostgreSQL with `apt-get install -y postgresql` (the CI script does)";

/// Lines of the server log shown when something fails.
const TAIL_LINES: usize = 60;

/// Directory of PostgreSQL's server programs: `$WALSHIP_PG_BINDIR` if set,
/// else the newest Debian `/usr/lib/postgresql/<version>/bin`. Panics with
/// an install hint when there is none: a missing server fails the tests,
/// it never skips them.
pub fn pg_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("WALSHIP_PG_BINDIR") {
            let dir = PathBuf::from(dir);
            assert!(dir.join("initdb").exists(), "WALSHIP_PG_BINDIR={} has no initdb; {INSTALL_HINT}", dir.display());
            return dir;
        }
        let newest = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
            .filter(|(_, bin)| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
            .max();
        match newest {
            Some((_, bin)) => bin,
            None => panic!("PostgreSQL server programs not found in /usr/lib/postgresql/*/bin: {INSTALL_HINT}"),
        }
    })
}

/// Path of PostgreSQL program `name` (`pg_waldump`, `pg_receivewal`, ...).
pub fn pg_bin(name: &str) -> PathBuf {
    pg_bin_dir().join(name)
}

/// Uid and gid of the `postgres` user, from `/etc/passwd`.
pub fn postgres_ids() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| {
        let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == "postgres")
            .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .unwrap_or_else(|| panic!("no postgres user in /etc/passwd: {INSTALL_HINT}"))
    })
}

/// Makes `dir` usable by the postgres user, for directories that
/// `archive_command` or `restore_command` read and write: creates it if
/// missing, gives it and everything in it to postgres (the dir itself mode
/// 0755, so root-run walship processes and the tests still read it), and
/// lets everyone traverse its ancestors.
pub fn make_accessible(dir: &Path) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let dir = dir.canonicalize().unwrap_or_else(|e| panic!("canonicalize {}: {e}", dir.display()));
    if let Some(parent) = dir.parent() {
        traversable(parent);
    }
    chown_tree(&dir);
    set_mode(&dir, 0o755);
}

/// Lets every user pass through `path` and its ancestors (adds `g+x,o+x`
/// where others lack `x`; a 0700 temp dir becomes 0711).
fn traversable(path: &Path) {
    for dir in path.ancestors() {
        let Ok(meta) = fs::metadata(dir) else { continue };
        let mode = meta.permissions().mode();
        if meta.is_dir() && mode & 0o001 == 0 {
            set_mode(dir, (mode | 0o011) & 0o7777);
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Gives `path` and, for a directory, everything below it to postgres.
fn chown_tree(path: &Path) {
    let (uid, gid) = postgres_ids();
    lchown(path, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown postgres {}: {e}", path.display()));
    if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        for entry in fs::read_dir(path).unwrap_or_else(|e| panic!("read dir {}: {e}", path.display())) {
            chown_tree(&entry.expect("dir entry").path());
        }
    }
}

/// Creates `dir` (not its parents' ownership) owned by postgres with `mode`.
fn create_owned_dir(dir: &Path, mode: u32) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    chown_tree(dir);
    set_mode(dir, mode);
}

/// A command running `program` as the postgres user, killed after `timeout`.
fn as_postgres(program: &Path, timeout: Duration) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--", "timeout", "--kill-after=5"])
        .arg(format!("{}s", timeout.as_secs().max(1)))
        .arg(program)
        // postgres may be unable to enter the caller's working directory.
        .current_dir("/")
        .stdin(Stdio::null());
    // A caller's PGDATA, PGPORT, PGHOST... would point the programs elsewhere.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Runs `cmd`; its stdout on success, a description with its output on failure.
fn run(mut cmd: Command, what: &str) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{what}: cannot run: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    Err(format!("{what} failed ({}):\n{stdout}{}", out.status, String::from_utf8_lossy(&out.stderr)))
}

/// A free TCP port on 127.0.0.1 (bound, then released for the server).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// `'value'` with the quoting of `postgresql.conf` (`''` and `\\`).
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// How to make a cluster: [`PgCluster::init`] uses all of it; for
/// [`PgCluster::restore`] the WAL segment size and checksums come from the
/// backup and only the settings and timeout apply.
#[derive(Debug, Clone)]
pub struct PgOptions {
    wal_segsize_mb: u32,
    data_checksums: bool,
    settings: Vec<(String, String)>,
    timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions { wal_segsize_mb: 16, data_checksums: false, settings: Vec::new(), timeout: Duration::from_secs(120) }
    }
}

impl PgOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// `initdb --wal-segsize`, in MiB (a power of two, 1 to 1024; default 16).
    pub fn wal_segsize_mb(mut self, mb: u32) -> Self {
        self.wal_segsize_mb = mb;
        self
    }

    /// `initdb --data-checksums`.
    pub fn data_checksums(mut self, on: bool) -> Self {
        self.data_checksums = on;
        self
    }

    /// `archive_mode = on` and `archive_command = command` (`%p`, `%f` as PostgreSQL expands them).
    pub fn archive(self, command: &str) -> Self {
        self.set("archive_mode", "on").set("archive_command", command)
    }

    /// One more `key = 'value'` line (quoted for the file by the harness);
    /// it comes after the harness's own lines, so it overrides them.
    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.settings.push((key.to_string(), value.to_string()));
        self
    }

    /// Limit for `initdb`, `pg_ctl start`/`stop` and `pg_basebackup` (default 120 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// A base backup on disk, from which [`PgCluster::restore`] makes a cluster.
#[derive(Debug, Clone)]
pub struct BaseBackup {
    dir: PathBuf,
}

impl BaseBackup {
    /// A backup made some other way (a plain-format `pg_basebackup` directory).
    pub fn from_dir(dir: &Path) -> BaseBackup {
        BaseBackup { dir: dir.to_path_buf() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A PostgreSQL cluster in a directory of its own; stopped (immediate mode)
/// when dropped.
#[derive(Debug)]
pub struct PgCluster {
    name: String,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    /// The harness block's lines after the fixed ones: restore settings, then the caller's.
    settings: Vec<(String, String)>,
    timeout: Duration,
    started_at: Option<Instant>,
}

impl PgCluster {
    /// Paths and port for cluster `name` under `root`; creates the socket dir and log file.
    fn layout(root: &Path, name: &str, opts: &PgOptions) -> PgCluster {
        pg_bin_dir();
        fs::create_dir_all(root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
        let root = root.canonicalize().unwrap_or_else(|e| panic!("canonicalize {}: {e}", root.display()));
        traversable(&root);
        let socket_dir = root.join(format!("{name}.sock"));
        // sun_path holds 107 bytes; the socket is `<dir>/.s.PGSQL.<port>`.
        let longest = socket_dir.as_os_str().len() + "/.s.PGSQL.65535".len();
        assert!(
            longest <= 107,
            "socket dir {} is too long for a unix socket: use a shorter root",
            socket_dir.display()
        );
        create_owned_dir(&socket_dir, 0o700);
        let log_file = root.join(format!("{name}.log"));
        fs::write(&log_file, b"").unwrap_or_else(|e| panic!("create {}: {e}", log_file.display()));
        chown_tree(&log_file);
        PgCluster {
            name: name.to_string(),
            data_dir: root.join(name),
            socket_dir,
            log_file,
            port: free_port(),
            settings: Vec::new(),
            timeout: opts.timeout,
            started_at: None,
        }
    }

    /// `initdb` into `root/name` and the harness's settings; not started.
    pub fn init(root: &Path, name: &str, opts: PgOptions) -> PgCluster {
        let mut c = PgCluster::layout(root, name, &opts);
        create_owned_dir(&c.data_dir, 0o700);
        let mut cmd = as_postgres(&pg_bin("initdb"), c.timeout);
        cmd.arg("-D").arg(&c.data_dir);
        cmd.args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"]);
        cmd.arg(format!("--wal-segsize={}", opts.wal_segsize_mb));
        // The tests crash processes, never the machine: the page cache
        // survives, so syncing the fresh cluster only costs time.
        cmd.arg("--no-sync");
        if opts.data_checksums {
            cmd.arg("--data-checksums");
        }
        if let Err(e) = run(cmd, "initdb") {
            panic!("{name}: {e}");
        }
        let hba = c.data_dir.join("pg_hba.conf");
        let mut text = fs::read_to_string(&hba).unwrap_or_else(|e| panic!("read {}: {e}", hba.display()));
        text.push_str("\n# walship test harness: replication connections from this machine\n");
        text.push_str("host replication all 127.0.0.1/32 trust\n");
        fs::write(&hba, text).unwrap_or_else(|e| panic!("write {}: {e}", hba.display()));
        c.settings = opts.settings;
        c.write_conf();
        c
    }

    /// A new cluster `root/name` from `backup` in archive recovery:
    /// `restore_command` fetches WAL, `recovery_target_timeline = 'latest'`,
    /// `recovery.signal` present, a fresh port and socket dir, archiving
    /// off unless `opts` turns it on. Recovery ends when `restore_command`
    /// reports a missing file; the server then promotes itself to a new
    /// timeline (see [`PgCluster::wait_promoted`]). Not started.
    pub fn restore(root: &Path, name: &str, backup: &BaseBackup, restore_command: &str, opts: PgOptions) -> PgCluster {
        let mut c = PgCluster::layout(root, name, &opts);
        fs::create_dir_all(&c.data_dir).unwrap_or_else(|e| panic!("create {}: {e}", c.data_dir.display()));
        copy_tree(&backup.dir, &c.data_dir);
        chown_tree(&c.data_dir);
        set_mode(&c.data_dir, 0o700);
        // Standby mode would wait for more WAL forever instead of promoting.
        let _ = fs::remove_file(c.data_dir.join("standby.signal"));
        let signal = c.data_dir.join("recovery.signal");
        fs::write(&signal, b"").unwrap_or_else(|e| panic!("create {}: {e}", signal.display()));
        chown_tree(&signal);
        c.settings = vec![
            ("restore_command".into(), restore_command.into()),
            ("recovery_target_timeline".into(), "latest".into()),
            ("archive_mode".into(), "off".into()),
        ];
        c.settings.extend(opts.settings);
        c.write_conf();
        c
    }

    /// Rewrites the harness block of `postgresql.conf` from the current port and settings.
    fn write_conf(&self) {
        let path = self.data_dir.join("postgresql.conf");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut text = match text.find(CONF_MARKER) {
            Some(i) => text[..i].to_string(),
            None => text + "\n",
        };
        let fixed = [
            ("listen_addresses", "127.0.0.1".to_string()),
            ("port", self.port.to_string()),
            ("unix_socket_directories", self.socket_dir.display().to_string()),
            ("wal_level", "replica".into()),
            ("max_wal_senders", "10".into()),
            ("fsync", "on".into()),
            ("synchronous_commit", "on".into()),
            ("log_line_prefix", "%m [%p] %b ".into()),
        ];
        text.push_str(CONF_MARKER);
        text.push('\n');
        for (key, value) in fixed
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(self.settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            text.push_str(&format!("{key} = {}\n", conf_quote(value)));
        }
        // Writing keeps the file's owner (postgres).
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// `pg_ctl start -w`: returns once the server accepts connections (a
    /// server in archive recovery: once it is consistent). On failure, the
    /// error carries the server log written by this attempt.
    pub fn try_start(&mut self) -> Result<(), String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let log_from = fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0);
            let mut cmd = as_postgres(&pg_bin("pg_ctl"), self.timeout + Duration::from_secs(10));
            cmd.args(["start", "-w", "-t", &self.timeout.as_secs().max(1).to_string(), "-D"]).arg(&self.data_dir);
            cmd.arg("-l").arg(&self.log_file);
            self.started_at = Some(Instant::now());
            let Err(e) = run(cmd, "pg_ctl start") else { return Ok(()) };
            let log = read_from(&self.log_file, log_from);
            // The port was free when picked; another process may have taken it since.
            if attempt < 3 && log.contains("could not bind") && !self.is_running() {
                self.port = free_port();
                self.write_conf();
                continue;
            }
            self.started_at = None;
            return Err(format!("{}: {e}\nserver log of this start:\n{}", self.name, tail(&log, TAIL_LINES)));
        }
    }

    /// [`PgCluster::try_start`], panicking with the server log on failure.
    pub fn start(&mut self) {
        if let Err(e) = self.try_start() {
            panic!("{e}");
        }
    }

    /// `pg_ctl stop -w -m fast`; panics with the server log on failure.
    pub fn stop(&mut self) {
        self.stop_mode("fast");
    }

    /// `pg_ctl stop -w -m immediate` (no shutdown checkpoint; crash recovery at the next start).
    pub fn stop_immediate(&mut self) {
        self.stop_mode("immediate");
    }

    fn stop_mode(&mut self, mode: &str) {
        let mut cmd = as_postgres(&pg_bin("pg_ctl"), self.timeout + Duration::from_secs(10));
        cmd.args(["stop", "-w", "-m", mode, "-t", &self.timeout.as_secs().max(1).to_string(), "-D"]);
        cmd.arg(&self.data_dir);
        if let Err(e) = run(cmd, "pg_ctl stop") {
            panic!("{}: {e}\nserver log:\n{}", self.name, self.log_tail());
        }
        self.started_at = None;
    }

    /// The machine vanishes: every process of the cluster is frozen, then
    /// killed, with no chance to write, flush or say goodbye.
    pub fn crash(&mut self) {
        self.crash_with(&[]);
    }

    /// [`PgCluster::crash`] with `extra` processes (say a walship sender)
    /// and their descendants frozen and killed in the same sweep. Returns
    /// once all of them are dead. The server's SysV shared memory segment
    /// and lock files go too, as they would with the machine.
    pub fn crash_with(&mut self, extra: &[u32]) {
        let pm = self.pid().unwrap_or_else(|| panic!("{}: crash of a server that is not running", self.name));
        let shmid = self.pid_file_line(6).and_then(|l| l.split_whitespace().nth(1).map(str::to_string));
        let roots: Vec<u32> = std::iter::once(pm).chain(extra.iter().copied()).collect();
        if let Err(e) = sweep(&roots, self.timeout) {
            panic!("{}: {e}\nserver log:\n{}", self.name, self.log_tail());
        }
        // The killed postmaster stays a zombie until init reaps it (here up
        // to 2 s later), and a zombie's pid still answers kill(pid, 0): the
        // next start would take these files for the locks of a running
        // server. After a real crash no process holds them, so remove them.
        let _ = fs::remove_file(self.data_dir.join("postmaster.pid"));
        let _ = fs::remove_file(self.socket_dir.join(format!(".s.PGSQL.{}.lock", self.port)));
        if let Some(id) = shmid.filter(|id| id != "0") {
            let _ = Command::new("ipcrm").args(["-m", &id]).stderr(Stdio::null()).status();
        }
        self.started_at = None;
    }

    /// The postmaster's pid while it runs (from `postmaster.pid`).
    pub fn pid(&self) -> Option<u32> {
        self.pid_file_line(0)?.trim().parse().ok().filter(|&p| is_alive(p))
    }

    /// Whether the postmaster runs.
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// The postmaster and all its descendants (backends, walsenders, archive_command shells).
    pub fn processes(&self) -> Vec<u32> {
        let Some(pm) = self.pid() else { return Vec::new() };
        let table = proc_table();
        let mut found = vec![pm];
        let mut i = 0;
        while i < found.len() {
            let parent = found[i];
            found.extend(table.iter().filter(|p| p.1 == parent).map(|p| p.0));
            i += 1;
        }
        found
    }

    fn pid_file_line(&self, n: usize) -> Option<String> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().nth(n).map(str::to_string)
    }

    /// Polls `SELECT pg_is_in_recovery()` until false and returns the time
    /// since `start` was issued. Panics with the server log if the server
    /// dies or `timeout` passes first.
    pub fn wait_promoted(&self, timeout: Duration) -> Duration {
        let started = self.started_at.unwrap_or_else(|| panic!("{}: wait_promoted before start", self.name));
        self.wait_sql("SELECT pg_is_in_recovery()", "f", timeout);
        started.elapsed()
    }

    /// Polls `query` (through [`PgCluster::sql`]'s text form) until it
    /// gives `want`. Panics with the last answer and the server log if the
    /// server dies or `timeout` passes first.
    pub fn wait_sql(&self, query: &str, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.try_sql(query);
            if got.as_deref().is_ok_and(|g| g == want) {
                return;
            }
            if !self.is_running() || Instant::now() > deadline {
                let why = if self.is_running() { format!("not within {timeout:?}") } else { "server died".into() };
                panic!(
                    "{}: {query:?} never gave {want:?} ({why}); last: {got:?}\nserver log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `data_dir/pg_wal`.
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("pg_wal")
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_file
    }

    /// libpq connection string: TCP on 127.0.0.1, user and database postgres.
    pub fn conninfo(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=10", self.port)
    }

    pub fn try_client(&self) -> Result<postgres::Client, postgres::Error> {
        postgres::Client::connect(&self.conninfo(), postgres::NoTls)
    }

    /// A new connection as postgres to database postgres.
    pub fn client(&self) -> postgres::Client {
        self.try_client().unwrap_or_else(|e| panic!("{}: connect: {e}\nserver log:\n{}", self.name, self.log_tail()))
    }

    /// Every row of `query` (one or more statements, simple protocol), values as text.
    pub fn try_rows(&self, query: &str) -> Result<Vec<Vec<Option<String>>>, postgres::Error> {
        let mut rows = Vec::new();
        for msg in self.try_client()?.simple_query(query)? {
            if let postgres::SimpleQueryMessage::Row(row) = msg {
                rows.push((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect());
            }
        }
        Ok(rows)
    }

    /// [`PgCluster::try_rows`], panicking with the server log on error.
    pub fn rows(&self, query: &str) -> Vec<Vec<Option<String>>> {
        self.try_rows(query)
            .unwrap_or_else(|e| panic!("{}: {query:?}: {e}\nserver log:\n{}", self.name, self.log_tail()))
    }

    /// The text form of `query`'s rows, as `psql -At` prints them: columns
    /// joined by `|`, rows by newlines, NULL as the empty string. One value
    /// for a one-value query, `""` for a statement without rows.
    pub fn try_sql(&self, query: &str) -> Result<String, postgres::Error> {
        let rows = self.try_rows(query)?;
        let line = |r: &Vec<Option<String>>| r.iter().map(|v| v.as_deref().unwrap_or("")).collect::<Vec<_>>().join("|");
        Ok(rows.iter().map(line).collect::<Vec<_>>().join("\n"))
    }

    /// [`PgCluster::try_sql`], panicking with the server log on error.
    pub fn sql(&self, query: &str) -> String {
        self.try_sql(query)
            .unwrap_or_else(|e| panic!("{}: {query:?}: {e}\nserver log:\n{}", self.name, self.log_tail()))
    }

    /// `pg_basebackup -D dest -X stream --checkpoint=fast` from the running server.
    pub fn base_backup(&self, dest: &Path) -> BaseBackup {
        create_owned_dir(dest, 0o700);
        if let Some(parent) = dest.parent() {
            traversable(parent);
        }
        let mut cmd = as_postgres(&pg_bin("pg_basebackup"), self.timeout);
        cmd.arg("-D").arg(dest).args(["-X", "stream", "--checkpoint=fast", "-h", "127.0.0.1", "-U", "postgres"]);
        // As for initdb: processes crash in these tests, the page cache does not.
        cmd.args(["-p", &self.port.to_string(), "--no-sync"]);
        if let Err(e) = run(cmd, "pg_basebackup") {
            panic!("{}: {e}\nserver log:\n{}", self.name, self.log_tail());
        }
        BaseBackup { dir: dest.to_path_buf() }
    }

    /// The whole server log.
    pub fn log_text(&self) -> String {
        read_from(&self.log_file, 0)
    }

    /// The last lines of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log_text(), TAIL_LINES)
    }
}

impl Drop for PgCluster {
    /// Stops a running server in immediate mode, killing it if `pg_ctl`
    /// cannot; never panics.
    fn drop(&mut self) {
        let Some(pm) = self.pid() else { return };
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", "timeout", "30"]).arg(pg_bin_dir().join("pg_ctl"));
        cmd.args(["stop", "-w", "-m", "immediate", "-t", "20", "-D"]).arg(&self.data_dir).current_dir("/");
        let _ = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
        if is_alive(pm) {
            let _ = sweep(&[pm], Duration::from_secs(10));
        }
    }
}

/// Whether `pid` runs (a zombie does not: nobody may ever reap it).
pub fn is_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| stat_fields(&s).is_some_and(|(state, _)| state != 'Z' && state != 'X'))
}

/// State and parent pid from the text of `/proc/<pid>/stat`.
fn stat_fields(stat: &str) -> Option<(char, u32)> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((state, rest.next()?.parse().ok()?))
}

/// (pid, parent pid) of every process.
fn proc_table() -> Vec<(u32, u32)> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat_fields(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?.1)))
        .collect()
}

/// SIGSTOPs `roots` and all their descendants (rescanning until a scan
/// finds nobody new: a frozen process cannot fork), then SIGKILLs them
/// all and waits until none is alive.
fn sweep(roots: &[u32], timeout: Duration) -> Result<(), String> {
    let mut victims: Vec<u32> = roots.iter().copied().filter(|&p| is_alive(p)).collect();
    let mut stopped = HashSet::new();
    loop {
        for &p in &victims {
            if stopped.insert(p) {
                let _ = kill(Pid::from_raw(p as i32), Signal::SIGSTOP);
            }
        }
        let new: Vec<u32> = proc_table()
            .into_iter()
            .filter(|(pid, ppid)| stopped.contains(ppid) && !stopped.contains(pid))
            .map(|p| p.0)
            .collect();
        if new.is_empty() {
            break;
        }
        victims.extend(new);
    }
    for &p in &victims {
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<u32> = victims.iter().copied().filter(|&p| is_alive(p)).collect();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("processes {left:?} still alive {timeout:?} after SIGKILL"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Copies a directory tree, keeping modes and symlinks.
fn copy_tree(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read dir {}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = fs::symlink_metadata(&src).unwrap_or_else(|e| panic!("stat {}: {e}", src.display()));
        if meta.is_dir() {
            fs::create_dir(&dst).unwrap_or_else(|e| panic!("create {}: {e}", dst.display()));
            copy_tree(&src, &dst);
            fs::set_permissions(&dst, meta.permissions()).unwrap_or_else(|e| panic!("chmod {}: {e}", dst.display()));
        } else if meta.is_symlink() {
            let target = fs::read_link(&src).unwrap_or_else(|e| panic!("read link {}: {e}", src.display()));
            std::os::unix::fs::symlink(target, &dst).unwrap_or_else(|e| panic!("symlink {}: {e}", dst.display()));
        } else {
            fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dst.display()));
        }
    }
}

/// The file's text from byte `offset` on ("" if unreadable).
fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = fs::File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

//! `walship-bench all`: every benchmark in turn, one report.
//!
//! ```text
//! cargo run --release -p walship-bench -- all [--quick] [--out target/bench-report] [--skip pg,...]
//! ```
//!
//! Runs the modules one after the other with the arguments in
//! [`Module::argv`] (full: each module's defaults; `--quick`: small runs,
//! a few minutes in all) and writes, in `--out`:
//!
//! * `report.json`: [`AllReport`], every figure of every module;
//! * `plots/*.png`: each module's plots;
//! * `report.md`: the machine, the command and the commit, a summary
//!   against the project's targets, then each module's section and plots.
//!
//! Both files are rewritten after every module, so a long run that is
//! stopped keeps what it measured. A module that fails is reported as
//! failed, with its error, and the run goes on; `all` then exits non-zero.
//!
//! Adding a module: a [`Module`] variant, its arguments in `argv`, an
//! `Option` field in [`AllReport`], an arm in [`AllReport::run_module`]
//! and one in [`AllReport::section`]; its report type goes in the
//! `impl_section!` list.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::pg::PgReport;
use crate::report::Report as ShipReport;
use crate::semisync::WaitReport;

/// `all`'s own options; the modules' come from [`Module::argv`].
#[derive(Debug, clap::Args)]
pub struct AllArgs {
    /// Small runs of every module (a few minutes in all) instead of the
    /// full ones (ship 2 GiB x 3 rounds, ...): to check the harness, not to
    /// quote figures.
    #[arg(long)]
    quick: bool,
    /// Directory for report.md, report.json and plots/ [default: target/bench-report].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Modules not to run, comma separated.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<Module>,
}

/// The benchmark modules, in the order `all` runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Module {
    Ship,
    Wait,
    Pg,
    Sweep,
    Backlog,
    Fan,
}

impl Module {
    const ALL: [Module; 6] = [Module::Ship, Module::Wait, Module::Pg, Module::Sweep, Module::Backlog, Module::Fan];

    fn name(self) -> &'static str {
        match self {
            Module::Ship => "ship",
            Module::Wait => "wait",
            Module::Pg => "pg",
            Module::Sweep => "sweep",
            Module::Backlog => "backlog",
            Module::Fan => "fan",
        }
    }

    /// The module's command-line arguments in `all` (parsed by its own
    /// `clap::Args`, so everything not named here is its default).
    fn argv(self, quick: bool) -> &'static [&'static str] {
        match (self, quick) {
            (Module::Ship, false) => &[],
            (Module::Ship, true) => &["--bytes", "256MiB", "--rounds", "1"],
            (Module::Wait, false) => &[],
            (Module::Wait, true) => &["--commits", "100"],
            (Module::Pg, false) => &[],
            (Module::Pg, true) => &["--seconds", "5", "--rounds", "1", "--scale", "2", "--lag-seconds", "5"],
            (Module::Sweep, false) => &[],
            (Module::Sweep, true) => &["--bytes", "128MiB", "--rounds", "1"],
            (Module::Backlog, false) => &[],
            (Module::Backlog, true) => &["--bytes", "512MiB"],
            (Module::Fan, false) => &[],
            (Module::Fan, true) => &["--bytes", "128MiB"],
        }
    }
}

/// A module's report as `all` uses it.
trait Section {
    fn markdown(&self) -> String;
    fn plots(&self, dir: &Path) -> Result<Vec<(String, PathBuf)>>;
}

/// Every report type has inherent `markdown` and `plots` (the module interface).
macro_rules! impl_section {
    ($($t:ty),* $(,)?) => {$(
        impl Section for $t {
            fn markdown(&self) -> String {
                <$t>::markdown(self)
            }
            fn plots(&self, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
                <$t>::plots(self, dir)
            }
        }
    )*};
}

impl_section!(
    ShipReport,
    WaitReport,
    PgReport,
    crate::sweep::SweepReport,
    crate::backlog::BacklogReport,
    crate::fan::FanReport
);

/// Parses `argv` with `A`'s clap definition, as if given to the module's subcommand.
fn parse_args<A: clap::Args>(name: &'static str, argv: &[&str]) -> Result<A> {
    let cmd = A::augment_args(clap::Command::new(name).no_binary_name(true));
    let m = cmd.try_get_matches_from(argv).with_context(|| format!("parsing {name}'s arguments {argv:?}"))?;
    A::from_arg_matches(&m).with_context(|| format!("reading {name}'s arguments"))
}

/// The machine and the build the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub date_utc: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub git_commit: Option<String>,
    /// `git status` showed changes to tracked files.
    pub git_dirty: bool,
}

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).current_dir(crate::workspace_root()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Host {
    fn probe() -> Host {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_string(), |(_, v)| v.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        Host {
            date_utc: command_output("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]).unwrap_or_else(|| {
                let secs =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                format!("{secs} s since the Unix epoch")
            }),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_string(), |s| s.trim().to_string()),
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: mem_kib / (1u64 << 20) as f64,
            git_commit: command_output("git", &["rev-parse", "--short", "HEAD"]),
            git_dirty: command_output("git", &["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
    Skipped,
}

/// What happened to one module.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub module: Module,
    pub status: Status,
    /// The module's arguments (the rest are its defaults).
    pub args: Vec<String>,
    pub secs: f64,
    pub error: Option<String>,
    /// (caption, path relative to the report's directory).
    pub plots: Vec<(String, String)>,
    /// Drawing failed (the figures are still in the report).
    pub plot_error: Option<String>,
}

/// One of the project's targets, as far as this run measured it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub target: String,
    pub measured: String,
    /// `Some(true)` met, `Some(false)` missed, `None` not measured.
    pub met: Option<bool>,
}

/// Everything one `all` run measured.
#[derive(Debug, Serialize)]
pub struct AllReport {
    pub host: Host,
    pub command: String,
    pub quick: bool,
    pub outcomes: Vec<Outcome>,
    pub targets: Vec<Target>,
    pub ship: Option<ShipReport>,
    pub wait: Option<WaitReport>,
    pub pg: Option<PgReport>,
    pub sweep: Option<crate::sweep::SweepReport>,
    pub backlog: Option<crate::backlog::BacklogReport>,
    pub fan: Option<crate::fan::FanReport>,
}

fn ratio_row(target: &str, num: Option<f64>, den: Option<f64>, bar: f64, what: &str) -> Target {
    match (num, den) {
        (Some(n), Some(d)) => {
            let r = n / d;
            Target {
                target: target.into(),
                measured: format!("{r:.2} ({what}: {n:.1} vs {d:.1} MB/s)"),
                met: Some(r >= bar),
            }
        }
        _ => Target { target: target.into(), measured: "not measured".into(), met: None },
    }
}

impl AllReport {
    /// A report on this host with nothing run yet.
    fn new(command: String, quick: bool) -> AllReport {
        AllReport {
            host: Host::probe(),
            command,
            quick,
            outcomes: Vec::new(),
            targets: Vec::new(),
            ship: None,
            wait: None,
            pg: None,
            sweep: None,
            backlog: None,
            fan: None,
        }
    }

    /// Runs one module and keeps its report. `pg` is synchronous (its
    /// postgres client has a runtime of its own); the others run on `rt`.
    fn run_module(&mut self, m: Module, argv: &[&str], rt: &tokio::runtime::Runtime) -> Result<()> {
        match m {
            Module::Ship => {
                let a: crate::ShipArgs = parse_args(m.name(), argv)?;
                self.ship = Some(rt.block_on(crate::run_ship(&a))?);
            }
            Module::Wait => {
                let a: crate::semisync::WaitArgs = parse_args(m.name(), argv)?;
                self.wait = Some(rt.block_on(crate::semisync::run(&a))?);
            }
            Module::Pg => {
                let a: crate::pg::PgArgs = parse_args(m.name(), argv)?;
                self.pg = Some(crate::pg::run(&a)?);
            }
            Module::Sweep => {
                let a: crate::sweep::SweepArgs = parse_args(m.name(), argv)?;
                self.sweep = Some(rt.block_on(crate::sweep::run(&a))?);
            }
            Module::Backlog => {
                let a: crate::backlog::BacklogArgs = parse_args(m.name(), argv)?;
                self.backlog = Some(rt.block_on(crate::backlog::run(&a))?);
            }
            Module::Fan => {
                let a: crate::fan::FanArgs = parse_args(m.name(), argv)?;
                self.fan = Some(rt.block_on(crate::fan::run(&a))?);
            }
        }
        Ok(())
    }

    /// The module's report, when it ran.
    fn section(&self, m: Module) -> Option<&dyn Section> {
        match m {
            Module::Ship => self.ship.as_ref().map(|r| r as &dyn Section),
            Module::Wait => self.wait.as_ref().map(|r| r as &dyn Section),
            Module::Pg => self.pg.as_ref().map(|r| r as &dyn Section),
            Module::Sweep => self.sweep.as_ref().map(|r| r as &dyn Section),
            Module::Backlog => self.backlog.as_ref().map(|r| r as &dyn Section),
            Module::Fan => self.fan.as_ref().map(|r| r as &dyn Section),
        }
    }

    /// The project's targets, against what this run measured.
    fn compute_targets(&mut self) {
        let mut t = Vec::new();
        let ship = self.ship.as_ref();
        let rate = |f: fn(&ShipReport) -> Option<f64>| ship.and_then(f);
        t.push(ratio_row(
            "throughput, mirror on tmpfs: walship (a) >= 0.8 x bare quinn (b)",
            rate(|s| s.a.as_ref().map(|r| r.mb_per_s)),
            rate(|s| s.b.as_ref().map(|r| r.mb_per_s)),
            crate::report::BAR,
            "a/b",
        ));
        t.push(ratio_row(
            "throughput, mirror on disk: walship (c) >= 0.8 x write + fdatasync (d)",
            rate(|s| s.c.as_ref().map(|r| r.mb_per_s)),
            rate(|s| s.d.as_ref().map(|r| r.mb_per_s)),
            crate::report::BAR,
            "c/d",
        ));

        let lag = self.pg.as_ref().and_then(|p| p.lag.as_ref());
        let target = "flush lag p50 <= 0.5 x pg_receivewal's p50, same run";
        t.push(match lag {
            Some(l) if l.probe_walship_ms.n > 0 && l.probe_pg_ms.n > 0 => {
                let (w, p) = (l.probe_walship_ms.p50, l.probe_pg_ms.p50);
                Target {
                    target: target.into(),
                    measured: format!(
                        "commit -> durable probe: walship {w:.2} ms vs pg_receivewal {p:.2} ms: {:.2} x",
                        w / p
                    ),
                    met: Some(w <= 0.5 * p),
                }
            }
            Some(_) => Target { target: target.into(), measured: "not measured (no probes)".into(), met: None },
            None => Target { target: target.into(), measured: "not measured".into(), met: None },
        });
        let target = "flush lag p99 <= the receiver's own fsync p99 + 1 ms";
        t.push(match lag {
            Some(l) if l.probe_walship_ms.n > 0 && l.receiver_fsync_ms.n > 0 => {
                let (w, f) = (l.probe_walship_ms.p99, l.receiver_fsync_ms.p99);
                Target {
                    target: target.into(),
                    measured: format!(
                        "commit -> durable probe p99 {w:.2} ms vs receiver fdatasync p99 {f:.2} ms \
                         (bucket upper bound) + 1 ms"
                    ),
                    met: Some(w <= f + 1.0),
                }
            }
            Some(_) => Target { target: target.into(), measured: "not measured (no samples)".into(), met: None },
            None => Target { target: target.into(), measured: "not measured".into(), met: None },
        });

        let target = "semi-sync TPS loss <= 0.5 x the loss with pg_receivewal as the sync standby";
        t.push(match &self.pg {
            Some(p) => Target {
                target: target.into(),
                measured: format!(
                    "walship {:.1} % vs pg_receivewal {:.1} %{}",
                    p.loss_b * 100.0,
                    p.loss_c * 100.0,
                    p.loss_ratio.map(|r| format!(" ({r:.2} x)")).unwrap_or_default()
                ),
                met: Some(p.loss_b <= p.target_loss_ratio * p.loss_c),
            },
            None => Target { target: target.into(), measured: "not measured".into(), met: None },
        });
        let target = "sender RSS independent of the backlog size";
        t.push(match &self.backlog {
            Some(b) if b.runs.len() == 2 => {
                let (big, small) = (&b.runs[0], &b.runs[1]);
                Target {
                    target: target.into(),
                    measured: format!(
                        "peak RSS {:.1} MiB with {:.1} GiB backlog vs {:.1} MiB with {:.1} GiB: {:.2} x",
                        big.sender_peak_rss_bytes as f64 / (1u64 << 20) as f64,
                        big.bytes as f64 / (1u64 << 30) as f64,
                        small.sender_peak_rss_bytes as f64 / (1u64 << 20) as f64,
                        small.bytes as f64 / (1u64 << 30) as f64,
                        b.sender_rss_ratio
                    ),
                    met: Some(b.sender_rss_ratio <= 1.25),
                }
            }
            _ => Target { target: target.into(), measured: "not measured".into(), met: None },
        });
        // Bare quinn's ends run on threads of their own, so its sending end's CPU compares with
        // walship's sender process alone (fan, one receiver, mirror on tmpfs), in the same run.
        let target = "sender CPU per GB shipped <= bare quinn's + 20 %";
        let bare = self.backlog.as_ref().and_then(|b| b.bare.as_ref());
        let fan = self.fan.as_ref();
        let one = fan.and_then(|f| f.runs.iter().find(|r| r.receivers == 1));
        t.push(match (bare, one, fan) {
            (Some(bare), Some(one), Some(fan)) => {
                let gb = fan.bytes as f64 / 1e9;
                let both = (one.sender_cpu_secs + one.receiver_cpu_secs.iter().sum::<f64>()) / gb;
                let r = one.sender_cpu_s_per_gb_wal / bare.sender_cpu_s_per_gb;
                Target {
                    target: target.into(),
                    measured: format!(
                        "walship sender {:.2} CPU s/GB vs bare quinn's sending end {:.2}: {r:.2} x; sender + \
                         receiver {both:.2} vs bare's two ends {:.2}: {:.2} x",
                        one.sender_cpu_s_per_gb_wal,
                        bare.sender_cpu_s_per_gb,
                        bare.cpu_s_per_gb,
                        both / bare.cpu_s_per_gb
                    ),
                    met: Some(r <= 1.2),
                }
            }
            _ => Target { target: target.into(), measured: "not measured (needs backlog and fan)".into(), met: None },
        });
        self.targets = t;
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let h = &self.host;
        let _ = writeln!(s, "# walship benchmark report\n");
        let _ = writeln!(s, "- Date: {}", h.date_utc);
        let _ = writeln!(
            s,
            "- Host: Linux {}, {} ({} CPUs), {:.1} GiB memory",
            h.kernel, h.cpu_model, h.cpus, h.memory_gib
        );
        let _ = writeln!(
            s,
            "- Commit: {}{}",
            h.git_commit.as_deref().unwrap_or("unknown (not a git checkout)"),
            if h.git_dirty { " with uncommitted changes" } else { "" }
        );
        let _ = writeln!(s, "- Command: `{}`", self.command);
        let _ = writeln!(
            s,
            "- Mode: {}",
            if self.quick {
                "**quick** (small runs to check the harness; do not quote these figures)"
            } else {
                "full (each module's defaults)"
            }
        );
        let _ = writeln!(s, "\n## Summary against the targets\n");
        let _ = writeln!(s, "| target | measured | status |\n|---|---|---|");
        for t in &self.targets {
            let status = match t.met {
                Some(true) => "met",
                Some(false) => "**MISSED**",
                None => "not measured",
            };
            let _ = writeln!(s, "| {} | {} | {status} |", t.target, t.measured);
        }
        let _ = writeln!(s, "\n## Modules\n");
        let _ = writeln!(s, "| module | status | seconds | arguments (the rest: defaults) |\n|---|---|---:|---|");
        for o in &self.outcomes {
            let status = match o.status {
                Status::Ok if o.plot_error.is_some() => "ok (plots FAILED)",
                Status::Ok => "ok",
                Status::Failed => "**FAILED**",
                Status::Skipped => "not run",
            };
            let _ = writeln!(s, "| {} | {status} | {:.0} | `{}` |", o.module.name(), o.secs, o.args.join(" "));
        }
        for o in &self.outcomes {
            let _ = writeln!(s);
            match (o.status, self.section(o.module)) {
                (Status::Ok, Some(sec)) => {
                    let _ = writeln!(s, "{}", sec.markdown().trim_end());
                    for (caption, path) in &o.plots {
                        let _ = writeln!(s, "\n![{caption}]({path})");
                    }
                    if let Some(e) = &o.plot_error {
                        let _ = writeln!(s, "\nDrawing the plots failed: `{e}`");
                    }
                }
                (Status::Failed, _) => {
                    let _ = writeln!(s, "### {}: FAILED\n", o.module.name());
                    let _ =
                        writeln!(s, "After {:.0} s:\n\n```text\n{}\n```", o.secs, o.error.as_deref().unwrap_or("?"));
                }
                _ => {
                    let _ = writeln!(s, "### {} (not run)\n\nSkipped with `--skip`.", o.module.name());
                }
            }
        }
        s
    }

    /// report.json and report.md, both rewritten whole.
    fn write(&self, out: &Path) -> Result<PathBuf> {
        let json = serde_json::to_string_pretty(self).context("encoding the report")?;
        let path = out.join("report.json");
        std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        let path = out.join("report.md");
        std::fs::write(&path, self.markdown()).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// The run. Synchronous because `pg` must not run inside the tokio runtime.
pub fn run(a: &AllArgs, rt: &tokio::runtime::Runtime) -> Result<()> {
    let out = a.out.clone().unwrap_or_else(|| crate::workspace_root().join("target/bench-report"));
    let plots = out.join("plots");
    std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
    // Plots of an earlier run would sit beside this run's ones unreferenced.
    for e in std::fs::read_dir(&plots).with_context(|| format!("reading {}", plots.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "png") {
            std::fs::remove_file(&p).with_context(|| format!("removing the old plot {}", p.display()))?;
        }
    }
    let mut report = AllReport::new(std::env::args().collect::<Vec<_>>().join(" "), a.quick);
    let todo: Vec<Module> = Module::ALL.into_iter().filter(|m| !a.skip.contains(m)).collect();
    for (i, m) in Module::ALL.into_iter().enumerate() {
        let argv = m.argv(a.quick);
        let mut o = Outcome {
            module: m,
            status: Status::Skipped,
            args: argv.iter().map(|s| s.to_string()).collect(),
            secs: 0.0,
            error: None,
            plots: Vec::new(),
            plot_error: None,
        };
        if todo.contains(&m) {
            println!("\n=== all: {} ({}/{}) {} ===", m.name(), i + 1, Module::ALL.len(), argv.join(" "));
            let t = Instant::now();
            let r = report.run_module(m, argv, rt);
            o.secs = t.elapsed().as_secs_f64();
            match r {
                Ok(()) => o.status = Status::Ok,
                Err(e) => {
                    eprintln!("all: {} failed: {e:#}", m.name());
                    o.status = Status::Failed;
                    o.error = Some(format!("{e:#}"));
                }
            }
            if let Some(sec) = report.section(m) {
                match sec.plots(&plots) {
                    Ok(v) => {
                        o.plots = v
                            .into_iter()
                            .map(|(c, p)| {
                                let rel = p.strip_prefix(&out).map_or_else(|_| p.clone(), Path::to_path_buf);
                                (c, rel.display().to_string())
                            })
                            .collect()
                    }
                    Err(e) => {
                        eprintln!("all: {}'s plots failed: {e:#}", m.name());
                        o.plot_error = Some(format!("{e:#}"));
                    }
                }
            }
        }
        report.outcomes.push(o);
        report.compute_targets();
        report.write(&out)?;
    }
    let md = report.write(&out)?;
    println!("\n| target | measured | status |\n|---|---|---|");
    for t in &report.targets {
        let status = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        println!("| {} | {} | {status} |", t.target, t.measured);
    }
    println!("\nreport: {}\nfigures: {}", md.display(), out.join("report.json").display());
    let failed: Vec<&str> = report
        .outcomes
        .iter()
        .filter(|o| o.status == Status::Failed || o.plot_error.is_some())
        .map(|o| o.module.name())
        .collect();
    if !failed.is_empty() {
        bail!("{} module(s) failed: {} (see {})", failed.len(), failed.join(", "), md.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module's arguments in `all`, full and quick, are ones it accepts.
    #[test]
    fn module_args_parse() -> Result<()> {
        for m in Module::ALL {
            for quick in [false, true] {
                let argv = m.argv(quick);
                match m {
                    Module::Ship => drop(parse_args::<crate::ShipArgs>(m.name(), argv)?),
                    Module::Wait => drop(parse_args::<crate::semisync::WaitArgs>(m.name(), argv)?),
                    Module::Pg => drop(parse_args::<crate::pg::PgArgs>(m.name(), argv)?),
                    Module::Sweep => drop(parse_args::<crate::sweep::SweepArgs>(m.name(), argv)?),
                    Module::Backlog => drop(parse_args::<crate::backlog::BacklogArgs>(m.name(), argv)?),
                    Module::Fan => drop(parse_args::<crate::fan::FanArgs>(m.name(), argv)?),
                }
            }
        }
        assert!(parse_args::<crate::semisync::WaitArgs>("wait", &["--no-such-flag"]).is_err());
        Ok(())
    }

    #[test]
    fn nothing_run_is_not_measured() {
        let mut r = AllReport::new("walship-bench all --skip ship,wait,pg".into(), true);
        for m in Module::ALL {
            r.outcomes.push(Outcome {
                module: m,
                status: Status::Skipped,
                args: Vec::new(),
                secs: 0.0,
                error: None,
                plots: Vec::new(),
                plot_error: None,
            });
        }
        r.compute_targets();
        assert!(r.targets.iter().all(|t| t.met.is_none()));
        let md = r.markdown();
        assert!(md.contains("### pg (not run)"));
        assert!(!md.contains("MISSED"));
    }
}

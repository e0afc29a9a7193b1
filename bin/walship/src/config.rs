//! `--config FILE`: TOML defaults for any flag.
//!
//! The file holds the same keys as the flags (`wal_dir` or `wal-dir`), at
//! the top level (applies to every command that has the flag) or in a table
//! named after the command (`[send]`, `[receive]`, ...), which wins:
//!
//! ```toml
//! ca = "/etc/walship/tls/ca.pem"
//! [send]
//! wal_dir = "/var/lib/app/wal"
//! to = ["standby-1:7000", "standby-2:7000"]
//! cert = "/etc/walship/tls/client.pem"
//! key = "/etc/walship/tls/client.key"
//! ```
//!
//! Precedence: command line, then `WALSHIP_<FLAG>`, then the file, then
//! the built-in default. The file's values become command-line arguments
//! for the flags that neither the command line nor the environment set, so
//! clap parses and validates them like any other; an unknown key is an
//! error naming the file.
use std::ffi::OsString;
use std::path::PathBuf;

use clap::CommandFactory;

use crate::cli::Cli;

/// `args` with the config file's values appended, or an error message.
pub fn apply(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some(path) = config_path(&args) else { return Ok(args) };
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let table: toml::Table =
        text.parse().map_err(|e| format!("config file {} is not valid TOML: {e}", path.display()))?;
    let (names, flags) = command_flags(&args);
    let Some(cmd_name) = names.last() else { return Ok(args) };
    let mut out = args.clone();
    let mut seen = std::collections::BTreeSet::new();
    // The command's own table first, so its keys win over top-level ones.
    let own = table.get(cmd_name.as_str()).and_then(|v| v.as_table()).cloned().unwrap_or_default();
    for (source, entries) in [("table", own), ("top", table.clone())] {
        for (key, value) in entries {
            if value.is_table() {
                continue; // another command's table
            }
            let flag = key.replace('_', "-");
            if flag == "config" || seen.contains(&flag) {
                continue;
            }
            if !flags.contains(&flag) {
                if source == "top" {
                    continue; // a shared key this command does not take
                }
                return Err(format!("config file {}: unknown key {key:?} for `walship {cmd_name}`", path.display()));
            }
            seen.insert(flag.clone());
            let env = format!("WALSHIP_{}", flag.replace('-', "_").to_uppercase());
            let long = format!("--{flag}");
            let on_cli =
                args.iter().any(|a| a.to_str().is_some_and(|a| a == long || a.starts_with(&format!("{long}="))));
            if on_cli || std::env::var_os(&env).is_some() {
                continue;
            }
            push_value(&mut out, &long, &value)
                .map_err(|e| format!("config file {}: key {key:?}: {e}", path.display()))?;
        }
    }
    Ok(out)
}

fn push_value(out: &mut Vec<OsString>, long: &str, value: &toml::Value) -> Result<(), String> {
    match value {
        toml::Value::Boolean(true) => out.push(long.into()),
        toml::Value::Boolean(false) => {}
        toml::Value::Array(items) => {
            for item in items {
                push_value(out, long, item)?;
            }
        }
        toml::Value::String(s) => out.push(format!("{long}={s}").into()),
        toml::Value::Integer(i) => out.push(format!("{long}={i}").into()),
        toml::Value::Float(f) => out.push(format!("{long}={f}").into()),
        other => return Err(format!("unsupported value {other}")),
    }
    Ok(())
}

fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_str().unwrap_or("");
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("WALSHIP_CONFIG").map(PathBuf::from)
}

/// The subcommand path named in `args` (e.g. `["cert", "init"]`) and the
/// long flags its command takes.
fn command_flags(args: &[OsString]) -> (Vec<String>, Vec<String>) {
    let mut cmd = Cli::command();
    let mut names = Vec::new();
    for a in args.iter().skip(1) {
        let Some(s) = a.to_str() else { continue };
        if s.starts_with('-') {
            continue;
        }
        match cmd.find_subcommand(s) {
            Some(sub) => {
                names.push(s.to_string());
                cmd = sub.clone();
            }
            None => break,
        }
    }
    let flags = cmd.get_arguments().filter_map(|a| a.get_long().map(str::to_string)).collect();
    (names, flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn with_file(text: &str, cli: &[&str]) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("walship.toml");
        std::fs::write(&p, text).expect("write");
        let mut a = args(cli);
        a.push("--config".into());
        a.push(p.clone().into());
        apply(a).map(|v| v.into_iter().map(|s| s.into_string().expect("utf8")).collect())
    }

    #[test]
    fn file_fills_only_what_the_command_line_leaves_open() {
        let out = with_file(
            "ca = \"/ca.pem\"\nmax_inflight = \"8MiB\"\n[send]\nto = [\"a:1\", \"b:2\"]\nwal_dir = \"/wal\"\nmax_inflight = \"1MiB\"\n",
            &["walship", "send", "--wal-dir", "/cli-wal"],
        )
        .expect("applies");
        assert!(out.contains(&"--to=a:1".to_string()) && out.contains(&"--to=b:2".to_string()), "{out:?}");
        assert!(out.contains(&"--ca=/ca.pem".to_string()), "top-level keys apply: {out:?}");
        assert!(!out.iter().any(|a| a == "--wal-dir=/wal"), "the command line wins: {out:?}");
        assert!(out.contains(&"--max-inflight=1MiB".to_string()), "the command's table wins: {out:?}");
        assert!(!out.contains(&"--max-inflight=8MiB".to_string()), "{out:?}");
        // And the result parses.
        use clap::Parser;
        let mut full = out.clone();
        full.extend(["--cert=/c".to_string(), "--key=/k".to_string()]);
        let cli = Cli::try_parse_from(full).expect("parses");
        let crate::cli::Command::Send(s) = cli.cmd else { panic!("send") };
        assert_eq!(s.to, ["a:1", "b:2"]);
        assert_eq!(s.max_inflight, 1 << 20);
    }

    #[test]
    fn unknown_keys_and_bad_files_are_named() {
        let e = with_file("[send]\nwal_dri = \"/x\"\n", &["walship", "send"]).expect_err("typo");
        assert!(e.contains("wal_dri") && e.contains("walship.toml"), "{e}");
        let e = with_file("not toml =", &["walship", "send"]).expect_err("syntax");
        assert!(e.contains("not valid TOML"), "{e}");
        let e = apply(args(&["walship", "send", "--config", "/nonexistent/walship.toml"])).expect_err("missing");
        assert!(e.contains("/nonexistent/walship.toml"), "{e}");
    }
}

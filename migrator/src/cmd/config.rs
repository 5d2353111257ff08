//! The migrator's paths without repeating them on every command: `journal`, `sites`, `plan`
//! and the wave control `socket` come, in this order of precedence, from
//! 1. the flag (`--journal`, `--sites`, `--plan`, `--socket`/`--control-socket`),
//! 2. the environment (`HOSTMOVE_JOURNAL`, `HOSTMOVE_SITES`, `HOSTMOVE_PLAN`, `HOSTMOVE_SOCKET`),
//! 3. the config file (`--config FILE`, else `HOSTMOVE_CONFIG`, else
//!    `/etc/hostmove/migrator.toml` when it exists; example: `packaging/etc/migrator.toml`),
//! 4. the command's own default.
//!
//! One walk over the clap command tree ([`apply`]) gives every such argument its environment
//! variable and, when the file sets it, its default: no command repeats the rule, and `--help`
//! (and the man pages) name the variables.

use anyhow::Context;
use serde::Deserialize;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Read when neither `--config` nor `HOSTMOVE_CONFIG` names a file, if it exists.
pub const DEFAULT_PATH: &str = "/etc/hostmove/migrator.toml";
/// The environment variable naming the config file (`--config` wins over it).
pub const CONFIG_ENV: &str = "HOSTMOVE_CONFIG";

/// `/etc/hostmove/migrator.toml`. Every field is optional; an unknown one is an error (a typo
/// would otherwise silently fall back to the default).
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The journal: a SQLite file or a `mysql://` URL (`--journal`).
    pub journal: Option<PathBuf>,
    /// The site spec file (`--sites`).
    pub sites: Option<PathBuf>,
    /// The plan file (`--plan`; also where `migrator plan` writes, its `--out`).
    pub plan: Option<PathBuf>,
    /// A running wave's control socket (`wave run --control-socket`, `wave status|pause|... --socket`).
    pub socket: Option<PathBuf>,
}

/// One setting: its file key, its environment variable and the arguments it fills, each as
/// (top-level subcommand it is limited to, or "" for every command; argument id).
struct Setting {
    key: &'static str,
    env: &'static str,
    args: &'static [(&'static str, &'static str)],
}

const SETTINGS: &[Setting] = &[
    Setting {
        key: "journal",
        env: "HOSTMOVE_JOURNAL",
        args: &[("", "journal")],
    },
    Setting {
        key: "sites",
        env: "HOSTMOVE_SITES",
        args: &[("", "sites")],
    },
    Setting {
        key: "plan",
        env: "HOSTMOVE_PLAN",
        args: &[("", "plan"), ("plan", "out")],
    },
    // `watch --socket` is the change feed's socket, another thing: only the wave's.
    Setting {
        key: "socket",
        env: "HOSTMOVE_SOCKET",
        args: &[("wave", "socket"), ("wave", "control_socket")],
    },
];

impl FileConfig {
    fn get(&self, key: &str) -> Option<&Path> {
        match key {
            "journal" => self.journal.as_deref(),
            "sites" => self.sites.as_deref(),
            "plan" => self.plan.as_deref(),
            "socket" => self.socket.as_deref(),
            _ => None,
        }
    }
}

/// Which config file to read: `--config FILE` (or `--config=FILE`) anywhere on the command
/// line, else `$HOSTMOVE_CONFIG`, else [`DEFAULT_PATH`]. The bool says whether it was asked
/// for (a missing file is then an error; a missing default file is no config).
pub fn config_path(args: &[OsString], env: Option<OsString>) -> (PathBuf, bool) {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            if let Some(v) = it.next() {
                return (PathBuf::from(v), true);
            }
        } else if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return (PathBuf::from(v), true);
        }
    }
    match env {
        Some(v) if !v.is_empty() => (PathBuf::from(v), true),
        _ => (PathBuf::from(DEFAULT_PATH), false),
    }
}

/// Reads the config file; errors name the file and, for a bad value or an unknown field, the
/// line and the field.
pub fn load(path: &Path, asked: bool) -> anyhow::Result<FileConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !asked => {
            return Ok(FileConfig::default())
        }
        Err(e) => return Err(e).with_context(|| format!("config {}", path.display())),
    };
    parse(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
}

fn parse(text: &str) -> Result<FileConfig, String> {
    let config: FileConfig = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| format!("line {}: ", text[..s.start].matches('\n').count() + 1))
            .unwrap_or_default();
        format!("{line}{}", e.message())
    })?;
    for s in SETTINGS {
        if config.get(s.key).is_some_and(|p| p.as_os_str().is_empty()) {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(s.key))
                .map_or(0, |i| i + 1);
            return Err(format!("line {line}: field `{}` is empty", s.key));
        }
    }
    Ok(config)
}

/// Gives every journal/sites/plan/socket argument of `cmd` (recursively) its environment
/// variable and, when `file` sets it, that value as its default (no longer required then).
pub fn apply(cmd: clap::Command, file: &FileConfig) -> clap::Command {
    apply_at(cmd, file, None)
}

fn apply_at(cmd: clap::Command, file: &FileConfig, top: Option<&str>) -> clap::Command {
    let cmd = cmd.mut_args(|arg| {
        if arg.get_long().is_none() {
            return arg;
        }
        let id = arg.get_id().as_str().to_string();
        let Some(s) = SETTINGS.iter().find(|s| {
            s.args
                .iter()
                .any(|(under, a)| *a == id && (under.is_empty() || Some(*under) == top))
        }) else {
            return arg;
        };
        let arg = arg.env(s.env);
        match file.get(s.key) {
            // clap keeps defaults as `&'static`: the few file values live as long as the process.
            Some(v) => {
                let v: &'static std::ffi::OsStr =
                    Box::leak(v.as_os_str().to_os_string().into_boxed_os_str());
                arg.default_value(v).required(false)
            }
            None => arg,
        }
    });
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    let mut cmd = cmd;
    for name in names {
        // The top-level subcommand a nested one belongs to (`wave` for `wave status`).
        let top = top.map(str::to_string).unwrap_or_else(|| name.clone());
        cmd = cmd.mut_subcommand(&name, |sub| apply_at(sub, file, Some(&top)));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_config_path_comes_from_the_flag_then_the_environment_then_the_default() {
        let env = Some(OsString::from("/env.toml"));
        let flag = os(&["status", "--config", "/flag.toml"]);
        assert_eq!(config_path(&flag, env.clone()), ("/flag.toml".into(), true));
        let eq = os(&["--config=/eq.toml", "status"]);
        assert_eq!(config_path(&eq, None), ("/eq.toml".into(), true));
        assert_eq!(
            config_path(&os(&["status"]), env),
            ("/env.toml".into(), true)
        );
        assert_eq!(
            config_path(&os(&["status"]), None),
            (DEFAULT_PATH.into(), false)
        );
        // After `--` it is an operand, not the flag.
        assert!(!config_path(&os(&["x", "--", "--config", "/no"]), None).1);
    }

    /// The example the package installs as /etc/hostmove/migrator.toml loads, and sets the paths
    /// the units rely on.
    #[test]
    fn the_packaged_example_loads() {
        let text = include_str!("../../../packaging/etc/migrator.toml");
        let c = parse(text).unwrap();
        assert_eq!(
            c.journal.as_deref(),
            Some(Path::new("/var/lib/hostmove/journal.sqlite"))
        );
        assert_eq!(
            c.sites.as_deref(),
            Some(Path::new("/etc/hostmove/sites.json"))
        );
        assert!(c.plan.is_some());
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("migrator.toml");
        std::fs::write(&path, "journal = \"/j\"\n\njornal = \"/typo\"\n").unwrap();
        let err = load(&path, true).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("jornal"), "{err}");

        std::fs::write(&path, "sites = \"/s\"\nplan = 5\n").unwrap();
        let err = load(&path, true).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("invalid type"),
            "{err}"
        );

        std::fs::write(&path, "socket = \"\"\n").unwrap();
        let err = load(&path, true).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("`socket`"), "{err}");

        let missing = dir.path().join("missing.toml");
        let err = load(&missing, true).unwrap_err().to_string();
        assert!(err.contains("missing.toml"), "{err}");
        assert_eq!(load(&missing, false).unwrap(), FileConfig::default());
    }

    fn demo() -> Command {
        Command::new("demo")
            .subcommand(
                Command::new("status")
                    .arg(Arg::new("journal").long("journal").required(true))
                    .arg(Arg::new("plan").long("plan").default_value("plan.json")),
            )
            .subcommand(
                Command::new("wave")
                    .subcommand(Command::new("status").arg(Arg::new("socket").long("socket"))),
            )
            .subcommand(Command::new("watch").arg(Arg::new("socket").long("socket")))
    }

    fn value(m: &clap::ArgMatches, path: &[&str], id: &str) -> Option<String> {
        let mut m = m;
        for p in path {
            m = m.subcommand_matches(p).unwrap();
        }
        m.get_one::<String>(id).cloned()
    }

    /// One test: the environment is process-wide (no other test here sets these variables).
    #[test]
    fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
        let file = FileConfig {
            journal: Some("/file/journal".into()),
            plan: Some("/file/plan.json".into()),
            socket: Some("/file/wave.sock".into()),
            ..Default::default()
        };
        let parse = |args: &[&str]| apply(demo(), &file).try_get_matches_from(args).unwrap();
        std::env::remove_var("HOSTMOVE_JOURNAL");
        std::env::remove_var("HOSTMOVE_SOCKET");
        // The file fills a required argument and replaces the command's default.
        let m = parse(&["demo", "status"]);
        assert_eq!(
            value(&m, &["status"], "journal").as_deref(),
            Some("/file/journal")
        );
        assert_eq!(
            value(&m, &["status"], "plan").as_deref(),
            Some("/file/plan.json")
        );
        // The socket only for the wave's controls, not `watch --socket`.
        let m = parse(&["demo", "wave", "status"]);
        assert_eq!(
            value(&m, &["wave", "status"], "socket").as_deref(),
            Some("/file/wave.sock")
        );
        let m = parse(&["demo", "watch"]);
        assert_eq!(value(&m, &["watch"], "socket"), None);
        // The environment beats the file, the flag beats both.
        std::env::set_var("HOSTMOVE_JOURNAL", "/env/journal");
        let m = parse(&["demo", "status"]);
        assert_eq!(
            value(&m, &["status"], "journal").as_deref(),
            Some("/env/journal")
        );
        let m = parse(&["demo", "status", "--journal", "/flag/journal"]);
        assert_eq!(
            value(&m, &["status"], "journal").as_deref(),
            Some("/flag/journal")
        );
        std::env::remove_var("HOSTMOVE_JOURNAL");
        // Without the file, the command's own default and requirement stand.
        let bare = apply(demo(), &FileConfig::default());
        let m = bare
            .clone()
            .try_get_matches_from(["demo", "status", "--journal", "/j"])
            .unwrap();
        assert_eq!(value(&m, &["status"], "plan").as_deref(), Some("plan.json"));
        let err = bare.try_get_matches_from(["demo", "status"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }
}

//! The lab starts `sql-proxy` and `tunnel` from the command lines their systemd units run
//! (issue 22): the unit files the packages install are read here at build time, their
//! `ExecStart=` split into words, and only the host's paths swapped for the lab's (the
//! program, the config file, the state directory). A unit that changes its command line
//! changes the lab's with it; a unit that no longer names a path the lab swaps is an error,
//! not a silent drift.

use crate::error::{LabError, Result};
use std::ffi::OsString;
use std::path::Path;

/// `sql-proxy.service` (the package installs it with `/usr/bin` and `/etc/hostmove` paths:
/// `scripts/package.sh`).
pub const SQL_PROXY_UNIT: &str = include_str!("../../sql-proxy/dist/sql-proxy.service");
/// `tunnel.service`.
pub const TUNNEL_UNIT: &str = include_str!("../../packaging/units/tunnel.service");

/// A unit's command line for the lab: its argv and its `Environment=` (each swapped).
#[derive(Debug, Clone, PartialEq)]
pub struct UnitCommand {
    pub argv: Vec<OsString>,
    pub env: Vec<(String, OsString)>,
}

impl UnitCommand {
    /// A `Command` running it (environment included).
    pub fn command(&self) -> std::process::Command {
        let mut c = std::process::Command::new(&self.argv[0]);
        c.args(&self.argv[1..]);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
}

fn bad(what: String) -> LabError {
    LabError::Command {
        command: "unit file".into(),
        status: "unusable".into(),
        stderr: what,
    }
}

/// The value of every `key=` line of the `[Service]` section, in order.
fn service_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service {
            if let Some(v) = line.strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
                out.push(v.trim());
            }
        }
    }
    out
}

/// The unit's `key` command (`ExecStart`, `ExecStop`) with the program replaced by `program`
/// and every other word equal to a `swap` path replaced by the lab's; `Environment=` values
/// are swapped the same way. Errors when the unit has no such command, uses shell-like
/// syntax this reader does not handle (quotes, `$VAR`, a `-`/`@` prefix), or when a `swap`
/// path appears nowhere (the unit changed: the lab must follow).
pub fn lab_command(
    unit: &str,
    key: &str,
    program: &Path,
    swap: &[(&str, &Path)],
) -> Result<UnitCommand> {
    let lines = service_values(unit, key);
    let [line] = lines.as_slice() else {
        return Err(bad(format!(
            "{key}: expected one line, found {}",
            lines.len()
        )));
    };
    if line.contains(['"', '\'', '$', '\\']) || line.starts_with(['-', '@', '+', '!', ':']) {
        return Err(bad(format!("{key}={line}: quoting, variables or prefixes")));
    }
    let mut used = vec![false; swap.len()];
    let mut swapped = |word: &str| -> OsString {
        match swap.iter().position(|(from, _)| *from == word) {
            Some(i) => {
                used[i] = true;
                swap[i].1.as_os_str().to_os_string()
            }
            None => word.into(),
        }
    };
    let mut words = line.split_whitespace();
    let Some(_unit_program) = words.next() else {
        return Err(bad(format!("{key}= is empty")));
    };
    let mut argv = vec![program.as_os_str().to_os_string()];
    argv.extend(words.map(&mut swapped));
    let mut env = Vec::new();
    for e in service_values(unit, "Environment") {
        for kv in e.split_whitespace() {
            if let Some((k, v)) = kv.split_once('=') {
                env.push((k.to_string(), swapped(v)));
            }
        }
    }
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(bad(format!(
            "{key}: the unit no longer names {} (the lab swaps it for its own)",
            swap[i].0
        )));
    }
    Ok(UnitCommand { argv, env })
}

/// `sql-proxy run` as `sql-proxy.service` starts it, with the lab's binary and config.
pub fn sql_proxy_run(program: &Path, config: &Path) -> Result<UnitCommand> {
    lab_command(
        SQL_PROXY_UNIT,
        "ExecStart",
        program,
        &[("/etc/sql-proxy/proxy.toml", config)],
    )
}

/// `tunnel up` (`ExecStart`) or `tunnel down` (`ExecStop`) as `tunnel.service` runs it, with
/// the lab's binary and config; the side (the unit's `/etc/default/hostmove-tunnel`) and the
/// state directory (the unit's `/run/tunnel`) are the lab's too.
pub fn tunnel(
    key: &str,
    program: &Path,
    config: &Path,
    side: &str,
    state_dir: &Path,
) -> Result<UnitCommand> {
    let mut c = lab_command(
        TUNNEL_UNIT,
        key,
        program,
        &[("/etc/hostmove/tunnel.toml", config)],
    )?;
    c.env.push(("TUNNEL_SIDE".into(), side.into()));
    c.env.push(("TUNNEL_STATE_DIR".into(), state_dir.into()));
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_lab_runs_the_sql_proxy_units_command_line_with_its_own_paths() {
        let c = sql_proxy_run(
            Path::new("/lab/bin/sql-proxy"),
            Path::new("/lab/proxy.toml"),
        )
        .unwrap();
        assert_eq!(
            c.argv,
            os(&["/lab/bin/sql-proxy", "run", "--config", "/lab/proxy.toml"])
        );
        // Nothing else differs from the unit's line: put the unit's paths back and compare.
        let line = service_values(SQL_PROXY_UNIT, "ExecStart")[0];
        let back: Vec<String> = c
            .argv
            .iter()
            .map(|a| a.to_str().unwrap())
            .map(|a| match a {
                "/lab/bin/sql-proxy" => "/usr/local/bin/sql-proxy",
                "/lab/proxy.toml" => "/etc/sql-proxy/proxy.toml",
                a => a,
            })
            .map(String::from)
            .collect();
        assert_eq!(back.join(" "), line);
        assert!(
            c.env.contains(&("RUST_LOG".into(), "info".into())),
            "{:?}",
            c.env
        );
    }

    #[test]
    fn the_lab_runs_the_tunnel_units_up_and_down() {
        let st = Path::new("/lab/run");
        let up = tunnel(
            "ExecStart",
            Path::new("/lab/tunnel"),
            Path::new("/lab/t.toml"),
            "old-dc",
            st,
        )
        .unwrap();
        assert_eq!(up.argv, os(&["/lab/tunnel", "up"]));
        assert!(
            up.env
                .contains(&("TUNNEL_CONFIG".into(), "/lab/t.toml".into())),
            "{:?}",
            up.env
        );
        assert!(
            up.env.contains(&("TUNNEL_SIDE".into(), "old-dc".into())),
            "{:?}",
            up.env
        );
        let down = tunnel(
            "ExecStop",
            Path::new("/lab/tunnel"),
            Path::new("/lab/t.toml"),
            "old-dc",
            st,
        )
        .unwrap();
        assert_eq!(down.argv, os(&["/lab/tunnel", "down"]));
    }

    #[test]
    fn a_unit_that_drifted_from_the_lab_is_an_error() {
        let unit = "[Service]\nExecStart=/usr/bin/sql-proxy run --config /etc/other.toml\n";
        let err = lab_command(
            unit,
            "ExecStart",
            Path::new("/b"),
            &[("/etc/sql-proxy/proxy.toml", Path::new("/l"))],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/etc/sql-proxy/proxy.toml"), "{err}");
        let unit = "[Service]\nExecStart=/usr/bin/x --a ${VAR}\n";
        assert!(lab_command(unit, "ExecStart", Path::new("/b"), &[]).is_err());
        let unit = "[Unit]\nExecStart=/usr/bin/x\n";
        assert!(lab_command(unit, "ExecStart", Path::new("/b"), &[]).is_err());
    }
}

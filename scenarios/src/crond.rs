//! `scenarios crond`: the lab's cron daemon, one per DC (issue 20). A small scheduler with
//! seconds granularity, standing in for the system cron an operator points at the site's
//! `active/crontab` (see `migrator::artifacts::activate`).
//!
//! Every tick (each second) it reads every `STAGE/*/active/crontab`: a site whose `active/`
//! is absent (disabled by a commit point, or never enabled) runs nothing. A line is
//! `SCHEDULE USER COMMAND`: `SCHEDULE` is 6 fields (seconds first) when its sixth word starts
//! with a digit or `*`, else 5 fields, or a `@macro` ([`migrator::artifacts::cron::Schedule`]).
//! A line is due when its latest due time is after the last second checked (a tick that comes
//! late runs a due line once, not once per missed second). Its command runs with `sh -c` in
//! the daemon's namespaces, as the daemon's user (the lab runs as root; a line naming another
//! user runs through `runuser -u USER`), its output appended to the daemon's log.
//!
//! Environment of a command: the daemon's, `PATH` led by the directory of the workspace
//! binaries (`migrator` in the crontab is the workspace's), and the `KEY=VALUE` lines of the
//! env file (`--env-file`, re-read every tick): the migration's `HOSTMOVE_JOURNAL` and
//! `HOSTMOVE_SITES`, so `migrator cron-run` on both DCs checks the same owner token. Without
//! them in either place nothing runs (the fence has no journal to ask): a line
//! `waiting for HOSTMOVE_JOURNAL and HOSTMOVE_SITES` is logged once.

use migrator::artifacts::cron::Schedule;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One job line of a crontab.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub schedule: Schedule,
    pub user: String,
    pub command: String,
}

/// Parses one crontab line; `Ok(None)` for a blank line, a comment or an environment line.
pub fn parse_line(line: &str) -> Result<Option<Line>, String> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    let words: Vec<&str> = t.split_whitespace().collect();
    if !t.starts_with('@') && words.first().is_some_and(|w| w.contains('=')) {
        return Ok(None);
    }
    let n = if t.starts_with('@') {
        1
    } else if words
        .get(5)
        .is_some_and(|w| w.starts_with(|c: char| c.is_ascii_digit() || c == '*'))
    {
        6
    } else {
        5
    };
    if words.len() < n + 2 {
        return Err(format!(
            "{t:?}: needs a schedule ({n} fields), a user and a command"
        ));
    }
    let schedule = Schedule::parse(&words[..n].join(" "))?;
    // The command is the rest of the line as written (quotes and spacing kept).
    let mut rest = t;
    for _ in 0..=n {
        rest = rest.trim_start();
        rest = &rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..];
    }
    Ok(Some(Line {
        schedule,
        user: words[n].to_string(),
        command: rest.trim().to_string(),
    }))
}

/// True when `s` is due at a second in `(last, now]`.
pub fn due(s: &Schedule, last: i64, now: i64) -> bool {
    s.last_due(now).is_some_and(|d| d > last)
}

/// Every job line of every `STAGE/*/active/crontab`, by site (sorted); a line that does not
/// parse is reported as `Err` with its file and line number.
pub fn read_stage(stage: &Path) -> Vec<Result<(String, Line), String>> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(stage) else {
        return out;
    };
    let mut sites: Vec<PathBuf> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    sites.sort();
    for site in sites {
        let file = site.join("active").join("crontab");
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let name = site
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (i, l) in text.lines().enumerate() {
            match parse_line(l) {
                Ok(Some(line)) => out.push(Ok((name.clone(), line))),
                Ok(None) => {}
                Err(e) => out.push(Err(format!("{}:{}: {e}", file.display(), i + 1))),
            }
        }
    }
    out
}

/// The `KEY=VALUE` lines of an env file (absent file: none).
pub fn read_env(file: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// What the daemon runs with.
#[derive(Debug, Clone)]
pub struct Options {
    pub stage: PathBuf,
    pub env_file: Option<PathBuf>,
    /// Put first on the commands' `PATH` (where `migrator` is).
    pub bin_dir: Option<PathBuf>,
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn stamp() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

const NEEDED: [&str; 2] = ["HOSTMOVE_JOURNAL", "HOSTMOVE_SITES"];

/// Runs until killed (SIGTERM's default action: `lab down` stops it by PID).
pub fn run(opts: &Options) -> ! {
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let path = match (&opts.bin_dir, std::env::var("PATH")) {
        (Some(d), Ok(p)) => format!("{}:{p}", d.display()),
        (Some(d), Err(_)) => format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", d.display()),
        (None, Ok(p)) => p,
        (None, Err(_)) => "/usr/sbin:/usr/bin:/sbin:/bin".into(),
    };
    println!(
        "{} crond: stage {}, env file {}",
        stamp(),
        opts.stage.display(),
        opts.env_file
            .as_ref()
            .map_or("-".into(), |p| p.display().to_string())
    );
    let mut children: Vec<(String, Child)> = Vec::new();
    let mut last = now_s();
    let mut waiting_logged = false;
    let mut bad_logged = std::collections::HashSet::new();
    loop {
        // Wake just after the next second begins.
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_millis());
        std::thread::sleep(Duration::from_millis(u64::from(1000 - ms) + 20));
        children.retain_mut(|(what, c)| match c.try_wait() {
            Ok(Some(status)) => {
                println!("{} end {what}: {status}", stamp());
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
        let now = now_s();
        if now <= last {
            continue;
        }
        let mut env: BTreeMap<String, String> = NEEDED
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        if let Some(f) = &opts.env_file {
            env.extend(read_env(f));
        }
        let ready = NEEDED.iter().all(|k| env.contains_key(*k));
        if !ready {
            if !waiting_logged {
                println!(
                    "{} waiting for HOSTMOVE_JOURNAL and HOSTMOVE_SITES (env file or environment)",
                    stamp()
                );
                waiting_logged = true;
            }
            last = now;
            continue;
        }
        waiting_logged = false;
        for entry in read_stage(&opts.stage) {
            let (site, line) = match entry {
                Ok(x) => x,
                Err(e) => {
                    if bad_logged.insert(e.clone()) {
                        println!("{} skipped: {e}", stamp());
                    }
                    continue;
                }
            };
            if !due(&line.schedule, last, now) {
                continue;
            }
            let mut cmd = if line.user == me || (line.user == "root" && me.is_empty()) {
                let mut c = Command::new("sh");
                c.arg("-c").arg(&line.command);
                c
            } else {
                let mut c = Command::new("runuser");
                c.args(["-u", &line.user, "--", "sh", "-c", &line.command]);
                c
            };
            cmd.env("PATH", &path).envs(&env);
            let what = format!("{site} `{}` as {}", line.schedule.text, line.user);
            match cmd.spawn() {
                Ok(c) => {
                    println!("{} start {what} (pid {}) for {now}", stamp(), c.id());
                    children.push((what, c));
                }
                Err(e) => println!("{} could not start {what}: {e}", stamp()),
            }
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_six_and_five_fields_and_a_macro() {
        let l = parse_line(
            "*/10 * * * * * root migrator cron-run --site a --job tick --side old -- sh -c 'php  x'",
        )
        .unwrap()
        .unwrap();
        assert_eq!(l.schedule.text, "*/10 * * * * *");
        assert_eq!(l.user, "root");
        assert_eq!(
            l.command,
            "migrator cron-run --site a --job tick --side old -- sh -c 'php  x'"
        );
        let l = parse_line("*/5 * * * * www-data php /x.php")
            .unwrap()
            .unwrap();
        assert_eq!(l.schedule.text, "*/5 * * * *");
        assert_eq!(
            (l.user.as_str(), l.command.as_str()),
            ("www-data", "php /x.php")
        );
        let l = parse_line("@hourly alice run it").unwrap().unwrap();
        assert_eq!((l.user.as_str(), l.command.as_str()), ("alice", "run it"));
        // Disabled (staged) lines, comments, blank and environment lines run nothing.
        for skip in ["#*/10 * * * * * root x", "# site a", "", "  ", "MAILTO=x"] {
            assert_eq!(parse_line(skip), Ok(None), "{skip:?}");
        }
        let e = parse_line("*/10 * * * * * root").unwrap_err();
        assert!(e.contains("a user and a command"), "{e}");
        let e = parse_line("70 * * * * * root x").unwrap_err();
        assert!(e.contains("second"), "{e}");
    }

    #[test]
    fn a_line_is_due_once_per_due_time_even_after_a_late_tick() {
        let s = Schedule::parse("*/10 * * * * *").unwrap();
        // 1_700_000_000 is a multiple of 10.
        let t = 1_700_000_000;
        assert!(due(&s, t - 1, t));
        assert!(!due(&s, t, t + 1));
        assert!(!due(&s, t + 1, t + 9));
        // A tick 3 s late still runs the slot it passed, once.
        assert!(due(&s, t + 9, t + 13));
        assert!(!due(&s, t + 13, t + 14));
    }

    #[test]
    fn only_active_crontabs_are_read_and_bad_lines_named() {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str, text: &str| {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("a/active/crontab", "# a\n*/10 * * * * * root echo a\n");
        // Staged only (disabled until the switch), and disabled by a commit point.
        w("b/crontab", "#*/10 * * * * * root echo b\n");
        w("c/active.disabled/crontab", "*/10 * * * * * root echo c\n");
        w(
            "d/active/crontab",
            "*/10 * * * * * root echo d\nnot a line at all\n",
        );
        let got = read_stage(d.path());
        let ok: Vec<(String, String)> = got
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|(s, l)| (s.clone(), l.command.clone()))
            .collect();
        assert_eq!(
            ok,
            vec![("a".into(), "echo a".into()), ("d".into(), "echo d".into())]
        );
        let errs: Vec<&String> = got.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("d/active/crontab:2"), "{}", errs[0]);
    }

    #[test]
    fn env_file_lines() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("env");
        std::fs::write(
            &f,
            "# c\nHOSTMOVE_JOURNAL=/j.sqlite\nHOSTMOVE_SITES = /s.json\nnoise\n",
        )
        .unwrap();
        let e = read_env(&f);
        assert_eq!(
            e.get("HOSTMOVE_JOURNAL").map(String::as_str),
            Some("/j.sqlite")
        );
        assert_eq!(e.get("HOSTMOVE_SITES").map(String::as_str), Some("/s.json"));
        assert_eq!(e.len(), 2);
        assert!(read_env(&d.path().join("absent")).is_empty());
    }
}

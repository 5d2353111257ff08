//! Issue 22, as an operator meets the real binary: log lines with timestamps and levels (text
//! or `--log-format json`, no secret in them), and the paths from /etc/hostmove/migrator.toml
//! (here `--config`/`HOSTMOVE_CONFIG`) instead of repeating `--journal`.

use migrator::journal::{JournalStore, SiteState, SqliteJournal};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_migrator")
}

/// Kills the dashboard we started (by its PID) when the test ends, however it ends.
struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `migrator serve` on a fresh journal and returns its stderr lines up to the one
/// naming its address, and the token it printed once on stdout.
fn serve_log(extra: &[&str]) -> (Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_with_shop(dir.path());
    let mut child = Running(
        Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--journal"])
            .arg(&journal)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut token = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut token)
        .unwrap();
    let token = token.trim().rsplit(' ').next().unwrap().to_string();
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(child.0.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.contains("dashboard: http://");
        lines.push(line);
        if done || Instant::now() > deadline {
            break;
        }
    }
    assert!(
        lines.iter().any(|l| l.contains("dashboard: http://")),
        "{lines:?}"
    );
    (lines, token)
}

#[test]
fn dashboard_log_lines_have_timestamp_and_level_and_no_token() {
    let (lines, token) = serve_log(&[]);
    assert!(token.len() >= 16, "{token}");
    for l in &lines {
        let (ts, rest) = l.split_once(' ').unwrap();
        assert!(ts.contains('T') && ts.ends_with('Z'), "no timestamp: {l}");
        assert!(
            rest.trim_start().starts_with("INFO") || rest.trim_start().starts_with("WARN"),
            "no level: {l}"
        );
        assert!(!l.contains('\u{1b}'), "colour codes in a pipe: {l}");
        assert!(!l.contains(&token), "the access token in a log line: {l}");
    }
}

#[test]
fn dashboard_log_lines_as_json() {
    let (lines, token) = serve_log(&["--log-format", "json"]);
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{l}"
        );
        assert_eq!(v["level"], "INFO", "{l}");
        assert!(v["target"].as_str().unwrap().starts_with("migrator"), "{l}");
        assert!(
            v["message"].as_str().unwrap().starts_with("dashboard: "),
            "{l}"
        );
        assert!(!l.contains(&token), "the access token in a log line: {l}");
    }
}

/// A journal in `dir` with one site, `shop`, synced.
fn journal_with_shop(dir: &std::path::Path) -> std::path::PathBuf {
    let journal = dir.join("j.sqlite");
    SqliteJournal::open(&journal)
        .unwrap()
        .set_site_state("shop", SiteState::Synced)
        .unwrap();
    journal
}

#[test]
fn status_reads_the_journal_from_the_config_file_and_the_environment_beats_it() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_with_shop(dir.path());
    let config = dir.path().join("migrator.toml");
    std::fs::write(
        &config,
        format!("journal = {:?}\n", journal.to_str().unwrap()),
    )
    .unwrap();
    let run = |envs: &[(&str, &str)], args: &[&str]| {
        let mut c = Command::new(bin());
        c.args(args)
            .env_remove("HOSTMOVE_JOURNAL")
            .env_remove("HOSTMOVE_SITES");
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let cfg = config.to_str().unwrap();
    for out in [
        run(&[], &["status", "--json", "--config", cfg]),
        run(&[("HOSTMOVE_CONFIG", cfg)], &["status", "--json"]),
    ] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v.to_string().contains("shop"), "{v}");
    }
    let missing = dir.path().join("other.sqlite");
    let out = run(
        &[
            ("HOSTMOVE_CONFIG", cfg),
            ("HOSTMOVE_JOURNAL", missing.to_str().unwrap()),
        ],
        &["status"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("other.sqlite"),
        "{err}"
    );
    // A typo in the file: the file, the line and the field, before anything runs.
    std::fs::write(&config, "journal = \"/j\"\nsites_file = \"/s\"\n").unwrap();
    let out = run(&[], &["status", "--config", cfg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(cfg) && err.contains("line 2") && err.contains("sites_file"),
        "{err}"
    );
}

/// `wave pause --dry-run` says what it would send and records nothing; without it the pause
/// is recorded (so the check above can fail).
#[test]
fn wave_pause_dry_run_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_with_shop(dir.path());
    let j = journal.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .args(["--journal", j, "--wave", "1"])
            .env_remove("HOSTMOVE_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let paused = || {
        let out = run(&["wave", "status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["control"]["paused"].as_bool().unwrap_or(false)
    };
    let out = run(&["wave", "pause", "--dry-run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dry run: would send pause") && err.contains(j),
        "{err}"
    );
    assert!(!paused(), "a dry run paused the wave");
    run(&["wave", "pause"]);
    assert!(paused(), "the real pause was not recorded");
}

#[test]
fn status_lists_at_most_limit_sites_failed_and_in_flight_first() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("j.sqlite");
    let mut j = SqliteJournal::open(&journal).unwrap();
    for i in 0..120 {
        let st = match i {
            100 => SiteState::Failed,
            110 => SiteState::Frozen,
            _ => SiteState::Planned,
        };
        j.set_site_state(&format!("site{i:04}"), st).unwrap();
    }
    drop(j);
    let status = |extra: &[&str]| {
        let out = Command::new(bin())
            .args(["status", "--journal", journal.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let site_lines = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("  site"))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    };
    let text = status(&[]);
    assert!(text.contains("120 sites:"), "{text}");
    let listed = site_lines(&text);
    assert_eq!(listed.len(), 50, "{text}");
    assert_eq!(listed[..2], ["site0100", "site0110"], "{text}");
    assert!(text.contains("... 70 more site(s) not listed"), "{text}");
    let text = status(&["--limit", "3"]);
    assert_eq!(site_lines(&text), ["site0100", "site0110", "site0000"]);
    assert!(text.contains("... 117 more"), "{text}");
    let text = status(&["--all"]);
    assert_eq!(site_lines(&text).len(), 120);
    assert!(!text.contains("more site(s)"), "{text}");
}

/// Two sites sharing a database: `migrator rollback` of one is refused, naming the other and
/// the flag (rolled back alone, the shared database would go back to the old side under the
/// other site, still served by the new web); with --with-group both roll back together.
#[test]
fn rollback_of_a_site_sharing_a_database_needs_with_group_and_then_takes_both() {
    let dir = tempfile::tempdir().unwrap();
    let mut specs = migrator::site_spec::SpecFile::default();
    for name in ["ga", "gb", "other"] {
        let mut s = migrator::site_spec::sample(name);
        if name != "other" {
            s.databases = vec!["db_shared".into()];
        }
        specs.sites.push(s);
    }
    let sites = dir.path().join("sites.json");
    std::fs::write(&sites, serde_json::to_string(&specs).unwrap()).unwrap();
    let journal = dir.path().join("j.sqlite");
    let rollback = |extra: &[&str]| {
        Command::new(bin())
            .args(["rollback", "gb", "--dry-run", "--sites"])
            .arg(&sites)
            .arg("--journal")
            .arg(&journal)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = rollback(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("site gb shares a database with ga") && err.contains("--with-group"),
        "{err}"
    );
    assert!(!err.contains("other"), "{err}");
    let out = rollback(&["--with-group"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for site in ["gb: rolled_back", "ga: rolled_back"] {
        assert!(text.contains(site), "{site}: {text}");
    }
}

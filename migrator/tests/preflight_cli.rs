//! `migrator preflight` end to end (issue 21): a generated inventory whose homes live in a
//! temporary directory (`--home-map`), one with a planted removed PHP function; the JSON
//! lines, the HTML report, the journal (a rerun reads only the home that changed), and the
//! planner keeping the blocked site out with `plan --exclude-from`, `plan explain` saying why;
//! a run SIGKILLed mid-scan resumes without reading finished homes again.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_migrator");

fn migrator(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("migrator {}\n{stdout}{stderr}", args.join(" "));
    (out.status.code().unwrap_or(-1), stdout)
}

fn sites_of(inv: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(inv.join("sites.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_str().unwrap().to_string(),
                v["home"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn preflight_reports_excludes_and_rescans_only_changed_homes() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    let inv = dir.path().join("inv");
    let (rc, _) = migrator(&[
        "inventory",
        "generate",
        "--sites",
        "12",
        "--seed",
        "5",
        "--out",
        &d("inv"),
    ]);
    assert_eq!(rc, 0);
    let sites = sites_of(&inv);
    let root = dir.path().join("filers");
    for (_, home) in &sites {
        let h = root.join(home.trim_start_matches('/'));
        std::fs::create_dir_all(h.join("www")).unwrap();
        std::fs::write(
            h.join("www/index.php"),
            format!("<?php\nrequire '{home}/www/config.php';\necho 'hello';\n"),
        )
        .unwrap();
    }
    let (bad, bad_home) = &sites[3];
    std::fs::write(
        root.join(bad_home.trim_start_matches('/'))
            .join("www/db.php"),
        "<?php\n$c = mysql_connect('h', 'u', 'p');\n",
    )
    .unwrap();
    let map = format!("/homez.={}/homez.", root.display());
    let args = [
        "preflight",
        "--inventory",
        &d("inv"),
        "--home-map",
        &map,
        "--out",
        &d("p.jsonl"),
        "--html",
        &d("p.html"),
        "--journal",
        &d("j.sqlite"),
    ];
    let (rc, out) = migrator(&args);
    assert_eq!(rc, 3, "a blocked site exits 3");
    assert!(
        out.contains("12 sites: 11 ok, 0 warn, 1 blocked (12 homes read, 0 unchanged"),
        "{out}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(d("p.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    let b = lines.iter().find(|l| l["site"] == bad.as_str()).unwrap();
    assert_eq!(b["verdict"], "blocked");
    assert_eq!(b["findings"][0]["rule"], "php.mysql_ext");
    assert_eq!(b["findings"][0]["where"]["path"], "www/db.php");
    assert_eq!(b["findings"][0]["where"]["line"], 2);
    assert!(lines
        .iter()
        .filter(|l| l["site"] != bad.as_str())
        .all(|l| l["verdict"] == "ok"));
    let html = std::fs::read_to_string(d("p.html")).unwrap();
    assert!(html.contains("www/db.php:2") && html.contains(bad.as_str()));

    // A rerun reads nothing; a changed home is read again.
    let (_, out) = migrator(&args);
    assert!(out.contains("(0 homes read, 12 unchanged"), "{out}");
    let (other, other_home) = &sites[7];
    std::fs::write(
        root.join(other_home.trim_start_matches('/'))
            .join("www/old.php"),
        "<?php\n\n$x = ereg_replace('a', 'b', $s);\n",
    )
    .unwrap();
    let (rc, out) = migrator(&args);
    assert_eq!(rc, 3);
    assert!(
        out.contains("12 sites: 10 ok, 0 warn, 2 blocked (1 homes read, 11 unchanged"),
        "{out}"
    );
    assert!(out.contains("php.ereg"), "{out}");

    // The planner keeps both out and says why.
    let (rc, _) = migrator(&[
        "plan",
        "--inventory",
        &d("inv"),
        "--exclude-from",
        &d("p.jsonl"),
        "--out",
        &d("plan.json"),
    ]);
    assert_eq!(rc, 0);
    let (rc, out) = migrator(&["plan", "explain", other, "--plan", &d("plan.json")]);
    assert_eq!(rc, 0);
    assert!(
        out.contains("excluded (pre-flight verdict blocked: php.ereg)"),
        "{out}"
    );
    let (_, out) = migrator(&["plan", "explain", bad, "--plan", &d("plan.json")]);
    assert!(
        out.contains("pre-flight verdict blocked: php.mysql_ext"),
        "{out}"
    );

    // Bad settings name the file and the field.
    std::fs::write(d("bad.toml"), "old_networks = [\"10.0.0.0\"]\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "preflight",
            "--inventory",
            &d("inv"),
            "--settings",
            &d("bad.toml"),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("old_networks"),
        "{err}"
    );
}

/// Rows in the journal's `preflight_sites` (0 before the table exists).
fn saved_sites(journal: &Path) -> i64 {
    // Never created here: the run creates it.
    if !journal.exists() {
        return 0;
    }
    let Ok(c) = rusqlite::Connection::open(journal) else {
        return 0;
    };
    let _ = c.busy_timeout(Duration::from_secs(2));
    c.query_row("SELECT COUNT(*) FROM preflight_sites", [], |r| r.get(0))
        .unwrap_or(0)
}

#[test]
fn preflight_killed_mid_scan_resumes_without_reading_finished_homes() {
    const SITES: usize = 40;
    const FILES: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    let (rc, _) = migrator(&[
        "inventory",
        "generate",
        "--sites",
        &SITES.to_string(),
        "--seed",
        "9",
        "--out",
        &d("inv"),
    ]);
    assert_eq!(rc, 0);
    let sites = sites_of(&dir.path().join("inv"));
    assert_eq!(sites.len(), SITES);
    let root = dir.path().join("filers");
    let body = "<?php\nfunction f($a) { return array_map('trim', explode(',', $a)); }\n\
                $t = '12:30:45'; $v = '1.2.3.4';\n"
        .repeat(40);
    for (i, (_, home)) in sites.iter().enumerate() {
        let h = root.join(home.trim_start_matches('/')).join("www");
        std::fs::create_dir_all(&h).unwrap();
        for f in 0..FILES {
            let mut text = body.clone();
            if i % 5 == 2 && f == 17 {
                text.push_str("$q = ereg_replace('a', 'b', $s);\n");
            }
            std::fs::write(h.join(format!("f{f}.php")), text).unwrap();
        }
    }
    let map = format!("/homez.={}/homez.", root.display());
    let args = |out: &str, journal: &str| -> Vec<String> {
        [
            "preflight",
            "--inventory",
            &d("inv"),
            "--home-map",
            &map,
            "--out",
            &d(out),
            "--journal",
            &d(journal),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    // Killed (SIGKILL) once 10 homes are saved, before all are.
    let journal = dir.path().join("killed.sqlite");
    let mut child = Command::new(BIN)
        .args(args("killed.jsonl", "killed.sqlite"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while saved_sites(&journal) < 10 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed: make the tree larger"
        );
        assert!(Instant::now() < deadline, "no home saved within 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let saved = saved_sites(&journal);
    assert!(
        saved >= 10 && saved < SITES as i64,
        "killed after {saved} of {SITES} homes: not mid-scan"
    );
    assert!(!dir.path().join("killed.jsonl").exists());

    // The rerun reads only the homes not saved, and its results are those of a run never
    // interrupted.
    let a = args("killed.jsonl", "killed.sqlite");
    let (rc, out) = migrator(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(rc, 3, "{out}");
    let want = format!(
        "{SITES} sites: 32 ok, 0 warn, 8 blocked ({} homes read, {saved} unchanged",
        SITES as i64 - saved
    );
    assert!(out.contains(&want), "want {want:?} in {out}");
    let a = args("whole.jsonl", "whole.sqlite");
    let (rc, out) = migrator(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(rc, 3);
    assert!(
        out.contains(&format!("({SITES} homes read, 0 unchanged")),
        "{out}"
    );
    let resumed = std::fs::read_to_string(d("killed.jsonl")).unwrap();
    let whole = std::fs::read_to_string(d("whole.jsonl")).unwrap();
    assert_eq!(resumed.lines().count(), SITES);
    assert_eq!(resumed.matches("\"php.ereg\"").count(), 8 * 2, "{resumed}");
    assert!(
        resumed == whole,
        "resumed:\n{resumed}\nuninterrupted:\n{whole}"
    );
}

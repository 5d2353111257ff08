//! The artifacts' checks: shape errors through a spec file (file and field named), certificates
//! made by the real `openssl` and checked at chosen times, the fence on a real journal.

use super::fence::{self, Invocation, Outcome, Side};
use super::test_pki::Pki;
use super::*;
use crate::journal::SqliteJournal;
use crate::site_spec::{sample as site_sample, SpecFile};
use std::path::Path;
use std::time::Duration;

fn parse_with(edit: impl FnOnce(&mut serde_json::Value)) -> Result<SpecFile, String> {
    let mut s = site_sample("a");
    s.artifacts = sample("a");
    let mut v = serde_json::to_value(SpecFile { sites: vec![s] }).unwrap();
    edit(&mut v["sites"][0]["artifacts"]);
    SpecFile::parse(&v.to_string(), Path::new("s.json")).map_err(|e| e.to_string())
}

#[test]
fn sample_round_trips_and_old_specs_load_without_artifacts() {
    let f = parse_with(|_| {}).unwrap();
    assert_eq!(f.sites[0].artifacts, sample("a"));
    let old = serde_json::to_string(&SpecFile {
        sites: vec![site_sample("b")],
    })
    .unwrap();
    assert!(!old.contains("artifacts"), "{old}");
    assert!(SpecFile::parse(&old, Path::new("s.json")).unwrap().sites[0]
        .artifacts
        .is_empty());
}

#[test]
fn bad_artifacts_are_refused_naming_file_and_field() {
    use serde_json::json;
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "artifacts.cron[0].schedule",
            "field 2 (hour)",
            Box::new(|a| a["cron"][0]["schedule"] = json!("0 25 * * *")),
        ),
        (
            "artifacts.cron[0].schedule",
            "4 fields",
            Box::new(|a| a["cron"][0]["schedule"] = json!("* * * *")),
        ),
        (
            "artifacts.cron[0].command",
            "more than one line",
            Box::new(|a| a["cron"][0]["command"] = json!("a\nb")),
        ),
        (
            "artifacts.cron[0].user",
            "not a user name",
            Box::new(|a| a["cron"][0]["user"] = json!("Root Admin")),
        ),
        (
            "artifacts.cron[1].name",
            "listed twice",
            Box::new(|a| {
                let c = a["cron"][0].clone();
                a["cron"].as_array_mut().unwrap().push(c)
            }),
        ),
        (
            "artifacts.php.version",
            "unknown PHP version",
            Box::new(|a| a["php"]["version"] = json!("9.9")),
        ),
        (
            "artifacts.php.pool.memory_limit",
            "not a size",
            Box::new(|a| a["php"]["pool"]["memory_limit"] = json!("lots")),
        ),
        (
            "artifacts.php.pool.disable_functions[1]",
            "not a PHP function name",
            Box::new(|a| a["php"]["pool"]["disable_functions"][1] = json!("exec;rm")),
        ),
        (
            "artifacts.php.user",
            "not a user name",
            Box::new(|a| a["php"]["user"] = json!("www data")),
        ),
        (
            "artifacts.php.listen",
            "an absolute path",
            Box::new(|a| a["php"]["listen"] = json!("/run/php/a.sock;\nlisten = /x")),
        ),
        (
            "artifacts.php.listen_owner",
            "not a user name",
            Box::new(|a| a["php"]["listen_owner"] = json!("Www")),
        ),
        (
            "artifacts.old_php_reload",
            "more than one line",
            Box::new(|a| a["old_php_reload"] = json!("kill -USR2 1\nrm -rf /")),
        ),
        (
            "artifacts.web_rules[0].status",
            "301, 302, 307 or 308",
            Box::new(|a| a["web_rules"][0]["status"] = json!(200)),
        ),
        (
            "artifacts.web_rules[0].to",
            "not an http(s) URL",
            Box::new(|a| a["web_rules"][0]["to"] = json!("https://x/; evil")),
        ),
        (
            "artifacts.web_rules[1].value",
            "without quotes",
            Box::new(|a| a["web_rules"][1]["value"] = json!("a\"; add_header X y")),
        ),
        (
            "artifacts.web_rules[1].name",
            "not a header name",
            Box::new(|a| a["web_rules"][1]["name"] = json!("X Site")),
        ),
        (
            "artifacts.tls[0].domain",
            "not a host name",
            Box::new(|a| {
                a["tls"] = json!([{"domain": "a b", "cert": "/c", "key": "/k"}]);
            }),
        ),
        (
            "artifacts.web_rules[0]",
            "unknown variant",
            Box::new(|a| a["web_rules"][0]["kind"] = json!("rewrite")),
        ),
    ];
    for (field, why, edit) in cases {
        let e = parse_with(edit).unwrap_err();
        assert!(
            e.contains("s.json") && e.contains(&format!("sites[0].{field}")) && e.contains(why),
            "{field}: {e}"
        );
    }
}

#[test]
fn pool_file_and_nginx_lines_carry_the_settings() {
    let a = sample("a");
    let pool = php::render_pool("a", "www-data", "/run/php/a.sock", a.php.as_ref().unwrap());
    for line in [
        "[a]",
        "listen = /run/php/a.sock",
        "php_admin_value[memory_limit] = 256M",
        "php_admin_value[max_execution_time] = 30",
        "php_admin_value[upload_max_filesize] = 16M",
        "php_admin_value[disable_functions] = exec,shell_exec",
        "listen.owner = www-data",
        "listen.group = www-data",
        "listen.mode = 0660",
    ] {
        assert!(pool.lines().any(|l| l == line), "{line}: {pool}");
    }
    // The staged pool: the spec's user, socket and socket owner, else the defaults.
    let d = tempfile::tempdir().unwrap();
    let stage = d.path().display().to_string();
    let mut a = sample("a");
    let p = a.php.as_mut().unwrap();
    p.fpm_root = Some(php_root(d.path(), &["8.2"]));
    install::stage_locally("a", &stage, &a).unwrap();
    let staged = std::fs::read_to_string(d.path().join("a/php-pool.conf")).unwrap();
    for line in [
        "user = a",
        "listen = /run/php/a.sock",
        "listen.owner = www-data",
    ] {
        assert!(staged.lines().any(|l| l == line), "{line}: {staged}");
    }
    let p = a.php.as_mut().unwrap();
    p.user = Some("www-data".into());
    p.listen = Some("/srv/php/a.sock".into());
    p.listen_owner = Some("nginx".into());
    install::stage_locally("a", &stage, &a).unwrap();
    let staged = std::fs::read_to_string(d.path().join("a/php-pool.conf")).unwrap();
    for line in [
        "user = www-data",
        "group = www-data",
        "listen = /srv/php/a.sock",
        "listen.owner = nginx",
    ] {
        assert!(staged.lines().any(|l| l == line), "{line}: {staged}");
    }
    let nginx = web_rules::render_nginx(&a.web_rules);
    assert_eq!(
        nginx,
        "location = /old { return 301 https://a.lab.test/new; }\nadd_header X-Site \"a\" always;\n"
    );
}

fn at(days_from_now: u64) -> rustls::pki_types::UnixTime {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    rustls::pki_types::UnixTime::since_unix_epoch(now + Duration::from_secs(days_from_now * 86400))
}

#[test]
fn certificates_are_checked_for_match_chain_expiry_and_key_mode() {
    let pki = Pki::new();
    let good = pki.leaf("a", "a.lab.test");
    let other = pki.leaf("b", "b.lab.test");
    let mut a = Artifacts {
        tls: vec![good.clone()],
        ..Default::default()
    };
    check_tls(&a, at(0)).unwrap();

    // Expired: the same certificate checked two days on.
    let (f, m) = check_tls(&a, at(2)).unwrap_err();
    assert_eq!(f, "tls[0].cert");
    assert!(m.contains("expired"), "{m}");

    // The key of another certificate.
    a.tls[0].key = other.key.clone();
    let (f, m) = check_tls(&a, at(0)).unwrap_err();
    assert_eq!(f, "tls[0].key");
    assert!(m.contains("does not match the certificate"), "{m}");
    // The message names the files, never the key's contents.
    let key_text = std::fs::read_to_string(&other.key).unwrap();
    let body: String = key_text.lines().nth(1).unwrap().chars().take(20).collect();
    assert!(!m.contains(&body), "{m}");

    // A certificate for another name.
    a.tls[0] = TlsSpec {
        domain: "c.lab.test".into(),
        ..good.clone()
    };
    let (f, m) = check_tls(&a, at(0)).unwrap_err();
    assert_eq!(f, "tls[0].cert");
    assert!(m.contains("c.lab.test"), "{m}");

    // Not issued by the CA named (public roots when none is named).
    a.tls[0] = TlsSpec {
        ca: None,
        ..good.clone()
    };
    let (f, _) = check_tls(&a, at(0)).unwrap_err();
    assert_eq!(f, "tls[0].cert");

    // A key readable by others.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&good.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    a.tls[0] = good.clone();
    let (f, m) = check_tls(&a, at(0)).unwrap_err();
    assert_eq!(f, "tls[0].key");
    assert!(m.contains("0600"), "{m}");

    // Not PEM at all.
    std::fs::set_permissions(&good.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    a.tls[0].cert = pki.path("a.ext");
    let (f, m) = check_tls(&a, at(0)).unwrap_err();
    assert_eq!(f, "tls[0].cert");
    assert!(m.contains("no PEM certificate"), "{m}");
}

fn journal(dir: &Path) -> SqliteJournal {
    SqliteJournal::open(&dir.join("j.sqlite")).unwrap()
}

fn inv<'a>(side: Side, s: &'a cron::Schedule, wait_ms: u64) -> Invocation<'a> {
    Invocation {
        site: "a",
        job: "tick",
        side,
        schedule: s,
        max_wait: Duration::from_millis(wait_ms),
        poll: Duration::from_millis(10),
        process: None,
    }
}

#[test]
fn only_the_owner_runs_a_slot_and_only_once() {
    let d = tempfile::tempdir().unwrap();
    let mut j = journal(d.path());
    let s = cron::Schedule::parse("*/10 * * * * *").unwrap();
    let t = 1_700_000_005;
    let ran = std::cell::Cell::new(0);
    let job = || {
        ran.set(ran.get() + 1);
        Ok(0)
    };
    let out = inv(Side::New, &s, 0).run(&mut j, t, job).unwrap().unwrap();
    assert_eq!(out, Outcome::Refused("the old side owns the site".into()));
    let out = inv(Side::Old, &s, 0).run(&mut j, t, job).unwrap().unwrap();
    assert_eq!(out, Outcome::Ran { exit: 0 });
    // The same slot again (cron fired twice, or the other side after a switch): not run.
    fence::set_owner(&mut j, "a", Side::New).unwrap();
    let out = inv(Side::New, &s, 0)
        .run(&mut j, t + 3, job)
        .unwrap()
        .unwrap();
    assert_eq!(out, Outcome::AlreadyRan { side: Side::Old });
    assert_eq!(ran.get(), 1);
    let runs = fence::runs(&j, "a").unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].slot, runs[0].side, runs[0].exit),
        (t - 5, Side::Old, Some(0))
    );
    assert!(runs[0].ended_ms.is_some());
    assert_eq!(fence::refusals(&j, "a").unwrap().len(), 1);
    assert!(fence::token(&j, "a").unwrap().1.running.is_empty());
}

#[test]
fn a_frozen_site_runs_nothing_until_the_wait_ends_then_refuses() {
    let d = tempfile::tempdir().unwrap();
    let mut j = journal(d.path());
    let s = cron::Schedule::parse("*/10 * * * * *").unwrap();
    fence::freeze(&mut j, "a").unwrap();
    let out = inv(Side::Old, &s, 50)
        .run(&mut j, 1_700_000_000, || panic!("ran while frozen"))
        .unwrap()
        .unwrap();
    assert!(
        matches!(out, Outcome::Refused(ref m) if m.contains("frozen")),
        "{out:?}"
    );
    assert!(fence::runs(&j, "a").unwrap().is_empty());
}

/// Two processes: a run in progress holds the freeze's wait; a job due during the freeze
/// waits and runs once after the unfreeze, on the side the commit point named.
#[test]
fn the_freeze_waits_for_a_run_and_a_slot_due_in_it_runs_after_on_the_owner() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("j.sqlite");
    let mut j = SqliteJournal::open(&path).unwrap();
    let every = cron::Schedule::parse("* * * * *").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // A long run on the old side; it says when its job is over. (Whether the wait waited is
    // asked of that, not of a clock started after the run registered: the token read and the
    // freeze's write before it may take most of the run's 400 ms on a loaded machine.)
    let p = path.clone();
    let job_over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let over = job_over.clone();
    let long = std::thread::spawn(move || {
        let mut j = SqliteJournal::open(&p).unwrap();
        let s = cron::Schedule::parse("* * * * *").unwrap();
        inv(Side::Old, &s, 0)
            .run(&mut j, now, || {
                std::thread::sleep(Duration::from_millis(400));
                over.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(0)
            })
            .unwrap()
            .unwrap()
    });
    while fence::token(&j, "a").unwrap().1.running.is_empty() {
        std::thread::sleep(Duration::from_millis(5));
    }
    fence::freeze(&mut j, "a").unwrap();
    let left = fence::wait_idle(&mut j, "a", Duration::from_secs(5)).unwrap();
    assert!(left.is_empty());
    assert!(
        job_over.load(std::sync::atomic::Ordering::SeqCst),
        "the freeze's wait ended while the run's job was still going"
    );
    assert_eq!(long.join().unwrap(), Outcome::Ran { exit: 0 });

    // Both sides' cron fire for the next slot while frozen: both wait.
    let slot = every.next_due(now).unwrap();
    let waiters: Vec<_> = [Side::Old, Side::New]
        .into_iter()
        .map(|side| {
            let p = path.clone();
            std::thread::spawn(move || {
                let mut j = SqliteJournal::open(&p).unwrap();
                let s = cron::Schedule::parse("* * * * *").unwrap();
                inv(side, &s, 10_000)
                    .run(&mut j, slot, || Ok(7))
                    .unwrap()
                    .unwrap()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    fence::set_owner(&mut j, "a", Side::New).unwrap();
    fence::unfreeze(&mut j, "a").unwrap();
    let outs: Vec<Outcome> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(
        outs[0],
        Outcome::Refused("the new side owns the site".into())
    );
    assert_eq!(outs[1], Outcome::Ran { exit: 7 });
    let runs = fence::runs(&j, "a").unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().any(|r| r.slot == slot && r.side == Side::New));

    // A run that outlasts the wait is reported, not waited for forever.
    let p = path.clone();
    let stuck = std::thread::spawn(move || {
        let mut j = SqliteJournal::open(&p).unwrap();
        let s = cron::Schedule::parse("* * * * *").unwrap();
        inv(Side::New, &s, 0)
            .run(&mut j, slot + 60, || {
                std::thread::sleep(Duration::from_millis(500));
                Ok(0)
            })
            .unwrap()
            .unwrap()
    });
    while fence::token(&j, "a").unwrap().1.running.is_empty() {
        std::thread::sleep(Duration::from_millis(5));
    }
    fence::freeze(&mut j, "a").unwrap();
    let left = fence::wait_idle(&mut j, "a", Duration::from_millis(50)).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].side, left[0].slot), (Side::New, slot + 60));
    stuck.join().unwrap();
}

#[test]
fn prepare_stages_everything_disabled_and_all_or_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let d = tempfile::tempdir().unwrap();
    let stage = d.path().join("stage").display().to_string();
    let mut a = sample("a");
    a.tls = vec![pki.leaf("a", "a.lab.test"), pki.leaf("w", "www.a.lab.test")];
    a.php.as_mut().unwrap().fpm_root = Some(php_root(d.path(), &["8.2"]));
    install::stage_locally("a", &stage, &a).unwrap();
    let dest = Path::new(&stage).join("a");
    let read = |n: &str| std::fs::read_to_string(dest.join(n)).unwrap();
    let mode = |n: &str| {
        std::fs::metadata(dest.join(n))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    // The crontab is there, every job line disabled, each through the fence on the new side.
    let cron = read("crontab");
    let jobs: Vec<&str> = cron.lines().filter(|l| l.contains("cron-run")).collect();
    assert_eq!(jobs.len(), 1, "{cron}");
    assert!(cron.lines().all(|l| l.starts_with('#')), "{cron}");
    assert!(jobs[0].contains("--site a --job tick --side new"), "{cron}");
    assert_eq!(
        read("tls/a.lab.test.crt"),
        std::fs::read_to_string(&a.tls[0].cert).unwrap()
    );
    assert_eq!(
        read("tls/www.a.lab.test.key"),
        std::fs::read_to_string(&a.tls[1].key).unwrap()
    );
    assert_eq!(mode("tls/www.a.lab.test.key"), 0o600);
    assert_eq!(mode("tls/a.lab.test.crt"), 0o644);
    assert!(read("php-pool.conf").contains("php_admin_value[memory_limit] = 256M"));
    assert_eq!(
        read("nginx-rules.conf"),
        web_rules::render_nginx(&a.web_rules)
    );
    let before = read("php-pool.conf");

    // A key that cannot be read: nothing is sent, what was staged stays as it was.
    let mut broken = a.clone();
    broken.tls[1].key = pki.path("missing.key");
    if let Some(p) = broken.php.as_mut() {
        p.pool.memory_limit = Some("1G".into());
    }
    let e = install::stage_locally("a", &stage, &broken).unwrap_err();
    assert!(
        e.contains("artifacts.tls[1].key") && e.contains("missing.key"),
        "{e}"
    );
    assert_eq!(read("php-pool.conf"), before);

    // A failure on the server's side (a staged name in no directory): the temporary
    // directory goes, the staged one stays as it was.
    let mut clash = a.clone();
    clash.tls[1].domain = "nodir/x".into();
    assert!(install::stage_locally("a", &stage, &clash).is_err());
    assert_eq!(read("php-pool.conf"), before);
    let left: Vec<_> = std::fs::read_dir(&stage)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["a"]);

    // Staged again with new settings: replaced whole.
    let mut changed = a.clone();
    changed.tls.pop();
    install::stage_locally("a", &stage, &changed).unwrap();
    assert!(!dest.join("tls/www.a.lab.test.key").exists());

    // Verify compares what is staged with the spec, naming files, never contents.
    assert_eq!(
        install::compare_staged("a", &stage, &changed).unwrap(),
        Vec::<String>::new()
    );
    std::fs::write(dest.join("php-pool.conf"), "[a]\n").unwrap();
    std::fs::write(dest.join("tls/a.lab.test.key"), "tampered").unwrap();
    let diffs = install::compare_staged("a", &stage, &changed).unwrap();
    assert_eq!(diffs.len(), 2, "{diffs:?}");
    assert!(
        diffs[0].ends_with("a.lab.test.key differs from the spec"),
        "{diffs:?}"
    );
    assert!(
        diffs[1].ends_with("php-pool.conf differs from the spec"),
        "{diffs:?}"
    );

    // The dry run's lines name the files, never a key's contents.
    let lines = install::describe("a", &stage, &a).join("\n");
    assert!(
        lines.contains("tls/a.lab.test.crt and .key (0600)"),
        "{lines}"
    );
    assert!(lines.contains("job tick"), "{lines}");
    assert!(!lines.contains("PRIVATE KEY"), "{lines}");
}

/// A PHP root like Debian's `/etc/php` with `versions` installed.
pub(super) fn php_root(d: &Path, versions: &[&str]) -> String {
    let root = d.join("php");
    for v in versions {
        std::fs::create_dir_all(root.join(v).join("fpm")).unwrap();
    }
    root.display().to_string()
}

#[test]
fn a_php_version_the_new_side_lacks_is_refused_with_the_mapping_to_use() {
    let d = tempfile::tempdir().unwrap();
    let stage = d.path().join("stage").display().to_string();
    let mut a = sample("a");
    let p = a.php.as_mut().unwrap();
    p.version = "8.1".into();
    p.fpm_root = Some(php_root(d.path(), &["8.2", "8.3"]));
    let e = install::stage_locally("a", &stage, &a).unwrap_err();
    assert!(
        e.contains("artifacts.php.version 8.1: PHP 8.1 is not installed")
            && e.contains("it has: 8.2 8.3")
            && e.contains("artifacts.php.map_to"),
        "{e}"
    );
    assert!(!Path::new(&stage).exists(), "something was staged");

    // Mapped to a version it lacks too: named as the mapping.
    a.php.as_mut().unwrap().map_to = Some("7.4".into());
    let e = install::stage_locally("a", &stage, &a).unwrap_err();
    assert!(e.contains("artifacts.php.map_to (7.4 for 8.1)"), "{e}");

    // Mapped to one it has: staged, the pool file for that version.
    a.php.as_mut().unwrap().map_to = Some("8.3".into());
    install::stage_locally("a", &stage, &a).unwrap();
    let pool = std::fs::read_to_string(Path::new(&stage).join("a/php-pool.conf")).unwrap();
    assert!(
        pool.starts_with("; written by migrator for site a (PHP 8.3)"),
        "{pool}"
    );

    // A mapping to no PHP version at all is refused when the spec loads.
    let e = parse_with(|a| a["php"]["map_to"] = serde_json::json!("8")).unwrap_err();
    assert!(e.contains("sites[0].artifacts.php.map_to"), "{e}");
}

/// A redirect may target a query (`/?op=about`, what the lab's app answers on); a query that
/// would break the nginx token is refused.
#[test]
fn a_redirect_target_may_carry_a_query() {
    let rule = |to: &str| {
        WebRule::Redirect(Redirect {
            from: "/old-page".into(),
            to: to.into(),
            status: 301,
        })
    };
    for good in ["/?op=about", "https://a.lab.test/shop?x=1&y=2", "/new"] {
        web_rules::validate(&rule(good)).unwrap_or_else(|e| panic!("{good}: {e:?}"));
    }
    for bad in ["/?op=a;b", "/?a?b", "/?a b", "/?a{b}", "?op=about"] {
        let (f, _) = web_rules::validate(&rule(bad)).unwrap_err();
        assert_eq!(f, "to", "{bad}");
    }
    assert_eq!(
        web_rules::render_nginx(&[rule("/?op=about")]),
        "location = /old-page { return 301 /?op=about; }\n"
    );
}

/// A run registered from another host cannot be checked by pid: its `cron-run` beats, and one
/// whose beats stopped for longer than `STALE_AFTER` is reaped (its record ends `lost`, saying
/// why) instead of holding the freeze to its deadline; one beating, or one that never beat (an
/// older `cron-run`), is waited for.
#[test]
fn a_run_on_another_host_is_reaped_once_its_heartbeats_stop() {
    use crate::journal::JournalStore;
    let d = tempfile::tempdir().unwrap();
    let mut j = journal(d.path());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let remote = |pid: u32| super::liveness::ProcId {
        pid,
        boot_id: "another-host-boot-id".into(),
        start: 1,
        group: true,
        pid_ns: None,
    };
    let stale = now - fence::STALE_AFTER.as_millis() as i64 - 5_000;
    let runs = [
        ("a", 101, Some(stale)),
        ("b", 102, Some(now)),
        ("c", 103, None),
    ];
    let mut t = fence::Token::default();
    for (job, pid, beat) in runs {
        t.running.push(fence::Running {
            job: job.into(),
            side: Side::Old,
            slot: 1_700_000_000,
            started_ms: now - 60_000,
            process: Some(remote(pid)),
            heartbeat_ms: beat,
        });
        let rec = fence::RunRecord {
            job: job.into(),
            slot: 1_700_000_000,
            side: Side::Old,
            started_ms: now - 60_000,
            ended_ms: None,
            exit: None,
            lost: None,
        };
        j.put_checkpoint_raw(
            "cron-runs/a",
            &format!("{job}@1700000000"),
            &serde_json::to_string(&rec).unwrap(),
        )
        .unwrap();
    }
    j.put_checkpoint_raw("cron-fence", "a", &serde_json::to_string(&t).unwrap())
        .unwrap();
    let dead = fence::reap(&mut j, "a").unwrap();
    assert_eq!(
        dead.iter().map(|r| r.job.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    let left: Vec<String> = fence::token(&j, "a")
        .unwrap()
        .1
        .running
        .iter()
        .map(|r| r.job.clone())
        .collect();
    assert_eq!(left, ["b", "c"]);
    let lost: Vec<(String, Option<String>)> = fence::runs(&j, "a")
        .unwrap()
        .into_iter()
        .map(|r| (r.job, r.lost))
        .collect();
    assert!(
        lost[0].1.as_deref().unwrap().contains("no heartbeat"),
        "{lost:?}"
    );
    assert!(lost[1].1.is_none() && lost[2].1.is_none(), "{lost:?}");
    // A beat from the process that registered "b" keeps it; one from nobody changes nothing.
    assert!(fence::beat(&mut j, "a", &remote(102)).unwrap());
    assert!(!fence::beat(&mut j, "a", &remote(999)).unwrap());
}

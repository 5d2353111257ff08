//! The commit points' move of a site's artifacts, run by the real `sh` on staged directories:
//! enabled on the owner's side, disabled on the other, back at a rollback; every step
//! idempotent and a kill's leftovers completed by the next run.

use super::test_pki::Pki;
use super::tests::php_root;
use super::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

struct Sides {
    _d: tempfile::TempDir,
    new: String,
    old: String,
    a: Artifacts,
    _pki: Pki,
}

const OLD_CRONTAB: &str = "*/10 * * * * * www-data migrator cron-run --site a --job tick \
                           --side old -- sh -c 'php /srv/www/cron.php'\n";

/// The new side staged by prepare; the old side's `active/` as the operator installed it.
fn sides() -> Sides {
    let pki = Pki::new();
    let d = tempfile::tempdir().unwrap();
    let new = d.path().join("new").display().to_string();
    let old = d.path().join("old").display().to_string();
    let mut a = sample("a");
    a.tls = vec![pki.leaf("a", "a.lab.test")];
    a.php.as_mut().unwrap().fpm_root = Some(php_root(d.path(), &["8.2"]));
    install::stage_locally("a", &new, &a).unwrap();
    let act = Path::new(&old).join("a/active");
    std::fs::create_dir_all(&act).unwrap();
    std::fs::write(act.join("crontab"), OLD_CRONTAB).unwrap();
    Sides {
        _d: d,
        new,
        old,
        a,
        _pki: pki,
    }
}

fn read(stage: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(Path::new(stage).join("a").join(name)).ok()
}

/// The switch's move: the old side disabled, then the new one enabled.
fn to_new(s: &Sides) {
    activate::apply_locally("a", &s.old, false).unwrap();
    activate::apply_locally("a", &s.new, true).unwrap();
}

fn to_old(s: &Sides) {
    activate::apply_locally("a", &s.new, false).unwrap();
    activate::apply_locally("a", &s.old, true).unwrap();
}

fn assert_new_enabled(s: &Sides) {
    let cron = read(&s.new, "active/crontab").expect("the new side's crontab is enabled");
    let jobs: Vec<&str> = cron.lines().filter(|l| l.contains("cron-run")).collect();
    assert_eq!(jobs.len(), 1, "{cron}");
    assert!(
        jobs[0].starts_with(
            "*/10 * * * * * www-data migrator cron-run --site a --job tick \
             --side new"
        ),
        "{cron}"
    );
    assert_eq!(
        read(&s.new, "active/nginx-rules.conf"),
        Some(web_rules::render_nginx(&s.a.web_rules))
    );
    assert_eq!(
        read(&s.new, "active/php-pool.conf"),
        read(&s.new, "php-pool.conf")
    );
    let key = Path::new(&s.new).join("a/active/tls/a.lab.test.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        read(&s.old, "active/crontab"),
        None,
        "old side still enabled"
    );
}

#[test]
fn the_switch_enables_the_new_side_and_the_rollback_puts_the_old_one_back() {
    let s = sides();
    // Staged only: nothing enabled on the new side.
    assert_eq!(read(&s.new, "active/crontab"), None);
    to_new(&s);
    assert_new_enabled(&s);
    // The staged crontab stays disabled (prepare's copy is not what cron reads).
    assert!(read(&s.new, "crontab")
        .unwrap()
        .lines()
        .all(|l| l.starts_with('#')));
    // Idempotent: a resume runs it again.
    to_new(&s);
    assert_new_enabled(&s);

    to_old(&s);
    assert_eq!(read(&s.old, "active/crontab").as_deref(), Some(OLD_CRONTAB));
    assert_eq!(read(&s.new, "active/crontab"), None);
    to_old(&s);
    assert_eq!(read(&s.old, "active/crontab").as_deref(), Some(OLD_CRONTAB));

    // Migrated again: the new side's set comes back from where the rollback put it.
    to_new(&s);
    assert_new_enabled(&s);
}

#[test]
fn a_kill_in_the_middle_is_completed_by_the_next_run() {
    let s = sides();
    // Killed while building the new side's set: a partial temporary directory is left.
    let partial = Path::new(&s.new).join("a/active.new.4242");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("crontab"), "# half").unwrap();
    // Killed between the two renames of the switch: the old side is disabled already.
    activate::apply_locally("a", &s.old, false).unwrap();
    to_new(&s);
    assert_new_enabled(&s);
    assert!(!partial.exists(), "the killed run's leftovers stay");

    // A real SIGKILL of the script and its commands (its process group, as when the host's
    // session dies) at some point: the next run converges.
    for delay_ms in [0u64, 1, 2, 3, 4, 5, 8, 9] {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(activate::script("a", &s.new, false))
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        // SAFETY: the group this test just created. Odd rounds kill the shell alone (as a
        // kill -9 of the migrator leaves its script's commands running): the lock orders the
        // next run after them.
        let target = if delay_ms % 2 == 1 {
            child.id() as i32
        } else {
            -(child.id() as i32)
        };
        unsafe { libc::kill(target, libc::SIGKILL) };
        let _ = child.wait();
        to_old(&s);
        assert_eq!(read(&s.old, "active/crontab").as_deref(), Some(OLD_CRONTAB));
        assert_eq!(read(&s.new, "active/crontab"), None);
        to_new(&s);
        assert_new_enabled(&s);
    }
}

#[test]
fn enabling_a_side_with_nothing_staged_is_refused_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let stage = d.path().display().to_string();
    let e = activate::apply_locally("a", &stage, true).unwrap_err();
    assert!(e.contains("nothing staged") && e.contains(&stage), "{e}");
    // Disabling what is not there is a no-op.
    activate::apply_locally("a", &stage, false).unwrap();
}

/// A side's nginx and php-fpm reload after every move of its artifacts (enable, disable, and
/// a repeat that finds the move done: the retry of a failed reload), in that order.
#[test]
fn every_move_reloads_the_sides_nginx_and_php_fpm_even_when_already_done() {
    let s = sides();
    let log = Path::new(&s.new).join("reloads.log");
    let (nginx, php) = (
        format!("echo nginx >> '{}'", log.display()),
        format!("echo php >> '{}'", log.display()),
    );
    let r = activate::reloads(&s.a, Some(&nginx), Some(&php));
    assert_eq!(
        r.iter().map(|x| x.0).collect::<Vec<_>>(),
        ["nginx", "php-fpm"]
    );
    activate::apply_locally_with_reloads("a", &s.new, true, &r).unwrap();
    assert!(read(&s.new, "active/php-pool.conf").is_some());
    // Already enabled: the move is a no-op, the reloads still run.
    activate::apply_locally_with_reloads("a", &s.new, true, &r).unwrap();
    activate::apply_locally_with_reloads("a", &s.new, false, &r).unwrap();
    assert_eq!(read(&s.new, "active/php-pool.conf"), None);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "nginx\nphp\nnginx\nphp\nnginx\nphp\n"
    );
    let d = activate::describe_with_reloads("a", &s.new, true, &r);
    assert!(
        d.contains(&format!("then reload nginx: `{nginx}`"))
            && d.contains(&format!("then reload php-fpm: `{php}`")),
        "{d}"
    );
}

/// A reload that fails fails the move, naming what and the command; the move itself is done
/// and the next run (the engine's retry) reloads again.
#[test]
fn a_failing_reload_fails_the_move_naming_the_command_and_the_retry_reloads() {
    let s = sides();
    let mark = Path::new(&s.new).join("php-reloaded");
    let ok = format!("touch '{}'", mark.display());
    let r = activate::reloads(&s.a, Some("true"), Some("kill -USR2 999999999"));
    let e = activate::apply_locally_with_reloads("a", &s.new, true, &r).unwrap_err();
    assert!(
        e.contains("reloading php-fpm failed: `kill -USR2 999999999`") && e.contains("exit"),
        "{e}"
    );
    assert!(read(&s.new, "active/php-pool.conf").is_some());
    let r = activate::reloads(&s.a, Some("true"), Some(&ok));
    activate::apply_locally_with_reloads("a", &s.new, true, &r).unwrap();
    assert!(mark.exists(), "the retry did not reload php-fpm");
}

/// Which reloads a site needs: nginx for rules, a pool or certificates; php-fpm for a pool;
/// none without a command, or for jobs only.
#[test]
fn reloads_follow_what_the_site_has() {
    let full = sample("a");
    let names = |a: &Artifacts, n: Option<&str>, p: Option<&str>| -> Vec<&'static str> {
        activate::reloads(a, n, p)
            .into_iter()
            .map(|x| x.0)
            .collect()
    };
    assert_eq!(names(&full, Some("n"), Some("p")), ["nginx", "php-fpm"]);
    assert_eq!(names(&full, Some("n"), None), ["nginx"]);
    let jobs_only = Artifacts {
        cron: full.cron.clone(),
        ..Default::default()
    };
    assert!(names(&jobs_only, Some("n"), Some("p")).is_empty());
    let rules_only = Artifacts {
        web_rules: full.web_rules.clone(),
        ..Default::default()
    };
    assert_eq!(names(&rules_only, Some("n"), Some("p")), ["nginx"]);
}

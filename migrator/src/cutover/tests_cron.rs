//! Issue 20: a site's jobs run on exactly one side. The owner token follows the switch and the
//! rollback, the freeze waits for a run in progress (and reports one past its wait), an abort
//! or a kill at any action never leaves the jobs frozen or owned by the side not serving.

use super::*;
use crate::artifacts::cron::Schedule;
use crate::artifacts::fence::{self, Invocation, Outcome, Side, Token};

fn cron_shop() -> (tempfile::TempDir, PathBuf, SiteSpec, Recorder) {
    let (dir, jp, mut spec, rec) = shop();
    spec.artifacts = crate::artifacts::sample("shop");
    (dir, jp, spec, rec)
}

fn token(jp: &Path) -> Token {
    fence::token(&SqliteJournal::open(jp).unwrap(), "shop")
        .unwrap()
        .1
}

fn unfrozen(owner: Side) -> Token {
    Token {
        owner,
        frozen: false,
        running: vec![],
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Runs the job `tick` on `side` for the slot `at` (no wait), the job taking `takes`.
fn run_for(jp: &Path, side: Side, at: i64, takes: Duration) -> Outcome {
    let mut j = SqliteJournal::open(jp).unwrap();
    let s = Schedule::parse("*/10 * * * * *").unwrap();
    let inv = Invocation {
        site: "shop",
        job: "tick",
        side,
        schedule: &s,
        max_wait: Duration::ZERO,
        poll: Duration::from_millis(10),
        process: None,
    };
    inv.run(&mut j, at, || {
        std::thread::sleep(takes);
        Ok(0)
    })
    .unwrap()
    .unwrap()
}

/// Runs the job `tick` on `side` for the slot due now (no wait).
fn run_on(jp: &Path, side: Side, at: i64) -> Outcome {
    run_for(jp, side, at, Duration::ZERO)
}

/// A run of `tick` on `side` taking `takes`, in a thread; returns once it is in progress.
fn run_in_progress(
    jp: &Path,
    side: Side,
    at: i64,
    takes: Duration,
) -> std::thread::JoinHandle<Outcome> {
    let p = jp.to_path_buf();
    let run = std::thread::spawn(move || run_for(&p, side, at, takes));
    while token(jp).running.is_empty() {
        std::thread::sleep(Duration::from_millis(5));
    }
    run
}

#[test]
fn the_owner_token_follows_the_switch_and_the_rollback() {
    let (_dir, jp, spec, rec) = cron_shop();
    let t = now_s();
    assert_eq!(run_on(&jp, Side::Old, t), Outcome::Ran { exit: 0 });
    // A long run on the old side, in progress when the freeze comes.
    let long = run_in_progress(&jp, Side::Old, t + 10, Duration::from_millis(600));
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    // The freeze waited for it: it ended before the switch began.
    assert!(long.is_finished(), "the cutover did not wait for the run");
    assert_eq!(long.join().unwrap(), Outcome::Ran { exit: 0 });
    let j = SqliteJournal::open(&jp).unwrap();
    let switch = j
        .steps("shop")
        .unwrap()
        .into_iter()
        .find(|s| s.phase == "switch")
        .unwrap();
    let run = fence::runs(&j, "shop")
        .unwrap()
        .into_iter()
        .find(|r| r.slot == t + 10 - (t + 10).rem_euclid(10))
        .unwrap();
    assert!(
        run.ended_ms.unwrap() <= switch.started_ms,
        "{run:?} {switch:?}"
    );
    drop(j);
    assert_eq!(token(&jp), unfrozen(Side::New));
    assert!(matches!(
        run_on(&jp, Side::Old, t + 20),
        Outcome::Refused(_)
    ));
    assert_eq!(run_on(&jp, Side::New, t + 20), Outcome::Ran { exit: 0 });

    assert_eq!(rollback(&spec, &rec, &jp).unwrap(), SiteState::RolledBack);
    assert_eq!(token(&jp), unfrozen(Side::Old));
    assert!(matches!(
        run_on(&jp, Side::New, t + 30),
        Outcome::Refused(_)
    ));
    assert_eq!(run_on(&jp, Side::Old, t + 30), Outcome::Ran { exit: 0 });
}

#[test]
fn an_abort_gives_the_jobs_back_to_the_old_side_unfrozen() {
    let (_dir, jp, spec, rec) = cron_shop();
    rec.set_verify_diffs(vec!["table `orders`: checksums differ".into()]);
    assert!(migrate(&spec, &rec, &jp).is_err());
    assert_eq!(token(&jp), unfrozen(Side::Old));
}

#[test]
fn killed_at_every_action_the_jobs_end_on_the_serving_side_unfrozen() {
    for action in ACTIONS {
        let (_dir, jp, spec, rec) = cron_shop();
        rec.set_trap(action, Trap::Crash);
        crash(|| migrate(&spec, &rec, &jp));
        assert_eq!(
            migrate(&spec, &rec, &jp).unwrap(),
            SiteState::Live,
            "{action}"
        );
        assert_eq!(token(&jp), unfrozen(Side::New), "{action}");
    }
    for action in [
        "haproxy.maint",
        "data.sync_files",
        "proxy.resume",
        "haproxy.ready",
    ] {
        let (_dir, jp, spec, rec) = cron_shop();
        assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
        rec.set_trap(action, Trap::Crash);
        crash(|| rollback(&spec, &rec, &jp));
        assert_eq!(
            migrate(&spec, &rec, &jp).unwrap(),
            SiteState::RolledBack,
            "{action}"
        );
        assert_eq!(token(&jp), unfrozen(Side::Old), "{action}");
    }
}

/// A run past the freeze's wait that cannot be stopped from here (no process recorded: an
/// in-process run) refuses the switch: the site is aborted back to the old side, which keeps
/// the jobs, and the overrun is reported.
#[test]
fn a_run_past_the_freeze_wait_that_cannot_be_stopped_refuses_the_switch() {
    let (_dir, jp, mut spec, rec) = cron_shop();
    spec.artifacts.cron_wait_s = 0;
    let t = now_s();
    let stuck = run_in_progress(&jp, Side::Old, t, Duration::from_millis(800));
    let err = migrate(&spec, &rec, &jp).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("refusing the switch")
            && msg.contains("job tick (old side")
            && msg.contains("not stoppable from here")
            && msg.contains("aborted back to the old side"),
        "{msg}"
    );
    assert_eq!(serving(&spec, &rec), Ok(Dc::Old));
    assert_eq!(token(&jp).owner, Side::Old);
    assert!(!token(&jp).frozen);
    let j = SqliteJournal::open(&jp).unwrap();
    assert!(j.checkpoint_raw("cron-overrun", "shop").unwrap().is_some());
    drop(j);
    assert_eq!(stuck.join().unwrap(), Outcome::Ran { exit: 0 });
}

/// A certificate whose key is another's is refused at prepare, naming the field, before the
/// new side is touched; fixed, the same command moves the site.
#[test]
fn a_key_not_matching_its_certificate_refuses_prepare_before_anything_is_installed() {
    let (_dir, jp, mut spec, rec) = cron_shop();
    let pki = crate::artifacts::test_pki::Pki::new();
    let good = pki.leaf("shop", "shop.lab.test");
    let other = pki.leaf("other", "other.lab.test");
    spec.artifacts.tls = vec![crate::artifacts::TlsSpec {
        key: other.key.clone(),
        ..good.clone()
    }];
    let err = migrate(&spec, &rec, &jp).unwrap_err();
    assert!(
        matches!(&err, CutoverError::Artifact { field, .. } if field == "tls[0].key"),
        "{err}"
    );
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(
        !rec.log().iter().any(|l| l.starts_with("data.prepare")),
        "{:?}",
        rec.log()
    );
    assert_eq!(serving(&spec, &rec), Ok(Dc::Old));
    spec.artifacts.tls = vec![good];
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
}

#[test]
fn the_dry_run_prints_what_prepare_stages() {
    let (_dir, jp, spec, rec) = cron_shop();
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    let staged: Vec<String> = rec
        .log()
        .into_iter()
        .filter(|l| l.starts_with("data.prepare_artifacts"))
        .collect();
    let all = staged.join("\n");
    assert!(all.contains("/shop/crontab: job tick"), "{all}");
    assert!(all.contains("php-pool.conf: PHP 8.2"), "{all}");
    assert!(
        all.contains("return 301 https://shop.lab.test/new"),
        "{all}"
    );
}

fn active(jp: &Path) -> Option<String> {
    SqliteJournal::open(jp)
        .unwrap()
        .checkpoint_raw(crate::cutover::cron_fence::ACTIVE_SCOPE, "shop")
        .unwrap()
}

/// Position of the first log line starting with `prefix` at or after `from`.
fn at(log: &[String], prefix: &str, from: usize) -> usize {
    from + log[from..]
        .iter()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} after {from}: {log:?}"))
}

/// Issue 20: the staged artifacts are enabled on the new side at the switch's commit point
/// (after the databases resume there, before the unfreeze), the old side's disabled first;
/// the rollback reverses both; `--dry-run` prints each move.
#[test]
fn the_switch_enables_the_new_sides_artifacts_and_the_rollback_reverses_it() {
    let (_dir, jp, mut spec, rec) = cron_shop();
    spec.artifacts.old_stage_dir = Some("/srv/old-artifacts".into());
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    let log = rec.log();
    let commit = at(&log, "proxy.resume", at(&log, "data.verify", 0));
    let off = at(&log, "data.activate_artifacts", commit);
    assert!(
        log[off].contains("disable /srv/old-artifacts/shop/active"),
        "{log:?}"
    );
    assert!(
        log[off + 1].starts_with("data.activate_artifacts")
            && log[off + 1].contains("enable /var/lib/hostmove/artifacts/shop/active"),
        "{log:?}"
    );
    assert!(at(&log, "haproxy.ready", commit) > off + 1, "{log:?}");
    assert!(!log[..commit]
        .iter()
        .any(|l| l.starts_with("data.activate_artifacts")));
    assert_eq!(active(&jp).as_deref(), Some("\"new\""));

    let n = log.len();
    assert_eq!(rollback(&spec, &rec, &jp).unwrap(), SiteState::RolledBack);
    let log = rec.log();
    let moves: Vec<&String> = log[n..]
        .iter()
        .filter(|l| l.starts_with("data.activate_artifacts"))
        .collect();
    assert!(moves[0].contains("disable /var/lib/hostmove/artifacts/shop/active"));
    assert!(moves[1].contains("enable /srv/old-artifacts/shop/active"));
    assert_eq!(active(&jp).as_deref(), Some("\"old\""));
}

/// Killed at the move itself (forward and back), the next run completes it.
#[test]
fn killed_while_moving_the_artifacts_the_next_run_completes_the_move() {
    let (_dir, jp, spec, rec) = cron_shop();
    rec.set_trap("data.activate_artifacts", Trap::Crash);
    crash(|| migrate(&spec, &rec, &jp));
    assert_eq!(active(&jp), None);
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    assert_eq!(active(&jp).as_deref(), Some("\"new\""));
    assert_eq!(token(&jp), unfrozen(Side::New));

    rec.set_trap("data.activate_artifacts", Trap::Crash);
    crash(|| rollback(&spec, &rec, &jp));
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::RolledBack);
    assert_eq!(active(&jp).as_deref(), Some("\"old\""));
    assert_eq!(token(&jp), unfrozen(Side::Old));
}

/// The same at a rollback's freeze: a run on the new side that cannot be stopped refuses the
/// rollback; the new side keeps serving and keeps the jobs, unfrozen.
#[test]
fn a_run_that_cannot_be_stopped_refuses_the_rollback_and_new_keeps_the_site() {
    let (_dir, jp, mut spec, rec) = cron_shop();
    spec.artifacts.cron_wait_s = 0;
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    let t = now_s();
    let stuck = run_in_progress(&jp, Side::New, t, Duration::from_millis(800));
    let err = rollback(&spec, &rec, &jp).unwrap_err().to_string();
    assert!(
        err.contains("refusing the switch") && err.contains("job tick (new side"),
        "{err}"
    );
    assert_eq!(serving(&spec, &rec), Ok(Dc::New));
    assert_eq!(token(&jp).owner, Side::New);
    assert!(!token(&jp).frozen);
    assert_eq!(stuck.join().unwrap(), Outcome::Ran { exit: 0 });
}

/// The rollback's freeze waits for a run in progress on the new side before it pauses the
/// databases (as the forward freeze does): a job writing its database ends, instead of waiting
/// on the pause until the freeze's wait runs out and the run is stopped.
#[test]
fn the_rollback_waits_for_a_run_in_progress_before_pausing_the_databases() {
    let (_dir, jp, spec, rec) = cron_shop();
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    let n = rec.log().len();
    let t = now_s();
    let (p, r) = (jp.clone(), rec.clone());
    // The job "writes its database" at its end: it must find it not paused by the rollback.
    let run = std::thread::spawn(move || {
        let mut j = SqliteJournal::open(&p).unwrap();
        let s = Schedule::parse("*/10 * * * * *").unwrap();
        let inv = Invocation {
            site: "shop",
            job: "tick",
            side: Side::New,
            schedule: &s,
            max_wait: Duration::ZERO,
            poll: Duration::from_millis(10),
            process: None,
        };
        inv.run(&mut j, t, || {
            std::thread::sleep(Duration::from_millis(500));
            let paused = r.log()[n..].iter().any(|l| l.starts_with("proxy.pause"));
            Ok(if paused { 1 } else { 0 })
        })
        .unwrap()
        .unwrap()
    });
    while token(&jp).running.is_empty() {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(rollback(&spec, &rec, &jp).unwrap(), SiteState::RolledBack);
    assert_eq!(
        run.join().unwrap(),
        Outcome::Ran { exit: 0 },
        "the run found the database paused: {:?}",
        &rec.log()[n..]
    );
    assert_eq!(token(&jp), unfrozen(Side::Old));
}

/// Issue 20: the side about to gain the site gets its artifacts (its cron lines) before the
/// jobs freeze, so its cron starts the runs of slots due during the freeze too: they wait for
/// the unfreeze and run once on the owner. Before, the new side was enabled only at the commit
/// point and a slot due in between was started by the old side alone, which then refused it.
#[test]
fn the_gaining_side_is_armed_before_the_freeze_forward_and_back() {
    let (_dir, jp, mut spec, rec) = cron_shop();
    spec.artifacts.old_stage_dir = Some("/srv/old-artifacts".into());
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    let log = rec.log();
    let arm = at(&log, "data.arm_artifacts", 0);
    assert!(
        log[arm].contains("enable /var/lib/hostmove/artifacts/shop/active"),
        "{log:?}"
    );
    assert!(arm < at(&log, "proxy.pause", 0), "{log:?}");
    assert!(arm < at(&log, "data.activate_artifacts", 0), "{log:?}");
    // The old side keeps its jobs until the commit point.
    assert!(!log[..at(&log, "data.activate_artifacts", 0)]
        .iter()
        .any(|l| l.contains("disable /srv/old-artifacts")));

    let n = log.len();
    assert_eq!(rollback(&spec, &rec, &jp).unwrap(), SiteState::RolledBack);
    let log = rec.log();
    let arm = at(&log, "data.arm_artifacts", n);
    assert!(
        log[arm].contains("enable /srv/old-artifacts/shop/active"),
        "{log:?}"
    );
    assert!(arm < at(&log, "proxy.pause", n), "{log:?}");
}

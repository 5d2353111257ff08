//! Invariant tests of the cutover and rollback engine against the recording world: a site
//! killed or failing at any step ends serving from exactly one side, unfrozen, and a finished
//! rollback never copies stale data over the side that serves.

use super::*;
use crate::cutover::checkpoints::{self, Checkpoint, SCOPE};

/// Simulates a migrator killed after the rollback's last state change (`rolled_back`
/// committed) but before its checkpoint was cleared and its lease released.
fn leave_rollback_pending(path: &Path, site: &str) {
    let mut j = SqliteJournal::open(path).unwrap();
    checkpoints::put(&mut j, site, Checkpoint::Rollback, "1").unwrap();
    crate::cutover::lease::take(&mut j, site, Duration::from_secs(60)).unwrap();
}

#[test]
fn finishing_a_rollback_already_rolled_back_copies_nothing_over_the_old_side() {
    for via_wave in [false, true] {
        let (_dir, jp, spec, rec) = live_shop();
        assert_eq!(rollback(&spec, &rec, &jp).unwrap(), SiteState::RolledBack);
        leave_rollback_pending(&jp, "shop");
        // Writes land on the old side now; a copy new -> old would delete them.
        let n = rec.log().len();
        let state = if via_wave {
            // The next `wave run` finishes the pending rollback (and goes no further).
            migrate(&spec, &rec, &jp).unwrap()
        } else {
            rollback(&spec, &rec, &jp).unwrap()
        };
        let log = rec.log()[n..].to_vec();
        assert!(
            !log.iter().any(|l| l.contains("new -> old")),
            "stale copy back over the live old side: {log:?}"
        );
        let j = SqliteJournal::open(&jp).unwrap();
        assert!(!crate::cutover::rollback::in_progress(&j, "shop").unwrap());
        assert_eq!(state, SiteState::RolledBack, "via wave: {via_wave}");
        assert!(crate::cutover::lease::get(&j, "shop").unwrap().is_none());
        assert_eq!(serving(&spec, &rec), Ok(Dc::Old));
    }
}

#[test]
fn killed_inside_the_freeze_phase_is_unfrozen_by_recover_and_by_a_refused_rerun() {
    for action in ["haproxy.maint", "haproxy.drain", "proxy.pause"] {
        // The watchdog's recovery: the site serves from the old side again, lease released.
        let (_dir, jp, spec, rec) = shop();
        rec.set_trap(action, Trap::Crash);
        crash(|| migrate(&spec, &rec, &jp));
        {
            let sys = rec.systems(&spec);
            let mut j = SqliteJournal::open(&jp).unwrap();
            // The databases pause in their own phase once the web is frozen.
            let expect = if action == "proxy.pause" {
                SiteState::Frozen
            } else {
                SiteState::Synced
            };
            assert_eq!(j.site_state("shop").unwrap(), Some(expect), "{action}");
            assert!(crate::cutover::lease::get(&j, "shop").unwrap().is_some());
            let o = opts();
            Engine::new(&spec, &sys, &mut j, &o).recover().unwrap();
            assert!(crate::cutover::lease::get(&j, "shop").unwrap().is_none());
        }
        assert_eq!(serving(&spec, &rec), Ok(Dc::Old), "recover after {action}");

        // A re-run whose gate refuses the freeze must not leave the site frozen either.
        let dir = tempfile::tempdir().unwrap();
        let jp = dir.path().join("j");
        let rec = Recorder::for_site(&spec, false);
        rec.set_trap(action, Trap::Crash);
        crash(|| migrate(&spec, &rec, &jp));
        rec.set_tunnel_healthy(false);
        let err = migrate(&spec, &rec, &jp).unwrap_err();
        assert!(matches!(err, CutoverError::Gate(_)), "{action}: {err}");
        assert_eq!(serving(&spec, &rec), Ok(Dc::Old), "gate after {action}");
    }
}

#[test]
fn failed_copy_back_after_a_partial_rollback_switch_serves_from_new_only() {
    for action in ["dns.replace", "proxy.resume"] {
        let (_dir, jp, spec, rec) = live_shop();
        // Killed inside the rollback's switch: the old VIP already points at the old web.
        rec.set_trap(action, Trap::Crash);
        crash(|| rollback(&spec, &rec, &jp));
        // The resumed rollback cannot copy back: the new side must serve again, alone.
        rec.set_trap("data.sync_files", Trap::Fail);
        let err = rollback(&spec, &rec, &jp).unwrap_err();
        assert!(err.to_string().contains("rollback-copy"), "{action}: {err}");
        assert_eq!(
            serving(&spec, &rec),
            Ok(Dc::New),
            "after a kill at {action}"
        );
    }
}

#[test]
fn switch_or_unfreeze_errors_never_leave_the_site_frozen() {
    // Before the commit point a failed switch aborts to the old side.
    for action in ["haproxy.addr", "dns.replace", "proxy.resume"] {
        let (_dir, jp, spec, rec) = shop();
        // Synced first, so the trap fires in the switch (not in an earlier phase).
        synced(&spec, &rec, &jp);
        rec.set_trap(action, Trap::Fail);
        let err = migrate(&spec, &rec, &jp).unwrap_err();
        assert!(
            matches!(err, CutoverError::Aborted { .. }),
            "{action}: {err}"
        );
        assert_eq!(
            serving(&spec, &rec),
            Ok(Dc::Old),
            "switch failed at {action}"
        );
        let j = SqliteJournal::open(&jp).unwrap();
        assert!(
            crate::cutover::lease::get(&j, "shop").unwrap().is_none(),
            "{action}"
        );
    }
    // A transient unfreeze error is retried: the site goes live.
    let (_dir, jp, spec, rec) = shop();
    rec.set_trap("haproxy.ready", Trap::Fail);
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    assert_eq!(serving(&spec, &rec), Ok(Dc::New));
}

#[test]
fn group_switch_or_unfreeze_errors_never_leave_members_frozen() {
    let specs = [sample("ga"), sample("gb")];
    let members: Vec<&SiteSpec> = specs.iter().collect();
    for (action, side) in [("dns.replace", Dc::Old), ("haproxy.ready", Dc::New)] {
        let dir = tempfile::tempdir().unwrap();
        let jp = dir.path().join("j");
        let rec = Recorder::for_site(&specs[0], false);
        rec.add_site(&specs[1]);
        // The first `dns.replace` and `haproxy.ready` are the first member's switch/unfreeze.
        rec.set_trap(action, Trap::Fail);
        let out =
            crate::cutover::group::migrate_group(&jp, &members, &|s| Ok(rec.systems(s)), &opts());
        assert_eq!(out.len(), 2);
        for s in &specs {
            assert_eq!(serving(s, &rec), Ok(side), "{action}: {}", s.site);
        }
    }
}

#[test]
fn rollback_freeze_error_unfreezes_on_the_new_side() {
    for action in ["haproxy.maint", "proxy.pause"] {
        let (_dir, jp, spec, rec) = live_shop();
        rec.set_trap(action, Trap::Fail);
        let err = rollback(&spec, &rec, &jp).unwrap_err();
        assert!(
            err.to_string().contains("rollback-freeze"),
            "{action}: {err}"
        );
        assert_eq!(serving(&spec, &rec), Ok(Dc::New), "{action}");
        let j = SqliteJournal::open(&jp).unwrap();
        assert!(
            crate::cutover::lease::get(&j, "shop").unwrap().is_none(),
            "{action}"
        );
        assert!(
            !crate::cutover::rollback::in_progress(&j, "shop").unwrap(),
            "{action}"
        );
    }
}

#[test]
fn rollback_switch_or_unfreeze_errors_are_retried_not_left_frozen() {
    for action in [
        "haproxy.addr",
        "dns.replace",
        "proxy.resume",
        "haproxy.ready",
    ] {
        let (_dir, jp, spec, rec) = live_shop();
        rec.set_trap(action, Trap::Fail);
        assert_eq!(
            rollback(&spec, &rec, &jp).unwrap(),
            SiteState::RolledBack,
            "{action}"
        );
        assert_eq!(serving(&spec, &rec), Ok(Dc::Old), "{action}");
        let j = SqliteJournal::open(&jp).unwrap();
        assert!(
            crate::cutover::lease::get(&j, "shop").unwrap().is_none(),
            "{action}"
        );
    }
}

#[test]
fn resuming_from_verified_checks_the_tunnel_before_switching() {
    for via_recover in [false, true] {
        let (_dir, jp, spec, rec) = shop();
        synced(&spec, &rec, &jp);
        // Killed at the switch's first action, then the tunnel goes down.
        rec.set_trap("haproxy.addr", Trap::Crash);
        crash(|| migrate(&spec, &rec, &jp));
        rec.set_tunnel_healthy(false);
        let asked = rec.tunnel_asks();
        let sys = rec.systems(&spec);
        let mut j = SqliteJournal::open(&jp).unwrap();
        assert_eq!(j.site_state("shop").unwrap(), Some(SiteState::Verified));
        let o = opts();
        let e = Engine::new(&spec, &sys, &mut j, &o);
        let r = if via_recover {
            e.recover().map(|r| r.state)
        } else {
            e.migrate().map(|r| r.state)
        };
        assert!(
            !matches!(r, Ok(SiteState::Live)),
            "switched over an unhealthy tunnel"
        );
        assert_eq!(serving(&spec, &rec), Ok(Dc::Old), "recover: {via_recover}");
        assert!(crate::cutover::lease::get(&j, "shop").unwrap().is_none());
        // No gate ran in this process before the switch: the full check is asked, never
        // the cheap in-freeze confirmation.
        let now = rec.tunnel_asks();
        assert!(now.0 > asked.0, "{asked:?} -> {now:?}");
        assert_eq!(now.1, asked.1, "{asked:?} -> {now:?}");
    }
}

#[test]
fn the_freeze_confirms_the_tunnel_cheaply_after_the_full_gate() {
    let (_dir, jp, spec, rec) = shop();
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    let (checks, confirms) = rec.tunnel_asks();
    assert!(
        checks >= 1,
        "the gate before the freeze runs the full check"
    );
    assert_eq!(confirms, 1, "one confirmation inside the freeze");

    // The tunnel falls between the gate and the switch: the confirmation catches it and the
    // site goes back to old, never switched.
    let (_dir2, jp2, spec2, rec2) = shop();
    rec2.set_tunnel_fails_in_freeze(true);
    let err = migrate(&spec2, &rec2, &jp2).unwrap_err();
    assert!(matches!(err, CutoverError::Aborted { .. }), "{err}");
    assert!(!rec2.log().iter().any(|l| l.starts_with("dns.replace")));
    assert_eq!(serving(&spec2, &rec2), Ok(Dc::Old));
}

#[test]
fn rollback_freeze_drains_in_flight_requests_before_pausing() {
    let (_dir, jp, spec, rec) = live_shop();
    let n = rec.log().len();
    assert_eq!(rollback(&spec, &rec, &jp).unwrap(), SiteState::RolledBack);
    let log = rec.log()[n..].to_vec();
    let pos = |k: &str| log.iter().position(|l| l.starts_with(k));
    let drains = log
        .iter()
        .filter(|l| l.starts_with("haproxy.drain"))
        .count();
    assert_eq!(drains, 2, "both VIPs drained: {log:?}");
    assert!(pos("haproxy.maint") < pos("haproxy.drain"), "{log:?}");
    assert!(pos("haproxy.drain") < pos("proxy.pause"), "{log:?}");
    // A drain that cannot finish gives the rollback up: the new side serves again.
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("j");
    let rec = Recorder::for_site(&spec, false);
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    rec.set_trap("haproxy.drain", Trap::Fail);
    let err = rollback(&spec, &rec, &jp).unwrap_err();
    assert!(err.to_string().contains("rollback-freeze"), "{err}");
    assert_eq!(serving(&spec, &rec), Ok(Dc::New));
}

/// Writes a lease of `site` owned by another live process on this host (PID 1 never exits).
fn lease_of_another_live_migrator(path: &Path, site: &str) -> String {
    let mut j = SqliteJournal::open(path).unwrap();
    let l = crate::cutover::lease::Lease {
        host: crate::cutover::lease::hostname(),
        pid: 1,
        taken_ms: 0,
        expires_ms: 0,
        boot_id: None,
        started: None,
        kind: Default::default(),
        handed_over: None,
    };
    let json = serde_json::to_string(&l).unwrap();
    checkpoints::put(&mut j, site, Checkpoint::Lease, &json).unwrap();
    json
}

#[test]
fn a_site_leased_by_another_live_migrator_is_left_alone() {
    let spec = sample("shop");
    // A second `site migrate` while a wave holds the site touches nothing.
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("j");
    let rec = Recorder::for_site(&spec, false);
    let held = lease_of_another_live_migrator(&jp, "shop");
    let err = migrate(&spec, &rec, &jp).unwrap_err();
    assert!(matches!(err, CutoverError::Leased { .. }), "{err}");
    assert!(rec.log().is_empty(), "{:?}", rec.log());
    let raw = |jp: &Path| {
        SqliteJournal::open(jp)
            .unwrap()
            .checkpoint_raw(SCOPE, &Checkpoint::Lease.key("shop"))
            .unwrap()
    };
    assert_eq!(raw(&jp).as_deref(), Some(held.as_str()));

    // Nor does a rollback of a live site another migrator holds.
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("j");
    let rec = Recorder::for_site(&spec, false);
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    let n = rec.log().len();
    let held = lease_of_another_live_migrator(&jp, "shop");
    let err = rollback(&spec, &rec, &jp).unwrap_err();
    assert!(matches!(err, CutoverError::Leased { .. }), "{err}");
    assert_eq!(rec.log().len(), n, "{:?}", &rec.log()[n..]);
    assert_eq!(raw(&jp).as_deref(), Some(held.as_str()));
    assert_eq!(serving(&spec, &rec), Ok(Dc::New));
    let j = SqliteJournal::open(&jp).unwrap();
    assert!(!crate::cutover::rollback::in_progress(&j, "shop").unwrap());

    // Taking and releasing are compare-and-set: another live owner's lease survives both.
    let mut j = SqliteJournal::open(&jp).unwrap();
    assert!(crate::cutover::lease::take(&mut j, "shop", Duration::from_secs(60)).is_err());
    crate::cutover::lease::release(&mut j, "shop").unwrap();
    assert_eq!(
        checkpoints::get(&j, "shop", Checkpoint::Lease)
            .unwrap()
            .as_deref(),
        Some(held.as_str())
    );
    assert!(
        !checkpoints::swap(&mut j, "shop", Checkpoint::Lease, Some("null"), Some("x")).unwrap()
    );
    assert!(!checkpoints::swap(&mut j, "shop", Checkpoint::Lease, None, Some("x")).unwrap());
    assert!(checkpoints::swap(&mut j, "shop", Checkpoint::Lease, Some(&held), None).unwrap());
    crate::cutover::lease::take(&mut j, "shop", Duration::from_secs(60)).unwrap();
}

#[test]
fn a_rollback_killed_after_a_database_resumed_on_old_finishes_back_never_undoes() {
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("j");
    let mut spec = sample("shop");
    spec.databases.push("db_shop_2".into());
    let rec = Recorder::for_site(&spec, false);
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    // Killed inside the rollback's switch after the first database resumed on the old side
    // (its commit point): writes may land there from now on.
    rec.set_trap("proxy.resume", Trap::Crash);
    crash(|| rollback(&spec, &rec, &jp));
    let sys = rec.systems(&spec);
    sys.proxy.resume(&spec.databases[0], Some("old")).unwrap();
    // The resumed rollback cannot copy: it must not send the site back to new (db 1 would
    // stay on old, split), nor copy new -> old over db 1; the copy was verified before.
    rec.set_trap("data.sync_files", Trap::Fail);
    let n = rec.log().len();
    assert_eq!(rollback(&spec, &rec, &jp).unwrap(), SiteState::RolledBack);
    assert_eq!(serving(&spec, &rec), Ok(Dc::Old));
    for db in &spec.databases {
        let r = rec.route(db).unwrap();
        assert_eq!((r.side.as_str(), r.paused()), ("old", false), "{db}");
    }
    let log = rec.log()[n..].to_vec();
    assert!(!log.iter().any(|l| l.contains("new -> old")), "{log:?}");
}

#[test]
fn a_renewal_finding_the_lease_taken_over_stops_before_acting() {
    let (_dir, jp, spec, rec) = shop();
    let sys = rec.systems(&spec);
    let mut j = SqliteJournal::open(&jp).unwrap();
    let o = opts();
    let mut e = Engine::new(&spec, &sys, &mut j, &o);
    assert_eq!(e.advance().unwrap(), SiteState::Synced);
    e.freeze().unwrap();
    // A watchdog (wrongly, or after our lease expired) took the site over.
    let held = lease_of_another_live_migrator(&jp, "shop");
    let n = rec.log().len();
    let err = e.final_sync().unwrap_err();
    assert!(matches!(err, CutoverError::Leased { .. }), "{err}");
    // Not ours to put back either.
    let err = e.abort_now().unwrap_err();
    assert!(matches!(err, CutoverError::Leased { .. }), "{err}");
    e.release_lease().unwrap();
    drop(e);
    assert_eq!(rec.log().len(), n, "{:?}", &rec.log()[n..]);
    assert_eq!(
        checkpoints::get(&j, "shop", Checkpoint::Lease)
            .unwrap()
            .as_deref(),
        Some(held.as_str())
    );
}

/// Issue 18 (10): the abort restored DNS to the old VIP before the old VIP's server left
/// maintenance, so clients were sent to a frozen side (503) for the TTL. The old load balancer
/// is unfrozen first now.
#[test]
fn abort_unfreezes_the_old_load_balancer_before_restoring_dns() {
    let (_dir, jp, spec, rec) = shop();
    synced(&spec, &rec, &jp);
    // The switch pointed DNS at the new VIP, then failed before its commit point.
    rec.set_trap("proxy.resume", Trap::Fail);
    let n = rec.log().len();
    let err = migrate(&spec, &rec, &jp).unwrap_err();
    assert!(matches!(err, CutoverError::Aborted { .. }), "{err}");
    let log = rec.log()[n..].to_vec();
    let at = |prefix: &str| {
        log.iter()
            .rposition(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {log:?}"))
    };
    // The last of each is the abort's (the switch's dns.replace came first).
    let ready = at("haproxy.ready");
    let dns = at("dns.replace");
    assert!(
        log[..dns]
            .iter()
            .filter(|l| l.starts_with("dns.replace"))
            .count()
            == 1,
        "the switch's DNS change, then the abort's: {log:?}"
    );
    assert!(
        ready < dns,
        "DNS restored before the old VIP was ready: {log:?}"
    );
}

/// Two sites sharing a database, moved as one group. The CI's proxy-restart scenario: the
/// second member's post-check failed (the pre-switch fingerprint was taken while the proxy was
/// restarting) and it was rolled back alone, taking the shared database back to the old side
/// while the first member stayed live on the new web: split. A member found wrong after the
/// switch now rolls back its whole group.
#[test]
fn a_group_member_failing_its_post_check_rolls_back_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("j");
    let mut specs = [fingerprinted("ga"), fingerprinted("gb")];
    for s in &mut specs {
        s.databases = vec!["db_shared".into()];
    }
    let members: Vec<&SiteSpec> = specs.iter().collect();
    let rec = Recorder::for_site(&specs[0], false);
    rec.add_site(&specs[1]);
    // Fingerprints: both prepares and ga's post-check answer; gb's post-check fails.
    rec.set_trap("http.fingerprint", Trap::FailAfter(3));
    let out = crate::cutover::group::migrate_group(&jp, &members, &|s| Ok(rec.systems(s)), &opts());
    assert!(out.iter().all(|o| o.error.is_some()), "{out:?}");
    let j = SqliteJournal::open(&jp).unwrap();
    for s in &specs {
        assert_eq!(serving(s, &rec), Ok(Dc::Old), "{}", s.site);
        assert_eq!(
            j.site_state(&s.site).unwrap(),
            Some(SiteState::RolledBack),
            "{}",
            s.site
        );
        assert!(crate::cutover::lease::get(&j, &s.site).unwrap().is_none());
    }
    // The shared database was copied back once, while both members were frozen.
    let log = rec.log();
    let copies = log
        .iter()
        .filter(|l| l.contains("[\"db_shared\"] to old-dc"))
        .count();
    assert_eq!(copies, 1, "{log:?}");
}

/// A switch finding its database open on the other side (moved since its freeze paused it:
/// by an operator, or another site's rollback) refuses to declare the site switched; before,
/// it skipped the database (not paused) and the site went live with its writes on the old
/// side. It aborts to the old side instead.
#[test]
fn a_switch_finding_its_database_open_on_the_old_side_aborts_instead_of_going_live() {
    let (_dir, jp, spec, rec) = shop();
    rec.set_trap("proxy.resume", Trap::Crash);
    crash(|| migrate(&spec, &rec, &jp));
    {
        let j = SqliteJournal::open(&jp).unwrap();
        assert_eq!(j.site_state("shop").unwrap(), Some(SiteState::Verified));
    }
    // Someone resumed the database where it was (the old side) while the migrator was gone.
    rec.systems(&spec)
        .proxy
        .resume(&spec.databases[0], None)
        .unwrap();
    let err = migrate(&spec, &rec, &jp).unwrap_err();
    assert!(err.to_string().contains("open on side"), "{err}");
    assert_eq!(serving(&spec, &rec), Ok(Dc::Old));
    let j = SqliteJournal::open(&jp).unwrap();
    assert_ne!(j.site_state("shop").unwrap(), Some(SiteState::Live));
}

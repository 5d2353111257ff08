//! Site leases against the recording world: a migrator that read the site before it switched
//! never syncs over the live new side; a sync lease is held while syncing and released after;
//! an unfreeze the load balancer keeps refusing is retried, then handed to the watchdog.

use super::*;
use crate::cutover::lease::{self, LeaseKind};
use crate::cutover::watchdog::{expired, recover_expired};

fn quick() -> EngineOptions {
    EngineOptions {
        unfreeze_budget: Duration::from_millis(300),
        ..opts()
    }
}

/// Issue 18 (5): a migrator that prepared the site, then stalled while another one moved it
/// live, resumed its sync over the live new side (the sync deleted and overwrote what the new
/// side had taken since). Its sync is refused now, and writes nothing.
#[test]
fn a_stale_migrator_never_syncs_over_a_site_that_switched() {
    let (_dir, jp, spec, rec) = shop();
    let sys = rec.systems(&spec);
    let mut j = SqliteJournal::open(&jp).unwrap();
    let o = opts();
    let mut stale = Engine::new(&spec, &sys, &mut j, &o);
    stale.prepare().unwrap();
    // Meanwhile (its lease released, or another journal), the site went live.
    stale.release_lease().unwrap();
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    let n = rec.log().len();
    let err = stale.sync().unwrap_err();
    assert!(matches!(err, CutoverError::WrongState { .. }), "{err}");
    assert!(err.to_string().contains("already switched"), "{err}");
    assert_eq!(rec.log().len(), n, "wrote: {:?}", &rec.log()[n..]);
    assert_eq!(serving(&spec, &rec), Ok(Dc::New));
}

/// The sync phases run under a sync lease (another host's migrator is refused meanwhile); it is
/// released once the run ends, frozen or not.
#[test]
fn sync_runs_under_a_sync_lease_released_after() {
    let (_dir, jp, spec, rec) = shop();
    let sys = rec.systems(&spec);
    let mut j = SqliteJournal::open(&jp).unwrap();
    let o = opts();
    let mut e = Engine::new(&spec, &sys, &mut j, &o);
    assert_eq!(e.advance().unwrap(), SiteState::Synced);
    drop(e);
    let l = lease::get(&j, "shop").unwrap().expect("held while synced");
    assert_eq!(l.kind, LeaseKind::Sync);
    assert!(l.expires_ms - l.taken_ms >= o.sync_lease_ttl.as_millis() as i64);
    // From another host it is not expired: a second migrator there is refused.
    let elsewhere = lease::Lease {
        host: "another-host".into(),
        ..l
    };
    assert!(!elsewhere.expired(crate::journal::now_ms()));
    drop(j);
    // A run refused at the gate keeps nothing leased; a run that goes live neither.
    rec.set_tunnel_healthy(false);
    migrate(&spec, &rec, &jp).unwrap_err();
    assert!(lease::get(&SqliteJournal::open(&jp).unwrap(), "shop")
        .unwrap()
        .is_none());
    rec.set_tunnel_healthy(true);
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    assert!(lease::get(&SqliteJournal::open(&jp).unwrap(), "shop")
        .unwrap()
        .is_none());
}

/// Issue 18 (5): one sync pass longer than the sync lease's TTL. The lease used to be renewed
/// only between phases, so from another host it ran out mid-pass and a second migrator could
/// take the site; a keeper thread now renews it every third of the TTL while the pass runs.
#[test]
fn a_sync_pass_longer_than_the_lease_ttl_keeps_the_lease() {
    // Samples the lease as another host sees it while the pass runs: (samples, expired ones).
    let run = |renew: bool| -> (u32, u32) {
        let (_dir, jp, spec, rec) = shop();
        let sys = rec.systems(&spec);
        let o = EngineOptions {
            sync_lease_ttl: Duration::from_millis(300),
            renew_from: renew.then(|| jp.clone()),
            ..opts()
        };
        rec.set_trap("data.sync_files", Trap::Delay(Duration::from_millis(1500)));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (jp, done) = (jp.clone(), done.clone());
            std::thread::spawn(move || {
                let j = SqliteJournal::open(&jp).unwrap();
                let (mut seen, mut expired) = (0, 0);
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let logged = j.steps("shop").unwrap();
                    let in_sync = logged
                        .last()
                        .is_some_and(|s| s.phase == "sync" && s.ended_ms.is_none());
                    if let (true, Some(l)) = (in_sync, lease::get(&j, "shop").unwrap()) {
                        let elsewhere = lease::Lease {
                            host: "another-host".into(),
                            ..l
                        };
                        seen += 1;
                        expired += u32::from(elsewhere.expired(crate::journal::now_ms()));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                (seen, expired)
            })
        };
        let mut j = SqliteJournal::open(&jp).unwrap();
        let r = Engine::new(&spec, &sys, &mut j, &o).advance();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(r.unwrap(), SiteState::Synced);
        sampler.join().unwrap()
    };
    let (seen, expired) = run(true);
    assert!(seen >= 20, "sampled {seen} times mid-pass");
    assert_eq!(
        expired, 0,
        "expired in {expired} of {seen} samples mid-pass"
    );
    // The same pass without the keeper: the lease runs out (what the test guards against).
    let (seen, expired) = run(false);
    assert!(seen >= 20 && expired > 0, "{expired} of {seen}");
}

/// Issue 18 (6): past the commit point, an unfreeze the load balancer refused three times was
/// given up and the site left in 503 under a lease of a live owner, which `lease-watch` never
/// touches. Now it is retried with backoff, then handed over: `lease-watch` finishes it.
#[test]
fn an_unfreeze_refused_past_the_commit_point_is_retried_then_finished_by_lease_watch() {
    // Refused a few times: the backoff outlasts it, the site goes live.
    let (_dir, jp, spec, rec) = shop();
    synced(&spec, &rec, &jp);
    rec.set_trap("haproxy.ready", Trap::FailTimes(3));
    let sys = rec.systems(&spec);
    let mut j = SqliteJournal::open(&jp).unwrap();
    let o = EngineOptions {
        unfreeze_budget: Duration::from_secs(5),
        ..opts()
    };
    let r = Engine::new(&spec, &sys, &mut j, &o).migrate().unwrap();
    assert_eq!(r.state, SiteState::Live);
    assert_eq!(serving(&spec, &rec), Ok(Dc::New));

    // Refused for longer than the budget: handed over, still frozen, then lease-watch (in
    // this very process, whose lease it was) unfreezes it on the new side.
    let (_dir, jp, spec, rec) = shop();
    synced(&spec, &rec, &jp);
    rec.set_trap("haproxy.ready", Trap::FailTimes(1000));
    let sys = rec.systems(&spec);
    let mut j = SqliteJournal::open(&jp).unwrap();
    let o = quick();
    Engine::new(&spec, &sys, &mut j, &o).migrate().unwrap_err();
    assert_eq!(j.site_state("shop").unwrap(), Some(SiteState::Switched));
    assert!(matches!(serving(&spec, &rec), Err(NotOneSide::Frozen(_))));
    let l = lease::get(&j, "shop")
        .unwrap()
        .expect("lease left for the watchdog");
    assert!(l.is_ours() && l.handed_over.is_some(), "{l:?}");
    assert!(l.expired(crate::journal::now_ms()));
    // The load balancer answers again.
    rec.set_trap("haproxy.ready", Trap::FailTimes(0));
    let out = recover_expired(
        &jp,
        std::slice::from_ref(&spec),
        &|s| Ok(rec.systems(s)),
        &o,
    )
    .unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].result.is_ok(), "{out:?}");
    assert_eq!(serving(&spec, &rec), Ok(Dc::New));
    assert_eq!(j.site_state("shop").unwrap(), Some(SiteState::Live));
    assert!(lease::get(&j, "shop").unwrap().is_none());
}

/// The next `wave run` (or `site migrate`) finishes a handed-over site too.
#[test]
fn a_handed_over_site_is_finished_by_the_next_run() {
    let (_dir, jp, spec, rec) = shop();
    synced(&spec, &rec, &jp);
    rec.set_trap("haproxy.ready", Trap::FailTimes(1000));
    let sys = rec.systems(&spec);
    let mut j = SqliteJournal::open(&jp).unwrap();
    let o = quick();
    Engine::new(&spec, &sys, &mut j, &o).migrate().unwrap_err();
    rec.set_trap("haproxy.ready", Trap::FailTimes(0));
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    assert_eq!(serving(&spec, &rec), Ok(Dc::New));
    assert!(lease::get(&j, "shop").unwrap().is_none());
}

/// A standalone command killed while it held a sync lease on a name the site specs do not
/// list (`copy-db DB` without a site): `lease-watch` releases it (nothing was frozen) instead of
/// reporting it forever; a freeze lease there is still reported, never guessed at.
#[test]
fn a_dead_standalone_sync_lease_is_released_by_the_watchdog() {
    let (_dir, jp, spec, rec) = shop();
    use crate::cutover::checkpoints::{self, Checkpoint};
    let mut j = SqliteJournal::open(&jp).unwrap();
    lease::take_kind(&mut j, "probe", LeaseKind::Sync, Duration::from_secs(60)).unwrap();
    let ours = lease::get(&j, "probe").unwrap().unwrap();
    lease::release(&mut j, "probe").unwrap();
    for (name, kind) in [
        ("shop_db", LeaseKind::Sync),
        ("frozen_db", LeaseKind::Freeze),
    ] {
        let dead = lease::Lease {
            pid: i32::MAX as u32, // no such process: its owner is gone
            kind,
            ..ours.clone()
        };
        let l = serde_json::to_string(&dead).unwrap();
        checkpoints::put(&mut j, name, Checkpoint::Lease, &l).unwrap();
    }
    // What `lease-watch --dry-run` lists: both dead leases, and nothing changed.
    let mut listed: Vec<String> = expired(&jp).unwrap().into_iter().map(|(s, _)| s).collect();
    listed.sort();
    assert_eq!(listed, ["frozen_db", "shop_db"]);
    assert!(lease::get(&j, "shop_db").unwrap().is_some());
    let out = recover_expired(&jp, &[spec], &|s| Ok(rec.systems(s)), &opts()).unwrap();
    let result = |site: &str| {
        let r = out.iter().find(|r| r.site == site).expect(site);
        r.result
            .as_ref()
            .map(|x| x.to_string())
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        result("shop_db"),
        Ok("sync lease released, nothing was frozen".to_string())
    );
    assert!(lease::get(&j, "shop_db").unwrap().is_none());
    assert_eq!(
        result("frozen_db"),
        Err("site frozen_db is not in the site spec file".to_string())
    );
    assert!(lease::get(&j, "frozen_db").unwrap().is_some());
}

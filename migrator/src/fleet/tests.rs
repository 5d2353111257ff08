//! The worker loop against the recording world: a site left frozen by a dead worker is put back
//! by a live worker's watchdog while that worker is busy with a group of its own.

use super::worker::{self, Event, WorkerOptions};
use super::Fleet;
use crate::cutover::checkpoints::{self, Checkpoint};
use crate::cutover::lease::{self, Lease};
use crate::cutover::{Engine, EngineOptions};
use crate::dry_run::{Recorder, Trap};
use crate::journal::{JournalStore, SiteState, SqliteJournal};
use crate::site_spec::{sample, SiteSpec, SpecError};
use crate::systems::Dc;
use drivers::lb::AdminState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether `spec` is frozen in the recording world (old server in maint or its database paused).
fn frozen(rec: &Recorder, spec: &SiteSpec) -> bool {
    let old = rec
        .server(Dc::Old, &spec.old_lb.backend, &spec.old_lb.server)
        .unwrap();
    old.admin != AdminState::Ready || rec.route(&spec.databases[0]).unwrap().paused()
}

/// What one run of a worker saw: when `frozen_site` stopped being frozen (from the start of the
/// run, `None`: never while the worker ran), the sites its watchdog recovered, and how long
/// the run took.
struct Seen {
    unfrozen_after: Option<Duration>,
    recovered: Vec<String>,
    ran: Duration,
}

/// Site `dead` is frozen by a worker that was killed inside its freeze (its lease names a PID
/// that does not exist, its group's claim is still live), and site `busy`, in another group,
/// takes a worker `busy_for` to sync. One worker (watchdog every 50 ms, or none) runs `busy`'s
/// group while a sampler watches `dead`.
fn run_beside_a_dead_workers_freeze(watch: Option<Duration>, busy_for: Duration) -> Seen {
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("j.sqlite");
    let (dead, busy) = (sample("dead"), sample("busy"));
    let rec = Recorder::for_site(&dead, false);
    rec.add_site(&busy);
    let o = EngineOptions {
        gate_wait: Duration::from_millis(50),
        gate_poll: Duration::from_millis(10),
        ..Default::default()
    };
    // The dead worker: its group claimed (a lease far from running out), its site killed
    // inside the freeze (before verify), the lease left naming a process that is gone.
    let fleet = Fleet::open(&jp).unwrap();
    fleet
        .start_wave(
            1,
            "plan#wave1",
            &[vec!["dead".into()], vec!["busy".into()]],
            "t",
        )
        .unwrap();
    let held = fleet.claim(1, "host:999999:boot", 60_000).unwrap().unwrap();
    assert_eq!(held.sites, ["dead"]);
    rec.set_trap("data.verify", Trap::Crash);
    let sys = rec.systems(&dead);
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut j = SqliteJournal::open(&jp).unwrap();
        Engine::new(&dead, &sys, &mut j, &o).migrate()
    }));
    assert!(killed.is_err(), "the injected kill did not fire");
    rec.set_trap("data.verify", Trap::FailTimes(0));
    let mut j = SqliteJournal::open(&jp).unwrap();
    let left = lease::get(&j, "dead")
        .unwrap()
        .expect("a freeze lease left");
    let gone = Lease {
        pid: i32::MAX as u32, // beyond pid_max: no such process
        ..left
    };
    let gone = serde_json::to_string(&gone).unwrap();
    checkpoints::put(&mut j, "dead", Checkpoint::Lease, &gone).unwrap();
    assert!(frozen(&rec, &dead), "the dead worker's site is frozen");
    assert!(matches!(
        j.site_state("dead").unwrap(),
        Some(SiteState::Frozen | SiteState::FinalSynced)
    ));
    // The live worker: one group (busy's), whose sync is long.
    rec.set_trap("data.sync_files", Trap::Delay(busy_for));
    let specs = [dead.clone(), busy.clone()];
    let lookup = |n: &str| {
        specs
            .iter()
            .find(|s| s.site == n)
            .ok_or_else(|| SpecError::UnknownSite(n.to_string()))
    };
    let build = |s: &SiteSpec| Ok(rec.systems(s));
    let stop = Arc::new(AtomicBool::new(false));
    let opts = WorkerOptions {
        wave: 1,
        owner: super::owner_id(),
        lease: Duration::from_secs(30),
        poll: Duration::from_millis(50),
        stop: stop.clone(),
        watch,
    };
    let recovered = Mutex::new(Vec::new());
    let running = AtomicBool::new(true);
    let t0 = Instant::now();
    let unfrozen_after = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            while running.load(Ordering::SeqCst) {
                if !frozen(&rec, &dead) {
                    return Some(t0.elapsed());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        });
        let mut on = |ev: Event<'_>| match ev {
            // One group, then the worker returns.
            Event::Claimed { .. } => stop.store(true, Ordering::SeqCst),
            Event::Recovered(r) => recovered.lock().unwrap().push(r.site.clone()),
            _ => {}
        };
        let sum = worker::run(&jp, &opts, &lookup, &build, &o, &mut on).unwrap();
        running.store(false, Ordering::SeqCst);
        assert_eq!((sum.groups, sum.failed), (1, 0), "{sum:?}");
        sampler.join().unwrap()
    });
    Seen {
        unfrozen_after,
        recovered: recovered.into_inner().unwrap(),
        ran: t0.elapsed(),
    }
}

/// Issue 17 (fleet-wave, "no site frozen longer than the lease"): a worker killed inside a
/// freeze left its site frozen until its group was claimed again, i.e. at least a claim lease
/// later, and only once a worker was free. Now every worker's watchdog puts the site back as
/// soon as the dead owner's lease counts as expired (on its host: at once), busy or not.
#[test]
fn a_dead_workers_frozen_site_is_put_back_while_the_others_are_busy() {
    let busy = Duration::from_millis(1500);
    let seen = run_beside_a_dead_workers_freeze(Some(Duration::from_millis(50)), busy);
    let after = seen
        .unfrozen_after
        .expect("the dead worker's site stayed frozen");
    assert!(
        after < Duration::from_millis(1000) && after < seen.ran,
        "unfrozen only after {after:?} (the worker ran {:?})",
        seen.ran
    );
    assert_eq!(seen.recovered, ["dead"]);
    // Without the watchdog (as before), the site stays frozen while the worker is busy.
    let before = run_beside_a_dead_workers_freeze(None, busy);
    assert!(
        before.unfrozen_after.is_none() && before.recovered.is_empty(),
        "{:?}",
        before.unfrozen_after
    );
    assert!(before.ran >= busy, "{:?}", before.ran);
}

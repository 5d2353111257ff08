//! The loop of `migrator worker` (issue 17): claim a move group of a started wave, move its
//! sites while a thread renews the claim, mark the group done, until every group is done. The
//! binary prints what happens ([`Event`]); the fleet benchmark (`benches/fleet.rs`) runs the
//! same loop in threads and counts it.
//!
//! Beside the loop, a watchdog thread ([`WorkerOptions::watch`]) looks at the sites of every
//! claimed group of the wave and puts back any whose freeze lease expired (its owner died: on
//! this host at once, elsewhere once the lease's TTL ran out since its last renewal;
//! [`crate::cutover::lease`]). Without it a worker killed inside a freeze left its site frozen
//! until its group was claimed again: a claim lease later at best, and only once a worker was
//! free to claim it (the others may be busy with long groups of their own).

use super::{Claim, Fleet};
use crate::cutover::group::{SiteOutcome, SystemsFn};
use crate::cutover::watchdog::{recover_frozen, Recovered};
use crate::cutover::EngineOptions;
use crate::journal::{open_journal_at, JournalError};
use crate::site_spec::{SiteSpec, SpecError};
use crate::wave::run_group;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How one worker works.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub wave: u32,
    /// Who claims ([`super::owner_id`]; unique per worker: renewals and the final mark check
    /// it).
    pub owner: String,
    /// How long a claim lasts without renewal (renewed every third of it while working).
    pub lease: Duration,
    /// Pause between looks for a claimable group while none is.
    pub poll: Duration,
    /// Once set, no new group is claimed: the worker returns when its current group is done.
    pub stop: Arc<AtomicBool>,
    /// How often the watchdog looks for claimed sites left frozen by a dead worker (`None`:
    /// no watchdog; a frozen site then waits for its group to be claimed again).
    pub watch: Option<Duration>,
}

/// What the worker did, as it happens.
#[derive(Debug)]
pub enum Event<'a> {
    /// A group was claimed; `took`: the claim's time (one transaction in the store).
    Claimed { claim: &'a Claim, took: Duration },
    /// No group was claimable (all done or held, the wave paused or throttled).
    NothingClaimable { took: Duration },
    /// A group's sites ran. `kept`: the claim was still ours at the end and the group is
    /// marked done (`false`: it ran out and another worker took the group over).
    /// `renewals`: what went wrong renewing the claim meanwhile.
    Ran {
        claim: &'a Claim,
        outcomes: &'a [SiteOutcome],
        kept: bool,
        renewals: Vec<String>,
    },
    /// The watchdog put back a claimed site whose freeze lease had expired (its worker died).
    Recovered(&'a Recovered),
    /// The watchdog could not look this round (the journal unreachable); it looks again.
    WatchFailed(String),
}

/// How a worker's run ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    pub groups: usize,
    pub sites: usize,
    /// Sites that did not go live.
    pub failed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A claimed group names a site the spec file does not have.
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// Finds a site's spec by name.
pub type SpecLookup<'s> = &'s (dyn Fn(&str) -> Result<&'s SiteSpec, SpecError> + Sync);

/// Claims and moves groups of `opts.wave` until every group is done (or `opts.stop` is set);
/// `on` hears each [`Event`] (from the watchdog's thread too).
pub fn run(
    journal: &Path,
    opts: &WorkerOptions,
    spec: SpecLookup<'_>,
    systems: SystemsFn<'_>,
    engine: &EngineOptions,
    on: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<WorkerSummary, WorkerError> {
    let on = Mutex::new(on);
    let emit = |ev: Event<'_>| (on.lock().unwrap_or_else(|e| e.into_inner()))(ev);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        if let Some(every) = opts.watch {
            let (emit, done) = (&emit, &done);
            s.spawn(move || watch(journal, opts.wave, every, done, spec, systems, engine, emit));
        }
        let r = claim_loop(journal, opts, spec, systems, engine, &emit);
        done.store(true, Ordering::SeqCst);
        r
    })
}

fn claim_loop(
    journal: &Path,
    opts: &WorkerOptions,
    spec: SpecLookup<'_>,
    systems: SystemsFn<'_>,
    engine: &EngineOptions,
    on: &dyn Fn(Event<'_>),
) -> Result<WorkerSummary, WorkerError> {
    let fleet = Fleet::open(journal)?;
    let lease_ms = millis(opts.lease);
    let mut sum = WorkerSummary::default();
    while !opts.stop.load(Ordering::SeqCst) {
        let t = Instant::now();
        let Some(c) = fleet.claim(opts.wave, &opts.owner, lease_ms)? else {
            on(Event::NothingClaimable { took: t.elapsed() });
            if fleet.progress(opts.wave)?.finished() {
                break;
            }
            std::thread::sleep(opts.poll);
            continue;
        };
        on(Event::Claimed {
            claim: &c,
            took: t.elapsed(),
        });
        let specs = c
            .sites
            .iter()
            .map(|s| spec(s))
            .collect::<Result<Vec<_>, _>>()?;
        let (outs, renewals) = renewing(journal, &c, opts.lease, || {
            run_group(journal, &specs, systems, engine)
        });
        let kept = fleet.finish(&c)?;
        sum.groups += 1;
        sum.sites += outs.len();
        sum.failed += outs.iter().filter(|o| o.error.is_some()).count();
        on(Event::Ran {
            claim: &c,
            outcomes: &outs,
            kept,
            renewals,
        });
    }
    Ok(sum)
}

/// The watchdog: every `every` until `done`, the claimed sites of `wave` whose freeze lease
/// expired are put back on the side that owns their data ([`recover_frozen`]). Its store
/// handles are opened once; an error is reported and the next round tries again.
#[allow(clippy::too_many_arguments)]
fn watch(
    journal: &Path,
    wave: u32,
    every: Duration,
    done: &AtomicBool,
    spec: SpecLookup<'_>,
    systems: SystemsFn<'_>,
    engine: &EngineOptions,
    on: &dyn Fn(Event<'_>),
) {
    let find = |name: &str| spec(name).ok();
    let mut handles = None;
    let mut next = Instant::now() + every;
    while !done.load(Ordering::SeqCst) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(20).min(every));
            continue;
        }
        next = Instant::now() + every;
        if handles.is_none() {
            match Fleet::open(journal).and_then(|f| Ok((f, open_journal_at(journal)?))) {
                Ok(h) => handles = Some(h),
                Err(e) => {
                    on(Event::WatchFailed(e.to_string()));
                    continue;
                }
            }
        }
        let Some((fleet, j)) = &handles else { continue };
        let round = fleet
            .claimed_sites(wave)
            .map_err(|e| e.to_string())
            .and_then(|sites| {
                recover_frozen(&**j, journal, &sites, &find, systems, engine)
                    .map_err(|e| e.to_string())
            });
        match round {
            Ok(found) => found.iter().for_each(|r| on(Event::Recovered(r))),
            Err(e) => on(Event::WatchFailed(e)),
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Runs `work` while a thread renews the claim's lease every third of it; returns what
/// `work` returned and what went wrong renewing.
fn renewing<T>(
    journal: &Path,
    c: &Claim,
    lease: Duration,
    work: impl FnOnce() -> T,
) -> (T, Vec<String>) {
    let stop = AtomicBool::new(false);
    let problems = Mutex::new(Vec::new());
    let note = |m: String| problems.lock().expect("renewal notes").push(m);
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            let fleet = match Fleet::open(journal) {
                Ok(f) => f,
                Err(e) => return note(format!("renewing the claim: {e}")),
            };
            let mut last = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() < lease / 3 {
                    continue;
                }
                last = Instant::now();
                match fleet.renew(c, millis(lease)) {
                    Ok(true) => {}
                    Ok(false) => return note("the claim was taken over".into()),
                    Err(e) => note(format!("renewing the claim: {e}")),
                }
            }
        });
        let r = work();
        stop.store(true, Ordering::SeqCst);
        r
    });
    (r, problems.into_inner().expect("renewal notes"))
}

//! The lease watchdog (`migrator lease-watch`, and the start of a `wave run`): every site whose
//! freeze lease expired, or whose owner process on this host is gone, is put back on the side
//! that owns its data ([`Engine::recover`]). See [`crate::cutover::lease`] for the rules.

use crate::cutover::engine::{Engine, EngineOptions};
use crate::cutover::group::SystemsFn;
use crate::cutover::lease::{all, get, release, Lease, LeaseKind};
use crate::cutover::phase::CutoverError;
use crate::journal::{now_ms, open_journal_at, JournalError, JournalStore, SiteState};
use crate::site_spec::SiteSpec;
use crate::systems::SystemError;
use std::path::Path;

/// What the watchdog did for one site.
#[derive(Debug, serde::Serialize)]
pub struct Recovered {
    pub site: String,
    pub lease: Lease,
    /// The state the site ended in, or why recovery failed.
    pub result: Result<Recovery, RecoveryError>,
}

impl Recovered {
    /// How it ended, as the commands print it: `recovered, now STATE` or
    /// `recovery FAILED: WHY`.
    pub fn outcome(&self) -> String {
        match &self.result {
            Ok(st) => format!("recovered, now {st}"),
            Err(e) => format!("recovery FAILED: {e}"),
        }
    }
}

/// How a recovery ended (shown, and serialized, as the state's name or `already recovered`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Put back on one side: the state it ended in.
    Now(SiteState),
    /// Another watchdog was first: its lease is no longer expired.
    AlreadyRecovered,
    /// A dead owner's sync lease on a name the specs do not list (a standalone `copy-db` of
    /// a database without a site, killed): nothing was frozen, the lease is released.
    SyncLeaseReleased,
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recovery::Now(st) => st.fmt(f),
            Recovery::AlreadyRecovered => f.write_str("already recovered"),
            Recovery::SyncLeaseReleased => f.write_str("sync lease released, nothing was frozen"),
        }
    }
}

impl serde::Serialize for Recovery {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why one site's recovery failed (the other sites are still recovered).
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("site {0} is not in the site spec file")]
    NotInSpecs(String),
    #[error(transparent)]
    Systems(#[from] SystemError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Cutover(#[from] CutoverError),
}

impl serde::Serialize for RecoveryError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A site missing from the specs: a dead owner's sync lease froze nothing and is released;
/// any other lease is reported, never guessed at.
fn release_dead_sync_lease(journal_path: &Path, site: &str) -> Result<Recovery, RecoveryError> {
    let mut j = open_journal_at(journal_path)?;
    match get(&*j, site)? {
        Some(l) if l.kind == LeaseKind::Sync && l.expired(now_ms()) => {
            release(&mut *j, site)?;
            Ok(Recovery::SyncLeaseReleased)
        }
        Some(_) => Err(RecoveryError::NotInSpecs(site.to_string())),
        None => Ok(Recovery::AlreadyRecovered),
    }
}

/// Recovers every site whose lease expired (or whose owner died on this host): the site is
/// unfrozen on the side that owns its data. `specs` must list those sites; one missing is
/// reported, never guessed.
pub fn recover_expired(
    journal_path: &Path,
    specs: &[SiteSpec],
    systems: SystemsFn<'_>,
    opts: &EngineOptions,
) -> Result<Vec<Recovered>, CutoverError> {
    let lookup = |name: &str| specs.iter().find(|s| s.site == name);
    let mut out = Vec::new();
    for (site, lease) in expired(journal_path)? {
        let result = recover_one(journal_path, &lookup, systems, opts, &site);
        out.push(Recovered {
            site,
            lease,
            result,
        });
    }
    Ok(out)
}

/// Finds a site's spec by name (`None`: not in the spec file).
pub type SpecFinder<'s> = &'s (dyn Fn(&str) -> Option<&'s SiteSpec> + Sync);

/// [`recover_expired`] limited to `sites` and to freeze leases: the sites of the move groups
/// claimed in a fleet (`migrator worker`'s watchdog, issue 17), so a worker that died inside a
/// freeze does not keep its site frozen until its group is claimed again. Reads one lease per
/// site, never the whole journal's.
/// `journal` reads the leases (the caller keeps it open between rounds); a recovery opens
/// its own handle on `journal_path`.
pub fn recover_frozen(
    journal: &dyn JournalStore,
    journal_path: &Path,
    sites: &[String],
    find: SpecFinder<'_>,
    systems: SystemsFn<'_>,
    opts: &EngineOptions,
) -> Result<Vec<Recovered>, CutoverError> {
    let mut out = Vec::new();
    for site in sites {
        let Some(lease) = get(journal, site)? else {
            continue;
        };
        if lease.kind != LeaseKind::Freeze || !lease.expired(now_ms()) {
            continue;
        }
        let result = recover_one(journal_path, find, systems, opts, site);
        out.push(Recovered {
            site: site.clone(),
            lease,
            result,
        });
    }
    Ok(out)
}

/// The leases [`recover_expired`] would act on now (expired, or their owner on this host is
/// gone), read-only: `lease-watch --dry-run`.
pub fn expired(journal_path: &Path) -> Result<Vec<(String, Lease)>, CutoverError> {
    let j = open_journal_at(journal_path)?;
    let now = now_ms();
    Ok(all(&*j)?
        .into_iter()
        .filter(|(_, l)| l.expired(now))
        .collect())
}

fn recover_one(
    journal_path: &Path,
    find: SpecFinder<'_>,
    systems: SystemsFn<'_>,
    opts: &EngineOptions,
    site: &str,
) -> Result<Recovery, RecoveryError> {
    let Some(spec) = find(site) else {
        return release_dead_sync_lease(journal_path, site);
    };
    let sys = systems(spec)?;
    let mut j = open_journal_at(journal_path)?;
    // Re-read under our own connection: another watchdog may have been first.
    match get(&*j, site)? {
        Some(l) if l.expired(now_ms()) => {}
        _ => return Ok(Recovery::AlreadyRecovered),
    }
    let report = Engine::new(spec, &sys, &mut *j, opts).recover()?;
    Ok(Recovery::Now(report.state))
}

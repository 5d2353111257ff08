//! The lease watchdog (`migrator lease-watch`, and the start of a `wave run`): every site whose
//! freeze lease expired, or whose owner process on this host is gone, is put back on the side
//! that owns its data ([`Engine::recover`]). See [`crate::cutover::lease`] for the rules.

use crate::cutover::engine::{Engine, EngineOptions};
use crate::cutover::lease::{all, get, Lease};
use crate::cutover::phase::CutoverError;
use crate::journal::now_ms;
use crate::journal::SqliteJournal;
use crate::site_spec::SiteSpec;
use crate::systems::Systems;
use std::path::Path;

/// What the watchdog did for one site.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recovered {
    pub site: String,
    pub lease: Lease,
    /// The state the site ended in, or why recovery failed.
    pub result: Result<String, String>,
}

/// Recovers every site whose lease expired (or whose owner died on this host): the site is
/// unfrozen on the side that owns its data. `specs` must list those sites; one missing is
/// reported, never guessed.
pub fn recover_expired(
    journal_path: &Path,
    specs: &[SiteSpec],
    systems: &(dyn Fn(&SiteSpec) -> Result<Systems, String> + Sync),
    opts: &EngineOptions,
) -> Result<Vec<Recovered>, CutoverError> {
    let leases = {
        let j = SqliteJournal::open(journal_path)?;
        all(&j)?
    };
    let now = now_ms();
    let mut out = Vec::new();
    for (site, lease) in leases {
        if !lease.expired(now) {
            continue;
        }
        let result = (|| {
            let spec = specs
                .iter()
                .find(|s| s.site == site)
                .ok_or_else(|| format!("site {site} is not in the site spec file"))?;
            let sys = systems(spec)?;
            let mut j = SqliteJournal::open(journal_path).map_err(|e| e.to_string())?;
            // Re-read under our own connection: another watchdog may have been first.
            match get(&j, &site).map_err(|e| e.to_string())? {
                Some(l) if l.expired(now_ms()) => {}
                _ => return Ok("already recovered".to_string()),
            }
            Engine::new(spec, &sys, &mut j, opts)
                .recover()
                .map(|r| r.state)
                .map_err(|e| e.to_string())
        })();
        out.push(Recovered {
            site,
            lease,
            result,
        });
    }
    Ok(out)
}

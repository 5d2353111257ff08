//! The site lease a standalone mutating command (`sync-files`, `copy-db`, `follow-db`) holds
//! for its whole run, as the cutover engine does for its phases: a sync lease taken before
//! anything is written, renewed in the background ([`LeaseKeeper`]) and released at the end.
//!
//! Refused, before anything is written, with the site and why: a site whose new side is in use
//! (`verified`, `switched`, `live`, `finalized`: writes go to the new side, which a copy would
//! overwrite), and a site another live migrator holds.

use anyhow::{bail, Context};
use migrator::cutover::engine::new_side_in_use;
use migrator::cutover::lease::{self, LeaseKind};
use migrator::cutover::lease_keeper::LeaseKeeper;
use migrator::cutover::EngineOptions;
use migrator::journal::{open_journal, JournalLocation, JournalStore, SiteState};
use std::path::Path;
use std::time::Duration;

/// A site held for one command; released when dropped (also on an error path).
pub struct HeldSite {
    site: String,
    journal: Box<dyn JournalStore + Send>,
    keeper: Option<LeaseKeeper>,
}

/// The TTL of a standalone command's lease (renewed every third of it while the command runs).
fn ttl() -> Duration {
    EngineOptions::default().sync_lease_ttl
}

/// Refuses `command` on `site` when the journal says its new side is in use.
fn refuse_if_switched(journal: &dyn JournalStore, site: &str, command: &str) -> anyhow::Result<()> {
    let state = journal.site_state(site)?.unwrap_or(SiteState::Planned);
    if new_side_in_use(state) {
        bail!(
            "{command}: site {site} is {}: its new side is live (or about to be), and this \
             command would overwrite the writes it takes; refusing (only `migrator rollback` \
             may write to it now)",
            state.as_str()
        );
    }
    Ok(())
}

/// Takes `site`'s sync lease for `command` (refused as the module says) and keeps it renewed
/// until the returned guard is released or dropped.
pub fn hold(journal_arg: &Path, site: &str, command: &str) -> anyhow::Result<HeldSite> {
    let location = JournalLocation::parse(journal_arg)?;
    let mut journal = open_journal(&location)?;
    refuse_if_switched(journal.as_ref(), site, command)?;
    lease::take_kind(journal.as_mut(), site, LeaseKind::Sync, ttl())
        .with_context(|| format!("{command}: site {site}"))?;
    let mut held = HeldSite {
        site: site.to_string(),
        journal,
        keeper: None,
    };
    // Switched between our look and our lease (the switching migrator released its lease):
    // the guard's drop gives the lease back.
    refuse_if_switched(held.journal.as_ref(), site, command)?;
    held.keeper = Some(LeaseKeeper::start(
        open_journal(&location)?,
        site,
        LeaseKind::Sync,
        ttl(),
    )?);
    Ok(held)
}

impl HeldSite {
    /// Stops renewing and releases the lease; an error when it was taken over meanwhile.
    pub fn release(mut self) -> anyhow::Result<()> {
        if let Some(k) = self.keeper.take() {
            k.stop()
                .with_context(|| format!("site {}: the lease was lost", self.site))?;
        }
        lease::release(self.journal.as_mut(), &self.site)?;
        Ok(())
    }
}

impl Drop for HeldSite {
    fn drop(&mut self) {
        drop(self.keeper.take());
        if let Err(e) = lease::release(self.journal.as_mut(), &self.site) {
            tracing::warn!("releasing the lease of site {}: {e}", self.site);
        }
    }
}

/// The site whose lease a database command takes: `--site` when given; else the journal's
/// site of the database's name; else, when the journal tracks no site at all (a standalone
/// copy), the database's name. A journal tracking other sites needs `--site`: the database
/// may belong to one of them, and guessing would leave that site unprotected.
pub fn site_of_db(
    journal_arg: &Path,
    db: &str,
    site: Option<&str>,
    command: &str,
) -> anyhow::Result<String> {
    if let Some(s) = site {
        return Ok(s.to_string());
    }
    let journal = open_journal(&JournalLocation::parse(journal_arg)?)?;
    let sites = journal.sites()?;
    if sites.is_empty() || sites.iter().any(|(s, _)| s == db) {
        return Ok(db.to_string());
    }
    let names: Vec<&str> = sites.iter().map(|(s, _)| s.as_str()).take(5).collect();
    bail!(
        "{command} {db}: the journal tracks sites ({}{}) and none is named {db}: say which site \
         the database belongs to with --site NAME, so that its lease and state are checked",
        names.join(", "),
        if sites.len() > names.len() {
            ", …"
        } else {
            ""
        }
    )
}

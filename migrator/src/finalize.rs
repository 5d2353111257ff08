//! `migrator finalize SITE|--wave N`: the end of a site's reversibility (docs/ARCHITECTURE.md §2,
//! invariant 5). A `live` site becomes `finalized`; from then on `migrator rollback` refuses it.
//!
//! A site is finalized only once its consistency-point bundle is verified
//! ([`crate::bundle::state::finalize_blocker`]): after finalize nothing else can bring back its
//! state at the switch. `override_reason` lets the operator finalize anyway; the reason is
//! journaled ([`crate::bundle::state::record_override`]).
//!
//! What finalize does NOT do by itself: delete anything. The old side's home and databases are
//! what a rollback would have copied back into; once finalized they are no longer needed.
//! Finalize lists what the old side holds for the site ([`old_copies`]) so the operator's
//! retirement procedure knows what it may release; `--drop-old-copies` drops them, only with a
//! verified bundle ([`crate::release_old`]).

use crate::cutover::lease;
use crate::cutover::phase::{run_phase, CutoverError, Phase};
use crate::cutover::rollback;
use crate::journal::{JournalStore, SiteState};
use crate::site_spec::SiteSpec;
use crate::systems::ProxyControl;
use std::path::PathBuf;

/// What finalizing one site did and what the old side may now release.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finalized {
    pub site: String,
    /// Already finalized before this call (nothing changed).
    pub already: bool,
    /// The old side's homes, kept, no longer needed by the migration.
    pub old_homes: Vec<PathBuf>,
    /// The old side's databases (same names), kept, no longer needed by the migration: only
    /// those the proxy serves from the new side.
    pub old_databases: Vec<String>,
    /// Databases of the site the proxy still serves from the old side (shared with a site that
    /// did not move, or was rolled back): in use there, never releasable.
    pub in_use_on_old: Vec<String>,
}

/// What the old side holds for `spec`'s site and what of it the proxy no longer serves from
/// there (`already` false); changes nothing.
pub fn old_copies(spec: &SiteSpec, proxy: &dyn ProxyControl) -> Result<Finalized, CutoverError> {
    let (mut releasable, mut in_use) = (Vec::new(), Vec::new());
    for db in &spec.databases {
        let r = proxy
            .route(db)
            .map_err(CutoverError::system(Phase::Finalize))?;
        if r.side == spec.proxy.new_side && !r.paused() {
            releasable.push(db.clone());
        } else {
            in_use.push(db.clone());
        }
    }
    Ok(Finalized {
        site: spec.site.clone(),
        already: false,
        old_homes: spec.homes.iter().map(|h| h.old.clone()).collect(),
        old_databases: releasable,
        in_use_on_old: in_use,
    })
}

/// Finalizes `spec`'s site: only a `live` one, with no rollback or freeze in progress. Which
/// old-side databases are releasable is asked of the proxy (`proxy`), never assumed.
pub fn finalize(
    journal: &mut dyn JournalStore,
    spec: &SiteSpec,
    proxy: &dyn ProxyControl,
    override_reason: Option<&str>,
) -> Result<Finalized, CutoverError> {
    let site = &spec.site;
    let state = journal.site_state(site)?.unwrap_or(SiteState::Planned);
    let copies = old_copies(spec, proxy)?;
    let out = |already| Finalized {
        already,
        ..copies.clone()
    };
    if state == SiteState::Finalized {
        return Ok(out(true));
    }
    if state != SiteState::Live
        || rollback::in_progress(journal, site)?
        || lease::get(journal, site)?.is_some()
    {
        return Err(CutoverError::WrongState {
            state,
            action: "finalize (only a live site with no rollback or freeze in progress)",
        });
    }
    if let Some(why) = crate::bundle::state::finalize_blocker(journal, site)? {
        match override_reason.map(str::trim).filter(|r| !r.is_empty()) {
            Some(reason) => {
                let stage = crate::bundle::state::get(journal, site)?.map(|s| s.stage);
                crate::bundle::state::record_override(journal, site, reason, stage)?;
            }
            None => {
                return Err(CutoverError::BundleNotVerified {
                    site: site.clone(),
                    why,
                })
            }
        }
    }
    // Under the site's lease (compare-and-set): a rollback starting meanwhile is refused, or
    // refuses us; never both.
    lease::take(journal, site, std::time::Duration::from_secs(60))?;
    let done = run_phase(journal, site, Phase::Finalize, || Ok(((), 0)));
    lease::release(journal, site)?;
    done?;
    Ok(out(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::SqliteJournal;
    use crate::site_spec::sample;

    #[test]
    fn only_live_sites_finalize_and_it_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = SqliteJournal::open(&dir.path().join("j")).unwrap();
        let spec = sample("shop");
        j.set_site_state("shop", SiteState::Switched).unwrap();
        let rec0 = crate::dry_run::Recorder::for_site(&spec, false);
        let e = finalize(&mut j, &spec, rec0.systems(&spec).proxy.as_ref(), None).unwrap_err();
        assert!(e.to_string().contains("only a live site"), "{e}");
        j.set_site_state("shop", SiteState::Live).unwrap();
        let rec = crate::dry_run::Recorder::for_site(&spec, false);
        let sys = rec.systems(&spec);
        for db in &spec.databases {
            sys.proxy.pause(db).unwrap();
            sys.proxy.resume(db, Some(&spec.proxy.new_side)).unwrap();
        }
        // No verified bundle: refused, nothing changed; then allowed with a journaled reason.
        let e = finalize(&mut j, &spec, sys.proxy.as_ref(), None).unwrap_err();
        assert!(e.to_string().contains("no bundle"), "{e}");
        let e = finalize(&mut j, &spec, sys.proxy.as_ref(), Some("  ")).unwrap_err();
        assert!(e.to_string().contains("--override-reason"), "{e}");
        assert_eq!(j.site_state("shop").unwrap(), Some(SiteState::Live));
        let f = finalize(&mut j, &spec, sys.proxy.as_ref(), Some("test")).unwrap();
        let o = crate::bundle::state::override_of(&j, "shop")
            .unwrap()
            .unwrap();
        assert_eq!((o.reason.as_str(), o.stage), ("test", None));
        assert!(!f.already);
        assert_eq!(f.old_databases, spec.databases);
        assert_eq!(j.site_state("shop").unwrap(), Some(SiteState::Finalized));
        assert!(
            finalize(&mut j, &spec, sys.proxy.as_ref(), Some("test"))
                .unwrap()
                .already
        );
        assert_eq!(j.steps("shop").unwrap().len(), 1, "one finalize step");
    }

    /// A verified bundle lets a site finalize without a reason; a failed one does not.
    #[test]
    fn a_verified_bundle_lets_a_site_finalize() {
        use crate::bundle::state::{self, BundleState, Stage};
        let dir = tempfile::tempdir().unwrap();
        let mut j = SqliteJournal::open(&dir.path().join("j")).unwrap();
        let spec = sample("shop");
        let rec = crate::dry_run::Recorder::for_site(&spec, false);
        let sys = rec.systems(&spec);
        j.set_site_state("shop", SiteState::Live).unwrap();
        let mut b = BundleState {
            stage: Stage::Failed,
            bundle: "shop/1".into(),
            store: "/b".into(),
            bytes: 1,
            at_ms: 1,
            error: Some("part db-x: altered".into()),
        };
        state::set(&mut j, "shop", &b).unwrap();
        let e = finalize(&mut j, &spec, sys.proxy.as_ref(), None).unwrap_err();
        assert!(e.to_string().contains("failed: part db-x: altered"), "{e}");
        b.stage = Stage::Verified;
        state::set(&mut j, "shop", &b).unwrap();
        assert!(
            !finalize(&mut j, &spec, sys.proxy.as_ref(), None)
                .unwrap()
                .already
        );
        assert_eq!(state::override_of(&j, "shop").unwrap(), None);
    }

    /// A database the proxy still serves from the old side (shared with a group mate that
    /// was rolled back) is in use there: never listed as releasable.
    #[test]
    fn a_database_still_served_on_old_is_not_releasable() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = SqliteJournal::open(&dir.path().join("j")).unwrap();
        let mut spec = sample("shop");
        let mate = sample("mate");
        spec.databases.push(mate.databases[0].clone());
        let rec = crate::dry_run::Recorder::for_site(&spec, false);
        rec.add_site(&mate);
        let sys = rec.systems(&spec);
        // The site's own database moved to new; the shared one is served on old.
        sys.proxy.pause(&spec.databases[0]).unwrap();
        sys.proxy
            .resume(&spec.databases[0], Some(&spec.proxy.new_side))
            .unwrap();
        j.set_site_state("shop", SiteState::Live).unwrap();
        let f = finalize(&mut j, &spec, sys.proxy.as_ref(), Some("test")).unwrap();
        assert_eq!(f.old_databases, [spec.databases[0].clone()]);
        assert_eq!(f.in_use_on_old, [spec.databases[1].clone()]);
    }
}

//! The repair: `PUT /routes/{db} {"side": expected}` for each repairable mismatch (see the
//! module above for which ones), the site's journal facts and the route read again just before.

use super::{check, AdminFactory, Freeze, Mismatch, RouteCheckError, RouteReport, SiteFacts};
use crate::journal::{JournalStore, SiteState};
use crate::site_spec::SiteSpec;
use drivers::proxy::ProxyError;
use serde::Serialize;

/// What `reconcile` did (or, in a dry run, would do) for one mismatch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Repair {
    /// Set (or, dry run, would set) to the expected side.
    Changed { applied: bool },
    /// Left alone, and why.
    Skipped { reason: String },
    /// The proxy refused the `PUT` with 409: the database stays paused.
    LeftPaused { reason: String },
    /// The `PUT` failed.
    Failed { error: String },
}

/// One line of `reconcile`'s report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepairLine {
    pub mismatch: Mismatch,
    #[serde(flatten)]
    pub repair: Repair,
}

impl RepairLine {
    /// `shop_db: old -> new (site shop, journal state live)`, and what happened.
    pub fn line(&self) -> String {
        let m = &self.mismatch;
        let base = format!(
            "{}: {} -> {} (site {}, journal state {})",
            m.database, m.proxy_side, m.expected_side, m.site, m.journal_state
        );
        match &self.repair {
            Repair::Changed { applied: true } => base,
            Repair::Changed { applied: false } => format!("{base}: dry run, not changed"),
            Repair::Skipped { reason } => format!(
                "{}: NOT CHANGED, {} on {} (site {}, journal state {}): {reason}",
                m.database, m.proxy_mode, m.proxy_side, m.site, m.journal_state
            ),
            Repair::LeftPaused { reason } => {
                format!("{base}: LEFT PAUSED, the proxy refused: {reason}")
            }
            Repair::Failed { error } => format!("{base}: FAILED: {error}"),
        }
    }

    /// Whether this line means the route is (or, dry run, would be) as the journal says.
    pub fn repaired(&self) -> bool {
        matches!(self.repair, Repair::Changed { .. })
    }
}

/// What `reconcile` found and did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReconcileReport {
    pub dry_run: bool,
    pub check: RouteReport,
    pub repairs: Vec<RepairLine>,
}

impl ReconcileReport {
    /// Everything is (or, dry run, would be) as the journal says, and every proxy answered.
    pub fn complete(&self) -> bool {
        self.check.unreachable.is_empty() && self.repairs.iter().all(RepairLine::repaired)
    }
}

/// Repairs the proxies from the journal: each repairable mismatch gets
/// `PUT /routes/{db} {"side": expected}` (nothing with `dry_run`). The site's journal facts and
/// the route are read again just before each `PUT`: a change since the check skips it.
pub fn reconcile(
    specs: &[SiteSpec],
    journal: &dyn JournalStore,
    admin: &AdminFactory<'_>,
    dry_run: bool,
) -> Result<ReconcileReport, RouteCheckError> {
    let check = check(specs, journal, admin)?;
    let mut repairs = Vec::new();
    for m in &check.mismatches {
        let repair = match &m.not_repairable {
            Some(reason) => Repair::Skipped {
                reason: reason.clone(),
            },
            None if dry_run => Repair::Changed { applied: false },
            None => match specs.iter().find(|s| s.site == m.site) {
                Some(spec) => repair_one(m, spec, journal, admin)?,
                None => Repair::Failed {
                    error: format!("site {} is not in the site spec file", m.site),
                },
            },
        };
        repairs.push(RepairLine {
            mismatch: m.clone(),
            repair,
        });
    }
    Ok(ReconcileReport {
        dry_run,
        check,
        repairs,
    })
}

pub(super) fn repair_one(
    m: &Mismatch,
    spec: &SiteSpec,
    journal: &dyn JournalStore,
    admin: &AdminFactory<'_>,
) -> Result<Repair, RouteCheckError> {
    let changed = |what: &str| Repair::Skipped {
        reason: format!("{what} changed since the check: run the check again"),
    };
    let f = SiteFacts {
        state: journal.site_state(&m.site)?.unwrap_or(SiteState::Planned),
        freeze: match crate::cutover::lease::get(journal, &m.site) {
            Ok(None) => Freeze::None,
            // A sync lease freezes nothing and sets no route.
            Ok(Some(l)) if l.kind == crate::cutover::lease::LeaseKind::Sync => Freeze::None,
            Ok(Some(_)) => Freeze::InProgress,
            Err(e) => {
                return Ok(Repair::Failed {
                    error: e.to_string(),
                })
            }
        },
        rollback: crate::cutover::rollback::in_progress(journal, &m.site).unwrap_or(true),
    };
    if !f.settled() || f.state != m.journal_state {
        return Ok(changed("the site's journal state or lease"));
    }
    let a = match admin(&spec.proxy) {
        Ok(a) => a,
        Err(e) => {
            return Ok(Repair::Failed {
                error: e.to_string(),
            })
        }
    };
    let now = match a.route(&m.database) {
        Ok(r) => r,
        Err(e) => {
            return Ok(Repair::Failed {
                error: e.to_string(),
            })
        }
    };
    if now.side != m.proxy_side || now.mode != m.proxy_mode || now.epoch != m.epoch {
        return Ok(changed("the route"));
    }
    Ok(match a.set_side(&m.database, &m.expected_side) {
        Ok(r) if r.side == m.expected_side => Repair::Changed { applied: true },
        Ok(r) => Repair::Failed {
            error: format!("the proxy answered side {} after the PUT", r.side),
        },
        Err(ProxyError::Refused {
            status: 409,
            message,
            ..
        }) => Repair::LeftPaused { reason: message },
        Err(e) => Repair::Failed {
            error: e.to_string(),
        },
    })
}

//! Does the SQL proxy route every database where the journal says its data lives? And the
//! repair when it does not (`migrator routes check|reconcile`, `migrator status --sites`, the
//! start of `migrator wave run`, every `migrator lease-watch` round).
//!
//! The journal is the source of truth (docs/ARCHITECTURE.md §8): a site `switched`, `live` or
//! `finalized` owns its data on the new side; every other state (not yet past the switch,
//! `aborted`, `rolled_back`) on the old side. A route on the other side is a split brain in
//! the making: writes land where the migration does not look.
//!
//! A `paused` route is normal only while the site's freeze is in progress (its freeze lease is
//! held by a live migrator, [`crate::cutover::lease`]); outside it, the database waits for nobody:
//! `lease-watch` or an abort decides (reported, never touched here). While a live migrator
//! holds the lease the routes are its business: a site past `verified`, or being rolled back,
//! may be on either side for a moment, and is counted as `in_freeze`.
//!
//! The proxy is asked once per admin endpoint (`GET /routes`); only databases missing from
//! that list (never seen by a proxy with a route store, which then answers its default side)
//! are asked one by one. Unknown fields of the answer are ignored; `epoch` is shown when the
//! proxy sends it. A proxy that does not answer is a failure too: nothing is confirmed.
//!
//! The repair ([`reconcile`]) is `PUT /routes/{db} {"side": expected}`, only for a route that
//! is open (not paused) on the wrong side of a site in a settled state (no freeze lease, no
//! rollback in progress, not mid-freeze). Just before each `PUT` the site's journal facts and
//! the route are read again; anything changed since the check is left for the next run.
//! A `409` (a proxy with a route store refuses `PUT` on a paused database) is reported as
//! "left paused".

use crate::cutover::checkpoints::{Checkpoint, SCOPE};
use crate::cutover::lease::{Lease, LeaseKind};
use crate::journal::{now_ms, JournalError, JournalStore, SiteState};
use crate::site_spec::{ProxySpec, SiteSpec};
use crate::systems::Mode;
use drivers::proxy::{ProxyError, Route, SqlProxy};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;

mod reconcile;
pub mod store;

pub use reconcile::{reconcile, ReconcileReport, Repair, RepairLine};

/// Exit code of `routes check`, `status --sites` and a refused `wave run`: the proxy disagrees
/// with the journal (a database on the wrong side, or paused outside a freeze).
pub const EXIT_MISMATCH: i32 = 3;
/// Exit code when nothing disagrees but a proxy could not be asked (nothing confirmed).
pub const EXIT_UNCONFIRMED: i32 = 4;

/// Builds the admin client of one proxy (token file read there): `drivers::proxy::HttpProxy`
/// for real ([`crate::real_systems::route_admin`]); an in-memory one in tests.
pub type AdminFactory<'a> = dyn Fn(&ProxySpec) -> Result<Box<dyn SqlProxy>, ProxyError> + 'a;

/// Errors that stop a check before it judged anything.
#[derive(Debug, thiserror::Error)]
pub enum RouteCheckError {
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The side whose data the journal says is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    Old,
    New,
}

/// The side that owns a site's data in `state`: past the switch (`switched`, `live`,
/// `finalized`) the new side, otherwise (not yet switched, `aborted`, `failed`, `rolled_back`)
/// the old side.
pub fn owner(state: SiteState) -> Owner {
    match state {
        SiteState::Switched | SiteState::Live | SiteState::Finalized => Owner::New,
        SiteState::Planned
        | SiteState::Prepared
        | SiteState::Synced
        | SiteState::Frozen
        | SiteState::FinalSynced
        | SiteState::Verified
        | SiteState::Aborted
        | SiteState::Failed
        | SiteState::RolledBack => Owner::Old,
    }
}

/// Whether a site's freeze is in progress, by its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Freeze {
    /// No lease: the site serves from one side.
    None,
    /// Held by a live migrator (or, on another host, not expired).
    InProgress,
    /// Left by a dead migrator or expired: `lease-watch` recovers it.
    Abandoned,
}

/// What the journal says about one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteFacts {
    pub state: SiteState,
    pub freeze: Freeze,
    /// A rollback was started and not finished.
    pub rollback: bool,
}

impl SiteFacts {
    /// No freeze, no rollback, and not stopped mid-freeze: the only sites whose routes
    /// `reconcile` may set.
    pub fn settled(&self) -> bool {
        self.freeze == Freeze::None
            && !self.rollback
            && !matches!(
                self.state,
                SiteState::Frozen
                    | SiteState::FinalSynced
                    | SiteState::Verified
                    | SiteState::Failed
            )
    }
}

/// What is wrong with a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// Served from the side the journal does not name.
    WrongSide,
    /// Held paused while no freeze of the site is in progress.
    PausedOutsideFreeze,
    /// Sites sharing the database disagree on its side (one moved, one did not).
    SitesDisagree,
}

/// The judgement of one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// The site's freeze is in progress and the route is one its migrator may have set.
    InFreeze,
    Problem(Problem),
}

/// Judges a route (`side`: which of the two sides it names, `None` for neither) against the
/// journal's facts.
pub fn judge(f: &SiteFacts, side: Option<Owner>, paused: bool) -> Verdict {
    let want = owner(f.state);
    if f.freeze == Freeze::InProgress {
        // Past `verified` the switch may have happened before the journal says so; a site past
        // the switch under a lease is being unfrozen or rolled back.
        let either = f.rollback || f.state == SiteState::Verified || want == Owner::New;
        return match side {
            Some(s) if s == want || either => Verdict::InFreeze,
            _ => Verdict::Problem(Problem::WrongSide),
        };
    }
    if paused {
        return Verdict::Problem(Problem::PausedOutsideFreeze);
    }
    if side == Some(want) {
        Verdict::Ok
    } else {
        Verdict::Problem(Problem::WrongSide)
    }
}

/// One route the proxy and the journal disagree on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mismatch {
    pub site: String,
    pub database: String,
    /// JSON: the state's journal name.
    pub journal_state: SiteState,
    pub expected_side: String,
    pub proxy_side: String,
    pub proxy_mode: Mode,
    pub epoch: Option<u64>,
    pub sessions: Option<u64>,
    pub problem: Problem,
    /// The proxy's admin API.
    pub proxy: SocketAddr,
    /// Why `routes reconcile` leaves it alone; `None`: it sets `expected_side`.
    pub not_repairable: Option<String>,
}

impl Mismatch {
    /// One line for an operator.
    pub fn line(&self) -> String {
        let epoch = self
            .epoch
            .map(|e| format!(", epoch {e}"))
            .unwrap_or_default();
        let sessions = self
            .sessions
            .map(|n| format!(", {n} sessions"))
            .unwrap_or_default();
        let what = match self.problem {
            Problem::WrongSide => format!(
                "ROUTE MISMATCH {}: journal says {}, proxy {} serves {} (mode {}{epoch}{sessions})",
                self.database,
                self.expected_side,
                self.proxy,
                self.proxy_side,
                self.proxy_mode
            ),
            Problem::PausedOutsideFreeze => format!(
                "ROUTE PAUSED OUTSIDE A FREEZE {}: proxy {} holds it paused on {}{epoch}{sessions}, \
                 journal says {}: lease-watch or abort decides",
                self.database, self.proxy, self.proxy_side, self.expected_side
            ),
            Problem::SitesDisagree => format!(
                "ROUTE DISPUTED {}: sites sharing it disagree on its side; this site says {}, \
                 proxy {} serves {} (mode {}{epoch})",
                self.database, self.expected_side, self.proxy, self.proxy_side, self.proxy_mode
            ),
        };
        format!(
            "{what} (site {}, journal state {})",
            self.site, self.journal_state
        )
    }
}

/// A proxy that could not be asked: its databases are not confirmed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unreachable {
    pub proxy: SocketAddr,
    pub error: String,
    pub sites: usize,
    pub databases: usize,
}

impl Unreachable {
    pub fn line(&self) -> String {
        format!(
            "PROXY NOT CONFIRMED {}: {} ({} databases of {} sites not checked)",
            self.proxy, self.error, self.databases, self.sites
        )
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct RouteReport {
    pub checked_ms: i64,
    pub sites: usize,
    /// Databases checked (site, database pairs).
    pub databases: usize,
    pub ok: usize,
    /// Routes of sites whose freeze is in progress (their migrator's business).
    pub in_freeze: usize,
    pub mismatches: Vec<Mismatch>,
    pub unreachable: Vec<Unreachable>,
}

impl RouteReport {
    pub fn clean(&self) -> bool {
        self.mismatches.is_empty() && self.unreachable.is_empty()
    }

    /// 0, [`EXIT_MISMATCH`] or [`EXIT_UNCONFIRMED`].
    pub fn exit_code(&self) -> i32 {
        if !self.mismatches.is_empty() {
            EXIT_MISMATCH
        } else if !self.unreachable.is_empty() {
            EXIT_UNCONFIRMED
        } else {
            0
        }
    }

    /// A one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "routes: {} databases of {} sites checked: {} as the journal says, {} in a freeze, \
             {} mismatches, {} proxies not confirmed",
            self.databases,
            self.sites,
            self.ok,
            self.in_freeze,
            self.mismatches.len(),
            self.unreachable.len()
        )
    }
}

/// Every site's journal facts: state, lease, rollback (one scan of the cutover checkpoints).
pub fn facts(journal: &dyn JournalStore) -> Result<HashMap<String, SiteFacts>, JournalError> {
    let mut out: HashMap<String, SiteFacts> = journal
        .sites()?
        .into_iter()
        .map(|(s, state)| {
            let f = SiteFacts {
                state,
                freeze: Freeze::None,
                rollback: false,
            };
            (s, f)
        })
        .collect();
    let now = now_ms();
    let blank = SiteFacts {
        state: SiteState::Planned,
        freeze: Freeze::None,
        rollback: false,
    };
    for (k, v) in journal.checkpoints(SCOPE)? {
        match Checkpoint::parse_key(&k) {
            Some((site, Checkpoint::Lease)) => {
                // A sync lease freezes nothing and sets no route: not a freeze.
                let lease = serde_json::from_str::<Option<Lease>>(&v).ok().flatten();
                if let Some(l) = lease.filter(|l| l.kind != LeaseKind::Sync) {
                    out.entry(site.to_string()).or_insert(blank).freeze = if l.expired(now) {
                        Freeze::Abandoned
                    } else {
                        Freeze::InProgress
                    };
                }
            }
            Some((site, Checkpoint::Rollback)) if v != "null" => {
                out.entry(site.to_string()).or_insert(blank).rollback = true;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn facts_of(all: &HashMap<String, SiteFacts>, site: &str) -> SiteFacts {
    all.get(site).copied().unwrap_or(SiteFacts {
        state: SiteState::Planned,
        freeze: Freeze::None,
        rollback: false,
    })
}

fn side_of(p: &ProxySpec, side: &str) -> Option<Owner> {
    if side == p.new_side {
        Some(Owner::New)
    } else if side == p.old_side {
        Some(Owner::Old)
    } else {
        None
    }
}

fn side_name(p: &ProxySpec, o: Owner) -> &str {
    match o {
        Owner::Old => &p.old_side,
        Owner::New => &p.new_side,
    }
}

/// Why `reconcile` must not set this route, or `None` when it may.
fn not_repairable(f: &SiteFacts, problem: Problem, route: &Route) -> Option<String> {
    let state = f.state.as_str();
    Some(match () {
        _ if problem == Problem::SitesDisagree => "sites sharing the database disagree: \
            fix the journal or the site spec first (see runbooks/cutover.md)"
            .to_string(),
        _ if route.paused() || problem == Problem::PausedOutsideFreeze => {
            "paused: a pause is ended by resume or abort, never by reconcile: \
             `migrator lease-watch --once` recovers an abandoned freeze"
                .to_string()
        }
        _ if f.freeze == Freeze::InProgress => {
            "its freeze is in progress: the migrator holding the lease decides".to_string()
        }
        _ if f.freeze == Freeze::Abandoned => {
            "a freeze left by a dead migrator: run `migrator lease-watch --once` first".to_string()
        }
        _ if f.rollback => {
            "a rollback is unfinished: `migrator rollback SITE` finishes it".to_string()
        }
        _ if !f.settled() => format!(
            "state {state} is mid-freeze: `migrator wave run` (or `site migrate`) resumes it"
        ),
        _ => return None,
    })
}

/// Checks every database of `specs` against the journal (`journal`), asking each proxy once.
pub fn check(
    specs: &[SiteSpec],
    journal: &dyn JournalStore,
    admin: &AdminFactory<'_>,
) -> Result<RouteReport, RouteCheckError> {
    let all = facts(journal)?;
    let mut r = RouteReport {
        checked_ms: now_ms(),
        ..Default::default()
    };
    // Proxies by admin address; sites without databases ask nothing.
    let mut proxies: BTreeMap<SocketAddr, Vec<&SiteSpec>> = BTreeMap::new();
    for s in specs.iter().filter(|s| !s.databases.is_empty()) {
        proxies.entry(s.proxy.admin).or_default().push(s);
    }
    r.sites = proxies.values().map(Vec::len).sum();
    for (addr, sites) in proxies {
        let ndb: usize = sites.iter().map(|s| s.databases.len()).sum();
        r.databases += ndb;
        let routes = admin(&sites[0].proxy).and_then(|a| {
            let mut map: HashMap<String, Route> = a
                .routes()?
                .into_iter()
                .map(|x| (x.database.clone(), x))
                .collect();
            let wanted: HashSet<&String> = sites.iter().flat_map(|s| &s.databases).collect();
            for db in wanted {
                if !map.contains_key(db.as_str()) {
                    map.insert(db.clone(), a.route(db)?);
                }
            }
            Ok(map)
        });
        let routes = match routes {
            Ok(m) => m,
            Err(e) => {
                r.unreachable.push(Unreachable {
                    proxy: addr,
                    error: e.to_string(),
                    sites: sites.len(),
                    databases: ndb,
                });
                continue;
            }
        };
        // Owners claimed per database by the sites sharing it.
        let mut claims: HashMap<&str, HashSet<Owner>> = HashMap::new();
        for s in &sites {
            let o = owner(facts_of(&all, &s.site).state);
            for db in &s.databases {
                claims.entry(db).or_default().insert(o);
            }
        }
        for s in &sites {
            let f = facts_of(&all, &s.site);
            let expected = side_name(&s.proxy, owner(f.state)).to_string();
            for db in &s.databases {
                let Some(route) = routes.get(db.as_str()) else {
                    continue; // asked above: every database is in the map
                };
                let mut verdict = judge(&f, side_of(&s.proxy, &route.side), route.paused());
                let disputed = claims.get(db.as_str()).is_some_and(|c| c.len() > 1);
                if disputed && f.freeze != Freeze::InProgress {
                    verdict = Verdict::Problem(Problem::SitesDisagree);
                }
                match verdict {
                    Verdict::Ok => r.ok += 1,
                    Verdict::InFreeze => r.in_freeze += 1,
                    Verdict::Problem(problem) => r.mismatches.push(Mismatch {
                        site: s.site.clone(),
                        database: db.clone(),
                        journal_state: f.state,
                        expected_side: expected.clone(),
                        proxy_side: route.side.clone(),
                        proxy_mode: route.mode,
                        epoch: route.epoch,
                        sessions: route.sessions,
                        problem,
                        proxy: addr,
                        not_repairable: not_repairable(&f, problem, route),
                    }),
                }
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests;

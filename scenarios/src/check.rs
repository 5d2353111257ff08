//! Checks a traffic log against the lab: counts failed requests, and proves that every
//! acknowledged write (its token) is in the database of the side now serving the site, and
//! that every acknowledged HTTP upload is in that side's filer under the site's home.

use crate::dc_services::mariadb_exec;
use crate::error::{LabError, Result};
use crate::state::{LabState, Side};
use crate::traffic::{LogRecord, Op};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// What a scenario expects (`expect.toml`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub max_failed_requests: u64,
    #[serde(default)]
    pub max_lost_writes: u64,
    /// Guards against a run that proves nothing.
    #[serde(default)]
    pub min_requests: u64,
    #[serde(default)]
    pub min_acked_writes: u64,
    /// For fault scenarios: the fault must be visible.
    #[serde(default)]
    pub min_failed_requests: u64,
    /// Migration scenarios: the per-site write-unavailability p99 budget (ms).
    #[serde(default)]
    pub max_freeze_p99_ms: Option<f64>,
}

/// Time windows (Unix ms, inclusive) in which failures are expected and counted apart: each
/// site's freeze windows (from the migrator's journal) and the windows of an injected fault.
#[derive(Debug, Default, Clone)]
pub struct Windows {
    pub freeze: HashMap<String, Vec<(u64, u64)>>,
    pub fault: Vec<(u64, u64)>,
    /// Database → (the side that owns it, since when, Unix ms): from the end of its last
    /// `switch` (or `rollback-switch`) in the journal. A write acknowledged for it that started
    /// later must not be in the other side's copy: one writer (split brain otherwise).
    pub owner_since: HashMap<String, (Side, u64)>,
}

/// Slack around a window (ms): the journal stamps a phase just before/after the action.
const SLACK_MS: u64 = 250;

fn overlaps(a: (u64, u64), w: &[(u64, u64)]) -> bool {
    w.iter()
        .any(|&(s, e)| a.0 <= e.saturating_add(SLACK_MS) && a.1 + SLACK_MS >= s)
}

/// The side on which a write to `db` started at `at_ms` must NOT be: the side that had given
/// the database up by then (its switch ended before the write started). `None` when the
/// database never switched, or the write started before (or as) its switch ended.
pub fn non_owner(owner_since: &HashMap<String, (Side, u64)>, db: &str, at_ms: u64) -> Option<Side> {
    let &(owner, since) = owner_since.get(db)?;
    (at_ms > since).then_some(match owner {
        Side::Old => Side::New,
        Side::New => Side::Old,
    })
}

/// Result of checking one traffic log.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    pub requests: u64,
    /// Failed requests outside every freeze and fault window.
    pub failed: u64,
    /// Failed requests of a site while it (or a site sharing its database) was frozen.
    pub failed_in_freeze: u64,
    /// Failed requests while an injected fault lasted.
    pub failed_in_fault: u64,
    pub failed_by_op: BTreeMap<String, u64>,
    pub acked_writes: u64,
    /// Tokens of acknowledged writes missing from the database.
    pub lost_writes: Vec<String>,
    /// Acknowledged uploads missing from the filer.
    pub missing_uploads: Vec<String>,
    /// Acknowledged writes (`db:token`) started after their database's switch yet found in
    /// the copy of the side that no longer owned it: two writers (split brain).
    pub non_owner_writes: Vec<String>,
    /// Acknowledged writes looked for (and not wanted) on the non-owning side: those started
    /// after their database's switch. Zero means the one-writer check proved nothing.
    pub non_owner_checked: u64,
    /// The first few failures, for the operator.
    pub sample_errors: Vec<String>,
}

impl CheckReport {
    pub fn lost(&self) -> u64 {
        (self.lost_writes.len() + self.missing_uploads.len()) as u64
    }

    /// Violations of `expect`, each as a sentence (empty = pass).
    pub fn violations(&self, expect: &Expect) -> Vec<String> {
        let mut v = Vec::new();
        if self.failed > expect.max_failed_requests {
            v.push(format!(
                "{} failed requests > {} allowed",
                self.failed, expect.max_failed_requests
            ));
        }
        if self.lost() > expect.max_lost_writes {
            v.push(format!(
                "{} lost writes > {} allowed (first: {:?} {:?})",
                self.lost(),
                expect.max_lost_writes,
                self.lost_writes.iter().take(3).collect::<Vec<_>>(),
                self.missing_uploads.iter().take(3).collect::<Vec<_>>()
            ));
        }
        if !self.non_owner_writes.is_empty() {
            v.push(format!(
                "{} acknowledged writes on the side that did not own their database (split \
                 brain; first: {:?})",
                self.non_owner_writes.len(),
                self.non_owner_writes.iter().take(3).collect::<Vec<_>>()
            ));
        }
        if self.requests < expect.min_requests {
            v.push(format!(
                "only {} requests < {}",
                self.requests, expect.min_requests
            ));
        }
        if self.failed < expect.min_failed_requests {
            v.push(format!(
                "only {} failed requests < {} expected from the injected fault",
                self.failed, expect.min_failed_requests
            ));
        }
        if self.acked_writes < expect.min_acked_writes {
            v.push(format!(
                "only {} acknowledged writes < {}",
                self.acked_writes, expect.min_acked_writes
            ));
        }
        v
    }
}

/// Reads a JSONL traffic log.
pub fn read_log(path: &Path) -> Result<Vec<LogRecord>> {
    let text = std::fs::read_to_string(path).map_err(LabError::io("reading traffic log", path))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| LabError::Config {
                path: path.to_path_buf(),
                message: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// Checks `log` against the lab.
pub fn check(state: &LabState, log: &[LogRecord]) -> Result<CheckReport> {
    check_windows(state, log, &Windows::default())
}

/// Checks `log` against the lab, counting failures inside `windows` apart.
pub fn check_windows(
    state: &LabState,
    log: &[LogRecord],
    windows: &Windows,
) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    let sites: HashMap<&str, _> = state.sites.iter().map(|s| (s.login.as_str(), s)).collect();
    // A site's freeze windows include those of every site sharing its database.
    let mut by_db: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    for s in &state.sites {
        if let Some(w) = windows.freeze.get(&s.login) {
            by_db.entry(s.database.as_str()).or_default().extend(w);
        }
    }
    // Acked tokens grouped by (serving side, database).
    let mut wanted: BTreeMap<(Side, String), Vec<&str>> = BTreeMap::new();
    let mut uploads: Vec<(PathBuf, String)> = Vec::new();
    // Acked tokens written after their database's switch, grouped by (NON-owning side, db).
    let mut forbidden: BTreeMap<(Side, String), Vec<&str>> = BTreeMap::new();
    for rec in log {
        r.requests += 1;
        if !rec.ok {
            let span = (rec.at_ms, rec.at_ms + rec.ms.ceil() as u64);
            let frozen = sites
                .get(rec.site.as_str())
                .and_then(|s| by_db.get(s.database.as_str()))
                .is_some_and(|w| rec.at_ms > 0 && overlaps(span, w));
            if frozen {
                r.failed_in_freeze += 1;
                continue;
            }
            if rec.at_ms > 0 && overlaps(span, &windows.fault) {
                r.failed_in_fault += 1;
                continue;
            }
            r.failed += 1;
            *r.failed_by_op.entry(format!("{:?}", rec.op)).or_default() += 1;
            if r.sample_errors.len() < 5 {
                r.sample_errors.push(format!(
                    "{} {:?} {}: {}",
                    rec.seq,
                    rec.op,
                    rec.site,
                    rec.error.as_deref().unwrap_or("")
                ));
            }
            continue;
        }
        if !rec.op.is_write() {
            continue;
        }
        r.acked_writes += 1;
        let (Some(site), Some(token)) = (sites.get(rec.site.as_str()), rec.token.as_deref()) else {
            r.lost_writes.push(format!(
                "{}:{:?} (unknown site or no token)",
                rec.site, rec.token
            ));
            continue;
        };
        wanted
            .entry((
                site.db_serving.unwrap_or(site.serving),
                site.database.clone(),
            ))
            .or_default()
            .push(token);
        if let Some(other) = non_owner(&windows.owner_since, &site.database, rec.at_ms) {
            r.non_owner_checked += 1;
            forbidden
                .entry((other, site.database.clone()))
                .or_default()
                .push(token);
        }
        if rec.op == Op::HttpWrite {
            let dc = state.dc(site.serving);
            let file = dc
                .filer
                .backing_dir
                .join(&site.login)
                .join("www/uploads")
                .join(format!("{token}.txt"));
            uploads.push((file, format!("{}:{token}", site.login)));
        }
    }
    for side in [Side::Old, Side::New] {
        let present = tokens_on(state, side, &wanted)?;
        for ((_, db), tokens) in wanted.iter().filter(|((s, _), _)| *s == side) {
            for t in tokens {
                if !present.contains(*t) {
                    r.lost_writes.push(format!("{db}:{t}"));
                }
            }
        }
        let present = tokens_on(state, side, &forbidden)?;
        for ((_, db), tokens) in forbidden.iter().filter(|((s, _), _)| *s == side) {
            r.non_owner_writes.extend(
                tokens
                    .iter()
                    .filter(|t| present.contains(**t))
                    .map(|t| format!("{db}:{t} (on {})", side.label())),
            );
        }
    }
    for (file, what) in uploads {
        if !file.is_file() {
            r.missing_uploads.push(what);
        }
    }
    Ok(r)
}

/// The write tokens present on `side` in the databases `of` lists for that side (one query
/// per database, read directly from the side's MariaDB).
fn tokens_on(
    state: &LabState,
    side: Side,
    of: &BTreeMap<(Side, String), Vec<&str>>,
) -> Result<BTreeSet<String>> {
    let sql: String = of
        .keys()
        .filter(|(s, _)| *s == side)
        .map(|(_, d)| format!("SELECT token FROM `{d}`.events;\n"))
        .collect();
    if sql.is_empty() {
        return Ok(BTreeSet::new());
    }
    let out = mariadb_exec(state.dc(side), &sql)?;
    Ok(out.lines().map(|l| l.trim().to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_after_the_switch_are_forbidden_on_the_old_owner() {
        let owners = HashMap::from([
            ("db_a".to_string(), (Side::New, 1_000)),
            ("db_b".to_string(), (Side::Old, 2_000)),
        ]);
        assert_eq!(non_owner(&owners, "db_a", 999), None, "before the switch");
        assert_eq!(non_owner(&owners, "db_a", 1_000), None, "as it ended");
        assert_eq!(non_owner(&owners, "db_a", 1_001), Some(Side::Old));
        assert_eq!(
            non_owner(&owners, "db_b", 2_500),
            Some(Side::New),
            "rolled back"
        );
        assert_eq!(non_owner(&owners, "db_c", 9_999), None, "never switched");
    }
}

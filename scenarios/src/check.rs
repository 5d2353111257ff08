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
}

/// Result of checking one traffic log.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    pub requests: u64,
    pub failed: u64,
    pub failed_by_op: BTreeMap<String, u64>,
    pub acked_writes: u64,
    /// Tokens of acknowledged writes missing from the database.
    pub lost_writes: Vec<String>,
    /// Acknowledged uploads missing from the filer.
    pub missing_uploads: Vec<String>,
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
    let mut r = CheckReport::default();
    let sites: HashMap<&str, _> = state.sites.iter().map(|s| (s.login.as_str(), s)).collect();
    // Acked tokens grouped by (serving side, database).
    let mut wanted: BTreeMap<(Side, String), Vec<&str>> = BTreeMap::new();
    let mut uploads: Vec<(PathBuf, String)> = Vec::new();
    for rec in log {
        r.requests += 1;
        if !rec.ok {
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
            .entry((site.serving, site.database.clone()))
            .or_default()
            .push(token);
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
        let dbs: Vec<&String> = wanted
            .keys()
            .filter(|(s, _)| *s == side)
            .map(|(_, d)| d)
            .collect();
        if dbs.is_empty() {
            continue;
        }
        let sql: String = dbs
            .iter()
            .map(|d| format!("SELECT token FROM `{d}`.events;\n"))
            .collect();
        let out = mariadb_exec(state.dc(side), &sql)?;
        let present: BTreeSet<&str> = out.lines().map(str::trim).collect();
        for ((s, db), tokens) in &wanted {
            if *s != side {
                continue;
            }
            for t in tokens {
                if !present.contains(t) {
                    r.lost_writes.push(format!("{db}:{t}"));
                }
            }
        }
    }
    for (file, what) in uploads {
        if !file.is_file() {
            r.missing_uploads.push(what);
        }
    }
    Ok(r)
}

//! A site's verdict and predicted freeze, and the fleet's summary by reason.
//!
//! Verdict: the worst finding (`blocked` > `warn`), `ok` without one. The freeze is predicted
//! per database from the scan's sizes and the inventory's write rate:
//! `freeze_base_ms` + for each database either (followed by change capture) the tail of
//! `capture_tail_s` seconds of writes applied at `apply_bytes_per_s`, plus the tables copied
//! again (no key, no snapshot) at `copy_bytes_per_s`; or (no change capture on its server) the
//! whole database copied again at `copy_bytes_per_s`. Above `freeze_budget_ms` the site gets
//! a `freeze.over_budget` warn.

use super::db::{DbScan, ServerScan};
use super::walk::{HomeScan, WalkCounts};
use super::{Finding, PreflightConfig, Severity, Where};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Warn,
    Blocked,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Blocked => "blocked",
        }
    }
}

/// One database as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbLine {
    pub database: String,
    pub server: String,
    pub bytes: u64,
    pub recopy_bytes: u64,
    pub write_rate: f64,
    /// Measured on the source's binary log (`write_rate.rs`), not the inventory's figure.
    #[serde(default)]
    pub write_rate_measured: bool,
    pub capture: bool,
    pub freeze_ms: u64,
}

/// One site's pre-flight result: one line of `preflight.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteReport {
    pub site: String,
    pub verdict: Verdict,
    /// The distinct rule ids of its findings, sorted.
    pub reasons: Vec<String>,
    pub predicted_freeze_ms: u64,
    pub findings: Vec<Finding>,
    pub files: WalkCounts,
    pub databases: Vec<DbLine>,
    /// The home's stamp when it was scanned (`walk.rs`): a rerun skips an unchanged home.
    pub home_stamp: u64,
}

/// Builds a site's report from its home's scan (`None`: not scanned, `home_error` says why),
/// its databases' scans and their servers'.
pub fn site_report(
    site: &str,
    home: Option<&HomeScan>,
    home_error: Option<String>,
    dbs: &[DbScan],
    servers: &[ServerScan],
    config: &PreflightConfig,
) -> SiteReport {
    let mut findings: Vec<Finding> = Vec::new();
    if let Some(h) = home {
        findings.extend(h.findings.iter().cloned());
        if h.counts.unreadable > 0 {
            findings.push(Finding {
                rule: "scan.unreadable".into(),
                severity: Severity::Warn,
                at: Where::File {
                    path: h.errors.first().cloned().unwrap_or_default(),
                    line: 0,
                },
                found: format!("{} entries could not be read", h.counts.unreadable),
                fix: "the scan of this home is incomplete: check the permissions and scan again"
                    .into(),
            });
        }
    }
    if let Some(e) = home_error {
        findings.push(Finding {
            rule: "scan.home".into(),
            severity: Severity::Warn,
            at: Where::File {
                path: ".".into(),
                line: 0,
            },
            found: e,
            fix: "the home was not scanned: check that it is mounted and readable".into(),
        });
    }
    let mut freeze_ms = config.freeze_base_ms;
    let mut lines = Vec::new();
    let mut seen_servers: Vec<&str> = Vec::new();
    for d in dbs {
        findings.extend(d.findings.iter().cloned());
        let server = servers.iter().find(|s| s.server == d.server);
        if let Some(s) = server {
            if !seen_servers.contains(&s.server.as_str()) {
                seen_servers.push(&s.server);
                findings.extend(s.findings.iter().cloned());
            }
        }
        let capture = server.is_some_and(|s| s.capture);
        let ms = |bytes: f64, rate: f64| (bytes / rate.max(1.0) * 1000.0).ceil() as u64;
        let db_ms = if capture {
            ms(
                d.write_rate * config.capture_tail_s,
                config.apply_bytes_per_s,
            ) + ms(d.recopy_bytes as f64, config.copy_bytes_per_s)
        } else {
            ms(d.bytes as f64, config.copy_bytes_per_s)
        };
        freeze_ms += db_ms;
        lines.push(DbLine {
            database: d.database.clone(),
            server: d.server.clone(),
            bytes: d.bytes,
            recopy_bytes: d.recopy_bytes,
            write_rate: d.write_rate,
            write_rate_measured: d.write_rate_measured,
            capture,
            freeze_ms: db_ms,
        });
    }
    if freeze_ms > config.freeze_budget_ms {
        findings.push(Finding {
            rule: "freeze.over_budget".into(),
            severity: Severity::Warn,
            at: Where::Db {
                object: lines
                    .iter()
                    .max_by_key(|l| l.freeze_ms)
                    .map(|l| l.database.clone())
                    .unwrap_or_default(),
            },
            found: format!(
                "predicted freeze {freeze_ms} ms > budget {} ms",
                config.freeze_budget_ms
            ),
            fix:
                "the site moves with a longer write-unavailability: fix the tables copied \
                  again (keys, InnoDB) or the server's binary log, or schedule it in a quiet window"
                    .into(),
        });
    }
    let verdict = match findings.iter().map(|f| f.severity).max() {
        None => Verdict::Ok,
        Some(Severity::Warn) => Verdict::Warn,
        Some(Severity::Blocked) => Verdict::Blocked,
    };
    let mut reasons: Vec<String> = findings.iter().map(|f| f.rule.clone()).collect();
    reasons.sort();
    reasons.dedup();
    SiteReport {
        site: site.to_string(),
        verdict,
        reasons,
        predicted_freeze_ms: freeze_ms,
        findings,
        files: home.map(|h| h.counts.clone()).unwrap_or_default(),
        databases: lines,
        home_stamp: home.map_or(0, |h| h.stamp),
    }
}

/// One reason across the fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReasonCount {
    /// The worst severity seen for it.
    pub severity: Option<Severity>,
    pub sites: u64,
    pub findings: u64,
}

/// The fleet's summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetSummary {
    pub sites: u64,
    pub ok: u64,
    pub warn: u64,
    pub blocked: u64,
    pub files: u64,
    pub bytes: u64,
    pub by_reason: BTreeMap<String, ReasonCount>,
}

impl FleetSummary {
    pub fn add(&mut self, r: &SiteReport) {
        self.sites += 1;
        match r.verdict {
            Verdict::Ok => self.ok += 1,
            Verdict::Warn => self.warn += 1,
            Verdict::Blocked => self.blocked += 1,
        }
        self.files += r.files.files;
        self.bytes += r.files.bytes;
        for reason in &r.reasons {
            let c = self.by_reason.entry(reason.clone()).or_default();
            c.sites += 1;
            for f in r.findings.iter().filter(|f| &f.rule == reason) {
                c.findings += 1;
                c.severity = c.severity.max(Some(f.severity));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(name: &str, bytes: u64, recopy: u64, rate: f64) -> DbScan {
        DbScan {
            database: name.into(),
            server: "sql1".into(),
            tables: 1,
            bytes,
            recopy_bytes: recopy,
            write_rate: rate,
            write_rate_measured: true,
            findings: Vec::new(),
        }
    }

    fn server(capture: bool) -> ServerScan {
        ServerScan {
            server: "sql1".into(),
            capture,
            ..ServerScan::default()
        }
    }

    #[test]
    fn freeze_is_predicted_from_sizes_and_write_rates() {
        let c = PreflightConfig::default();
        // Followed: 2 s of 1 MB/s applied at 20 MB/s = 100 ms, plus 5 MB copied at 50 MB/s.
        let r = site_report(
            "s",
            None,
            None,
            &[db("a", 1 << 30, 5_000_000, 1e6)],
            &[server(true)],
            &c,
        );
        assert_eq!(r.predicted_freeze_ms, 500 + 100 + 100);
        assert_eq!(r.verdict, Verdict::Ok);
        // Not followed: the whole 1 GB copied again (21,475 ms): over budget, warn.
        let r = site_report(
            "s",
            None,
            None,
            &[db("a", 1 << 30, 0, 1e6)],
            &[server(false)],
            &c,
        );
        assert_eq!(r.predicted_freeze_ms, 500 + 21475);
        assert_eq!(r.verdict, Verdict::Warn);
        assert_eq!(r.reasons, vec!["freeze.over_budget".to_string()]);
        let mut f = FleetSummary::default();
        f.add(&r);
        assert_eq!(
            (f.sites, f.warn, f.by_reason["freeze.over_budget"].sites),
            (1, 1, 1)
        );
    }
}

//! One pre-flight run over many sites: homes scanned in parallel (rayon; each home's walk is
//! parallel too), unchanged homes taken from the journal, then each source server and each
//! database read once, then one [`SiteReport`] per site, saved to the journal as soon as it
//! is complete (a killed run resumes from there).

use super::code::{Scanner, Served};
use super::db::{connect, scan_database, scan_server, DbScan, DbTarget, ServerScan};
use super::verdict::site_report;
use super::walk::{scan_home, stamp_home, HomeScan, WalkLimits};
use super::write_rate::{binlog_bytes, binlog_pos};
use super::{store, PreflightConfig, Result, SiteReport, Where};
use crate::journal::SqlConn;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// One site to check.
#[derive(Debug, Clone)]
pub struct SiteInput {
    pub site: String,
    /// Where its home is read on this host (may differ from the path its code uses).
    pub home: PathBuf,
    /// Absolute paths that keep working for it, its own home (as its code sees it) first.
    pub compat: Vec<String>,
    pub databases: Vec<DbTarget>,
}

/// The inventory's view of a fleet: sites, and what stays served after the move.
pub fn from_inventory(
    inv: &planner::Inventory,
    only: Option<&[String]>,
    home_map: &[(String, String)],
    config: &PreflightConfig,
) -> (Vec<SiteInput>, Served) {
    let mut served = Served::default();
    for (i, s) in inv.sql_servers.iter().enumerate() {
        if inv.sql_is_destination(i) {
            continue;
        }
        served
            .hosts
            .extend(s.hostnames.iter().map(|h| h.to_ascii_lowercase()));
        served.ips.extend(
            s.ips
                .iter()
                .filter_map(|ip| ip.parse::<std::net::IpAddr>().ok()),
        );
    }
    for (i, c) in inv.clusters.iter().enumerate() {
        if !inv.cluster_is_destination(i) {
            if let Ok(ip) = c.vip.parse() {
                served.ips.insert(ip);
            }
        }
    }
    let mut sites = Vec::new();
    for i in 0..inv.site_count() {
        if only.is_some_and(|o| !o.iter().any(|s| s == inv.site_id(i))) {
            continue;
        }
        let site = inv.site(i);
        let mut home = site.home.clone();
        for (from, to) in home_map {
            if let Some(rest) = site.home.strip_prefix(from.as_str()) {
                home = format!("{to}{rest}");
                break;
            }
        }
        let mut compat = vec![site.home.clone()];
        compat.extend(config.compat_paths.iter().cloned());
        let databases = inv
            .site_dbs(i)
            .iter()
            .map(|&d| {
                let d = d as usize;
                DbTarget {
                    server: inv.sql_servers[inv.databases.sql_server[d] as usize]
                        .id
                        .clone(),
                    database: inv.db_name(d).to_string(),
                    user: inv.db_user(d).to_string(),
                    write_rate: inv.databases.write_rate[d],
                }
            })
            .collect();
        sites.push(SiteInput {
            site: site.id,
            home: PathBuf::from(home),
            compat,
            databases,
        });
    }
    (sites, served)
}

/// Where the databases are read: an admin connection per source server, and the destination
/// (for definers).
#[derive(Debug, Clone, Default)]
pub struct DbAccess {
    pub sources: BTreeMap<String, mysql_async::Opts>,
    pub destination: Option<mysql_async::Opts>,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub scanned: u64,
    /// Homes whose stamp was unchanged: their code findings came from the journal.
    pub reused: u64,
}

/// Runs pre-flight over `sites`; the reports, sorted by site.
pub fn run(
    sites: &[SiteInput],
    scanner: &Scanner,
    config: &PreflightConfig,
    access: &DbAccess,
    journal: Option<Box<dyn SqlConn>>,
) -> Result<(Vec<SiteReport>, RunStats)> {
    let limits = WalkLimits::from_config(config);
    let journal = journal.map(Mutex::new);
    let stats = Mutex::new(RunStats::default());
    // 1. Homes.
    let homes: Vec<(Option<HomeScan>, Option<String>)> = sites
        .par_iter()
        .map(|s| -> Result<_> {
            let stored = match &journal {
                Some(j) => store::load(&**j.lock().unwrap_or_else(|p| p.into_inner()), &s.site)?,
                None => None,
            };
            if let Some(prev) = stored {
                if let Ok(stamp) = stamp_home(&limits, &s.home) {
                    if stamp == prev.home_stamp && prev.files.files + prev.files.skipped_media > 0 {
                        stats.lock().unwrap_or_else(|p| p.into_inner()).reused += 1;
                        let findings = prev
                            .findings
                            .into_iter()
                            .filter(|f| {
                                matches!(f.at, Where::File { .. }) && !f.rule.starts_with("scan.")
                            })
                            .collect();
                        return Ok((
                            Some(HomeScan {
                                counts: prev.files,
                                stamp,
                                findings,
                                errors: Vec::new(),
                            }),
                            None,
                        ));
                    }
                }
            }
            let r = match scan_home(scanner, &limits, &s.home, &s.compat) {
                Ok(h) => (Some(h), None),
                Err(e) => (None, Some(e.to_string())),
            };
            stats.lock().unwrap_or_else(|p| p.into_inner()).scanned += 1;
            // Saved now (code findings only): a killed run does not read this home again.
            if let (Some(j), Some(h)) = (&journal, &r.0) {
                let partial = site_report(&s.site, Some(h), None, &[], &[], config);
                store::save(&**j.lock().unwrap_or_else(|p| p.into_inner()), &partial)?;
            }
            Ok(r)
        })
        .collect::<Result<_>>()?;
    // 2. Servers and databases.
    let (servers, dbs) = scan_databases(sites, access, config)?;
    // 3. Reports.
    let mut reports = Vec::with_capacity(sites.len());
    for (s, (home, err)) in sites.iter().zip(homes) {
        let mine: Vec<DbScan> = s
            .databases
            .iter()
            .filter_map(|d| dbs.get(&d.database).cloned())
            .collect();
        let r = site_report(&s.site, home.as_ref(), err, &mine, &servers, config);
        if let Some(j) = &journal {
            store::save(&**j.lock().unwrap_or_else(|p| p.into_inner()), &r)?;
        }
        reports.push(r);
    }
    reports.sort_by(|a, b| a.site.cmp(&b.site));
    Ok((
        reports,
        stats.into_inner().unwrap_or_else(|p| p.into_inner()),
    ))
}

/// Every source server with a connection in `access`, and every database of `sites` on one.
fn scan_databases(
    sites: &[SiteInput],
    access: &DbAccess,
    config: &PreflightConfig,
) -> Result<(Vec<ServerScan>, BTreeMap<String, DbScan>)> {
    if access.sources.is_empty() {
        return Ok((Vec::new(), BTreeMap::new()));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| super::PreflightError::Io {
            path: PathBuf::from("tokio runtime"),
            source,
        })?;
    rt.block_on(async {
        let mut dest = match &access.destination {
            Some(o) => Some(connect("destination", o).await?),
            None => None,
        };
        let mut servers = Vec::new();
        let mut dbs = BTreeMap::new();
        for (id, opts) in &access.sources {
            let mut c = connect(id, opts).await?;
            let server = scan_server(id, &mut c).await?;
            // The write-rate window opens now: the databases' scan is part of it.
            let window = std::time::Duration::from_secs_f64(config.write_sample_s.max(0.0));
            let start = match server.log_bin && !window.is_zero() {
                true => binlog_pos(id, &mut c)
                    .await?
                    .map(|p| (p, std::time::Instant::now())),
                false => None,
            };
            servers.push(server);
            let mut mine = Vec::new();
            for t in sites
                .iter()
                .flat_map(|s| &s.databases)
                .filter(|t| &t.server == id)
            {
                if dbs.contains_key(&t.database) {
                    continue;
                }
                let scan = scan_database(&mut c, dest.as_mut(), t).await?;
                dbs.insert(t.database.clone(), scan);
                mine.push(t.database.clone());
            }
            if let Some((from, t0)) = start {
                tokio::time::sleep(window.saturating_sub(t0.elapsed())).await;
                if let Some(to) = binlog_pos(id, &mut c).await? {
                    let secs = t0.elapsed().as_secs_f64();
                    let b = binlog_bytes(id, &mut c, &from, &to).await?;
                    for name in &mine {
                        if let Some(d) = dbs.get_mut(name) {
                            d.write_rate = b.rate(name, secs);
                            d.write_rate_measured = true;
                        }
                    }
                }
            }
        }
        Ok::<_, super::PreflightError>((servers, dbs))
    })
}

//! Turning the planner's outcome into plan records and writing the plan file, streaming: waves
//! are serialized a few at a time on all cores and written in order, so memory stays bounded.

use std::io::{self, Write};

use rayon::prelude::*;

use crate::groups::Groups;
use crate::inventory::Inventory;
use crate::plan::{Deferral, PlanInventory, Retires, Summary, Wave, PLAN_FORMAT, PLAN_VERSION};
use crate::settings::Settings;
use crate::waves::{WavesOutcome, Why};

const NEVER: u32 = u32::MAX;

/// Everything but the groups: what `migrator plan` prints.
#[derive(Debug, Clone)]
pub struct PlanOverview {
    pub inventory: PlanInventory,
    pub summary: Summary,
    /// Waves with empty `groups`.
    pub waves: Vec<Wave>,
}

pub(crate) struct Ctx<'a> {
    pub inv: &'a Inventory,
    pub groups: &'a Groups,
    pub settings: &'a Settings,
    pub out: &'a WavesOutcome,
}

impl Ctx<'_> {
    fn site(&self, s: u32) -> &str {
        self.inv.site_id(s as usize)
    }

    /// The plan record of group `g`, borrowing from the inventory (no copies of the text).
    fn group(&self, g: u32) -> GroupOut<'_> {
        let (inv, gs, o) = (self.inv, self.groups, &self.out.groups[g as usize]);
        let sites = gs.sites_of(g as usize);
        let first = &inv.sites.recs[sites[0] as usize];
        let pin_site = match o.why {
            Why::Pinned { site, .. }
            | Why::PinnedLast { site }
            | Why::PinnedBeyondEnd { site, .. } => Some(self.site(site)),
            _ => None,
        };
        let reason = if let Some(s) = o.excluded_by {
            ReasonOut::Excluded { site: self.site(s) }
        } else if let Some(c) = o.unplaced {
            ReasonOut::Unplaced {
                constraint: c,
                pinned_by: pin_site,
            }
        } else {
            match o.why {
                Why::Drain => ReasonOut::Drain {
                    filer: &inv.filers[first.filer as usize].id,
                    filer_rank: self.out.filer_rank[first.filer as usize] + 1,
                    cluster: &inv.clusters[first.cluster as usize].id,
                    cluster_rank: self.out.cluster_rank[first.cluster as usize] + 1,
                },
                Why::Canary(wave) => ReasonOut::Canary { wave },
                Why::Pinned { site, wave } => ReasonOut::Pinned {
                    site: self.site(site),
                    wave,
                },
                Why::PinnedLast { site } => ReasonOut::PinnedLast {
                    site: self.site(site),
                },
                Why::PinnedBeyondEnd { site, wave } => ReasonOut::PinnedBeyondEnd {
                    site: self.site(site),
                    wave,
                },
            }
        };
        let mut links = Vec::new();
        if sites.len() > 1 {
            for &d in gs.dbs_of(g as usize) {
                let users: Vec<&str> = sites
                    .iter()
                    .filter(|&&s| inv.site_dbs(s as usize).contains(&d))
                    .map(|&s| self.site(s))
                    .collect();
                if users.len() > 1 {
                    links.push(LinkOut {
                        via: "database",
                        name: inv.db_name(d as usize),
                        sites: users,
                    });
                }
            }
            let mut logins: Vec<(&str, u32)> = sites
                .iter()
                .map(|&s| (inv.site_login(s as usize), s))
                .collect();
            logins.sort();
            for run in logins.chunk_by(|a, b| a.0 == b.0) {
                if run.len() > 1 {
                    links.push(LinkOut {
                        via: "login",
                        name: run[0].0,
                        sites: run.iter().map(|&(_, s)| self.site(s)).collect(),
                    });
                }
            }
        }
        GroupOut {
            id: g,
            sites: sites.iter().map(|&s| self.site(s)).collect(),
            databases: gs
                .dbs_of(g as usize)
                .iter()
                .map(|&d| inv.db_name(d as usize))
                .collect(),
            bytes: gs.bytes[g as usize],
            destination: (o.dest_cluster != NEVER)
                .then(|| inv.clusters[o.dest_cluster as usize].id.as_str()),
            destination_sql: (o.dest_sql != NEVER)
                .then(|| inv.sql_servers[o.dest_sql as usize].id.as_str()),
            reason,
            deferred: o.deferred_by.map(|c| Deferral {
                from_wave: o.deferred_from,
                constraint: c,
            }),
            links,
        }
    }

    /// Totals, per-wave headers and retirements.
    pub fn overview(&self) -> PlanOverview {
        let (inv, gs, out) = (self.inv, self.groups, self.out);
        let wave_of = |g: u32| {
            let w = out.groups[g as usize].wave;
            if w == 0 {
                NEVER
            } else {
                w
            }
        };
        let mut cluster_last = vec![0u32; inv.clusters.len()];
        let mut filer_last = vec![0u32; inv.filers.len()];
        let mut sql_last = vec![0u32; inv.sql_servers.len()];
        let mut cluster_used = vec![false; inv.clusters.len()];
        let mut filer_used = vec![false; inv.filers.len()];
        let mut sql_used = vec![false; inv.sql_servers.len()];
        for (s, r) in inv.sites.recs.iter().enumerate() {
            let w = wave_of(gs.of_site[s]);
            cluster_last[r.cluster as usize] = cluster_last[r.cluster as usize].max(w);
            filer_last[r.filer as usize] = filer_last[r.filer as usize].max(w);
            cluster_used[r.cluster as usize] = true;
            filer_used[r.filer as usize] = true;
        }
        for g in 0..gs.len() {
            let w = wave_of(g as u32);
            for &d in gs.dbs_of(g) {
                let s = inv.databases.sql_server[d as usize] as usize;
                sql_last[s] = sql_last[s].max(w);
                sql_used[s] = true;
            }
        }
        for &d in &gs.unused_dbs {
            let s = inv.databases.sql_server[d as usize] as usize;
            sql_last[s] = NEVER;
            sql_used[s] = true;
        }
        let bps = self.settings.bandwidth_bytes_per_sec().unwrap_or(1.0) * self.settings.efficiency;
        let mut waves: Vec<Wave> = out
            .waves
            .iter()
            .map(|w| Wave {
                number: w.number,
                kind: w.kind,
                window: self.settings.windows[w.window].name.clone(),
                window_utc: match &w.night {
                    Some((_, span)) => span.describe(),
                    None => self.settings.windows[w.window]
                        .to_utc()
                        .map(|u| u.describe())
                        .unwrap_or_default(),
                },
                date: w.night.map(|(d, _)| d.to_string()),
                starts_at: w.night.map(|(_, span)| span.rfc3339().0),
                ends_at: w.night.map(|(_, span)| span.rfc3339().1),
                sites: w.sites as u64,
                group_count: w.groups.len() as u64,
                databases: w.databases as u64,
                bytes: w.bytes,
                budget_bytes: w.budget_bytes,
                site_cap: w.site_cap,
                est_seconds: (w.bytes as f64 / bps * 10.0).round() / 10.0,
                limited_by: w.limited_by,
                retires: Retires::default(),
                groups: Vec::new(),
            })
            .collect();
        let mut summary = Summary {
            waves: waves.len() as u32,
            sites_planned: waves.iter().map(|w| w.sites).sum(),
            groups_planned: waves.iter().map(|w| w.group_count).sum(),
            databases_planned: waves.iter().map(|w| w.databases).sum(),
            bytes_planned: waves.iter().map(|w| w.bytes).sum(),
            sites_unplaced: 0,
            sites_excluded: 0,
            est_seconds_total: waves.iter().map(|w| w.est_seconds).sum(),
            retired_clusters: 0,
            retired_web_servers: 0,
            retired_filers: 0,
            retired_sql_servers: 0,
        };
        for (g, o) in out.groups.iter().enumerate() {
            let n = gs.sites_of(g).len() as u64;
            if o.excluded_by.is_some() {
                summary.sites_excluded += n;
            } else if o.wave == 0 {
                summary.sites_unplaced += n;
            }
        }
        for (c, &w) in cluster_last.iter().enumerate() {
            if cluster_used[c] && w != NEVER && w >= 1 {
                let r = &mut waves[w as usize - 1].retires;
                r.clusters.push(inv.clusters[c].id.clone());
                r.web_servers += inv.clusters[c].servers as u64;
                summary.retired_clusters += 1;
                summary.retired_web_servers += inv.clusters[c].servers as u64;
            }
        }
        for (f, &w) in filer_last.iter().enumerate() {
            if filer_used[f] && w != NEVER && w >= 1 {
                waves[w as usize - 1]
                    .retires
                    .filers
                    .push(inv.filers[f].id.clone());
                summary.retired_filers += 1;
            }
        }
        for (s, &w) in sql_last.iter().enumerate() {
            if sql_used[s] && w != NEVER && w >= 1 {
                waves[w as usize - 1]
                    .retires
                    .sql_servers
                    .push(inv.sql_servers[s].id.clone());
                summary.retired_sql_servers += 1;
            }
        }
        let inventory = PlanInventory {
            checksum: inv.checksum.clone(),
            sites: inv.site_count() as u64,
            databases: inv.database_count() as u64,
            groups: gs.len() as u64,
            bytes: gs.bytes.iter().sum(),
            unused_databases: gs
                .unused_dbs
                .iter()
                .map(|&d| inv.db_name(d as usize).to_string())
                .collect(),
        };
        PlanOverview {
            inventory,
            summary,
            waves,
        }
    }

    /// Writes the plan file.
    pub fn write(&self, overview: &PlanOverview, mut w: impl Write + Send) -> io::Result<()> {
        let json = |v: &dyn erased::Ser| v.to_vec();
        write!(
            w,
            "{{\"format\":\"{PLAN_FORMAT}\",\"version\":{PLAN_VERSION},\"generator\":\"planner {}\",",
            env!("CARGO_PKG_VERSION")
        )?;
        if self.settings.campaign_start.is_some() {
            write!(w, "\"tzdb\":\"{}\",", crate::calendar::tzdb_version())?;
        }
        w.write_all(b"\n\"inventory\":")?;
        w.write_all(&json(&overview.inventory))?;
        w.write_all(b",\n\"settings\":")?;
        w.write_all(&json(self.settings))?;
        w.write_all(b",\n\"summary\":")?;
        w.write_all(&json(&overview.summary))?;
        w.write_all(b",\n\"waves\":[")?;
        const BATCH: usize = 8;
        // All cores serialize the next batch of waves while one writes the previous batch.
        let mut previous: Vec<Vec<u8>> = Vec::new();
        for (bi, batch) in overview.waves.chunks(BATCH).enumerate() {
            let (written, bufs) = rayon::join(
                || previous.iter().try_for_each(|b| w.write_all(b)),
                || {
                    batch
                        .par_iter()
                        .enumerate()
                        .map(|(k, header)| self.wave_bytes(bi * BATCH + k, header))
                        .collect::<Vec<Vec<u8>>>()
                },
            );
            written?;
            previous = bufs;
        }
        for b in &previous {
            w.write_all(b)?;
        }
        w.write_all(b"\n],\n\"unplaced\":[")?;
        let (mut unplaced, mut excluded) = (Vec::new(), Vec::new());
        for (g, o) in self.out.groups.iter().enumerate() {
            if o.excluded_by.is_some() {
                excluded.push(g as u32);
            } else if o.wave == 0 {
                unplaced.push(g as u32);
            }
        }
        let mut buf = Vec::new();
        self.groups_into(&mut buf, &unplaced);
        buf.extend_from_slice(b"],\n\"excluded\":[");
        self.groups_into(&mut buf, &excluded);
        buf.extend_from_slice(b"]}\n");
        w.write_all(&buf)?;
        w.flush()
    }

    /// One wave, serialized: header fields, then its groups one per line.
    fn wave_bytes(&self, idx: usize, header: &Wave) -> Vec<u8> {
        let mut buf = Vec::with_capacity(1 << 20);
        if idx > 0 {
            buf.push(b',');
        }
        buf.push(b'\n');
        let mut head = serde_json::to_vec(header).unwrap_or_default();
        // The header ends with `"groups":[]}`: open the array instead.
        head.truncate(head.len().saturating_sub(2));
        buf.extend_from_slice(&head);
        self.groups_into(&mut buf, &self.out.waves[idx].groups);
        buf.extend_from_slice(b"]}");
        buf
    }

    fn groups_into(&self, buf: &mut Vec<u8>, gids: &[u32]) {
        for (i, &g) in gids.iter().enumerate() {
            buf.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
            let rec = self.group(g);
            // Serializing plain data into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *buf, &rec);
        }
        if !gids.is_empty() {
            buf.push(b'\n');
        }
    }
}

mod erased {
    /// Serialize to JSON bytes through a trait object (keeps `write` readable).
    pub trait Ser {
        fn to_vec(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_vec(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

/// Borrowed twin of [`crate::plan::PlannedGroup`]: same JSON, written without copying text.
/// The acceptance tests read every written plan back as [`crate::plan::Plan`].
#[derive(serde::Serialize)]
struct GroupOut<'a> {
    id: u32,
    sites: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    databases: Vec<&'a str>,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination_sql: Option<&'a str>,
    reason: ReasonOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deferred: Option<Deferral>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    links: Vec<LinkOut<'a>>,
}

/// Borrowed twin of [`crate::plan::Reason`].
#[derive(serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ReasonOut<'a> {
    Drain {
        filer: &'a str,
        filer_rank: u32,
        cluster: &'a str,
        cluster_rank: u32,
    },
    Canary {
        wave: u32,
    },
    Pinned {
        site: &'a str,
        wave: u32,
    },
    PinnedLast {
        site: &'a str,
    },
    PinnedBeyondEnd {
        site: &'a str,
        wave: u32,
    },
    Unplaced {
        constraint: crate::waves::Constraint,
        #[serde(skip_serializing_if = "Option::is_none")]
        pinned_by: Option<&'a str>,
    },
    Excluded {
        site: &'a str,
    },
}

/// Borrowed twin of [`crate::plan::Link`].
#[derive(serde::Serialize)]
struct LinkOut<'a> {
    via: &'static str,
    name: &'a str,
    sites: Vec<&'a str>,
}

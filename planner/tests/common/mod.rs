//! Shared test helpers: a tiny inventory builder and a checker of every plan constraint.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use planner::model::*;
use planner::plan::{Plan, Reason};
use planner::waves::WaveKind;
use planner::write_inventory::{InventoryWriter, SitesFormat};
use planner::Settings;

/// A small inventory described in memory.
#[derive(Clone, Debug)]
pub struct Small {
    pub dest_clusters: Vec<(u64, u64)>,
    pub dest_sql: Vec<(u64, u32)>,
    pub sites: Vec<Site>,
    pub dbs: Vec<Database>,
}

pub fn site(id: &str, login: &str, bytes: u64, dbs: &[&str]) -> Site {
    Site {
        id: id.into(),
        login: login.into(),
        domains: vec![format!("{id}.example")],
        home: format!("/homez.1/{login}"),
        filer: "1".into(),
        cluster: "web1".into(),
        bytes,
        files: 10,
        traffic: 1.0,
        dns_hosted: true,
        databases: dbs.iter().map(|s| s.to_string()).collect(),
        window: None,
        pin: None,
        excluded: false,
    }
}

pub fn db(name: &str, bytes: u64) -> Database {
    Database {
        name: name.into(),
        user: format!("{name}_u"),
        sql_server: "sql1".into(),
        bytes,
        write_rate: 0.0,
    }
}

impl Small {
    pub fn write(&self, dir: &Path, format: SitesFormat) {
        let mut w = InventoryWriter::create(dir, format).unwrap();
        w.datacenter(&Datacenter {
            id: "old".into(),
            role: DcRole::Source,
        })
        .unwrap();
        w.datacenter(&Datacenter {
            id: "new".into(),
            role: DcRole::Destination,
        })
        .unwrap();
        w.filer(&Filer {
            id: "1".into(),
            dc: "old".into(),
            capacity_bytes: 1 << 50,
        })
        .unwrap();
        w.filer(&Filer {
            id: "2".into(),
            dc: "old".into(),
            capacity_bytes: 1 << 50,
        })
        .unwrap();
        for c in ["web1", "web2"] {
            w.cluster(&WebCluster {
                id: c.into(),
                dc: "old".into(),
                vip: "10.0.0.1".into(),
                servers: 4,
                disk_bytes: 1 << 50,
                site_slots: 1 << 30,
                used_bytes: 0,
                used_slots: 0,
            })
            .unwrap();
        }
        for (i, &(disk, slots)) in self.dest_clusters.iter().enumerate() {
            w.cluster(&WebCluster {
                id: format!("new{i}"),
                dc: "new".into(),
                vip: "10.1.0.1".into(),
                servers: 4,
                disk_bytes: disk,
                site_slots: slots,
                used_bytes: 0,
                used_slots: 0,
            })
            .unwrap();
        }
        for s in ["sql1", "sql2"] {
            w.sql_server(&SqlServer {
                id: s.into(),
                dc: "old".into(),
                hostnames: vec![format!("{s}.old.example")],
                ips: vec![],
                port: 3306,
                max_databases: 2500,
                disk_bytes: 1 << 50,
            })
            .unwrap();
        }
        for (i, &(disk, n)) in self.dest_sql.iter().enumerate() {
            w.sql_server(&SqlServer {
                id: format!("newsql{i}"),
                dc: "new".into(),
                hostnames: vec![format!("newsql{i}.new.example")],
                ips: vec![],
                port: 3306,
                max_databases: n,
                disk_bytes: disk,
            })
            .unwrap();
        }
        for d in &self.dbs {
            w.database(d).unwrap();
        }
        for s in &self.sites {
            w.site(s).unwrap();
        }
        w.finish().unwrap();
    }
}

/// Checks every constraint of `plan` against the inventory it was made from.
pub fn check_plan(
    plan: &Plan,
    sites: &[Site],
    dbs: &[Database],
    dest: &[(String, u64, u64)],
    dest_sql: &[(String, u64, u64)],
    s: &Settings,
) {
    let db_bytes: HashMap<&str, u64> = dbs.iter().map(|d| (d.name.as_str(), d.bytes)).collect();
    let by_id: HashMap<&str, &Site> = sites.iter().map(|x| (x.id.as_str(), x)).collect();
    // Every site exactly once.
    let mut place: HashMap<&str, Option<u32>> = HashMap::new();
    for (w, g) in plan.all_groups() {
        for x in &g.sites {
            assert!(
                place.insert(x.as_str(), w).is_none(),
                "site {x} appears twice"
            );
        }
    }
    assert_eq!(place.len(), sites.len(), "every site is in the plan once");
    // Groups never split: sites sharing a database or a login share a place.
    let mut by_db: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut by_login: HashMap<&str, Vec<&str>> = HashMap::new();
    for x in sites {
        for d in &x.databases {
            by_db.entry(d).or_default().push(&x.id);
        }
        by_login.entry(&x.login).or_default().push(&x.id);
    }
    for (k, members) in by_db.iter().chain(by_login.iter()) {
        let p0 = place[members[0]];
        for m in members {
            assert_eq!(place[m], p0, "{m} and {} share {k} but split", members[0]);
        }
    }
    let budget_of = |name: &str| {
        let w = s.windows.iter().find(|w| w.name == name).unwrap();
        s.wave_budget(&w.to_utc().unwrap()).unwrap()
    };
    let mut used: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut used_sql: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut last_seen_nonfinal = 0;
    let mut first_final = u32::MAX;
    for (i, w) in plan.waves.iter().enumerate() {
        assert_eq!(w.number as usize, i + 1, "waves are numbered 1..");
        let nsites: u64 = w.groups.iter().map(|g| g.sites.len() as u64).sum();
        let ndbs: u64 = w.groups.iter().map(|g| g.databases.len() as u64).sum();
        let bytes: u64 = w.groups.iter().map(|g| g.bytes).sum();
        assert_eq!(
            (nsites, ndbs, bytes),
            (w.sites, w.databases, w.bytes),
            "wave {} totals",
            w.number
        );
        let cap = w.site_cap as u64;
        if w.kind == WaveKind::Canary {
            assert!(
                s.canary_ramp.contains(&w.site_cap) || w.site_cap == s.max_sites_per_wave,
                "canary cap {} from the ramp {:?} (max {})",
                w.site_cap,
                s.canary_ramp,
                s.max_sites_per_wave
            );
        } else {
            assert_eq!(w.site_cap, s.max_sites_per_wave);
        }
        assert!(
            nsites <= cap.min(s.max_sites_per_wave as u64),
            "wave {} has {nsites} sites > {cap}",
            w.number
        );
        assert!(
            ndbs <= s.max_databases_per_wave as u64,
            "wave {} database cap",
            w.number
        );
        assert!(
            bytes <= budget_of(&w.window),
            "wave {} byte budget",
            w.number
        );
        assert_eq!(w.budget_bytes, budget_of(&w.window));
        let ww = s
            .windows
            .iter()
            .find(|x| x.name == w.window)
            .unwrap()
            .to_utc()
            .unwrap();
        if w.kind == WaveKind::Final {
            first_final = first_final.min(w.number);
        } else {
            last_seen_nonfinal = w.number;
        }
        for g in &w.groups {
            let mut sb = 0;
            for x in &g.sites {
                let site = by_id[x.as_str()];
                sb += site.bytes;
                if let Some(win) = &site.window {
                    assert!(
                        win.to_utc().unwrap().contains(&ww),
                        "site {x} window does not contain wave {}",
                        w.number
                    );
                }
                assert!(
                    !site.excluded && !s.exclude.contains(&site.id),
                    "excluded site {x} placed"
                );
            }
            let gdb: u64 = g.databases.iter().map(|d| db_bytes[d.as_str()]).sum();
            assert_eq!(g.bytes, sb + gdb, "group bytes");
            if w.kind == WaveKind::Canary
                && !matches!(
                    g.reason,
                    Reason::Pinned { .. } | Reason::PinnedBeyondEnd { .. }
                )
            {
                assert!(
                    g.bytes <= s.canary_max_bytes,
                    "canary group too large: {g:?}"
                );
            }
            let d = g
                .destination
                .as_deref()
                .expect("placed group has a destination");
            let e = used.entry(d).or_default();
            e.0 += sb;
            e.1 += g.sites.len() as u64;
            if !g.databases.is_empty() {
                let q = g
                    .destination_sql
                    .as_deref()
                    .expect("group with databases has a SQL destination");
                let e = used_sql.entry(q).or_default();
                e.0 += gdb;
                e.1 += g.databases.len() as u64;
            }
            match &g.reason {
                Reason::Pinned { wave, .. } => assert_eq!(*wave, w.number),
                Reason::PinnedLast { .. } => assert_eq!(w.kind, WaveKind::Final),
                Reason::Drain { .. } | Reason::Canary { .. } | Reason::PinnedBeyondEnd { .. } => {}
                other => panic!("placed group with reason {other:?}"),
            }
        }
    }
    if first_final != u32::MAX {
        assert!(last_seen_nonfinal < first_final, "final waves come last");
    }
    let keep = 1.0 - s.headroom_percent / 100.0;
    for (name, disk, slots) in dest {
        if let Some(&(b, n)) = used.get(name.as_str()) {
            assert!(
                b <= (*disk as f64 * keep) as u64,
                "destination {name} disk exceeded"
            );
            assert!(
                n <= (*slots as f64 * keep) as u64,
                "destination {name} slots exceeded"
            );
        }
    }
    for (name, disk, slots) in dest_sql {
        if let Some(&(b, n)) = used_sql.get(name.as_str()) {
            assert!(
                b <= (*disk as f64 * keep) as u64,
                "SQL destination {name} disk exceeded"
            );
            assert!(
                n <= (*slots as f64 * keep) as u64,
                "SQL destination {name} slots exceeded"
            );
        }
    }
    // Excluded and pinned-last sites.
    for x in sites {
        let p = place[x.id.as_str()];
        if x.excluded || s.exclude.contains(&x.id) {
            assert_eq!(p, None, "excluded site {} is placed", x.id);
        }
        if x.pin.is_some() || s.pin_last.contains(&x.id) || s.pin_wave.contains_key(&x.id) {
            // A pinned site's group is placed by a pin (of some member), or not at all.
            let (w, g) = plan.locate(&x.id).unwrap();
            match (&g.reason, w) {
                (Reason::Pinned { wave, .. }, Some(w)) => assert_eq!(*wave, w),
                (Reason::PinnedBeyondEnd { wave, .. }, Some(w)) => assert!(w < *wave),
                (Reason::PinnedLast { .. }, Some(_)) => {}
                (Reason::Unplaced { .. } | Reason::Excluded { .. }, None) => {}
                other => panic!("pinned site {} placed as {other:?}", x.id),
            }
        }
    }
}

//! A seeded generator of realistic inventories, for tests, demos and the benchmark.
//!
//! Shape (per 3,000,000 sites): ~750 source web clusters of 8 servers (6,000 web servers),
//! ~300 filers, ~800,000 databases on ~900 SQL servers (500–1,200 each, never above 2,500),
//! so ~7,000 servers in all. Site and database sizes are log-normal (heavy tails: most sites
//! are small, a few are huge), file counts follow sizes. 22% of sites use databases (some
//! several), ~5% of database uses share a database with a neighbouring site, ~3% of sites share
//! a login with the previous site, 30% of zones are hosted elsewhere, ~5% of customers have a
//! maintenance window (a few fit no wave window), a handful of sites are excluded.
//!
//! The random generator is our own (SplitMix64): the same seed gives the same files on every
//! platform and every version of the dependencies.

use std::io;
use std::path::Path;

use crate::model::{Database, Datacenter, DcRole, Filer, Site, SqlServer, WebCluster};
use crate::window::Window;
use crate::write_inventory::{InventoryWriter, SitesFormat};

/// SplitMix64: tiny, fast, good enough for synthetic data, stable forever.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(1e-300);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    /// Log-normal with the given median and shape, clamped to [min, max].
    pub fn lognormal(&mut self, median: f64, sigma: f64, min: f64, max: f64) -> u64 {
        (median * (sigma * self.normal()).exp()).clamp(min, max) as u64
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub sites: u64,
    pub seed: u64,
    pub format: SitesFormat,
}

/// Counts of what was written.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Generated {
    pub sites: u64,
    pub databases: u64,
    pub source_clusters: u64,
    pub web_servers: u64,
    pub filers: u64,
    pub source_sql_servers: u64,
    pub destination_clusters: u64,
    pub destination_sql_servers: u64,
    pub site_bytes: u64,
    pub database_bytes: u64,
}

const MB: f64 = 1e6;
const GB: f64 = 1e9;
const SERVERS_PER_CLUSTER: u32 = 8;

/// Writes a synthetic inventory into `dir`.
pub fn generate(dir: &Path, opts: &GenerateOptions) -> io::Result<Generated> {
    let n = opts.sites.max(1);
    let mut rng = Rng::new(opts.seed);
    let mut w = InventoryWriter::create(dir, opts.format)?;
    let n_cl = n.div_ceil(4000);
    let n_f = n.div_ceil(10_000);
    w.datacenter(&Datacenter {
        id: "old".into(),
        role: DcRole::Source,
    })?;
    w.datacenter(&Datacenter {
        id: "new".into(),
        role: DcRole::Destination,
    })?;
    for f in 0..n_f {
        w.filer(&Filer {
            id: (100 + f).to_string(),
            dc: "old".into(),
            capacity_bytes: 200_000_000_000_000,
        })?;
    }
    let mut g = Generated {
        source_clusters: n_cl,
        web_servers: n_cl * SERVERS_PER_CLUSTER as u64,
        filers: n_f,
        ..Default::default()
    };

    // SQL servers fill up one after the other, following the sites (and so the filers).
    let mut sql_index = 0u64;
    let mut sql_fill = 0u64;
    let mut sql_target = rng.range(500, 1200);
    let mut recent: Vec<String> = Vec::with_capacity(64);
    let mut prev_login = String::new();
    let mut prev_place = (u64::MAX, u64::MAX);
    let mut site = Site {
        id: String::new(),
        login: String::new(),
        domains: Vec::new(),
        home: String::new(),
        filer: String::new(),
        cluster: String::new(),
        bytes: 0,
        files: 0,
        traffic: 0.0,
        dns_hosted: true,
        databases: Vec::new(),
        window: None,
        pin: None,
        excluded: false,
    };
    for i in 0..n {
        let cl = i * n_cl / n;
        let f = cl * n_f / n_cl;
        site.id = format!("s{i:07}");
        site.login = if rng.f64() < 0.03 && prev_place == (cl, f) {
            prev_login.clone()
        } else {
            format!("u{i:07}")
        };
        prev_login.clone_from(&site.login);
        prev_place = (cl, f);
        site.filer = (100 + f).to_string();
        site.cluster = format!("web{cl:04}");
        site.home = format!("/homez.{}/{}", site.filer, site.login);
        site.domains.clear();
        site.domains.push(format!("site{i}.example"));
        if rng.f64() < 0.4 {
            site.domains.push(format!("www.site{i}.example"));
        }
        if rng.f64() < 0.1 {
            site.domains.push(format!("shop{i}.example.net"));
        }
        site.bytes = rng.lognormal(40.0 * MB, 1.8, 10e3, 300.0 * GB);
        site.files = (site.bytes / rng.lognormal(60e3, 1.0, 2e3, 5.0 * MB)).max(1);
        site.traffic = rng.lognormal(1000.0, 1.5, 1.0, 1e9) as f64 / 1000.0;
        site.dns_hosted = rng.f64() >= 0.3;
        let r = rng.f64();
        let ndb = if r < 0.78 {
            0
        } else if r < 0.955 {
            1
        } else if r < 0.99 {
            2
        } else {
            rng.range(3, 6)
        };
        site.databases.clear();
        for _ in 0..ndb {
            if !recent.is_empty() && rng.f64() < 0.05 {
                let d = recent[rng.range(0, recent.len() as u64) as usize].clone();
                if !site.databases.contains(&d) {
                    site.databases.push(d);
                }
                continue;
            }
            if sql_fill >= sql_target {
                sql_index += 1;
                sql_fill = 0;
                sql_target = rng.range(500, 1200);
            }
            sql_fill += 1;
            let name = format!("db{:07}", g.databases);
            let bytes = rng.lognormal(15.0 * MB, 2.0, 100e3, 200.0 * GB);
            g.databases += 1;
            g.database_bytes += bytes;
            w.database(&Database {
                name: name.clone(),
                user: name.clone(),
                sql_server: format!("sql{sql_index:04}"),
                bytes,
                write_rate: rng.lognormal(200.0, 2.0, 0.0, 50.0 * MB) as f64,
            })?;
            if recent.len() == 64 {
                recent.remove(0);
            }
            recent.push(name.clone());
            site.databases.push(name);
        }
        let r = rng.f64();
        site.window = if r < 0.0002 {
            Some(Window::new("12:00", "14:00", "UTC"))
        } else if r < 0.02 {
            Some(Window::new("22:00", "06:00", "+01:00"))
        } else if r < 0.035 {
            Some(Window::new("20:00", "08:00", "UTC"))
        } else if r < 0.05 {
            Some(Window::new("09:00", "13:00", "+09:00"))
        } else {
            None
        };
        site.excluded = rng.f64() < 0.00002;
        g.site_bytes += site.bytes;
        w.site(&site)?;
    }
    g.sites = n;
    g.source_sql_servers = sql_index + 1;
    for c in 0..n_cl {
        w.cluster(&WebCluster {
            id: format!("web{c:04}"),
            dc: "old".into(),
            vip: format!("10.{}.{}.1", 16 + c / 250, c % 250),
            servers: SERVERS_PER_CLUSTER,
            disk_bytes: 400_000_000_000_000,
            site_slots: 10_000,
            used_bytes: 0,
            used_slots: 0,
        })?;
    }
    for s in 0..=sql_index {
        w.sql_server(&SqlServer {
            id: format!("sql{s:04}"),
            dc: "old".into(),
            hostnames: vec![format!("sql{s:04}.old.example")],
            ips: vec![format!("10.{}.{}.10", 100 + s / 250, s % 250)],
            port: 3306,
            max_databases: 2500,
            disk_bytes: 20_000_000_000_000,
        })?;
    }
    // Destinations: room for everything plus 50% over the default 15% headroom.
    let n_dc = n.div_ceil(12_000);
    g.destination_clusters = n_dc;
    for c in 0..n_dc {
        w.cluster(&WebCluster {
            id: format!("new-web{c:03}"),
            dc: "new".into(),
            vip: format!("10.{}.{}.1", 200 + c / 250, c % 250),
            servers: 16,
            disk_bytes: (g.site_bytes as f64 * 1.5 / 0.85 / n_dc as f64) as u64 + 1_000_000_000_000,
            site_slots: (n as f64 * 1.5 / 0.85 / n_dc as f64) as u64 + 100,
            used_bytes: 0,
            used_slots: 0,
        })?;
    }
    let n_ds = g.databases.div_ceil(1800).max(1);
    g.destination_sql_servers = n_ds;
    for s in 0..n_ds {
        w.sql_server(&SqlServer {
            id: format!("new-sql{s:04}"),
            dc: "new".into(),
            hostnames: vec![format!("sql{s:04}.new.example")],
            ips: vec![format!("10.{}.{}.10", 220 + s / 250, s % 250)],
            port: 3306,
            max_databases: 2500,
            disk_bytes: (g.database_bytes as f64 * 1.5 / 0.85 / n_ds as f64) as u64
                + 1_000_000_000_000,
        })?;
    }
    w.finish()?;
    Ok(g)
}

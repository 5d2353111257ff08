//! The loaded inventory in compact, column-like form.
//!
//! Millions of sites do not fit comfortably as owned structs full of `String`s, so sites and
//! databases keep their text in one arena each and refer to it by [`Span`]s; references between
//! records are indexes. Use the accessors, or [`Inventory::site`] to get a full [`Site`] back.

use crate::model::{Database, Datacenter, DcRole, Filer, Pin, Site, SqlServer, WebCluster};
use crate::window::{UtcWindow, Window};

/// A slice of an arena.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub off: u32,
    pub len: u32,
}

impl Span {
    pub(crate) fn get<'a>(&self, text: &'a str) -> &'a str {
        &text[self.off as usize..(self.off + self.len) as usize]
    }
}

/// One site, compact. Text lives in [`SiteTable::text`].
#[derive(Debug, Clone, Default)]
pub struct SiteRec {
    pub id: Span,
    pub login: Span,
    /// Range in [`SiteTable::domains`].
    pub domains: (u32, u32),
    /// Range in [`SiteTable::db_refs`].
    pub dbs: (u32, u32),
    pub filer: u32,
    pub cluster: u32,
    pub bytes: u64,
    pub files: u64,
    pub traffic: f32,
    pub dns_hosted: bool,
    pub excluded: bool,
    pub window: Option<UtcWindow>,
    pub pin: Option<Pin>,
    /// Line in the sites file, for messages about this site.
    pub line: u32,
}

/// All sites.
#[derive(Debug, Default)]
pub struct SiteTable {
    pub text: String,
    pub recs: Vec<SiteRec>,
    pub domains: Vec<Span>,
    /// Database indexes, ranges given by [`SiteRec::dbs`].
    pub db_refs: Vec<u32>,
    /// The windows exactly as written (index by site is not kept; see `window_text`).
    pub window_text: Vec<(u32, Window)>,
}

/// All databases.
#[derive(Debug, Default)]
pub struct DatabaseTable {
    pub text: String,
    pub name: Vec<Span>,
    pub user: Vec<Span>,
    pub sql_server: Vec<u32>,
    pub bytes: Vec<u64>,
    pub write_rate: Vec<f64>,
    pub line: Vec<u32>,
}

/// The BLAKE3 checksum of each inventory file and of all of them together.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InventoryChecksum {
    /// BLAKE3 over the per-file checksums in file order (`name=hex\n` lines).
    pub blake3: String,
    /// `(file name, BLAKE3 hex)`: verifiable with `b3sum`.
    pub files: Vec<(String, String)>,
}

/// A loaded, validated inventory.
#[derive(Debug)]
pub struct Inventory {
    pub datacenters: Vec<Datacenter>,
    pub clusters: Vec<WebCluster>,
    pub filers: Vec<Filer>,
    pub sql_servers: Vec<SqlServer>,
    pub databases: DatabaseTable,
    pub sites: SiteTable,
    pub checksum: InventoryChecksum,
}

impl Inventory {
    pub fn site_count(&self) -> usize {
        self.sites.recs.len()
    }
    pub fn database_count(&self) -> usize {
        self.databases.name.len()
    }
    pub fn site_id(&self, i: usize) -> &str {
        self.sites.recs[i].id.get(&self.sites.text)
    }
    pub fn site_login(&self, i: usize) -> &str {
        self.sites.recs[i].login.get(&self.sites.text)
    }
    /// Database indexes used by site `i`.
    pub fn site_dbs(&self, i: usize) -> &[u32] {
        let (s, n) = self.sites.recs[i].dbs;
        &self.sites.db_refs[s as usize..(s + n) as usize]
    }
    pub fn db_name(&self, d: usize) -> &str {
        self.databases.name[d].get(&self.databases.text)
    }
    /// The one account of database `d`.
    pub fn db_user(&self, d: usize) -> &str {
        self.databases.user[d].get(&self.databases.text)
    }
    /// True when web cluster `c` is in a destination datacenter.
    pub fn cluster_is_destination(&self, c: usize) -> bool {
        self.dc_role(&self.clusters[c].dc) == Some(DcRole::Destination)
    }
    /// True when SQL server `s` is in a destination datacenter.
    pub fn sql_is_destination(&self, s: usize) -> bool {
        self.dc_role(&self.sql_servers[s].dc) == Some(DcRole::Destination)
    }
    fn dc_role(&self, dc: &str) -> Option<DcRole> {
        self.datacenters.iter().find(|d| d.id == dc).map(|d| d.role)
    }
    /// Index of the site with this id (a linear scan: meant for a handful of look-ups).
    pub fn find_site(&self, id: &str) -> Option<usize> {
        (0..self.site_count()).find(|&i| self.site_id(i) == id)
    }

    /// The full record of site `i`, as it would be written to `sites.jsonl`.
    pub fn site(&self, i: usize) -> Site {
        let r = &self.sites.recs[i];
        let t = &self.sites.text;
        let (ds, dn) = r.domains;
        let window = self
            .sites
            .window_text
            .binary_search_by_key(&(i as u32), |(k, _)| *k)
            .ok()
            .map(|k| self.sites.window_text[k].1.clone());
        Site {
            id: r.id.get(t).to_string(),
            login: r.login.get(t).to_string(),
            domains: self.sites.domains[ds as usize..(ds + dn) as usize]
                .iter()
                .map(|s| s.get(t).to_string())
                .collect(),
            home: format!(
                "/homez.{}/{}",
                self.filers[r.filer as usize].id,
                r.login.get(t)
            ),
            filer: self.filers[r.filer as usize].id.clone(),
            cluster: self.clusters[r.cluster as usize].id.clone(),
            bytes: r.bytes,
            files: r.files,
            traffic: r.traffic as f64,
            dns_hosted: r.dns_hosted,
            databases: self
                .site_dbs(i)
                .iter()
                .map(|&d| self.db_name(d as usize).to_string())
                .collect(),
            window,
            pin: r.pin,
            excluded: r.excluded,
        }
    }

    /// The full record of database `d`.
    pub fn database(&self, d: usize) -> Database {
        let t = &self.databases;
        Database {
            name: t.name[d].get(&t.text).to_string(),
            user: t.user[d].get(&t.text).to_string(),
            sql_server: self.sql_servers[t.sql_server[d] as usize].id.clone(),
            bytes: t.bytes[d],
            write_rate: t.write_rate[d],
        }
    }
}

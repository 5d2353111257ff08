//! The inventory model: the public, serde-friendly records an inventory is made of.
//!
//! One record per line in `<kind>.jsonl` files (sites may also come as `sites.csv`). These types
//! are the stable contract between the provider's export, the generator, the lab and the planner:
//! fields are only ever added (with a default), never renamed or removed.

use serde::{Deserialize, Serialize};

use crate::window::Window;

/// Whether a datacenter is being emptied or filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DcRole {
    /// The old datacenter: its sites, filers and SQL servers are moved away.
    Source,
    /// The new datacenter: its web clusters and SQL servers receive the sites.
    Destination,
}

/// A datacenter (`datacenters.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Datacenter {
    /// Short identifier other records refer to, e.g. `old` or `new`.
    pub id: String,
    pub role: DcRole,
}

/// A web cluster: web servers behind one load-balancer VIP (`clusters.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebCluster {
    pub id: String,
    /// Datacenter id; its role says whether the cluster is a source or a destination.
    pub dc: String,
    /// The public address customers' DNS points to.
    pub vip: String,
    /// Number of web servers behind the VIP (counted when a cluster is retired).
    #[serde(default = "one")]
    pub servers: u32,
    /// Disk capacity for homes, in bytes (used for destination clusters).
    pub disk_bytes: u64,
    /// How many sites the cluster may serve (used for destination clusters).
    pub site_slots: u64,
    /// Bytes already used before the migration (destination clusters already in service).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub used_bytes: u64,
    /// Site slots already used before the migration.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub used_slots: u64,
}

/// A filer holding home directories `/homez.<id>/<login>` (`filers.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filer {
    /// Appears in home paths: `/homez.<id>/<login>`.
    pub id: String,
    pub dc: String,
    pub capacity_bytes: u64,
}

/// A shared MySQL server (`sql_servers.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlServer {
    pub id: String,
    pub dc: String,
    /// Host names customers' code uses, e.g. `sql042.old.example`.
    pub hostnames: Vec<String>,
    /// Addresses customers' code may use directly.
    pub ips: Vec<String>,
    pub port: u16,
    /// Most databases this server may hold (2,500 on the provider's shared servers).
    #[serde(default = "default_max_databases")]
    pub max_databases: u32,
    pub disk_bytes: u64,
}

/// A MySQL database, the unit of database migration (`databases.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// Unique database name.
    pub name: String,
    /// The one MySQL user of this database.
    pub user: String,
    /// The SQL server (id) that holds it today.
    pub sql_server: String,
    pub bytes: u64,
    /// Average write rate in bytes per second (drives the final-sync estimate).
    #[serde(default)]
    pub write_rate: f64,
}

/// Where an operator pinned a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pin {
    /// Exactly this wave number (1-based).
    Wave(u32),
    /// The final wave(s), after every unpinned site.
    Last,
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pin::Wave(n) => write!(f, "{n}"),
            Pin::Last => f.write_str("last"),
        }
    }
}

/// A pin that is neither a wave number nor `last` (the input is quoted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a wave number (1, 2, ...) or \"last\", got {0:?}")]
pub struct PinError(pub String);

impl std::str::FromStr for Pin {
    type Err = PinError;
    fn from_str(s: &str) -> Result<Self, PinError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("last") || t.eq_ignore_ascii_case("final") {
            return Ok(Pin::Last);
        }
        match t.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(Pin::Wave(n)),
            _ => Err(PinError(s.to_string())),
        }
    }
}

impl Serialize for Pin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Pin::Wave(n) => s.serialize_u32(*n),
            Pin::Last => s.serialize_str("last"),
        }
    }
}

impl<'de> Deserialize<'de> for Pin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Pin;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a wave number or \"last\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Pin, E> {
                match u32::try_from(v) {
                    Ok(n) if n >= 1 => Ok(Pin::Wave(n)),
                    _ => Err(E::custom(format!("wave number {v} out of range"))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Pin, E> {
                Err(E::custom(format!("wave number {v} out of range")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Pin, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A hosted site (`sites.jsonl` or `sites.csv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Unique, stable site identifier (what operators type: `migrator plan explain <id>`).
    pub id: String,
    /// The customer's system login; sites with the same login share a home and move together.
    pub login: String,
    /// Domains served by the site.
    pub domains: Vec<String>,
    /// Home directory, always `/homez.<filer>/<login>` (customers' code hard-codes it).
    pub home: String,
    /// Filer (id) that holds the home.
    pub filer: String,
    /// Source web cluster (id) serving the site today.
    pub cluster: String,
    /// Size of the home in bytes.
    pub bytes: u64,
    /// Number of files in the home (drives the per-file copy cost).
    pub files: u64,
    /// Relative share of traffic (requests), used to pick quiet canaries.
    #[serde(default)]
    pub traffic: f64,
    /// True when the provider hosts the site's DNS zone (it can be switched by us).
    pub dns_hosted: bool,
    /// Names of the databases the site uses (may be shared with other sites).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    /// The customer's maintenance window, if the contract has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// Operator pin: a wave number or `"last"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Pin>,
    /// True when the site must not be moved at all (its whole group stays).
    #[serde(default, skip_serializing_if = "is_false")]
    pub excluded: bool,
}

fn one() -> u32 {
    1
}
fn default_max_databases() -> u32 {
    2500
}
fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

/// File names inside an inventory directory.
pub mod files {
    pub const DATACENTERS: &str = "datacenters.jsonl";
    pub const CLUSTERS: &str = "clusters.jsonl";
    pub const FILERS: &str = "filers.jsonl";
    pub const SQL_SERVERS: &str = "sql_servers.jsonl";
    pub const DATABASES: &str = "databases.jsonl";
    pub const SITES_JSONL: &str = "sites.jsonl";
    pub const SITES_CSV: &str = "sites.csv";
}

//! The plan file: versioned JSON that `migrator wave run` consumes. It records the inventory
//! checksum and the settings it was made from, every wave with its groups (sites, databases,
//! destinations) and why each group is where it is, plus unplaced and excluded groups.
//!
//! Layout: one JSON document; waves and groups each start on their own line so that `grep`,
//! `diff` and `less` stay useful on multi-gigabyte plans. No timestamps: equal input and
//! settings give a byte-identical file. `version` changes only when a reader would misread.

use serde::{Deserialize, Serialize};

use crate::inventory::InventoryChecksum;
use crate::settings::Settings;
use crate::waves::{Constraint, WaveKind};

/// The `format` field of every plan file.
pub const PLAN_FORMAT: &str = "hosting-migration-plan";
/// The current plan format version.
pub const PLAN_VERSION: u32 = 1;

/// A whole plan, as read back from a plan file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format: String,
    pub version: u32,
    /// The program that wrote the plan, e.g. `planner 0.1.0`.
    pub generator: String,
    /// Dated plans: version of the IANA zone database the windows were resolved with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tzdb: Option<String>,
    pub inventory: PlanInventory,
    pub settings: Settings,
    pub summary: Summary,
    pub waves: Vec<Wave>,
    /// Groups no wave could take, with the constraint that stopped them.
    pub unplaced: Vec<PlannedGroup>,
    /// Groups kept out because one of their sites is excluded.
    pub excluded: Vec<PlannedGroup>,
}

/// What the plan was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanInventory {
    pub checksum: InventoryChecksum,
    pub sites: u64,
    pub databases: u64,
    pub groups: u64,
    pub bytes: u64,
    /// Databases that no site uses: not moved by this plan, and they keep their server alive.
    pub unused_databases: Vec<String>,
}

/// Totals over the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub waves: u32,
    pub sites_planned: u64,
    pub groups_planned: u64,
    pub databases_planned: u64,
    pub bytes_planned: u64,
    pub sites_unplaced: u64,
    pub sites_excluded: u64,
    /// Sum of the waves' estimated transfer times at the given bandwidth and efficiency.
    pub est_seconds_total: f64,
    /// Source web clusters, web servers, filers and SQL servers emptied by the plan.
    pub retired_clusters: u64,
    pub retired_web_servers: u64,
    pub retired_filers: u64,
    pub retired_sql_servers: u64,
}

/// Source resources a wave empties completely (they can be retired after it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Retires {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub web_servers: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sql_servers: Vec<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One wave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wave {
    pub number: u32,
    pub kind: WaveKind,
    /// Name of the wave window (from the settings).
    pub window: String,
    /// The window in UTC, e.g. `22:00-06:00 UTC` (dated plans: on the wave's night).
    pub window_utc: String,
    /// Dated plans (`campaign_start`): the local date of the wave's night in the wave
    /// window's zone, and the window's start and end that night (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    pub sites: u64,
    pub group_count: u64,
    pub databases: u64,
    pub bytes: u64,
    pub budget_bytes: u64,
    /// Most sites this wave may hold (a canary step, or `max_sites_per_wave`).
    pub site_cap: u32,
    /// `bytes / (bandwidth × efficiency)`.
    pub est_seconds: f64,
    /// The constraint that closed the wave.
    pub limited_by: Constraint,
    pub retires: Retires,
    pub groups: Vec<PlannedGroup>,
}

/// A move group and where it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedGroup {
    /// Group id (stable for a given inventory).
    pub id: u32,
    pub sites: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    /// Site bytes plus database bytes.
    pub bytes: u64,
    /// Destination web cluster id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Destination SQL server id (groups with databases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_sql: Option<String>,
    pub reason: Reason,
    /// Set when an earlier wave refused the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<Deferral>,
    /// Why the sites are one group (shared databases and logins), for groups of 2+ sites.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
}

/// Why a group is in its wave (or in none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// Taken in draining order: its filer and source cluster are being emptied.
    Drain {
        filer: String,
        filer_rank: u32,
        cluster: String,
        cluster_rank: u32,
    },
    /// Taken as a small, early canary.
    Canary { wave: u32 },
    /// `site` is pinned to `wave`.
    Pinned { site: String, wave: u32 },
    /// `site` is pinned to the final wave(s).
    PinnedLast { site: String },
    /// `site` is pinned to a wave past the plan's end; placed in the last wave.
    PinnedBeyondEnd { site: String, wave: u32 },
    /// No wave could take the group.
    Unplaced {
        constraint: Constraint,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pinned_by: Option<String>,
    },
    /// `site` is excluded, so its whole group stays.
    Excluded { site: String },
}

/// The first wave that refused the group and the constraint that refused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deferral {
    pub from_wave: u32,
    pub constraint: Constraint,
}

/// Sites joined into one group by something they share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// `database` or `login`.
    pub via: String,
    pub name: String,
    pub sites: Vec<String>,
}

impl Plan {
    /// Reads a plan file, checking its format and version.
    pub fn read(path: &std::path::Path) -> Result<Plan, crate::error::PlanError> {
        use crate::error::PlanError;
        let bytes = std::fs::read(path).map_err(|source| PlanError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        #[derive(Deserialize)]
        struct Probe {
            format: String,
            version: u32,
        }
        let probe: Probe = serde_json::from_slice(&bytes).map_err(|e| PlanError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if probe.format != PLAN_FORMAT {
            return Err(PlanError::Format {
                path: path.to_path_buf(),
                message: format!("format is {:?}, expected {PLAN_FORMAT:?}", probe.format),
            });
        }
        if probe.version != PLAN_VERSION {
            return Err(PlanError::Version {
                path: path.to_path_buf(),
                found: probe.version,
                expected: PLAN_VERSION,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| PlanError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Every group with the wave it is in (`None`: unplaced or excluded).
    pub fn all_groups(&self) -> impl Iterator<Item = (Option<u32>, &PlannedGroup)> {
        self.waves
            .iter()
            .flat_map(|w| w.groups.iter().map(move |g| (Some(w.number), g)))
            .chain(self.unplaced.iter().map(|g| (None, g)))
            .chain(self.excluded.iter().map(|g| (None, g)))
    }

    /// The wave and group of a site.
    pub fn locate(&self, site: &str) -> Option<(Option<u32>, &PlannedGroup)> {
        self.all_groups()
            .find(|(_, g)| g.sites.iter().any(|s| s == site))
    }
}

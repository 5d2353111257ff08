//! What the wave planner decides ([`super::plan_waves`]): the waves, each group's placement
//! and why it is there, and the constraints that refused a group or closed a wave.

use std::collections::BTreeMap;

use crate::model::Pin;

/// A constraint that refused a group (or closed a wave).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// The wave already has `max_sites_per_wave` (or its canary cap) sites.
    MaxSites,
    /// The wave already has `max_databases_per_wave` databases.
    MaxDatabases,
    /// The wave's byte budget (bandwidth × window × efficiency) is used up.
    ByteBudget,
    /// A customer's maintenance window does not contain the wave's window.
    Window,
    /// Canary waves take only groups up to `canary_max_bytes`.
    CanarySize,
    /// No destination web cluster has room (disk or site slots, after headroom).
    DestinationCluster,
    /// No destination SQL server has room (disk or database slots, after headroom).
    DestinationSql,
    /// The queue ran out: every group is placed.
    QueueEmpty,
    /// Nothing more was waiting for this wave (pinned groups only).
    PinnedOnly,
}

impl Constraint {
    pub const ALL: [Constraint; 9] = [
        Constraint::MaxSites,
        Constraint::MaxDatabases,
        Constraint::ByteBudget,
        Constraint::Window,
        Constraint::CanarySize,
        Constraint::DestinationCluster,
        Constraint::DestinationSql,
        Constraint::QueueEmpty,
        Constraint::PinnedOnly,
    ];
    /// Words for an operator.
    pub fn describe(&self) -> &'static str {
        match self {
            Constraint::MaxSites => "the wave's site cap was reached",
            Constraint::MaxDatabases => "the wave's database cap was reached",
            Constraint::ByteBudget => {
                "the wave's byte budget (bandwidth x window x efficiency) was used up"
            }
            Constraint::Window => {
                "a customer's maintenance window does not contain the wave's window"
            }
            Constraint::CanarySize => "the group is too large for a canary wave",
            Constraint::DestinationCluster => {
                "no destination web cluster had room (disk or site slots, after headroom)"
            }
            Constraint::DestinationSql => {
                "no destination SQL server had room (disk or database slots, after headroom)"
            }
            Constraint::QueueEmpty => "no groups were left to place",
            Constraint::PinnedOnly => "only pinned groups were waiting",
        }
    }
}

/// Why a group is where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Taken in draining order.
    Drain,
    /// Taken as a canary in ramp step `n` (1-based).
    Canary(u32),
    /// Site `site` is pinned to this wave.
    Pinned { site: u32, wave: u32 },
    /// Site `site` is pinned `last`.
    PinnedLast { site: u32 },
    /// Site `site` is pinned to a wave beyond the end of the plan; placed in the last one.
    PinnedBeyondEnd { site: u32, wave: u32 },
}

/// The outcome for one group.
#[derive(Debug, Clone, Copy)]
pub struct GroupOutcome {
    /// Wave number, 0 when not placed.
    pub wave: u32,
    pub why: Why,
    /// Position of the destination cluster / SQL server in the inventory (u32::MAX: none).
    pub dest_cluster: u32,
    pub dest_sql: u32,
    /// First wave that refused the group, and why (0: never refused).
    pub deferred_from: u32,
    pub deferred_by: Option<Constraint>,
    /// Set when the group is in no wave.
    pub unplaced: Option<Constraint>,
    /// Set when an excluded site keeps the group out: that site.
    pub excluded_by: Option<u32>,
}

/// Kinds of waves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaveKind {
    Canary,
    Full,
    /// Waves of groups pinned `last`.
    Final,
}

/// One planned wave.
#[derive(Debug, Clone)]
pub struct WavePlan {
    pub number: u32,
    pub kind: WaveKind,
    /// Index into `settings.windows`.
    pub window: usize,
    /// Dated plans: the local date of the wave's night and the window's span that night.
    pub night: Option<(jiff::civil::Date, crate::calendar::Span)>,
    pub budget_bytes: u64,
    pub site_cap: u32,
    pub sites: u32,
    pub databases: u32,
    pub bytes: u64,
    /// Groups in placement order.
    pub groups: Vec<u32>,
    /// What closed the wave.
    pub limited_by: Constraint,
}

/// The whole outcome.
#[derive(Debug)]
pub struct WavesOutcome {
    pub waves: Vec<WavePlan>,
    pub groups: Vec<GroupOutcome>,
    /// Rank of each filer / cluster in the draining order (0 = first).
    pub filer_rank: Vec<u32>,
    pub cluster_rank: Vec<u32>,
}

/// Pins and exclusions per site after merging the inventory with the settings.
pub struct SiteOverrides {
    pub pin: BTreeMap<u32, Pin>,
    pub exclude: Vec<u32>,
}

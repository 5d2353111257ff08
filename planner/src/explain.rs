//! `plan explain <site>`: which wave, which group, which constraint put it there; and
//! `plan diff A B`: which sites moved between two plans, and why they are where they are now.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::PlanError;
use crate::plan::{Plan, PlannedGroup, Reason};
use crate::waves::{Constraint, WaveKind};

/// The answer to `plan explain <site>`.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub site: String,
    /// `None`: the site is in no wave (unplaced or excluded).
    pub wave: Option<u32>,
    pub waves_total: u32,
    pub group: PlannedGroup,
    /// The same, in sentences for an operator.
    pub text: Vec<String>,
}

fn gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

/// Explains where `site` is in `plan`.
pub fn explain(plan: &Plan, site: &str) -> Result<Explanation, PlanError> {
    let (wave, group) = plan
        .locate(site)
        .ok_or_else(|| PlanError::UnknownSite(site.to_string()))?;
    let total = plan.summary.waves;
    let mut t = Vec::new();
    let w = wave.and_then(|n| plan.waves.get(n as usize - 1));
    match w {
        Some(w) => t.push(format!(
            "site {site} is in wave {} of {total} ({} wave, window {} = {}{}).",
            w.number,
            match w.kind {
                WaveKind::Canary => "canary",
                WaveKind::Full => "full",
                WaveKind::Final => "final",
            },
            w.window,
            w.window_utc,
            match (&w.date, &w.starts_at, &w.ends_at) {
                (Some(d), Some(a), Some(b)) => format!(" on the night of {d}: {a} to {b}"),
                _ => String::new(),
            }
        )),
        None => t.push(format!("site {site} is in no wave.")),
    }
    let others = group.sites.len() - 1;
    t.push(format!(
        "It moves with group {}: {} site{}, {} database{}, {} in all.",
        group.id,
        group.sites.len(),
        if group.sites.len() == 1 { "" } else { "s" },
        group.databases.len(),
        if group.databases.len() == 1 { "" } else { "s" },
        gb(group.bytes)
    ));
    if others > 0 {
        for l in &group.links {
            t.push(format!(
                "  sites {} share {} {} (a group never splits across waves).",
                l.sites.join(", "),
                l.via,
                l.name
            ));
        }
    }
    if let (Some(d), sql) = (&group.destination, &group.destination_sql) {
        t.push(match sql {
            Some(s) => format!("Destination: web cluster {d}, SQL server {s}."),
            None => format!("Destination: web cluster {d}."),
        });
    }
    t.push(match &group.reason {
        Reason::Drain {
            filer,
            filer_rank,
            cluster,
            cluster_rank,
        } => format!(
            "Why this wave: draining order. Its filer {filer} is number {filer_rank} to empty \
             and its source cluster {cluster} number {cluster_rank} (smallest first, so whole \
             filers and servers retire early); this wave had room when its turn came."
        ),
        Reason::Canary { wave } => format!(
            "Why this wave: it was among the first small groups in draining order, taken as a \
             canary in wave {wave}."
        ),
        Reason::Pinned { site, wave } => {
            format!("Why this wave: site {site} is pinned to wave {wave}.")
        }
        Reason::PinnedLast { site } => {
            format!("Why this wave: site {site} is pinned to the final wave(s).")
        }
        Reason::PinnedBeyondEnd { site, wave } => format!(
            "Why this wave: site {site} is pinned to wave {wave}, past the end of the plan, so it \
             goes in the last wave."
        ),
        Reason::Unplaced {
            constraint: Constraint::Window,
            pinned_by: None,
        } => "Why no wave: no wave window (setting `windows`) lies inside the maintenance window \
              of every site in this group; add a wave window that fits, or ask the customer."
            .to_string(),
        Reason::Unplaced {
            constraint,
            pinned_by,
        } => format!(
            "Why no wave: {}{}.",
            constraint.describe(),
            pinned_by
                .as_ref()
                .map(|s| format!(" (site {s} pinned it)"))
                .unwrap_or_default()
        ),
        Reason::Excluded { site: s } => format!(
            "Why no wave: site {s} is excluded{}, so its whole group stays in the old datacenter.",
            plan.settings
                .exclude_why
                .get(s)
                .map(|why| format!(" ({why})"))
                .unwrap_or_default()
        ),
    });
    if let Some(d) = &group.deferred {
        t.push(format!(
            "Deferred: wave {} could not take it first, because {}.",
            d.from_wave,
            d.constraint.describe()
        ));
    }
    if let Some(w) = w {
        t.push(format!(
            "Wave {}: {} sites, {} databases, {} of a {} budget, closed because {}.",
            w.number,
            w.sites,
            w.databases,
            gb(w.bytes),
            gb(w.budget_bytes),
            w.limited_by.describe()
        ));
    }
    Ok(Explanation {
        site: site.to_string(),
        wave,
        waves_total: total,
        group: group.clone(),
        text: t,
    })
}

/// Where a site is in one plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "wave")]
pub enum Place {
    Wave(u32),
    Unplaced,
    Excluded,
    /// Not in that plan's inventory.
    Absent,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Wave(n) => write!(f, "wave {n}"),
            Place::Unplaced => f.write_str("unplaced"),
            Place::Excluded => f.write_str("excluded"),
            Place::Absent => f.write_str("absent"),
        }
    }
}

/// One site whose place differs.
#[derive(Debug, Clone, Serialize)]
pub struct SiteMove {
    pub site: String,
    pub from: Place,
    pub to: Place,
    /// Why it is where it is in plan B.
    pub reason: Option<Reason>,
}

/// The answer to `plan diff A B`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanDiff {
    pub inventory_changed: bool,
    /// Settings whose values differ, by name.
    pub settings_changed: Vec<String>,
    pub waves_a: u32,
    pub waves_b: u32,
    /// Sites whose place differs, in plan B's order (then sites only in A).
    pub moved: Vec<SiteMove>,
}

fn places(p: &Plan) -> HashMap<&str, (Place, &Reason)> {
    let mut m = HashMap::new();
    for w in &p.waves {
        for g in &w.groups {
            for s in &g.sites {
                m.insert(s.as_str(), (Place::Wave(w.number), &g.reason));
            }
        }
    }
    for (list, place) in [
        (&p.unplaced, Place::Unplaced),
        (&p.excluded, Place::Excluded),
    ] {
        for g in list {
            for s in &g.sites {
                m.insert(s.as_str(), (place, &g.reason));
            }
        }
    }
    m
}

/// Compares two plans site by site.
pub fn diff(a: &Plan, b: &Plan) -> PlanDiff {
    let pa = places(a);
    let mut moved = Vec::new();
    let mut seen_b = std::collections::HashSet::new();
    for (wave, g) in b.all_groups() {
        let (to, reason) = (place_of(wave, g), &g.reason);
        for s in &g.sites {
            seen_b.insert(s.as_str());
            let from = pa.get(s.as_str()).map(|x| x.0).unwrap_or(Place::Absent);
            if from != to {
                moved.push(SiteMove {
                    site: s.clone(),
                    from,
                    to,
                    reason: Some(reason.clone()),
                });
            }
        }
    }
    for (_, g) in a.all_groups() {
        for s in &g.sites {
            if !seen_b.contains(s.as_str()) {
                moved.push(SiteMove {
                    site: s.clone(),
                    from: pa[s.as_str()].0,
                    to: Place::Absent,
                    reason: None,
                });
            }
        }
    }
    let sa = serde_json::to_value(&a.settings).unwrap_or_default();
    let sb = serde_json::to_value(&b.settings).unwrap_or_default();
    let mut settings_changed = Vec::new();
    if let (Some(x), Some(y)) = (sa.as_object(), sb.as_object()) {
        let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            if x.get(k) != y.get(k) {
                settings_changed.push(k.clone());
            }
        }
    }
    PlanDiff {
        inventory_changed: a.inventory.checksum != b.inventory.checksum,
        settings_changed,
        waves_a: a.summary.waves,
        waves_b: b.summary.waves,
        moved,
    }
}

fn place_of(wave: Option<u32>, g: &PlannedGroup) -> Place {
    match (wave, &g.reason) {
        (Some(n), _) => Place::Wave(n),
        (None, Reason::Excluded { .. }) => Place::Excluded,
        (None, _) => Place::Unplaced,
    }
}

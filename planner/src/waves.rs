//! The wave planner: places whole move groups into numbered waves under every constraint.
//!
//! Order of work:
//! 1. Groups with an excluded site are excluded; groups whose sites' maintenance windows admit
//!    no wave window are unplaced (constraint `window`).
//! 2. The rest are sorted in *draining order*: source filers from the smallest (by bytes) to the
//!    largest, within a filer its source clusters likewise, then group id. Waves take groups
//!    from the front, so whole filers, clusters and their SQL servers empty early and can be
//!    retired (the plan lists what each wave retires).
//! 3. Waves are filled one at a time. The first waves are canaries (`canary_ramp` site caps,
//!    small groups only), then full waves. A wave runs in the first wave window that suits the
//!    group at the head of the queue; it accepts a group only if: the group's windows admit the
//!    wave's window, the site and database caps hold, the byte budget (bandwidth × window ×
//!    efficiency) holds, and a destination cluster (and SQL server) has room. A refused group
//!    stays at the front of the queue for the next wave, remembering why it was deferred.
//!    A wave closes when a cap is reached exactly or after `lookahead` refusals in a row.
//! 4. Groups pinned to wave N are placed first when wave N opens; groups pinned `last` get
//!    their own final wave(s) after everything else.
//!
//! Everything is sequential over a deterministic order: same inventory + settings, same plan.
//!
//! Layout: [`outcome`] holds what the planner decides (waves, each group's placement and why,
//! the constraints that refused or closed), re-exported here; this file decides it.

use std::collections::BTreeMap;

use crate::destination::Bins;
use crate::groups::Groups;
use crate::inventory::Inventory;
use crate::model::Pin;
use crate::settings::Settings;
use crate::window::UtcWindow;

mod nights;
pub mod outcome;

use nights::{Nights, MAX_EMPTY_NIGHTS};

pub use outcome::{Constraint, GroupOutcome, SiteOverrides, WaveKind, WavePlan, WavesOutcome, Why};

struct Ctx<'a> {
    settings: &'a Settings,
    groups: &'a Groups,
    sites_n: Vec<u32>,
    dbs_n: Vec<u32>,
    site_bytes: Vec<u64>,
    db_bytes: Vec<u64>,
    mask: Vec<u64>,
    primary_cluster: Vec<u32>,
    /// Number of wave windows.
    nwin: usize,
    /// Byte budget per wave window (undated plans; dated ones ask `nights`).
    budgets: Vec<u64>,
    /// Dated plans (settings `campaign_start`): the current night.
    nights: Option<Nights>,
    dest: Bins,
    dest_sql: Bins,
    /// Last destination position used per source cluster (affinity).
    affinity: Vec<u32>,
    out: Vec<GroupOutcome>,
}

/// Plans waves. `overrides` carries the pins and exclusions in force.
pub fn plan_waves(
    inv: &Inventory,
    groups: &Groups,
    settings: &Settings,
    overrides: &SiteOverrides,
) -> Result<WavesOutcome, crate::error::SettingsError> {
    settings.validate()?;
    let ng = groups.len();
    let nwin = settings.windows.len();
    let all_mask: u64 = if nwin == 64 {
        u64::MAX
    } else {
        (1u64 << nwin) - 1
    };
    let nights = Nights::new(settings, inv, groups, all_mask)?;
    // Undated plans: every window is a fixed offset, the same UTC hours every day.
    let windows: Vec<UtcWindow> = if nights.is_some() {
        Vec::new()
    } else {
        settings
            .windows
            .iter()
            .map(|w| w.to_utc())
            .collect::<Result<_, _>>()?
    };
    let budgets: Vec<u64> = windows
        .iter()
        .map(|w| settings.wave_budget(w))
        .collect::<Result<_, _>>()?;

    let recs = &inv.sites.recs;
    let mut mask = vec![all_mask; ng];
    let mut site_bytes = vec![0u64; ng];
    for (s, r) in recs.iter().enumerate() {
        let g = groups.of_site[s] as usize;
        site_bytes[g] += r.bytes;
        if let Some(sw) = &r.window {
            for (k, w) in windows.iter().enumerate() {
                if !sw.contains(w) {
                    mask[g] &= !(1u64 << k);
                }
            }
        }
    }
    if let Some(n) = &nights {
        mask = n.season_masks(ng)?;
    }
    let db_bytes: Vec<u64> = (0..ng).map(|g| groups.bytes[g] - site_bytes[g]).collect();
    let sites_n: Vec<u32> = (0..ng).map(|g| groups.sites_of(g).len() as u32).collect();
    let dbs_n: Vec<u32> = (0..ng).map(|g| groups.dbs_of(g).len() as u32).collect();
    let primary_cluster: Vec<u32> = (0..ng)
        .map(|g| recs[groups.sites_of(g)[0] as usize].cluster)
        .collect();

    // Draining order: filers, then clusters, smallest first.
    let mut filer_bytes = vec![0u64; inv.filers.len()];
    let mut cluster_bytes = vec![0u64; inv.clusters.len()];
    for r in recs {
        filer_bytes[r.filer as usize] += r.bytes;
        cluster_bytes[r.cluster as usize] += r.bytes;
    }
    let rank = |bytes: &[u64]| {
        let mut idx: Vec<u32> = (0..bytes.len() as u32).collect();
        idx.sort_by_key(|&i| (bytes[i as usize], i));
        let mut r = vec![0u32; bytes.len()];
        for (pos, &i) in idx.iter().enumerate() {
            r[i as usize] = pos as u32;
        }
        r
    };
    let filer_rank = rank(&filer_bytes);
    let cluster_rank = rank(&cluster_bytes);

    let headroom = settings.headroom_percent;
    let dest = Bins::new(
        inv.clusters
            .iter()
            .enumerate()
            .filter(|(i, _)| inv.cluster_is_destination(*i))
            .map(|(i, c)| {
                (
                    i as u32,
                    c.disk_bytes,
                    c.site_slots,
                    c.used_bytes,
                    c.used_slots,
                )
            }),
        headroom,
    );
    let dest_sql = Bins::new(
        inv.sql_servers
            .iter()
            .enumerate()
            .filter(|(i, _)| inv.sql_is_destination(*i))
            .map(|(i, s)| (i as u32, s.disk_bytes, s.max_databases as u64, 0, 0)),
        headroom,
    );

    let blank = GroupOutcome {
        wave: 0,
        why: Why::Drain,
        dest_cluster: u32::MAX,
        dest_sql: u32::MAX,
        deferred_from: 0,
        deferred_by: None,
        unplaced: None,
        excluded_by: None,
    };
    let mut cx = Ctx {
        settings,
        groups,
        sites_n,
        dbs_n,
        site_bytes,
        db_bytes,
        mask,
        primary_cluster,
        nwin,
        budgets,
        nights,
        dest,
        dest_sql,
        affinity: vec![u32::MAX; inv.clusters.len()],
        out: vec![blank; ng],
    };

    // Exclusions and pins, per group (the latest pin of any member wins).
    for &s in &overrides.exclude {
        let g = groups.of_site[s as usize] as usize;
        if cx.out[g].excluded_by.is_none() {
            cx.out[g].excluded_by = Some(s);
        }
    }
    let mut group_pin: BTreeMap<u32, (Pin, u32)> = BTreeMap::new();
    for (&s, &p) in &overrides.pin {
        let g = groups.of_site[s as usize];
        let e = group_pin.entry(g).or_insert((p, s));
        if p > e.0 {
            *e = (p, s);
        }
    }

    let mut queue: Vec<u32> = Vec::with_capacity(ng);
    let mut last: Vec<u32> = Vec::new();
    let mut pinned: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for g in 0..ng as u32 {
        let o = &mut cx.out[g as usize];
        if o.excluded_by.is_some() {
            continue;
        }
        if cx.mask[g as usize] == 0 {
            o.unplaced = Some(Constraint::Window);
            continue;
        }
        match group_pin.get(&g) {
            Some(&(Pin::Last, s)) => {
                o.why = Why::PinnedLast { site: s };
                last.push(g);
            }
            Some(&(Pin::Wave(w), s)) => {
                o.why = Why::Pinned { site: s, wave: w };
                pinned.entry(w).or_default().push(g);
            }
            None => queue.push(g),
        }
    }
    // Draining order: (filer rank, cluster rank) packed in a u64, then group id.
    use rayon::prelude::*;
    let order = |list: &mut Vec<u32>| {
        let mut keyed: Vec<(u64, u32)> = list
            .par_iter()
            .map(|&g| {
                let r = &recs[groups.sites_of(g as usize)[0] as usize];
                let k = ((filer_rank[r.filer as usize] as u64) << 32)
                    | cluster_rank[r.cluster as usize] as u64;
                (k, g)
            })
            .collect();
        keyed.par_sort_unstable();
        *list = keyed.into_iter().map(|(_, g)| g).collect();
    };
    order(&mut queue);
    order(&mut last);

    let mut waves = Vec::new();
    cx.run(&mut waves, queue, pinned, false)?;
    cx.run(&mut waves, last, BTreeMap::new(), true)?;
    Ok(WavesOutcome {
        waves,
        groups: cx.out,
        filer_rank,
        cluster_rank,
    })
}

impl Ctx<'_> {
    /// Fills waves from `queue` (draining order) and `pinned` (wave → groups).
    fn run(
        &mut self,
        waves: &mut Vec<WavePlan>,
        queue: Vec<u32>,
        mut pinned: BTreeMap<u32, Vec<u32>>,
        final_phase: bool,
    ) -> Result<(), crate::error::SettingsError> {
        let ramp = if final_phase {
            Vec::new()
        } else {
            self.settings.canary_ramp.clone()
        };
        let mut step = 0usize;
        let mut cursor = 0usize;
        let mut deferred: Vec<u32> = Vec::new();
        loop {
            let number = waves.len() as u32 + 1;
            let queue_empty = cursor >= queue.len() && deferred.is_empty();
            let mut pins = pinned.remove(&number).unwrap_or_default();
            if queue_empty {
                if pins.is_empty() && pinned.is_empty() {
                    return Ok(());
                }
                // Pins beyond the end of the plan go in this, the last wave.
                for (w, gs) in std::mem::take(&mut pinned) {
                    for g in gs {
                        if let Why::Pinned { site, .. } = self.out[g as usize].why {
                            self.out[g as usize].why = Why::PinnedBeyondEnd { site, wave: w };
                        }
                        pins.push(g);
                    }
                }
            }
            let canary = step < ramp.len();
            let kind = if final_phase {
                WaveKind::Final
            } else if canary {
                WaveKind::Canary
            } else {
                WaveKind::Full
            };
            let cap = if canary {
                ramp[step].min(self.settings.max_sites_per_wave)
            } else {
                self.settings.max_sites_per_wave
            };
            // The wave's window: the first that suits the head group.
            let head = pins
                .first()
                .copied()
                .or_else(|| deferred.first().copied())
                .or_else(|| queue.get(cursor).copied());
            let Some(head) = head else { return Ok(()) };
            let Some(slot) = self.slot_for(head) else {
                // The head can never go anywhere: it is too large for any wave.
                let c = self.too_large_reason(head);
                self.out[head as usize].unplaced = Some(c);
                if pins.first() == Some(&head) {
                    pins.remove(0);
                    if !pins.is_empty() {
                        pinned.insert(number, pins);
                    }
                } else if deferred.first() == Some(&head) {
                    deferred.remove(0);
                } else {
                    cursor += 1;
                }
                continue;
            };
            let night = match &self.nights {
                Some(n) => Some((n.date()?, n.span(slot))),
                None => None,
            };
            let mut w = WavePlan {
                number,
                kind,
                window: slot,
                night,
                budget_bytes: self.budget(slot),
                site_cap: cap,
                sites: 0,
                databases: 0,
                bytes: 0,
                groups: Vec::new(),
                limited_by: Constraint::QueueEmpty,
            };
            let mut refused = [0u64; Constraint::ALL.len()];
            // Pinned groups first: they are placed here or nowhere.
            for &g in &pins {
                match self.try_place(&mut w, g, false) {
                    Ok(()) => {}
                    Err(c) => self.out[g as usize].unplaced = Some(c),
                }
            }
            let mut closed: Option<Constraint> = None;
            let mut misses = 0u32;
            let mut next_deferred = Vec::with_capacity(deferred.len());
            let mut scan =
                |cx: &mut Self, g: u32, closed: &mut Option<Constraint>, next: &mut Vec<u32>| {
                    if closed.is_some() {
                        next.push(g);
                        return;
                    }
                    match cx.try_place(&mut w, g, canary) {
                        Ok(()) => {
                            misses = 0;
                            if w.sites >= cap {
                                *closed = Some(Constraint::MaxSites);
                            } else if w.databases >= cx.settings.max_databases_per_wave {
                                *closed = Some(Constraint::MaxDatabases);
                            } else if w.bytes >= w.budget_bytes {
                                *closed = Some(Constraint::ByteBudget);
                            }
                        }
                        Err(c) => {
                            refused[c as usize] += 1;
                            let o = &mut cx.out[g as usize];
                            if o.deferred_by.is_none() {
                                o.deferred_from = number;
                                o.deferred_by = Some(c);
                            }
                            next.push(g);
                            if c != Constraint::Window {
                                misses += 1;
                                if misses >= cx.settings.lookahead {
                                    *closed = Some(Constraint::ALL[argmax(&refused)]);
                                }
                            }
                        }
                    }
                };
            for &g in &deferred {
                scan(self, g, &mut closed, &mut next_deferred);
            }
            while closed.is_none() && cursor < queue.len() {
                let g = queue[cursor];
                cursor += 1;
                scan(self, g, &mut closed, &mut next_deferred);
            }
            deferred = next_deferred;
            if w.groups.is_empty() && self.nights.is_some() && self.refused_tonight(head) {
                // Dated plan: the head's customers refuse every wave window tonight (and no
                // other group took the wave): try the next night.
                let n = self.nights.as_mut().expect("dated");
                n.skip_night(self.settings)?;
                if n.empty_nights >= MAX_EMPTY_NIGHTS {
                    n.empty_nights = 0;
                    self.out[head as usize].unplaced = Some(Constraint::Window);
                    if deferred.first() == Some(&head) {
                        deferred.remove(0);
                    }
                }
                continue;
            }
            if w.groups.is_empty() {
                if canary {
                    // No group suits this canary step: skip it.
                    step += 1;
                    continue;
                }
                // The head fits an empty wave's caps, so a destination refused it: it cannot
                // be placed now, and capacity only shrinks.
                let c = self.out[head as usize]
                    .deferred_by
                    .unwrap_or(Constraint::DestinationCluster);
                self.out[head as usize].unplaced = Some(c);
                if deferred.first() == Some(&head) {
                    deferred.remove(0);
                }
                continue;
            }
            w.limited_by = match closed {
                Some(c) => c,
                None if !pins.is_empty() && cursor >= queue.len() && deferred.is_empty() => {
                    Constraint::PinnedOnly
                }
                None => {
                    if refused.iter().any(|&r| r > 0) {
                        Constraint::ALL[argmax(&refused)]
                    } else {
                        Constraint::QueueEmpty
                    }
                }
            };
            if canary {
                step += 1;
            }
            waves.push(w);
            if let Some(n) = &mut self.nights {
                n.wave_planned(self.settings)?;
            }
        }
    }

    /// Wave windows group `g`'s customers admit (tonight, in a dated plan).
    fn mask_of(&mut self, g: usize) -> u64 {
        match &mut self.nights {
            Some(n) => n.mask(g as u32),
            None => self.mask[g],
        }
    }

    /// Byte budget of wave window `k` (tonight, in a dated plan).
    fn budget(&self, k: usize) -> u64 {
        match &self.nights {
            Some(n) => n.budget(k),
            None => self.budgets[k],
        }
    }

    /// Dated plans: true when `g` was refused tonight only because of its customers' windows.
    fn refused_tonight(&mut self, g: u32) -> bool {
        self.mask[g as usize] != 0 && self.mask_of(g as usize) == 0
    }

    /// First wave window that suits group `g` in an empty full wave. In a dated plan, when
    /// `g`'s customers refuse every window tonight, the first window its size fits: the wave
    /// opens for the others and `g` waits for a night that suits it.
    fn slot_for(&mut self, g: u32) -> Option<usize> {
        let g = g as usize;
        let mask = match self.mask_of(g) {
            0 if self.nights.is_some() => u64::MAX,
            m => m,
        };
        (0..self.nwin).find(|&k| {
            mask & (1 << k) != 0
                && self.sites_n[g] <= self.settings.max_sites_per_wave
                && self.dbs_n[g] <= self.settings.max_databases_per_wave
                && self.groups.bytes[g] <= self.budget(k)
        })
    }

    fn too_large_reason(&self, g: u32) -> Constraint {
        let g = g as usize;
        if self.sites_n[g] > self.settings.max_sites_per_wave {
            Constraint::MaxSites
        } else if self.dbs_n[g] > self.settings.max_databases_per_wave {
            Constraint::MaxDatabases
        } else {
            Constraint::ByteBudget
        }
    }

    fn try_place(&mut self, w: &mut WavePlan, g: u32, canary: bool) -> Result<(), Constraint> {
        let gi = g as usize;
        if self.mask_of(gi) & (1 << w.window) == 0 {
            return Err(Constraint::Window);
        }
        let bytes = self.groups.bytes[gi];
        if canary && bytes > self.settings.canary_max_bytes {
            return Err(Constraint::CanarySize);
        }
        if w.sites + self.sites_n[gi] > w.site_cap {
            return Err(Constraint::MaxSites);
        }
        if w.databases + self.dbs_n[gi] > self.settings.max_databases_per_wave {
            return Err(Constraint::MaxDatabases);
        }
        if w.bytes + bytes > w.budget_bytes {
            return Err(Constraint::ByteBudget);
        }
        let src = self.primary_cluster[gi] as usize;
        let hint = (self.affinity[src] != u32::MAX).then_some(self.affinity[src] as usize);
        let Some(c) = self
            .dest
            .find(self.site_bytes[gi], self.sites_n[gi] as u64, hint)
        else {
            return Err(Constraint::DestinationCluster);
        };
        let sql = if self.dbs_n[gi] > 0 {
            match self
                .dest_sql
                .find(self.db_bytes[gi], self.dbs_n[gi] as u64, None)
            {
                Some(s) => Some(s),
                None => return Err(Constraint::DestinationSql),
            }
        } else {
            None
        };
        self.dest
            .take(c, self.site_bytes[gi], self.sites_n[gi] as u64);
        self.affinity[src] = c as u32;
        let o = &mut self.out[gi];
        o.dest_cluster = self.dest.ids[c];
        if let Some(s) = sql {
            self.dest_sql
                .take(s, self.db_bytes[gi], self.dbs_n[gi] as u64);
            o.dest_sql = self.dest_sql.ids[s];
        }
        o.wave = w.number;
        if let (true, Why::Drain) = (canary, o.why) {
            o.why = Why::Canary(w.number);
        }
        w.sites += self.sites_n[gi];
        w.databases += self.dbs_n[gi];
        w.bytes += bytes;
        w.groups.push(g);
        Ok(())
    }
}

fn argmax(v: &[u64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

//! Dated waves (settings `campaign_start`): the night each wave runs, the wave windows' spans
//! and byte budgets that night, and which groups' customer windows admit them that night.
//!
//! Waves run `waves_per_night` a night, nights one after another from `campaign_start`. A
//! night on which no group can go (every remaining group's customers' windows refuse every wave
//! window that night, as can happen on a daylight-saving night) is skipped, not filled with an
//! empty wave; after [`MAX_EMPTY_NIGHTS`] skipped nights in a row the group at the head is
//! declared unplaced (`window`), so planning always ends.

use std::collections::HashMap;

use jiff::civil::Date;

use crate::calendar::{night, Span};
use crate::error::SettingsError;
use crate::groups::Groups;
use crate::inventory::Inventory;
use crate::settings::Settings;
use crate::window::Window;

/// Nights in a row without a wave before the head group is given up (`window`).
pub const MAX_EMPTY_NIGHTS: u32 = 400;

/// Reference nights for the up-front check, every `SAMPLE_DAYS` over a year from the first
/// night (both daylight-saving seasons): a group whose customers' windows admit no wave window
/// on any of them is unplaced at once (`window`) instead of being carried night after night.
const SAMPLE_DAYS: i64 = 14;

pub(super) struct Nights {
    start: Date,
    per_night: u32,
    /// Nights after `start` of the wave being filled.
    day: i64,
    /// Waves already planned on that night.
    tonight: u32,
    /// Nights skipped in a row (no group could go).
    pub empty_nights: u32,
    wave_windows: Vec<(String, Window)>,
    /// Customers' windows of the groups that have any.
    group_windows: HashMap<u32, Vec<Window>>,
    spans: Vec<Span>,
    budgets: Vec<u64>,
    cache: HashMap<u32, u64>,
    all_mask: u64,
}

impl Nights {
    /// Dated planning state, or `None` when the settings have no `campaign_start` (then no
    /// window may be in a named zone: such a site is refused, naming it).
    pub fn new(
        settings: &Settings,
        inv: &Inventory,
        groups: &Groups,
        all_mask: u64,
    ) -> Result<Option<Nights>, SettingsError> {
        let Some(start) = settings.campaign_start()? else {
            if let Some((s, w)) = inv.sites.window_text.iter().find(|(_, w)| w.is_named()) {
                let r = &inv.sites.recs[*s as usize];
                return Err(SettingsError::Invalid {
                    field: "campaign_start".into(),
                    message: format!(
                        "site {} (sites file line {}) has a maintenance window in the named \
                         zone {:?}, whose UTC hours change with daylight saving: set \
                         campaign_start = \"YYYY-MM-DD\" so that waves have dates",
                        r.id.get(&inv.sites.text),
                        r.line,
                        w.tz
                    ),
                });
            }
            return Ok(None);
        };
        let mut group_windows: HashMap<u32, Vec<Window>> = HashMap::new();
        for (s, w) in &inv.sites.window_text {
            let g = groups.of_site[*s as usize];
            group_windows.entry(g).or_default().push(w.clone());
        }
        let mut n = Nights {
            start,
            per_night: settings.waves_per_night.max(1),
            day: 0,
            tonight: 0,
            empty_nights: 0,
            wave_windows: settings
                .windows
                .iter()
                .map(|w| (w.name.clone(), w.window()))
                .collect(),
            group_windows,
            spans: Vec::new(),
            budgets: Vec::new(),
            cache: HashMap::new(),
            all_mask,
        };
        n.resolve(settings)?;
        Ok(Some(n))
    }

    /// The wave windows' spans and budgets on the current night.
    fn resolve(&mut self, settings: &Settings) -> Result<(), SettingsError> {
        let date = self.date()?;
        self.spans.clear();
        self.budgets.clear();
        for (name, w) in &self.wave_windows {
            let span = w.on(date).map_err(|e| SettingsError::Invalid {
                field: format!("windows[{name}].{}", e.part),
                message: e.problem.to_string(),
            })?;
            self.budgets
                .push(settings.budget_for_seconds(span.seconds())?);
            self.spans.push(span);
        }
        self.cache.clear();
        Ok(())
    }

    /// The local date of the current night.
    pub fn date(&self) -> Result<Date, SettingsError> {
        night(self.start, self.day).map_err(|message| SettingsError::Invalid {
            field: "campaign_start".into(),
            message,
        })
    }

    /// Wave window `k`'s span tonight.
    pub fn span(&self, k: usize) -> Span {
        self.spans[k]
    }

    /// Wave window `k`'s byte budget tonight.
    pub fn budget(&self, k: usize) -> u64 {
        self.budgets[k]
    }

    fn admitted(windows: &[Window], spans: &[Span]) -> u64 {
        let mut m = 0u64;
        for (k, span) in spans.iter().enumerate() {
            if windows.iter().all(|w| w.admits(span).unwrap_or(false)) {
                m |= 1 << k;
            }
        }
        m
    }

    /// Wave windows group `g`'s customers admit tonight (bit k = window k).
    pub fn mask(&mut self, g: u32) -> u64 {
        let Some(ws) = self.group_windows.get(&g) else {
            return self.all_mask;
        };
        if let Some(&m) = self.cache.get(&g) {
            return m;
        }
        let m = Self::admitted(ws, &self.spans);
        self.cache.insert(g, m);
        m
    }

    /// The up-front mask of every group: wave windows its customers admit on some night of
    /// the year (sampled every [`SAMPLE_DAYS`]). Only for the up-front check: a wave asks
    /// [`Nights::mask`] for its own night.
    pub fn season_masks(&self, ng: usize) -> Result<Vec<u64>, SettingsError> {
        let mut masks = vec![self.all_mask; ng];
        let mut samples: Vec<Vec<Span>> = Vec::new();
        for day in (0..366).step_by(SAMPLE_DAYS as usize) {
            let date = night(self.start, day).map_err(|message| SettingsError::Invalid {
                field: "campaign_start".into(),
                message,
            })?;
            let mut spans = Vec::with_capacity(self.wave_windows.len());
            for (name, w) in &self.wave_windows {
                spans.push(w.on(date).map_err(|e| SettingsError::Invalid {
                    field: format!("windows[{name}].{}", e.part),
                    message: e.problem.to_string(),
                })?);
            }
            samples.push(spans);
        }
        for (&g, ws) in &self.group_windows {
            masks[g as usize] = samples
                .iter()
                .fold(0, |m, spans| m | Self::admitted(ws, spans));
        }
        Ok(masks)
    }

    /// A wave was planned tonight.
    pub fn wave_planned(&mut self, settings: &Settings) -> Result<(), SettingsError> {
        self.empty_nights = 0;
        self.tonight += 1;
        if self.tonight >= self.per_night {
            self.next_night(settings)?;
        }
        Ok(())
    }

    /// No group could go tonight: move to the next night.
    pub fn skip_night(&mut self, settings: &Settings) -> Result<(), SettingsError> {
        self.empty_nights += 1;
        self.next_night(settings)
    }

    fn next_night(&mut self, settings: &Settings) -> Result<(), SettingsError> {
        self.day += 1;
        self.tonight = 0;
        self.resolve(settings)
    }
}

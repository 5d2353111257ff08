//! The whole job end to end: load → group → waves → plan file. This is what `migrator plan`
//! runs; each stage is timed so that an operator (and the benchmark) sees where time goes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::error::{InventoryError, SettingsError};
use crate::groups::{self, Groups};
use crate::inventory::Inventory;
use crate::load::{load, LoadOptions};
use crate::model::Pin;
use crate::settings::Settings;
use crate::waves::{plan_waves, SiteOverrides, WavesOutcome};
use crate::write_plan::{Ctx, PlanOverview};

/// Why planning failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanRunError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("setting `{setting}` names sites that are not in the inventory: {}", .sites.join(", "))]
    UnknownSites { setting: String, sites: Vec<String> },
    #[error("cannot write plan file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Wall time of each stage.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub load: Duration,
    pub group: Duration,
    pub waves: Duration,
    pub write: Duration,
}

/// A computed plan, ready to be written.
pub struct Planned {
    pub inventory: Inventory,
    pub groups: Groups,
    pub settings: Settings,
    pub outcome: WavesOutcome,
    pub overview: PlanOverview,
    pub timings: Timings,
}

/// Loads the inventory in `dir` and plans it with `settings`.
pub fn plan_dir(
    dir: &Path,
    settings: &Settings,
    opts: &LoadOptions,
) -> Result<Planned, PlanRunError> {
    settings.validate()?;
    let t0 = Instant::now();
    let inventory = load(dir, opts)?;
    let t1 = Instant::now();
    let mut planned = plan_loaded(inventory, settings)?;
    planned.timings.load = t1 - t0;
    Ok(planned)
}

/// Plans an already loaded inventory.
pub fn plan_loaded(inventory: Inventory, settings: &Settings) -> Result<Planned, PlanRunError> {
    settings.validate()?;
    let overrides = overrides(&inventory, settings)?;
    let t1 = Instant::now();
    let groups = groups::build(&inventory);
    let t2 = Instant::now();
    let outcome = plan_waves(&inventory, &groups, settings, &overrides)?;
    let t3 = Instant::now();
    let overview = Ctx {
        inv: &inventory,
        groups: &groups,
        settings,
        out: &outcome,
    }
    .overview();
    Ok(Planned {
        inventory,
        groups,
        settings: settings.clone(),
        outcome,
        overview,
        timings: Timings {
            load: Duration::ZERO,
            group: t2 - t1,
            waves: t3 - t2,
            write: Duration::ZERO,
        },
    })
}

impl Planned {
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            inv: &self.inventory,
            groups: &self.groups,
            settings: &self.settings,
            out: &self.outcome,
        }
    }

    /// Writes the plan file to `w`.
    pub fn write_to(&self, w: impl std::io::Write + Send) -> std::io::Result<()> {
        self.ctx().write(&self.overview, w)
    }

    /// Writes the plan file to `path` (through a temporary file renamed into place).
    pub fn write_file(&mut self, path: &Path) -> Result<(), PlanRunError> {
        let t = Instant::now();
        let err = |source| PlanRunError::Write {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        let f = std::fs::File::create(&tmp).map_err(err)?;
        self.write_to(std::io::BufWriter::with_capacity(1 << 20, f))
            .map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)?;
        self.timings.write = t.elapsed();
        Ok(())
    }

    /// The plan as bytes (tests, small inventories).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = self.write_to(&mut v);
        v
    }
}

/// Merges the inventory's pins and exclusions with the settings' (settings win).
fn overrides(inv: &Inventory, s: &Settings) -> Result<SiteOverrides, PlanRunError> {
    let mut wanted: HashMap<&str, ()> = HashMap::new();
    for id in s
        .pin_last
        .iter()
        .chain(s.pin_wave.keys())
        .chain(s.exclude.iter())
    {
        wanted.insert(id.as_str(), ());
    }
    let found: BTreeMap<&str, u32> = if wanted.is_empty() {
        BTreeMap::new()
    } else {
        (0..inv.site_count())
            .into_par_iter()
            .filter_map(|i| {
                let id = inv.site_id(i);
                wanted.contains_key(id).then_some((id, i as u32))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .collect()
    };
    let resolve = |setting: &str, ids: &mut dyn Iterator<Item = &String>| {
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for id in ids {
            match found.get(id.as_str()) {
                Some(&i) => out.push(i),
                None => missing.push(id.clone()),
            }
        }
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(PlanRunError::UnknownSites {
                setting: setting.into(),
                sites: missing,
            })
        }
    };
    let last = resolve("pin_last", &mut s.pin_last.iter())?;
    let wave = resolve("pin_wave", &mut s.pin_wave.keys())?;
    let excl = resolve("exclude", &mut s.exclude.iter())?;

    let mut pin = BTreeMap::new();
    let mut exclude = Vec::new();
    for (i, r) in inv.sites.recs.iter().enumerate() {
        if let Some(p) = r.pin {
            pin.insert(i as u32, p);
        }
        if r.excluded {
            exclude.push(i as u32);
        }
    }
    for (i, w) in wave.iter().zip(s.pin_wave.values()) {
        pin.insert(*i, Pin::Wave(*w));
    }
    for i in last {
        pin.insert(i, Pin::Last);
    }
    exclude.extend(excl);
    exclude.sort_unstable();
    exclude.dedup();
    Ok(SiteOverrides { pin, exclude })
}

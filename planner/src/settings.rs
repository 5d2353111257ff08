//! Planner settings: every knob an operator may turn, with defaults, a TOML file format and
//! validation naming the setting at fault. The plan file records the settings it was made with.
//!
//! ```toml
//! bandwidth = "10Gbit/s"        # tunnel bandwidth between the datacenters
//! efficiency = 0.7              # share of it a wave really gets
//! max_sites_per_wave = 20000
//! max_databases_per_wave = 13000
//! headroom_percent = 15         # keep this share of every destination free
//! canary_ramp = [10, 100, 1000] # sizes of the first waves, then full waves
//! pin_last = ["big-customer-1", "big-customer-2"]   # these sites go in the final wave(s)
//! exclude = ["do-not-move"]                         # these sites (and their groups) stay
//! [pin_wave]
//! "early-bird" = 4                                   # this site goes in wave 4
//! campaign_start = "2027-03-22" # optional: waves get dates, one night after another
//! waves_per_night = 1
//! [[windows]]                                        # the windows waves may run in
//! name = "night"
//! start = "22:00"
//! end = "06:00"
//! tz = "Europe/Paris"                                # or a fixed offset: "+01:00", "UTC"
//! ```
//!
//! Windows in named zones (the waves' or customers') need `campaign_start`: their UTC hours
//! change with daylight saving, so each wave is resolved on its own night
//! ([`crate::calendar`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::SettingsError;
use crate::window::{UtcWindow, Window};

/// A window waves may run in. Each wave runs in one of them; a site whose customer declared a
/// maintenance window only goes in a wave whose window lies inside the customer's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaveWindow {
    pub name: String,
    pub start: String,
    pub end: String,
    pub tz: String,
}

impl WaveWindow {
    /// The window as a [`Window`] (local times and zone).
    pub fn window(&self) -> Window {
        Window::new(&self.start, &self.end, &self.tz)
    }

    pub fn to_utc(&self) -> Result<UtcWindow, SettingsError> {
        self.window().to_utc().map_err(|e| SettingsError::Invalid {
            field: format!("windows[{}].{}", self.name, e.part),
            message: e.problem.to_string(),
        })
    }
}

/// Everything the planner needs besides the inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Tunnel bandwidth, e.g. `"10Gbit/s"`, `"800Mbit/s"`, `"1.2GB/s"`.
    pub bandwidth: String,
    /// Share of the bandwidth a wave gets (protocol overhead, retries, contention), 0 < e <= 1.
    pub efficiency: f64,
    pub max_sites_per_wave: u32,
    pub max_databases_per_wave: u32,
    /// Percentage of every destination's disk, site slots and database slots kept free.
    pub headroom_percent: f64,
    /// Site caps of the first waves (canaries); later waves are full waves.
    pub canary_ramp: Vec<u32>,
    /// A group larger than this never goes in a canary wave.
    pub canary_max_bytes: u64,
    /// Windows waves may run in (the first that fits is used).
    pub windows: Vec<WaveWindow>,
    /// How many groups a wave may skip in a row (too big, wrong window) before it is closed.
    pub lookahead: u32,
    /// Site ids to put in the final wave(s), after everything else.
    pub pin_last: Vec<String>,
    /// Site id → wave number.
    pub pin_wave: BTreeMap<String, u32>,
    /// Site ids not to move; their whole group stays.
    pub exclude: Vec<String>,
    /// Local date (`YYYY-MM-DD`) of the first wave's night. When set, waves are dated:
    /// `waves_per_night` waves a night, nights one after another, every window resolved on
    /// its night in its own zone (daylight saving included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_start: Option<String>,
    /// Waves run per night when `campaign_start` is set.
    #[serde(skip_serializing_if = "is_one")]
    pub waves_per_night: u32,
    /// Why an excluded site is excluded, when a tool said (`migrator plan --exclude-from
    /// preflight.jsonl`: its verdict and reasons); `plan explain` repeats it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exclude_why: BTreeMap<String, String>,
}

fn is_one(v: &u32) -> bool {
    *v == 1
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bandwidth: "10Gbit/s".into(),
            efficiency: 0.7,
            max_sites_per_wave: 20_000,
            max_databases_per_wave: 13_000,
            headroom_percent: 15.0,
            canary_ramp: vec![10, 100, 1000],
            canary_max_bytes: 2 << 30,
            windows: vec![
                WaveWindow {
                    name: "night".into(),
                    start: "22:00".into(),
                    end: "06:00".into(),
                    tz: "UTC".into(),
                },
                WaveWindow {
                    name: "late-night".into(),
                    start: "00:00".into(),
                    end: "04:00".into(),
                    tz: "UTC".into(),
                },
            ],
            lookahead: 50_000,
            pin_last: Vec::new(),
            pin_wave: BTreeMap::new(),
            exclude: Vec::new(),
            campaign_start: None,
            waves_per_night: 1,
            exclude_why: BTreeMap::new(),
        }
    }
}

/// Why a bandwidth does not parse (the input is quoted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BandwidthError {
    #[error("expected a rate like 10Gbit/s or 1.2GB/s, got {0:?}")]
    NotARate(String),
    #[error("unknown unit {unit:?} in {input:?} (use bit/s or B/s units)")]
    UnknownUnit { unit: String, input: String },
    #[error("bandwidth must be > 0, got {0:?}")]
    NotPositive(String),
}

/// Parses `"10Gbit/s"`, `"800 Mbit/s"`, `"1.5GB/s"`, `"125000000"` (bytes/s) into bytes per second.
pub fn parse_bandwidth(s: &str) -> Result<f64, BandwidthError> {
    let t = s.trim().replace(' ', "");
    let t = t
        .strip_suffix("/s")
        .or_else(|| t.strip_suffix("ps"))
        .unwrap_or(&t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| BandwidthError::NotARate(s.to_string()))?;
    let factor = match unit {
        "" | "B" => 1.0,
        "bit" | "b" => 1.0 / 8.0,
        "kbit" | "Kbit" | "kb" => 1e3 / 8.0,
        "Mbit" | "Mb" => 1e6 / 8.0,
        "Gbit" | "Gb" => 1e9 / 8.0,
        "Tbit" | "Tb" => 1e12 / 8.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "MiB" => (1u64 << 20) as f64,
        "GiB" => (1u64 << 30) as f64,
        _ => {
            return Err(BandwidthError::UnknownUnit {
                unit: unit.to_string(),
                input: s.to_string(),
            })
        }
    };
    let v = n * factor;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(BandwidthError::NotPositive(s.to_string()))
    }
}

impl Settings {
    /// Reads a TOML settings file; missing keys keep their defaults.
    pub fn from_toml_file(path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| SettingsError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Bytes per second the tunnel carries.
    pub fn bandwidth_bytes_per_sec(&self) -> Result<f64, SettingsError> {
        parse_bandwidth(&self.bandwidth).map_err(|e| SettingsError::Invalid {
            field: "bandwidth".into(),
            message: e.to_string(),
        })
    }

    /// Checks every setting; the error names the one at fault.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let bad = |field: &str, message: String| {
            Err(SettingsError::Invalid {
                field: field.into(),
                message,
            })
        };
        self.bandwidth_bytes_per_sec()?;
        if !(self.efficiency > 0.0 && self.efficiency <= 1.0) {
            return bad(
                "efficiency",
                format!("must be in (0, 1], got {}", self.efficiency),
            );
        }
        if self.max_sites_per_wave == 0 {
            return bad("max_sites_per_wave", "must be at least 1".into());
        }
        if self.max_databases_per_wave == 0 {
            return bad("max_databases_per_wave", "must be at least 1".into());
        }
        if !(self.headroom_percent >= 0.0 && self.headroom_percent < 100.0) {
            return bad(
                "headroom_percent",
                format!("must be in [0, 100), got {}", self.headroom_percent),
            );
        }
        if let Some(c) = self.canary_ramp.iter().find(|&&c| c == 0) {
            return bad(
                "canary_ramp",
                format!("a canary wave of {c} sites is empty"),
            );
        }
        if self.windows.is_empty() {
            return bad("windows", "at least one wave window is needed".into());
        }
        if self.windows.len() > 64 {
            return bad("windows", "at most 64 wave windows".into());
        }
        let dated = self.campaign_start()?.is_some();
        if !(1..=100).contains(&self.waves_per_night) {
            return bad(
                "waves_per_night",
                format!("must be in 1..=100, got {}", self.waves_per_night),
            );
        }
        for w in &self.windows {
            if dated {
                w.window().zone().map_err(|e| SettingsError::Invalid {
                    field: format!("windows[{}].{}", w.name, e.part),
                    message: e.problem.to_string(),
                })?;
                w.window()
                    .local_minutes()
                    .map_err(|e| SettingsError::Invalid {
                        field: format!("windows[{}].{}", w.name, e.part),
                        message: e.problem.to_string(),
                    })?;
                continue;
            }
            w.to_utc()?;
        }
        if self.lookahead == 0 {
            return bad("lookahead", "must be at least 1".into());
        }
        if let Some((site, _)) = self.pin_wave.iter().find(|(_, &w)| w == 0) {
            return bad("pin_wave", format!("{site:?}: waves are numbered from 1"));
        }
        Ok(())
    }

    /// Byte budget of a wave in window `w`: bandwidth × window length × efficiency.
    pub fn wave_budget(&self, w: &UtcWindow) -> Result<u64, SettingsError> {
        self.budget_for_seconds(w.seconds())
    }

    /// Bytes a wave may move in a window of `seconds`.
    pub fn budget_for_seconds(&self, seconds: u64) -> Result<u64, SettingsError> {
        Ok((self.bandwidth_bytes_per_sec()? * seconds as f64 * self.efficiency) as u64)
    }

    /// The first night of a dated campaign, if `campaign_start` is set.
    pub fn campaign_start(&self) -> Result<Option<jiff::civil::Date>, SettingsError> {
        self.campaign_start
            .as_deref()
            .map(crate::calendar::parse_date)
            .transpose()
            .map_err(|message| SettingsError::Invalid {
                field: "campaign_start".into(),
                message,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_units() {
        assert_eq!(parse_bandwidth("10Gbit/s").unwrap(), 1.25e9);
        assert_eq!(parse_bandwidth("800 Mbit/s").unwrap(), 1e8);
        assert_eq!(parse_bandwidth("1.5GB/s").unwrap(), 1.5e9);
        assert_eq!(
            parse_bandwidth("fast").unwrap_err().to_string(),
            "expected a rate like 10Gbit/s or 1.2GB/s, got \"fast\""
        );
        assert_eq!(
            parse_bandwidth("10 furlongs").unwrap_err().to_string(),
            "unknown unit \"furlongs\" in \"10 furlongs\" (use bit/s or B/s units)"
        );
        assert!(matches!(
            parse_bandwidth("0Gbit/s"),
            Err(BandwidthError::NotPositive(_))
        ));
    }

    #[test]
    fn toml_partial_and_unknown_keys() {
        let s: Settings = toml::from_str("efficiency = 0.5\npin_last = [\"a\"]").unwrap();
        assert_eq!(s.efficiency, 0.5);
        assert_eq!(s.max_sites_per_wave, 20_000);
        assert!(toml::from_str::<Settings>("efficency = 0.5").is_err());
        let bad = Settings {
            efficiency: 1.5,
            ..Settings::default()
        };
        match bad.validate() {
            Err(SettingsError::Invalid { field, .. }) => assert_eq!(field, "efficiency"),
            other => panic!("expected an invalid efficiency, got {other:?}"),
        }
    }
}

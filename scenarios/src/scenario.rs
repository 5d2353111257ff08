//! Data-driven scenarios: `scenarios/<name>/scenario.toml` (lab size, traffic) and
//! `expect.toml` (allowed failures, lost writes). `run` brings a lab up, runs the traffic in
//! the client namespace, checks the expectations and tears the lab down (also on failure).

use crate::check::{self, CheckReport, Expect};
use crate::error::{LabError, Result};
use crate::faults::{self, Fault};
use crate::lab::{LabConfig, LabGuard};
use crate::process::{in_ns, run as run_cmd};
use crate::sites::SiteSpec;
use crate::traffic::TrafficSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `scenario.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub description: String,
    pub lab: LabSection,
    #[serde(default)]
    pub traffic: TrafficSpec,
    /// Faults injected while the traffic runs.
    #[serde(default)]
    pub faults: Vec<Fault>,
}

/// `[lab]` of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabSection {
    pub sites: usize,
    #[serde(default = "yes")]
    pub tunnel: bool,
    #[serde(default)]
    pub site: SiteSpec,
}

fn yes() -> bool {
    true
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).map_err(LabError::io("reading scenario file", path))?;
    toml::from_str(&text).map_err(|e| LabError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Loads `<dir>/scenario.toml` and `<dir>/expect.toml`.
pub fn load(dir: &Path) -> Result<(Scenario, Expect)> {
    let s: Scenario = parse(&dir.join("scenario.toml"))?;
    if s.lab.sites == 0 {
        return Err(LabError::Config {
            path: dir.join("scenario.toml"),
            message: "lab.sites must be at least 1".into(),
        });
    }
    Ok((s, parse(&dir.join("expect.toml"))?))
}

/// Outcome of one scenario run.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub lab_up_secs: f64,
    pub check: CheckReport,
    pub violations: Vec<String>,
    pub log: PathBuf,
    /// What the fault injector did, with times.
    pub faults: Vec<String>,
}

impl ScenarioReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs scenario `dir` with a lab under `state_root`. `exe` is the `scenarios` binary, run
/// inside the client namespace as the traffic generator.
pub fn run(dir: &Path, state_root: &Path, exe: &Path) -> Result<ScenarioReport> {
    let (sc, expect) = load(dir)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    let lab_name = format!("scn-{name}-{}", std::process::id());
    let mut cfg = LabConfig::new(&lab_name, state_root, sc.lab.sites);
    cfg.spec = sc.lab.site.clone();
    cfg.tunnel = sc.lab.tunnel;
    let t0 = Instant::now();
    let guard = LabGuard::up(&cfg)?;
    let lab_up_secs = t0.elapsed().as_secs_f64();
    // The log outlives the lab: it is the evidence.
    let log = state_root.join(format!("{lab_name}-traffic.jsonl"));
    let spec = serde_json::to_string(&sc.traffic).map_err(|source| LabError::State {
        path: log.clone(),
        source,
    })?;
    let mut cmd = in_ns(None, &guard.state.client.netns, &exe.to_string_lossy());
    cmd.args([
        "traffic",
        "--state-dir",
        &guard.state.state_dir.to_string_lossy(),
        "--out",
        &log.to_string_lossy(),
        "--spec",
        &spec,
    ]);
    let started = Instant::now();
    let state = &guard.state;
    let fault_list = &sc.faults;
    let (traffic, fault_log) = std::thread::scope(|scope| {
        let injector = scope.spawn(move || faults::run(state, fault_list, started));
        let traffic = run_cmd(&mut cmd);
        (traffic, injector.join().unwrap_or_default())
    });
    traffic?;
    let records = check::read_log(&log)?;
    let report = check::check(&guard.state, &records)?;
    let mut violations = report.violations(&expect);
    violations.extend(fault_log.iter().filter(|l| l.contains("FAILED")).cloned());
    drop(guard);
    Ok(ScenarioReport {
        name,
        lab_up_secs,
        check: report,
        violations,
        log,
        faults: fault_log,
    })
}

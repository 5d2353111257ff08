//! Data-driven scenarios: `scenarios/<name>/scenario.toml` (lab size, traffic) and
//! `expect.toml` (allowed failures, lost writes). `run` brings a lab up, runs the traffic in
//! the client namespace, checks the expectations and tears the lab down (also on failure).

use crate::check::{self, CheckReport, Expect};
use crate::error::{LabError, Result};
use crate::faults::{self, Fault};
use crate::lab::{LabConfig, LabGuard};
use crate::migration::{MigrationReport, MigrationSection, Migrator};
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
    /// A migration run with the real `migrator` while the traffic runs.
    #[serde(default)]
    pub migration: Option<MigrationSection>,
}

/// `[lab]` of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabSection {
    pub sites: usize,
    #[serde(default = "yes")]
    pub tunnel: bool,
    /// The fleet topology (`lab up --fleet`): Galera control store, two proxies.
    #[serde(default)]
    pub fleet: bool,
    /// Sites get their artifacts (issue 20; `lab up --artifacts`): HTTPS with a lab CA, web
    /// rules, PHP pools, a cron job per site and a cron daemon per DC.
    #[serde(default)]
    pub artifacts: bool,
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
    /// The migration's figures and findings, when the scenario has one.
    pub migration: Option<MigrationReport>,
}

/// Overrides for a run (tests use fewer sites than the scenario file).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Lab size, and the wave's size when it covered the whole lab.
    pub sites: Option<usize>,
}

impl ScenarioReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs scenario `dir` with a lab under `state_root`. `exe` is the `scenarios` binary, run
/// inside the client namespace as the traffic generator.
pub fn run(dir: &Path, state_root: &Path, exe: &Path) -> Result<ScenarioReport> {
    run_with(dir, state_root, exe, &RunOptions::default())
}

/// [`run`] with overrides.
pub fn run_with(
    dir: &Path,
    state_root: &Path,
    exe: &Path,
    opts: &RunOptions,
) -> Result<ScenarioReport> {
    let (mut sc, expect) = load(dir)?;
    if let Some(n) = opts.sites {
        if let Some(m) = sc.migration.as_mut() {
            if m.sites >= n || m.sites == sc.lab.sites {
                m.sites = 0;
            }
        }
        sc.lab.sites = n;
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    let lab_name = format!("scn-{name}-{}", std::process::id());
    let mut cfg = LabConfig::new(&lab_name, state_root, sc.lab.sites);
    cfg.spec = sc.lab.site.clone();
    cfg.tunnel = sc.lab.tunnel;
    cfg.fleet = sc.lab.fleet;
    cfg.artifacts = sc.lab.artifacts;
    let t0 = Instant::now();
    let mut guard = LabGuard::up(&cfg)?;
    let lab_up_secs = t0.elapsed().as_secs_f64();
    // The log outlives the lab: it is the evidence.
    let log = state_root.join(format!("{lab_name}-traffic.jsonl"));
    // The migrator's files (spec, plan, journal, log) outlive the lab too.
    let mig_dir = state_root.join(format!("{lab_name}-migration"));
    let migrator = match &sc.migration {
        Some(m) => Some(Migrator::setup(&guard.state, &mig_dir, m.sites)?),
        None => None,
    };
    let stop = mig_dir.join("traffic.stop");
    if migrator.is_some() {
        sc.traffic.stop_file = Some(stop.clone());
    }
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
    let section = sc.migration.clone();
    let (traffic, fault_run, mig) = std::thread::scope(|scope| {
        let injector = scope.spawn(move || faults::run(state, fault_list, started));
        let driver = scope.spawn(|| {
            let (Some(m), Some(sec)) = (&migrator, &section) else {
                return None;
            };
            std::thread::sleep(std::time::Duration::from_secs_f64(sec.warmup_secs));
            let out = crate::migration::run(state, m, sec);
            std::thread::sleep(std::time::Duration::from_secs_f64(sec.tail_secs));
            let _ = std::fs::write(&stop, b"stop\n");
            Some(out)
        });
        let traffic = run_cmd(&mut cmd);
        // The traffic may have hit its own bounds first: the driver still finishes.
        let mig = driver.join().ok().flatten();
        (traffic, injector.join().unwrap_or_default(), mig)
    });
    traffic?;
    let fault_log = fault_run.log;
    let records = check::read_log(&log)?;
    let mut violations = Vec::new();
    let mut mig_report = None;
    let windows = match (&migrator, &section, mig) {
        (Some(m), Some(sec), Some((mut r, fault_windows))) => {
            let mut st = guard.state.clone();
            match crate::serving::refresh(&mut st) {
                Ok(sides) => crate::migration::finish(&st, m, sec, &sides, &mut r),
                Err(e) => r.violations.push(format!("reading the serving sides: {e}")),
            }
            guard.state = st;
            violations.extend(r.violations.iter().cloned());
            let w = crate::migration::windows(&guard.state, m, fault_windows);
            mig_report = Some(r);
            w
        }
        _ => check::Windows::default(),
    };
    // Outages of injected faults (`proxy_kill`): failures inside them are counted apart.
    let mut windows = windows;
    windows.fault.extend(fault_run.windows);
    let report = check::check_windows(&guard.state, &records, &windows)?;
    violations.splice(0..0, report.violations(&expect));
    if let (Some(max), Some(r)) = (expect.max_freeze_p99_ms, &mig_report) {
        if let Some(p99) = r.freeze_p99_ms.filter(|p| *p > max) {
            violations.push(format!("freeze p99 {p99:.0} ms > {max:.0} ms allowed"));
        }
    }
    violations.extend(fault_log.iter().filter(|l| l.contains("FAILED")).cloned());
    drop(guard);
    // The per-run DB URL files (0600) die with the lab.
    let _ = std::fs::remove_dir_all(mig_dir.join("secrets"));
    Ok(ScenarioReport {
        name,
        lab_up_secs,
        check: report,
        violations,
        log,
        faults: fault_log,
        migration: mig_report,
    })
}

//! The migration a scenario runs while its traffic flows (`[migration]` in `scenario.toml`),
//! driving the real `migrator` binary inside the client namespace with exactly the commands of
//! `runbooks/cutover.md`: `migrator site specs-from-lab`, `migrator plan`, `migrator wave run`,
//! `migrator rollback`. Kinds:
//! - `wave`: one wave of the plan, every site to `live` on new-dc;
//! - `rollback`: the wave, then one site rolled back while writes continue;
//! - `crash_resume`: the wave, its process SIGKILLed (by PID) as soon as each listed phase is
//!   seen in the journal, then resumed with the same command; a last run finishes it;
//! - `tunnel_flap`: the wave, with the tunnel taken down (old-dc side, `tunnel` crate) mid-wave
//!   and brought back up later;
//! - `proxy_restart`: the wave, with old-dc's `sql-proxy` SIGKILLed (the current child's PID
//!   from its supervisor, which restarts it) once each listed fraction of the wave's sites has
//!   switched; afterwards every switched database must still be routed `new` by the proxy;
//! - `wave_bundles`: the wave with `--bundle-store`, then the consistency-point bundles checked
//!   against the lab ([`bundles`]);
//! - `wave_artifacts`, `rollback_artifacts`: `wave` and `rollback` in a lab with artifacts
//!   (`[lab] artifacts = true`), the sites' cron jobs checked through them ([`cron_check`]).
//!
//! Afterwards every site's placement is read from the systems ([`crate::serving`]): each site
//! must be on exactly one side and unfrozen, with the journal state the kind expects. Freeze
//! windows come from the journal so the check counts failures inside them apart.

use crate::check::Windows;
use crate::error::{LabError, Result};
use crate::process::{in_ns, run as run_cmd};
use crate::serving::SiteSides;
use crate::state::{LabState, Side};
use crate::traffic::unix_ms;
use migrator::journal::{JournalStore, SiteState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

mod bundles;
mod cron_check;
pub mod fleet;
mod kinds;

/// What a scenario migrates.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Wave,
    Rollback,
    CrashResume,
    TunnelFlap,
    ProxyRestart,
    /// The wave capturing each site's bundle (`--bundle-store`), then the bundles checked.
    WaveBundles,
    /// The wave in a lab with artifacts (`[lab] artifacts = true`): the sites' cron jobs
    /// checked through it ([`cron_check`]).
    WaveArtifacts,
    /// `rollback` in a lab with artifacts: the cron jobs checked through the switch and the
    /// rollback.
    RollbackArtifacts,
    /// Fleet lab only (`fleet.rs`): workers, one SIGKILLed mid-wave.
    FleetWave,
    /// Fleet lab only: a Galera node SIGKILLed mid-wave.
    StoreNodeLoss,
    /// Fleet lab only: the second proxy cut off from the store during a switch.
    ProxyPartition,
}

impl Kind {
    /// A wave followed by the rollback of `rollback_site`.
    pub fn rolls_back(self) -> bool {
        matches!(self, Kind::Rollback | Kind::RollbackArtifacts)
    }
}

/// `[migration]` of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MigrationSection {
    pub kind: Kind,
    /// Sites in the wave (the plan's first wave; 0 = every site of the lab).
    #[serde(default)]
    pub sites: usize,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Traffic before the migration starts.
    #[serde(default = "default_warmup")]
    pub warmup_secs: f64,
    /// Traffic after it ended.
    #[serde(default = "default_warmup")]
    pub tail_secs: f64,
    /// `--gate-wait`: how long a site waits for an unhealthy tunnel.
    #[serde(default = "default_gate_wait")]
    pub gate_wait_secs: u64,
    /// `rollback`: the site rolled back, and how long it serves from new-dc first.
    #[serde(default)]
    pub rollback_site: Option<String>,
    #[serde(default = "default_warmup")]
    pub rollback_after_secs: f64,
    /// `rollback`: roll back `rollback_site` with every site sharing its database
    /// (`migrator rollback --with-group`); all of them must end on old-dc.
    #[serde(default)]
    pub rollback_with_group: bool,
    /// `crash_resume`: the phases (journal names) at which the migrator is killed, in turn.
    #[serde(default)]
    pub kill_phases: Vec<String>,
    /// `tunnel_flap`: seconds after the wave starts, and how long the tunnel stays down.
    #[serde(default = "default_warmup")]
    pub tunnel_down_after_secs: f64,
    #[serde(default = "default_warmup")]
    pub tunnel_down_for_secs: f64,
    /// `proxy_restart`: one kill of the proxy each, once this fraction of the wave's sites has
    /// finished `switch` (0 = right after the wave starts), in order.
    #[serde(default)]
    pub proxy_kill_after_switched: Vec<f64>,
    /// `proxy_restart`: at least this long between the proxy answering again and the next kill.
    #[serde(default = "default_kill_gap")]
    pub proxy_kill_gap_secs: f64,
    /// Fleet kinds: `migrator worker` processes sharing the wave.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Fleet kinds: `--claim-lease` of each worker (seconds).
    #[serde(default = "default_claim_lease")]
    pub claim_lease_secs: u64,
    /// `fleet_wave`: worker 1 is killed once a site of its group is inside this phase.
    #[serde(default = "default_worker_kill_phase")]
    pub worker_kill_phase: String,
    /// `store_node_loss`: the Galera node killed (1-based), once this fraction of the sites
    /// switched.
    #[serde(default = "default_store_kill_node")]
    pub store_kill_node: usize,
    #[serde(default = "default_store_kill_after")]
    pub store_kill_after_switched: f64,
    /// `proxy_partition`: how long the second proxy stays cut off from the store.
    #[serde(default = "default_warmup")]
    pub partition_secs: f64,
    /// Longest freeze window (journal: freeze → unfreeze/abort) any site may have, every
    /// window counted; none: unchecked.
    #[serde(default)]
    pub max_freeze_secs: Option<f64>,
}

fn default_workers() -> usize {
    3
}
fn default_claim_lease() -> u64 {
    6
}
fn default_worker_kill_phase() -> String {
    "freeze".into()
}
fn default_store_kill_node() -> usize {
    3
}
fn default_store_kill_after() -> f64 {
    0.3
}

fn default_kill_gap() -> f64 {
    2.0
}

fn default_concurrency() -> usize {
    4
}
fn default_warmup() -> f64 {
    3.0
}
fn default_gate_wait() -> u64 {
    300
}

/// What the migration did, for the scenario report and BENCHMARKS.md.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrationReport {
    pub kind: Option<Kind>,
    pub sites: usize,
    /// Wall time of the wave runs (all of them for `crash_resume`).
    pub wave_secs: f64,
    pub sites_per_minute: f64,
    /// Per-site write-unavailability from the journal (freeze start → unfreeze end).
    pub freeze_p50_ms: Option<f64>,
    pub freeze_p99_ms: Option<f64>,
    pub freeze_max_ms: Option<f64>,
    /// Every freeze window of every site, in order (ms); the percentiles above are over all.
    pub freeze_windows_ms: BTreeMap<String, Vec<u64>>,
    /// `fleet_wave`: the site frozen when its worker was SIGKILLed, and its windows.
    pub killed: Option<fleet::KilledInFreeze>,
    /// Phase name → (p50, max) ms over the sites.
    pub phase_ms: BTreeMap<String, (f64, f64)>,
    /// Journal state → sites.
    pub states: BTreeMap<String, usize>,
    /// What happened, in order (kills, tunnel flap, rollback).
    pub events: Vec<String>,
    pub violations: Vec<String>,
    pub migrator_log: PathBuf,
}

/// The `migrator` binary run in the lab's client namespace, with its files in `dir`.
pub struct Migrator {
    exe: PathBuf,
    client_netns: String,
    pub dir: PathBuf,
    pub sites_file: PathBuf,
    pub plan: PathBuf,
    pub journal: PathBuf,
    pub log: PathBuf,
}

impl Migrator {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = in_ns(None, &self.client_netns, &self.exe.to_string_lossy());
        c.args(args);
        c
    }

    /// Writes the site specs (`specs-from-lab`) and a plan whose wave 1 holds `sites` sites.
    pub fn setup(st: &LabState, dir: &Path, sites: usize) -> Result<Migrator> {
        std::fs::create_dir_all(dir).map_err(LabError::io("creating migration dir", dir))?;
        let m = Migrator {
            exe: crate::tools::find("migrator")?,
            client_netns: st.client.netns.clone(),
            dir: dir.to_path_buf(),
            sites_file: dir.join("sites.json"),
            plan: dir.join("plan.json"),
            // A fleet lab's journal is the Galera control store (every node named).
            journal: match &st.fleet {
                Some(f) => PathBuf::from(f.journal_url(0)),
                None => dir.join("journal.sqlite"),
            },
            log: dir.join("migrator.log"),
        };
        let p = st
            .sql_proxy
            .as_ref()
            .ok_or_else(|| LabError::Internal("the lab has no sql-proxy".into()))?;
        let tunnel = st.tunnel.as_ref().map(|t| {
            t.config_dir
                .join("tunnel.toml")
                .to_string_lossy()
                .into_owned()
        });
        let state = crate::state::LabState::path(&st.state_dir);
        let (admin, token) = (p.admin.to_string(), p.token_file.to_string_lossy());
        let mut args = vec![
            "site",
            "specs-from-lab",
            "--state",
            state.to_str().unwrap_or_default(),
            "--out",
            m.sites_file.to_str().unwrap_or_default(),
            "--proxy-admin",
            &admin,
            "--proxy-token-file",
            &token,
        ];
        if let Some(t) = &tunnel {
            args.extend([
                "--tunnel-config",
                t,
                "--tunnel-side",
                "old-dc",
                "--tunnel-netns",
                &st.old.netns,
            ]);
        }
        run_cmd(&mut m.cmd(&args))?;
        let inv = st
            .inventory_dir
            .as_ref()
            .ok_or_else(|| LabError::Internal("the lab wrote no inventory".into()))?;
        let n = if sites == 0 { st.sites.len() } else { sites };
        run_cmd(&mut m.cmd(&[
            "plan",
            "--inventory",
            &inv.to_string_lossy(),
            "--canary",
            &n.to_string(),
            "--out",
            &m.plan.to_string_lossy(),
        ]))?;
        if let Some(a) = &st.artifacts {
            // The cron daemons' `cron-run` check the migration's owner tokens: the journal
            // exists before the wave, and both daemons are pointed at it and at the spec.
            migrator::journal::open_journal_at(&m.journal)
                .map_err(|e| LabError::Internal(format!("creating the journal: {e}")))?;
            crate::cron_lab::write_env(a, &m.journal, &m.sites_file)?;
        }
        Ok(m)
    }

    /// `migrator wave run 1 …` as in the runbook.
    pub fn wave(&self, sec: &MigrationSection) -> Command {
        let (c, g) = (sec.concurrency.to_string(), sec.gate_wait_secs.to_string());
        let mut cmd = self.cmd(&[
            "wave",
            "run",
            "1",
            "--plan",
            &self.plan.to_string_lossy(),
            "--sites",
            &self.sites_file.to_string_lossy(),
            "--journal",
            &self.journal.to_string_lossy(),
            "--concurrency",
            &c,
            "--gate-wait",
            &g,
            "--max-failures",
            "1000",
        ]);
        if sec.kind == Kind::WaveBundles {
            cmd.arg("--bundle-store")
                .arg(self.bundle_store())
                .arg("--bundle-key")
                .arg(self.bundle_key());
        }
        self.log_to(&mut cmd);
        cmd
    }

    /// `--bundle-store` of `wave_bundles`.
    fn bundle_store(&self) -> PathBuf {
        self.dir.join("bundles")
    }

    /// The bundles' signing key (created by the wave; its public key beside it as `.pub`).
    fn bundle_key(&self) -> PathBuf {
        self.dir.join("bundle.key")
    }

    fn log_to(&self, cmd: &mut Command) {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
        };
        if let (Ok(a), Ok(b)) = (open(), open()) {
            cmd.stdout(a).stderr(b);
        }
        cmd.stdin(Stdio::null());
    }

    /// Runs a command to its end; `Ok(exit code)`.
    fn status(&self, mut cmd: Command) -> Result<i32> {
        let st = cmd.status().map_err(|e| LabError::Command {
            command: "migrator".into(),
            status: "could not start".into(),
            stderr: e.to_string(),
        })?;
        Ok(st.code().unwrap_or(-1))
    }

    /// The journal: the SQLite file, or the fleet's Galera store opened from inside the
    /// client namespace (its connection thread, reconnects included, stays there).
    fn journal(&self) -> Result<Box<dyn JournalStore + Send>> {
        let e = |e: migrator::journal::JournalError| LabError::Internal(format!("journal: {e}"));
        if !self.is_fleet() {
            return migrator::journal::open_journal_at(&self.journal).map_err(e);
        }
        let at = self.journal.clone();
        crate::topology::in_netns(&self.client_netns, move || {
            migrator::journal::open_journal_at(&at)
        })?
        .map_err(e)
    }

    /// The journal's other tables (the fleet's `wave_groups`), opened like [`Self::journal`].
    fn journal_sql(&self) -> Result<Box<dyn migrator::journal::SqlConn>> {
        let at = self.journal.clone();
        crate::topology::in_netns(&self.client_netns, move || {
            migrator::journal::open_sql_at(&at)
        })?
        .map_err(|e| LabError::Internal(format!("journal: {e}")))
    }

    /// True when the journal is a shared store (a fleet lab).
    fn is_fleet(&self) -> bool {
        self.journal.to_string_lossy().starts_with("mysql://")
    }
}

/// Sites of the journal whose `switch` step has ended.
pub(crate) fn switched_sites(m: &Migrator) -> usize {
    let Ok(j) = m.journal() else { return 0 };
    let Ok(sites) = j.sites() else { return 0 };
    sites
        .iter()
        .filter(|(s, _)| {
            j.steps(s).is_ok_and(|v| {
                v.iter()
                    .any(|x| x.phase == "switch" && x.ended_ms.is_some())
            })
        })
        .count()
}

/// Every site's steps from the journal.
pub(crate) fn steps(m: &Migrator) -> Result<Vec<migrator::journal::StepRecord>> {
    let j = m.journal()?;
    let mut all = Vec::new();
    let e = |e: migrator::journal::JournalError| LabError::Internal(format!("journal: {e}"));
    for (site, _) in j.sites().map_err(e)? {
        all.extend(j.steps(&site).map_err(e)?);
    }
    Ok(all)
}

/// One freeze window of a site from the journal: the `freeze`/`rollback-freeze` step's start
/// to the end of the step that ended it (`unfreeze`, `abort`, `rollback-unfreeze`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FreezeWindow {
    pub start_ms: u64,
    pub end_ms: u64,
    /// The phase of the step that ended it (`open`: still frozen when read).
    pub ended_by: String,
    /// When that step started (who ended the window: a step started after a kill was not the
    /// killed process's).
    pub end_step_started_ms: u64,
}

impl FreezeWindow {
    pub fn ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }
}

/// Every freeze window per site, in order ([`FreezeWindow`]; still open at the end: until now).
pub fn freeze_windows_of(m: &Migrator) -> Result<HashMap<String, Vec<FreezeWindow>>> {
    let mut all = steps(m)?;
    all.sort_by_key(|s| (s.site.clone(), s.started_ms, s.id));
    let mut out: HashMap<String, Vec<FreezeWindow>> = HashMap::new();
    let mut open: HashMap<String, u64> = HashMap::new();
    for s in &all {
        match s.phase.as_str() {
            "freeze" | "rollback-freeze" => {
                open.entry(s.site.clone()).or_insert(s.started_ms as u64);
            }
            "unfreeze" | "abort" | "rollback-unfreeze" => {
                if let Some(start) = open.remove(&s.site) {
                    out.entry(s.site.clone()).or_default().push(FreezeWindow {
                        start_ms: start,
                        end_ms: s.ended_ms.unwrap_or(s.started_ms) as u64,
                        ended_by: s.phase.clone(),
                        end_step_started_ms: s.started_ms as u64,
                    });
                }
            }
            _ => {}
        }
    }
    let now = unix_ms();
    for (site, start) in open {
        out.entry(site).or_default().push(FreezeWindow {
            start_ms: start,
            end_ms: now,
            ended_by: "open".into(),
            end_step_started_ms: now,
        });
    }
    Ok(out)
}

/// [`freeze_windows_of`] as (start, end) pairs, for the traffic check.
pub fn freeze_windows(m: &Migrator) -> Result<HashMap<String, Vec<(u64, u64)>>> {
    Ok(freeze_windows_of(m)?
        .into_iter()
        .map(|(site, v)| (site, v.iter().map(|w| (w.start_ms, w.end_ms)).collect()))
        .collect())
}

fn pct(sorted: &[f64], p: f64) -> Option<f64> {
    migrator::wave::percentile(sorted, p)
}

/// Runs the migration of `sec` against the lab (the traffic runs meanwhile). Never panics;
/// what went wrong is in `violations`. Returns the report and the fault windows.
pub fn run(
    st: &LabState,
    m: &Migrator,
    sec: &MigrationSection,
) -> (MigrationReport, Vec<(u64, u64)>) {
    let mut r = MigrationReport {
        kind: Some(sec.kind),
        migrator_log: m.log.clone(),
        ..Default::default()
    };
    let mut faults = Vec::new();
    let t0 = Instant::now();
    let res = match sec.kind {
        Kind::Wave | Kind::WaveBundles | Kind::WaveArtifacts => kinds::wave_once(m, sec, &mut r),
        Kind::Rollback => {
            kinds::wave_once(m, sec, &mut r).and_then(|_| kinds::rollback(m, sec, &mut r))
        }
        Kind::RollbackArtifacts => kinds::wave_once(m, sec, &mut r).and_then(|_| {
            // The rollback starts while a run of the site's job is in progress on new-dc:
            // its freeze must let it end (it writes the database the rollback pauses).
            std::thread::sleep(std::time::Duration::from_secs_f64(sec.rollback_after_secs));
            let site = sec.rollback_site.as_deref().unwrap_or_default();
            match cron_check::wait_for_run(m, site, std::time::Duration::from_secs(15)) {
                Some(run) => r.events.push(format!(
                    "rollback of {site} started with its slot {} running on the {} side",
                    run.slot,
                    run.side.as_str()
                )),
                None => r.violations.push(format!(
                    "cron: no run of {site} seen in progress within 15 s before its rollback"
                )),
            }
            let now = MigrationSection {
                rollback_after_secs: 0.0,
                ..sec.clone()
            };
            kinds::rollback(m, &now, &mut r)
        }),
        Kind::CrashResume => kinds::crash_resume(m, sec, &mut r),
        Kind::TunnelFlap => kinds::tunnel_flap(st, m, sec, &mut r, &mut faults),
        Kind::ProxyRestart => kinds::proxy_restart(st, m, sec, &mut r, &mut faults),
        Kind::FleetWave => fleet::fleet_wave(st, m, sec, &mut r),
        Kind::StoreNodeLoss => fleet::store_node_loss(st, m, sec, &mut r, &mut faults),
        Kind::ProxyPartition => fleet::proxy_partition(st, m, sec, &mut r, &mut faults),
    };
    if r.wave_secs == 0.0 {
        r.wave_secs = t0.elapsed().as_secs_f64();
    }
    if let Err(e) = res {
        r.violations.push(format!("migration: {e}"));
    }
    (r, faults)
}

/// Runs after the first that an unfinished wave gets: the runbook's answer to sites aborted
/// back to the old side (a verify difference, the tunnel or DNS failing the freeze's checks on
/// a loaded machine) is the same command again.
const RERUNS: usize = 2;

/// `wave run` again while it exits non-zero, at most [`RERUNS`] times; a last exit still
/// non-zero is a violation, `what` naming the run (`migrator wave run`, `the final …`).
pub(crate) fn rerun_until_done(
    m: &Migrator,
    sec: &MigrationSection,
    r: &mut MigrationReport,
    mut code: i32,
    what: &str,
) -> Result<()> {
    for _ in 0..RERUNS {
        if code == 0 {
            break;
        }
        code = m.status(m.wave(sec))?;
        r.events.push(format!(
            "wave run 1 again (same command, as the runbook says): exit {code}"
        ));
    }
    if code != 0 {
        r.violations
            .push(format!("{what} exited {code} (see {})", m.log.display()));
    }
    Ok(())
}

/// Every switched database's owner since the end of its last switch (journal), for the check
/// that no acknowledged write lands on the side that does not own it. For a database shared by
/// several sites the latest switch counts; sites disagreeing on the side leave it out.
pub fn owner_since(st: &LabState, m: &Migrator) -> Result<HashMap<String, (Side, u64)>> {
    let db_of: HashMap<&str, &str> = st
        .sites
        .iter()
        .map(|s| (s.login.as_str(), s.database.as_str()))
        .collect();
    let mut all = steps(m)?;
    all.sort_by_key(|s| (s.started_ms, s.id));
    let mut per_site: HashMap<String, (Side, u64)> = HashMap::new();
    for s in &all {
        let side = match s.phase.as_str() {
            "switch" => Side::New,
            "rollback-switch" => Side::Old,
            _ => continue,
        };
        if let Some(end) = s.ended_ms {
            per_site.insert(s.site.clone(), (side, end as u64));
        }
    }
    let mut out: HashMap<String, (Side, u64)> = HashMap::new();
    let mut conflict = Vec::new();
    for (site, (side, at)) in per_site {
        let Some(db) = db_of.get(site.as_str()) else {
            continue;
        };
        match out.get_mut(*db) {
            Some(e) if e.0 != side => conflict.push(db.to_string()),
            Some(e) => e.1 = e.1.max(at),
            None => {
                out.insert(db.to_string(), (side, at));
            }
        }
    }
    for db in conflict {
        out.remove(&db);
    }
    Ok(out)
}

/// Fills the figures from the journal and checks every site's final placement.
pub fn finish(
    st: &LabState,
    m: &Migrator,
    sec: &MigrationSection,
    sides: &[SiteSides],
    r: &mut MigrationReport,
) {
    let wave_sites = if sec.sites == 0 {
        st.sites.len()
    } else {
        sec.sites
    };
    r.sites = wave_sites;
    if r.wave_secs > 0.0 {
        r.sites_per_minute = wave_sites as f64 * 60.0 / r.wave_secs;
    }
    if let Ok(w) = freeze_windows_of(m) {
        // Every window counts: a site whose freeze was cut short (its worker killed) and
        // retried has two, and the first may be the longer.
        let mut f: Vec<f64> = w.values().flatten().map(|x| x.ms() as f64).collect();
        f.sort_by(|a, b| a.total_cmp(b));
        r.freeze_p50_ms = pct(&f, 50.0);
        r.freeze_p99_ms = pct(&f, 99.0);
        r.freeze_max_ms = f.last().copied();
        r.freeze_windows_ms = w
            .iter()
            .map(|(site, v)| (site.clone(), v.iter().map(FreezeWindow::ms).collect()))
            .collect();
        if let Some(max) = sec.max_freeze_secs {
            for (site, v) in &w {
                for x in v {
                    if x.ms() as f64 > max * 1e3 {
                        r.violations.push(format!(
                            "{site} was frozen {} ms (ended by {}), more than {max} s",
                            x.ms(),
                            x.ended_by
                        ));
                    }
                }
            }
        }
    }
    if let Ok(all) = steps(m) {
        let mut per: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for s in all {
            if let Some(e) = s.ended_ms {
                per.entry(s.phase)
                    .or_default()
                    .push((e - s.started_ms) as f64);
            }
        }
        for (p, mut v) in per {
            v.sort_by(|a, b| a.total_cmp(b));
            let p50 = pct(&v, 50.0).unwrap_or(0.0);
            r.phase_ms
                .insert(p, (p50, v.last().copied().unwrap_or(0.0)));
        }
    }
    let states: HashMap<String, SiteState> = m
        .journal()
        .and_then(|j| j.sites().map_err(|e| LabError::Internal(e.to_string())))
        .map(|v| v.into_iter().collect())
        .unwrap_or_default();
    for v in states.values() {
        *r.states.entry(v.to_string()).or_default() += 1;
    }
    let wave: Vec<&str> = st
        .sites
        .iter()
        .take(wave_sites)
        .map(|s| s.login.as_str())
        .collect();
    let rolled = rolled_back_sites(st, sec);
    for s in sides {
        let placed = s.consistent(st);
        let state = states.get(&s.site).copied().unwrap_or_default();
        let in_wave = wave.contains(&s.site.as_str());
        let rolled = rolled.iter().any(|r| r == &s.site);
        let want = match (in_wave, rolled && sec.kind.rolls_back()) {
            (_, true) => Some(Side::Old),
            (true, false) => Some(Side::New),
            (false, false) => None,
        };
        match (placed, want) {
            (Err(why), _) => r.violations.push(format!("{} ({state}): {why}", s.site)),
            (Ok(side), Some(w)) if side != w => r.violations.push(format!(
                "{} ({state}) is served from {}, expected {}",
                s.site,
                side.label(),
                w.label()
            )),
            (Ok(Side::New), _) if state != SiteState::Live => r.violations.push(format!(
                "{} serves from new-dc but its journal says {state}",
                s.site
            )),
            _ => {}
        }
    }
    if sec.kind == Kind::WaveBundles {
        bundles::check(st, m, r);
    }
    if matches!(sec.kind, Kind::WaveArtifacts | Kind::RollbackArtifacts) {
        let final_side = |site: &str| {
            let in_wave = wave.contains(&site);
            match (
                in_wave,
                rolled.iter().any(|r| r == site) && sec.kind.rolls_back(),
            ) {
                (true, false) => Side::New,
                _ => Side::Old,
            }
        };
        cron_check::check(st, m, &final_side, r);
    }
}

/// The sites the scenario rolls back: `rollback_site`, and with `rollback_with_group` every
/// site sharing its database (its move group).
fn rolled_back_sites(st: &LabState, sec: &MigrationSection) -> Vec<String> {
    let Some(site) = sec.rollback_site.as_deref() else {
        return Vec::new();
    };
    let db = st
        .sites
        .iter()
        .find(|s| s.login == site)
        .map(|s| &s.database);
    match db {
        Some(db) if sec.rollback_with_group => st
            .sites
            .iter()
            .filter(|s| &s.database == db)
            .map(|s| s.login.clone())
            .collect(),
        _ => vec![site.to_string()],
    }
}

/// Fault windows, freeze windows and database owners for the check.
pub fn windows(st: &LabState, m: &Migrator, faults: Vec<(u64, u64)>) -> Windows {
    Windows {
        freeze: freeze_windows(m).unwrap_or_default(),
        fault: faults,
        owner_since: owner_since(st, m).unwrap_or_default(),
    }
}

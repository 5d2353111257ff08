//! The dashboard's controls.
//!
//! - **pause / resume / throttle a wave**: written to the journal through
//!   [`crate::control::Controls::request`] with the operator's name and source `dashboard`; the
//!   running `migrator wave run` folds the journal's controls at least once a second and obeys
//!   (the same path as the control socket and the CLI).
//! - **roll back a site**: the `migrator rollback` code path ([`crate::cutover::rollback::rollback_site`]
//!   on an [`Engine`] with the site's real systems), run in a background thread of the
//!   dashboard. It is offered only when the dashboard was started with `--sites` (the site
//!   specs), only for a `switched` or `live` site that no running wave is working on, and one
//!   rollback per site at a time. The request and its result are recorded in `dash_controls`
//!   with who and when; the rollback's own phases are journaled like any rollback.

use crate::control::{Action, ControlRecord, ControlState, Controls, WaveStatus};
use crate::cutover::{Engine, EngineOptions};
use crate::journal::{open_journal_at, SiteState};
use crate::site_spec::{SiteSpec, SpecError, SpecFile};
use crate::systems::{SysResult, Systems};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Builds one site's systems (real ones in `migrator serve`; a recording world in tests).
pub type SystemsFactory = dyn Fn(&SiteSpec) -> SysResult<Systems> + Send + Sync;

/// What rollbacks need: the site specs and how to reach the site's systems.
pub struct RollbackRunner {
    pub specs: SpecFile,
    pub systems: Arc<SystemsFactory>,
    pub options: EngineOptions,
}

impl RollbackRunner {
    /// Real systems for the sites of `sites_file` (what `migrator rollback` uses).
    pub fn real(sites_file: &Path, journal: &Path) -> Result<RollbackRunner, SpecError> {
        let specs = SpecFile::load(sites_file)?;
        let jp = journal.to_path_buf();
        Ok(RollbackRunner {
            specs,
            systems: Arc::new(move |s: &SiteSpec| crate::real_systems::systems(s, &jp)),
            options: EngineOptions::default(),
        })
    }
}

/// Why a control was refused; each maps to an HTTP status in [`super::http`].
#[derive(Debug, thiserror::Error)]
pub enum ControlFailure {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("journal: {0}")]
    Journal(String),
}

/// The controls of one dashboard.
pub struct ControlDesk {
    journal: PathBuf,
    /// Also writes the dashboard's own audit rows (`dash_controls`).
    controls: Mutex<Controls>,
    rollback: Option<Arc<RollbackRunner>>,
    /// Sites with a rollback running in this process.
    busy: Arc<Mutex<HashSet<String>>>,
}

fn now_ms() -> i64 {
    crate::journal::now_ms()
}

impl ControlDesk {
    pub fn new(
        journal: &Path,
        rollback: Option<RollbackRunner>,
    ) -> Result<ControlDesk, super::ServeError> {
        Ok(ControlDesk {
            journal: journal.to_path_buf(),
            controls: Mutex::new(Controls::open(journal)?),
            rollback: rollback.map(Arc::new),
            busy: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    pub fn can_rollback(&self) -> bool {
        self.rollback.is_some()
    }

    /// Records a wave control; the running wave obeys it within a second.
    pub fn wave(
        &self,
        wave: u32,
        action: Action,
        who: &str,
    ) -> Result<ControlRecord, ControlFailure> {
        if let Action::Throttle(n) = action {
            if n > 10_000 {
                return Err(ControlFailure::Refused(format!(
                    "throttle {n}: at most 10000 sites at once (0 removes the limit)"
                )));
            }
        }
        self.controls
            .lock()
            .expect("controls")
            .request(wave, action, who, "dashboard", None)
            .map_err(|e| ControlFailure::Journal(e.to_string()))
    }

    /// A wave's control state and history, and the status its runner last published.
    pub fn wave_view(
        &self,
        wave: u32,
    ) -> Result<(ControlState, Vec<ControlRecord>, Option<WaveStatus>), ControlFailure> {
        let c = self.controls.lock().expect("controls");
        let j = |e: crate::control::ControlError| ControlFailure::Journal(e.to_string());
        let history = c.history(wave).map_err(j)?;
        let status = c.status(Some(wave)).map_err(j)?;
        Ok((crate::control::fold(&history), history, status))
    }

    /// The status published by the most recently active wave.
    pub fn latest_status(&self) -> Option<WaveStatus> {
        self.controls
            .lock()
            .expect("controls")
            .status(None)
            .ok()
            .flatten()
    }

    fn audit(
        &self,
        who: &str,
        action: &str,
        target: &str,
        result: &str,
    ) -> Result<i64, ControlFailure> {
        let c = self.controls.lock().expect("controls");
        let r = c
            .sql()
            .exec(
                "INSERT INTO dash_controls(at_ms, who, action, target, result)
                 VALUES (?, ?, ?, ?, ?)",
                &[
                    now_ms().into(),
                    who.into(),
                    action.into(),
                    target.into(),
                    result.into(),
                ],
            )
            .map_err(|e| ControlFailure::Journal(e.to_string()))?;
        Ok(r.last_id)
    }

    /// Starts the rollback of `site` in a background thread; returns the audit row's id.
    pub fn rollback(&self, site: &str, who: &str) -> Result<i64, ControlFailure> {
        let Some(runner) = self.rollback.clone() else {
            return Err(ControlFailure::Refused(
                "this dashboard was started without --sites: it cannot reach the site's systems; \
                 run `migrator rollback SITE --sites FILE --journal FILE`"
                    .into(),
            ));
        };
        let spec = runner
            .specs
            .site(site)
            .map_err(|e| ControlFailure::NotFound(e.to_string()))?
            .clone();
        let group = runner
            .specs
            .move_group(site)
            .map_err(|e| ControlFailure::NotFound(e.to_string()))?;
        if group.len() > 1 {
            let others: Vec<&str> = group[1..].iter().map(|s| s.site.as_str()).collect();
            return Err(ControlFailure::Refused(format!(
                "site {site} shares a database with {}: a database serves from one side only, \
                 so these sites roll back together; run `migrator rollback {site} --with-group`",
                others.join(", ")
            )));
        }
        let state = open_journal_at(&self.journal)
            .and_then(|j| j.site_state(site))
            .map_err(|e| ControlFailure::Journal(e.to_string()))?;
        if !matches!(state, Some(SiteState::Switched | SiteState::Live)) {
            return Err(ControlFailure::Refused(format!(
                "site {site} is {}: only a switched or live site can be rolled back",
                state.map_or("not in the journal", SiteState::as_str)
            )));
        }
        if let Some(st) = self.latest_status() {
            if !st.finished && st.running.iter().any(|s| s == site) {
                return Err(ControlFailure::Refused(format!(
                    "wave {} is working on site {site} right now; pause the wave and retry",
                    st.wave
                )));
            }
        }
        if !self.busy.lock().expect("busy").insert(site.to_string()) {
            return Err(ControlFailure::Refused(format!(
                "a rollback of site {site} is already running"
            )));
        }
        let id = match self.audit(who, "rollback", site, "started") {
            Ok(id) => id,
            Err(e) => {
                self.busy.lock().expect("busy").remove(site);
                return Err(e);
            }
        };
        let journal = self.journal.clone();
        let busy = self.busy.clone();
        let site = site.to_string();
        std::thread::spawn(move || {
            let result = run_rollback(&journal, &spec, &runner);
            let text = match &result {
                Ok(state) => format!("done: site is {state}"),
                Err(e) => format!("failed: {e}"),
            };
            let recorded = crate::journal::open_sql_at(&journal).and_then(|c| {
                c.exec(
                    "UPDATE dash_controls SET result = ?, detail = ? WHERE id = ?",
                    &[
                        text.into(),
                        format!("finished at {}", crate::control::utc(now_ms())).into(),
                        id.into(),
                    ],
                )
            });
            if let Err(e) = recorded {
                tracing::error!("dashboard: recording the end of rollback {id} of {site}: {e}");
            }
            busy.lock().expect("busy").remove(&site);
        });
        Ok(id)
    }
}

/// Why a rollback started from the dashboard failed (recorded in `dash_controls`).
#[derive(Debug, thiserror::Error)]
enum RollbackFailure {
    #[error(transparent)]
    Systems(#[from] crate::systems::SystemError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    Cutover(#[from] crate::cutover::phase::CutoverError),
}

/// Rolls `spec`'s site back; the state it ended in.
fn run_rollback(
    journal: &Path,
    spec: &SiteSpec,
    runner: &RollbackRunner,
) -> Result<SiteState, RollbackFailure> {
    let sys = (runner.systems)(spec)?;
    let mut j = open_journal_at(journal)?;
    let report =
        crate::cutover::rollback::rollback_site(Engine::new(spec, &sys, &mut *j, &runner.options))?;
    Ok(report.state)
}

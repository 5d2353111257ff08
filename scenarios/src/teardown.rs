//! Tearing a lab down: `lab down`, the cleanup after a failed `up`, and the `LabGuard` that
//! does it on `Drop`. Order: tunnel (the tunnel crate must still see its namespaces), daemons
//! by recorded PID (all signalled first so shutdowns overlap), any process still in our
//! namespaces by PID, mounts, namespaces, paths we created, the state dir.

use crate::error::{LabError, Result};
use crate::lab::{require_root, up, LabConfig};
use crate::process::{self, ProcRecord};
use crate::state::LabState;
use crate::topology;
use std::path::Path;
use std::time::{Duration, Instant};

/// What `down` could not remove (empty when the machine is clean).
#[derive(Debug, Default)]
pub struct DownReport {
    pub leftovers: Vec<String>,
    /// Seconds per step of `down`.
    pub step_secs: Vec<(String, f64)>,
}

/// Tears down the lab named `name`.
pub fn down(name: &str, state_root: &Path) -> Result<DownReport> {
    require_root()?;
    let dir = state_root.join(name);
    if !LabState::path(&dir).exists() {
        return Err(LabError::NotUp {
            name: name.to_string(),
            path: LabState::path(&dir),
        });
    }
    let st = LabState::load(&dir)?;
    Ok(down_state(&st, false))
}

/// Stops every process (recorded PIDs, then any process left in our namespaces), unmounts,
/// deletes namespaces and the paths we created; removes the state dir unless `keep_files`.
pub fn down_state(st: &LabState, keep_files: bool) -> DownReport {
    let mut steps = Vec::new();
    let mut t = Instant::now();
    let mut lap = |name: &str, t: &mut Instant| {
        steps.push((name.to_string(), t.elapsed().as_secs_f64()));
        *t = Instant::now();
    };
    // Before anything else: the tunnel crate must see its namespaces to undo its own work.
    crate::tunnel_link::down(st);
    lap("tunnel down", &mut t);
    // Ask every daemon to stop at once, then wait for each: shutdowns overlap.
    for rec in st.processes.iter().rev() {
        if process::alive(rec) {
            process::signal_pid(rec.pid, libc::SIGTERM);
            process::signal_pid(rec.pid, libc::SIGCONT);
        }
    }
    for rec in st.processes.iter().rev() {
        process::stop(rec, Duration::from_secs(30));
    }
    // A supervisor stops its child itself on SIGTERM; if it could not (killed), the child
    // named in its status file is stopped here, by that PID.
    if let Some(rec) = crate::sql_proxy::current_child(st) {
        process::stop(&rec, Duration::from_secs(10));
    }
    lap("daemons stopped", &mut t);
    for ns in st.namespaces() {
        for pid in process::pids_in_netns(ns) {
            let rec = ProcRecord {
                service: format!("leftover in {ns}"),
                pid,
                start_time: process::start_time(pid).unwrap_or(0),
            };
            process::stop(&rec, Duration::from_secs(5));
        }
    }
    lap("leftover processes", &mut t);
    for m in st.mounts.iter().rev() {
        topology::unmount_all(m);
    }
    for ns in st.namespaces() {
        topology::delete_netns(ns);
    }
    for p in st.created_paths.iter().rev() {
        if p.starts_with("/etc/netns") {
            let _ = std::fs::remove_dir_all(p);
        } else {
            // Mount points: only ever removed when empty (never recursive outside the state dir).
            let _ = std::fs::remove_dir(p);
        }
    }
    lap("mounts, namespaces, paths", &mut t);
    if !keep_files && !st.mounts.iter().any(|m| topology::is_mounted(m)) {
        let _ = std::fs::remove_dir_all(&st.state_dir);
    }
    lap("state dir removed", &mut t);
    let mut r = leftovers(st);
    r.step_secs = steps;
    r
}

/// Lists anything of the lab that still exists.
pub fn leftovers(st: &LabState) -> DownReport {
    let mut r = DownReport::default();
    for ns in st.namespaces() {
        if topology::netns_exists(ns) {
            r.leftovers.push(format!("network namespace {ns}"));
        }
    }
    for rec in &st.processes {
        if process::alive(rec) {
            r.leftovers
                .push(format!("process {} ({})", rec.pid, rec.service));
        }
    }
    if let Some(rec) = crate::sql_proxy::current_child(st) {
        r.leftovers
            .push(format!("process {} ({})", rec.pid, rec.service));
    }
    for m in &st.mounts {
        if topology::is_mounted(m) {
            r.leftovers.push(format!("mount {}", m.display()));
        }
    }
    for p in &st.created_paths {
        if p.exists() {
            r.leftovers.push(format!("path {}", p.display()));
        }
    }
    r
}

/// Brings a lab up and tears it down when dropped (tests, scenarios), even after a panic.
pub struct LabGuard {
    pub state: LabState,
}

impl LabGuard {
    pub fn up(cfg: &LabConfig) -> Result<Self> {
        up(cfg).map(|state| LabGuard { state })
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        // Reload: the migrator may have recorded more (e.g. processes) since up.
        let st = LabState::load(&self.state.state_dir).unwrap_or_else(|_| self.state.clone());
        let report = down_state(&st, false);
        if !report.leftovers.is_empty() {
            eprintln!("lab {}: left behind: {:?}", st.name, report.leftovers);
        }
    }
}

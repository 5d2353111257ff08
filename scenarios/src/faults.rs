//! Faults a scenario injects while its traffic runs (`[[faults]]` in `scenario.toml`), each
//! applied at `at_secs` after the traffic starts and undone `for_secs` later:
//! - `haproxy_maint`: one site's server in maintenance on a DC's HAProxy (runtime API), so
//!   that site answers 503 — proves the checks see failures.
//! - `sql_pause`: the DC's MariaDB frozen (SIGSTOP/SIGCONT by its recorded PID) — clients wait,
//!   and with a pause shorter than their timeouts nothing may fail.
//! - `proxy_kill`: old-dc's `sql-proxy` SIGKILLed by the PID its supervisor records for the
//!   current child ([`kill_sql_proxy`]); the supervisor restarts it. Its window (kill → the
//!   restarted proxy answers) is returned so failures inside it are counted apart. No `for_secs`:
//!   the outage lasts as long as the restart takes. The `proxy-restart` scenario uses
//!   [`kill_sql_proxy`] at points of a wave instead of at fixed times.

use crate::dc_services::haproxy_command;
use crate::process;
use crate::state::{LabState, Side};
use crate::traffic::unix_ms;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// One fault of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    HaproxyMaint {
        side: Side,
        site: String,
        at_secs: f64,
        for_secs: f64,
    },
    SqlPause {
        side: Side,
        at_secs: f64,
        for_secs: f64,
    },
    ProxyKill {
        at_secs: f64,
    },
}

/// Why a fault could not be applied or undone (logged as `FAILED`; the run goes on).
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("proxy_kill has no on/off")]
    NoToggle,
    #[error("{command}: {source}")]
    HaproxySocket {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// HAProxy answered the command with an error message.
    #[error("{command}: {answer}")]
    HaproxyRefused { command: String, answer: String },
    #[error("no recorded {0}")]
    NotRecorded(String),
    #[error("{service} (pid {pid}) is not running")]
    NotRunning { service: String, pid: i32 },
    #[error("the lab has no sql-proxy")]
    NoProxy,
    #[error("the supervisor names no running sql-proxy (is `lab up` done? see its log)")]
    NoProxyChild,
    /// The killed proxy was not restarted, or does not answer: the last probe's detail.
    #[error("sql-proxy pid {pid} SIGKILLed, not back after {secs} s: {detail}")]
    NotBack { pid: i32, secs: u64, detail: String },
}

/// A time window (Unix ms) in which an injected outage lasted.
pub type Window = (u64, u64);

/// What the injector did: a log of actions, and the outage windows to count failures apart.
#[derive(Debug, Clone, Default)]
pub struct FaultRun {
    pub log: Vec<String>,
    /// Windows of outages whose failures are expected (`proxy_kill`); the failures a
    /// `haproxy_maint` causes stay counted, since its scenario expects to see them.
    pub windows: Vec<Window>,
}

impl Fault {
    fn at(&self) -> f64 {
        match self {
            Fault::HaproxyMaint { at_secs, .. }
            | Fault::SqlPause { at_secs, .. }
            | Fault::ProxyKill { at_secs } => *at_secs,
        }
    }
    fn duration(&self) -> f64 {
        match self {
            Fault::HaproxyMaint { for_secs, .. } | Fault::SqlPause { for_secs, .. } => *for_secs,
            Fault::ProxyKill { .. } => 0.0,
        }
    }

    /// Applies (`on`) or undoes the fault. Returns what was done, for the report, and the
    /// window of an outage to count apart.
    fn apply(&self, st: &LabState, on: bool) -> Result<(String, Option<Window>), FaultError> {
        match self {
            Fault::ProxyKill { .. } if !on => Ok(("sql-proxy back".into(), None)),
            Fault::ProxyKill { .. } => {
                kill_sql_proxy(st, RESTART_TIMEOUT).map(|(what, w)| (what, Some(w)))
            }
            other => other.apply_toggle(st, on).map(|what| (what, None)),
        }
    }

    fn apply_toggle(&self, st: &LabState, on: bool) -> Result<String, FaultError> {
        match self {
            Fault::ProxyKill { .. } => Err(FaultError::NoToggle),
            Fault::HaproxyMaint { side, site, .. } => {
                let state = if on { "maint" } else { "ready" };
                let cmd = format!("set server be_{site}/web state {state}");
                let out = haproxy_command(&st.dc(*side).haproxy_admin_socket, &cmd).map_err(
                    |source| FaultError::HaproxySocket {
                        command: cmd.clone(),
                        source,
                    },
                )?;
                if out.trim().is_empty() {
                    Ok(format!("{}: {cmd}", side.label()))
                } else {
                    Err(FaultError::HaproxyRefused {
                        command: cmd,
                        answer: out.trim().to_string(),
                    })
                }
            }
            Fault::SqlPause { side, .. } => {
                let service = format!("{}/mariadb", side.label());
                let rec = st
                    .processes
                    .iter()
                    .find(|p| p.service == service)
                    .ok_or_else(|| FaultError::NotRecorded(service.clone()))?;
                if !process::alive(rec) {
                    return Err(FaultError::NotRunning {
                        service,
                        pid: rec.pid,
                    });
                }
                let sig = if on { libc::SIGSTOP } else { libc::SIGCONT };
                process::signal_pid(rec.pid, sig);
                Ok(format!(
                    "{service} pid {} {}",
                    rec.pid,
                    if on { "SIGSTOP" } else { "SIGCONT" }
                ))
            }
        }
    }
}

/// How long a killed proxy may take to be restarted and answer again.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(30);

/// SIGKILLs old-dc's `sql-proxy` by the PID its supervisor records for the current child
/// (checked against its start time), then waits until the supervisor has started a new child
/// and that one accepts clients and answers `GET /routes`. Returns what happened and the
/// outage window (Unix ms: just before the kill → the new proxy answers).
pub fn kill_sql_proxy(st: &LabState, timeout: Duration) -> Result<(String, Window), FaultError> {
    let p = st.sql_proxy.as_ref().ok_or(FaultError::NoProxy)?;
    // A previous restart may still be under way: wait for a running child.
    let mut victim = None;
    process::wait_until(timeout, || {
        victim = crate::sql_proxy::current_child(st);
        victim.as_ref().map(|_| ()).ok_or(FaultError::NoProxyChild)
    })?;
    let victim = victim.ok_or(FaultError::NoProxyChild)?;
    let down = unix_ms();
    process::signal_pid(victim.pid, libc::SIGKILL);
    let mut new_pid = 0;
    process::wait_until(timeout, || {
        let child = crate::sql_proxy::current_child(st)
            .filter(|c| c.pid != victim.pid)
            .ok_or_else(|| "not restarted yet".to_string())?;
        new_pid = child.pid;
        crate::topology::tcp_probe(&p.netns, p.listen).map_err(|e| e.to_string())?;
        crate::sql_proxy::admin_get(st, "/routes")
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .map_err(|detail| FaultError::NotBack {
        pid: victim.pid,
        secs: timeout.as_secs(),
        detail,
    })?;
    let up = unix_ms();
    let restarts = p
        .supervisor_status
        .as_deref()
        .and_then(|f| crate::supervise::read_status(f).ok())
        .map(|s| s.restarts)
        .unwrap_or(0);
    Ok((
        format!(
            "sql-proxy pid {} SIGKILL; restarted by its supervisor as pid {new_pid} \
             (restart {restarts}), answering after {} ms",
            victim.pid,
            up - down
        ),
        (down, up),
    ))
}

/// Runs the faults on the current thread, timed from `start`; every applied fault is undone
/// before returning, even if a later one fails. Returns a log of actions and outage windows.
pub fn run(st: &LabState, faults: &[Fault], start: Instant) -> FaultRun {
    // (time, fault index, on?) events in time order.
    let mut events: Vec<(f64, usize, bool)> = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        events.push((f.at(), i, true));
        events.push((f.at() + f.duration(), i, false));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut applied = vec![false; faults.len()];
    let mut log = Vec::new();
    let mut windows = Vec::new();
    for (t, i, on) in events {
        let wait = Duration::from_secs_f64(t.max(0.0)).saturating_sub(start.elapsed());
        std::thread::sleep(wait);
        if !on && !applied[i] {
            continue;
        }
        if !on && matches!(faults[i], Fault::ProxyKill { .. }) {
            continue;
        }
        match faults[i].apply(st, on) {
            Ok((what, window)) => {
                applied[i] = on;
                windows.extend(window);
                log.push(format!("{:.1}s {what}", start.elapsed().as_secs_f64()));
            }
            Err(e) => log.push(format!("{:.1}s FAILED {e}", start.elapsed().as_secs_f64())),
        }
    }
    FaultRun { log, windows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_from_toml_with_clear_errors() {
        #[derive(Deserialize)]
        struct F {
            faults: Vec<Fault>,
        }
        let ok: F = toml::from_str(
            "[[faults]]\nkind = \"sql_pause\"\nside = \"old\"\nat_secs = 1\nfor_secs = 2\n",
        )
        .unwrap();
        assert_eq!(
            ok.faults,
            vec![Fault::SqlPause {
                side: Side::Old,
                at_secs: 1.0,
                for_secs: 2.0
            }]
        );
        let kill: F = toml::from_str("[[faults]]\nkind = \"proxy_kill\"\nat_secs = 4.5\n").unwrap();
        assert_eq!(kill.faults, vec![Fault::ProxyKill { at_secs: 4.5 }]);
        let bad = toml::from_str::<F>("[[faults]]\nkind = \"meteor\"\n")
            .err()
            .unwrap();
        assert!(bad.to_string().contains("meteor"), "{bad}");
    }
}

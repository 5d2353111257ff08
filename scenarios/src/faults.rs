//! Faults a scenario injects while its traffic runs (`[[faults]]` in `scenario.toml`), each
//! applied at `at_secs` after the traffic starts and undone `for_secs` later:
//! - `haproxy_maint`: one site's server in maintenance on a DC's HAProxy (runtime API), so
//!   that site answers 503 — proves the checks see failures.
//! - `sql_pause`: the DC's MariaDB frozen (SIGSTOP/SIGCONT by its recorded PID) — clients wait,
//!   and with a pause shorter than their timeouts nothing may fail.

use crate::dc_services::haproxy_command;
use crate::process;
use crate::state::{LabState, Side};
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
}

impl Fault {
    fn at(&self) -> f64 {
        match self {
            Fault::HaproxyMaint { at_secs, .. } | Fault::SqlPause { at_secs, .. } => *at_secs,
        }
    }
    fn duration(&self) -> f64 {
        match self {
            Fault::HaproxyMaint { for_secs, .. } | Fault::SqlPause { for_secs, .. } => *for_secs,
        }
    }

    /// Applies (`on`) or undoes the fault. Returns what was done, for the report.
    fn apply(&self, st: &LabState, on: bool) -> Result<String, String> {
        match self {
            Fault::HaproxyMaint { side, site, .. } => {
                let state = if on { "maint" } else { "ready" };
                let cmd = format!("set server be_{site}/web state {state}");
                let out = haproxy_command(&st.dc(*side).haproxy_admin_socket, &cmd)
                    .map_err(|e| format!("{cmd}: {e}"))?;
                if out.trim().is_empty() {
                    Ok(format!("{}: {cmd}", side.label()))
                } else {
                    Err(format!("{cmd}: {}", out.trim()))
                }
            }
            Fault::SqlPause { side, .. } => {
                let service = format!("{}/mariadb", side.label());
                let rec = st
                    .processes
                    .iter()
                    .find(|p| p.service == service)
                    .ok_or_else(|| format!("no recorded {service}"))?;
                if !process::alive(rec) {
                    return Err(format!("{service} (pid {}) is not running", rec.pid));
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

/// Runs the faults on the current thread, timed from `start`; every applied fault is undone
/// before returning, even if a later one fails. Returns a log of actions.
pub fn run(st: &LabState, faults: &[Fault], start: Instant) -> Vec<String> {
    // (time, fault index, on?) events in time order.
    let mut events: Vec<(f64, usize, bool)> = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        events.push((f.at(), i, true));
        events.push((f.at() + f.duration(), i, false));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut applied = vec![false; faults.len()];
    let mut log = Vec::new();
    for (t, i, on) in events {
        let wait = Duration::from_secs_f64(t.max(0.0)).saturating_sub(start.elapsed());
        std::thread::sleep(wait);
        if !on && !applied[i] {
            continue;
        }
        match faults[i].apply(st, on) {
            Ok(what) => {
                applied[i] = on;
                log.push(format!("{:.1}s {what}", start.elapsed().as_secs_f64()));
            }
            Err(e) => log.push(format!("{:.1}s FAILED {e}", start.elapsed().as_secs_f64())),
        }
    }
    log
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
        let bad = toml::from_str::<F>("[[faults]]\nkind = \"meteor\"\n")
            .err()
            .unwrap();
        assert!(bad.to_string().contains("meteor"), "{bad}");
    }
}

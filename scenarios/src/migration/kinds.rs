//! How each kind of migration is driven: one wave, a wave then a rollback, a wave killed at
//! each listed phase and resumed, a wave through a tunnel flap, a wave through three SIGKILLs
//! of the SQL proxy.

use super::{
    owner_since, rerun_until_done, steps, switched_sites, MigrationReport, MigrationSection,
    Migrator,
};
use crate::error::{LabError, Result};
use crate::state::{LabState, Side};
use crate::traffic::unix_ms;
use migrator::journal::JournalStore;
use std::time::{Duration, Instant};
pub(super) fn wave_once(
    m: &Migrator,
    sec: &MigrationSection,
    r: &mut MigrationReport,
) -> Result<()> {
    let t = Instant::now();
    let first = m.status(m.wave(sec))?;
    r.events.push(format!(
        "wave run 1: exit {first} after {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    rerun_until_done(m, sec, r, first, "migrator wave run")?;
    r.wave_secs = t.elapsed().as_secs_f64();
    Ok(())
}

pub(super) fn rollback(
    m: &Migrator,
    sec: &MigrationSection,
    r: &mut MigrationReport,
) -> Result<()> {
    let site = sec
        .rollback_site
        .clone()
        .ok_or_else(|| LabError::Internal("rollback needs `rollback_site`".into()))?;
    std::thread::sleep(Duration::from_secs_f64(sec.rollback_after_secs));
    let mut cmd = m.cmd(&[
        "rollback",
        &site,
        "--sites",
        &m.sites_file.to_string_lossy(),
        "--journal",
        &m.journal.to_string_lossy(),
    ]);
    if sec.rollback_with_group {
        cmd.arg("--with-group");
    }
    m.log_to(&mut cmd);
    let t = Instant::now();
    let code = m.status(cmd)?;
    r.events.push(format!(
        "rollback {site}{}: exit {code} after {:.1} s",
        if sec.rollback_with_group {
            " --with-group"
        } else {
            ""
        },
        t.elapsed().as_secs_f64()
    ));
    if code != 0 {
        r.violations
            .push(format!("migrator rollback {site} exited {code}"));
    }
    Ok(())
}

/// Starts the wave, kills it (SIGKILL, its PID) once `phase` is seen started in the journal
/// after the start; `true` if it was killed, `false` if the wave ended first.
fn run_and_kill_at(
    m: &Migrator,
    sec: &MigrationSection,
    phase: &str,
    r: &mut MigrationReport,
) -> Result<bool> {
    let since = unix_ms() as i64;
    let mut child = m.wave(sec).spawn().map_err(|e| LabError::Command {
        command: "migrator wave run".into(),
        status: "could not start".into(),
        stderr: e.to_string(),
    })?;
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(Some(code)) = child.try_wait() {
            r.events.push(format!(
                "{phase}: the wave ended (exit {code}) before the phase was seen"
            ));
            return Ok(false);
        }
        if Instant::now() > deadline {
            crate::process::signal_pid(pid, libc::SIGKILL);
            let _ = child.wait();
            return Err(LabError::Internal(format!("{phase}: not reached in 300 s")));
        }
        let hit = m.journal().ok().and_then(|j| {
            let sites = j.sites().ok()?;
            sites.iter().find_map(|(s, _)| {
                j.steps(s)
                    .ok()?
                    .into_iter()
                    .find(|x| x.phase == phase && x.started_ms >= since)
            })
        });
        if let Some(step) = hit {
            crate::process::signal_pid(pid, libc::SIGKILL);
            let _ = child.wait();
            let inside = m
                .journal()
                .ok()
                .and_then(|j| j.steps(&step.site).ok())
                .and_then(|v| v.into_iter().find(|x| x.id == step.id))
                .is_some_and(|x| x.ended_ms.is_none());
            r.events.push(format!(
                "SIGKILL pid {pid} at {phase} of {} ({})",
                step.site,
                if inside {
                    "inside the phase"
                } else {
                    "just after it"
                }
            ));
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(super) fn crash_resume(
    m: &Migrator,
    sec: &MigrationSection,
    r: &mut MigrationReport,
) -> Result<()> {
    let t = Instant::now();
    for phase in &sec.kill_phases {
        run_and_kill_at(m, sec, phase, r)?;
    }
    let code = m.status(m.wave(sec))?;
    r.events.push(format!("resume to the end: exit {code}"));
    rerun_until_done(m, sec, r, code, "the final `wave run`")?;
    r.wave_secs = t.elapsed().as_secs_f64();
    Ok(())
}

pub(super) fn tunnel_flap(
    st: &LabState,
    m: &Migrator,
    sec: &MigrationSection,
    r: &mut MigrationReport,
    faults: &mut Vec<(u64, u64)>,
) -> Result<()> {
    let t = Instant::now();
    let mut child = m.wave(sec).spawn().map_err(|e| LabError::Command {
        command: "migrator wave run".into(),
        status: "could not start".into(),
        stderr: e.to_string(),
    })?;
    std::thread::sleep(Duration::from_secs_f64(sec.tunnel_down_after_secs));
    let down = unix_ms();
    let res = crate::tunnel_link::flap_down(st);
    r.events.push(format!("tunnel down (old-dc side): {res:?}"));
    std::thread::sleep(Duration::from_secs_f64(sec.tunnel_down_for_secs));
    let res = crate::tunnel_link::flap_up(st);
    // Down until the link was restored (the migrator may see it healthy before the flap's own
    // health poll does).
    let up = res.as_ref().copied().unwrap_or_else(|_| unix_ms());
    r.events.push(format!(
        "tunnel up and healthy after {:.1} s down: {res:?}",
        (up - down) as f64 / 1e3
    ));
    faults.push((down, up));
    let code = child.wait().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1);
    r.events.push(format!("wave run 1: exit {code}"));
    // Sites caught inside their freeze when the tunnel fell were aborted back to old-dc
    // (correct: never switched while down) and the run reports them failed; the runbook's
    // answer is the same command again once the tunnel is healthy.
    rerun_until_done(m, sec, r, code, "migrator wave run")?;
    r.wave_secs = t.elapsed().as_secs_f64();
    // No site may start a freeze or a switch while the tunnel is down.
    for s in steps(m)? {
        let at = s.started_ms as u64;
        if matches!(s.phase.as_str(), "freeze" | "switch") && at >= down && at <= up {
            r.violations.push(format!(
                "{}: {} started {} ms after the tunnel went down (it was down {} ms)",
                s.site,
                s.phase,
                at - down,
                up - down
            ));
        }
    }
    Ok(())
}

pub(super) fn proxy_restart(
    st: &LabState,
    m: &Migrator,
    sec: &MigrationSection,
    r: &mut MigrationReport,
    faults: &mut Vec<(u64, u64)>,
) -> Result<()> {
    let t = Instant::now();
    let wave_n = if sec.sites == 0 {
        st.sites.len()
    } else {
        sec.sites.min(st.sites.len())
    };
    let mut child = m.wave(sec).spawn().map_err(|e| LabError::Command {
        command: "migrator wave run".into(),
        status: "could not start".into(),
        stderr: e.to_string(),
    })?;
    let gap = Duration::from_secs_f64(sec.proxy_kill_gap_secs.max(0.0));
    let mut last = Instant::now();
    let mut ended: Option<i32> = None;
    let mut after_switch = 0;
    for (i, frac) in sec.proxy_kill_after_switched.iter().enumerate() {
        let want = ((frac.clamp(0.0, 1.0) * wave_n as f64).ceil() as usize).min(wave_n);
        // Bounded: the wave ends (then the kill happens at once) or the deadline passes.
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if ended.is_none() {
                if let Ok(Some(code)) = child.try_wait() {
                    ended = Some(code.code().unwrap_or(-1));
                }
            }
            let ready = last.elapsed() >= gap;
            if ready && (ended.is_some() || switched_sites(m) >= want) {
                break;
            }
            if Instant::now() > deadline {
                r.violations.push(format!(
                    "kill {}: {want} switched sites not reached in 600 s",
                    i + 1
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let switched = switched_sites(m);
        match crate::faults::kill_sql_proxy(st, crate::faults::RESTART_TIMEOUT) {
            Ok((what, window)) => {
                faults.push(window);
                if switched > 0 {
                    after_switch += 1;
                }
                r.events.push(format!(
                    "kill {} at {:.1} s, {switched}/{wave_n} sites switched{}: {what}",
                    i + 1,
                    t.elapsed().as_secs_f64(),
                    if ended.is_some() {
                        " (the wave had ended)"
                    } else {
                        ""
                    }
                ));
            }
            Err(e) => r.violations.push(format!("kill {}: {e}", i + 1)),
        }
        last = Instant::now();
    }
    let code = match ended {
        Some(c) => c,
        None => child.wait().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1),
    };
    r.events.push(format!("wave run 1: exit {code}"));
    // A site whose switch or unfreeze met the dead proxy aborted back to old-dc (or stayed
    // frozen until the run's end undid it): the runbook's answer is the same command again.
    rerun_until_done(m, sec, r, code, "migrator wave run")?;
    r.wave_secs = t.elapsed().as_secs_f64();
    if !sec.proxy_kill_after_switched.is_empty() && after_switch == 0 {
        r.violations
            .push("no proxy kill landed after a site had switched: nothing proven".into());
    }
    // After the restarts: every database whose site switched is routed `new`, open.
    let routes = crate::sql_proxy::admin_get(st, "/routes")
        .map_err(|e| LabError::Internal(format!("sql-proxy GET /routes: {e}")))?;
    let routes: Vec<serde_json::Value> = serde_json::from_str(&routes)
        .map_err(|e| LabError::Internal(format!("sql-proxy GET /routes: {e}")))?;
    let switched = owner_since(st, m)?;
    let mut checked = 0;
    for (db, (side, _)) in &switched {
        let want = if *side == Side::New { "new" } else { "old" };
        let got = routes.iter().find(|r| r["database"] == db.as_str());
        let (s, mode) = got
            .map(|r| {
                (
                    r["side"].as_str().unwrap_or(""),
                    r["mode"].as_str().unwrap_or(""),
                )
            })
            .unwrap_or(("(no route)", ""));
        checked += 1;
        if s != want || mode != "open" {
            r.violations.push(format!(
                "{db} switched to {want} but after the restarts the proxy routes it {s} ({mode})"
            ));
        }
    }
    r.events.push(format!(
        "after {} restarts: {checked} switched databases checked in GET /routes",
        faults.len()
    ));
    Ok(())
}

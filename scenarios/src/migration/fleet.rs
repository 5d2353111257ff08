//! The fleet kinds (issue 17), in a fleet lab (`[lab] fleet = true`: Galera control store, two
//! proxies in one fleet). One wave is started with `migrator wave start 1` and run by
//! `workers` `migrator worker 1` processes in the client namespace, each started (and killed)
//! by its PID, each with a journal URL naming every Galera node but starting at a different one:
//! - `fleet_wave`: worker 1 is SIGKILLed once it holds a group with a site inside
//!   `worker_kill_phase`; the others take that group over once its claim lease runs out. The
//!   kill is checked against the journal afterwards (it landed inside that site's freeze, or
//!   inside a step of the phase), and the site's freeze windows are reported
//!   ([`KilledInFreeze`]): the one the kill cut short must end (a live worker's watchdog
//!   aborts it once the dead worker's freeze lease counts as expired) within the bound the code
//!   guarantees, the freeze lease TTL (= the claim lease here) plus one watchdog poll plus the
//!   abort's own duration;
//! - `store_node_loss`: Galera node `store_kill_node` (1-based; by its recorded PID) is
//!   SIGKILLed once a fraction of the sites switched; the wave goes on and completes. Node 1 is
//!   the first proxy's store node (it names every node): it must be seen using it before the
//!   kill and never fence after it (`GET /fleet` sampled until a few seconds after the
//!   cluster evicted the node);
//! - `proxy_partition`: while a site's `switch` runs, the second proxy's store node is made
//!   unreachable from old-dc (a blackhole route in old-dc's namespace: this kernel has neither
//!   nft nor iptables); that proxy must fence itself (`GET /fleet`: `fenced`) within its
//!   lease; the route is removed after `partition_secs`.
//!
//! Each kind then checks what the issue asks: every worker ended 0 (a killed one excepted),
//! the wave's groups all `done`, and (`fleet_wave`) the killed worker's group taken over.

use super::{
    freeze_windows_of, steps, switched_sites, MigrationReport, MigrationSection, Migrator,
};
use crate::error::{LabError, Result};
use crate::process;
use crate::state::LabState;
use crate::traffic::unix_ms;
use migrator::journal::{JournalStore, SqlConn};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Each worker's `--poll` (ms): how often it looks for a claimable group, and how often its
/// watchdog looks for a site a dead worker left frozen.
const POLL_MS: u64 = 200;

/// The site a SIGKILLed worker held inside `phase`, from the journal afterwards.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KilledInFreeze {
    pub site: String,
    pub pid: i32,
    pub phase: String,
    /// How far into the site's freeze (or the phase's step) the kill landed, ms.
    pub killed_after_ms: u64,
    /// Every freeze window of the site, in order (ms), and their sum: its whole
    /// write-unavailability.
    pub windows_ms: Vec<u64>,
    pub sum_ms: u64,
    /// The window the kill cut short (`phase = freeze`): the step that ended it, and when, ms
    /// after the kill.
    pub cut_ended_by: Option<String>,
    pub cut_ended_after_kill_ms: Option<u64>,
    /// What the code guarantees for that end, ms after the kill: the dead owner's freeze lease
    /// counts as expired at most its TTL after its last renewal (at once on its own host,
    /// where its PID is seen gone), a worker's watchdog looks every poll, then the abort runs
    /// (its duration from the journal).
    pub cut_bound_after_kill_ms: Option<u64>,
}

/// The worker processes, SIGKILLed by PID when dropped (a failed scenario leaves none).
struct Workers(Vec<Option<Child>>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Workers {
    /// Every worker still running, waited for (bounded); their exit codes by index.
    fn wait_all(&mut self, r: &mut MigrationReport, limit: Duration) -> Vec<Option<i32>> {
        let t = Instant::now();
        let mut codes = vec![None; self.0.len()];
        loop {
            let mut running = 0;
            for (i, c) in self.0.iter_mut().enumerate() {
                let Some(child) = c else { continue };
                match child.try_wait() {
                    Ok(Some(s)) => {
                        codes[i] = Some(s.code().unwrap_or(-1));
                        r.events.push(format!(
                            "worker {}: exit {} after {:.1} s",
                            i + 1,
                            s.code().unwrap_or(-1),
                            t.elapsed().as_secs_f64()
                        ));
                        *c = None;
                    }
                    _ => running += 1,
                }
            }
            if running == 0 {
                return codes;
            }
            if t.elapsed() > limit {
                r.violations.push(format!(
                    "{running} worker(s) still running after {} s",
                    limit.as_secs()
                ));
                return codes;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `migrator wave start 1`, then the workers.
fn start(st: &LabState, m: &Migrator, sec: &MigrationSection) -> Result<Workers> {
    let f = st
        .fleet
        .as_ref()
        .ok_or_else(|| LabError::Internal("a fleet kind needs `[lab] fleet = true`".into()))?;
    let journal = m.journal.to_string_lossy().into_owned();
    let mut cmd = m.cmd(&[
        "wave",
        "start",
        "1",
        "--plan",
        &m.plan.to_string_lossy(),
        "--sites",
        &m.sites_file.to_string_lossy(),
        "--journal",
        &journal,
    ]);
    m.log_to(&mut cmd);
    let code = m.status(cmd)?;
    if code != 0 {
        return Err(LabError::Internal(format!(
            "migrator wave start 1 exited {code} (see {})",
            m.log.display()
        )));
    }
    let mut workers = Workers(Vec::new());
    for i in 0..sec.workers.max(1) {
        let url = f.journal_url(i);
        let (lease, gate) = (
            sec.claim_lease_secs.to_string(),
            sec.gate_wait_secs.to_string(),
        );
        // The freeze lease's TTL is the claim lease: a dead worker's freeze is given up by
        // another worker's watchdog no later than its group's claim.
        let poll = POLL_MS.to_string();
        let mut cmd = m.cmd(&[
            "worker",
            "1",
            "--claim-lease",
            &lease,
            "--lease",
            &lease,
            "--poll",
            &poll,
            "--gate-wait",
            &gate,
            "--sites",
            &m.sites_file.to_string_lossy(),
            "--journal",
            &url,
        ]);
        let log = m.dir.join(format!("worker{}.log", i + 1));
        let out = std::fs::File::create(&log).map_err(LabError::io("worker log", &log))?;
        let err = out.try_clone().map_err(LabError::io("worker log", &log))?;
        cmd.stdout(out)
            .stderr(err)
            .stdin(std::process::Stdio::null());
        let child = cmd.spawn().map_err(|e| LabError::Command {
            command: "migrator worker 1".into(),
            status: "could not start".into(),
            stderr: e.to_string(),
        })?;
        workers.0.push(Some(child));
    }
    Ok(workers)
}

/// Groups claimed now: (group, owner PID, sites).
fn claims(db: &dyn SqlConn) -> Result<Vec<(i64, i32, Vec<String>)>> {
    let e = |e: migrator::journal::JournalError| LabError::Internal(format!("journal: {e}"));
    let rows = db
        .query(
            "SELECT grp, owner, sites FROM wave_groups WHERE wave = 1 AND state = 'claimed'",
            &[],
        )
        .map_err(e)?;
    let mut out = Vec::new();
    for r in rows {
        let owner = r.text(1).map_err(e)?;
        let pid = owner.split(':').nth(1).and_then(|p| p.parse().ok());
        let sites: Vec<String> = serde_json::from_str(&r.text(2).map_err(e)?).unwrap_or_default();
        if let Some(pid) = pid {
            out.push((r.i64(0).map_err(e)?, pid, sites));
        }
    }
    Ok(out)
}

/// (done, all) groups of wave 1.
fn groups_done(m: &Migrator) -> Result<(i64, i64)> {
    let db = m.journal_sql()?;
    let e = |e: migrator::journal::JournalError| LabError::Internal(format!("journal: {e}"));
    let row = db
        .row(
            "SELECT COUNT(CASE WHEN state = 'done' THEN 1 END), COUNT(*) FROM wave_groups \
             WHERE wave = 1",
            &[],
        )
        .map_err(e)?
        .ok_or_else(|| LabError::Internal("wave 1 has no groups".into()))?;
    Ok((row.i64(0).unwrap_or(0), row.i64(1).map_err(e)?))
}

/// A site of `sites` with a step of `phase` started and not ended.
fn inside_phase(j: &dyn JournalStore, sites: &[String], phase: &str) -> Option<String> {
    sites.iter().find_map(|s| {
        let steps = j.steps(s).ok()?;
        let inside = if phase == "freeze" {
            // Inside the freeze window: from the freeze step to the end of unfreeze (about a
            // second: pause, final sync, verify, switch). The `freeze` step alone lasts a few
            // milliseconds, which a 20 ms poll misses (seen in CI: worker 1 finished first).
            let frozen_at = steps
                .iter()
                .filter(|x| x.phase == "freeze")
                .map(|x| x.started_ms)
                .max();
            frozen_at.is_some_and(|f| {
                !steps
                    .iter()
                    .any(|x| x.phase == "unfreeze" && x.started_ms >= f && x.ended_ms.is_some())
            })
        } else {
            steps
                .iter()
                .any(|x| x.phase == phase && x.ended_ms.is_none())
        };
        inside.then(|| s.clone())
    })
}

/// Every worker's exit and the groups: the common end of the fleet kinds.
fn finish(
    m: &Migrator,
    r: &mut MigrationReport,
    workers: &mut Workers,
    t: Instant,
    killed: Option<usize>,
) -> Result<()> {
    let codes = workers.wait_all(r, Duration::from_secs(600));
    for (i, c) in codes.iter().enumerate() {
        if Some(i) != killed && *c != Some(0) {
            r.violations.push(format!(
                "worker {} ended {c:?} (see {})",
                i + 1,
                m.dir.join(format!("worker{}.log", i + 1)).display()
            ));
        }
    }
    r.wave_secs = t.elapsed().as_secs_f64();
    let (done, all) = groups_done(m)?;
    r.events.push(format!("wave 1: {done}/{all} groups done"));
    if done != all {
        r.violations
            .push(format!("only {done} of {all} move groups done"));
    }
    Ok(())
}

pub(super) fn fleet_wave(
    st: &LabState,
    m: &Migrator,
    sec: &MigrationSection,
    r: &mut MigrationReport,
) -> Result<()> {
    let t = Instant::now();
    let mut w = start(st, m, sec)?;
    let victim = w.0[0]
        .as_ref()
        .map(|c| c.id() as i32)
        .ok_or_else(|| LabError::Internal("no worker".into()))?;
    let phase = sec.worker_kill_phase.as_str();
    // One connection each for the whole watch: a kill lands inside a freeze of ~1 s.
    let (db, j) = (m.journal_sql()?, m.journal()?);
    let deadline = Instant::now() + Duration::from_secs(600);
    let held = loop {
        if let Some(Ok(Some(s))) = w.0[0].as_mut().map(|c| c.try_wait()) {
            r.violations.push(format!(
                "worker 1 ended ({s}) before it held a group inside `{phase}`: nothing proven"
            ));
            break None;
        }
        if Instant::now() > deadline {
            r.violations
                .push(format!("worker 1 never held a site inside `{phase}`"));
            break None;
        }
        let mine = claims(db.as_ref())?
            .into_iter()
            .find(|(_, pid, _)| *pid == victim);
        if let Some((g, _, sites)) = mine {
            if let Some(site) = inside_phase(j.as_ref(), &sites, phase) {
                let at = unix_ms();
                process::signal_pid(victim, libc::SIGKILL);
                if let Some(mut c) = w.0[0].take() {
                    let _ = c.wait();
                }
                r.events.push(format!(
                    "SIGKILL worker 1 (pid {victim}) at {:.1} s, holding group {g} with {site} inside {phase}",
                    t.elapsed().as_secs_f64()
                ));
                break Some((g, site, at));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    finish(m, r, &mut w, t, Some(0))?;
    if let Some((g, site, at)) = held {
        let logs: String = (2..=sec.workers)
            .filter_map(|i| std::fs::read_to_string(m.dir.join(format!("worker{i}.log"))).ok())
            .collect();
        if logs.contains(&format!("group {g} (")) && logs.contains("taken over") {
            r.events
                .push(format!("group {g} taken over by another worker"));
        } else {
            r.violations
                .push(format!("group {g} of the killed worker was not taken over"));
        }
        if logs.contains(&format!("{site}: freeze left by pid {victim} ")) {
            r.events.push(format!(
                "{site}: the freeze left by pid {victim} was recovered by another worker's watchdog"
            ));
        }
        let k = killed_in(m, sec, &site, victim, at, r)?;
        r.events.push(format!(
            "{site} (killed {} ms into {phase}): freeze windows {:?} ms, sum {} ms; the cut one ended by {} {} ms after the kill (bound {} ms)",
            k.killed_after_ms,
            k.windows_ms,
            k.sum_ms,
            k.cut_ended_by.as_deref().unwrap_or("-"),
            k.cut_ended_after_kill_ms.map_or("-".into(), |v| v.to_string()),
            k.cut_bound_after_kill_ms.map_or("-".into(), |v| v.to_string()),
        ));
        r.killed = Some(k);
    }
    Ok(())
}

/// Where the kill of worker `pid` at `at` (unix ms) landed in `site`, from the journal, with
/// the violations: not inside the phase the scenario names, or the window it cut short ended
/// by the killed worker itself or later than the code guarantees.
fn killed_in(
    m: &Migrator,
    sec: &MigrationSection,
    site: &str,
    pid: i32,
    at: u64,
    r: &mut MigrationReport,
) -> Result<KilledInFreeze> {
    let phase = sec.worker_kill_phase.as_str();
    let windows = freeze_windows_of(m)?.remove(site).unwrap_or_default();
    let mut k = KilledInFreeze {
        site: site.to_string(),
        pid,
        phase: phase.to_string(),
        killed_after_ms: 0,
        windows_ms: windows.iter().map(|w| w.ms()).collect(),
        sum_ms: windows.iter().map(|w| w.ms()).sum(),
        cut_ended_by: None,
        cut_ended_after_kill_ms: None,
        cut_bound_after_kill_ms: None,
    };
    if phase != "freeze" {
        let step = steps(m)?.into_iter().find(|s| {
            s.site == site
                && s.phase == phase
                && s.started_ms as u64 <= at
                && s.ended_ms.is_none_or(|e| e as u64 >= at)
        });
        match step {
            Some(s) => k.killed_after_ms = at - s.started_ms as u64,
            None => r.violations.push(format!(
                "the kill at {at} did not land inside a `{phase}` step of {site} (journal)"
            )),
        }
        return Ok(k);
    }
    let Some(cut) = windows.iter().find(|w| w.start_ms <= at && at <= w.end_ms) else {
        r.violations.push(format!(
            "the kill at {at} did not land inside a freeze of {site}: its windows {:?}",
            windows
                .iter()
                .map(|w| (w.start_ms, w.end_ms))
                .collect::<Vec<_>>()
        ));
        return Ok(k);
    };
    k.killed_after_ms = at - cut.start_ms;
    k.cut_ended_by = Some(cut.ended_by.clone());
    k.cut_ended_after_kill_ms = Some(cut.end_ms - at);
    let abort_ms = cut.end_ms.saturating_sub(cut.end_step_started_ms);
    let bound = sec.claim_lease_secs * 1000 + POLL_MS + abort_ms;
    k.cut_bound_after_kill_ms = Some(bound);
    if cut.end_step_started_ms < at {
        r.violations.push(format!(
            "{site}'s freeze was ended ({}) by the killed worker before the kill: the kill did not cut it",
            cut.ended_by
        ));
    }
    if cut.end_ms - at > bound {
        r.violations.push(format!(
            "{site} stayed frozen {} ms after its worker was killed, more than the {bound} ms the \
             lease guarantees ({} s lease + {POLL_MS} ms watchdog poll + {abort_ms} ms {})",
            cut.end_ms - at,
            sec.claim_lease_secs,
            cut.ended_by
        ));
    }
    Ok(k)
}

pub(super) fn store_node_loss(
    st: &LabState,
    m: &Migrator,
    sec: &MigrationSection,
    r: &mut MigrationReport,
    faults: &mut Vec<(u64, u64)>,
) -> Result<()> {
    let t = Instant::now();
    let mut w = start(st, m, sec)?;
    let want = ((sec.store_kill_after_switched * st.sites.len() as f64).ceil() as usize).max(1);
    let deadline = Instant::now() + Duration::from_secs(600);
    while switched_sites(m) < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let i = sec.store_kill_node.saturating_sub(1);
    let rec = crate::galera::node_process(st, i)
        .ok_or_else(|| LabError::Internal(format!("galera node{} is not running", i + 1)))?;
    let f = st.fleet.as_ref().ok_or(LabError::Missing("fleet"))?;
    // The first proxy names every node from node 1 (`sql_proxy::fleet_toml`): when node 1 is
    // the one killed, it is the node that proxy uses, which must be seen before the kill.
    let proxy1 = st
        .sql_proxy
        .as_ref()
        .ok_or(LabError::Missing("sql-proxy"))?;
    let on_node = |k: usize| {
        crate::galera::exec(
            &f.nodes[k],
            &format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{}'",
                f.routes_db
            ),
        )
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
    };
    let proxy_node = i == 0;
    if proxy_node {
        let routes = on_node(0);
        r.events.push(format!(
            "before the kill: {routes} route-store connection(s) on node1 (the first proxy's)"
        ));
        if routes == 0 {
            r.violations
                .push("the first proxy was not using node1 before the kill".into());
        }
    }
    let at = unix_ms();
    process::signal_pid(rec.pid, libc::SIGKILL);
    // Until the others evicted it, their commits stall: a fault window for the traffic. The
    // first proxy's fence flag is sampled meanwhile and a few seconds after.
    let other = &f.nodes[(i + 1) % f.nodes.len()];
    let mut fence = FenceWatch::default();
    let shrunk = process::wait_until(Duration::from_secs(30), || {
        fence.sample(proxy1);
        match crate::galera::node_state(other) {
            Ok((_, n)) if n == f.nodes.len() - 1 => Ok(()),
            Ok((_, n)) => Err(format!("cluster size {n}")),
            Err(e) => Err(e.to_string()),
        }
    });
    let end = unix_ms();
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(5) {
        fence.sample(proxy1);
        std::thread::sleep(Duration::from_millis(100));
    }
    r.events.push(format!(
        "the first proxy after the kill: fenced in {} of {} samples, lease age max {} ms (lease {} ms); route-store connections on the other nodes: {}",
        fence.fenced,
        fence.samples,
        fence.max_lease_age_ms,
        f.proxy_lease_ms,
        (0..f.nodes.len()).filter(|&k| k != i).map(on_node).sum::<u64>()
    ));
    if proxy_node && (fence.fenced > 0 || fence.samples == 0) {
        r.violations.push(format!(
            "the first proxy fenced itself ({} of {} samples) when its store node was killed: it should have moved to another node",
            fence.fenced, fence.samples
        ));
    }
    faults.push((at, end));
    r.events.push(format!(
        "SIGKILL galera node{} (pid {}) at {:.1} s, {} sites switched; cluster of {} after {} ms ({shrunk:?})",
        i + 1,
        rec.pid,
        t.elapsed().as_secs_f64(),
        switched_sites(m),
        f.nodes.len() - 1,
        end - at
    ));
    if process::alive(&rec) {
        r.violations
            .push(format!("galera node{} survived SIGKILL", i + 1));
    }
    finish(m, r, &mut w, t, None)
}

/// A proxy's `GET /fleet` sampled: how often it said `fenced`, its oldest lease.
#[derive(Default)]
struct FenceWatch {
    samples: u32,
    fenced: u32,
    max_lease_age_ms: u64,
}

impl FenceWatch {
    fn sample(&mut self, p: &crate::state::ProxyState) {
        let Ok(body) = crate::sql_proxy::admin_get_at(p, "/fleet") else {
            return;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
            return;
        };
        self.samples += 1;
        self.fenced += u32::from(v["fenced"].as_bool().unwrap_or(false));
        self.max_lease_age_ms = self
            .max_lease_age_ms
            .max(v["lease_age_ms"].as_u64().unwrap_or(0));
    }
}

/// `ip route add|del blackhole ADDR/32` in old-dc's namespace.
fn blackhole(st: &LabState, addr: std::net::Ipv4Addr, add: bool) -> Result<()> {
    let mut c = Command::new("ip");
    c.args([
        "-n",
        &st.old.netns,
        "route",
        if add { "add" } else { "del" },
    ])
    .args(["blackhole", &format!("{addr}/32")]);
    process::run(&mut c).map(|_| ())
}

/// `fenced` of the second proxy (`GET /fleet`, its admin API answers on old-dc's LAN).
fn proxy2_fenced(st: &LabState) -> Result<bool> {
    let p = st
        .fleet
        .as_ref()
        .and_then(|f| f.proxy2.as_ref())
        .ok_or(LabError::Missing("the second sql-proxy"))?;
    let body = crate::sql_proxy::admin_get_at(p, "/fleet")?;
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| LabError::Internal(format!("GET /fleet: {e}")))?;
    Ok(v["fenced"].as_bool().unwrap_or(false))
}

pub(super) fn proxy_partition(
    st: &LabState,
    m: &Migrator,
    sec: &MigrationSection,
    r: &mut MigrationReport,
    faults: &mut Vec<(u64, u64)>,
) -> Result<()> {
    let t = Instant::now();
    let f = st.fleet.as_ref().ok_or(LabError::Missing("fleet"))?;
    // The second proxy's store connection goes to node 2 (`sql_proxy::start`).
    let cut = f.nodes[1].addr;
    let mut w = start(st, m, sec)?;
    let sites: Vec<String> = st.sites.iter().map(|s| s.login.clone()).collect();
    let j = m.journal()?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let site = loop {
        if let Some(s) = inside_phase(j.as_ref(), &sites, "switch") {
            break Some(s);
        }
        if Instant::now() > deadline {
            r.violations.push("no switch seen in 600 s".into());
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if site.is_some() {
        let at = unix_ms();
        blackhole(st, cut, true)?;
        r.events.push(format!(
            "{cut} (the second proxy's store node) blackholed in old-dc at {:.1} s, during the switch of {}",
            t.elapsed().as_secs_f64(),
            site.as_deref().unwrap_or("")
        ));
        let lease = Duration::from_millis(f.proxy_lease_ms);
        let fenced = process::wait_until(lease, || match proxy2_fenced(st) {
            Ok(true) => Ok(()),
            Ok(false) => Err("not fenced".to_string()),
            Err(e) => Err(e.to_string()),
        });
        let fenced_ms = unix_ms() - at;
        match fenced {
            Ok(()) => r.events.push(format!(
                "the second proxy fenced itself {fenced_ms} ms after the cut (lease {} ms)",
                f.proxy_lease_ms
            )),
            Err(e) => r.violations.push(format!(
                "the second proxy did not fence itself within its lease ({} ms): {e}",
                f.proxy_lease_ms
            )),
        }
        std::thread::sleep(Duration::from_secs_f64(sec.partition_secs.max(0.0)));
        let healed = blackhole(st, cut, false);
        // Serving again once it renewed and re-read the table.
        let back = process::wait_until(Duration::from_secs(30), || match proxy2_fenced(st) {
            Ok(false) => Ok(()),
            Ok(true) => Err("still fenced".to_string()),
            Err(e) => Err(e.to_string()),
        });
        let end = unix_ms();
        faults.push((at, end));
        r.events.push(format!(
            "route removed ({healed:?}) after {:.1} s; unfenced: {back:?}",
            (end - at) as f64 / 1e3
        ));
        if let Err(e) = back {
            r.violations.push(format!(
                "the second proxy stayed fenced after the heal: {e}"
            ));
        }
    }
    finish(m, r, &mut w, t, None)
}

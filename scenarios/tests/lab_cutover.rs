//! The cutover scenarios against the real lab with the real `migrator` and `sql-proxy`
//! binaries, traffic running throughout: `wave-basic`, `rollback`, `rollback-group`, `crash-resume`, `wave-bigdb`,
//! `tunnel-flap`, `proxy-restart`, `wave-bundles`, `wave-artifacts`, `rollback-artifacts`. They
//! run one at a time (a lab each) and with 10 sites instead of the scenario files' sizes where
//! those are larger (`wave-basic` is 50 in its file), to keep the suite within a few minutes in
//! debug on 2 cores. Root only (CI runs as root).

use scenarios::scenario::{self, RunOptions, ScenarioReport};
use std::path::PathBuf;
use std::sync::Mutex;

/// One lab at a time: each already uses both cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn run(name: &str, sites: usize) -> Option<ScenarioReport> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the lab needs root (namespaces, mounts, daemons); CI runs as root");
        return None;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for bin in ["sql-proxy", "migrator"] {
        scenarios::tools::find_or_build(bin).expect(bin);
    }
    let root = std::env::temp_dir().join(format!("hm-cut-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name);
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_scenarios"));
    let opts = RunOptions { sites: Some(sites) };
    let report = scenario::run_with(&dir, &root, &exe, &opts).expect("scenario runs");
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert!(report.passed(), "{name}: {:?}", report.violations);
    std::fs::remove_dir_all(&root).unwrap();
    Some(report)
}

#[test]
fn wave_basic_every_site_live_on_new_dc_nothing_lost() {
    let Some(r) = run("wave-basic", 10) else {
        return;
    };
    let m = r.migration.expect("migration report");
    assert_eq!(m.states.get("live"), Some(&10), "{:?}", m.states);
    assert_eq!(r.check.failed, 0);
    assert!(r.check.lost_writes.is_empty() && r.check.missing_uploads.is_empty());
    assert!(m.freeze_p50_ms.is_some() && m.freeze_p99_ms.is_some());
}

#[test]
fn rollback_serves_from_old_dc_with_every_write() {
    let Some(r) = run("rollback", 10) else { return };
    let m = r.migration.expect("migration report");
    assert_eq!(m.states.get("rolled_back"), Some(&1), "{:?}", m.states);
    assert_eq!(m.states.get("live"), Some(&9), "{:?}", m.states);
    assert!(r.check.lost_writes.is_empty());
}

#[test]
fn rollback_group_takes_both_sites_sharing_a_database_back_with_every_write() {
    let Some(r) = run("rollback-group", 10) else {
        return;
    };
    let m = r.migration.expect("migration report");
    assert!(
        m.events
            .iter()
            .any(|e| e.starts_with("rollback site0010 --with-group: exit 0")),
        "{:?}",
        m.events
    );
    // site0010 and site0009 (its database's owner) are back on old-dc, the others live.
    assert_eq!(m.states.get("rolled_back"), Some(&2), "{:?}", m.states);
    assert_eq!(m.states.get("live"), Some(&8), "{:?}", m.states);
    assert!(r.check.lost_writes.is_empty());
    assert_eq!(r.check.failed, 0);
}

#[test]
fn crash_resume_leaves_every_site_on_one_side() {
    let Some(r) = run("crash-resume", 10) else {
        return;
    };
    let m = r.migration.expect("migration report");
    let kills = m.events.iter().filter(|e| e.contains("SIGKILL")).count();
    assert!(kills >= 4, "too few kills landed: {:?}", m.events);
}

#[test]
fn tunnel_flap_freezes_nothing_while_down_and_completes() {
    let Some(r) = run("tunnel-flap", 10) else {
        return;
    };
    let m = r.migration.expect("migration report");
    assert!(m.events.iter().any(|e| e.starts_with("tunnel down")));
    assert_eq!(m.states.get("live"), Some(&10), "{:?}", m.states);
}

#[test]
fn proxy_restart_keeps_routes_and_one_writer_across_three_kills() {
    let Some(r) = run("proxy-restart", 10) else {
        return;
    };
    let m = r.migration.expect("migration report");
    let kills: Vec<&String> = m.events.iter().filter(|e| e.contains("SIGKILL")).collect();
    assert_eq!(kills.len(), 3, "{:?}", m.events);
    assert!(
        kills.iter().any(|e| !e.contains(" 0/")),
        "no kill after a switch: {kills:?}"
    );
    assert_eq!(m.states.get("live"), Some(&10), "{:?}", m.states);
    assert!(r.check.non_owner_writes.is_empty() && r.check.lost_writes.is_empty());
    assert!(
        r.check.non_owner_checked > 0,
        "no write after a switch was checked"
    );
    assert_eq!(r.check.failed, 0);
}

#[test]
fn wave_bigdb_big_busy_databases_all_live_nothing_lost() {
    // Full size (1 GiB, 320 MiB, 150 MiB, 50 MiB; the two biggest written 10/s): the point
    // of the scenario is the size.
    let Some(r) = run("wave-bigdb", 6) else {
        return;
    };
    let m = r.migration.expect("migration report");
    assert_eq!(m.states.get("live"), Some(&6), "{:?}", m.states);
    assert_eq!(r.check.failed, 0);
    assert!(r.check.lost_writes.is_empty());
    // Every site's freeze measured, and the verification after the switch ran.
    assert!(m.freeze_max_ms.is_some());
    assert!(m.phase_ms.contains_key("freeze"), "{:?}", m.phase_ms);
    assert!(m.phase_ms.contains_key("post-verify"), "{:?}", m.phase_ms);
}

/// The fleet scenarios' common end: every site live on new-dc, nothing lost, no write on the
/// non-owning side, nothing failed outside freezes and fault windows.
fn assert_fleet_wave_done(r: &ScenarioReport, sites: usize) {
    let m = r.migration.as_ref().expect("migration report");
    assert_eq!(m.states.get("live"), Some(&sites), "{:?}", m.states);
    assert!(r.check.lost_writes.is_empty() && r.check.non_owner_writes.is_empty());
    assert_eq!(r.check.failed, 0);
    assert!(
        m.events
            .iter()
            .any(|e| e.starts_with("wave 1: ") && e.contains(" groups done")),
        "{:?}",
        m.events
    );
}

#[test]
fn fleet_wave_killed_workers_group_finishes_on_the_others() {
    let Some(r) = run("fleet-wave", 8) else {
        return;
    };
    assert_fleet_wave_done(&r, 8);
    let m = r.migration.as_ref().unwrap();
    assert!(
        m.events.iter().any(|e| e.starts_with("SIGKILL worker 1")),
        "{:?}",
        m.events
    );
    assert!(
        m.events
            .iter()
            .any(|e| e.contains("taken over by another worker")),
        "{:?}",
        m.events
    );
    // The kill landed inside a freeze (checked against the journal by the scenario), and the
    // window it cut short ended, by another worker, within what the lease guarantees.
    let k = m.killed.as_ref().expect("the killed worker's site");
    assert_eq!(k.phase, "freeze");
    let (after, bound) = (
        k.cut_ended_after_kill_ms
            .expect("the kill cut a freeze window"),
        k.cut_bound_after_kill_ms.unwrap(),
    );
    assert!(after <= bound, "{k:?}");
    assert!(!k.windows_ms.is_empty() && k.sum_ms == k.windows_ms.iter().sum::<u64>());
    assert_eq!(m.freeze_windows_ms.get(&k.site), Some(&k.windows_ms));
    // No window of any site longer than the lease + margin (scenario.toml: 9 s).
    let longest = m.freeze_windows_ms.values().flatten().max().copied();
    assert!(
        longest.is_some_and(|w| w <= 9_000),
        "{:?}",
        m.freeze_windows_ms
    );
    assert_eq!(m.freeze_max_ms, longest.map(|w| w as f64));
}

#[test]
fn store_node_loss_wave_continues_and_completes() {
    let Some(r) = run("store-node-loss", 8) else {
        return;
    };
    assert_fleet_wave_done(&r, 8);
    let m = r.migration.as_ref().unwrap();
    assert!(
        m.events
            .iter()
            .any(|e| e.starts_with("SIGKILL galera node1")),
        "{:?}",
        m.events
    );
    // The node killed was the first proxy's, and that proxy never fenced (the scenario's
    // violations say otherwise).
    assert!(
        m.events
            .iter()
            .any(|e| e.starts_with("the first proxy after the kill: fenced in 0 of ")),
        "{:?}",
        m.events
    );
}

#[test]
fn proxy_partition_cut_off_proxy_fences_and_no_write_reaches_the_old_side() {
    let Some(r) = run("proxy-partition", 6) else {
        return;
    };
    assert_fleet_wave_done(&r, 6);
    let m = r.migration.as_ref().unwrap();
    assert!(
        m.events.iter().any(|e| e.contains("fenced itself")),
        "{:?}",
        m.events
    );
    assert!(
        r.check.non_owner_checked > 0,
        "no write after a switch was checked"
    );
}

#[test]
fn wave_bundles_verify_restore_the_switch_name_tampering_and_expire_exactly() {
    let Some(r) = run("wave-bundles", 5) else {
        return;
    };
    let m = r.migration.expect("migration report");
    assert_eq!(m.states.get("live"), Some(&5), "{:?}", m.states);
    assert!(r.check.lost_writes.is_empty() && r.check.non_owner_writes.is_empty());
    // What the scenario proved (its findings, if any, failed `run` already).
    let has = |p: &str| m.events.iter().any(|e| e.contains(p));
    assert!(has("5 bundles verified"), "{:?}", m.events);
    let restored = m
        .events
        .iter()
        .filter(|e| e.contains("_at_switch equals old-dc"))
        .count();
    assert_eq!(restored, 2, "{:?}", m.events);
    assert!(has("named by verify (exit 1)"), "{:?}", m.events);
    assert!(has("deleted") && has("only, 4 kept"), "{:?}", m.events);
}

/// The cron counts of a scenario's report (`cron: N sites checked: A runs on old, B on new, …`).
fn cron_runs(events: &[String]) -> (usize, usize) {
    let e = events
        .iter()
        .find(|e| e.starts_with("cron: "))
        .unwrap_or_else(|| panic!("no cron summary in {events:?}"));
    let num = |after: &str| -> usize {
        e.split(after)
            .next()
            .and_then(|x| x.split_whitespace().last())
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("{e}"))
    };
    (num(" runs on old"), num(" on new,"))
}

#[test]
fn wave_artifacts_each_cron_slot_once_on_the_owner_nothing_lost() {
    let Some(r) = run("wave-artifacts", 5) else {
        return;
    };
    let m = r.migration.expect("migration report");
    assert_eq!(m.states.get("live"), Some(&5), "{:?}", m.states);
    assert!(r.check.lost_writes.is_empty() && r.check.non_owner_writes.is_empty());
    // Both sides ran the jobs: old-dc during the warmup, new-dc after the switches (the
    // per-site findings, if any, failed `run` already).
    let (old, new) = cron_runs(&m.events);
    assert!(
        old >= 5 && new >= 10,
        "old {old}, new {new}: {:?}",
        m.events
    );
}

#[test]
fn rollback_artifacts_cron_back_on_old_dc_each_slot_once() {
    let Some(r) = run("rollback-artifacts", 5) else {
        return;
    };
    let m = r.migration.expect("migration report");
    assert_eq!(m.states.get("rolled_back"), Some(&1), "{:?}", m.states);
    assert_eq!(m.states.get("live"), Some(&4), "{:?}", m.states);
    assert!(r.check.lost_writes.is_empty());
    let (old, new) = cron_runs(&m.events);
    assert!(old >= 7 && new >= 8, "old {old}, new {new}: {:?}", m.events);
}

//! The cases every backend must pass for the journal's tables beyond [`JournalStore`]: the
//! wave's controls, status and events, the route checks' history, the dashboard's summary
//! (its triggers and its rebuild must agree), and the fleet's claims, each through the
//! `--journal` value a command gets (a file path or a MariaDB URL).
//!
//! `store_tests.rs` runs them on SQLite files, `migrator/tests/journal_backends.rs` (which
//! includes this file with `#[path]`) on a real MariaDB server. The parent module names the
//! crate's modules: `bundle`, `control`, `fleet`, `journal`, `route_check`, `serve`.

use super::control::{Action, Controls, WaveStatus, STOP_RULE_SOURCE};
use super::fleet::Fleet;
use super::journal::{open_journal_at, open_sql_at, JournalExt, SiteState, StepOutcome};
use super::preflight::{store as preflight, SiteReport, Verdict};
use super::route_check::{store as routes, RouteReport};
use super::serve::{metrics, queries, site, summary};
use std::path::PathBuf;

/// One fresh journal for one case.
pub trait StoreBackend {
    /// The `--journal` value naming a journal not created yet.
    fn journal(&self) -> PathBuf;
}

pub type StoreCase = fn(&dyn StoreBackend);

pub const STORE_CASES: &[(&str, StoreCase)] = &[
    ("controls_are_shared", controls_are_shared),
    ("route_checks_are_recorded", route_checks_are_recorded),
    (
        "summary_triggers_match_rebuild",
        summary_triggers_match_rebuild,
    ),
    ("fleet_claims_are_exclusive", fleet_claims_are_exclusive),
    ("fleet_claims_expire_and_obey", fleet_claims_expire_and_obey),
    ("fleet_resource_caps_hold", fleet_resource_caps_hold),
    (
        "fleet_claims_take_run_out_claims_first",
        fleet_claims_take_run_out_claims_first,
    ),
    ("preflight_results_are_kept", preflight_results_are_kept),
];

/// Runs every case on a journal from `fresh`, saying which one runs.
pub fn run_all_store<B: StoreBackend>(kind: &str, fresh: impl Fn(&str) -> B) {
    for (name, case) in STORE_CASES {
        eprintln!("store case {name} on {kind}");
        case(&fresh(name));
    }
}

/// Two connections (two processes, two hosts): what one writes, the other folds.
pub fn controls_are_shared(b: &dyn StoreBackend) {
    let jp = b.journal();
    let a = Controls::open(&jp).unwrap();
    let other = Controls::open(&jp).unwrap();
    assert!(a.latest_wave().is_err(), "no wave published yet");
    assert_eq!(other.current(3).unwrap(), Default::default());
    a.request(3, Action::Pause, "alice", "cli", Some("disk check"))
        .unwrap();
    a.request(4, Action::Throttle(9), "bob", "cli", None)
        .unwrap();
    let st = other.current(3).unwrap();
    assert!(st.paused && !st.stopped_by_rule);
    let reason = st.reason.unwrap();
    assert!(
        reason.starts_with("paused by alice (cli) at 20") && reason.ends_with(": disk check"),
        "{reason}"
    );
    assert_eq!(
        st.concurrency_limit, None,
        "wave 4's throttle is not wave 3's"
    );
    other
        .request(3, Action::Throttle(2), "bob", "dashboard", None)
        .unwrap();
    let r = a.request(3, Action::Resume, "bob", "cli", None).unwrap();
    assert!(r.id > 0);
    let h = other.history(3).unwrap();
    assert_eq!(
        h.iter().map(|c| c.action).collect::<Vec<_>>(),
        [Action::Pause, Action::Throttle(2), Action::Resume]
    );
    assert_eq!(h.last().unwrap().id, r.id);
    let st = a.current(3).unwrap();
    assert!(!st.paused && st.concurrency_limit == Some(2));
    a.request(3, Action::Pause, "rule", STOP_RULE_SOURCE, Some("3 failed"))
        .unwrap();
    assert!(other.current(3).unwrap().stopped_by_rule);

    let mut s = WaveStatus {
        wave: 7,
        total: 3,
        pid: 41,
        ..Default::default()
    };
    s.states.insert(SiteState::Live, 1);
    s.waiting.insert("a".into(), "tunnel unhealthy".into());
    a.publish(&s).unwrap();
    s.total = 4;
    a.publish(&s).unwrap();
    assert_eq!(other.latest_wave().unwrap(), 7);
    assert_eq!(other.status(Some(7)).unwrap().unwrap(), s);
    assert_eq!(other.status(None).unwrap().unwrap().total, 4);
    assert!(other.status(Some(8)).unwrap().is_none());
    a.event(7, Some("a"), "throttle", "tunnel unhealthy")
        .unwrap();
    a.event(7, None, "go", "ok").unwrap();
    let ev = other.events(7).unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(
        (ev[0].site.as_deref(), ev[0].message.as_str()),
        (Some("a"), "tunnel unhealthy")
    );
    assert_eq!(ev[1].site, None);
}

pub fn route_checks_are_recorded(b: &dyn StoreBackend) {
    let jp = b.journal();
    let db = open_sql_at(&jp).unwrap();
    assert_eq!(routes::latest(&*db).unwrap(), None);
    let r = RouteReport {
        checked_ms: 1_700_000_000_000,
        ..Default::default()
    };
    routes::record(&jp, &r).unwrap();
    let got = routes::latest(&*db).unwrap().unwrap();
    assert_eq!(
        (got.checked_ms, got.mismatches, got.unreachable),
        (1_700_000_000_000, 0, 0)
    );
    assert_eq!(got.report["mismatches_total"], 0);
    let later = RouteReport {
        checked_ms: 1_700_000_005_000,
        ..Default::default()
    };
    routes::record(&jp, &later).unwrap();
    assert_eq!(
        routes::latest(&*db).unwrap().unwrap().checked_ms,
        1_700_000_005_000
    );
}

/// A plan file of one wave with `sites`.
fn plan_file(dir: &std::path::Path, sites: &[&str], tag: &str) -> PathBuf {
    let p = dir.join(format!("plan-{tag}.json"));
    let plan = serde_json::json!({
        "format": planner::PLAN_FORMAT, "version": planner::PLAN_VERSION,
        "waves": [{"number": 1, "kind": "pilot", "window_utc": "22:00-02:00", "bytes": 100,
                   "est_seconds": 60.0, "groups": [{"sites": sites}]}],
    });
    std::fs::write(&p, plan.to_string()).unwrap();
    p
}

/// The overview without what depends on the clock's minute (rates, series).
fn figures(db: &dyn super::journal::SqlConn) -> serde_json::Value {
    let o = queries::overview(db).unwrap();
    serde_json::json!({
        "total": o.total_sites, "states": o.states, "bytes": o.bytes_total,
        "errors": o.errors_total, "by_phase": o.errors_by_phase,
        "freeze": [o.freeze.count, o.freeze.p50_ms, o.freeze.max_ms],
        "waves": o.waves.iter().map(|w| (w.wave, w.planned_sites, w.done, w.failed, w.in_flight))
            .collect::<Vec<_>>(),
    })
}

/// The summary kept by the triggers while the engine writes equals the one a rebuild
/// computes from the journal; the pages and `/metrics` read it.
pub fn summary_triggers_match_rebuild(b: &dyn StoreBackend) {
    let jp = b.journal();
    let dir = tempfile::tempdir().unwrap();
    let mut j = open_journal_at(&jp).unwrap();
    j.set_site_state("early", SiteState::Synced).unwrap();
    let db = open_sql_at(&jp).unwrap();
    let plan = plan_file(dir.path(), &["early", "shop", "blog", "wiki"], "a");
    let waves = summary::PlanWaves::read(&plan).unwrap();
    assert_eq!(
        summary::install(&*db, Some(&waves)).unwrap(),
        summary::Installed::Rebuilt
    );
    assert_eq!(
        summary::install(&*db, Some(&waves)).unwrap(),
        summary::Installed::Current
    );

    // The engine writes; the triggers keep the summary.
    for (site, st) in [
        ("shop", SiteState::Live),
        ("blog", SiteState::Failed),
        ("stray", SiteState::Frozen),
    ] {
        j.set_site_state(site, SiteState::Prepared).unwrap();
        let id = j.begin_step(site, "copy-db").unwrap();
        if st == SiteState::Failed {
            j.fail_step(id, "access denied").unwrap();
        } else {
            let out = StepOutcome {
                bytes: 1000,
                checksum: Some("c".into()),
            };
            j.finish_step(id, &out).unwrap();
        }
        j.set_site_state(site, st).unwrap();
    }
    j.put_checkpoint("cutover", "shop.freeze_ms", &1234.7f64)
        .unwrap();
    j.put_checkpoint("cutover", "shop.freeze_ms", &250.2f64)
        .unwrap();
    j.put_checkpoint("cutover", "stray.freeze_ms", &90.0f64)
        .unwrap();
    let live = figures(&*db);
    assert_eq!(live["total"], 5, "{live}");
    assert_eq!(live["bytes"], 2000, "{live}");
    assert_eq!(live["errors"], 1, "{live}");
    assert_eq!(
        live["by_phase"],
        serde_json::json!([["copy-db", 1]]),
        "{live}"
    );
    assert_eq!(live["freeze"], serde_json::json!([2, 90, 250]), "{live}");
    // Wave 1 (4 planned: live, failed, synced, planned) and the unplanned `stray` as wave 0.
    assert_eq!(
        live["waves"],
        serde_json::json!([[0, 1, 0, 0, 1], [1, 4, 1, 1, 1]]),
        "{live}"
    );

    // A new plan file forces a rebuild from the journal: the same figures.
    let plan2 = plan_file(dir.path(), &["early", "shop", "blog", "wiki"], "b");
    let waves2 = summary::PlanWaves::read(&plan2).unwrap();
    assert_eq!(
        summary::install(&*db, Some(&waves2)).unwrap(),
        summary::Installed::Rebuilt
    );
    assert_eq!(figures(&*db), live);

    // Bundles (issue 19): shop's verified, blog's failed, wiki finalized by override.
    {
        use super::bundle::state::{self, BundleState, Stage};
        let b = |stage, bytes| BundleState {
            stage,
            bundle: "x/1".into(),
            store: "/b".into(),
            bytes,
            at_ms: 1,
            error: None,
        };
        state::set(&mut j, "shop", &b(Stage::Verified, 500)).unwrap();
        state::set(&mut j, "blog", &b(Stage::Failed, 200)).unwrap();
        state::record_override(&mut j, "wiki", "no bundle wanted", None).unwrap();
    }

    // The wave page, the site page and the metrics read the same tables.
    let f = queries::SiteFilter {
        state: Some("live".into()),
        ..Default::default()
    };
    let page = queries::site_page(&*db, Some(1), &f).unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.rows[0].site, "shop");
    assert_eq!(page.rows[0].freeze_ms, Some(250.2));
    assert!(page.rows[0].phases.contains_key("copy-db"));
    let f = queries::SiteFilter {
        q: Some("o".into()),
        sort: queries::SortKey::Bytes,
        desc: Some(true),
        ..Default::default()
    };
    let page = queries::site_page(&*db, None, &f).unwrap();
    let names: Vec<&str> = page.rows.iter().map(|r| r.site.as_str()).collect();
    assert_eq!(
        names,
        ["shop", "blog"],
        "sorted by bytes, then name, descending"
    );
    assert!(matches!(
        queries::site_page(
            &*db,
            None,
            &queries::SiteFilter {
                state: Some("bogus".into()),
                ..Default::default()
            }
        ),
        Err(queries::QueryError::State(_))
    ));
    let d = site::site_detail(&*db, "blog").unwrap().unwrap();
    assert_eq!((d.state, d.errors, d.wave), (SiteState::Failed, 1, Some(1)));
    assert_eq!(d.steps[0].error.as_deref(), Some("access denied"));
    let d = site::site_detail(&*db, "shop").unwrap().unwrap();
    assert_eq!(
        d.checkpoints,
        [("freeze_ms".to_string(), "250.2".to_string())]
    );
    assert_eq!(
        d.bundle.map(|b| b.stage),
        Some(super::bundle::state::Stage::Verified)
    );
    assert!(site::site_detail(&*db, "nowhere").unwrap().is_none());
    let m = metrics::render(&*db).unwrap();
    for line in [
        "migrator_bundles{stage=\"verified\"} 1",
        "migrator_bundles{stage=\"capturing\"} 0",
        "migrator_bundle_bytes 700",
        "migrator_bundle_failures 1",
        "migrator_bundle_overrides 1",
        "migrator_sites{state=\"live\"} 1",
        "migrator_bytes_copied_total 2000",
        "migrator_step_errors_total{phase=\"copy-db\"} 1",
        "migrator_write_unavailability_seconds_count 2",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing:\n{m}");
    }
}

/// Workers racing for the groups of a wave (each its own connection) never take the same one.
pub fn fleet_claims_are_exclusive(b: &dyn StoreBackend) {
    let jp = b.journal();
    let groups: Vec<Vec<String>> = (0..24).map(|i| vec![format!("s{i}")]).collect();
    let f = Fleet::open(&jp).unwrap();
    assert!(!f.started(1).unwrap());
    assert_eq!(f.start_wave(1, "p#wave1", &groups, "op").unwrap(), 24);
    assert_eq!(
        f.start_wave(1, "p#wave1", &groups, "op").unwrap(),
        0,
        "started once"
    );
    assert!(f.started(1).unwrap());
    let claimed: Vec<u32> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|w| {
                let jp = &jp;
                s.spawn(move || {
                    let f = Fleet::open(jp).unwrap();
                    let mut mine = Vec::new();
                    while let Some(c) = f.claim(1, &format!("w{w}"), 60_000).unwrap() {
                        assert_eq!(c.sites, [format!("s{}", c.group)]);
                        mine.push(c.group);
                    }
                    mine
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = claimed.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..24).collect::<Vec<_>>(),
        "each group claimed once"
    );
    let p = f.progress(1).unwrap();
    assert_eq!((p.queued, p.claimed, p.done), (0, 24, 0));
    assert!(!p.finished());
}

/// A claim runs out unless renewed, then another worker takes the group over (and the first
/// can neither renew nor finish it); a paused wave gives no claims; a throttle caps them.
pub fn fleet_claims_expire_and_obey(b: &dyn StoreBackend) {
    let jp = b.journal();
    let groups = vec![
        vec!["a".to_string(), "b".to_string()],
        vec!["c".to_string()],
    ];
    let f = Fleet::open(&jp).unwrap();
    f.start_wave(2, "p#wave2", &groups, "op").unwrap();
    let c = Controls::open(&jp).unwrap();
    c.request(2, Action::Pause, "op", "cli", None).unwrap();
    assert_eq!(f.claim(2, "w1", 60_000).unwrap(), None, "paused");
    c.request(2, Action::Resume, "op", "cli", None).unwrap();
    c.request(2, Action::Throttle(1), "op", "cli", None)
        .unwrap();
    let first = f.claim(2, "w1", 300).unwrap().unwrap();
    assert_eq!((first.group, first.attempts), (0, 1));
    assert_eq!(first.sites, ["a", "b"]);
    assert_eq!(
        f.claim(2, "w2", 60_000).unwrap(),
        None,
        "throttled to one group"
    );
    c.request(2, Action::Throttle(0), "op", "cli", None)
        .unwrap();
    let second = f.claim(2, "w2", 60_000).unwrap().unwrap();
    assert_eq!(second.group, 1);
    assert!(f.renew(&first, 300).unwrap());
    assert_eq!(f.claim(2, "w3", 60_000).unwrap(), None, "both held");
    std::thread::sleep(std::time::Duration::from_millis(400));
    let p = f.progress(2).unwrap();
    assert_eq!((p.claimed, p.expired), (1, 1));
    let taken = f.claim(2, "w3", 60_000).unwrap().unwrap();
    assert_eq!((taken.group, taken.attempts), (0, 2), "taken over");
    assert!(!f.renew(&first, 300).unwrap(), "the first owner lost it");
    assert!(!f.finish(&first).unwrap());
    assert!(f.finish(&taken).unwrap());
    assert!(f.finish(&second).unwrap());
    let p = f.progress(2).unwrap();
    assert!(p.finished() && p.done == 2, "{p:?}");
    assert_eq!(f.claim(2, "w1", 60_000).unwrap(), None, "nothing left");
}

/// Scale bench finding (issue 17): a claim walked the primary key through every group already
/// done. Claims now go through the `(wave, state, grp)` index (schema version 5): run-out
/// claims first, so a dead worker's group is not left behind queued groups with lower numbers,
/// then the queued groups in order.
pub fn fleet_claims_take_run_out_claims_first(b: &dyn StoreBackend) {
    let jp = b.journal();
    let groups: Vec<Vec<String>> = (0..4).map(|i| vec![format!("s{i}")]).collect();
    let f = Fleet::open(&jp).unwrap();
    f.start_wave(4, "p#wave4", &groups, "op").unwrap();
    let db = open_sql_at(&jp).unwrap();
    let index = match db.dialect() {
        super::journal::Dialect::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'wave_groups_claim'"
        }
        super::journal::Dialect::MariaDb => {
            "SELECT COUNT(DISTINCT index_name) FROM information_schema.STATISTICS \
              WHERE table_schema = DATABASE() AND table_name = 'wave_groups' \
                AND index_name = 'wave_groups_claim'"
        }
    };
    assert_eq!(db.row(index, &[]).unwrap().unwrap().i64(0).unwrap(), 1);
    // Group 2's worker died: its claim ran out; groups 0, 1 and 3 are still queued.
    db.exec(
        "UPDATE wave_groups SET state = 'claimed', owner = 'dead', lease_until_ms = 1,
                attempts = 1 WHERE wave = 4 AND grp = 2",
        &[],
    )
    .unwrap();
    let order: Vec<(u32, u32)> = std::iter::from_fn(|| f.claim(4, "w", 60_000).unwrap())
        .map(|c| (c.group, c.attempts))
        .collect();
    assert_eq!(order, [(2, 2), (0, 1), (1, 1), (3, 1)]);
}

/// A cap on a shared resource holds across workers: groups loading a capped resource wait
/// while the cap's live claims are taken; groups on other resources go ahead; an expired
/// claim frees its slot; removing the cap frees the rest.
pub fn fleet_resource_caps_hold(b: &dyn StoreBackend) {
    use std::collections::BTreeSet;
    let jp = b.journal();
    let f = Fleet::open(&jp).unwrap();
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let groups: Vec<Vec<String>> = (0..4).map(|i| vec![format!("s{i}")]).collect();
    let res = [
        set(&["sql:a", "filer:/x"]),
        set(&["sql:a"]),
        set(&["sql:a", "tunnel:t"]),
        set(&["filer:/y"]),
    ];
    f.start_wave_with(3, "p#wave3", &groups, &res, "op")
        .unwrap();
    f.set_cap("sql:a", 1).unwrap();
    let other = Fleet::open(&jp).unwrap();
    let g0 = f.claim(3, "w1", 300).unwrap().unwrap();
    assert_eq!(g0.group, 0);
    let next = other.claim(3, "w2", 60_000).unwrap().unwrap();
    assert_eq!(next.group, 3, "groups 1 and 2 wait for sql:a");
    assert_eq!(other.claim(3, "w3", 60_000).unwrap(), None);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let g = other.claim(3, "w3", 60_000).unwrap().unwrap();
    assert_eq!((g.group, g.attempts), (0, 2), "the expired claim's slot");
    assert_eq!(other.claim(3, "w4", 60_000).unwrap(), None);
    f.set_cap("sql:a", 2).unwrap();
    assert_eq!(other.claim(3, "w4", 60_000).unwrap().unwrap().group, 1);
    assert_eq!(other.claim(3, "w5", 60_000).unwrap(), None);
    f.set_cap("sql:a", 0).unwrap();
    assert_eq!(other.claim(3, "w5", 60_000).unwrap().unwrap().group, 2);
}

/// Pre-flight results (`preflight::store`): replaced per site, read back whole, counted.
pub fn preflight_results_are_kept(b: &dyn StoreBackend) {
    let db = open_sql_at(&b.journal()).unwrap();
    assert_eq!(preflight::load(&*db, "a").unwrap(), None);
    let mut r = SiteReport {
        site: "a".into(),
        verdict: Verdict::Blocked,
        reasons: vec!["php.ereg".into()],
        predicted_freeze_ms: 700,
        findings: vec![],
        files: Default::default(),
        databases: vec![],
        home_stamp: u64::MAX - 3,
    };
    preflight::save(&*db, &r).unwrap();
    r.verdict = Verdict::Ok;
    r.reasons.clear();
    preflight::save(&*db, &r).unwrap();
    let other = SiteReport {
        site: "b".into(),
        ..r.clone()
    };
    preflight::save(&*db, &other).unwrap();
    assert_eq!(preflight::load(&*db, "a").unwrap(), Some(r));
    assert_eq!(
        preflight::counts(&*db).unwrap(),
        vec![("ok".to_string(), 2)]
    );
}

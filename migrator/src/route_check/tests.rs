use super::reconcile::repair_one;
use super::*;
use crate::journal::SqliteJournal;
use crate::site_spec::sample;
use std::sync::{Arc, Mutex};

/// An in-memory proxy admin API: routes by database, every call logged, `PUT` refused with 409
/// on a paused database (as a proxy with a route store does), or unreachable. The check and
/// the repair never pause or resume: those calls are logged and do what a proxy does.
#[derive(Clone, Default)]
struct FakeProxy {
    routes: Arc<Mutex<BTreeMap<String, Route>>>,
    calls: Arc<Mutex<Vec<String>>>,
    down: bool,
}

impl FakeProxy {
    fn set(&self, db: &str, side: &str, mode: &str) {
        self.routes.lock().unwrap().insert(
            db.into(),
            Route {
                database: db.into(),
                side: side.into(),
                mode: serde_json::from_value(serde_json::Value::String(mode.into())).unwrap(),
                sessions: Some(0),
                epoch: Some(1),
            },
        );
    }
    fn side(&self, db: &str) -> String {
        self.routes.lock().unwrap()[db].side.clone()
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl SqlProxy for FakeProxy {
    fn routes(&self) -> Result<Vec<Route>, ProxyError> {
        self.calls.lock().unwrap().push("GET /routes".into());
        if self.down {
            return Err(ProxyError::Unreachable("connection refused".into()));
        }
        Ok(self.routes.lock().unwrap().values().cloned().collect())
    }
    fn route(&self, db: &str) -> Result<Route, ProxyError> {
        self.calls.lock().unwrap().push(format!("GET /routes/{db}"));
        Ok(self
            .routes
            .lock()
            .unwrap()
            .get(db)
            .cloned()
            .unwrap_or(Route {
                database: db.into(),
                side: "old".into(),
                mode: Mode::Open,
                sessions: None,
                epoch: Some(0),
            }))
    }
    fn set_side(&self, db: &str, side: &str) -> Result<Route, ProxyError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("PUT /routes/{db} {side}"));
        let mut m = self.routes.lock().unwrap();
        let r = m.get_mut(db).expect("known database");
        if r.paused() {
            return Err(ProxyError::Refused {
                call: format!("PUT /routes/{db}"),
                status: 409,
                message: format!("{db} is paused"),
            });
        }
        r.side = side.into();
        r.epoch = r.epoch.map(|e| e + 1);
        Ok(r.clone())
    }
    fn pause(&self, db: &str) -> Result<(), ProxyError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("POST /routes/{db}/pause"));
        let mut m = self.routes.lock().unwrap();
        let r = m.get_mut(db).expect("known database");
        r.mode = Mode::Paused;
        Ok(())
    }
    fn resume(&self, db: &str, side: Option<&str>) -> Result<f64, ProxyError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("POST /routes/{db}/resume {side:?}"));
        let mut m = self.routes.lock().unwrap();
        let r = m.get_mut(db).expect("known database");
        r.mode = Mode::Open;
        if let Some(s) = side {
            r.side = s.into();
        }
        Ok(0.0)
    }
}

fn factory(p: &FakeProxy) -> impl Fn(&ProxySpec) -> Result<Box<dyn SqlProxy>, ProxyError> {
    let p = p.clone();
    move |_| Ok(Box::new(p.clone()) as Box<dyn SqlProxy>)
}

fn journal() -> (tempfile::TempDir, SqliteJournal) {
    let dir = tempfile::tempdir().unwrap();
    let j = SqliteJournal::open(&dir.path().join("j.sqlite")).unwrap();
    (dir, j)
}

fn facts(state: SiteState, freeze: Freeze) -> SiteFacts {
    SiteFacts {
        state,
        freeze,
        rollback: false,
    }
}

#[test]
fn the_journal_state_names_the_owning_side() {
    for s in SiteState::ALL {
        let want = match s {
            SiteState::Switched | SiteState::Live | SiteState::Finalized => Owner::New,
            _ => Owner::Old,
        };
        assert_eq!(owner(s), want, "{}", s.as_str());
    }
    assert_eq!(owner(SiteState::RolledBack), Owner::Old);
    assert_eq!(owner(SiteState::Aborted), Owner::Old);
    assert_eq!(
        owner(SiteState::Verified),
        Owner::Old,
        "not yet past the switch"
    );
}

#[test]
fn routes_are_judged_against_state_and_freeze() {
    use Freeze::*;
    use Owner::*;
    use SiteState::*;
    let wrong = Verdict::Problem(Problem::WrongSide);
    let paused_out = Verdict::Problem(Problem::PausedOutsideFreeze);
    // (state, freeze, proxy side, paused) → verdict
    let cases = [
        (Live, None, Some(New), false, Verdict::Ok),
        (Live, None, Some(Old), false, wrong),
        (Finalized, None, Some(Old), false, wrong),
        (Switched, None, Some(New), false, Verdict::Ok),
        (RolledBack, None, Some(New), false, wrong),
        (RolledBack, None, Some(Old), false, Verdict::Ok),
        (Planned, None, Some(Old), false, Verdict::Ok),
        (Synced, None, Some(New), false, wrong),
        (Live, None, Option::None, false, wrong),
        // Paused: normal only inside the site's freeze.
        (Synced, None, Some(Old), true, paused_out),
        (Frozen, Abandoned, Some(Old), true, paused_out),
        (Live, None, Some(New), true, paused_out),
        (Frozen, InProgress, Some(Old), true, Verdict::InFreeze),
        (Synced, InProgress, Some(Old), false, Verdict::InFreeze),
        // Inside a freeze, before `verified`, the new side is still wrong.
        (FinalSynced, InProgress, Some(New), false, wrong),
        // From `verified` on, the switch may precede the journal.
        (Verified, InProgress, Some(New), false, Verdict::InFreeze),
        (Live, InProgress, Some(Old), true, Verdict::InFreeze),
        (Verified, InProgress, Option::None, false, wrong),
    ];
    for (state, freeze, side, paused, want) in cases {
        assert_eq!(
            judge(&facts(state, freeze), side, paused),
            want,
            "{} {freeze:?} {side:?} paused={paused}",
            state.as_str()
        );
    }
    let rb = SiteFacts {
        rollback: true,
        ..facts(Live, InProgress)
    };
    assert_eq!(judge(&rb, Some(Old), false), Verdict::InFreeze);
}

#[test]
fn only_settled_sites_are_repairable() {
    assert!(facts(SiteState::Live, Freeze::None).settled());
    assert!(facts(SiteState::RolledBack, Freeze::None).settled());
    assert!(!facts(SiteState::Live, Freeze::Abandoned).settled());
    assert!(!facts(SiteState::Verified, Freeze::None).settled());
    assert!(!facts(SiteState::Failed, Freeze::None).settled());
    let rb = SiteFacts {
        rollback: true,
        ..facts(SiteState::Live, Freeze::None)
    };
    assert!(!rb.settled());
}

#[test]
fn one_list_per_proxy_and_mismatches_named() {
    let (_d, mut j) = journal();
    let p = FakeProxy::default();
    let mut a = sample("a");
    let mut b = sample("b");
    let mut c = sample("c");
    c.databases.clear(); // asks nothing
    a.databases = vec!["db_a".into(), "db_a2".into()];
    b.databases = vec!["db_b".into()];
    j.set_site_state("a", SiteState::Live).unwrap();
    j.set_site_state("b", SiteState::Synced).unwrap();
    p.set("db_a", "new", "open");
    p.set("db_a2", "old", "open"); // behind our back
    p.set("db_b", "old", "paused"); // paused, no freeze
    p.set("unrelated", "new", "open");
    let r = check(&[a, b, c], &j, &factory(&p)).unwrap();
    assert_eq!(p.calls(), ["GET /routes"], "one request per proxy");
    assert_eq!((r.sites, r.databases, r.ok, r.in_freeze), (2, 3, 1, 0));
    assert_eq!(r.exit_code(), EXIT_MISMATCH);
    assert_eq!(r.mismatches.len(), 2);
    let m = &r.mismatches[0];
    assert_eq!(
        (m.site.as_str(), m.database.as_str(), m.journal_state),
        ("a", "db_a2", SiteState::Live)
    );
    assert_eq!(
        (m.expected_side.as_str(), m.proxy_side.as_str(), m.epoch),
        ("new", "old", Some(1))
    );
    assert_eq!(m.problem, Problem::WrongSide);
    assert!(m.not_repairable.is_none());
    assert!(m.line().contains("ROUTE MISMATCH db_a2"), "{}", m.line());
    let m = &r.mismatches[1];
    assert_eq!(m.problem, Problem::PausedOutsideFreeze);
    assert!(
        m.line().contains("lease-watch or abort decides"),
        "{}",
        m.line()
    );
    assert!(m.not_repairable.as_deref().unwrap().contains("paused"));
}

#[test]
fn a_database_missing_from_the_list_is_asked_alone_and_a_dead_proxy_is_reported() {
    let (_d, mut j) = journal();
    let p = FakeProxy::default();
    j.set_site_state("a", SiteState::Planned).unwrap();
    let r = check(&[sample("a")], &j, &factory(&p)).unwrap();
    assert_eq!(p.calls(), ["GET /routes", "GET /routes/db_a"]);
    assert!(r.clean(), "{r:?}");
    assert_eq!(r.exit_code(), 0);

    let down = FakeProxy {
        down: true,
        ..Default::default()
    };
    let r = check(&[sample("a"), sample("b")], &j, &factory(&down)).unwrap();
    assert_eq!(r.exit_code(), EXIT_UNCONFIRMED);
    assert_eq!(r.unreachable.len(), 1);
    assert_eq!((r.unreachable[0].sites, r.unreachable[0].databases), (2, 2));
    assert!(r.unreachable[0].line().contains("connection refused"));
}

#[test]
fn sites_sharing_a_database_must_agree() {
    let (_d, mut j) = journal();
    let p = FakeProxy::default();
    let a = sample("a");
    let mut b = sample("b");
    b.databases = a.databases.clone();
    j.set_site_state("a", SiteState::Live).unwrap();
    p.set("db_a", "new", "open");
    let r = check(&[a, b], &j, &factory(&p)).unwrap();
    assert_eq!(r.mismatches.len(), 2);
    assert!(r
        .mismatches
        .iter()
        .all(|m| m.problem == Problem::SitesDisagree && m.not_repairable.is_some()));
}

#[test]
fn reconcile_sets_the_journal_side_skips_paused_and_frozen_and_dry_run_changes_nothing() {
    let (_d, mut j) = journal();
    let p = FakeProxy::default();
    let specs: Vec<SiteSpec> = ["live", "back", "held", "leased"]
        .iter()
        .map(|s| sample(s))
        .collect();
    j.set_site_state("live", SiteState::Live).unwrap();
    j.set_site_state("back", SiteState::RolledBack).unwrap();
    j.set_site_state("held", SiteState::Live).unwrap();
    j.set_site_state("leased", SiteState::Live).unwrap();
    // A lease of a dead owner: abandoned, for lease-watch.
    let dead = Lease {
        host: crate::cutover::lease::hostname(),
        pid: i32::MAX as u32,
        taken_ms: 0,
        expires_ms: 1,
        boot_id: None,
        started: None,
        kind: Default::default(),
        handed_over: None,
    };
    j.put_checkpoint_raw(
        SCOPE,
        &Checkpoint::Lease.key("leased"),
        &serde_json::to_string(&dead).unwrap(),
    )
    .unwrap();
    p.set("db_live", "old", "open");
    p.set("db_back", "new", "open");
    p.set("db_held", "old", "paused");
    p.set("db_leased", "old", "open");

    let dry = reconcile(&specs, &j, &factory(&p), true).unwrap();
    assert!(
        p.calls().iter().all(|c| c.starts_with("GET")),
        "{:?}",
        p.calls()
    );
    assert_eq!(p.side("db_live"), "old");
    let lines: Vec<String> = dry.repairs.iter().map(RepairLine::line).collect();
    assert_eq!(
        lines[0],
        "db_live: old -> new (site live, journal state live): dry run, not changed"
    );
    assert!(!dry.complete(), "paused and leased ones cannot be repaired");

    let done = reconcile(&specs, &j, &factory(&p), false).unwrap();
    let lines: Vec<String> = done.repairs.iter().map(RepairLine::line).collect();
    assert_eq!(
        lines[0],
        "db_live: old -> new (site live, journal state live)"
    );
    assert_eq!(
        lines[1],
        "db_back: new -> old (site back, journal state rolled_back)"
    );
    assert!(
        lines[2].contains("db_held: NOT CHANGED, paused on old"),
        "{}",
        lines[2]
    );
    assert!(lines[3].contains("lease-watch --once"), "{}", lines[3]);
    assert_eq!(
        (p.side("db_live"), p.side("db_back")),
        ("new".into(), "old".into())
    );
    assert_eq!(
        (p.side("db_held"), p.side("db_leased")),
        ("old".into(), "old".into())
    );
    assert!(!done.complete());
    let after = check(&specs, &j, &factory(&p)).unwrap();
    assert_eq!(after.mismatches.len(), 2, "only the two left alone remain");
}

#[test]
fn a_put_refused_with_409_is_reported_as_left_paused() {
    let (_d, mut j) = journal();
    let p = FakeProxy::default();
    j.set_site_state("a", SiteState::Live).unwrap();
    p.set("db_a", "old", "open");
    let m = check(&[sample("a")], &j, &factory(&p))
        .unwrap()
        .mismatches
        .remove(0);
    // Paused between the check and the repair: the re-read sees it and skips.
    p.set("db_a", "old", "paused");
    let r = repair_one(&m, &sample("a"), &j, &factory(&p)).unwrap();
    assert!(matches!(r, Repair::Skipped { .. }), "{r:?}");
    // Paused with the same epoch and mode as seen (a proxy that refuses anyway): 409.
    let mut seen = m.clone();
    seen.proxy_mode = Mode::Paused;
    let r = repair_one(&seen, &sample("a"), &j, &factory(&p)).unwrap();
    assert_eq!(
        r,
        Repair::LeftPaused {
            reason: "db_a is paused".into()
        }
    );
}

#[test]
fn checks_are_recorded_and_the_latest_is_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("j.sqlite");
    let conn = SqliteJournal::open(&jp).unwrap().into_sql();
    assert_eq!(store::latest(&conn).unwrap(), None, "nothing recorded yet");
    let mut j = SqliteJournal::open(&jp).unwrap();
    j.set_site_state("a", SiteState::Live).unwrap();
    let p = FakeProxy::default();
    p.set("db_a", "old", "open");
    let mut r = check(&[sample("a")], &j, &factory(&p)).unwrap();
    let one = r.mismatches[0].clone();
    r.mismatches = vec![one; store::MAX_FINDINGS + 5];
    store::record(&jp, &r).unwrap();
    let got = store::latest(&conn).unwrap().unwrap();
    assert_eq!(got.mismatches, (store::MAX_FINDINGS + 5) as i64);
    assert_eq!(got.report["mismatches_total"], store::MAX_FINDINGS + 5);
    assert_eq!(
        got.report["mismatches"].as_array().unwrap().len(),
        store::MAX_FINDINGS
    );
    assert_eq!(got.report["mismatches"][0]["database"], "db_a");
    store::record(&jp, &RouteReport::default()).unwrap();
    assert_eq!(store::latest(&conn).unwrap().unwrap().mismatches, 0);
}

//! The dashboard's HTTP surface against a real server on a free loopback port: every page and
//! API call refused without the token (401), controls refused without the CSRF token (403),
//! the `?token=` exchange, the token file's mode, controls recorded in the journal with who,
//! and the summary kept by triggers equal to a rebuild from scratch.

mod dashboard_support;

use dashboard_support::*;
use migrator::control::{self, Action};
use migrator::journal::{JournalStore, SiteState, SqliteJournal};
use migrator::serve::{self, ServeOptions};
use std::os::unix::fs::PermissionsExt;

struct Fixture {
    _dir: tempfile::TempDir,
    journal: std::path::PathBuf,
    opts: ServeOptions,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.sqlite");
    let plan = dir.path().join("plan.json");
    let w1: Vec<String> = (0..30).map(|i| format!("s{i:03}")).collect();
    let w2: Vec<String> = (30..40).map(|i| format!("s{i:03}")).collect();
    write_plan(&plan, &[(1, w1.clone()), (2, w2)]);
    let mut j = SqliteJournal::open(&journal).unwrap();
    j.set_plan(&format!("{}#wave1", plan.display())).unwrap();
    for (i, s) in w1.iter().enumerate() {
        match i % 3 {
            0 => journal_site(&mut j, s, &ALL_PHASES),
            1 => journal_site(&mut j, s, &["prepare", "sync"]),
            _ => journal_site(&mut j, s, &["prepare", "!sync"]),
        }
    }
    let opts = ServeOptions {
        journal: journal.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        token_file: dir.path().join("token"),
        plan: None,
        sites: None,
    };
    Fixture {
        _dir: dir,
        journal,
        opts,
    }
}

const GETS: [&str; 12] = [
    "/",
    "/wave/1",
    "/wave/all?state=live",
    "/site/s000",
    "/assets/app.js",
    "/assets/style.css",
    "/api/session",
    "/api/overview",
    "/api/wave/1",
    "/api/wave/1/sites?state=live&sort=bytes&desc=true",
    "/api/site/s000",
    "/metrics",
];

#[test]
fn without_token_everything_is_refused_and_controls_need_csrf() {
    let f = fixture();
    let (app, token, _) = serve::build(&f.opts, None).unwrap();
    assert!(token.fresh);
    let mode = std::fs::metadata(&f.opts.token_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "token file mode");
    let srv = serve::Background::start(app, f.opts.listen).unwrap();
    let a = srv.addr;
    let bearer = format!("Bearer {}", token.value);
    let good = [("Authorization", bearer.as_str())];
    for path in GETS {
        assert_eq!(get(a, path, &[]).status, 401, "GET {path} without a token");
        let wrong = [("Authorization", "Bearer 0000")];
        assert_eq!(
            get(a, path, &wrong).status,
            401,
            "GET {path} with a wrong token"
        );
        let forged = [("Cookie", "migrator_session=deadbeef")];
        assert_eq!(
            get(a, path, &forged).status,
            401,
            "GET {path} with a forged cookie"
        );
        let ok = get(a, path, &good);
        assert_eq!(ok.status, 200, "GET {path} with the token: {}", ok.text());
    }
    assert_eq!(
        get(a, "/?token=wrong", &[]).status,
        401,
        "a wrong ?token= is refused"
    );

    // Controls: no token → 401; token without CSRF → 403; wrong CSRF → 403.
    let pause = serde_json::json!({ "action": "pause", "confirm": true });
    let rollback = serde_json::json!({ "confirm": true });
    for (path, body) in [
        ("/api/wave/1/control", &pause),
        ("/api/site/s000/rollback", &rollback),
    ] {
        assert_eq!(post_json(a, path, &[], body).status, 401, "POST {path}");
        assert_eq!(
            post_json(a, path, &good, body).status,
            403,
            "POST {path} without CSRF"
        );
        let mut h = good.to_vec();
        h.push(("X-CSRF-Token", "0123"));
        assert_eq!(
            post_json(a, path, &h, body).status,
            403,
            "POST {path} wrong CSRF"
        );
    }
    assert!(!control::current(&f.journal, 1).unwrap().paused);

    // With the CSRF token from /api/session the control is recorded with who and when.
    let csrf = get(a, "/api/session", &good).json()["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    let mut h = good.to_vec();
    h.push(("X-CSRF-Token", csrf.as_str()));
    let unconfirmed = serde_json::json!({ "action": "pause" });
    assert_eq!(
        post_json(a, "/api/wave/1/control", &h, &unconfirmed).status,
        400
    );
    let r = post_json(a, "/api/wave/1/control", &h, &pause);
    assert_eq!(r.status, 200, "{}", r.text());
    let st = control::current(&f.journal, 1).unwrap();
    assert!(st.paused);
    let last = st.last.unwrap();
    assert_eq!(
        (last.source.as_str(), last.action),
        ("dashboard", Action::Pause)
    );
    assert!(last.who.contains("bearer"), "who: {}", last.who);
    let throttle = serde_json::json!({ "action": "throttle", "value": 2, "confirm": true });
    assert_eq!(
        post_json(a, "/api/wave/1/control", &h, &throttle).status,
        200
    );
    assert_eq!(
        control::current(&f.journal, 1).unwrap().concurrency_limit,
        Some(2)
    );
    // No --sites: the rollback is refused with a reason, not run.
    let r = post_json(a, "/api/site/s000/rollback", &h, &rollback);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("--sites"));

    // `?token=` link: a session cookie and a redirect without the token.
    let r = get(a, &format!("/wave/1?token={}&state=live", token.value), &[]);
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/wave/1?state=live"));
    let cookie = r.header("set-cookie").unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let session = cookie.split(';').next().unwrap().to_string();
    let c = [("Cookie", session.as_str())];
    assert_eq!(get(a, "/api/overview", &c).status, 200);
    let page = get(a, "/wave/1", &c).text();
    assert!(page.contains("csrf-token"), "page carries its CSRF token");
    assert_eq!(post_json(a, "/api/wave/1/control", &c, &pause).status, 403);
    let sess_csrf = get(a, "/api/session", &c).json()["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(sess_csrf, csrf, "each session has its own CSRF token");
    let mut hc = c.to_vec();
    hc.push(("X-CSRF-Token", sess_csrf.as_str()));
    let resume = serde_json::json!({ "action": "resume", "confirm": true });
    assert_eq!(
        post_json(a, "/api/wave/1/control", &hc, &resume).status,
        200
    );
    assert!(!control::current(&f.journal, 1).unwrap().paused);

    // Login form: a wrong token is refused; a right one gives a session named after the user.
    let form = |tok: &str| format!("token={tok}&who=alice&next=%2Fwave%2F2");
    let hdr = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = request(a, "POST", "/login", &hdr, Some(form("nope").as_bytes()));
    assert_eq!(r.status, 401);
    let r = request(
        a,
        "POST",
        "/login",
        &hdr,
        Some(form(&token.value).as_bytes()),
    );
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/wave/2"));
    let s = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let who = get(a, "/api/session", &[("Cookie", s.as_str())]).json();
    assert_eq!(who["who"], "alice");

    // Metrics carry the families Prometheus scrapes.
    let m = get(a, "/metrics", &good).text();
    for want in [
        "migrator_sites{state=\"live\"} 10",
        "migrator_sites{state=\"failed\"} 10",
        "migrator_bytes_copied_total",
        "migrator_phase_duration_seconds_bucket{phase=\"sync\",le=\"+Inf\"} 20",
        "migrator_step_errors_total{phase=\"sync\"} 10",
        "migrator_write_unavailability_seconds_count 10",
    ] {
        assert!(m.contains(want), "metrics lack {want}:\n{m}");
    }
    // Prometheus conventions, by the reference checker (issue 22).
    testkit::promtool::check_metrics(&m).unwrap();
    drop(srv);

    // A second start reuses the token and does not print it again; a loose file is refused.
    let (_, again, _) = serve::build(&f.opts, None).unwrap();
    assert!(!again.fresh);
    assert_eq!(again.value, token.value);
    std::fs::set_permissions(&f.opts.token_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = serve::build(&f.opts, None)
        .err()
        .expect("loose token file refused");
    assert!(err.to_string().contains("mode 640"), "{err}");
}

#[test]
fn pages_answer_from_the_summary_and_it_stays_equal_to_a_rebuild() {
    let f = fixture();
    let (app, token, installed) = serve::build(&f.opts, None).unwrap();
    assert_eq!(installed, serve::summary::Installed::Rebuilt);
    let srv = serve::Background::start(app, f.opts.listen).unwrap();
    let a = srv.addr;
    let bearer = format!("Bearer {}", token.value);
    let good = [("Authorization", bearer.as_str())];
    let o = get(a, "/api/overview", &good).json();
    let ov = &o["overview"];
    assert_eq!(ov["total_sites"], 40);
    let w1 = &ov["waves"][0];
    assert_eq!(
        (w1["wave"].as_i64(), w1["done"].as_i64()),
        (Some(1), Some(10))
    );
    assert_eq!(w1["failed"], 10);
    assert_eq!(w1["in_flight"], 10);
    assert_eq!(w1["current"], true);
    assert_eq!(ov["waves"][1]["states"]["planned"], 10);
    assert_eq!(ov["freeze"]["p50_ms"], 420);
    assert_eq!(ov["errors_by_phase"][0][0], "sync");

    // The engine keeps writing while the dashboard runs: triggers keep the summary current.
    {
        let mut j = SqliteJournal::open(&f.journal).unwrap();
        for i in 30..35 {
            journal_site(&mut j, &format!("s{i:03}"), &ALL_PHASES);
        }
        // A re-run of a site finishing again, and a site outside the plan.
        journal_site(
            &mut j,
            "s001",
            &["freeze", "final-sync", "verify", "switch", "unfreeze"],
        );
        journal_site(&mut j, "stray", &["prepare"]);
        j.put_checkpoint_raw("cutover", "s001.freeze_ms", "900.5")
            .unwrap();
    }
    let after = get(a, "/api/overview", &good).json()["overview"].clone();
    assert_eq!(after["total_sites"], 41);
    assert_eq!(
        after["waves"][2]["states"]["live"], 5,
        "wave 2: {}",
        after["waves"]
    );
    assert_eq!(after["waves"][0]["kind"], "unplanned");
    let page = get(
        a,
        "/api/wave/1/sites?state=live&sort=freeze&desc=true&per_page=3",
        &good,
    )
    .json();
    assert_eq!(page["total"], 11);
    assert_eq!(page["pages"], 4);
    assert_eq!(page["rows"][0]["site"], "s001");
    assert_eq!(page["rows"][0]["freeze_ms"], 900.5);
    assert!(page["rows"][0]["phases"]["sync"].is_i64());
    let q = get(a, "/api/wave/all/sites?q=s03&errors=true", &good).json();
    assert_eq!(q["total"], 0);
    let q = get(a, "/api/wave/1/sites?errors=true&sort=errors", &good).json();
    assert_eq!(q["total"], 10);
    assert!(q["rows"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("failed on purpose"));
    assert_eq!(
        get(a, "/api/wave/1/sites?state=bogus", &good).status,
        400,
        "an unknown state is a clear error"
    );
    let site = get(a, "/api/site/s001", &good).json();
    assert_eq!(site["site"]["state"], "live");
    assert_eq!(site["site"]["verification"][0]["status"], "done");
    assert_eq!(get(a, "/api/site/nosuch", &good).status, 404);
    drop(srv);

    // Rebuilding from scratch gives the same answer as the triggers kept (compared as values
    // from the library: JSON text would round floats).
    let inc = {
        let conn = migrator::journal::open_sql_at(&f.journal).unwrap();
        strip_volatile(serde_json::to_value(serve::queries::overview(&*conn).unwrap()).unwrap())
    };
    let conn = migrator::journal::open_sql_at(&f.journal).unwrap();
    conn.exec("UPDATE dash_meta SET v = 'old' WHERE k = 'version'", &[])
        .unwrap();
    drop(conn);
    let (app, _, installed) = serve::build(&f.opts, None).unwrap();
    assert_eq!(installed, serve::summary::Installed::Rebuilt);
    let conn = app.pool.get().unwrap();
    let rebuilt = serde_json::to_value(serve::queries::overview(&*conn).unwrap()).unwrap();
    assert_eq!(inc, strip_volatile(rebuilt));
}

/// The states-over-time series depends on when rows were journaled, which a rebuild can only
/// approximate (it knows each site's last change); everything else must be equal.
fn strip_volatile(mut v: serde_json::Value) -> serde_json::Value {
    v["series"]["states"] = serde_json::Value::Null;
    v
}

#[test]
fn rollback_from_the_dashboard_runs_the_rollback_code_path_and_records_who() {
    use migrator::cutover::{Engine, EngineOptions};
    use migrator::dry_run::Recorder;
    use migrator::site_spec::{sample, SpecFile};
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.sqlite");
    let plan = dir.path().join("plan.json");
    write_plan(&plan, &[(1, vec!["r1".into(), "r2".into()])]);
    let specs = vec![sample("r1"), sample("r2")];
    let rec = Recorder::for_site(&specs[0], false);
    rec.add_site(&specs[1]);
    let eo = EngineOptions {
        gate_wait: std::time::Duration::from_millis(50),
        gate_poll: std::time::Duration::from_millis(10),
        ..Default::default()
    };
    {
        let mut j = SqliteJournal::open(&journal).unwrap();
        j.set_plan(&format!("{}#wave1", plan.display())).unwrap();
        let sys = rec.systems(&specs[0]);
        let r = Engine::new(&specs[0], &sys, &mut j, &eo).migrate().unwrap();
        assert_eq!(r.state, SiteState::Live);
    }
    let r2 = rec.clone();
    let runner = serve::controls::RollbackRunner {
        specs: SpecFile {
            sites: specs.clone(),
        },
        systems: std::sync::Arc::new(move |s| Ok(r2.systems(s))),
        options: eo,
    };
    let opts = ServeOptions {
        journal: journal.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        token_file: dir.path().join("token"),
        plan: None,
        sites: None,
    };
    let (app, token, _) = serve::build(&opts, Some(runner)).unwrap();
    let srv = serve::Background::start(app, opts.listen).unwrap();
    let a = srv.addr;
    let r = get(a, &format!("/?token={}", token.value), &[]);
    let session = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let c = [("Cookie", session.as_str())];
    let csrf = get(a, "/api/session", &c).json()["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    let mut h = c.to_vec();
    h.push(("X-CSRF-Token", csrf.as_str()));
    let yes = serde_json::json!({ "confirm": true });
    assert_eq!(
        get(a, "/api/site/r1", &c).json()["site"]["can_rollback"],
        true
    );
    // A planned site cannot be rolled back; the refusal says why.
    let r = post_json(a, "/api/site/r2/rollback", &h, &yes);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("only a switched or live site"));
    let r = post_json(a, "/api/site/r1/rollback", &h, &yes);
    assert_eq!(r.status, 202, "{}", r.text());
    let t0 = std::time::Instant::now();
    let detail = loop {
        let d = get(a, "/api/site/r1", &c).json();
        if d["site"]["controls"][0]["result"]
            .as_str()
            .is_some_and(|r| r != "started")
        {
            break d;
        }
        assert!(t0.elapsed().as_secs() < 30, "rollback did not finish: {d}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let ctl = &detail["site"]["controls"][0];
    assert_eq!(ctl["action"], "rollback");
    assert_eq!(ctl["who"], "operator");
    assert_eq!(ctl["result"], "done: site is rolled_back", "{detail}");
    assert!(ctl["at_ms"].as_i64().unwrap() > 0);
    assert_eq!(detail["site"]["state"], "rolled_back");
    let phases: Vec<&str> = detail["site"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["phase"].as_str().unwrap())
        .collect();
    assert!(
        phases.ends_with(&[
            "rollback-freeze",
            "rollback-copy",
            "rollback-verify",
            "rollback-switch",
            "rollback-unfreeze"
        ]),
        "{phases:?}"
    );
    // The recording world agrees: the old side serves again.
    let route = rec.route("db_r1").unwrap();
    assert_eq!(route.side, "old");
}

#[test]
fn the_latest_route_check_shows_on_the_overview_and_in_metrics() {
    let f = fixture();
    let (app, token, _) = serve::build(&f.opts, None).unwrap();
    let srv = serve::Background::start(app, f.opts.listen).unwrap();
    let a = srv.addr;
    let bearer = format!("Bearer {}", token.value);
    let good = [("Authorization", bearer.as_str())];
    // Never checked: no banner data, no route metrics (alert on their absence).
    let o = get(a, "/api/overview", &good).json();
    assert!(
        o["overview"]["routes"].is_null(),
        "{}",
        o["overview"]["routes"]
    );
    assert!(!get(a, "/metrics", &good).text().contains("migrator_route_"));

    migrator::route_check::store::record(&f.journal, &route_mismatch_report()).unwrap();
    let r = get(a, "/api/overview", &good).json()["overview"]["routes"].clone();
    assert_eq!(
        (r["mismatches"].as_i64(), r["unreachable"].as_i64()),
        (Some(1), Some(0))
    );
    let m = &r["report"]["mismatches"][0];
    assert_eq!(
        (&m["database"], &m["proxy_side"]),
        (&"shop_db".into(), &"old".into())
    );
    let text = get(a, "/metrics", &good).text();
    for want in [
        "# TYPE migrator_route_mismatches gauge",
        "migrator_route_mismatches 1\n",
        "migrator_route_check_unreachable 0\n",
        "migrator_route_check_age_seconds ",
    ] {
        assert!(text.contains(want), "metrics lack {want}:\n{text}");
    }
    testkit::promtool::check_metrics(&text).unwrap();
    migrator::route_check::store::record(&f.journal, &Default::default()).unwrap();
    assert!(get(a, "/metrics", &good)
        .text()
        .contains("migrator_route_mismatches 0\n"));
    drop(srv);
}

#[test]
fn the_copy_lag_of_sites_waiting_to_freeze_is_in_metrics() {
    use migrator::journal::JournalStore;
    let f = fixture();
    let mut j = SqliteJournal::open(&f.journal).unwrap();
    // s001 and s004 are synced (waiting to freeze); s000 is live: its last pass does not count.
    j.put_checkpoint_raw("cutover", "s001.last_delta", "5000")
        .unwrap();
    j.put_checkpoint_raw("cutover", "s001.last_pass_ms", "1500")
        .unwrap();
    j.put_checkpoint_raw("cutover", "s004.last_delta", "70")
        .unwrap();
    j.put_checkpoint_raw("cutover", "s004.last_pass_ms", "2250")
        .unwrap();
    j.put_checkpoint_raw("cutover", "s000.last_delta", "999999")
        .unwrap();
    let (app, token, _) = serve::build(&f.opts, None).unwrap();
    let srv = serve::Background::start(app, f.opts.listen).unwrap();
    let bearer = format!("Bearer {}", token.value);
    let text = get(srv.addr, "/metrics", &[("Authorization", bearer.as_str())]).text();
    for want in [
        "# TYPE migrator_sync_lag_bytes_max gauge",
        "migrator_sync_lag_bytes_max 5000\n",
        "migrator_sync_lag_seconds_max 2.250\n",
        "migrator_sync_lag_sites 2\n",
    ] {
        assert!(text.contains(want), "metrics lack {want}:\n{text}");
    }
    drop(srv);
}

/// Issue 19: a site's bundle state in its API answer (the site page's card) and the bundles
/// in `/metrics`: sites per stage, bytes, failures, overrides.
#[test]
fn bundle_states_show_per_site_and_in_metrics() {
    use migrator::bundle::state::{self, BundleState, Stage};
    let f = fixture();
    let mut j = SqliteJournal::open(&f.journal).unwrap();
    for (site, stage, bytes, error) in [
        ("s000", Stage::Verified, 1000, None),
        ("s003", Stage::Verified, 2000, None),
        ("s006", Stage::Failed, 30, Some("part db-x: altered")),
        ("s009", Stage::Capturing, 0, None),
    ] {
        let b = BundleState {
            stage,
            bundle: format!("{site}/1700000000000"),
            store: "/srv/bundles".into(),
            bytes,
            at_ms: 1,
            error: error.map(str::to_string),
        };
        state::set(&mut j, site, &b).unwrap();
    }
    state::record_override(&mut j, "s006", "customer declined", Some(Stage::Failed)).unwrap();
    let (app, token, _) = serve::build(&f.opts, None).unwrap();
    let srv = serve::Background::start(app, f.opts.listen).unwrap();
    let bearer = format!("Bearer {}", token.value);
    let good = [("Authorization", bearer.as_str())];
    let s = get(srv.addr, "/api/site/s006", &good).json();
    assert_eq!(s["site"]["bundle"]["stage"], "failed", "{s}");
    assert_eq!(s["site"]["bundle"]["error"], "part db-x: altered", "{s}");
    let s = get(srv.addr, "/api/site/s001", &good).json();
    assert!(s["site"]["bundle"].is_null(), "{s}");
    let text = get(srv.addr, "/metrics", &good).text();
    for want in [
        "# TYPE migrator_bundles gauge",
        "migrator_bundles{stage=\"verified\"} 2\n",
        "migrator_bundles{stage=\"failed\"} 1\n",
        "migrator_bundles{stage=\"capturing\"} 1\n",
        "migrator_bundles{stage=\"captured\"} 0\n",
        "migrator_bundle_bytes 3030\n",
        "migrator_bundle_failures 1\n",
        "migrator_bundle_overrides 1\n",
    ] {
        assert!(text.contains(want), "metrics lack {want}:\n{text}");
    }
    testkit::promtool::check_metrics(&text).unwrap();
    drop(srv);
}

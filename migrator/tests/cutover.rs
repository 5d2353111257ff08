//! The cutover engine against real systems: two real HAProxies (old VIP and new VIP, runtime
//! API, every change read back), real web servers answering the fingerprint, real file copies
//! between two homes; and a rollback that carries a file written on the new side back.
//! Plus the CLI's `--dry-run`, which prints every action and leaves the journal alone.

use drivers::lb::{AdminState, Haproxy, LoadBalancer};
use migrator::cutover::rollback::rollback_site;
use migrator::cutover::{Engine, EngineOptions};
use migrator::dry_run::Recorder;
use migrator::journal::{JournalStore, SiteState, SqliteJournal};
use migrator::real_systems::LocalData;
use migrator::site_spec::{
    Budget, FingerprintSpec, HomeSpec, LbSpec, ProxySpec, SiteSpec, SpecFile,
};
use migrator::systems::Systems;
use std::net::SocketAddr;
use std::sync::Arc;
use testkit::{Backend, Haproxy as HaproxyServer, TinyHttp};

/// The web servers behind the load balancers.
type Web = TinyHttp;

/// One web server and one HAProxy (backend `be_shop` → that server) per datacenter:
/// `(old web, new web, old HAProxy, new HAProxy)`.
fn two_dcs(body: &'static str) -> (Web, Web, HaproxyServer, HaproxyServer) {
    let old = Web::start(body).unwrap();
    let new = Web::start(body).unwrap();
    let be = |addr: SocketAddr| {
        vec![Backend {
            name: "be_shop".into(),
            addr: addr.to_string(),
        }]
    };
    let old_hp = HaproxyServer::start(&be(old.addr)).unwrap();
    let new_hp = HaproxyServer::start(&be(new.addr)).unwrap();
    (old, new, old_hp, new_hp)
}

/// The new side's server in maintenance, as before a move: the switch makes it ready.
fn new_side_in_maint(new_hp: &HaproxyServer) -> Haproxy {
    let lb = Haproxy::new(new_hp.socket());
    lb.set_server_admin("be_shop", "srv", AdminState::Maint)
        .unwrap();
    lb
}

fn spec(
    dir: &std::path::Path,
    old_hp: &HaproxyServer,
    new_hp: &HaproxyServer,
    old: &Web,
    new: &Web,
) -> SiteSpec {
    SiteSpec {
        site: "shop".into(),
        dns: None,
        old_vip: "127.0.0.1".parse().unwrap(),
        new_vip: "127.0.0.2".parse().unwrap(),
        old_lb: LbSpec {
            socket: old_hp.socket().to_path_buf(),
            backend: "be_shop".into(),
            server: "srv".into(),
            tls: None,
        },
        new_lb: LbSpec {
            socket: new_hp.socket().to_path_buf(),
            backend: "be_shop".into(),
            server: "srv".into(),
            tls: None,
        },
        old_web: old.addr,
        new_web: new.addr,
        homes: vec![HomeSpec {
            old: dir.join("old/homez.1/shop"),
            new: dir.join("new/homez.9/shop"),
            compat_link: Some(dir.join("new/homez.1/shop")),
            compat_target: Some(dir.join("new/homez.9/shop")),
            feed: None,
            owner_map: None,
        }],
        new_web_host: None,
        databases: vec![],
        old_db_url_file: dir.join("old.url"),
        new_db_url_file: dir.join("new.url"),
        proxy: ProxySpec {
            admin: "127.0.0.1:9".parse().unwrap(),
            token_file: dir.join("token"),
            ca_file: None,
            old_side: "old".into(),
            new_side: "new".into(),
        },
        tunnel: None,
        fingerprint: Some(FingerprintSpec {
            addr: format!("127.0.0.1:{}", old_hp.port()).parse().unwrap(),
            host: "be_shop".into(),
            path: "/".into(),
        }),
        budget: Budget::default(),
        artifacts: Default::default(),
    }
}

/// Real HAProxy and real file copies; no database, so the proxy (recorded) is never called.
fn file_systems(
    spec: &SiteSpec,
    old_hp: &HaproxyServer,
    new_hp: &HaproxyServer,
    jp: &std::path::Path,
) -> Systems {
    let rec = Recorder::for_site(spec, false);
    Systems {
        lb_old: Arc::new(Haproxy::new(old_hp.socket())),
        lb_new: Arc::new(Haproxy::new(new_hp.socket())),
        dns: None,
        proxy: rec.systems(spec).proxy,
        tunnel: None,
        data: Arc::new(LocalData::new(jp)),
    }
}

#[test]
fn site_moves_through_real_haproxy_and_rolls_back_with_new_side_writes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old, new, old_hp, new_hp) = two_dcs("shop front page");
    let new_lb = new_side_in_maint(&new_hp);

    let spec = spec(d, &old_hp, &new_hp, &old, &new);
    let home = &spec.homes[0];
    std::fs::create_dir_all(home.old.join("www/uploads")).unwrap();
    std::fs::write(home.old.join("www/index.php"), "<?php echo 1;").unwrap();
    std::fs::write(home.old.join("www/uploads/a.txt"), "first upload").unwrap();

    let jp = d.join("journal.sqlite");
    let sys = file_systems(&spec, &old_hp, &new_hp, &jp);
    let opts = EngineOptions::default();
    let mut j = SqliteJournal::open(&jp).unwrap();
    let report = Engine::new(&spec, &sys, &mut j, &opts).migrate().unwrap();
    assert_eq!(report.state, SiteState::Live);
    assert!(report.freeze_ms.is_some());
    let names: Vec<_> = report.phases.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "prepare",
            "sync",
            "freeze",
            "pause-dbs",
            "final-sync",
            "verify",
            "switch",
            "unfreeze",
            "post-check"
        ]
    );

    // The old VIP now forwards to the new web server; the new VIP serves too.
    let old_lb = Haproxy::new(old_hp.socket());
    let st = old_lb.server_state("be_shop", "srv").unwrap();
    assert_eq!((st.addr, st.admin), (new.addr, AdminState::Ready));
    assert_eq!(
        new_lb.server_state("be_shop", "srv").unwrap().admin,
        AdminState::Ready
    );
    // Files arrived; the old absolute path resolves on the new side through the compat link.
    let compat = home.compat_link.as_ref().unwrap();
    assert_eq!(
        std::fs::read_to_string(compat.join("www/uploads/a.txt")).unwrap(),
        "first upload"
    );

    // A customer writes on the new side after the switch; then the site is rolled back.
    std::fs::write(home.new.join("www/uploads/b.txt"), "written on new").unwrap();
    let report = rollback_site(Engine::new(&spec, &sys, &mut j, &opts)).unwrap();
    assert_eq!(report.state, SiteState::RolledBack);
    assert_eq!(
        std::fs::read_to_string(home.old.join("www/uploads/b.txt")).unwrap(),
        "written on new",
        "a write made on the new side was lost by the rollback"
    );
    let st = old_lb.server_state("be_shop", "srv").unwrap();
    assert_eq!((st.addr, st.admin), (old.addr, AdminState::Ready));
    assert_eq!(
        new_lb.server_state("be_shop", "srv").unwrap().admin,
        AdminState::Maint
    );
    assert!(j
        .steps("shop")
        .unwrap()
        .iter()
        .any(|s| s.phase == "rollback-copy" && s.bytes > 0));
    drop(j);

    // The operator's views read the same journal.
    let bin = env!("CARGO_BIN_EXE_migrator");
    let out = std::process::Command::new(bin)
        .args(["site", "show", "shop", "--journal"])
        .arg(&jp)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("shop: rolled_back"), "{text}");
    for phase in [
        "prepare",
        "freeze",
        "switch",
        "unfreeze",
        "rollback-copy",
        "rollback-unfreeze",
    ] {
        assert!(text.contains(phase), "missing {phase} in:\n{text}");
    }
    let out = std::process::Command::new(bin)
        .args(["status", "--journal"])
        .arg(&jp)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 sites: rolled_back 1"), "{text}");
    assert!(text.contains("freeze p50"), "{text}");

    // The same views as JSON (issue 22: `--json` on every read command).
    let json_of = |args: &[&str]| -> serde_json::Value {
        let out = std::process::Command::new(bin)
            .args(args)
            .arg("--journal")
            .arg(&jp)
            .arg("--json")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).expect("one JSON document")
    };
    let v = json_of(&["site", "show", "shop"]);
    assert_eq!(v["state"], "rolled_back");
    let phases: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["phase"].as_str().unwrap())
        .collect();
    assert!(
        phases.contains(&"switch") && phases.contains(&"rollback-unfreeze"),
        "{v}"
    );
    assert!(v["write_unavailability_ms"].as_f64().is_some(), "{v}");
    let v = json_of(&["status"]);
    assert_eq!(v["sites_total"], 1);
    assert_eq!(v["counts"]["rolled_back"], 1);
    assert_eq!(v["sites"][0]["site"], "shop");
    assert!(
        v["write_unavailability_ms"]["p50"].as_f64().is_some(),
        "{v}"
    );
}

#[test]
fn dry_run_prints_every_action_and_leaves_the_journal_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old, new, old_hp, new_hp) = two_dcs("x");
    let mut s = spec(d, &old_hp, &new_hp, &old, &new);
    s.databases = vec!["db_shop".into()];
    let file = d.join("sites.json");
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&SpecFile { sites: vec![s] }).unwrap(),
    )
    .unwrap();
    let jp = d.join("journal.sqlite");
    let bin = env!("CARGO_BIN_EXE_migrator");
    let out = std::process::Command::new(bin)
        .args(["site", "migrate", "shop", "--dry-run", "--sites"])
        .arg(&file)
        .arg("--journal")
        .arg(&jp)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "set server be_shop/srv state maint",
        "POST /routes/db_shop/pause",
        "POST /routes/db_shop/resume {\"side\":\"new\"}",
        "set server be_shop/srv addr",
        "shop: live",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    assert!(!jp.exists(), "a dry run wrote the journal");
    // Nothing changed on the real HAProxy.
    let st = Haproxy::new(old_hp.socket())
        .server_state("be_shop", "srv")
        .unwrap();
    assert_eq!(st.addr, old.addr);

    // A site not in the spec file is a clear error naming it.
    let out = std::process::Command::new(bin)
        .args(["site", "migrate", "nosuch", "--dry-run", "--sites"])
        .arg(&file)
        .arg("--journal")
        .arg(&jp)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("site `nosuch` is not in the site spec file")
    );
}

/// A running `migrator watch` on the old home, stopped (by its PID) when dropped.
struct Watch(std::process::Child);

impl Drop for Watch {
    fn drop(&mut self) {
        // SAFETY: signalling the child we spawned (SIGTERM: it removes its socket).
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// A home with a change feed (`migrator watch` where the writes land): after the first walk,
/// the passes (the freeze's too) re-stat what the feed names, and the freeze leaves the full
/// comparison of the files to after the switch (phase `post-verify`), which passes.
#[test]
fn a_watched_home_moves_through_its_feed_and_is_compared_after_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old, new, old_hp, new_hp) = two_dcs("shop front page");
    new_side_in_maint(&new_hp);
    let mut spec = spec(d, &old_hp, &new_hp, &old, &new);
    let home = spec.homes[0].clone();
    std::fs::create_dir_all(home.old.join("www/uploads")).unwrap();
    for i in 0..200 {
        std::fs::write(
            home.old.join(format!("www/f{i}.php")),
            format!("<?php {i};"),
        )
        .unwrap();
    }
    let socket = d.join("feed.sock");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_migrator"))
        .arg("watch")
        .arg(&home.old)
        .arg("--socket")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _watch = Watch(child);
    let t = std::time::Instant::now();
    // Ready once it accepts a connection (its socket file exists from bind(), a moment before
    // listen()); the watcher drops a connection that sends nothing.
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "watcher not ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    spec.homes[0].feed = Some(socket.clone());
    // Two passes before the freeze: the first walks and caches, the second uses the feed.
    spec.budget.max_delta_bytes = 0;
    spec.budget.max_sync_passes = 2;
    std::fs::write(home.old.join("www/uploads/late.txt"), "late upload").unwrap();

    let jp = d.join("journal.sqlite");
    let sys = file_systems(&spec, &old_hp, &new_hp, &jp);
    let opts = EngineOptions::default();
    let mut j = SqliteJournal::open(&jp).unwrap();
    let report = Engine::new(&spec, &sys, &mut j, &opts).migrate().unwrap();
    assert_eq!(report.state, SiteState::Live);
    let names: Vec<_> = report.phases.iter().map(|(p, _)| p.as_str()).collect();
    assert!(
        names.ends_with(&["switch", "unfreeze", "post-verify", "post-check"]),
        "{names:?}"
    );
    assert_eq!(
        std::fs::read_to_string(home.new.join("www/uploads/late.txt")).unwrap(),
        "late upload"
    );
    let steps: Vec<String> = j
        .steps("shop")
        .unwrap()
        .into_iter()
        .map(|s| format!("{}:{}", s.phase, s.status.name()))
        .collect();
    assert!(steps.contains(&"post-verify:done".to_string()), "{steps:?}");
    assert!(steps.contains(&"sync-files:done".to_string()), "{steps:?}");
}

/// Issue 20: a job due every second, fired on both sides by real `migrator cron-run`
/// processes through a real migrate and rollback: every slot runs once, never on the side not
/// owning the site (old until the switch, new until the rollback's switch, old after), and the
/// job keeps running on the owner after each move (no silent stop).
#[test]
fn cron_jobs_run_once_per_slot_on_the_owning_side_through_migrate_and_rollback() {
    use migrator::artifacts::fence::{self, Side};
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old, new, old_hp, new_hp) = two_dcs("shop front page");
    new_side_in_maint(&new_hp);
    let mut spec = spec(d, &old_hp, &new_hp, &old, &new);
    spec.artifacts.cron = vec![migrator::artifacts::CronJob {
        name: "tick".into(),
        schedule: "* * * * * *".into(),
        command: "true".into(),
        user: "root".into(),
    }];
    spec.artifacts.stage_dir = Some(d.join("stage").display().to_string());
    std::fs::create_dir_all(spec.homes[0].old.join("www")).unwrap();
    std::fs::write(spec.homes[0].old.join("www/index.php"), "<?php echo 1;").unwrap();
    let spec_file = d.join("sites.json");
    let text = serde_json::to_string(&SpecFile {
        sites: vec![spec.clone()],
    })
    .unwrap();
    std::fs::write(&spec_file, text).unwrap();
    let jp = d.join("journal.sqlite");
    let mut j = SqliteJournal::open(&jp).unwrap();

    // Each side's "cron": fires every 250 ms (four times per slot).
    let stop = Arc::new(AtomicBool::new(false));
    let tickers: Vec<_> = [Side::Old, Side::New]
        .into_iter()
        .map(|side| {
            let (stop, jp, spec_file) = (stop.clone(), jp.clone(), spec_file.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let st = std::process::Command::new(env!("CARGO_BIN_EXE_migrator"))
                        .arg("cron-run")
                        .arg("--journal")
                        .arg(&jp)
                        .arg("--spec")
                        .arg(&spec_file)
                        .args(["--site", "shop", "--job", "tick", "--side", side.as_str()])
                        .stderr(std::process::Stdio::null())
                        .status()
                        .unwrap();
                    assert!(st.success(), "{side:?}: {st}");
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
            })
        })
        .collect();
    let pause = || std::thread::sleep(std::time::Duration::from_millis(1500));
    pause();
    let sys = file_systems(&spec, &old_hp, &new_hp, &jp);
    let opts = EngineOptions::default();
    let report = Engine::new(&spec, &sys, &mut j, &opts).migrate().unwrap();
    assert_eq!(report.state, SiteState::Live);
    // Staged on the "new web server", disabled.
    let cron = std::fs::read_to_string(d.join("stage/shop/crontab")).unwrap();
    assert!(
        cron.contains("#* * * * * * root migrator cron-run"),
        "{cron}"
    );
    pause();
    let report = rollback_site(Engine::new(&spec, &sys, &mut j, &opts)).unwrap();
    assert_eq!(report.state, SiteState::RolledBack);
    pause();
    stop.store(true, Ordering::SeqCst);
    tickers.into_iter().for_each(|t| t.join().unwrap());

    let steps = j.steps("shop").unwrap();
    let at = |phase: &str| steps.iter().find(|s| s.phase == phase).unwrap().clone();
    let (switch, back) = (at("switch"), at("rollback-switch"));
    let runs = fence::runs(&j, "shop").unwrap();
    for r in &runs {
        let end = r.ended_ms.unwrap();
        match r.side {
            // The old side runs nothing from the switch to the rollback's switch.
            Side::Old => assert!(
                end <= switch.started_ms || r.started_ms >= back.ended_ms.unwrap(),
                "old ran while new owned the site: {r:?}"
            ),
            Side::New => assert!(
                r.started_ms >= switch.started_ms && end <= back.started_ms,
                "new ran while old owned the site: {r:?}"
            ),
        }
    }
    let count = |side: Side, from: i64, to: i64| {
        runs.iter()
            .filter(|r| r.side == side && r.started_ms >= from && r.started_ms <= to)
            .count()
    };
    let sw_end = switch.ended_ms.unwrap();
    let back_end = back.ended_ms.unwrap();
    assert!(count(Side::Old, 0, switch.started_ms) >= 1, "{runs:?}");
    assert!(count(Side::New, sw_end, back.started_ms) >= 1, "{runs:?}");
    assert!(count(Side::Old, back_end, i64::MAX) >= 1, "{runs:?}");
    // One run per slot (the journal is keyed by slot; each slot a distinct second).
    let mut slots: Vec<i64> = runs.iter().map(|r| r.slot).collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), runs.len());
    let t = fence::token(&j, "shop").unwrap().1;
    assert_eq!((t.owner, t.frozen), (Side::Old, false));
}

/// Issue 20 through the real systems (real HAProxy, local files, the real `sh` staging and
/// moving the artifacts): prepare stages the new side's artifacts disabled, the switch enables
/// them and disables the old side's, the rollback reverses both.
#[test]
fn the_switch_enables_the_staged_artifacts_and_the_rollback_reverses_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old, new, old_hp, new_hp) = two_dcs("shop front page");
    let mut spec = spec(d, &old_hp, &new_hp, &old, &new);
    std::fs::create_dir_all(spec.homes[0].old.join("www")).unwrap();
    std::fs::write(spec.homes[0].old.join("www/index.php"), "<?php echo 1;").unwrap();
    let mut a = migrator::artifacts::sample("shop");
    std::fs::create_dir_all(d.join("php/8.2/fpm")).unwrap();
    a.php.as_mut().unwrap().fpm_root = Some(d.join("php").display().to_string());
    let (new_stage, old_stage) = (d.join("new-stage"), d.join("old-stage"));
    a.stage_dir = Some(new_stage.display().to_string());
    a.old_stage_dir = Some(old_stage.display().to_string());
    spec.artifacts = a;
    let old_cron = "* * * * * root migrator cron-run --site shop --job tick --side old\n";
    std::fs::create_dir_all(old_stage.join("shop/active")).unwrap();
    std::fs::write(old_stage.join("shop/active/crontab"), old_cron).unwrap();
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).ok();

    let jp = d.join("journal.sqlite");
    let sys = file_systems(&spec, &old_hp, &new_hp, &jp);
    let opts = EngineOptions::default();
    let mut j = SqliteJournal::open(&jp).unwrap();
    let report = Engine::new(&spec, &sys, &mut j, &opts).migrate().unwrap();
    assert_eq!(report.state, SiteState::Live);
    let cron = read(new_stage.join("shop/active/crontab")).expect("enabled on new");
    let job = cron.lines().find(|l| l.contains("cron-run")).unwrap();
    assert!(
        job.starts_with(
            "*/10 * * * * * www-data migrator cron-run --site shop --job tick \
             --side new"
        ),
        "{cron}"
    );
    assert!(read(new_stage.join("shop/active/nginx-rules.conf"))
        .unwrap()
        .contains("X-Site"));
    assert!(read(new_stage.join("shop/active/php-pool.conf")).is_some());
    assert_eq!(read(old_stage.join("shop/active/crontab")), None);
    assert_eq!(
        read(old_stage.join("shop/active.disabled/crontab")).as_deref(),
        Some(old_cron)
    );
    assert_eq!(
        j.checkpoint_raw("artifacts-active", "shop")
            .unwrap()
            .as_deref(),
        Some("\"new\"")
    );

    let report = rollback_site(Engine::new(&spec, &sys, &mut j, &opts)).unwrap();
    assert_eq!(report.state, SiteState::RolledBack);
    assert_eq!(
        read(old_stage.join("shop/active/crontab")).as_deref(),
        Some(old_cron)
    );
    assert_eq!(read(new_stage.join("shop/active/crontab")), None);
    assert_eq!(
        j.checkpoint_raw("artifacts-active", "shop")
            .unwrap()
            .as_deref(),
        Some("\"old\"")
    );
}

/// Issue 20, `verify_served`: after the switch the new web server's answers are compared with
/// the site's rules and PHP settings; one that serves none of them (a web server not pointed
/// at the site's enabled artifacts) rolls the site back, the error naming each difference.
#[test]
fn a_new_side_serving_without_the_sites_rules_and_pool_is_rolled_back_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old, new, old_hp, new_hp) = two_dcs("shop front page");
    let mut spec = spec(d, &old_hp, &new_hp, &old, &new);
    std::fs::create_dir_all(spec.homes[0].old.join("www")).unwrap();
    std::fs::write(spec.homes[0].old.join("www/index.php"), "<?php echo 1;").unwrap();
    let mut a = migrator::artifacts::sample("shop");
    a.cron.clear();
    std::fs::create_dir_all(d.join("php/8.2/fpm")).unwrap();
    let p = a.php.as_mut().unwrap();
    p.fpm_root = Some(d.join("php").display().to_string());
    p.probe = Some("/?op=phpinfo".into());
    a.stage_dir = Some(d.join("new-stage").display().to_string());
    a.verify_served = true;
    spec.artifacts = a;

    let jp = d.join("journal.sqlite");
    let sys = file_systems(&spec, &old_hp, &new_hp, &jp);
    let mut j = SqliteJournal::open(&jp).unwrap();
    let e = Engine::new(&spec, &sys, &mut j, &EngineOptions::default())
        .migrate()
        .unwrap_err()
        .to_string();
    for what in [
        "redirect /old: HTTP 200",
        "header X-Site: None, expected \"shop\"",
        "php probe /?op=phpinfo: HTTP 200, not the JSON of the settings",
    ] {
        assert!(e.contains(what), "{what}: {e}");
    }
    assert!(
        e.contains(&format!("served by {} (be_shop)", new.addr)),
        "{e}"
    );
    assert_eq!(
        j.site_state("shop").unwrap(),
        Some(SiteState::RolledBack),
        "{e}"
    );
    // The old side serves again.
    let lb = Haproxy::new(old_hp.socket());
    let s = lb.server_state("be_shop", "srv").unwrap();
    assert_eq!(s.addr, old.addr, "{s:?}");
}

//! Integration tests against the real lab: real namespaces, MariaDB, nginx + php-fpm, HAProxy,
//! Knot, sshd and the WireGuard tunnel. They need root (CI runs as root).

use scenarios::lab::{self, LabConfig, LabGuard};
use scenarios::sites::SiteSpec;
use scenarios::state::LabState;
use scenarios::traffic::SiteProbe;
use scenarios::{scenario, status, topology};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if root {
        // The lab runs our sql-proxy daemon (a binary of another package).
        scenarios::tools::find_or_build("sql-proxy").expect("sql-proxy binary");
    }
    root
}

/// A unique state root per test (PID + counter), removed at the end.
fn state_root() -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let p = std::env::temp_dir().join(format!("hostmove-lab-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn small_spec() -> SiteSpec {
    SiteSpec {
        small_files: 20,
        large_files: 1,
        large_file_kib: 128,
        rows: 50,
        db_mib: Vec::new(),
    }
}

fn assert_nothing_left(st: &LabState) {
    let report = lab::leftovers(st);
    assert!(
        report.leftovers.is_empty(),
        "left behind: {:?}",
        report.leftovers
    );
    for ns in st.namespaces() {
        assert!(!topology::netns_exists(ns), "namespace {ns} still exists");
    }
    assert!(
        !st.old.filer.path.exists(),
        "{} left",
        st.old.filer.path.display()
    );
    assert!(
        !st.new.filer.path.exists(),
        "{} left",
        st.new.filer.path.display()
    );
    for ns in [&st.old.netns, &st.new.netns, &st.client.netns] {
        assert!(!Path::new("/etc/netns").join(ns).exists());
    }
    for rec in &st.processes {
        assert!(
            !scenarios::process::alive(rec),
            "{} still runs",
            rec.service
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*st.state_dir.to_string_lossy()),
        "a mount under the state dir is left"
    );
    assert!(!st.state_dir.exists(), "state dir left");
}

/// `scenarios probe` from the client namespace: read, write, read again on every site.
fn probe(st: &LabState) -> Vec<SiteProbe> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &st.client.netns,
            env!("CARGO_BIN_EXE_scenarios"),
        ])
        .args(["probe", "--state-dir", &st.state_dir.to_string_lossy()])
        .output()
        .expect("run probe");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "probe output: {e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `sqlproxy_queries_total` of a proxy instance, over every database.
fn proxy_queries(p: &scenarios::state::ProxyState) -> u64 {
    let m = scenarios::sql_proxy::admin_get_at(p, "/metrics").expect("GET /metrics");
    m.lines()
        .filter(|l| l.starts_with("sqlproxy_queries_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<u64>().ok())
        .sum()
}

#[test]
fn fleet_lab_galera_store_two_proxies_split_customers_and_down_leaves_nothing() {
    if !is_root() {
        eprintln!("skipped: the lab needs root (namespaces, mounts, daemons); CI runs as root");
        return;
    }
    let root = state_root();
    let mut cfg = LabConfig::new("fleet", &root, 6);
    cfg.spec = small_spec();
    cfg.tunnel = false;
    cfg.fleet = true;
    let guard = LabGuard::up(&cfg).expect("lab up --fleet");
    let st = guard.state.clone();
    let f = st.fleet.clone().expect("fleet state");

    // Every service answers, the three Galera nodes and the second proxy included.
    let lines = status::status(&st);
    let bad: Vec<_> = lines.iter().filter(|l| !l.healthy).collect();
    assert!(bad.is_empty(), "unhealthy: {bad:?}");
    for name in [
        "ctl/galera-node1",
        "ctl/galera-node2",
        "ctl/galera-node3",
        "old-dc/sql-proxy-2",
    ] {
        assert!(lines.iter().any(|l| l.service == name), "{name} missing");
    }
    for n in &f.nodes {
        let (state, size) = scenarios::galera::node_state(n).expect("wsrep status");
        assert_eq!((state.as_str(), size), ("Synced", 3), "{}", n.service);
    }
    // The store is reachable from the workers' namespace and from old-dc's proxies, and its
    // namespace has no route out of the lab.
    for n in &f.nodes {
        let a = SocketAddr::from((n.addr, n.port));
        topology::tcp_probe(&st.client.netns, a).expect("client → galera");
        topology::tcp_probe(&st.old.netns, a).expect("old-dc → galera");
    }
    let routes = Command::new("ip")
        .args(["-n", &f.netns, "route", "show", "default"])
        .output()
        .unwrap();
    assert!(
        routes.stdout.is_empty(),
        "a default route in the store's namespace"
    );

    // Both proxies joined one fleet, live, on the same epoch.
    let p2 = f.proxy2.as_ref().expect("second proxy");
    let fleet: serde_json::Value = serde_json::from_str(
        &scenarios::sql_proxy::admin_get_at(p2, "/fleet").expect("GET /fleet"),
    )
    .unwrap();
    let live: Vec<&serde_json::Value> = fleet["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["live"] == true)
        .collect();
    assert_eq!(live.len(), 2, "{fleet}");
    assert_eq!(fleet["fenced"], false, "{fleet}");

    // Customers' code split between the endpoints; every site works through its own, and
    // each proxy served queries.
    let on2 = st.sites.iter().filter(|s| s.sql_host.is_some()).count();
    assert_eq!(on2, 3, "half the sites on sql2");
    let before = [st.sql_proxy.as_ref().unwrap(), p2].map(proxy_queries);
    let probes = probe(&st);
    assert_eq!(probes.len(), 6);
    for p in &probes {
        assert!(p.read_ok && p.write_ok && p.visible, "site failed: {p:?}");
    }
    let after = [st.sql_proxy.as_ref().unwrap(), p2].map(proxy_queries);
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "{before:?} → {after:?}"
    );

    // `lab down` (the command's code path) leaves nothing: no node, proxy, namespace, mount.
    lab::down("fleet", &root).expect("lab down");
    assert_nothing_left(&st);
    drop(guard);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn lab_with_20_sites_serves_every_site_end_to_end_and_leaves_nothing() {
    if !is_root() {
        eprintln!("skipped: the lab needs root (namespaces, mounts, daemons); CI runs as root");
        return;
    }
    let root = state_root();
    let mut cfg = LabConfig::new("it", &root, 20);
    cfg.spec = small_spec();
    let guard = LabGuard::up(&cfg).expect("lab up");
    let st = guard.state.clone();
    assert_eq!(st.sites.len(), 20);

    // `lab up` twice is safe: the same run, nothing rebuilt.
    let again = lab::up(&cfg).expect("second lab up");
    assert_eq!(again.run_id, st.run_id);

    // Every service answers.
    let lines = status::status(&st);
    let bad: Vec<_> = lines.iter().filter(|l| !l.healthy).collect();
    assert!(bad.is_empty(), "unhealthy: {bad:?}");

    // From the client: DNS → old VIP → HAProxy → nginx/php → MariaDB, for every site;
    // a write is visible on the next read.
    let probes = probe(&st);
    assert_eq!(probes.len(), 20);
    for (p, site) in probes.iter().zip(&st.sites) {
        assert!(p.read_ok && p.write_ok && p.visible, "site failed: {p:?}");
        assert_eq!(p.server.as_deref(), Some(&*st.old.web_addr.to_string()));
        // The PHP code wrote to its ABSOLUTE path, which is the old filer in old-dc's mount
        // namespace; the bytes are in the filer's backing directory.
        let abs = site
            .home
            .join("www/uploads")
            .join(format!("{}.txt", p.token));
        assert_eq!(p.upload_path.as_deref(), Some(&*abs.to_string_lossy()));
        assert!(abs.starts_with(format!("/homez.{}", st.old.filer.number)));
        let backing = st
            .old
            .filer
            .backing_dir
            .join(&site.login)
            .join("www/uploads")
            .join(format!("{}.txt", p.token));
        assert_eq!(std::fs::read_to_string(&backing).unwrap(), "probe");
    }
    // The row is in the site's database on the old shared SQL server.
    let rows = scenarios::dc_services::mariadb_exec(
        &st.old,
        &format!(
            "SELECT COUNT(*) FROM `{}`.events WHERE token = '{}'",
            st.sites[0].database, probes[0].token
        ),
    )
    .unwrap();
    assert_eq!(rows.trim(), "1");
    // The DB endpoint is our sql-proxy: every database routed to old-dc, and the sites' SQL
    // went through it (MariaDB itself listens on another address, named by no site).
    let routes = scenarios::sql_proxy::routes(&st).expect("proxy admin API");
    for s in &st.sites {
        assert_eq!(routes.get(&s.database).map(String::as_str), Some("old"));
    }
    let metrics = scenarios::sql_proxy::admin_get(&st, "/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sqlproxy_queries_total")),
        "no query went through the proxy"
    );
    assert_ne!(st.old.mariadb_addr(), st.old.sql_addr);
    // Shared databases: site0010 uses site0009's database.
    assert_eq!(st.sites[9].database, st.sites[8].database);

    // The migrator's SSH access: host key verified against the lab's known_hosts, and the
    // old DC's sshd sees the filer at its absolute path.
    let ssh = Command::new("ip")
        .args(["netns", "exec", &st.client.netns, "ssh"])
        .args(["-i", &st.old.ssh_client_key.to_string_lossy()])
        .args([
            "-o",
            &format!("UserKnownHostsFile={}", st.old.known_hosts.display()),
        ])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .arg(format!("root@ssh.old.{}", st.zone))
        .arg(format!("ls {}/www/index.php", st.sites[0].home.display()))
        .output()
        .unwrap();
    assert!(
        ssh.status.success(),
        "ssh: {}",
        String::from_utf8_lossy(&ssh.stderr)
    );

    // DNS: Knot refuses unsigned updates and accepts TSIG-signed ones.
    let upd = root.join("update.txt");
    std::fs::write(
        &upd,
        format!(
            "server {} {}\nzone {}.\nupdate add tsig-probe.{}. 60 A 10.9.9.9\nsend\n",
            st.dns.addr, st.dns.port, st.zone, st.zone
        ),
    )
    .unwrap();
    let knsupdate = |key: Option<&Path>| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &st.client.netns, "knsupdate"]);
        if let Some(k) = key {
            c.arg("-k").arg(k);
        }
        c.arg(&upd).output().unwrap()
    };
    assert!(
        !knsupdate(None).status.success(),
        "unsigned update accepted"
    );
    let key_line = std::fs::read_to_string(&st.dns.tsig_key_file).unwrap();
    let key_line = key_line.lines().next().unwrap().trim_start_matches("# ");
    let keyfile = root.join("private-key.txt");
    scenarios::secrets::write_secret(&keyfile, key_line.as_bytes()).unwrap();
    let signed = knsupdate(Some(&keyfile));
    assert!(
        signed.status.success(),
        "signed update refused: {}",
        String::from_utf8_lossy(&signed.stdout)
    );

    // The planner-compatible inventory lists every site with its absolute home.
    let inv = scenarios::inventory::read_sites(st.inventory_dir.as_ref().unwrap()).unwrap();
    assert_eq!(inv.len(), 20);
    assert_eq!(inv[0]["home"], st.sites[0].home.to_string_lossy().as_ref());
    let loaded = planner::load(
        st.inventory_dir.as_ref().unwrap(),
        &planner::LoadOptions::default(),
    )
    .expect("the planner accepts the lab's inventory");
    assert_eq!(loaded.sites.recs.len(), 20);

    // old-dc and new-dc reach each other's LAN through the tunnel.
    if cfg.tunnel {
        let new_sql = SocketAddr::from((st.new.sql_addr, st.new.sql_port));
        topology::tcp_probe(&st.old.netns, new_sql).expect("old-dc → new-dc SQL via tunnel");
        let old_web = SocketAddr::from((st.old.web_addr, 80));
        let (code, _) = topology::http_get(&st.new.netns, old_web, "health", "/healthz")
            .expect("new-dc → old-dc web via tunnel");
        assert_eq!(code, 200);
    }

    drop(guard);
    assert_nothing_left(&st);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn baseline_scenario_passes_with_zero_errors_and_zero_lost_writes() {
    if !is_root() {
        eprintln!("skipped: the lab needs root (namespaces, mounts, daemons); CI runs as root");
        return;
    }
    let root = state_root();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("baseline");
    let report = scenario::run(&dir, &root, Path::new(env!("CARGO_BIN_EXE_scenarios")))
        .expect("scenario run");
    assert!(report.passed(), "violations: {:?}", report.violations);
    assert!(report.check.requests >= 500);
    assert_eq!(report.check.failed, 0);
    assert_eq!(report.check.lost(), 0);
    assert!(report.check.acked_writes >= 100);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_lab_that_fails_to_come_up_leaves_nothing() {
    if !is_root() {
        eprintln!("skipped: the lab needs root (namespaces, mounts, daemons); CI runs as root");
        return;
    }
    let root = state_root();
    // A lab whose site tree cannot be written: rows fine, but the filer dir is made a file.
    let mut cfg = LabConfig::new("broken", &root, 2);
    cfg.spec = small_spec();
    cfg.tunnel = false;
    // Occupy the state path with a file where a directory must go: the DC dir creation fails
    // after namespaces and mounts exist.
    std::fs::create_dir_all(root.join("broken")).unwrap();
    std::fs::write(root.join("broken").join("old-dc"), b"not a directory").unwrap();
    let err = lab::up(&cfg).expect_err("up must fail");
    assert!(err.to_string().contains("old-dc"), "{err}");
    let st = LabState::load(&root.join("broken")).expect("state kept for inspection");
    let report = lab::leftovers(&st);
    assert!(
        report.leftovers.is_empty(),
        "left behind: {:?}",
        report.leftovers
    );
    lab::down("broken", &root).unwrap();
    assert!(!root.join("broken").exists());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn injected_haproxy_maintenance_is_seen_as_failures_of_that_site_only() {
    if !is_root() {
        eprintln!("skipped: the lab needs root (namespaces, mounts, daemons); CI runs as root");
        return;
    }
    let root = state_root();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("maint-one-site");
    let report = scenario::run(&dir, &root, Path::new(env!("CARGO_BIN_EXE_scenarios")))
        .expect("scenario run");
    assert!(report.passed(), "violations: {:?}", report.violations);
    assert!(report.check.failed >= 20, "the fault must be visible");
    let log = scenarios::check::read_log(&report.log).unwrap();
    assert!(log.iter().filter(|r| !r.ok).all(|r| r.site == "site0003"));
    assert_eq!(report.check.lost(), 0);
    assert_eq!(report.faults.len(), 2, "{:?}", report.faults);
    std::fs::remove_dir_all(&root).unwrap();
}

/// `lab up --artifacts` (issue 20): a cron daemon per DC, old-dc's site crontabs active, and a
/// run through the real `migrator cron-run` once the env file names a journal and a spec: its
/// row (through the old DB hostname) and its file are on old-dc. `lab down` stops both daemons.
#[test]
fn artifacts_lab_runs_each_sites_job_on_old_dc_and_down_leaves_nothing() {
    if !is_root() {
        eprintln!("skipped: the lab needs root (namespaces, mounts, daemons); CI runs as root");
        return;
    }
    scenarios::tools::find_or_build("migrator").expect("migrator binary");
    let root = state_root();
    let mut cfg = LabConfig::new("art", &root, 2);
    cfg.spec = small_spec();
    cfg.tunnel = false;
    cfg.artifacts = true;
    let guard = LabGuard::up(&cfg).expect("lab up");
    let st = guard.state.clone();
    let a = st.artifacts.clone().expect("the state names the artifacts");
    let lines = status::status(&st);
    let line = |s: &str| lines.iter().find(|l| l.service == s).expect(s).clone();
    let (old, new) = (line("old-dc/crond"), line("new-dc/crond"));
    assert!(old.healthy && new.healthy, "{old:?} {new:?}");
    assert!(
        old.detail.starts_with("2 site crontab(s) active; waiting"),
        "{old:?}"
    );
    assert!(
        new.detail.starts_with("0 site crontab(s) active"),
        "{new:?}"
    );

    // The migration's journal and spec, named in the env file: the daemons start running.
    let dir = root.join("mig");
    std::fs::create_dir_all(&dir).unwrap();
    let p = st.sql_proxy.as_ref().unwrap();
    let spec = migrator::lab_spec::specs_from_lab(
        &LabState::path(&st.state_dir),
        &migrator::lab_spec::LabOptions {
            proxy_admin: p.admin,
            proxy_token_file: p.token_file.clone(),
            tunnel: None,
            secrets_dir: dir.join("secrets"),
            budget: Default::default(),
        },
    )
    .expect("specs from the lab");
    assert_eq!(spec.sites[0].artifacts.cron.len(), 1);
    let (journal, sites) = (dir.join("journal.sqlite"), dir.join("sites.json"));
    std::fs::write(&sites, serde_json::to_string(&spec).unwrap()).unwrap();
    migrator::journal::SqliteJournal::open(&journal).unwrap();
    scenarios::cron_lab::write_env(&a, &journal, &sites).unwrap();
    let login = st.sites[0].login.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let run = loop {
        let j = migrator::journal::SqliteJournal::open(&journal).unwrap();
        let runs = migrator::artifacts::fence::runs(&j, &login).unwrap();
        if let Some(r) = runs.into_iter().find(|r| r.ended_ms.is_some()) {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no run of {login} in 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(run.side, migrator::artifacts::fence::Side::Old);
    assert_eq!(run.exit, Some(0), "{run:?}");
    let file = scenarios::cron_lab::out_dir_on(&st, &a, scenarios::state::Side::Old, &login)
        .join(scenarios::php_app::cron_file(&a.job, run.slot));
    let text = std::fs::read_to_string(&file).expect("the run's file");
    assert!(text.starts_with("old "), "{text}");
    let token = scenarios::php_app::cron_token(&login, &a.job, run.slot);
    let rows = scenarios::dc_services::mariadb_exec(
        &st.old,
        &format!(
            "SELECT COUNT(*) FROM `{}`.events WHERE token = '{token}';",
            st.sites[0].database
        ),
    )
    .unwrap();
    assert_eq!(rows.trim(), "1");

    let daemons: Vec<_> = st
        .processes
        .iter()
        .filter(|p| p.service.ends_with("/crond"))
        .cloned()
        .collect();
    assert_eq!(daemons.len(), 2);
    drop(guard);
    for d in &daemons {
        assert!(!scenarios::process::alive(d), "{d:?} still runs");
    }
    assert_nothing_left(&st);
    std::fs::remove_dir_all(&root).unwrap();
}

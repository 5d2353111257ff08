//! The proxy disagrees with the journal, against the REAL `sql-proxy` binary (route store,
//! admin API with a token) in front of two real MariaDB servers: a site switched in the
//! journal, its database's route put back on the old side behind the migrator's back (a
//! `PUT` straight to the admin API, and a client's write then lands on the old side) →
//! `migrator routes check`, `migrator status --sites` and `migrator lease-watch --once` see it
//! (exit code 3, the line, the journal's record) → `routes reconcile --dry-run` changes nothing
//! → `routes reconcile` sets it back → the next write lands on the new side and the check is
//! clean. A paused database is left alone (and a real proxy refuses `PUT` on it with 409), a
//! proxy that does not answer is exit 4, and `migrator wave run` refuses to start on a
//! mismatch, printing the command that repairs it.

use drivers::http::{HttpClient, Method};
use drivers::proxy::ProxyError;
use migrator::journal::{JournalStore, SiteState, SqliteJournal};
use migrator::route_check::store;
use mysql_async::prelude::*;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use testkit::MariaDb;

const BIN: &str = env!("CARGO_BIN_EXE_migrator");
const TOKEN: &str = "routes-test-token-0123456789";

/// The `sql-proxy` binary of this workspace, built (a no-op when fresh) in this test's profile:
/// `cargo test -p migrator` builds only this package's binaries.
fn sql_proxy_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/routes_proxy-HASH → target/<profile>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "--quiet", "-p", "sql-proxy", "--bin", "sql-proxy"]);
    if release {
        c.arg("--release");
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "cargo build -p sql-proxy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = profile_dir.join("sql-proxy");
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

fn secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The proxy daemon, stopped by its own PID on drop.
struct ProxyGuard(Child);

impl Drop for ProxyGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two MariaDB servers holding `shop_db` (user `app` on both), the real proxy in front with
/// `shop_db` routed to the new side, the site spec and a journal saying site `shop` is live.
struct World {
    old: MariaDb,
    new: MariaDb,
    _proxy: ProxyGuard,
    listen: SocketAddr,
    admin: SocketAddr,
    dir: tempfile::TempDir,
    sites: PathBuf,
    journal: PathBuf,
}

impl World {
    fn start() -> World {
        let old = MariaDb::start().unwrap();
        let new = MariaDb::start().unwrap();
        for db in [&old, &new] {
            db.exec(
                "CREATE DATABASE shop_db; CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw'; \
                 GRANT ALL ON shop_db.* TO 'app'@'%'; \
                 CREATE TABLE shop_db.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20)); \
                 FLUSH PRIVILEGES;",
            )
            .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let bin = sql_proxy_bin();
        secret(&d.join("admin.pw"), testkit::mariadb::ADMIN_PASSWORD);
        let out = Command::new(&bin)
            .args([
                "sync-users",
                "--user",
                testkit::mariadb::ADMIN_USER,
                "--from",
            ])
            .arg(format!("127.0.0.1:{}", old.port()))
            .arg("--password-file")
            .arg(d.join("admin.pw"))
            .arg("--out")
            .arg(d.join("users.json"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        secret(&d.join("token"), TOKEN);
        let port = testkit::free_port().unwrap();
        let admin_port = testkit::free_port().unwrap();
        let cfg = d.join("proxy.toml");
        std::fs::write(
            &cfg,
            format!(
                "listen = [\"127.0.0.1:{port}\"]\nusers_file = \"{}\"\ndefault_side = \"old\"\n\
                 [backends]\nold = \"127.0.0.1:{}\"\nnew = \"127.0.0.1:{}\"\n\
                 [databases.shop_db]\nside = \"new\"\nmode = \"open\"\n\
                 [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken_file = \"{}\"\n",
                d.join("users.json").display(),
                old.port(),
                new.port(),
                d.join("token").display()
            ),
        )
        .unwrap();
        let out = Command::new(&bin)
            .args(["routes", "init", "--from-config", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::File::create(d.join("proxy.log")).unwrap();
        let mut proxy = ProxyGuard(
            Command::new(&bin)
                .args(["run", "--config"])
                .arg(&cfg)
                .env("SQL_PROXY_WORKER_THREADS", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
        let up = (0..400).any(|_| {
            std::thread::sleep(Duration::from_millis(25));
            if let Ok(Some(st)) = proxy.0.try_wait() {
                panic!(
                    "sql-proxy exited ({st}): {}",
                    std::fs::read_to_string(d.join("proxy.log")).unwrap_or_default()
                );
            }
            std::net::TcpStream::connect(admin).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "sql-proxy did not listen");
        let sites = d.join("sites.json");
        write_spec(&sites, d, admin, &[("shop", &["shop_db"])]);
        let journal = d.join("journal.sqlite");
        SqliteJournal::open(&journal)
            .unwrap()
            .set_site_state("shop", SiteState::Live)
            .unwrap();
        World {
            old,
            new,
            _proxy: proxy,
            listen: format!("127.0.0.1:{port}").parse().unwrap(),
            admin,
            dir,
            sites,
            journal,
        }
    }

    /// `migrator ARGS --sites S --journal J`.
    fn migrator(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--sites")
            .arg(&self.sites)
            .arg("--journal")
            .arg(&self.journal)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// An admin API call with the token, straight to the proxy (as someone behind the
    /// migrator's back would do it).
    fn admin(&self, method: Method, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let mut r = HttpClient::for_addr(self.admin, Duration::from_secs(30))
            .unwrap()
            .request(method, path)
            .header("Authorization", &format!("Bearer {TOKEN}"));
        if let Some(b) = body {
            r = r.body("application/json", b);
        }
        let a = r.send().unwrap();
        (
            a.status,
            serde_json::from_slice(&a.body).unwrap_or_default(),
        )
    }

    fn route(&self) -> (String, String, u64) {
        let (code, v) = self.admin(Method::Get, "/routes/shop_db", None);
        assert_eq!(code, 200, "{v}");
        (
            v["side"].as_str().unwrap().to_string(),
            v["mode"].as_str().unwrap().to_string(),
            v["epoch"]
                .as_u64()
                .expect("a proxy with a route store sends epochs"),
        )
    }

    /// A customer's write through the proxy's old endpoint.
    fn write(&self, v: &str) {
        let url = format!(
            "mysql://app:app-pw@{}/shop_db?prefer_socket=false",
            self.listen
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = mysql_async::Pool::new(url.as_str());
            let mut c = pool.get_conn().await.unwrap();
            c.query_drop(format!("INSERT INTO t (v) VALUES ('{v}')"))
                .await
                .unwrap();
            drop(c);
            pool.disconnect().await.unwrap();
        });
    }
}

/// Rows with `v` on one backend, read there directly.
fn rows(db: &MariaDb, v: &str) -> u32 {
    db.exec(&format!("SELECT COUNT(*) FROM shop_db.t WHERE v = '{v}'"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A site spec file: each site with its databases, all on one proxy.
fn write_spec(path: &Path, d: &Path, admin: SocketAddr, sites: &[(&str, &[&str])]) {
    let sites: Vec<serde_json::Value> = sites
        .iter()
        .map(|(s, dbs)| {
            serde_json::json!({
                "site": s,
                "old_vip": "127.0.0.1", "new_vip": "127.0.0.2",
                "old_lb": {"socket": d.join("old.sock"), "backend": format!("be_{s}"), "server": "srv"},
                "new_lb": {"socket": d.join("new.sock"), "backend": format!("be_{s}"), "server": "srv"},
                "old_web": "127.0.0.1:9", "new_web": "127.0.0.1:9",
                "homes": [{"old": d.join("old").join(s), "new": d.join("new").join(s)}],
                "databases": dbs,
                "old_db_url_file": d.join("old.url"), "new_db_url_file": d.join("new.url"),
                "proxy": {"admin": admin, "token_file": d.join("token")},
            })
        })
        .collect();
    std::fs::write(path, serde_json::json!({ "sites": sites }).to_string()).unwrap();
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn latest_check(journal: &Path) -> store::Recorded {
    let conn = migrator::journal::open_sql_at(journal).unwrap();
    store::latest(&*conn).unwrap().expect("a recorded check")
}

#[test]
fn a_route_changed_behind_the_migrators_back_is_found_and_repaired() {
    let w = World::start();
    let out = w.migrator(&["routes", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    w.write("before");
    assert_eq!((rows(&w.new, "before"), rows(&w.old, "before")), (1, 0));

    // Behind the migrator's back: the live site's database sent back to the old side.
    let (_, _, epoch0) = w.route();
    let (code, v) = w.admin(Method::Put, "/routes/shop_db", Some(r#"{"side":"old"}"#));
    assert_eq!(code, 200, "{v}");
    w.write("astray");
    assert_eq!(
        (rows(&w.old, "astray"), rows(&w.new, "astray")),
        (1, 0),
        "the split brain the check exists for: a write on the side the journal left"
    );
    let (side, mode, epoch) = w.route();
    assert_eq!((side.as_str(), mode.as_str()), ("old", "open"));
    assert!(epoch > epoch0);

    // Found: routes check, status --sites, lease-watch --once (recorded in the journal).
    let out = w.migrator(&["routes", "check"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(
        t.contains("ROUTE MISMATCH shop_db: journal says new")
            && t.contains("serves old (mode open, epoch")
            && t.contains("(site shop, journal state live)"),
        "{t}"
    );
    assert!(t.contains("migrator routes reconcile --sites"), "{t}");
    let out = w.migrator(&["routes", "check", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &v["mismatches"][0];
    assert_eq!(
        (&m["site"], &m["database"], &m["journal_state"]),
        (&"shop".into(), &"shop_db".into(), &"live".into())
    );
    assert_eq!(
        (&m["expected_side"], &m["proxy_side"]),
        (&"new".into(), &"old".into())
    );
    assert_eq!(
        (&m["proxy_mode"], &m["epoch"]),
        (&"open".into(), &epoch.into())
    );
    assert_eq!(latest_check(&w.journal).mismatches, 1);

    let out = Command::new(BIN)
        .args(["status", "--journal"])
        .arg(&w.journal)
        .arg("--sites")
        .arg(&w.sites)
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(
        t.contains("shop") && t.contains("ROUTE MISMATCH shop_db"),
        "{t}"
    );

    store::record(&w.journal, &Default::default()).unwrap();
    let out = w.migrator(&["lease-watch", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("ROUTE MISMATCH shop_db"),
        "{}",
        text(&out)
    );
    let rec = latest_check(&w.journal);
    assert_eq!(rec.mismatches, 1, "lease-watch recorded its check");
    assert_eq!(rec.report["mismatches"][0]["database"], "shop_db");

    // --dry-run: the line, and nothing changed on the proxy.
    let out = w.migrator(&["routes", "reconcile", "--dry-run"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("shop_db: old -> new (site shop, journal state live): dry run, not changed"),
        "{t}"
    );
    assert_eq!(
        w.route(),
        (side.clone(), mode.clone(), epoch),
        "dry run changed the route"
    );

    // The repair.
    let out = w.migrator(&["routes", "reconcile"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("shop_db: old -> new (site shop, journal state live)\n"),
        "{t}"
    );
    let (side, mode, epoch2) = w.route();
    assert_eq!((side.as_str(), mode.as_str()), ("new", "open"));
    assert!(epoch2 > epoch);
    w.write("after");
    assert_eq!((rows(&w.new, "after"), rows(&w.old, "after")), (1, 0));
    assert_eq!(
        latest_check(&w.journal).mismatches,
        0,
        "reconcile recorded the fixed state"
    );

    let out = w.migrator(&["routes", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = w.migrator(&["routes", "reconcile"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("repaired 0 of 0 mismatches"),
        "{}",
        text(&out)
    );
    assert_eq!(w.route().2, epoch2, "a clean reconcile changes nothing");
    drop(w.dir);
}

#[test]
fn paused_outside_a_freeze_is_reported_never_resumed_and_a_dead_proxy_is_not_confirmed() {
    let w = World::start();
    let (code, v) = w.admin(Method::Post, "/routes/shop_db/pause", Some("{}"));
    assert_eq!(code, 200, "{v}");
    let out = w.migrator(&["routes", "check"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(
        t.contains("ROUTE PAUSED OUTSIDE A FREEZE shop_db")
            && t.contains("lease-watch or abort decides"),
        "{t}"
    );
    let (_, _, epoch) = w.route();
    let out = w.migrator(&["routes", "reconcile"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("shop_db: NOT CHANGED, paused on new"), "{t}");
    assert_eq!(w.route(), ("new".into(), "paused".into(), epoch));
    // Had it tried: the real proxy refuses a PUT on a paused database (409).
    let spec = migrator::site_spec::SpecFile::load(&w.sites).unwrap();
    let admin =
        migrator::real_systems::route_admin(&spec.sites[0].proxy, Duration::from_secs(10)).unwrap();
    match admin.set_side("shop_db", "old") {
        Err(ProxyError::Refused { status: 409, .. }) => {}
        other => panic!("expected 409, got {other:?}"),
    }
    let (code, v) = w.admin(Method::Post, "/routes/shop_db/resume", Some("{}"));
    assert_eq!(code, 200, "{v}");
    let out = w.migrator(&["routes", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A proxy that does not answer: nothing confirmed, exit 4.
    let closed: SocketAddr = format!("127.0.0.1:{}", testkit::free_port().unwrap())
        .parse()
        .unwrap();
    let dead = w.dir.path().join("dead.json");
    write_spec(&dead, w.dir.path(), closed, &[("shop", &["shop_db"])]);
    let out = Command::new(BIN)
        .args(["routes", "check", "--sites"])
        .arg(&dead)
        .arg("--journal")
        .arg(&w.journal)
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(4), "{t}");
    assert!(t.contains(&format!("PROXY NOT CONFIRMED {closed}")), "{t}");
}

#[test]
fn wave_run_refuses_to_start_while_the_proxy_disagrees() {
    let w = World::start();
    let d = w.dir.path();
    let ok = |c: &mut Command| {
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    };
    ok(Command::new(BIN)
        .args(["inventory", "generate", "--sites", "6", "--out"])
        .arg(d.join("inv")));
    ok(Command::new(BIN)
        .args(["plan", "--inventory"])
        .arg(d.join("inv"))
        .arg("--out")
        .arg(d.join("plan.json")));
    let plan = planner::Plan::read(&d.join("plan.json")).unwrap();
    let wave = &plan.waves[0];
    let names: Vec<String> = wave
        .groups
        .iter()
        .flat_map(|g| g.sites.iter().cloned())
        .collect();
    // The wave's sites; another site, already live, owns shop_db.
    let mut listed: Vec<(&str, &[&str])> = names.iter().map(|n| (n.as_str(), &[][..])).collect();
    listed.push(("shop", &["shop_db"]));
    write_spec(&w.sites, d, w.admin, &listed);
    let (code, v) = w.admin(Method::Put, "/routes/shop_db", Some(r#"{"side":"old"}"#));
    assert_eq!(code, 200, "{v}");
    let (_, _, epoch) = w.route();

    let run = |w: &World| {
        Command::new(BIN)
            .args(["wave", "run", &wave.number.to_string(), "--plan"])
            .arg(d.join("plan.json"))
            .arg("--sites")
            .arg(&w.sites)
            .arg("--journal")
            .arg(&w.journal)
            .args(["--gate-wait", "1", "--retries", "0", "--max-failures", "0"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&w);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(
        t.contains(&format!("wave {} NOT STARTED", wave.number)),
        "{t}"
    );
    assert!(t.contains("ROUTE MISMATCH shop_db"), "{t}");
    let fix = format!(
        "migrator routes reconcile --sites {} --journal {}",
        w.sites.display(),
        w.journal.display()
    );
    assert!(
        t.contains(&format!("{fix} --dry-run\n")) && t.contains(&format!("{fix}\n")),
        "{t}"
    );
    // Nothing started: no site of the wave journaled, no step, the route untouched.
    let j = SqliteJournal::open(&w.journal).unwrap();
    for n in &names {
        assert_eq!(j.site_state(n).unwrap(), None, "{n} was touched");
        assert!(j.steps(n).unwrap().is_empty(), "{n} ran a step");
    }
    assert_eq!(w.route(), ("old".into(), "open".into(), epoch));
    assert!(!migrator::control_socket::default_path(&w.journal).exists());

    // The printed command repairs it; then the wave gets past the check (its sites then
    // fail on their missing HAProxy sockets, which is not this test's business).
    let out = w.migrator(&["routes", "reconcile"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(&w);
    let t = text(&out);
    assert!(!t.contains("NOT STARTED"), "{t}");
    assert!(
        names
            .iter()
            .any(|n| j.site_state(n).unwrap().is_some() || !j.steps(n).unwrap().is_empty()),
        "the wave did not start after the repair: {t}"
    );
}

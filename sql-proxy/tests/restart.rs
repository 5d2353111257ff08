//! Routes survive restarts and the proxy fails closed (issue: a restarted proxy used to send
//! every switched database back to the old side). The real binary, real MariaDB on both sides,
//! the daemon SIGKILLed at each point of a switch; every write checked on both backends
//! directly.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::daemon::{run, Setup};
use common::*;
use drivers::http::Method;

/// The proxy's route of `db`: (side, mode, epoch).
fn route(s: &Setup, db: &str) -> (String, String, u64) {
    let (code, v) = s.admin(Method::Get, &format!("/routes/{db}"), "");
    assert_eq!(code, 200, "{v}");
    (
        v["side"].as_str().unwrap().to_string(),
        v["mode"].as_str().unwrap().to_string(),
        v["epoch"].as_u64().unwrap(),
    )
}

/// Rows of `shop.t` with value `v` on a backend, read directly.
fn rows(db: &testkit::MariaDb, v: &str) -> String {
    db.exec(&format!("SELECT COUNT(*) FROM shop.t WHERE v = '{v}'"))
        .unwrap()
        .trim()
        .to_string()
}

/// Writes `v` through the proxy; Ok when the client saw success, the client's error otherwise.
fn write(s: &Setup, v: &str) -> anyhow::Result<()> {
    let out = cli(
        s.addr(),
        APP_USER,
        APP_PASSWORD,
        &["shop"],
        &format!("INSERT INTO t (v) VALUES ('{v}')"),
    );
    if out.status.success() {
        Ok(())
    } else {
        anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr).trim())
    }
}

fn two_sides() -> (testkit::MariaDb, testkit::MariaDb) {
    let a = backend();
    let b = backend();
    for db in [&a, &b] {
        db.exec("CREATE TABLE shop.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(32))")
            .unwrap();
    }
    (a, b)
}

#[test]
fn a_proxy_killed_at_each_point_of_a_switch_comes_back_as_last_committed() {
    let (a, b) = two_sides();
    let s = Setup::new(&a, Some(&b), "[limits]\nhold_deadline_ms = 1500");
    s.init();
    let d = s.start();
    write(&s, "before").unwrap();
    assert_eq!(
        (rows(&a, "before").as_str(), rows(&b, "before").as_str()),
        ("1", "0")
    );
    let (_, _, first) = route(&s, "shop");
    assert!(first > 0, "a database used by a client is stored");

    // 1. Killed right after the pause: comes back paused, on the old side.
    let (code, v) = s.admin(Method::Post, "/routes/shop/pause", "{}");
    assert_eq!(code, 200, "{v}");
    let paused = route(&s, "shop");
    assert_eq!((paused.0.as_str(), paused.1.as_str()), ("old", "paused"));
    assert!(paused.2 > first);
    d.kill9();
    let d = s.start();
    assert_eq!(route(&s, "shop"), paused);
    // A client is held, then refused: its write reaches neither side.
    let e = write(&s, "while-paused").unwrap_err().to_string();
    assert!(e.contains("paused"), "{e}");
    assert_eq!(rows(&a, "while-paused"), "0");
    assert_eq!(rows(&b, "while-paused"), "0");

    // 2. Killed after the copy (made while paused): still paused, still old.
    a.copy_database_to("shop", &b).unwrap();
    d.kill9();
    let d = s.start();
    assert_eq!(route(&s, "shop"), paused);

    // 3. Resumed on the new side, then killed: comes back on new, open.
    let (code, v) = s.admin(Method::Post, "/routes/shop/resume", r#"{"side":"new"}"#);
    assert_eq!(code, 200, "{v}");
    let resumed = route(&s, "shop");
    assert_eq!((resumed.0.as_str(), resumed.1.as_str()), ("new", "open"));
    assert!(resumed.2 > paused.2);
    d.kill9();
    let d = s.start();
    assert_eq!(route(&s, "shop"), resumed);
    write(&s, "after").unwrap();
    assert_eq!(
        (rows(&a, "after").as_str(), rows(&b, "after").as_str()),
        ("0", "1")
    );

    // A clean stop (SIGTERM) and start: the same.
    d.term();
    let _d = s.start();
    assert_eq!(route(&s, "shop"), resumed);
    write(&s, "after-term").unwrap();
    assert_eq!(rows(&a, "after-term"), "0");
    assert_eq!(rows(&b, "after-term"), "1");
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(log.contains("restored paused"), "{log}");
}

#[test]
fn default_side_and_the_config_never_move_a_stored_route() {
    let (a, b) = two_sides();
    for db in [&a, &b] {
        db.exec(
            "CREATE DATABASE blog; CREATE TABLE blog.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(32)); \
             GRANT ALL ON blog.* TO 'app'@'%'",
        )
        .unwrap();
    }
    let s = Setup::new(&a, Some(&b), "");
    s.init();
    let d = s.start();
    // blog is in no [databases] table: first used on default_side (old), and stored then.
    assert_eq!(route(&s, "blog"), ("old".into(), "open".into(), 0));
    let out = cli(
        s.addr(),
        APP_USER,
        APP_PASSWORD,
        &["blog"],
        "INSERT INTO t (v) VALUES ('x')",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = route(&s, "blog");
    assert_eq!(stored.0, "old");
    assert!(stored.2 > 0);
    drop(d);
    // The operator flips default_side and adds blog to [databases] on side new: neither moves
    // the stored route; a database never seen follows the new default.
    let text = std::fs::read_to_string(&s.cfg)
        .unwrap()
        .replace("default_side = \"old\"", "default_side = \"new\"\n[databases.blog]\nside = \"new\"\n[databases.wiki]\nside = \"new\"\n");
    std::fs::write(&s.cfg, text).unwrap();
    let _d = s.start();
    assert_eq!(route(&s, "blog"), stored);
    let out = cli(
        s.addr(),
        APP_USER,
        APP_PASSWORD,
        &["blog"],
        "INSERT INTO t (v) VALUES ('y')",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(a.exec("SELECT COUNT(*) FROM blog.t").unwrap().trim(), "2");
    assert_eq!(b.exec("SELECT COUNT(*) FROM blog.t").unwrap().trim(), "0");
    let wiki = route(&s, "wiki");
    assert_eq!((wiki.0.as_str(), wiki.1.as_str()), ("new", "open"));
    assert!(
        wiki.2 > stored.2,
        "seeded from [databases] at start: {wiki:?}"
    );
    let never = route(&s, "never_seen");
    assert_eq!(never, ("new".into(), "open".into(), 0));
}

/// Runs `sql-proxy run` expecting a refusal; returns its stderr.
fn refused(s: &Setup, as_nobody: bool) -> String {
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(common::daemon::BIN);
        c
    } else {
        Command::new(common::daemon::BIN)
    };
    let out = cmd
        .args(["run", "--config"])
        .arg(&s.cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "started anyway: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        std::net::TcpStream::connect(s.addr()).is_err(),
        "something listens on the client port"
    );
    err
}

#[test]
fn an_admin_token_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let a = backend();
    let s = Setup::new(&a, None, "");
    s.init();
    let token = s.dir.path().join("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = refused(&s, false);
    assert!(e.contains(&token.display().to_string()), "{e}");
    assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
    // The runbook's root:sql-proxy 0640 is accepted.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();
    let d = s.start();
    d.term();
}

#[test]
fn missing_unreadable_and_corrupt_stores_are_refused_naming_the_file() {
    let a = backend();
    let s = Setup::new(&a, None, "");
    let store = s.store();
    let name = store.display().to_string();

    // Missing: the error names the store and the exact command to create it.
    let e = refused(&s, false);
    assert!(e.contains(&name), "{e}");
    assert!(
        e.contains(&format!(
            "sql-proxy routes init --config {} --from-config",
            s.cfg.display()
        )),
        "{e}"
    );

    // Empty, foreign bytes, a directory.
    std::fs::write(&store, b"").unwrap();
    let e = refused(&s, false);
    assert!(
        e.contains(&name) && e.contains("damaged or not a route store"),
        "{e}"
    );
    std::fs::write(&store, b"\x00\x01garbage that is no database").unwrap();
    let e = refused(&s, false);
    assert!(e.contains(&name) && e.contains("damaged"), "{e}");
    std::fs::remove_file(&store).unwrap();
    std::fs::create_dir(&store).unwrap();
    let e = refused(&s, false);
    assert!(e.contains("not a regular file"), "{e}");
    std::fs::remove_dir(&store).unwrap();

    // Half-written: a real store with many routes, cut in the middle.
    let seed: String = (0..3000)
        .map(|i| format!("[databases.db_{i:05}]\nside = \"old\"\n"))
        .collect();
    let text = std::fs::read_to_string(&s.cfg).unwrap();
    std::fs::write(&s.cfg, format!("{text}\n{seed}")).unwrap();
    s.init();
    let good = std::fs::read(&store).unwrap();
    std::fs::write(&store, &good[..good.len() / 2]).unwrap();
    let e = refused(&s, false);
    assert!(e.contains(&name) && e.contains("damaged"), "{e}");
    std::fs::write(&store, &good).unwrap();

    // Unreadable: the daemon runs as an unprivileged user that may read the config but not
    // the store.
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&s.cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o000)).unwrap();
    let e = refused(&s, true);
    assert!(e.contains(&name) && e.contains("cannot be read"), "{e}");
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A stored route on a side the config lost: refused, not guessed.
    let text = std::fs::read_to_string(&s.cfg).unwrap();
    let out = run(&["routes", "export", "--store", store.to_str().unwrap()]);
    assert!(out.status.success());
    let mut export: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    export["routes"][0]["side"] = "gone".into();
    export["routes"][0]["epoch"] = 99_999.into();
    let file = s.dir.path().join("gone.json");
    std::fs::write(&file, export.to_string()).unwrap();
    let out = run(&[
        "routes",
        "import",
        "--store",
        store.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = refused(&s, false);
    assert!(e.contains("db_00000") && e.contains("\"gone\""), "{e}");
    std::fs::write(&s.cfg, text).unwrap();
}

#[test]
fn routes_tools_init_list_export_import() {
    let (a, b) = two_sides();
    let s = Setup::new(&a, Some(&b), "[databases.shop]\nside = \"old\"");
    let cfg = s.cfg.to_str().unwrap();
    s.init();
    // init never overwrites.
    let out = run(&["routes", "init", "--from-config", "--config", cfg]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let export = s.dir.path().join("export.json");
    let out = run(&[
        "routes",
        "export",
        "--config",
        cfg,
        "--out",
        export.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(&export).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The proxy moves shop to new.
    let d = s.start();
    let (code, v) = s.admin(Method::Post, "/routes/shop/switch", r#"{"to":"new"}"#);
    assert_eq!(code, 200, "{v}");
    // list and export work while the proxy runs; import does not.
    let out = run(&["routes", "list", "--config", cfg]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..3] == ["shop", "new", "open"]),
        "{text}"
    );
    let out = run(&[
        "routes",
        "import",
        "--config",
        cfg,
        export.to_str().unwrap(),
        "--force",
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("in use by another process") && e.contains(&d.0.id().to_string()),
        "{e}"
    );
    drop(d);

    // The older export would move shop backwards: refused, nothing changed, dry run or not.
    for extra in [&["--dry-run"][..], &[]] {
        let mut args = vec![
            "routes",
            "import",
            "--config",
            cfg,
            export.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = run(&args);
        assert!(!out.status.success());
        let o = String::from_utf8_lossy(&out.stdout);
        assert!(o.contains("RefusedBackwards") && o.contains("shop"), "{o}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    }
    let out = run(&["routes", "list", "--json", "--config", cfg]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["routes"][0]["side"], "new");
    // --dry-run --force prints the change and changes nothing; --force applies it.
    let out = run(&[
        "routes",
        "import",
        "--config",
        cfg,
        export.to_str().unwrap(),
        "--force",
        "--dry-run",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Forced"));
    let out = run(&["routes", "list", "--json", "--config", cfg]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["routes"][0]["side"], "new");
    let out = run(&[
        "routes",
        "import",
        "--config",
        cfg,
        export.to_str().unwrap(),
        "--force",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["routes", "list", "--json", "--config", cfg]);
    let after: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(after["routes"][0]["side"], "old");
    assert!(after["routes"][0]["epoch"].as_u64() > v["routes"][0]["epoch"].as_u64());
    // A file that is not an export is named.
    std::fs::write(s.dir.path().join("bad.json"), "{\"format\": 3}").unwrap();
    let out = run(&[
        "routes",
        "import",
        "--config",
        cfg,
        s.dir.path().join("bad.json").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.json"));
}

fn sysbench(port: u16, db: &str, args: &[&str]) -> std::process::Child {
    Command::new("sysbench")
        .args(args)
        .args([
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            "--mysql-user=app",
            "--tables=2",
            "--table-size=2000",
            "--rand-type=uniform",
        ])
        .arg(format!("--mysql-db={db}"))
        .arg(format!("--mysql-port={port}"))
        .arg(format!("--mysql-password={APP_PASSWORD}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sysbench")
}

fn has_table(db: &testkit::MariaDb, name: &str) -> bool {
    db.exec(&format!(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{name}' AND table_name = 'sbtest1'"
    ))
    .unwrap()
    .trim()
        == "1"
}

#[test]
fn restart_under_sysbench_load_serves_every_database_from_its_stored_side() {
    let a = backend();
    let b = backend();
    let dbs = ["sb1", "sb2", "sb3", "sb4"];
    for side in [&a, &b] {
        for db in dbs {
            side.exec(&format!(
                "CREATE DATABASE {db}; GRANT ALL ON {db}.* TO 'app'@'%'"
            ))
            .unwrap();
        }
    }
    let s = Setup::new(
        &a,
        Some(&b),
        "[databases.sb1]\nside = \"old\"\n[databases.sb2]\nside = \"old\"\n\
         [databases.sb3]\nside = \"new\"\n[databases.sb4]\nside = \"new\"",
    );
    s.init();
    let d = s.start();
    for db in dbs {
        let out = sysbench(s.port, db, &["oltp_read_write", "prepare"])
            .wait_with_output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Prepared through the proxy: each database's tables exist on its side only.
    for (db, on_a) in [("sb1", true), ("sb2", true), ("sb3", false), ("sb4", false)] {
        assert_eq!(
            (has_table(&a, db), has_table(&b, db)),
            (on_a, !on_a),
            "{db}"
        );
    }
    // Load on all four; sb2 moves old -> new under it (copied while paused), then SIGKILL.
    let load: Vec<_> = dbs
        .iter()
        .map(|db| {
            sysbench(
                s.port,
                db,
                &["oltp_read_write", "run", "--threads=2", "--time=6"],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let (code, v) = s.admin(Method::Post, "/routes/sb2/pause", "{}");
    assert_eq!(code, 200, "{v}");
    a.copy_database_to("sb2", &b).unwrap();
    let (code, v) = s.admin(Method::Post, "/routes/sb2/resume", r#"{"side":"new"}"#);
    assert_eq!(code, 200, "{v}");
    let sb2_on_a = a.exec("CHECKSUM TABLE sb2.sbtest1, sb2.sbtest2").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    d.kill9();
    // The load's connections died with the proxy: reap it, whatever it says.
    for c in load {
        let _ = c.wait_with_output();
    }
    let _d = s.start();
    let expect = [
        ("sb1", "old"),
        ("sb2", "new"),
        ("sb3", "new"),
        ("sb4", "new"),
    ];
    for (db, side) in expect {
        let (got, mode, epoch) = route(&s, db);
        assert_eq!((got.as_str(), mode.as_str()), (side, "open"), "{db}");
        assert!(epoch > 0);
    }
    // Load again after the restart: zero errors on every database.
    let load: Vec<_> = dbs
        .iter()
        .map(|db| {
            sysbench(
                s.port,
                db,
                &[
                    "oltp_read_write",
                    "run",
                    "--threads=2",
                    "--time=3",
                    "--mysql-ignore-errors=none",
                ],
            )
        })
        .collect();
    for (c, db) in load.into_iter().zip(dbs) {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{db}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A marker written through the proxy lands on the stored side only.
    for (db, side) in expect {
        let out = cli(
            s.addr(),
            APP_USER,
            APP_PASSWORD,
            &[db],
            "INSERT INTO sbtest1 (k, c, pad) VALUES (424242, 'restart-marker', 'x')",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let q = format!("SELECT COUNT(*) FROM {db}.sbtest1 WHERE c = 'restart-marker'");
        let (owner, other) = if side == "old" { (&a, &b) } else { (&b, &a) };
        assert_eq!(owner.exec(&q).unwrap().trim(), "1", "{db}");
        if has_table(other, db) {
            assert_eq!(other.exec(&q).unwrap().trim(), "0", "{db}");
        }
    }
    // Nothing wrote to sb2 on the old side after its switch (sysbench ran 4 s more there).
    assert_eq!(
        a.exec("CHECKSUM TABLE sb2.sbtest1, sb2.sbtest2").unwrap(),
        sb2_on_a
    );
    assert!(!has_table(&a, "sb3") && !has_table(&a, "sb4"));
    assert!(!has_table(&b, "sb1"));
}

//! Pre-flight's database scan (issue 21) on real MariaDB servers: a source with a ROW binary
//! log holding planted findings (an old-password account, an ed25519 account, a table without
//! a primary key, MyISAM and Aria tables, a view whose definer the destination lacks), and a
//! second server without a binary log; each finding at its object, and the site's verdict.

use migrator::preflight::db::{connect, scan_database, scan_server, DbTarget};
use migrator::preflight::verdict::{site_report, Verdict};
use migrator::preflight::{PreflightConfig, Severity, Where};
use testkit::mariadb::{MariaDb, MariaDbOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_database_findings_are_reported_at_their_object() {
    let src = MariaDb::start_with(MariaDbOptions {
        binlog_server_id: Some(7),
        ..MariaDbOptions::default()
    })
    .unwrap();
    let dst = MariaDb::start().unwrap();
    src.exec(
        "CREATE DATABASE shop; CREATE DATABASE clean;
         CREATE TABLE shop.orders (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB;
         CREATE TABLE shop.log (at INT, msg TEXT) ENGINE=InnoDB;
         CREATE TABLE shop.legacy (id INT PRIMARY KEY) ENGINE=MyISAM;
         CREATE TABLE shop.cache (id INT PRIMARY KEY) ENGINE=Aria;
         CREATE TABLE clean.t (id INT PRIMARY KEY) ENGINE=InnoDB;
         INSERT INTO shop.orders VALUES (1, REPEAT('x', 1000));
         CREATE USER shop@'%' IDENTIFIED BY 'pw';
         GRANT ALL ON shop.* TO shop@'%';
         CREATE USER clean@'%' IDENTIFIED BY 'pw';
         GRANT ALL ON clean.* TO clean@'%';
         CREATE USER oldie@'%' IDENTIFIED VIA mysql_old_password USING '378b243e220ca493';
         GRANT SELECT ON shop.* TO oldie@'%';
         INSTALL SONAME 'auth_ed25519';
         CREATE USER edd@'10.%' IDENTIFIED VIA ed25519 USING PASSWORD('secret');
         GRANT SELECT ON shop.* TO edd@'10.%';
         CREATE USER ghost@'%' IDENTIFIED BY 'pw';
         CREATE DEFINER=ghost@'%' SQL SECURITY DEFINER VIEW shop.recent AS SELECT id FROM shop.orders;
         CREATE DEFINER=shop@'%' VIEW shop.own AS SELECT id FROM shop.orders;",
    )
    .unwrap();
    let opts = |m: &MariaDb| mysql_async::Opts::from_url(&m.admin_url()).unwrap();
    let mut s = connect("sql1", &opts(&src)).await.unwrap();
    let mut d = connect("dest", &opts(&dst)).await.unwrap();

    let server = scan_server("sql1", &mut s).await.unwrap();
    assert!(server.capture, "{server:?}");
    assert!(server.log_bin && server.server_id == 7);
    let no_binlog = scan_server("sql2", &mut d).await.unwrap();
    assert!(!no_binlog.capture);
    assert_eq!(no_binlog.findings.len(), 1);
    assert_eq!(no_binlog.findings[0].rule, "server.no_binlog");

    let target = |db: &str| DbTarget {
        server: "sql1".into(),
        database: db.into(),
        user: db.into(),
        write_rate: 1000.0,
    };
    let shop = scan_database(&mut s, Some(&mut d), &target("shop"))
        .await
        .unwrap();
    let got: Vec<(String, String, Severity, String)> = shop
        .findings
        .iter()
        .map(|f| {
            let Where::Db { object } = &f.at else {
                panic!("{f:?}")
            };
            (f.rule.clone(), object.clone(), f.severity, f.found.clone())
        })
        .collect();
    let want: Vec<(String, String, Severity, String)> = [
        (
            "db.auth_plugin",
            "'edd'@'10.%'",
            Severity::Blocked,
            "ed25519",
        ),
        (
            "db.auth_plugin",
            "'oldie'@'%'",
            Severity::Blocked,
            "mysql_old_password",
        ),
        (
            "db.no_snapshot",
            "shop.cache",
            Severity::Warn,
            "ENGINE=Aria",
        ),
        (
            "db.no_snapshot",
            "shop.legacy",
            Severity::Warn,
            "ENGINE=MyISAM",
        ),
        ("db.no_pk", "shop.log", Severity::Warn, "no PRIMARY KEY"),
        (
            "db.definer",
            "view shop.recent",
            Severity::Blocked,
            "DEFINER='ghost'@'%'",
        ),
    ]
    .into_iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c, d.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(shop.tables, 4);
    assert!(shop.bytes > 0 && shop.recopy_bytes > 0 && shop.recopy_bytes < shop.bytes);

    // Without a destination to ask, the foreign definer is a warn.
    let shop_nodest = scan_database(&mut s, None, &target("shop")).await.unwrap();
    let definer = shop_nodest
        .findings
        .iter()
        .find(|f| f.rule == "db.definer")
        .unwrap();
    assert_eq!(definer.severity, Severity::Warn);

    let clean = scan_database(&mut s, Some(&mut d), &target("clean"))
        .await
        .unwrap();
    assert!(clean.findings.is_empty(), "{:?}", clean.findings);

    let config = PreflightConfig::default();
    let servers = [server.clone()];
    let r = site_report(
        "shop-site",
        None,
        None,
        std::slice::from_ref(&shop),
        &servers,
        &config,
    );
    assert_eq!(r.verdict, Verdict::Blocked);
    assert_eq!(
        r.reasons,
        ["db.auth_plugin", "db.definer", "db.no_pk", "db.no_snapshot"]
    );
    let r = site_report(
        "clean-site",
        None,
        None,
        std::slice::from_ref(&clean),
        &servers,
        &config,
    );
    assert_eq!(r.verdict, Verdict::Ok, "{r:?}");
    // The same clean database on a server without a binary log: warn, with the reason.
    let mut on_sql2 = clean.clone();
    on_sql2.server = "sql2".into();
    let r = site_report("c2", None, None, &[on_sql2], &[no_binlog], &config);
    assert_eq!(r.verdict, Verdict::Warn);
    assert_eq!(r.reasons, ["server.no_binlog"]);
}

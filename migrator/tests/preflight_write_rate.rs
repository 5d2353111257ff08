//! Pre-flight's write rates are measured, not taken from the inventory (issue 21): a real
//! MariaDB with a ROW binary log, a bounded writer loop on one database while another stays
//! idle; `preflight::run` reads the binary log twice some seconds apart, gives each database
//! its own rate, and the predicted freeze is computed from that rate.

use migrator::preflight::code::{Scanner, Served};
use migrator::preflight::db::DbTarget;
use migrator::preflight::rules::RuleTable;
use migrator::preflight::run::{run, DbAccess, SiteInput};
use migrator::preflight::{PreflightConfig, Verdict};
use mysql_async::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::mariadb::{MariaDb, MariaDbOptions};

/// Inserts 1,000-byte rows into `busy.t` every 5 ms until `stop` (or 3,000 rows); returns
/// the payload bytes per second it wrote.
fn writer(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
                .await
                .unwrap();
            let t0 = Instant::now();
            let mut rows = 0u64;
            while !stop.load(Ordering::Relaxed) && rows < 3000 {
                c.query_drop("INSERT INTO busy.t (v) VALUES (REPEAT('x', 1000))")
                    .await
                    .unwrap();
                rows += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            rows as f64 * 1000.0 / t0.elapsed().as_secs_f64()
        })
    })
}

#[test]
fn write_rates_are_measured_on_the_binary_log_and_drive_the_freeze() {
    let src = MariaDb::start_with(MariaDbOptions {
        binlog_server_id: Some(7),
        ..MariaDbOptions::default()
    })
    .unwrap();
    src.exec(
        "CREATE DATABASE busy; CREATE DATABASE quiet;
         CREATE TABLE busy.t (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT) ENGINE=InnoDB;
         CREATE TABLE quiet.t (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB;
         INSERT INTO quiet.t VALUES (1, 'a');",
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("index.php"), "<?php\necho 'hi';\n").unwrap();
    let site = |name: &str| SiteInput {
        site: name.into(),
        home: home.path().to_path_buf(),
        compat: vec![home.path().display().to_string()],
        databases: vec![DbTarget {
            server: "sql1".into(),
            database: name.into(),
            user: name.into(),
            // The inventory knows nothing: a rate can only come from the measurement.
            write_rate: 0.0,
        }],
    };
    let sites = [site("busy"), site("quiet")];
    let config = PreflightConfig {
        write_sample_s: 2.0,
        capture_tail_s: 2.0,
        apply_bytes_per_s: 20_000.0,
        freeze_base_ms: 500,
        freeze_budget_ms: 3000,
        ..PreflightConfig::default()
    };
    let scanner = Scanner::new(&config, RuleTable::builtin().unwrap(), Served::default()).unwrap();
    let mut access = DbAccess::default();
    access.sources.insert(
        "sql1".into(),
        mysql_async::Opts::from_url(&src.admin_url()).unwrap(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(src.admin_url(), stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let (reports, _) = run(&sites, &scanner, &config, &access, None).unwrap();
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let payload_rate = w.join().unwrap();
    assert!(took >= Duration::from_secs(2), "sampled {took:?}");

    let busy = &reports[0].databases[0];
    let quiet = &reports[1].databases[0];
    eprintln!("writer {payload_rate:.0} B/s; busy {busy:?}; quiet {quiet:?}");
    assert!(busy.write_rate_measured && quiet.write_rate_measured);
    assert_eq!(quiet.write_rate, 0.0, "nothing wrote to quiet");
    // Each row event carries the 1,000-byte payload plus its framing.
    assert!(
        busy.write_rate >= 0.8 * payload_rate && busy.write_rate <= 2.0 * payload_rate,
        "measured {} B/s for a writer of {payload_rate:.0} B/s",
        busy.write_rate
    );
    // The freeze is predicted from the measured rate (capture on: the tail at apply speed).
    let tail_ms = (busy.write_rate * 2.0 / 20_000.0 * 1000.0).ceil() as u64;
    assert_eq!(busy.freeze_ms, tail_ms);
    assert_eq!(reports[0].predicted_freeze_ms, 500 + tail_ms);
    assert_eq!(reports[1].predicted_freeze_ms, 500);
    assert!(
        tail_ms > 2500,
        "a writer this busy is over budget: {tail_ms} ms"
    );
    assert_eq!(reports[0].verdict, Verdict::Warn);
    assert_eq!(reports[0].reasons, vec!["freeze.over_budget".to_string()]);
    assert_eq!(reports[1].verdict, Verdict::Ok, "{:?}", reports[1]);
}

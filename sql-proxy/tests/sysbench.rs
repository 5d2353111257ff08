//! sysbench (prepared statements, many threads) through the proxy, and the acceptance run:
//! oltp_read_write with 16 threads while the database moves between two MariaDB instances
//! (copied while paused) at a fixed interval. Zero sysbench errors and no lost rows required.
//!
//! Length: `SQLPROXY_SWITCH_SECS` (default 12) and `SQLPROXY_SWITCH_EVERY_SECS` (default 3);
//! the full acceptance run is `SQLPROXY_SWITCH_SECS=60 SQLPROXY_SWITCH_EVERY_SECS=10`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use sql_proxy::config::Limits;
use sql_proxy::switch;

fn sysbench(port: u16, args: &[&str]) -> std::process::Child {
    Command::new("sysbench")
        .args(args)
        .args([
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            "--mysql-user=app",
            "--mysql-db=shop",
            "--tables=4",
            "--table-size=10000",
            // Uniform keys: sysbench's default hot-spot distribution makes InnoDB deadlocks
            // between its own threads likely, and the run refuses every error.
            "--rand-type=uniform",
            "--mysql-ignore-errors=none",
        ])
        .arg(format!("--mysql-port={port}"))
        .arg(format!("--mysql-password={APP_PASSWORD}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sysbench")
}

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn checksum(db: &testkit::MariaDb) -> String {
    db.exec(
        "CHECKSUM TABLE shop.sbtest1, shop.sbtest2, shop.sbtest3, shop.sbtest4; \
             SELECT COUNT(*) FROM shop.sbtest1",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_read_write_survives_switches_with_zero_errors() {
    let a = backend();
    let b = backend();
    let p = proxy(&a, Some(&b), Limits::default()).await;
    let port = p.addr.port();
    let out = tokio::task::spawn_blocking(move || {
        sysbench(port, &["oltp_read_write", "prepare"]).wait_with_output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs = env_secs("SQLPROXY_SWITCH_SECS", 12);
    let every = env_secs("SQLPROXY_SWITCH_EVERY_SECS", 3);
    let run = sysbench(
        port,
        &[
            "oltp_read_write",
            "run",
            "--threads=16",
            &format!("--time={secs}"),
            "--report-interval=0",
        ],
    );
    let mut on_a = true;
    let mut pauses = Vec::new();
    let start = std::time::Instant::now();
    while start.elapsed() + Duration::from_secs(every) < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(every)).await;
        let r = switch::pause(
            &p.shared,
            "shop",
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(r.aborted_transactions, 0, "{r:?}");
        let (from, to, side) = if on_a {
            (&a, &b, "new")
        } else {
            (&b, &a, "old")
        };
        tokio::task::block_in_place(|| from.copy_database_to("shop", to).unwrap());
        // Nothing lost in the copy: the copy equals the source while paused.
        assert_eq!(
            checksum(from).replace(&*from.port().to_string(), ""),
            checksum(to).replace(&*to.port().to_string(), "")
        );
        let r = switch::resume(&p.shared, "shop", Some(side)).await.unwrap();
        pauses.push(r.pause_ms);
        on_a = !on_a;
    }
    let out = tokio::task::spawn_blocking(move || run.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\nswitch pauses (ms): {pauses:?}");
    assert!(
        out.status.success(),
        "sysbench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ignored errors:                      0 "),
        "{stdout}"
    );
    assert!(!pauses.is_empty());
    // Rows: oltp_read_write deletes and re-inserts the same ids, so the row count is constant.
    let final_db = if on_a { &a } else { &b };
    assert_eq!(
        final_db
            .exec("SELECT COUNT(*) FROM shop.sbtest1")
            .unwrap()
            .trim(),
        "10000"
    );
    let total: u64 = final_db
        .exec("SELECT (SELECT COUNT(*) FROM shop.sbtest1)+(SELECT COUNT(*) FROM shop.sbtest2)+(SELECT COUNT(*) FROM shop.sbtest3)+(SELECT COUNT(*) FROM shop.sbtest4)")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(total, 40000);
}

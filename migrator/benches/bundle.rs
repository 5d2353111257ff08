//! Bundle capture throughput (issue 19) against what an operator would otherwise run, on the
//! same database, alternately (A B C A B C …).
//!
//! `cargo bench -p migrator --bench bundle -- [ROWS_PER_TABLE] [PAIRS]` (defaults `250000 5`).
//!
//! A private MariaDB server with one database of 4 sysbench-shaped tables (`id` primary key,
//! `k` INT, `c` CHAR(120), `pad` CHAR(60) of pseudo-random digits), ROWS_PER_TABLE rows each.
//! - ours: `bundle::capture::capture` of a live site holding that database, unthrottled
//!   (`mariadb-dump --single-transaction …` read by the migrator, zstd level 3, BLAKE3,
//!   written under a temporary name, fsync, rename, the manifest signed); the switch's
//!   checksums are in the journal, as after a cutover;
//! - `mariadb-dump | zstd -3 > FILE` (what an operator would run for a compressed dump);
//! - `mariadb-dump > FILE` (no compression: the limit, the dump program alone).
//!
//! Throughput is the dump's uncompressed bytes over the wall time. Without `--bench` it does
//! nothing.

mod common;

use common::{num, positional_args, stats};
use migrator::bundle::capture::{capture, CaptureOptions};
use migrator::bundle::store::{BundleStore, LocalStore};
use migrator::journal::{JournalStore, SiteState, SqliteJournal, StepOutcome};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Instant;
use testkit::MariaDb;

fn main() {
    let Some(args) = positional_args() else {
        return;
    };
    let rows = num(&args, 0, 250_000);
    let pairs = num(&args, 1, 5).max(1);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = MariaDb::start().unwrap();
    for t in 1..=4 {
        old.exec(&format!(
            "CREATE DATABASE IF NOT EXISTS sbtest; SET SESSION max_recursive_iterations = {};
             CREATE TABLE sbtest.sbtest{t} (id INT PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL,
               pad CHAR(60) NOT NULL, KEY k (k));
             INSERT INTO sbtest.sbtest{t} WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL
               SELECT n + 1 FROM s WHERE n < {rows})
             SELECT n, CRC32(n) % {rows}, LEFT(REPEAT(CONCAT(CRC32(n * 7), '-'), 12), 119),
               LEFT(REPEAT(CONCAT(CRC32(n * 13), '-'), 6), 59) FROM s;",
            rows + 10
        ))
        .unwrap();
    }
    let url = d.join("old.url");
    std::fs::write(&url, old.admin_url()).unwrap();
    std::fs::set_permissions(&url, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cnf = d.join("client.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[client]\nhost=127.0.0.1\nport={}\nuser={}\npassword={}\n",
            old.port(),
            testkit::mariadb::ADMIN_USER,
            testkit::mariadb::ADMIN_PASSWORD
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cnf, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut j = SqliteJournal::open(&d.join("j.sqlite")).unwrap();
    let id = j.begin_step("bench", "switch").unwrap();
    j.finish_step(id, &StepOutcome::default()).unwrap();
    j.set_site_state("bench", SiteState::Live).unwrap();
    migrator::bundle::state::record_switch_checksums(&mut j, "sbtest", Default::default()).unwrap();
    let mut spec = migrator::site_spec::sample("bench");
    spec.databases = vec!["sbtest".into()];
    spec.homes.clear();
    spec.old_db_url_file = url;
    spec.new_db_url_file = spec.old_db_url_file.clone();
    let key = migrator::bundle::sign::load_or_create(&d.join("bundle.key")).unwrap();
    let store = LocalStore::new(&d.join("store"));
    let opts = CaptureOptions::default();

    let dump = |out: &str, compress: bool| -> f64 {
        let sh = format!(
            "mariadb-dump --defaults-extra-file={} --single-transaction --routines --triggers \
             --events --hex-blob --skip-dump-date --no-tablespaces sbtest {} > {out}",
            cnf.display(),
            if compress { "| zstd -q -3" } else { "" }
        );
        let _ = Command::new("sync").status();
        let t = Instant::now();
        let st = Command::new("bash")
            .args(["-c", &format!("set -o pipefail; {sh}; sync {out}")])
            .stderr(Stdio::inherit())
            .status()
            .unwrap();
        assert!(st.success(), "{sh}");
        t.elapsed().as_secs_f64()
    };
    let raw_out = d.join("dump.sql");
    let zst_out = d.join("dump.sql.zst");
    // Warm-up: the buffer pool holds the tables for every run alike.
    dump(raw_out.to_str().unwrap(), false);
    let raw_bytes = std::fs::metadata(&raw_out).unwrap().len();
    println!(
        "bundle bench: 4 tables x {rows} rows, dump {:.1} MiB, {pairs} rounds",
        raw_bytes as f64 / 1048576.0
    );
    let (mut ours, mut zst, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    let mut stored = 0;
    for _ in 0..pairs {
        for b in store.list(None).unwrap() {
            store.delete(&b).unwrap();
        }
        let _ = Command::new("sync").status();
        let t = Instant::now();
        let r = capture(&mut j, &spec, &store, &key, &opts).unwrap();
        ours.push(t.elapsed().as_secs_f64());
        assert!(!r.already, "{r:?}");
        stored = r.bytes;
        zst.push(dump(zst_out.to_str().unwrap(), true));
        plain.push(dump(raw_out.to_str().unwrap(), false));
    }
    let mib = raw_bytes as f64 / 1048576.0;
    let zst_bytes = std::fs::metadata(&zst_out).unwrap().len();
    for (name, v, size) in [
        ("ours: bundle capture", &ours, stored),
        ("mariadb-dump | zstd -3", &zst, zst_bytes),
        ("mariadb-dump (uncompressed)", &plain, raw_bytes),
    ] {
        let (med, min, max) = stats(v);
        println!(
            "{name:<30} median {med:6.2} s ({min:.2}–{max:.2})  {:7.1} MiB/s  stored {:.1} MiB",
            mib / med,
            size as f64 / 1048576.0
        );
    }
    let (a, b, c) = (stats(&ours).0, stats(&zst).0, stats(&plain).0);
    println!(
        "ratio (time): ours / dump|zstd = {:.2}, ours / dump = {:.2}",
        a / b,
        a / c
    );
}

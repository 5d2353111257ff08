//! Bundle capture throughput (issue 19) against what an operator would otherwise run, on the
//! same database, alternately (A B C A B C …).
//!
//! `cargo bench -p migrator --bench bundle -- [ROWS_PER_TABLE] [PAIRS] [FREEZES]` (defaults
//! `250000 5 5`).
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
//! Throughput is the dump's uncompressed bytes over the wall time.
//!
//! Then the freeze with capture on vs off, alternately (off on off on …, PAIRS pairs): the
//! database part of a site's freeze (a delta `copy_database` of a small site database, 4 tables
//! of 500 rows, 20 rows written before each freeze, then `verify_database`, as the engine's
//! final sync and verify) to a second server, FREEZES freezes 300 ms apart; "on": while
//! `wave run --bundle-store`'s background capture (`bundle::job::Background`, as `wave run`
//! runs it by default: 50 MiB/s, nice 10) captures the big database of the SAME old server. Only freezes that
//! ended before that capture did count as "on". Each freeze (on and off alike) holds the
//! site's freeze lease in the journal the capture reads, as the engine does, so the capture
//! pauses for it ([`migrator::bundle::pause`]); the lease is taken before the timed part and
//! released after it. The bench prints how many "on" freezes found the capture paused and the
//! capture's pauses. Without `--bench` it does nothing.

mod common;

use common::{num, positional_args, stats};
use migrator::bundle::capture::{capture, CaptureOptions};
use migrator::bundle::job::{Background, BackgroundJob};
use migrator::bundle::pause;
use migrator::bundle::store::{BundleStore, LocalStore};
use migrator::cutover::lease;
use migrator::db::copy::{copy_database, verify_database, CopyOptions};
use migrator::journal::{JournalStore, SiteState, SqliteJournal, StepOutcome};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;
use testkit::MariaDb;

fn main() {
    let Some(args) = positional_args() else {
        return;
    };
    let rows = num(&args, 0, 250_000);
    let pairs = num(&args, 1, 5).max(1);
    let freezes = num(&args, 2, 5).max(1);
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
    drop(j);
    freeze_on_off(&old, d, &spec, pairs, freezes);
}

/// The database part of a freeze, with and without a background capture reading the same old
/// server (see the top of the file).
fn freeze_on_off(
    old: &MariaDb,
    d: &std::path::Path,
    spec: &migrator::site_spec::SiteSpec,
    pairs: usize,
    freezes: usize,
) {
    let new = MariaDb::start().unwrap();
    for t in 1..=4 {
        old.exec(&format!(
            "CREATE DATABASE IF NOT EXISTS shop; CREATE TABLE shop.t{t} (id INT AUTO_INCREMENT \
             PRIMARY KEY, v VARCHAR(200)); INSERT INTO shop.t{t} (v) WITH RECURSIVE s(n) AS \
             (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 500) SELECT REPEAT(MD5(n), 6) FROM s;"
        ))
        .unwrap();
    }
    let (src, dst): (mysql_async::Opts, mysql_async::Opts) = (
        old.admin_url().parse().unwrap(),
        new.admin_url().parse().unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let journal = || -> Arc<Mutex<dyn migrator::journal::JournalStore + Send>> {
        Arc::new(Mutex::new(
            SqliteJournal::open(&d.join("copy.sqlite")).unwrap(),
        ))
    };
    let full = CopyOptions {
        threads: 2,
        ..Default::default()
    };
    let delta = CopyOptions {
        delta: true,
        ..full.clone()
    };
    rt.block_on(copy_database(&src, &dst, "shop", journal(), &full))
        .unwrap();
    // The freeze lease, in the journal the background capture reads (as the engine holds it).
    let mut lj = SqliteJournal::open(&d.join("j.sqlite")).unwrap();
    // One freeze: writes before it (the site was live), then the final sync and verify, under
    // the site's freeze lease. Returns its time and whether a capture was paused at its end.
    let mut freeze = |k: usize| -> (f64, bool) {
        old.exec(&format!(
            "INSERT INTO shop.t{} (v) WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 \
             FROM s WHERE n < 20) SELECT MD5(n) FROM s",
            k % 4 + 1
        ))
        .unwrap();
        lease::take(&mut lj, "shop", Duration::from_secs(60)).unwrap();
        let t = Instant::now();
        rt.block_on(async {
            copy_database(&src, &dst, "shop", journal(), &delta)
                .await
                .unwrap();
            let diffs = verify_database(&src, &dst, "shop").await.unwrap();
            assert!(diffs.is_empty(), "{diffs:?}");
        });
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let paused = pause::paused_now();
        lease::release(&mut lj, "shop").unwrap();
        (ms, paused)
    };
    let store: Arc<LocalStore> = Arc::new(LocalStore::new(&d.join("store")));
    let (mut off, mut on, mut dropped, mut paused_on) = (Vec::new(), Vec::new(), 0, 0);
    let mut k = 0;
    // What `wave run --bundle-store` uses by default (`--bundle-max-rate 50`).
    let capture_opts = CaptureOptions {
        rate: Some(50 << 20),
        ..Default::default()
    };
    println!(
        "freeze with capture on vs off: {pairs} pairs x {freezes} freezes, capture at {} MiB/s",
        capture_opts.rate.unwrap_or(0) >> 20
    );
    for _ in 0..pairs {
        for _ in 0..freezes {
            std::thread::sleep(Duration::from_millis(300));
            off.push(freeze(k).0);
            k += 1;
        }
        for b in store.list(None).unwrap() {
            store.delete(&b).unwrap();
        }
        let ended: Arc<Mutex<Option<Instant>>> = Arc::default();
        let e = ended.clone();
        let bg = Background::start(
            BackgroundJob {
                journal: d.join("j.sqlite"),
                store: store.clone(),
                key: migrator::bundle::sign::load_or_create(&d.join("bundle.key")).unwrap(),
                opts: capture_opts.clone(),
                scratch: None,
            },
            move |_| *e.lock().unwrap() = Some(Instant::now()),
        );
        bg.submit(spec);
        // The capture is reading (mariadb-dump started) before the first freeze.
        std::thread::sleep(Duration::from_millis(300));
        let mut samples = Vec::new();
        for _ in 0..freezes {
            std::thread::sleep(Duration::from_millis(300));
            let (ms, paused) = freeze(k);
            samples.push((ms, paused, Instant::now()));
            k += 1;
        }
        let r = bg.finish();
        assert!(r.iter().all(|r| r.ok()), "{r:?}");
        if let Some(c) = r.first().and_then(|r| r.capture.as_ref()) {
            println!(
                "  capture: {:.1} s, paused {} times, {:.2} s in all",
                c.seconds, c.pauses, c.paused_seconds
            );
        }
        let end = ended.lock().unwrap().expect("the capture ended");
        for (ms, paused, at) in samples {
            if at <= end {
                on.push(ms);
                paused_on += paused as usize;
            } else {
                dropped += 1;
            }
        }
    }
    if on.is_empty() || off.is_empty() {
        println!("no freeze overlapped a capture ({dropped} ended after it): use more rows");
        return;
    }
    let p = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        migrator::wave::percentile(&s, 99.0).unwrap_or(f64::NAN)
    };
    for (name, v) in [("freeze, capture off", &off), ("freeze, capture on", &on)] {
        let (med, min, max) = stats(v);
        println!(
            "{name:<22} n={:<3} median {med:6.1} ms ({min:.1}–{max:.1}), p99 {:.1} ms",
            v.len(),
            p(v)
        );
    }
    println!(
        "ratio (median freeze): on / off = {:.2} ({dropped} 'on' freezes ended after the capture, not counted)",
        stats(&on).0 / stats(&off).0
    );
    let (n, secs) = pause::totals();
    println!(
        "capture paused at the end of {paused_on} of {} 'on' freezes; {n} pauses, {secs:.2} s in all",
        on.len()
    );
}

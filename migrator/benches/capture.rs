//! Freeze and time-to-live of one database moved while it is written, by change capture (new)
//! and by delta copies (old), same run, per size; and a bare bulk copy of it for scale.
//!
//! `cargo bench -p migrator --bench capture -- [SIZES_MIB] [FREEZES] [WRITES_PER_SEC]`
//! (defaults `50,500,2048 5 10`).
//!
//! Per size, between two private MariaDB servers (the source with a ROW binary log): a
//! database with one table of 4 KiB random rows grown to the size (kept out of the log), and
//! a writer on it at WRITES_PER_SEC (an insert or an update of a random row of that big
//! table: the shape that could not be moved before, every delta pass re-copying the table).
//! - bare: the bulk copy alone (`copy_database`, checksums included), no writer;
//! - new: `follow::sync` (bulk copy at a snapshot position), `follow::sync` (catch-up), then
//!   FREEZES freezes, each: the writer paused (as the proxy pauses), the tail
//!   (`follow::tail`) and the new side pinned, the writer resumed, and before each freeze after
//!   the first 2 s of writes and a catch-up (samples of the freeze); after the last one the
//!   writer goes to the new side (the switch) and the old side is verified against the pin
//!   (the verification after the switch, outside the freeze);
//! - old: a full copy, delta passes until one moves at most 8 MiB (5 at most), then freezes
//!   (2 at most; 1 above 1 GiB), each: the writer paused, a delta copy and a full verify.
//!
//! Time-to-live: from the start to the end of the first freeze (a move freezes once; the
//! later freezes are samples). Without `--bench` it does nothing.

mod common;

use common::{num, positional_args, stats};
use migrator::db::copy::{copy_database, verify_database, verify_sessions, CopyOptions};
use migrator::db::follow;
use migrator::journal::{JournalStore, SqliteJournal};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::{MariaDb, MariaDbOptions};

type Journal = Arc<Mutex<dyn JournalStore + Send>>;

fn main() {
    let Some(args) = positional_args() else {
        return;
    };
    let sizes: Vec<u64> = args
        .first()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![50, 500, 2048]);
    let freezes = num(&args, 1, 5).max(1);
    let rate = num(&args, 2, 10).max(1) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("capture bench: sizes {sizes:?} MiB, {freezes} freezes, {rate} writes/s");
    for size in sizes {
        rt.block_on(one_size(size, freezes, rate));
    }
}

/// A writer at `rate` per second on `db`.bulk: pausable (waits out its write in flight), and
/// pointed at the source or (after the switch) the destination.
struct Writer {
    paused: AtomicBool,
    idle: AtomicBool,
    stop: AtomicBool,
    /// 0: source, 1: destination.
    target: AtomicU8,
    writes: AtomicU64,
}

impl Writer {
    async fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        while !self.idle.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

async fn write_loop(w: Arc<Writer>, urls: [Opts; 2], db: String, rate: u64, max_id: u64) {
    let mut conns = [None, None];
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let mut n = 0u64;
    while !w.stop.load(Ordering::SeqCst) {
        if w.paused.load(Ordering::SeqCst) {
            w.idle.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        w.idle.store(false, Ordering::SeqCst);
        if w.paused.load(Ordering::SeqCst) {
            continue;
        }
        let t = w.target.load(Ordering::SeqCst) as usize;
        let t0 = Instant::now();
        if conns[t].is_none() {
            conns[t] = Some(Conn::new(urls[t].clone()).await.unwrap());
        }
        let c = conns[t].as_mut().unwrap();
        n += 1;
        let sql = if n.is_multiple_of(2) {
            format!("INSERT INTO `{db}`.bulk (grp, pad) VALUES (-1, RANDOM_BYTES(1024))")
        } else {
            let id = 1 + (n.wrapping_mul(2654435761) % max_id.max(1));
            format!("UPDATE `{db}`.bulk SET pad = RANDOM_BYTES(1024) WHERE id = {id}")
        };
        c.query_drop(sql).await.unwrap();
        w.writes.fetch_add(1, Ordering::SeqCst);
        w.idle.store(true, Ordering::SeqCst);
        tokio::time::sleep(every.saturating_sub(t0.elapsed())).await;
    }
    w.idle.store(true, Ordering::SeqCst);
}

async fn exec(url: &Opts, sql: &str) {
    let mut c = Conn::new(url.clone()).await.unwrap();
    c.query_drop(sql).await.unwrap();
    c.disconnect().await.unwrap();
}

async fn grow(src: &Opts, db: &str, mib: u64) -> u64 {
    exec(
        src,
        &format!(
            "SET sql_log_bin = 0; CREATE DATABASE `{db}`; CREATE TABLE `{db}`.bulk (id BIGINT \
             UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, grp INT NOT NULL, pad VARBINARY(4096) \
             NOT NULL, KEY grp (grp)) ENGINE=InnoDB"
        ),
    )
    .await;
    let mut c = Conn::new(src.clone()).await.unwrap();
    c.query_drop("SET sql_log_bin = 0, max_recursive_iterations = 100000")
        .await
        .unwrap();
    for chunk in 0..mib.div_ceil(16) {
        c.query_drop(format!(
            "INSERT INTO `{db}`.bulk (grp, pad) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL \
             SELECT i + 1 FROM n WHERE i < 4096) SELECT {chunk}, CONCAT(RANDOM_BYTES(1024), \
             RANDOM_BYTES(1024), RANDOM_BYTES(1024), RANDOM_BYTES(1024)) FROM n"
        ))
        .await
        .unwrap();
    }
    let max: Option<u64> = c
        .query_first(format!("SELECT MAX(id) FROM `{db}`.bulk"))
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    max.unwrap_or(1)
}

fn journal(dir: &std::path::Path, name: &str) -> Journal {
    Arc::new(Mutex::new(SqliteJournal::open(&dir.join(name)).unwrap()))
}

fn bytes_copied(r: &migrator::db::copy::CopyReport) -> u64 {
    r.tables.iter().filter(|t| t.copied).map(|t| t.bytes).sum()
}

async fn pin(dst: &Opts) -> Conn {
    let mut c = Conn::new(dst.clone()).await.unwrap();
    c.query_drop("SET NAMES utf8mb4, time_zone = '+00:00'; SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .unwrap();
    c
}

async fn one_size(size: u64, freezes: usize, rate: u64) {
    let src_db = MariaDb::start_with(MariaDbOptions {
        binlog_server_id: Some(1),
        extra_args: vec![
            "--innodb-buffer-pool-size=1G".into(),
            "--max-binlog-size=256M".into(),
        ],
    })
    .unwrap();
    let dst_db = MariaDb::start_with(MariaDbOptions {
        extra_args: vec!["--innodb-buffer-pool-size=1G".into()],
        ..Default::default()
    })
    .unwrap();
    let src: Opts = src_db.admin_url().parse().unwrap();
    let dst: Opts = dst_db.admin_url().parse().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let db = format!("b{size}");
    let t = Instant::now();
    let max_id = grow(&src, &db, size).await;
    println!(
        "[{size} MiB] generated in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let copy_opts = CopyOptions {
        threads: 2,
        ..Default::default()
    };

    // Bare bulk copy, nobody writing.
    let t = Instant::now();
    let r = copy_database(&src, &dst, &db, journal(tmp.path(), "bare"), &copy_opts)
        .await
        .unwrap();
    let bare = t.elapsed().as_secs_f64();
    println!(
        "[{size} MiB] bare bulk copy: {bare:.2} s ({} bytes)",
        bytes_copied(&r)
    );
    exec(&dst, &format!("DROP DATABASE `{db}`")).await;

    let writer = Arc::new(Writer {
        paused: AtomicBool::new(false),
        idle: AtomicBool::new(true),
        stop: AtomicBool::new(false),
        target: AtomicU8::new(0),
        writes: AtomicU64::new(0),
    });
    let task = tokio::spawn(write_loop(
        writer.clone(),
        [src.clone(), dst.clone()],
        db.clone(),
        rate,
        max_id,
    ));

    // New: follow by change capture.
    let j = journal(tmp.path(), "new");
    let t0 = Instant::now();
    let first = follow::sync(&src, &dst, &db, j.clone(), 2).await.unwrap();
    let catch = follow::sync(&src, &dst, &db, j.clone(), 2).await.unwrap();
    println!(
        "[{size} MiB] new: bulk copy and the changes made meanwhile {:.2} s ({} rows applied), \
         a catch-up right after {:.3} s ({} rows applied)",
        first.seconds, first.rows_applied, catch.seconds, catch.rows_applied
    );
    let mut frozen = Vec::new();
    let mut pinned = None;
    let mut live_new = 0.0;
    for k in 0..freezes {
        if k > 0 {
            // Another freeze sample: 2 s of writes, a catch-up, the freeze.
            tokio::time::sleep(Duration::from_secs(2)).await;
            follow::sync(&src, &dst, &db, j.clone(), 2).await.unwrap();
        }
        writer.pause().await;
        let f = Instant::now();
        follow::tail(&src, &dst, &db, j.clone(), 2).await.unwrap();
        let pin = pin(&dst).await;
        frozen.push(f.elapsed().as_secs_f64());
        if k + 1 == freezes {
            pinned = Some(pin);
            writer.target.store(1, Ordering::SeqCst); // the switch
        } else {
            drop(pin);
        }
        writer.resume();
        if k == 0 {
            // A move freezes once: live from here (the other freezes are samples).
            live_new = t0.elapsed().as_secs_f64();
        }
    }
    let v = Instant::now();
    let mut old_conn = Conn::new(src.clone()).await.unwrap();
    old_conn
        .query_drop("SET NAMES utf8mb4, time_zone = '+00:00'")
        .await
        .unwrap();
    let diffs = verify_sessions(&mut old_conn, pinned.as_mut().unwrap(), &db)
        .await
        .unwrap();
    let post_verify = v.elapsed().as_secs_f64();
    assert!(diffs.is_empty(), "after the switch: {diffs:?}");
    // The pin's snapshot holds metadata locks: release it before the destination is dropped.
    if let Some(p) = pinned.take() {
        p.disconnect().await.unwrap();
    }
    old_conn.disconnect().await.unwrap();
    let (p50, lo, hi) = stats(&frozen);
    let mut sorted = frozen.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let p99 = sorted[((sorted.len() as f64 * 0.99).ceil() as usize).clamp(1, sorted.len()) - 1];
    println!(
        "[{size} MiB] new: time-to-live {live_new:.2} s ({:.2}x bare), freeze median {p50:.3} s \
         (min {lo:.3}, max {hi:.3}, p99 {p99:.3}, n={}), verification after the switch {post_verify:.2} s \
         (whole move with it {:.2} s, {:.2}x bare); {} writes",
        live_new / bare,
        frozen.len(),
        live_new + post_verify,
        (live_new + post_verify) / bare,
        writer.writes.load(Ordering::SeqCst)
    );

    // Old: delta copies; the writer back on the source, the destination afresh.
    writer.pause().await;
    writer.target.store(0, Ordering::SeqCst);
    exec(&dst, &format!("DROP DATABASE `{db}`")).await;
    writer.resume();
    let j = journal(tmp.path(), "old");
    let t0 = Instant::now();
    copy_database(&src, &dst, &db, j.clone(), &copy_opts)
        .await
        .unwrap();
    let delta_opts = CopyOptions {
        threads: 2,
        delta: true,
        ..Default::default()
    };
    let mut passes = 0;
    loop {
        passes += 1;
        let r = copy_database(&src, &dst, &db, j.clone(), &delta_opts)
            .await
            .unwrap();
        if bytes_copied(&r) <= 8 << 20 || passes >= 5 {
            println!(
                "[{size} MiB] old: {passes} delta pass(es), the last moved {} bytes",
                bytes_copied(&r)
            );
            break;
        }
    }
    let old_freezes = if size > 1024 { 1 } else { 2 };
    let mut frozen_old = Vec::new();
    let mut live_old = 0.0;
    for k in 0..old_freezes {
        if k > 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        writer.pause().await;
        let f = Instant::now();
        copy_database(&src, &dst, &db, j.clone(), &delta_opts)
            .await
            .unwrap();
        let d = verify_database(&src, &dst, &db).await.unwrap();
        assert!(d.is_empty(), "{d:?}");
        frozen_old.push(f.elapsed().as_secs_f64());
        writer.resume();
        if k == 0 {
            live_old = t0.elapsed().as_secs_f64();
        }
    }
    writer.stop.store(true, Ordering::SeqCst);
    task.await.unwrap();
    let (o50, olo, ohi) = stats(&frozen_old);
    println!(
        "[{size} MiB] old: time-to-live {live_old:.2} s ({:.2}x bare), freeze median {o50:.3} s \
         (min {olo:.3}, max {ohi:.3}, n={})",
        live_old / bare,
        frozen_old.len()
    );
    println!(
        "[{size} MiB] SUMMARY freeze new p99 {p99:.3} s vs old median {o50:.2} s ({:.0}x shorter); \
         time-to-live new {live_new:.1} s vs old {live_old:.1} s; bare copy {bare:.1} s",
        o50 / p50.max(1e-6)
    );
}

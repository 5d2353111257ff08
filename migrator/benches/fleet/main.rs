//! The fleet at scale (issue 17's scale benchmark): many workers on one shared MariaDB journal
//! of 3,000,000 sites, with fake outside systems, so that the store is what is measured.
//!
//! 1. A private MariaDB server (testkit; `innodb_flush_log_at_trx_commit = 2`, 3 GiB buffer
//!    pool) gets the synthetic campaign of the dashboard bench (`common::journal_gen`): a plan
//!    of waves of 50,000 sites, 20 waves done (7 journaled phases each, a freeze time), wave
//!    21 running, the rest planned; bulk-loaded with `LOAD DATA INFILE`, timed. The same
//!    journal is written to SQLite (in `/dev/shm`) for the side-by-side dashboard figure.
//! 2. The dashboard's summary is installed on both (`serve::prepare_journal`: plan import and
//!    rebuild, timed), then the overview (`serve::queries::overview`, what `GET /api/overview`
//!    runs) is timed on MariaDB and SQLite alternately.
//! 3. For each N of WORKERS: one of the plan's last waves is started (`Fleet::start_wave_with`,
//!    the code of `migrator wave start`, timed) with its first WAVE_SITES sites in the plan's
//!    move groups (every tenth site shares its database with the one before), and N threads
//!    run the real worker loop (`fleet::worker::run`: claims with `FOR UPDATE SKIP LOCKED`,
//!    claim leases renewed by a thread, the engine's journaled phases, site leases, the
//!    dashboard's triggers) for SECS seconds. Each worker has its own store connections. The
//!    outside systems are the dry run's recorder (load balancers, DNS, proxy, tunnel: in
//!    memory, instant); the bulk database copy of each site sleeps COPY_MS (an I/O-bound copy
//!    made by other machines). Printed per N: sites/s, speed-up against N = 1, claims/s and
//!    claim time (p50/p99), the server's write statements and rows per second, round trips
//!    and connections per site, row-lock waits, CPU per site (server and workers), and the
//!    overview's time while the workers run.
//! 4. Claims late in a wave: all but the last 500 groups of the first run's wave are marked
//!    done, and one worker claims 200 more (the claim's cost as the wave fills up).
//!
//! `cargo bench -p migrator --bench fleet -- [SITES] [WAVE_SITES] [SECS] [COPY_MS] [WORKERS]`
//! (defaults 3000000 20000 20 100 1,2,4,8,16,32). A quick run: `-- 400000 2000 5`. SITES must
//! hold (runs + 2) waves of 50,000. Without `--bench` it does nothing.

#[path = "../common/mod.rs"]
mod common;
mod load;
mod run;

use common::journal_gen::{waves, write_plan, write_sqlite, WAVE};
use common::{num, positional_args, stats};
use migrator::journal::JournalLocation;
use migrator::serve::{self, queries, Pool};
use run::{late_claims, run, RunResult, WaveWorld};
use std::path::Path;
use std::time::{Duration, Instant};

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    migrator::wave::percentile(&s, p).unwrap_or(f64::NAN)
}

fn main() {
    let Some(args) = positional_args() else {
        return; // built by `cargo test --all-targets`: not a test
    };
    let sites = num(&args, 0, 3_000_000);
    let wave_sites = num(&args, 1, 20_000).min(WAVE);
    let secs = num(&args, 2, 20) as f64;
    let copy = Duration::from_millis(num(&args, 3, 100) as u64);
    let workers: Vec<usize> = args
        .get(4)
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 4, 8, 16, 32]);
    let total_waves = waves(sites);
    if total_waves < workers.len() + 2 {
        eprintln!(
            "SITES {sites} makes {total_waves} waves of {WAVE}; {} runs need {} (one done, one \
             running, one per run)",
            workers.len(),
            workers.len() + 2
        );
        std::process::exit(2);
    }
    // Waves done: 20 at full size; the plan's last waves are the runs'.
    let done = (total_waves - workers.len() - 1).min(20);
    let dir = Path::new("/dev/shm").join(format!("migrator-fleet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    println!(
        "fleet bench: {sites} sites ({total_waves} waves of {WAVE}, {done} done), runs of \
         {wave_sites} sites for {secs} s each, bulk copy {copy:?} per site, workers {workers:?}"
    );

    let t = Instant::now();
    let plan = dir.join("plan.json");
    write_plan(&plan, sites);
    let plan_ref = format!("{}#wave{}", plan.display(), done + 1);
    let sqlite = dir.join("journal.sqlite");
    write_sqlite(&sqlite, &plan, sites, done);
    println!(
        "SQLite journal and plan generated in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let store = load::Store::start(&dir);
    println!("MariaDB started in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    store.load(sites, done, &plan_ref);
    println!(
        "MariaDB journal bulk-loaded in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    for (name, path) in [("SQLite", sqlite.as_path()), ("MariaDB", store.path())] {
        let t = Instant::now();
        let how = serve::prepare_journal(path, Some(&plan)).unwrap();
        println!(
            "dashboard summary on {name} ({how:?}: plan import + rebuild): {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    overview_side_by_side(&store, &sqlite, sites, 7);

    let mut results: Vec<RunResult> = Vec::new();
    let mut first_world = None;
    for (k, &n) in workers.iter().enumerate() {
        let wave = (total_waves - workers.len() + 1 + k) as u32;
        let world = WaveWorld::new(wave, sites, wave_sites);
        let t = Instant::now();
        let added = world.start(&store, &format!("{}#wave{wave}", plan.display()));
        println!(
            "wave {wave} started: {} sites in {added} groups in {:.1} s",
            world.specs.len(),
            t.elapsed().as_secs_f64()
        );
        let idle = store.settle(Duration::from_secs(120));
        println!("  (server idle after {idle:.1} s)");
        let r = run(&store, &world, n, secs, copy);
        print_run(&r, results.first());
        results.push(r);
        if first_world.is_none() {
            first_world = Some(world);
        }
    }
    print_table(&results);
    if let Some(w) = first_world {
        let early: Vec<f64> = results[0].claim_ms.clone();
        let late = late_claims(&store, &w, 500, 200);
        println!("-- claim time as the wave fills up (one worker) --");
        println!(
            "early in the wave (run 1): p50 {:.2} ms, p99 {:.2} ms, n {}",
            pct(&early, 50.0),
            pct(&early, 99.0),
            early.len()
        );
        println!(
            "last 500 of {} groups:      p50 {:.2} ms, p99 {:.2} ms, n {}",
            w.groups.len(),
            pct(&late, 50.0),
            pct(&late, 99.0),
            late.len()
        );
    }
}

/// The overview's server time on both journals, alternately, after a warm-up of each.
fn overview_side_by_side(store: &load::Store, sqlite: &Path, sites: usize, pairs: usize) {
    let maria = Pool::new(&JournalLocation::parse(store.path()).unwrap());
    let lite = Pool::new(&JournalLocation::parse(sqlite).unwrap());
    let (m, l) = (maria.get().unwrap(), lite.get().unwrap());
    queries::overview(&*m).unwrap();
    queries::overview(&*l).unwrap();
    let (mut on_m, mut on_l) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        let t = Instant::now();
        let o = queries::overview(&*m).unwrap();
        on_m.push(ms(t));
        assert_eq!(o.total_sites as usize, sites);
        let t = Instant::now();
        let o = queries::overview(&*l).unwrap();
        on_l.push(ms(t));
        assert_eq!(o.total_sites as usize, sites);
    }
    println!("-- dashboard overview, server time, {sites} sites, {pairs} pairs --");
    let (a, alo, ahi) = stats(&on_m);
    let (b, blo, bhi) = stats(&on_l);
    println!("MariaDB: median {a:.2} ms (min {alo:.2}, max {ahi:.2})");
    println!("SQLite:  median {b:.2} ms (min {blo:.2}, max {bhi:.2})");
    println!("ratio MariaDB/SQLite {:.2}; goal <= 100 ms", a / b);
}

fn per_s(r: &RunResult, v: f64) -> f64 {
    v / r.secs
}

fn counter(r: &RunResult, names: &[&str]) -> f64 {
    names
        .iter()
        .map(|n| r.status.get(*n).copied().unwrap_or(0))
        .sum::<i64>() as f64
}

fn print_run(r: &RunResult, base: Option<&RunResult>) {
    let sps = per_s(r, r.sites as f64);
    let speedup = base.map_or(1.0, |b| sps / per_s(b, b.sites as f64));
    let site = r.sites.max(1) as f64;
    let writes = counter(
        r,
        &[
            "COM_INSERT",
            "COM_UPDATE",
            "COM_DELETE",
            "COM_INSERT_SELECT",
        ],
    );
    let rows = counter(r, &["HANDLER_WRITE", "HANDLER_UPDATE", "HANDLER_DELETE"]);
    println!(
        "N={:<2} {:.1} s: {} sites ({} failed), {sps:.1} sites/s, speed-up {speedup:.2} \
         ({:.2} x N); claims {:.1}/s (p50 {:.2} ms, p99 {:.2} ms; {} found nothing)",
        r.workers,
        r.secs,
        r.sites,
        r.failed,
        speedup / r.workers as f64,
        per_s(r, r.claim_ms.len() as f64),
        pct(&r.claim_ms, 50.0),
        pct(&r.claim_ms, 99.0),
        r.empty
    );
    println!(
        "      store: {:.0} write statements/s, {:.0} rows written/s (triggers included), {:.1} round trips/site, \
         {:.2} connections/site, {:.1} row reads/site, {} row-lock waits ({} ms), {} deadlocks",
        per_s(r, writes),
        per_s(r, rows),
        counter(r, &["QUESTIONS"]) / site,
        counter(r, &["CONNECTIONS"]) / site,
        counter(
            r,
            &["HANDLER_READ_KEY", "HANDLER_READ_NEXT", "HANDLER_READ_RND_NEXT"]
        ) / site,
        counter(r, &["INNODB_ROW_LOCK_WAITS"]),
        counter(r, &["INNODB_ROW_LOCK_TIME"]),
        counter(r, &["INNODB_DEADLOCKS"]),
    );
    println!(
        "      CPU per site: mariadbd {:.1} ms, workers {:.1} ms (both cores: {:.0} % busy); \
         overview during the run p50 {:.2} ms, max {:.2} ms",
        r.store_cpu * 1e3 / site,
        r.bench_cpu * 1e3 / site,
        100.0 * (r.store_cpu + r.bench_cpu) / r.secs / 2.0,
        pct(&r.overview_ms, 50.0),
        pct(&r.overview_ms, 100.0),
    );
}

fn print_table(results: &[RunResult]) {
    println!("-- summary --");
    println!(
        "| N | sites/s | speed-up (x N) | claims/s | claim p50 / p99 ms | write stmts/s | \
         round trips/site | CPU ms/site store / workers | overview p50 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let base = results.first().map(|b| b.sites as f64 / b.secs);
    for r in results {
        let sps = r.sites as f64 / r.secs;
        let up = base.map_or(1.0, |b| sps / b);
        let site = r.sites.max(1) as f64;
        println!(
            "| {} | {sps:.1} | {up:.2} ({:.2}) | {:.1} | {:.2} / {:.2} | {:.0} | {:.1} | \
             {:.1} / {:.1} | {:.2} |",
            r.workers,
            up / r.workers as f64,
            r.claim_ms.len() as f64 / r.secs,
            pct(&r.claim_ms, 50.0),
            pct(&r.claim_ms, 99.0),
            counter(
                r,
                &[
                    "COM_INSERT",
                    "COM_UPDATE",
                    "COM_DELETE",
                    "COM_INSERT_SELECT"
                ]
            ) / r.secs,
            counter(r, &["QUESTIONS"]) / site,
            r.store_cpu * 1e3 / site,
            r.bench_cpu * 1e3 / site,
            pct(&r.overview_ms, 50.0),
        );
    }
}

//! The dashboard at full size: a synthetic journal of SITES sites (default 3,000,000) in waves
//! of 50,000 (a plan file like `migrator plan` writes), the first 20 waves done (7 journaled
//! phases per site, a freeze time each), wave 21 running (live, in flight, failed with an
//! error), the rest planned. Then, after a warm-up, PAIRS rounds alternating ours and the
//! alternative:
//! - overview: ours (the summary tables of `serve::summary`, what `GET /api/overview` runs)
//!   vs the naive query a dashboard would otherwise run on the journal (states per wave by a
//!   full `GROUP BY` over `sites` joined with the plan's membership);
//! - a filtered wave page (wave 21, state `failed`, sorted by bytes, page 1; and `live` sorted
//!   by freeze, page 20), a global state filter (`failed` across every wave), a name filter
//!   inside a wave, one site's page, `/metrics`;
//! - the same overview and wave page through HTTP with the bearer token (end to end);
//! - the engine's write cost with the triggers (one site through 7 phases) vs without.
//!
//! `cargo bench -p migrator --bench dashboard -- [SITES] [PAIRS] [DIR]` (DIR default
//! `/dev/shm`; the journal is deleted at the end). Without `--bench` it does nothing.

mod common;

use common::journal_gen::{site, waves, write_plan, write_sqlite, PHASES, WAVE};
use common::{positional_args, stats};
use drivers::http::{HttpClient, Method};
use migrator::journal::{JournalStore, SqliteJournal, StepOutcome};
use migrator::serve::{self, queries, ServeOptions};
use rusqlite::Connection;
use std::path::Path;
use std::time::Instant;

/// Waves already done (20 at full size; fewer for a small run, so that one runs).
fn done_waves(sites: usize) -> usize {
    waves(sites).saturating_sub(1).min(20)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn print(name: &str, v: &[f64]) -> f64 {
    let (med, lo, hi) = stats(v);
    println!(
        "{name:<58} median {med:>9.2} ms  (min {lo:.2}, max {hi:.2}, n {})",
        v.len()
    );
    med
}

/// The overview without summary tables: states per wave by scanning the journal.
fn naive_overview(c: &Connection) -> usize {
    let mut st = c
        .prepare_cached(
            "SELECT w.wave, s.state, COUNT(*) FROM sites s
               LEFT JOIN dash_wave_sites w ON w.site = s.site GROUP BY 1, 2",
        )
        .unwrap();
    let n = st.query_map([], |r| r.get::<_, i64>(2)).unwrap().count();
    let p: Vec<f64> = c
        .prepare_cached(
            "SELECT CAST(value AS REAL) FROM checkpoints WHERE scope = 'cutover'
              AND substr(key, -10) = '.freeze_ms' ORDER BY 1",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|v| v.unwrap())
        .collect();
    n + p.len()
}

/// One `GET path` (a new connection each time, as before: connect included), its milliseconds.
fn http_get(c: &HttpClient, path: &str) -> f64 {
    let t = Instant::now();
    c.request(Method::Get, path)
        .send_ok()
        .unwrap_or_else(|e| panic!("{e}"));
    ms(t)
}

fn main() {
    let Some(rest) = positional_args() else {
        return; // built by `cargo test --all-targets`: not a test
    };
    let sites: usize = rest
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000_000);
    let pairs: usize = rest.get(1).and_then(|s| s.parse().ok()).unwrap_or(7);
    let base = rest.get(2).map(|s| s.as_str()).unwrap_or("/dev/shm");
    let dir = Path::new(base).join(format!("migrator-dash-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let journal = dir.join("journal.sqlite");
    let plan = dir.join("plan.json");

    println!(
        "dashboard bench: {sites} sites, waves of {WAVE}, {pairs} pairs, in {}",
        dir.display()
    );
    let t = Instant::now();
    write_plan(&plan, sites);
    write_sqlite(&journal, &plan, sites, done_waves(sites));
    let steps: i64 = Connection::open(&journal)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM steps", [], |r| r.get(0))
        .unwrap();
    println!(
        "generated plan {} MiB, journal {} MiB ({steps} steps) in {:.1} s",
        std::fs::metadata(&plan).unwrap().len() >> 20,
        std::fs::metadata(&journal).unwrap().len() >> 20,
        t.elapsed().as_secs_f64()
    );
    let opts = ServeOptions {
        journal: journal.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        token_file: dir.join("token"),
        plan: None,
        sites: None,
    };
    let t = Instant::now();
    let (app, token, installed) = serve::build(&opts, None).unwrap();
    println!(
        "first start (plan import + summary rebuild, {installed:?}): {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let conn = app.pool.get().unwrap();
    // The naive baseline reads the file with SQLite itself.
    let raw = Connection::open(&journal).unwrap();
    let cur = (done_waves(sites) + 1) as i64;
    let f = |state: &str, sort: &str, page: i64, q: Option<&str>| queries::SiteFilter {
        state: (!state.is_empty()).then(|| state.to_string()),
        q: q.map(str::to_string),
        sort: serde_json::from_value(serde_json::Value::String(sort.into())).unwrap(),
        desc: Some(true),
        page: Some(page),
        ..Default::default()
    };
    let (failed_bytes, live_freeze, all_failed, name_q) = (
        f("failed", "bytes", 1, None),
        f("live", "freeze", 20, None),
        f("failed", "site", 1, None),
        f("", "site", 1, Some("site10123")),
    );
    // Warm-up.
    queries::overview(&*conn).unwrap();
    naive_overview(&raw);
    let (mut ours, mut naive) = (Vec::new(), Vec::new());
    let mut pages: [Vec<f64>; 6] = Default::default();
    for _ in 0..pairs {
        let t = Instant::now();
        let o = queries::overview(&*conn).unwrap();
        ours.push(ms(t));
        assert_eq!(o.total_sites as usize, sites);
        let t = Instant::now();
        naive_overview(&raw);
        naive.push(ms(t));
        let t = Instant::now();
        let p = queries::site_page(&*conn, Some(cur), &failed_bytes).unwrap();
        pages[0].push(ms(t));
        assert_eq!(p.rows.len(), 50);
        let t = Instant::now();
        queries::site_page(&*conn, Some(cur), &live_freeze).unwrap();
        pages[1].push(ms(t));
        let t = Instant::now();
        queries::site_page(&*conn, None, &all_failed).unwrap();
        pages[2].push(ms(t));
        let t = Instant::now();
        queries::site_page(&*conn, Some(cur), &name_q).unwrap();
        pages[3].push(ms(t));
        let t = Instant::now();
        serve::site::site_detail(&*conn, &site(cur as usize * WAVE - WAVE + 12))
            .unwrap()
            .unwrap();
        pages[4].push(ms(t));
        let t = Instant::now();
        serve::metrics::render(&*conn).unwrap();
        pages[5].push(ms(t));
    }
    drop(conn);
    drop(raw);
    println!("-- server time (library calls, what the API handlers run) --");
    let a = print("overview, summary tables (ours)", &ours);
    let b = print("overview, GROUP BY over the journal (naive)", &naive);
    println!("{:<58} {:.1}x faster", "ratio naive/ours", b / a);
    print(
        &format!("wave {cur} page: state=failed sort=bytes desc"),
        &pages[0],
    );
    print(
        &format!("wave {cur} page: state=live sort=freeze desc page 20"),
        &pages[1],
    );
    print("all sites: state=failed (global state index)", &pages[2]);
    print(
        &format!("wave {cur} page: name contains 'site10123'"),
        &pages[3],
    );
    print("one site's page", &pages[4]);
    print("/metrics", &pages[5]);

    let srv = serve::Background::start(app, opts.listen).unwrap();
    let client = HttpClient::for_addr(srv.addr, std::time::Duration::from_secs(120))
        .unwrap()
        .without_keep_alive()
        .with_secret_header("Authorization", &format!("Bearer {}", token.value));
    let (mut ho, mut hw) = (Vec::new(), Vec::new());
    http_get(&client, "/api/overview");
    for _ in 0..pairs {
        ho.push(http_get(&client, "/api/overview"));
        hw.push(http_get(
            &client,
            &format!("/api/wave/{cur}/sites?state=failed&sort=bytes&desc=true"),
        ));
    }
    drop(srv);
    println!("-- end to end over HTTP (loopback, bearer token) --");
    print("GET /api/overview", &ho);
    print(
        &format!("GET /api/wave/{cur}/sites?state=failed&sort=bytes"),
        &hw,
    );

    // The engine's cost of the triggers: one site through 7 phases, FULL sync, with the
    // summary triggers (the big journal) vs a journal without them (same size, triggers
    // dropped in a copy would double the disk: use a fresh small journal for both).
    let small = dir.join("small.sqlite");
    // Sites named `prefix{i}`: the rows must be new in every run.
    let run = |j: &mut SqliteJournal, prefix: &str, n: usize| {
        let t = Instant::now();
        for i in 0..n {
            let s = format!("{prefix}{i}");
            for p in PHASES {
                let id = j.begin_step(&s, p).unwrap();
                j.finish_step(
                    id,
                    &StepOutcome {
                        bytes: 10,
                        checksum: None,
                    },
                )
                .unwrap();
                j.set_site_state(&s, migrator::journal::SiteState::Prepared)
                    .unwrap();
            }
        }
        ms(t) / n as f64
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..pairs {
        let _ = std::fs::remove_file(&small);
        let mut j = SqliteJournal::open(&small).unwrap();
        without.push(run(&mut j, "w", 50));
        drop(j);
        serve::prepare_journal(&small, None).unwrap();
        let mut j = SqliteJournal::open(&small).unwrap();
        with.push(run(&mut j, &format!("x{round}-"), 50));
        drop(j);
        let _ = std::fs::remove_file(&small);
    }
    println!("-- engine writes per site (7 phases: 21 FULL-sync journal writes) --");
    let a = print("without summary triggers", &without);
    let b = print("with summary triggers", &with);
    println!("{:<58} {:+.1} %", "overhead", 100.0 * (b / a - 1.0));
}

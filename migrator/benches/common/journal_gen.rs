//! The synthetic campaign of the dashboard and fleet benches, the same for SQLite and MariaDB:
//! a plan of waves of [`WAVE`] sites and the journal the engine would have left part-way
//! through it. The first `done` waves are done (7 journaled phases per site, a freeze time
//! each); the next one is running (20,000 sites live, 5,000 in flight, 1,000 failed with an
//! error); the rest are planned only (not in the journal yet).

use migrator::journal::SqliteJournal;
use rusqlite::{params, Connection};
use std::path::Path;

/// Sites per wave of the plan.
pub const WAVE: usize = 50_000;

pub const PHASES: [&str; 7] = [
    "prepare",
    "sync",
    "freeze",
    "final-sync",
    "verify",
    "switch",
    "unfreeze",
];

const STATES: [&str; 7] = [
    "prepared",
    "synced",
    "frozen",
    "final_synced",
    "verified",
    "switched",
    "live",
];

pub fn site(i: usize) -> String {
    format!("site{i:07}")
}

/// Waves of a plan of `sites` sites.
pub fn waves(sites: usize) -> usize {
    sites.div_ceil(WAVE)
}

/// The sites of (1-based) wave `w` of a plan of `sites` sites.
pub fn wave_sites(w: usize, sites: usize) -> std::ops::Range<usize> {
    ((w - 1) * WAVE).min(sites)..(w * WAVE).min(sites)
}

/// The move groups of a wave, as the planner makes them from shared databases: sites one by
/// one, except that every tenth site shares its database (and so its group) with the site
/// before it. Each group as its site numbers.
pub fn groups(range: std::ops::Range<usize>) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for i in range.clone() {
        match out.last_mut() {
            Some(g) if i % 10 == 9 && i > range.start => g.push(i),
            _ => out.push(vec![i]),
        }
    }
    out
}

/// The plan file: waves of [`WAVE`] sites in [`groups`].
pub fn write_plan(path: &Path, sites: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    write!(
        f,
        "{{\"format\":\"{}\",\"version\":{},\"waves\":[",
        planner::PLAN_FORMAT,
        planner::PLAN_VERSION
    )
    .unwrap();
    for w in 1..=waves(sites) {
        if w > 1 {
            write!(f, ",").unwrap();
        }
        write!(
            f,
            "{{\"number\":{w},\"kind\":\"regular\",\"window_utc\":\"22:00-06:00 UTC\",\"groups\":["
        )
        .unwrap();
        for (k, g) in groups(wave_sites(w, sites)).iter().enumerate() {
            if k > 0 {
                write!(f, ",").unwrap();
            }
            let names: Vec<String> = g.iter().map(|&i| format!("\"{}\"", site(i))).collect();
            write!(f, "{{\"sites\":[{}]}}", names.join(",")).unwrap();
        }
        write!(f, "]}}").unwrap();
    }
    write!(f, "]}}").unwrap();
    f.flush().unwrap();
}

/// One journaled phase of a site.
pub struct Step {
    pub phase: &'static str,
    pub failed: bool,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub bytes: i64,
    pub error: Option<String>,
}

/// A site as the journal holds it.
pub struct Site {
    pub name: String,
    pub state: &'static str,
    pub updated_ms: i64,
    pub steps: Vec<Step>,
    /// Its write-unavailability checkpoint (`<site>.freeze_ms`), when it went live.
    pub freeze_ms: Option<String>,
}

/// Every site in the journal (done waves, the running one), in order; planned sites are not in
/// the journal. `done` waves are done; wave `done + 1` is running.
pub fn journal_sites(sites: usize, done: usize, mut f: impl FnMut(Site)) {
    let t0: i64 = 1_795_000_000_000;
    let current = wave_sites(done + 1, sites);
    for i in 0..current.end {
        // Time advances through the campaign: ~1.2 s per site.
        let mut t = t0 + i as i64 * 1200;
        let k = i % WAVE;
        let (n_phases, fail) = if i < current.start || k < 20_000 {
            (7, false)
        } else if k < 25_000 {
            (2 + k % 4, false)
        } else if k < 26_000 {
            (2, true)
        } else {
            continue; // planned: not in the journal yet
        };
        let mut steps = Vec::with_capacity(n_phases);
        for (p, phase) in PHASES.iter().enumerate().take(n_phases) {
            let d = 20 + ((i * 7 + p * 13) % 900) as i64;
            let bytes = if *phase == "sync" {
                1_000_000 + (i % 5000) as i64 * 1000
            } else {
                0
            };
            let failed = fail && p + 1 == n_phases;
            steps.push(Step {
                phase,
                failed,
                started_ms: t,
                ended_ms: t + d,
                bytes: if failed { 0 } else { bytes },
                error: failed.then(|| format!("phase {phase}: copy-db: table wp_posts differs")),
            });
            t += d;
        }
        f(Site {
            name: site(i),
            state: if fail { "failed" } else { STATES[n_phases - 1] },
            updated_ms: t,
            steps,
            freeze_ms: (n_phases == 7).then(|| format!("{}.0", 300 + (i * 37 % 2500))),
        });
    }
}

/// The SQLite journal as the engine would have left it ([`journal_sites`]; bulk-inserted: the engine's one-by-one FULL
/// sync writes would take hours for 7M steps).
pub fn write_sqlite(path: &Path, plan: &Path, sites: usize, done: usize) {
    drop(SqliteJournal::open(path).unwrap());
    let mut c = Connection::open(path).unwrap();
    c.pragma_update(None, "synchronous", "OFF").unwrap();
    let tx = c.transaction().unwrap();
    tx.execute(
        "INSERT INTO meta(k, v) VALUES('plan', ?1)",
        [format!("{}#wave{}", plan.display(), done + 1)],
    )
    .unwrap();
    {
        let mut s = tx
            .prepare("INSERT INTO sites(site, state, updated_ms) VALUES(?1, ?2, ?3)")
            .unwrap();
        let mut st = tx
            .prepare(
                "INSERT INTO steps(site, phase, status, started_ms, ended_ms, bytes, error)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .unwrap();
        let mut cp = tx
            .prepare("INSERT INTO checkpoints(scope, key, value, updated_ms) VALUES('cutover', ?1, ?2, ?3)")
            .unwrap();
        journal_sites(sites, done, |site| {
            for p in &site.steps {
                st.execute(params![
                    site.name,
                    p.phase,
                    if p.failed { "failed" } else { "done" },
                    p.started_ms,
                    p.ended_ms,
                    p.bytes,
                    p.error
                ])
                .unwrap();
            }
            s.execute(params![site.name, site.state, site.updated_ms])
                .unwrap();
            if let Some(f) = &site.freeze_ms {
                cp.execute(params![
                    format!("{}.freeze_ms", site.name),
                    f,
                    site.updated_ms
                ])
                .unwrap();
            }
        });
    }
    tx.commit().unwrap();
}

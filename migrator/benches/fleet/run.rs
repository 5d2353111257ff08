//! One run of the fleet bench: a started wave worked by N workers for a while, each a thread
//! running the real worker loop ([`migrator::fleet::worker::run`]) with its own store
//! connections, on fake outside systems ([`Recorder`], the dry run's world) whose bulk
//! database copy sleeps.

use crate::common::journal_gen::{groups, site, wave_sites};
use crate::load::{proc_cpu_secs, Store};
use migrator::cutover::group::SiteOutcome;
use migrator::cutover::EngineOptions;
use migrator::dry_run::Recorder;
use migrator::fleet::worker::{self, Event, WorkerOptions};
use migrator::fleet::{owner_id, resources, Fleet};
use migrator::serve::{queries, Pool};
use migrator::site_spec::{sample, SiteSpec, SpecError};
use migrator::systems::{DataMover, Direction, SysResult, Systems};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The fake data mover: the recorder's, whose first (bulk) database copy of a site sleeps
/// `copy` (an I/O-bound copy done by other machines); every other call returns at once.
struct SlowCopy {
    inner: Arc<dyn DataMover>,
    copy: Duration,
}

impl DataMover for SlowCopy {
    fn prepare(&self, spec: &SiteSpec) -> SysResult<()> {
        self.inner.prepare(spec)
    }
    fn sync_files(&self, spec: &SiteSpec, dir: Direction) -> SysResult<u64> {
        self.inner.sync_files(spec, dir)
    }
    fn copy_dbs(
        &self,
        spec: &SiteSpec,
        dbs: &[String],
        dir: Direction,
        delta: bool,
    ) -> SysResult<u64> {
        if !delta {
            std::thread::sleep(self.copy);
        }
        self.inner.copy_dbs(spec, dbs, dir, delta)
    }
    fn verify(&self, spec: &SiteSpec, dbs: &[String]) -> SysResult<Vec<String>> {
        self.inner.verify(spec, dbs)
    }
    fn fingerprint(&self, spec: &SiteSpec) -> SysResult<Option<String>> {
        self.inner.fingerprint(spec)
    }
}

/// The sites of a started wave: their specs and their fake world (one recorder per move
/// group: its members share a database and so a proxy route).
pub struct WaveWorld {
    pub wave: u32,
    pub specs: HashMap<String, SiteSpec>,
    worlds: HashMap<String, Recorder>,
    pub groups: Vec<Vec<String>>,
}

impl WaveWorld {
    /// The first `n` sites (whole groups) of plan wave `wave` of a plan of `sites` sites. Each
    /// site a sample spec (`site_spec::sample`) whose database is its group's and whose old
    /// home is on one of 300 filers.
    pub fn new(wave: u32, sites: usize, n: usize) -> WaveWorld {
        let mut w = WaveWorld {
            wave,
            specs: HashMap::new(),
            worlds: HashMap::new(),
            groups: Vec::new(),
        };
        let mut taken = 0;
        for g in groups(wave_sites(wave as usize, sites)) {
            if taken >= n {
                break;
            }
            taken += g.len();
            let db = format!("db_{}", site(g[0]));
            let members: Vec<SiteSpec> = g
                .iter()
                .map(|&i| {
                    let mut s = sample(&site(i));
                    s.databases = vec![db.clone()];
                    s.homes[0].old = format!("/srv/filer{}/{}", i % 300, s.site).into();
                    s
                })
                .collect();
            let rec = Recorder::for_site(&members[0], false);
            for m in &members[1..] {
                rec.add_site(m);
            }
            for m in &members {
                w.worlds.insert(m.site.clone(), rec.clone());
            }
            w.groups
                .push(members.iter().map(|m| m.site.clone()).collect());
            for m in members {
                w.specs.insert(m.site.clone(), m);
            }
        }
        w
    }

    /// `migrator wave start`'s work: the groups and their shared resources into the store.
    pub fn start(&self, store: &Store, plan_ref: &str) -> usize {
        let res: Vec<BTreeSet<String>> = self
            .groups
            .iter()
            .map(|g| g.iter().flat_map(|s| resources(&self.specs[s])).collect())
            .collect();
        Fleet::open(store.path())
            .unwrap()
            .start_wave_with(self.wave, plan_ref, &self.groups, &res, "fleet-bench")
            .unwrap()
    }
}

/// What one run measured.
#[derive(Debug, Default)]
pub struct RunResult {
    pub workers: usize,
    /// The measured window: until the deadline, or until the wave was done.
    pub secs: f64,
    /// Sites of groups finished inside the window.
    pub sites: usize,
    pub failed: usize,
    /// Claims made inside the window, and each claim's time (ms).
    pub claim_ms: Vec<f64>,
    /// Claim calls that found nothing claimable.
    pub empty: usize,
    /// The server's counters over the window.
    pub status: BTreeMap<String, i64>,
    /// CPU seconds over the window: the store (`mariadbd`), the bench process (the workers).
    pub store_cpu: f64,
    pub bench_cpu: f64,
    /// The dashboard's overview (server time, ms), asked once a second during the run.
    pub overview_ms: Vec<f64>,
}

/// Runs `n` workers on `world`'s started wave for at most `secs` seconds (then they stop
/// claiming and finish the group they hold, which is not counted).
pub fn run(store: &Store, world: &WaveWorld, n: usize, secs: f64, copy: Duration) -> RunResult {
    let lookup = |s: &str| {
        world
            .specs
            .get(s)
            .ok_or_else(|| SpecError::UnknownSite(s.to_string()))
    };
    let build = |spec: &SiteSpec| -> SysResult<Systems> {
        let mut sys = world.worlds[&spec.site].systems(spec);
        sys.data = Arc::new(SlowCopy {
            inner: sys.data,
            copy,
        });
        Ok(sys)
    };
    let engine = EngineOptions::default();
    let stop = Arc::new(AtomicBool::new(false));
    let counting = AtomicBool::new(true);
    let mut r = RunResult {
        workers: n,
        ..Default::default()
    };
    let totals = Mutex::new((0usize, 0usize, Vec::new(), 0usize));
    let status_db = store.sql();
    let pool = Pool::new(&migrator::journal::JournalLocation::parse(store.path()).unwrap());
    let overview = Mutex::new(Vec::new());
    let before = store.status(&*status_db);
    let (cpu0, bench0) = (store.cpu_secs(), proc_cpu_secs(std::process::id()));
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let opts = WorkerOptions {
                    wave: world.wave,
                    owner: format!("{}:w{i}", owner_id()),
                    lease: Duration::from_secs(30),
                    poll: Duration::from_millis(200),
                    stop: stop.clone(),
                    // As `migrator worker` does (its watchdog looks every poll).
                    watch: Some(Duration::from_millis(200)),
                };
                let (lookup, build, engine, counting, totals) =
                    (&lookup, &build, &engine, &counting, &totals);
                s.spawn(move || {
                    let (mut sites, mut failed, mut claims, mut empty) = (0, 0, Vec::new(), 0);
                    let mut on = |ev: Event<'_>| {
                        let inside = counting.load(Ordering::SeqCst);
                        match ev {
                            Event::Claimed { took, .. } if inside => {
                                claims.push(took.as_secs_f64() * 1e3)
                            }
                            Event::NothingClaimable { .. } if inside => empty += 1,
                            Event::Ran { outcomes, .. } if inside => {
                                sites += outcomes.len();
                                failed += failures(outcomes);
                            }
                            _ => {}
                        }
                    };
                    worker::run(store.path(), &opts, lookup, build, engine, &mut on)
                        .unwrap_or_else(|e| panic!("worker {i}: {e}"));
                    let mut t = totals.lock().unwrap();
                    t.0 += sites;
                    t.1 += failed;
                    t.2.extend(claims);
                    t.3 += empty;
                })
            })
            .collect();
        // The dashboard, read as an operator's browser would while the wave runs.
        let sampler = s.spawn(|| {
            let conn = pool.get().unwrap();
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                queries::overview(&*conn).unwrap();
                overview
                    .lock()
                    .unwrap()
                    .push(t.elapsed().as_secs_f64() * 1e3);
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        while t0.elapsed().as_secs_f64() < secs && !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        counting.store(false, Ordering::SeqCst);
        r.secs = t0.elapsed().as_secs_f64();
        r.status = diff(&before, &store.status(&*status_db));
        r.store_cpu = store.cpu_secs() - cpu0;
        r.bench_cpu = proc_cpu_secs(std::process::id()) - bench0;
        stop.store(true, Ordering::SeqCst);
        for h in handles {
            h.join().unwrap();
        }
        sampler.join().unwrap();
    });
    let t = totals.into_inner().unwrap();
    (r.sites, r.failed, r.claim_ms, r.empty) = (t.0, t.1, t.2, t.3);
    r.overview_ms = overview.into_inner().unwrap();
    r
}

fn failures(outcomes: &[SiteOutcome]) -> usize {
    outcomes.iter().filter(|o| o.error.is_some()).count()
}

fn diff(a: &BTreeMap<String, i64>, b: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    b.iter()
        .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0)))
        .collect()
}

/// Claim times (ms) late in a wave: every group of `world`'s wave but the last `left` is
/// marked done (as a wave near its end), then one worker claims and finishes `n` groups.
pub fn late_claims(store: &Store, world: &WaveWorld, left: usize, n: usize) -> Vec<f64> {
    let total = world.groups.len();
    let db = store.sql();
    db.exec(
        "UPDATE wave_groups SET state = 'done', lease_until_ms = 0 WHERE wave = ? AND grp < ?",
        &[
            world.wave.into(),
            (total.saturating_sub(left) as i64).into(),
        ],
    )
    .unwrap();
    let fleet = Fleet::open(store.path()).unwrap();
    let owner = format!("{}:late", owner_id());
    let mut out = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let Some(c) = fleet.claim(world.wave, &owner, 30_000).unwrap() else {
            break;
        };
        out.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(fleet.finish(&c).unwrap());
    }
    out
}

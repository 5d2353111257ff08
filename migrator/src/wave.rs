//! A wave: many sites cut over with bounded concurrency, a stop rule, and resume.
//!
//! Workers take sites from a shared queue; each site runs [`crate::cutover::Engine::migrate`]
//! with its own journal connection, so a re-run after a kill picks every site up from its
//! journaled state. The stop rule: once more than `max_failures` sites failed, no new site
//! starts (sites already running finish) and the wave reports why. An operator interrupt stops
//! new starts the same way; a site inside its critical section finishes first.

use crate::cutover::{Engine, EngineOptions, SiteReport};
use crate::journal::SqliteJournal;
use crate::site_spec::SiteSpec;
use crate::systems::Systems;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct WaveOptions {
    /// Sites cut over at the same time.
    pub concurrency: usize,
    /// Stop starting sites once more than this many failed.
    pub max_failures: usize,
}

/// One site's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SiteOutcome {
    pub site: String,
    pub report: Option<SiteReport>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct WaveReport {
    pub sites: Vec<SiteOutcome>,
    pub live: usize,
    pub failed: usize,
    pub not_started: Vec<String>,
    /// Why the wave stopped early, when it did.
    pub stopped: Option<String>,
    pub seconds: f64,
    pub freeze_p50_ms: Option<f64>,
    pub freeze_p99_ms: Option<f64>,
    pub freeze_max_ms: Option<f64>,
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// Runs the wave. `systems` builds one site's systems (real or recording).
pub fn run_wave(
    journal_path: &Path,
    specs: &[SiteSpec],
    systems: &(dyn Fn(&SiteSpec) -> Result<Systems, String> + Sync),
    opts: &WaveOptions,
    engine_opts: &EngineOptions,
    on_done: &(dyn Fn(&SiteOutcome) + Sync),
) -> WaveReport {
    let t0 = Instant::now();
    let queue = Mutex::new(specs.iter().collect::<std::collections::VecDeque<_>>());
    let outcomes = Mutex::new(Vec::<SiteOutcome>::new());
    let stopped = Mutex::new(None::<String>);
    let failures = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..opts.concurrency.max(1) {
            s.spawn(|| loop {
                if stopped.lock().expect("stop").is_some() {
                    return;
                }
                if engine_opts.interrupt.load(Ordering::SeqCst) {
                    *stopped.lock().expect("stop") =
                        Some("interrupted by the operator".to_string());
                    return;
                }
                let Some(spec) = queue.lock().expect("queue").pop_front() else {
                    return;
                };
                let out = run_one(journal_path, spec, systems, engine_opts);
                if out.error.is_some() {
                    let n = failures.fetch_add(1, Ordering::SeqCst) + 1;
                    if n > opts.max_failures {
                        let mut st = stopped.lock().expect("stop");
                        if st.is_none() {
                            *st = Some(format!(
                                "{n} sites failed, more than the limit of {}; last: {}: {}",
                                opts.max_failures,
                                out.site,
                                out.error.as_deref().unwrap_or("")
                            ));
                        }
                    }
                }
                on_done(&out);
                outcomes.lock().expect("outcomes").push(out);
            });
        }
    });
    let mut sites = outcomes.into_inner().expect("outcomes");
    sites.sort_by(|a, b| a.site.cmp(&b.site));
    let mut freezes: Vec<f64> = sites
        .iter()
        .filter_map(|o| o.report.as_ref().and_then(|r| r.freeze_ms))
        .collect();
    freezes.sort_by(|a, b| a.total_cmp(b));
    let live = sites
        .iter()
        .filter(|o| o.report.as_ref().is_some_and(|r| r.state == "live"))
        .count();
    let failed = sites.iter().filter(|o| o.error.is_some()).count();
    WaveReport {
        live,
        failed,
        not_started: queue
            .into_inner()
            .expect("queue")
            .iter()
            .map(|s| s.site.clone())
            .collect(),
        stopped: stopped.into_inner().expect("stop"),
        seconds: t0.elapsed().as_secs_f64(),
        freeze_p50_ms: percentile(&freezes, 50.0),
        freeze_p99_ms: percentile(&freezes, 99.0),
        freeze_max_ms: freezes.last().copied(),
        sites,
    }
}

fn run_one(
    journal_path: &Path,
    spec: &SiteSpec,
    systems: &(dyn Fn(&SiteSpec) -> Result<Systems, String> + Sync),
    engine_opts: &EngineOptions,
) -> SiteOutcome {
    let fail = |error: String| SiteOutcome {
        site: spec.site.clone(),
        report: None,
        error: Some(error),
    };
    let sys = match systems(spec) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut journal = match SqliteJournal::open(journal_path) {
        Ok(j) => j,
        Err(e) => return fail(e.to_string()),
    };
    match Engine::new(spec, &sys, &mut journal, engine_opts).migrate() {
        Ok(r) => SiteOutcome {
            site: spec.site.clone(),
            report: Some(r),
            error: None,
        },
        Err(e) => fail(e.to_string()),
    }
}

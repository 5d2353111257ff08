//! A wave: many sites cut over with bounded concurrency, live operator control, throttling,
//! a stop rule, and resume.
//!
//! Sites that share a database form one move group ([`crate::cutover::group`]): they are frozen,
//! switched and unfrozen together. Workers take groups from a shared queue; each site runs
//! [`crate::cutover::Engine::migrate`] with its own journal connection, so a re-run after a
//! kill picks every site up from its journaled state.
//!
//! Control: a thread folds the journal's controls ([`crate::control`]) into the
//! [`WaveMonitor`] at least once a second and publishes the wave's status there. `pause`: no
//! new group starts and sites not yet frozen wait at their gate (those inside the freeze
//! finish). `throttle N`: at most N groups in progress. The stop rule: once more than
//! `max_failures` sites failed since the last `resume`, the wave pauses itself (a control
//! recorded by `stop-rule`); with `exit_on_stop` the run then ends once nothing is running,
//! and the next run of the wave lifts that pause. An operator interrupt stops new starts; a
//! site inside its critical section finishes first.

use crate::control::{Action, Controls, STOP_RULE_SOURCE};
use crate::cutover::group::{SiteOutcome, SystemsFn};
use crate::cutover::{Engine, EngineOptions};
use crate::journal::{open_journal_at, JournalStore, SiteState};
use crate::monitor::{ErrorRate, WaveMonitor};
use crate::site_spec::SiteSpec;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct WaveOptions {
    /// The wave's number (controls and status are kept per wave).
    pub wave: u32,
    /// Groups cut over at the same time (an operator's `throttle` can lower it).
    pub concurrency: usize,
    /// Pause the wave once more than this many sites failed since the last resume.
    pub max_failures: usize,
    /// End the run when the stop rule paused the wave and nothing runs any more (instead of
    /// waiting for an operator's `resume`).
    pub exit_on_stop: bool,
    /// How often the journal's controls are read (at most a second).
    pub control_poll: Duration,
    pub errors: ErrorRate,
    /// A group whose attempt ended back on the old side (aborted before the commit point:
    /// e.g. the tunnel failed inside its freeze) is queued again at the end of the wave this
    /// many times; only its last attempt counts as a failure.
    pub retries: u32,
}

impl Default for WaveOptions {
    fn default() -> Self {
        WaveOptions {
            wave: 0,
            concurrency: 4,
            max_failures: 3,
            exit_on_stop: true,
            control_poll: Duration::from_millis(500),
            errors: ErrorRate::default(),
            retries: 1,
        }
    }
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

/// Sites that share a database, in wave order: each group moves in one freeze.
pub fn move_groups(specs: &[SiteSpec]) -> Vec<Vec<&SiteSpec>> {
    let mut groups: Vec<Vec<&SiteSpec>> = Vec::new();
    for s in specs {
        let hit: Vec<usize> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| {
                g.iter()
                    .any(|m| m.databases.iter().any(|d| s.databases.contains(d)))
            })
            .map(|(i, _)| i)
            .collect();
        match hit.split_first() {
            None => groups.push(vec![s]),
            Some((&first, rest)) => {
                // `s` joins groups that were separate until now: merge them into the first.
                for &i in rest.iter().rev() {
                    let g = groups.remove(i);
                    groups[first].extend(g);
                }
                groups[first].push(s);
            }
        }
    }
    groups
}

/// Runs the wave with a monitor of its own.
pub fn run_wave(
    journal_path: &Path,
    specs: &[SiteSpec],
    systems: SystemsFn<'_>,
    opts: &WaveOptions,
    engine_opts: &EngineOptions,
    on_done: &(dyn Fn(&SiteOutcome) + Sync),
) -> WaveReport {
    let monitor = Arc::new(new_monitor(journal_path, specs, opts));
    run_wave_with(
        journal_path,
        specs,
        systems,
        opts,
        engine_opts,
        &monitor,
        on_done,
    )
}

/// The monitor for `specs`, seeded with their journaled states.
pub fn new_monitor(journal_path: &Path, specs: &[SiteSpec], opts: &WaveOptions) -> WaveMonitor {
    let journal = open_journal_at(journal_path).ok();
    let sites: Vec<(String, SiteState)> = specs
        .iter()
        .map(|s| {
            let st = journal
                .as_ref()
                .and_then(|j| j.site_state(&s.site).ok().flatten())
                .unwrap_or(SiteState::Planned);
            (s.site.clone(), st)
        })
        .collect();
    WaveMonitor::new(opts.wave, &sites, opts.errors.clone(), Some(journal_path))
}

/// Runs the wave, reporting into `monitor` (which the caller may also show or serve).
pub fn run_wave_with(
    journal_path: &Path,
    specs: &[SiteSpec],
    systems: SystemsFn<'_>,
    opts: &WaveOptions,
    engine_opts: &EngineOptions,
    monitor: &Arc<WaveMonitor>,
    on_done: &(dyn Fn(&SiteOutcome) + Sync),
) -> WaveReport {
    let t0 = Instant::now();
    let controls = Controls::open(journal_path).ok().map(Mutex::new);
    if let Some(c) = &controls {
        let c = c.lock().expect("controls");
        // A pause the stop rule left in an earlier run is lifted by running the wave again;
        // an operator's pause stays until an operator resumes.
        if c.current(opts.wave).is_ok_and(|s| s.stopped_by_rule) {
            let _ = c.request(
                opts.wave,
                Action::Resume,
                &crate::control::whoami(),
                "wave-run",
                Some("a new run of the wave lifts the stop rule's pause"),
            );
        }
        if let Ok(s) = c.current(opts.wave) {
            monitor.set_control(s);
        }
    }
    let mut eo = engine_opts.clone();
    eo.signals = Some(monitor.clone());
    let engine_opts = &eo;
    let groups = move_groups(specs);
    let queue = Mutex::new(
        groups
            .into_iter()
            .map(|g| (g, 0u32))
            .collect::<std::collections::VecDeque<_>>(),
    );
    let outcomes = Mutex::new(Vec::<SiteOutcome>::new());
    let stopped = Mutex::new(None::<String>);
    let done = AtomicBool::new(false);
    let poll = opts.control_poll.min(Duration::from_secs(1));
    std::thread::scope(|s| {
        // The control thread: journal → monitor, monitor → journal.
        s.spawn(|| {
            let Some(c) = &controls else { return };
            while !done.load(Ordering::SeqCst) {
                let c = c.lock().expect("controls");
                if let Ok(st) = c.current(opts.wave) {
                    monitor.set_control(st);
                }
                let _ = c.publish(&monitor.snapshot());
                drop(c);
                sleep_unless(&done, poll);
            }
        });
        let workers: Vec<_> = (0..opts.concurrency.max(1))
            .map(|_| {
                s.spawn(|| loop {
                    if stopped.lock().expect("stop").is_some() {
                        return;
                    }
                    if engine_opts.interrupt.load(Ordering::SeqCst) {
                        *stopped.lock().expect("stop") =
                            Some("interrupted by the operator".to_string());
                        return;
                    }
                    let ctl = monitor.control();
                    let limit = ctl
                        .concurrency_limit
                        .map_or(opts.concurrency, |l| (l as usize).min(opts.concurrency))
                        .max(1);
                    let group = {
                        let mut q = queue.lock().expect("queue");
                        if q.is_empty() {
                            return;
                        }
                        if ctl.paused || monitor.running() >= limit {
                            None
                        } else {
                            let g = q.pop_front();
                            for m in g.iter().flat_map(|(g, _)| g) {
                                monitor.site_started(&m.site);
                            }
                            g
                        }
                    };
                    let Some((group, attempts)) = group else {
                        std::thread::sleep(poll);
                        continue;
                    };
                    let outs = if group.len() == 1 {
                        vec![run_one(journal_path, group[0], systems, engine_opts)]
                    } else {
                        crate::cutover::group::migrate_group(
                            journal_path,
                            &group,
                            systems,
                            engine_opts,
                        )
                    };
                    let states: Vec<Option<SiteState>> = outs
                        .iter()
                        .map(|o| {
                            open_journal_at(journal_path)
                                .ok()
                                .and_then(|j| j.site_state(&o.site).ok().flatten())
                        })
                        .collect();
                    if retry_group(opts, engine_opts, attempts, &outs, &states) {
                        for (out, state) in outs.iter().zip(&states) {
                            let why = format!(
                                "attempt {} ended on the old side ({}); queued again",
                                attempts + 1,
                                out.error.as_deref().unwrap_or("")
                            );
                            monitor.site_requeued(&out.site, *state, &why);
                        }
                        queue
                            .lock()
                            .expect("queue")
                            .push_back((group, attempts + 1));
                        continue;
                    }
                    for (out, state) in outs.into_iter().zip(states) {
                        monitor.site_ended(&out.site, out.error.is_some(), state);
                        if out.error.is_some() {
                            stop_rule(opts, monitor, controls.as_ref(), &out, &stopped);
                        }
                        on_done(&out);
                        outcomes.lock().expect("outcomes").push(out);
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        done.store(true, Ordering::SeqCst);
    });
    monitor.finish();
    if let Some(c) = &controls {
        let _ = c.lock().expect("controls").publish(&monitor.snapshot());
    }
    let mut sites = outcomes.into_inner().expect("outcomes");
    sites.sort_by(|a, b| a.site.cmp(&b.site));
    let mut freezes: Vec<f64> = sites
        .iter()
        .filter_map(|o| o.report.as_ref().and_then(|r| r.freeze_ms))
        .collect();
    freezes.sort_by(|a, b| a.total_cmp(b));
    let live = sites
        .iter()
        .filter(|o| {
            o.report
                .as_ref()
                .is_some_and(|r| r.state == SiteState::Live)
        })
        .count();
    let failed = sites.iter().filter(|o| o.error.is_some()).count();
    WaveReport {
        live,
        failed,
        not_started: queue
            .into_inner()
            .expect("queue")
            .iter()
            .flat_map(|(g, _)| g)
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

/// Whether a group's failed attempt is queued again: retries left, not interrupted, and every
/// member serving from the old side with nothing switched (aborted before the commit point).
fn retry_group(
    opts: &WaveOptions,
    engine_opts: &EngineOptions,
    attempts: u32,
    outs: &[SiteOutcome],
    states: &[Option<SiteState>],
) -> bool {
    attempts < opts.retries
        && !engine_opts.interrupt.load(Ordering::SeqCst)
        && outs.iter().any(|o| o.error.is_some())
        && states.iter().all(|s| *s == Some(SiteState::Aborted))
}

fn sleep_unless(flag: &AtomicBool, total: Duration) {
    let end = Instant::now() + total;
    while !flag.load(Ordering::SeqCst) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pauses the wave once more than `max_failures` sites failed since the last resume.
fn stop_rule(
    opts: &WaveOptions,
    monitor: &WaveMonitor,
    controls: Option<&Mutex<Controls>>,
    last: &SiteOutcome,
    stopped: &Mutex<Option<String>>,
) {
    let ctl = monitor.control();
    let n = monitor.failures_since(ctl.resumed_ms);
    if n <= opts.max_failures || ctl.paused {
        return;
    }
    let why = format!(
        "{n} sites failed, more than the limit of {}; last: {}: {}",
        opts.max_failures,
        last.site,
        last.error.as_deref().unwrap_or("")
    );
    if let Some(c) = controls {
        let c = c.lock().expect("controls");
        let _ = c.request(
            opts.wave,
            Action::Pause,
            "stop-rule",
            STOP_RULE_SOURCE,
            Some(&why),
        );
        if let Ok(s) = c.current(opts.wave) {
            monitor.set_control(s);
        }
    }
    if opts.exit_on_stop || controls.is_none() {
        let mut st = stopped.lock().expect("stop");
        if st.is_none() {
            *st = Some(why);
        }
    }
}

/// Runs one move group (a site, or sites sharing databases, together); one outcome per site.
/// Each site resumes from the journal.
pub fn run_group(
    journal_path: &Path,
    group: &[&SiteSpec],
    systems: SystemsFn<'_>,
    engine_opts: &EngineOptions,
) -> Vec<SiteOutcome> {
    if group.len() == 1 {
        vec![run_one(journal_path, group[0], systems, engine_opts)]
    } else {
        crate::cutover::group::migrate_group(journal_path, group, systems, engine_opts)
    }
}

pub(crate) fn run_one(
    journal_path: &Path,
    spec: &SiteSpec,
    systems: SystemsFn<'_>,
    engine_opts: &EngineOptions,
) -> SiteOutcome {
    let fail = |error: String| SiteOutcome {
        site: spec.site.clone(),
        report: None,
        error: Some(error),
    };
    let sys = match systems(spec) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let mut journal = match open_journal_at(journal_path) {
        Ok(j) => j,
        Err(e) => return fail(e.to_string()),
    };
    match Engine::new(spec, &sys, &mut *journal, engine_opts).migrate() {
        Ok(r) => SiteOutcome {
            site: spec.site.clone(),
            report: Some(r),
            error: None,
        },
        Err(e) => fail(e.to_string()),
    }
}

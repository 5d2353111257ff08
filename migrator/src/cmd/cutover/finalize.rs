//! `migrator finalize SITE|--wave N` and `migrator lease-watch`.

use anyhow::bail;
use migrator::cutover::EngineOptions;
use migrator::finalize::finalize;
use migrator::journal::SiteState;
use migrator::real_systems;
use migrator::site_spec::{SiteSpec, SpecFile};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How `finalize` runs: `--dry-run`, `--json`, `--override-reason`, `--drop-old-copies`.
pub struct Flags<'a> {
    pub dry_run: bool,
    pub json: bool,
    pub override_reason: Option<&'a str>,
    pub drop_old_copies: bool,
}

pub fn run(
    site: Option<String>,
    wave: Option<u32>,
    plan: Option<PathBuf>,
    sites: &Path,
    journal: &Path,
    flags: &Flags,
) -> anyhow::Result<i32> {
    let (dry_run, json, override_reason) = (flags.dry_run, flags.json, flags.override_reason);
    crate::cmd::require_journal(journal)?;
    let file = SpecFile::load(sites)?;
    let names = match (site, wave, plan) {
        (Some(s), _, _) => vec![s],
        (None, Some(w), Some(p)) => super::wave::plan_sites(w, &p)?,
        _ => bail!("say which: a SITE, or --wave N --plan FILE"),
    };
    let mut j = crate::cmd::open_existing(journal)?;
    let mut results = Vec::new();
    let mut refused = 0;
    for n in &names {
        let spec = file.site(n)?;
        let state = j.site_state(n)?.unwrap_or(SiteState::Planned);
        // With --wave, sites not live (failed, rolled back) are skipped and said so.
        if wave.is_some() && !matches!(state, SiteState::Live | SiteState::Finalized) {
            eprintln!(
                "{n}: {}: skipped (only live sites are finalized)",
                state.as_str()
            );
            continue;
        }
        if dry_run {
            match migrator::bundle::state::finalize_blocker(&*j, n)? {
                None => println!("{n}: {} → would be finalized", state.as_str()),
                Some(why) if override_reason.is_some() => println!(
                    "{n}: {} → would be finalized with the override ({why})",
                    state.as_str()
                ),
                Some(why) => println!("{n}: {} → would be REFUSED: {why}", state.as_str()),
            }
            if flags.drop_old_copies {
                if let Err(e) = dry_run_release(&*j, spec, journal) {
                    refused += 1;
                    eprintln!("{n}: {e:#}");
                }
            }
            continue;
        }
        let sys = match real_systems::systems(spec, journal) {
            Ok(s) => s,
            Err(e) => {
                refused += 1;
                eprintln!("{n}: {e}");
                continue;
            }
        };
        match finalize(&mut *j, spec, sys.proxy.as_ref(), override_reason) {
            Ok(f) => {
                if !json {
                    let what = if f.already {
                        "already finalized"
                    } else {
                        "finalized"
                    };
                    println!(
                        "{n}: {what}; old side kept, no longer needed: homes {:?}, databases {:?}",
                        f.old_homes, f.old_databases
                    );
                    if !f.in_use_on_old.is_empty() {
                        println!(
                            "{n}: databases still served from the old side (in use, keep): {:?}",
                            f.in_use_on_old
                        );
                    }
                }
                let mut v = serde_json::to_value(&f)?;
                if flags.drop_old_copies {
                    match migrator::release_old::release(&mut *j, spec, &f) {
                        Ok(copies) => {
                            if !json {
                                for c in &copies {
                                    println!("{n}: {}", copy_line(c));
                                }
                            }
                            v["old_copies"] = serde_json::to_value(&copies)?;
                        }
                        Err(e) => {
                            refused += 1;
                            eprintln!("{n}: {e}");
                        }
                    }
                }
                results.push(v);
            }
            Err(e) => {
                refused += 1;
                eprintln!("{n}: {e}");
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(if refused == 0 { 0 } else { 1 })
}

/// `finalize --drop-old-copies --dry-run`: each old copy, whether it is there, and whether it
/// would be dropped.
fn dry_run_release(
    j: &dyn migrator::journal::JournalStore,
    spec: &SiteSpec,
    journal: &Path,
) -> anyhow::Result<()> {
    let n = &spec.site;
    let sys = real_systems::systems(spec, journal)?;
    let f = migrator::finalize::old_copies(spec, sys.proxy.as_ref())?;
    let copies = migrator::release_old::plan(spec, &f)?;
    let verb = match migrator::bundle::state::finalize_blocker(j, n)? {
        None => "would be DROPPED",
        Some(_) => "kept (no verified bundle: --drop-old-copies would be refused)",
    };
    for c in &copies {
        println!(
            "{n}: old {}: {}",
            copy_name(c),
            if c.existed { verb } else { "already gone" }
        );
    }
    for db in &f.in_use_on_old {
        println!("{n}: old database {db}: kept (the proxy serves it from the old side)");
    }
    Ok(())
}

fn copy_name(c: &migrator::release_old::CopyState) -> String {
    match &c.copy {
        migrator::release_old::OldCopy::Database { name } => format!("database {name}"),
        migrator::release_old::OldCopy::Home { path } => format!("home {}", path.display()),
    }
}

fn copy_line(c: &migrator::release_old::CopyState) -> String {
    format!(
        "old {}: {}",
        copy_name(c),
        match (c.existed, c.dropped) {
            (_, true) => "dropped",
            (false, _) => "already gone",
            (true, false) => "kept",
        }
    )
}

pub fn lease_watch(sites: &Path, journal: &Path, once: bool, interval: u64) -> anyhow::Result<i32> {
    crate::cmd::require_journal(journal)?;
    let file = SpecFile::load(sites)?;
    let build = |s: &SiteSpec| real_systems::systems(s, journal);
    let o = EngineOptions::default();
    let mut failed = 0;
    let specs = Arc::new(file.sites.clone());
    let printed = Arc::new(Mutex::new(String::new()));
    let mut check: Option<std::thread::JoinHandle<()>> = None;
    loop {
        // Unfreezing comes first, every round; the route check never delays it.
        for r in migrator::cutover::watchdog::recover_expired(journal, &file.sites, &build, &o)? {
            match &r.result {
                Ok(st) => println!(
                    "{}: lease of pid {} on {} expired: recovered, now {st}",
                    r.site, r.lease.pid, r.lease.host
                ),
                Err(e) => {
                    failed += 1;
                    tracing::error!(
                        "{}: lease of pid {} on {} expired: recovery FAILED: {e}",
                        r.site,
                        r.lease.pid,
                        r.lease.host
                    );
                }
            }
        }
        if once {
            route_round(&specs, journal, sites, &printed);
            return Ok(if failed == 0 { 0 } else { 1 });
        }
        // In its own thread: a proxy slow to answer delays only the next check.
        if check.as_ref().is_none_or(|h| h.is_finished()) {
            let (specs, printed) = (specs.clone(), printed.clone());
            let (journal, sites) = (journal.to_path_buf(), sites.to_path_buf());
            check = Some(std::thread::spawn(move || {
                route_round(&specs, &journal, &sites, &printed)
            }));
        }
        std::thread::sleep(Duration::from_secs(interval.max(1)));
    }
}

/// `lease-watch --dry-run`: the leases a round would act on, and what it would do; exit 0.
pub fn lease_watch_dry_run(sites: &Path, journal: &Path) -> anyhow::Result<i32> {
    crate::cmd::require_journal(journal)?;
    let file = SpecFile::load(sites)?;
    let expired = migrator::cutover::watchdog::expired(journal)?;
    for (site, l) in &expired {
        let what = if file.sites.iter().any(|s| &s.site == site) {
            "would recover it (unfreeze on the side that owns its data)"
        } else {
            "not in the site spec: would release a sync lease, report any other"
        };
        println!(
            "{site}: lease of pid {} on {} expired: {what}",
            l.pid, l.host
        );
    }
    println!(
        "dry run: {} expired lease(s), nothing changed",
        expired.len()
    );
    Ok(0)
}

/// How long one proxy call of a watchdog's route check may take.
const WATCH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// One route check of a `lease-watch` round, recorded in the journal (the dashboard's banner
/// and `/metrics`); its findings are printed when they differ from the last ones printed.
fn route_round(specs: &[SiteSpec], journal: &Path, sites: &Path, printed: &Mutex<String>) {
    let text = match crate::cmd::routes::check_with(specs, journal, WATCH_CHECK_TIMEOUT, true) {
        Ok(r) if r.clean() => String::new(),
        Ok(r) => {
            let mut t: Vec<String> = r.mismatches.iter().map(|m| m.line()).collect();
            t.extend(r.unreachable.iter().map(|u| u.line()));
            if !r.mismatches.is_empty() {
                t.push(format!(
                    "repair: {}",
                    crate::cmd::routes::fix_command(sites, journal)
                ));
            }
            t.join("\n")
        }
        Err(e) => format!("route check FAILED: {e:#}"),
    };
    let Ok(mut last) = printed.lock() else {
        return;
    };
    if *last != text {
        if text.is_empty() {
            tracing::info!("routes: every database is routed as the journal says again");
        } else {
            tracing::warn!("{text}");
        }
        *last = text;
    }
}

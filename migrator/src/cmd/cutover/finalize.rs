//! `migrator finalize SITE|--wave N` and `migrator lease-watch`.

use anyhow::bail;
use migrator::cutover::EngineOptions;
use migrator::finalize::finalize;
use migrator::journal::{JournalStore, SiteState, SqliteJournal};
use migrator::real_systems;
use migrator::site_spec::{SiteSpec, SpecFile};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn run(
    site: Option<String>,
    wave: Option<u32>,
    plan: Option<PathBuf>,
    sites: &Path,
    journal: &Path,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<i32> {
    if !journal.exists() {
        bail!("journal {} does not exist", journal.display());
    }
    let file = SpecFile::load(sites)?;
    let names = match (site, wave, plan) {
        (Some(s), _, _) => vec![s],
        (None, Some(w), Some(p)) => super::wave::plan_sites(w, &p)?,
        _ => bail!("say which: a SITE, or --wave N --plan FILE"),
    };
    let mut j = SqliteJournal::open(journal)?;
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
            println!("{n}: {} → would be finalized", state.as_str());
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
        match finalize(&mut j, spec, sys.proxy.as_ref()) {
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
                results.push(f);
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

pub fn lease_watch(sites: &Path, journal: &Path, once: bool, interval: u64) -> anyhow::Result<i32> {
    if !journal.exists() {
        bail!("journal {} does not exist", journal.display());
    }
    let file = SpecFile::load(sites)?;
    let build = |s: &SiteSpec| real_systems::systems(s, journal).map_err(|e| e.to_string());
    let o = EngineOptions::default();
    let mut failed = 0;
    loop {
        for r in migrator::cutover::watchdog::recover_expired(journal, &file.sites, &build, &o)? {
            match &r.result {
                Ok(st) => println!(
                    "{}: lease of pid {} on {} expired: recovered, now {st}",
                    r.site, r.lease.pid, r.lease.host
                ),
                Err(e) => {
                    failed += 1;
                    eprintln!(
                        "{}: lease of pid {} on {} expired: recovery FAILED: {e}",
                        r.site, r.lease.pid, r.lease.host
                    );
                }
            }
        }
        if once {
            return Ok(if failed == 0 { 0 } else { 1 });
        }
        std::thread::sleep(Duration::from_secs(interval.max(1)));
    }
}

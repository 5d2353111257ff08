//! `migrator wave start N` and `migrator worker N`: one wave shared by workers on many hosts
//! through one journal (issue 17; the claims and leases are [`migrator::fleet`], the worker's
//! loop [`migrator::fleet::worker`]).

use super::wave::wave_specs;
use super::{engine_options, Common};
use anyhow::bail;
use migrator::control::whoami;
use migrator::fleet::worker::{self as fleet_worker, Event, WorkerOptions};
use migrator::fleet::{owner_id, resources, Fleet};
use migrator::journal::{open_journal_at, SiteState};
use migrator::real_systems;
use migrator::site_spec::{SiteSpec, SpecFile};
use migrator::wave::move_groups;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Writes wave `number`'s move groups to the journal for workers to claim.
pub fn start(number: u32, plan: &Path, common: &Common) -> anyhow::Result<i32> {
    let specs = wave_specs(number, plan, common)?;
    let moves = move_groups(&specs);
    let groups: Vec<Vec<String>> = moves
        .iter()
        .map(|g| g.iter().map(|s| s.site.clone()).collect())
        .collect();
    let res: Vec<_> = moves
        .iter()
        .map(|g| g.iter().flat_map(|s| resources(s)).collect())
        .collect();
    let plan_ref = format!("{}#wave{number}", plan.display());
    open_journal_at(&common.journal)?.set_plan(&plan_ref)?;
    let added = Fleet::open(&common.journal)?.start_wave_with(
        number,
        &plan_ref,
        &groups,
        &res,
        &whoami(),
    )?;
    println!(
        "wave {number} started: {} sites in {} move groups ({added} new); run \
         `migrator worker {number}` on each host",
        specs.len(),
        groups.len()
    );
    Ok(0)
}

/// Caps the live claims on groups that load `resource`, fleet-wide (0 removes the cap).
pub fn cap(resource: &str, n: u32, journal: &Path, dry_run: bool) -> anyhow::Result<i32> {
    crate::cmd::require_journal(journal)?;
    let fleet = Fleet::open(journal)?;
    if !dry_run {
        fleet.set_cap(resource, n)?;
    }
    let would = if dry_run {
        "dry run, nothing recorded: "
    } else {
        ""
    };
    match n {
        0 => println!("{would}{resource}: no cap"),
        n => println!("{would}{resource}: at most {n} move group(s) at once, fleet-wide"),
    }
    Ok(0)
}

/// Claims and moves groups of wave `number` until every group is done; exit 1 when a site
/// did not go live (or, with --bundle-store, a bundle of its sites failed).
pub fn worker(
    number: u32,
    common: &Common,
    lease: Duration,
    poll: Duration,
    bundles: super::bundles::BundleArgs,
) -> anyhow::Result<i32> {
    if common.dry_run {
        bail!("a worker moves sites for real; use `migrator wave run --dry-run` to rehearse");
    }
    if !Fleet::open(&common.journal)?.started(number)? {
        bail!("wave {number} is not started: run `migrator wave start {number} --plan FILE` first");
    }
    let file = SpecFile::load(&common.sites)?;
    let eo = engine_options(common, &common.journal);
    let opts = WorkerOptions {
        wave: number,
        owner: owner_id(),
        lease,
        poll,
        stop: Arc::new(AtomicBool::new(false)),
        // As often as it looks for a group: a dead worker's frozen site is put back within a
        // poll of its lease expiring (at once on this host, where its PID is seen gone).
        watch: Some(poll),
    };
    let build = |s: &SiteSpec| real_systems::systems(s, &common.journal);
    tracing::info!("worker {}: wave {number}", opts.owner);
    // Each site's bundle as soon as it is live, in the background (the claim goes on).
    let bundles = bundles.get(false);
    let bg = bundles
        .as_ref()
        .map(|b| b.start(&common.journal, false))
        .transpose()?;
    let mut given = Vec::new();
    let mut on_event = |ev: Event<'_>| {
        if let (Some(bg), Event::Ran { outcomes, .. }) = (&bg, &ev) {
            for o in outcomes.iter() {
                let live = o.report.as_ref().map(|r| r.state) == Some(SiteState::Live);
                if let (true, Ok(spec)) = (live, file.site(&o.site)) {
                    bg.submit(spec);
                    given.push(o.site.clone());
                }
            }
        }
        print_event(ev);
    };
    let summary = fleet_worker::run(
        &common.journal,
        &opts,
        &|s| file.site(s),
        &build,
        &eo,
        &mut on_event,
    )?;
    let code = if summary.failed == 0 { 0 } else { 1 };
    let Some((b, bg)) = bundles.as_ref().zip(bg) else {
        return Ok(code);
    };
    let bundles_code = b.finish(bg, &given, &[], &common.journal, common)?;
    Ok(if code == 0 { bundles_code } else { code })
}

/// What an operator sees of a worker: each group claimed (a log line), each site's outcome
/// (stdout).
fn print_event(ev: Event<'_>) {
    match ev {
        Event::Claimed { claim: c, .. } => tracing::info!(
            "group {} ({}){}",
            c.group,
            c.sites.join(", "),
            if c.attempts > 1 {
                format!(": taken over (claim {})", c.attempts)
            } else {
                String::new()
            }
        ),
        Event::NothingClaimable { .. } => {}
        Event::Recovered(r) => eprintln!(
            "{}: freeze left by pid {} on {} (lease expired): {}",
            r.site,
            r.lease.pid,
            r.lease.host,
            r.outcome()
        ),
        Event::WatchFailed(e) => eprintln!("warning: the frozen-site watchdog could not look: {e}"),
        Event::Ran {
            claim: c,
            outcomes,
            kept,
            renewals,
        } => {
            for r in renewals {
                tracing::info!("group {}: {r}", c.group);
            }
            for o in outcomes {
                match (&o.report, &o.error) {
                    (_, Some(e)) => println!("{}: FAILED: {e}", o.site),
                    (Some(r), None) => println!("{}: {}", o.site, r.state),
                    (None, None) => println!("{}: done", o.site),
                }
            }
            if !kept {
                tracing::warn!(
                    "group {}: the claim ran out and another worker took it over",
                    c.group
                );
            }
        }
    }
}

//! `migrator wave start N` and `migrator worker N`: one wave shared by workers on many hosts
//! through one journal (issue 17; the claims and leases are [`migrator::fleet`]).

use super::wave::wave_specs;
use super::{engine_options, Common};
use anyhow::bail;
use migrator::control::whoami;
use migrator::fleet::{owner_id, resources, Claim, Fleet};
use migrator::journal::open_journal_at;
use migrator::real_systems;
use migrator::site_spec::{SiteSpec, SpecFile};
use migrator::wave::{move_groups, run_group};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
pub fn cap(resource: &str, n: u32, journal: &Path) -> anyhow::Result<i32> {
    crate::cmd::require_journal(journal)?;
    Fleet::open(journal)?.set_cap(resource, n)?;
    match n {
        0 => println!("{resource}: no cap"),
        n => println!("{resource}: at most {n} move group(s) at once, fleet-wide"),
    }
    Ok(0)
}

/// Claims and moves groups of wave `number` until every group is done; exit 1 when a site
/// did not go live.
pub fn worker(
    number: u32,
    common: &Common,
    lease: Duration,
    poll: Duration,
) -> anyhow::Result<i32> {
    if common.dry_run {
        bail!("a worker moves sites for real; use `migrator wave run --dry-run` to rehearse");
    }
    let fleet = Fleet::open(&common.journal)?;
    if !fleet.started(number)? {
        bail!("wave {number} is not started: run `migrator wave start {number} --plan FILE` first");
    }
    let file = SpecFile::load(&common.sites)?;
    let eo = engine_options(common, &common.journal);
    let owner = owner_id();
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let build = |s: &SiteSpec| real_systems::systems(s, &common.journal);
    let mut failed = 0;
    eprintln!("worker {owner}: wave {number}");
    loop {
        let Some(c) = fleet.claim(number, &owner, lease_ms)? else {
            if fleet.progress(number)?.finished() {
                break;
            }
            std::thread::sleep(poll);
            continue;
        };
        let specs = c
            .sites
            .iter()
            .map(|s| file.site(s))
            .collect::<Result<Vec<_>, _>>()?;
        eprintln!(
            "group {} ({}){}",
            c.group,
            c.sites.join(", "),
            if c.attempts > 1 {
                format!(": taken over (claim {})", c.attempts)
            } else {
                String::new()
            }
        );
        let outs = renewing(&common.journal, &c, lease, || {
            run_group(&common.journal, &specs, &build, &eo)
        });
        for o in &outs {
            match (&o.report, &o.error) {
                (_, Some(e)) => {
                    failed += 1;
                    println!("{}: FAILED: {e}", o.site);
                }
                (Some(r), None) => println!("{}: {}", o.site, r.state),
                (None, None) => println!("{}: done", o.site),
            }
        }
        if !fleet.finish(&c)? {
            eprintln!(
                "group {}: the claim ran out and another worker took it over",
                c.group
            );
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Runs `work` while a thread renews the claim's lease every third of it.
fn renewing<T>(journal: &Path, c: &Claim, lease: Duration, work: impl FnOnce() -> T) -> T {
    let stop = AtomicBool::new(false);
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    std::thread::scope(|s| {
        s.spawn(|| {
            let fleet = match Fleet::open(journal) {
                Ok(f) => f,
                Err(e) => return eprintln!("group {}: renewing the claim: {e}", c.group),
            };
            let mut last = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() < lease / 3 {
                    continue;
                }
                last = Instant::now();
                match fleet.renew(c, lease_ms) {
                    Ok(true) => {}
                    Ok(false) => {
                        return eprintln!("group {}: the claim was taken over", c.group);
                    }
                    Err(e) => eprintln!("group {}: renewing the claim: {e}", c.group),
                }
            }
        });
        let r = work();
        stop.store(true, Ordering::SeqCst);
        r
    })
}

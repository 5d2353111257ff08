//! `migrator site migrate|show`, `migrator rollback`, `migrator status`; `migrator wave …` in
//! `cutover/wave.rs`, `migrator finalize` and `migrator lease-watch` in `cutover/finalize.rs`.
//!
//! Every mutating command takes `--dry-run`: the same engine runs against a recording world
//! that prints each action on each system and does none; the real journal is not written
//! (the dry run starts from a scratch copy of the sites' states).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use migrator::cutover::checkpoints::{self, Checkpoint};
use migrator::cutover::rollback::rollback_sites;
use migrator::cutover::{Engine, EngineOptions, SiteReport};
use migrator::dry_run::Recorder;
use migrator::journal::{
    open_journal, open_journal_at, JournalLocation, JournalStore, SqliteJournal,
};
use migrator::real_systems;
use migrator::site_spec::{SiteSpec, SpecFile};
use migrator::systems::{SysResult, Systems};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod bundles;
mod finalize;
pub(crate) mod wave;
mod worker;

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The site spec file (JSON: every site's endpoints on both sides).
    #[arg(long, value_name = "FILE")]
    pub sites: PathBuf,
    /// The journal: its file (SQLite), or mysql://user@host:port/db?password_file=PATH
    /// (MariaDB, shared by many hosts); created if missing.
    #[arg(long, value_name = "FILE|URL")]
    pub journal: PathBuf,
    /// Print every action on every system, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for an unhealthy tunnel before refusing a site's freeze.
    #[arg(long, default_value_t = 60)]
    pub gate_wait: u64,
    /// Print a JSON report on stdout.
    #[arg(long)]
    pub json: bool,
    /// Seconds a freeze lease lasts without renewal; after that `migrator lease-watch` (or the
    /// next `wave run`) may unfreeze a site whose migrator died.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub lease: u64,
}

#[derive(Subcommand, Debug)]
pub enum SiteCmd {
    /// Move one site end to end (prepare, sync, freeze, final sync, verify, switch, live);
    /// resumes from the journal.
    Migrate {
        site: String,
        #[command(flatten)]
        common: Common,
    },
    /// Write a site spec file for every site of the staging lab (from its state.json).
    SpecsFromLab {
        /// The lab's state file (`<state-root>/<name>/state.json`).
        #[arg(long, value_name = "FILE")]
        state: PathBuf,
        /// Where to write the spec file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The sql-proxy admin API on the old DB endpoint side.
        #[arg(long, value_name = "ADDR")]
        proxy_admin: std::net::SocketAddr,
        /// The proxy's bearer token file (0600).
        #[arg(long, value_name = "FILE")]
        proxy_token_file: PathBuf,
        /// Tunnel config whose health gates each freeze.
        #[arg(long, value_name = "FILE")]
        tunnel_config: Option<PathBuf>,
        /// The tunnel side to check (with --tunnel-config).
        #[arg(long, default_value = "old")]
        tunnel_side: String,
        /// Network namespace of that tunnel side.
        #[arg(long)]
        tunnel_netns: Option<String>,
    },
    /// A site's timeline from the journal: each phase, when, how long, bytes, errors.
    Show {
        site: String,
        /// The journal: its file (SQLite), or mysql://user@host:port/db?password_file=PATH.
        #[arg(long, value_name = "FILE|URL")]
        journal: PathBuf,
        /// Print one JSON document: state, steps (with durations and errors), freeze, lease.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON schema of the site spec file (2020-12; the file's fields, types and
    /// defaults, for editors and validators). An example using every field is
    /// packaging/etc/sites.example.json (installed as /etc/hostmove/sites.json.example).
    Schema {
        /// JSON, the only format (required).
        #[arg(long, required = true)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CutoverCommand {
    /// One site: migrate, show.
    #[command(subcommand)]
    Site(SiteCmd),
    /// Waves of a plan: run one, and steer it while it runs (status, pause, resume, throttle).
    #[command(subcommand)]
    Wave(wave::WaveCmd),
    /// Work on a started wave (`migrator wave start N`) with other workers, on this host and
    /// others, through one journal (a shared MariaDB journal): claim a move group, move its
    /// sites, renew the claim while working, until every group is done. A dead worker's groups
    /// are taken over once its claim runs out; each site resumes from the journal.
    Worker {
        /// Wave number.
        number: u32,
        #[command(flatten)]
        common: Common,
        /// Seconds a claim lasts without renewal (renewed every third of it while working).
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        claim_lease: u64,
        /// Milliseconds between looks for a claimable group.
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        poll: u64,
        #[command(flatten)]
        bundles: bundles::BundleArgs,
    },
    /// End a live site's reversibility: live → finalized; rollback is refused afterwards.
    /// Nothing is deleted unless --drop-old-copies: the old side's copies are listed as no
    /// longer needed.
    Finalize {
        /// The site (or use --wave).
        #[arg(required_unless_present = "wave", conflicts_with = "wave")]
        site: Option<String>,
        /// Every live site of wave N of --plan.
        #[arg(long, value_name = "N", requires = "plan")]
        wave: Option<u32>,
        #[arg(long, value_name = "FILE")]
        plan: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        sites: PathBuf,
        #[arg(long, value_name = "FILE|URL")]
        journal: PathBuf,
        /// Say what would be finalized, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
        /// Finalize even though the site's bundle (`migrator bundle`) is missing or not
        /// verified; the reason is journaled with the site.
        #[arg(long, value_name = "TEXT")]
        override_reason: Option<String>,
        /// Then DROP the site's old copies: its databases on the old SQL server (only those
        /// the proxy serves from the new side) and its old homes. Only for a site whose
        /// bundle is verified (not with --override-reason); journaled as `release-old`. With
        /// --dry-run: lists each copy and whether it is still there.
        #[arg(long)]
        drop_old_copies: bool,
    },
    /// Watchdog: unfreezes, on the side that owns the data, every site whose freeze lease
    /// expired or whose migrator died (a crash never leaves a site frozen indefinitely).
    LeaseWatch {
        #[arg(long, value_name = "FILE")]
        sites: PathBuf,
        #[arg(long, value_name = "FILE|URL")]
        journal: PathBuf,
        /// Look once and exit (otherwise every --interval seconds until interrupted).
        #[arg(long)]
        once: bool,
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// List the expired leases it would recover (unfreeze, or release), once, and change
        /// nothing: no system touched, no lease released, no route check recorded.
        #[arg(long)]
        dry_run: bool,
    },
    /// Roll a switched or live site back to the old side, carrying its new writes back.
    ///
    /// A site sharing a database with other sites (its move group) is refused unless
    /// --with-group is given: a database serves from one side only, so those sites roll back
    /// together, in one freeze.
    Rollback {
        site: String,
        /// Roll back every site of SITE's move group (the sites sharing a database with it,
        /// named in the refusal) together.
        #[arg(long)]
        with_group: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Every site's state, counts per state, and freeze figures, from the journal; with
    /// --sites, also whether the SQL proxy routes every database as the journal says.
    #[command(after_long_help = STATUS_HELP)]
    Status {
        #[arg(long, value_name = "FILE|URL")]
        journal: PathBuf,
        /// The site spec file: also check the proxy's routes against the journal (read-only;
        /// exit 3 on a mismatch, 4 when a proxy did not answer).
        #[arg(long, value_name = "FILE")]
        sites: Option<PathBuf>,
        /// Print one JSON document (counts, freeze percentiles, the wave, every site with its
        /// state, freeze and bundle; with --sites the route check too); exit codes unchanged.
        #[arg(long)]
        json: bool,
        /// Sites listed one per line at most (the counts always cover all): failed, aborted and
        /// in-flight sites (frozen to switched) first, then the rest in journal order.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
        /// List every site (at 3 million sites, prefer --json or the dashboard).
        #[arg(long, conflicts_with = "limit")]
        all: bool,
    },
}

/// Set by SIGINT/SIGTERM; copied into the engine's flag. The engine obeys it only outside a
/// site's critical section.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// The engine's options; `journal`: the journal it writes (the sync lease is renewed through
/// it while a long phase runs).
fn engine_options(common: &Common, journal: &Path) -> EngineOptions {
    let o = EngineOptions {
        gate_wait: Duration::from_secs(common.gate_wait),
        lease_ttl: Duration::from_secs(common.lease.max(1)),
        renew_from: Some(journal.to_path_buf()),
        ..Default::default()
    };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let flag = o.interrupt.clone();
    std::thread::spawn(move || loop {
        if SIGNALLED.load(Ordering::SeqCst) {
            eprintln!(
                "signal received: no new site starts; sites inside their freeze finish first"
            );
            flag.store(true, Ordering::SeqCst);
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    });
    o
}

/// The journal the command writes: the real one, or a scratch copy of its states (dry run).
fn journal_for(common: &Common, scratch: &tempfile::TempDir) -> anyhow::Result<PathBuf> {
    if !common.dry_run {
        return Ok(common.journal.clone());
    }
    let path = scratch.path().join("dry-run-journal.sqlite");
    let mut j = SqliteJournal::open(&path)?;
    if JournalLocation::parse(&common.journal)?.may_exist() {
        let real = open_journal_at(&common.journal)?;
        for (site, st) in real.sites()? {
            j.set_site_state(&site, st)?;
        }
    }
    Ok(path)
}

fn systems_for(spec: &SiteSpec, common: &Common, journal: &Path) -> SysResult<Systems> {
    if common.dry_run {
        Ok(Recorder::for_site(spec, true).systems(spec))
    } else {
        real_systems::systems(spec, journal)
    }
}

fn print_report(r: &SiteReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!("{}: {}", r.site, r.state);
    for (p, ms) in &r.phases {
        println!("  {p:<18} {ms:>9.1} ms");
    }
    if let Some(f) = r.freeze_ms {
        println!("  write-unavailability {f:.0} ms");
    }
    if r.deferred_signal {
        println!("  a signal arrived during the freeze and was obeyed after it");
    }
    Ok(())
}

pub fn run(command: CutoverCommand) -> anyhow::Result<i32> {
    match command {
        CutoverCommand::Site(SiteCmd::Migrate { site, common }) => {
            let specs = SpecFile::load(&common.sites)?;
            let spec = specs.site(&site)?;
            let scratch = tempfile::tempdir()?;
            let jp = journal_for(&common, &scratch)?;
            let sys = systems_for(spec, &common, &jp)?;
            let mut j = open_journal_at(&jp)?;
            let o = engine_options(&common, &jp);
            let r = Engine::new(spec, &sys, &mut *j, &o)
                .migrate()
                .with_context(|| format!("site {site}"))?;
            print_report(&r, common.json)?;
            Ok(0)
        }
        CutoverCommand::Rollback {
            site,
            with_group,
            common,
        } => {
            let specs = SpecFile::load(&common.sites)?;
            let group = specs.move_group(&site)?;
            let names: Vec<&str> = group.iter().map(|s| s.site.as_str()).collect();
            if group.len() > 1 && !with_group {
                anyhow::bail!(
                    "site {site} shares a database with {}: a database serves from one side \
                     only, so these sites roll back together; run again with --with-group to \
                     roll back {}",
                    names[1..].join(", "),
                    names.join(", ")
                );
            }
            let scratch = tempfile::tempdir()?;
            let jp = journal_for(&common, &scratch)?;
            if common.dry_run {
                // The dry-run world starts with the site on the old side; show it switched.
                let mut j = SqliteJournal::open(&jp)?;
                for s in &names {
                    if j.site_state(s)?.is_none() {
                        j.set_site_state(s, migrator::journal::SiteState::Live)?;
                    }
                }
            }
            let mut syss = Vec::new();
            let mut journals = Vec::new();
            for spec in &group {
                syss.push(systems_for(spec, &common, &jp)?);
                journals.push(open_journal_at(&jp)?);
            }
            let o = engine_options(&common, &jp);
            let engines = group
                .iter()
                .zip(&syss)
                .zip(journals.iter_mut())
                .map(|((spec, sys), j)| Engine::new(spec, sys, &mut **j, &o))
                .collect();
            let reports = rollback_sites(engines)
                .with_context(|| format!("rollback of site(s) {}", names.join(", ")))?;
            if common.json && reports.len() > 1 {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                for r in &reports {
                    print_report(r, common.json)?;
                }
            }
            Ok(0)
        }
        CutoverCommand::Wave(c) => wave::run(c),
        CutoverCommand::Worker {
            number,
            common,
            claim_lease,
            poll,
            bundles,
        } => worker::worker(
            number,
            &common,
            Duration::from_secs(claim_lease.max(1)),
            Duration::from_millis(poll.max(10)),
            bundles,
        ),
        CutoverCommand::Finalize {
            site,
            wave,
            plan,
            sites,
            journal,
            dry_run,
            json,
            override_reason,
            drop_old_copies,
        } => finalize::run(
            site,
            wave,
            plan,
            &sites,
            &journal,
            &finalize::Flags {
                dry_run,
                json,
                override_reason: override_reason.as_deref(),
                drop_old_copies,
            },
        ),
        CutoverCommand::LeaseWatch {
            sites,
            journal,
            once: _,
            interval: _,
            dry_run: true,
        } => finalize::lease_watch_dry_run(&sites, &journal),
        CutoverCommand::LeaseWatch {
            sites,
            journal,
            once,
            interval,
            dry_run: false,
        } => finalize::lease_watch(&sites, &journal, once, interval),
        CutoverCommand::Site(SiteCmd::Show {
            site,
            journal,
            json,
        }) => show(&site, &journal, json),
        CutoverCommand::Site(SiteCmd::Schema { json: _ }) => {
            print!("{}", migrator::site_spec::SCHEMA);
            Ok(0)
        }
        CutoverCommand::Site(SiteCmd::SpecsFromLab {
            state,
            out,
            proxy_admin,
            proxy_token_file,
            tunnel_config,
            tunnel_side,
            tunnel_netns,
        }) => {
            let secrets_dir = out
                .parent()
                .map(|p| p.join("secrets"))
                .unwrap_or_else(|| PathBuf::from("secrets"));
            let opts = migrator::lab_spec::LabOptions {
                proxy_admin,
                proxy_token_file,
                tunnel: tunnel_config.map(|config| migrator::site_spec::TunnelSpec {
                    config,
                    side: tunnel_side,
                    netns: tunnel_netns,
                    state_dir: None,
                }),
                secrets_dir,
                budget: Default::default(),
            };
            let f = migrator::lab_spec::specs_from_lab(&state, &opts)?;
            std::fs::write(&out, serde_json::to_string_pretty(&f)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{} site(s) written to {}", f.sites.len(), out.display());
            Ok(0)
        }
        CutoverCommand::Status {
            journal,
            sites,
            json,
            limit,
            all,
        } => status(
            &journal,
            sites.as_deref(),
            json,
            if all { usize::MAX } else { limit },
        ),
    }
}

fn open_existing(journal: &Path) -> anyhow::Result<Box<dyn JournalStore + Send>> {
    crate::cmd::open_existing(journal)
}

fn show(site: &str, journal: &Path, json: bool) -> anyhow::Result<i32> {
    let journal = JournalLocation::parse(journal)?;
    if !journal.may_exist() {
        bail!("journal {journal} does not exist");
    }
    let j = open_journal(&journal)?;
    let Some(state) = j.site_state(site)? else {
        bail!("site {site} is not in journal {journal}");
    };
    if json {
        let steps: Vec<serde_json::Value> = j
            .steps(site)?
            .into_iter()
            .map(|s| {
                serde_json::json!({
                    "phase": s.phase,
                    "status": s.status.name(),
                    "started_ms": s.started_ms,
                    "ended_ms": s.ended_ms,
                    "duration_ms": s.ended_ms.map(|e| e - s.started_ms),
                    "bytes": s.bytes,
                    "error": s.error,
                })
            })
            .collect();
        let lease = migrator::cutover::lease::get(&*j, site)?.map(|l| {
            serde_json::json!({
                "kind": match l.kind {
                    migrator::cutover::lease::LeaseKind::Sync => "sync",
                    migrator::cutover::lease::LeaseKind::Freeze => "freeze",
                },
                "pid": l.pid,
                "host": l.host,
                "expires_ms": l.expires_ms,
            })
        });
        let doc = serde_json::json!({
            "site": site,
            "state": state.as_str(),
            "steps": steps,
            "write_unavailability_ms": checkpoints::get_num::<f64>(&*j, site, Checkpoint::FreezeMs)?,
            "lease": lease,
            "bundle": migrator::bundle::state::get(&*j, site)?,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(0);
    }
    println!("{site}: {}", state.as_str());
    let steps = j.steps(site)?;
    let t0 = steps.first().map(|s| s.started_ms).unwrap_or(0);
    for s in steps {
        let dur = s
            .ended_ms
            .map(|e| format!("{:>8} ms", e - s.started_ms))
            .unwrap_or_else(|| "  (no end: interrupted)".into());
        println!(
            "  +{:>8.3} s  {:<18} {:<8} {dur}  {} bytes{}",
            (s.started_ms - t0) as f64 / 1e3,
            s.phase,
            s.status.name(),
            s.bytes,
            s.error.map(|e| format!("  error: {e}")).unwrap_or_default()
        );
    }
    if let Some(f) = checkpoints::get(&*j, site, Checkpoint::FreezeMs)? {
        println!("  write-unavailability {f} ms");
    }
    if let Some(l) = migrator::cutover::lease::get(&*j, site)? {
        let what = match l.kind {
            migrator::cutover::lease::LeaseKind::Sync => "SYNCING",
            migrator::cutover::lease::LeaseKind::Freeze => "FROZEN",
        };
        println!(
            "  {what} under a lease of pid {} on {} until {} (`migrator lease-watch` recovers it once expired)",
            l.pid,
            l.host,
            migrator::control::utc(l.expires_ms)
        );
    }
    Ok(0)
}

const STATUS_HELP: &str = "\
Exit codes:
  0  status printed (and, with --sites, every database routed as the journal says)
  3  with --sites: the SQL proxy disagrees with the journal (a database on the wrong side,
     or paused outside a freeze); each one is printed, then the command that repairs it
     (`migrator routes reconcile`, see `migrator routes reconcile --help`)
  4  with --sites: a proxy did not answer, its routes are not confirmed
  2  the command failed (journal, spec file)";

/// Where a site comes in `status`'s list: failed and aborted first, then those in the
/// middle of their cutover, then the rest.
fn attention(st: migrator::journal::SiteState) -> u8 {
    use migrator::journal::SiteState as S;
    match st {
        S::Failed | S::Aborted => 0,
        S::Frozen | S::FinalSynced | S::Verified | S::Switched => 1,
        _ => 2,
    }
}

fn status(
    journal: &Path,
    sites_file: Option<&Path>,
    json: bool,
    limit: usize,
) -> anyhow::Result<i32> {
    if json {
        return status_json(journal, sites_file);
    }
    let j = open_existing(journal)?;
    let sites = j.sites()?;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut freezes = Vec::new();
    for (site, st) in &sites {
        *counts.entry(st.as_str()).or_default() += 1;
        if let Some(v) = checkpoints::get_num::<f64>(&j, site, Checkpoint::FreezeMs)? {
            freezes.push(v);
        }
    }
    if let Some(p) = j.plan()? {
        println!("plan: {p}");
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("{} sites: {}", sites.len(), summary.join(", "));
    freezes.sort_by(|a, b| a.total_cmp(b));
    if let (Some(p50), Some(p99)) = (
        migrator::wave::percentile(&freezes, 50.0),
        migrator::wave::percentile(&freezes, 99.0),
    ) {
        println!(
            "freeze p50 {p50:.0} ms, p99 {p99:.0} ms ({} sites)",
            freezes.len()
        );
    }
    if let Some(w) = migrator::control::Controls::open(journal)?.status(None)? {
        println!("{}{}", w.line(), if w.finished { " (ended)" } else { "" });
    }
    let bundles: std::collections::BTreeMap<String, migrator::bundle::state::BundleState> =
        migrator::bundle::state::all(&j)?.into_iter().collect();
    let mut listed: Vec<&(String, migrator::journal::SiteState)> = sites.iter().collect();
    listed.sort_by_key(|(_, st)| attention(*st));
    let hidden = listed.len().saturating_sub(limit);
    listed.truncate(limit);
    for (site, st) in listed {
        // The bundle column matters once a site switched: finalize waits for `verified`.
        let bundle = match bundles.get(site) {
            Some(b) => format!(
                "bundle {} {}{}",
                b.bundle,
                b.stage.as_str(),
                b.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            None if matches!(
                st,
                migrator::journal::SiteState::Live | migrator::journal::SiteState::Finalized
            ) =>
            {
                "no bundle".into()
            }
            None => String::new(),
        };
        println!("  {site:<30} {:<12} {bundle}", st.as_str());
    }
    if hidden > 0 {
        println!(
            "  ... {hidden} more site(s) not listed (--limit N, --all, or --json for every one)"
        );
    }
    let Some(spec_path) = sites_file else {
        return Ok(0);
    };
    let r = route_check(journal, spec_path)?;
    crate::cmd::routes::print_check(&r, spec_path, journal);
    Ok(r.exit_code())
}

/// `status --sites`: the proxies' routes against the journal (read-only, not recorded).
fn route_check(
    journal: &Path,
    spec_path: &Path,
) -> anyhow::Result<migrator::route_check::RouteReport> {
    let specs = SpecFile::load(spec_path)?;
    crate::cmd::routes::check_with(
        &specs.sites,
        journal,
        crate::cmd::routes::CHECK_TIMEOUT,
        false,
    )
}

/// `status --json`: the same figures as one document.
fn status_json(journal: &Path, sites_file: Option<&Path>) -> anyhow::Result<i32> {
    let j = open_existing(journal)?;
    let sites = j.sites()?;
    let bundles: std::collections::BTreeMap<String, migrator::bundle::state::BundleState> =
        migrator::bundle::state::all(&j)?.into_iter().collect();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut freezes = Vec::new();
    let mut rows = Vec::new();
    for (site, st) in &sites {
        *counts.entry(st.as_str()).or_default() += 1;
        let freeze = checkpoints::get_num::<f64>(&j, site, Checkpoint::FreezeMs)?;
        freezes.extend(freeze);
        rows.push(serde_json::json!({
            "site": site,
            "state": st.as_str(),
            "write_unavailability_ms": freeze,
            "bundle": bundles.get(site),
        }));
    }
    freezes.sort_by(|a, b| a.total_cmp(b));
    let wave = migrator::control::Controls::open(journal)?.status(None)?;
    let mut doc = serde_json::json!({
        "plan": j.plan()?,
        "sites_total": sites.len(),
        "counts": counts,
        "write_unavailability_ms": {
            "p50": migrator::wave::percentile(&freezes, 50.0),
            "p99": migrator::wave::percentile(&freezes, 99.0),
            "sites": freezes.len(),
        },
        "wave": wave,
        "sites": rows,
    });
    let mut code = 0;
    if let Some(spec_path) = sites_file {
        let r = route_check(journal, spec_path)?;
        code = r.exit_code();
        doc["route_check"] = serde_json::to_value(&r)?;
    }
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(code)
}

//! `migrator site migrate|show`, `migrator wave run`, `migrator rollback`, `migrator status`.
//!
//! Every mutating command takes `--dry-run`: the same engine runs against a recording world
//! that prints each action on each system and does none; the real journal is not written
//! (the dry run starts from a scratch copy of the sites' states).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use migrator::cutover::{Engine, EngineOptions, SiteReport};
use migrator::dry_run::Recorder;
use migrator::journal::{JournalStore, SqliteJournal};
use migrator::real_systems;
use migrator::rollback::rollback_site;
use migrator::site_spec::{SiteSpec, SpecFile};
use migrator::systems::Systems;
use migrator::wave::{run_wave, SiteOutcome, WaveOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The site spec file (JSON: every site's endpoints on both sides).
    #[arg(long, value_name = "FILE")]
    pub sites: PathBuf,
    /// The journal file (SQLite); created if missing.
    #[arg(long, value_name = "FILE")]
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
        #[arg(long, value_name = "FILE")]
        journal: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum WaveCmd {
    /// Run (or resume) wave N of a plan: every site in it, a few at a time.
    Run {
        /// Wave number in the plan.
        number: u32,
        /// The plan file (`migrator plan`).
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
        #[command(flatten)]
        common: Common,
        /// Sites cut over at the same time.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Stop starting new sites once more than this many failed.
        #[arg(long, default_value_t = 3)]
        max_failures: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum CutoverCommand {
    /// One site: migrate, show.
    #[command(subcommand)]
    Site(SiteCmd),
    /// Waves of a plan.
    #[command(subcommand)]
    Wave(WaveCmd),
    /// Roll a switched or live site back to the old side, carrying its new writes back.
    Rollback {
        site: String,
        #[command(flatten)]
        common: Common,
    },
    /// Every site's state, counts per state, and freeze figures, from the journal.
    Status {
        #[arg(long, value_name = "FILE")]
        journal: PathBuf,
    },
}

/// Set by SIGINT/SIGTERM; copied into the engine's flag. The engine obeys it only outside a
/// site's critical section.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

fn engine_options(common: &Common) -> EngineOptions {
    let o = EngineOptions {
        gate_wait: Duration::from_secs(common.gate_wait),
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
    if common.journal.exists() {
        let real = SqliteJournal::open(&common.journal)?;
        for (site, st) in real.sites()? {
            j.set_site_state(&site, st)?;
        }
    }
    Ok(path)
}

fn systems_for(spec: &SiteSpec, common: &Common, journal: &Path) -> Result<Systems, String> {
    if common.dry_run {
        Ok(Recorder::for_site(spec, true).systems(spec))
    } else {
        real_systems::systems(spec, journal).map_err(|e| e.to_string())
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
            let sys = systems_for(spec, &common, &jp).map_err(anyhow::Error::msg)?;
            let mut j = SqliteJournal::open(&jp)?;
            let o = engine_options(&common);
            let r = Engine::new(spec, &sys, &mut j, &o)
                .migrate()
                .with_context(|| format!("site {site}"))?;
            print_report(&r, common.json)?;
            Ok(0)
        }
        CutoverCommand::Rollback { site, common } => {
            let specs = SpecFile::load(&common.sites)?;
            let spec = specs.site(&site)?;
            let scratch = tempfile::tempdir()?;
            let jp = journal_for(&common, &scratch)?;
            if common.dry_run {
                // The dry-run world starts with the site on the old side; show it switched.
                let mut j = SqliteJournal::open(&jp)?;
                if j.site_state(&site)?.is_none() {
                    j.set_site_state(&site, migrator::journal::SiteState::Live)?;
                }
            }
            let sys = systems_for(spec, &common, &jp).map_err(anyhow::Error::msg)?;
            let mut j = SqliteJournal::open(&jp)?;
            let o = engine_options(&common);
            let r = rollback_site(Engine::new(spec, &sys, &mut j, &o))
                .with_context(|| format!("rollback of site {site}"))?;
            print_report(&r, common.json)?;
            Ok(0)
        }
        CutoverCommand::Wave(WaveCmd::Run {
            number,
            plan,
            common,
            concurrency,
            max_failures,
        }) => wave(number, &plan, &common, concurrency, max_failures),
        CutoverCommand::Site(SiteCmd::Show { site, journal }) => show(&site, &journal),
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
        CutoverCommand::Status { journal } => status(&journal),
    }
}

fn wave(
    number: u32,
    plan: &Path,
    common: &Common,
    concurrency: usize,
    max_failures: usize,
) -> anyhow::Result<i32> {
    let plan_file =
        planner::Plan::read(plan).with_context(|| format!("plan {}", plan.display()))?;
    let Some(w) = plan_file.waves.iter().find(|w| w.number == number) else {
        bail!(
            "plan {} has no wave {number} (it has {} waves)",
            plan.display(),
            plan_file.waves.len()
        );
    };
    let names: Vec<&String> = w.groups.iter().flat_map(|g| g.sites.iter()).collect();
    let file = SpecFile::load(&common.sites)?;
    let mut specs = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        match file.site(n) {
            Ok(s) => specs.push(s.clone()),
            Err(_) => missing.push(n.clone()),
        }
    }
    if !missing.is_empty() {
        bail!(
            "wave {number}: {} site(s) have no entry in {}: {}",
            missing.len(),
            common.sites.display(),
            missing.join(", ")
        );
    }
    let scratch = tempfile::tempdir()?;
    let jp = journal_for(common, &scratch)?;
    {
        let mut j = SqliteJournal::open(&jp)?;
        j.set_plan(&format!("{}#wave{number}", plan.display()))?;
    }
    let o = engine_options(common);
    let build = |s: &SiteSpec| systems_for(s, common, &jp);
    let json = common.json;
    let total = specs.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let on_done = |out: &SiteOutcome| {
        let n = done.fetch_add(1, Ordering::SeqCst) + 1;
        if json {
            return;
        }
        match (&out.report, &out.error) {
            (Some(r), _) => eprintln!(
                "[{n}/{total}] {}: {} (freeze {})",
                out.site,
                r.state,
                r.freeze_ms
                    .map(|f| format!("{f:.0} ms"))
                    .unwrap_or_else(|| "-".into())
            ),
            (None, Some(e)) => eprintln!("[{n}/{total}] {}: FAILED: {e}", out.site),
            (None, None) => {}
        }
    };
    let w = WaveOptions {
        concurrency,
        max_failures,
    };
    let report = run_wave(&jp, &specs, &build, &w, &o, &on_done);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "wave {number}: {} live, {} failed, {} not started in {:.1} s",
            report.live,
            report.failed,
            report.not_started.len(),
            report.seconds
        );
        if let (Some(p50), Some(p99)) = (report.freeze_p50_ms, report.freeze_p99_ms) {
            println!("freeze p50 {p50:.0} ms, p99 {p99:.0} ms");
        }
        if let Some(why) = &report.stopped {
            println!("stopped: {why}");
        }
    }
    Ok(if report.failed == 0 && report.stopped.is_none() {
        0
    } else {
        1
    })
}

fn open_existing(journal: &Path) -> anyhow::Result<SqliteJournal> {
    if !journal.exists() {
        bail!("journal {} does not exist", journal.display());
    }
    Ok(SqliteJournal::open(journal)?)
}

fn show(site: &str, journal: &Path) -> anyhow::Result<i32> {
    let j = open_existing(journal)?;
    let Some(state) = j.site_state(site)? else {
        bail!("site {site} is not in journal {}", journal.display());
    };
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
    if let Some(f) = j.checkpoint_raw("cutover", &format!("{site}.freeze_ms"))? {
        println!("  write-unavailability {f} ms");
    }
    Ok(0)
}

fn status(journal: &Path) -> anyhow::Result<i32> {
    let j = open_existing(journal)?;
    let sites = j.sites()?;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut freezes = Vec::new();
    for (site, st) in &sites {
        *counts.entry(st.as_str()).or_default() += 1;
        if let Some(f) = j.checkpoint_raw("cutover", &format!("{site}.freeze_ms"))? {
            if let Ok(v) = f.parse::<f64>() {
                freezes.push(v);
            }
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
    for (site, st) in &sites {
        println!("  {site:<30} {}", st.as_str());
    }
    Ok(0)
}

//! `migrator cron-run` (a site's scheduled job, run only on the side that owns the site) and
//! `migrator cron-runs` (the run journal). See [`migrator::artifacts::fence`].

use anyhow::Context;
use clap::{Args, Subcommand};
use migrator::artifacts::fence::{self, Invocation, Outcome, Side};
use migrator::site_spec::SpecFile;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct CronRunArgs {
    /// The journal holding the site's owner token (the migration's `--journal`; shared by
    /// both sides: a MariaDB URL, or a file both reach).
    #[arg(long, value_name = "FILE|URL")]
    pub journal: PathBuf,
    /// The site spec file naming the job (its schedule gives the slot a run belongs to); like
    /// `--journal`, also from `HOSTMOVE_SITES` or /etc/hostmove/migrator.toml.
    #[arg(long, visible_alias = "spec", value_name = "FILE")]
    pub sites: PathBuf,
    #[arg(long)]
    pub site: String,
    /// The job's `name` in the site's `artifacts.cron`.
    #[arg(long)]
    pub job: String,
    /// The side this host is on: `old` or `new`.
    #[arg(long, value_name = "old|new")]
    pub side: Side,
    /// How long to wait while the site is frozen before giving this slot up (seconds).
    #[arg(long, value_name = "S", default_value_t = 300)]
    pub max_wait: u64,
    /// The command to run (default: the job's `command`, through `sh -c`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CronRunsArgs {
    #[arg(long, value_name = "FILE|URL")]
    pub journal: PathBuf,
    #[arg(long)]
    pub site: String,
    /// The whole record as JSON (token, runs, refusals) instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum CronCommand {
    /// Run a site's scheduled job if, and only if, this side owns the site.
    ///
    /// Installed in the crontab of BOTH sides in place of the job's command:
    ///   */5 * * * * alice migrator cron-run --journal J --sites sites.json --site alice
    ///       --job purge --side old
    /// While the site is frozen (its cutover or rollback) the run waits, up to --max-wait;
    /// after the switch only the new side runs it, after a rollback only the old one. Each
    /// slot (due time) runs once, whichever side asks. Every run is recorded (side, start,
    /// end, exit) and so is every refusal: `migrator cron-runs` lists them. The job runs
    /// with HOSTMOVE_CRON_SLOT (the due time it runs for, unix seconds) and
    /// HOSTMOVE_CRON_SIDE (old|new) in its environment.
    ///
    /// Exit status: the job's own; 0 when refused or already run (the other side's cron is
    /// expected to fire too); 2 when the journal or spec cannot be read.
    #[command(verbatim_doc_comment)]
    CronRun(CronRunArgs),
    /// The run journal of a site's jobs: who owns the site, every run and every refusal.
    CronRuns(CronRunsArgs),
}

pub fn run(command: CronCommand) -> anyhow::Result<i32> {
    match command {
        CronCommand::CronRun(a) => cron_run(a),
        CronCommand::CronRuns(a) => {
            let j = super::open_existing(&a.journal)?;
            let token = fence::token(j.as_ref(), &a.site)?.1;
            let runs = fence::runs(j.as_ref(), &a.site)?;
            let refusals = fence::refusals(j.as_ref(), &a.site)?;
            if a.json {
                let out = serde_json::json!({
                    "site": a.site, "token": token, "runs": runs, "refusals": refusals,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(0);
            }
            let t = serde_json::to_value(&token)?;
            println!(
                "site {}: owner {}, frozen {}",
                a.site,
                t["owner"].as_str().unwrap_or("?"),
                t["frozen"]
            );
            println!(
                "{:<16} {:>12} {:<4} {:>15} {:>15} {:>5}",
                "JOB", "SLOT", "SIDE", "STARTED_MS", "ENDED_MS", "EXIT"
            );
            let opt = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
            for r in &runs {
                println!(
                    "{:<16} {:>12} {:<4} {:>15} {:>15} {:>5}",
                    r.job,
                    r.slot,
                    r.side.as_str(),
                    r.started_ms,
                    opt(r.ended_ms),
                    opt(r.exit.map(i64::from))
                );
            }
            for r in &refusals {
                println!(
                    "refused {} slot {} on {} at {}: {}",
                    r.job,
                    r.slot,
                    r.side.as_str(),
                    r.at_ms,
                    r.reason
                );
            }
            Ok(0)
        }
    }
}

/// Makes this process the leader of a new process group, which the job's processes join: a
/// freeze that must stop an overrunning run stops the whole group, and a run whose leader was
/// killed stays alive while its job does ([`fence::reap`]).
fn own_group() -> Option<migrator::artifacts::liveness::ProcId> {
    // SAFETY: setpgid on this process only; failing (already a session leader) leaves it in
    // its group, which ProcId::me reports.
    unsafe { libc::setpgid(0, 0) };
    migrator::artifacts::liveness::ProcId::me()
}

fn cron_run(a: CronRunArgs) -> anyhow::Result<i32> {
    let spec = SpecFile::load(&a.sites)?;
    let site = spec.site(&a.site)?;
    let job = site
        .artifacts
        .cron
        .iter()
        .find(|j| j.name == a.job)
        .with_context(|| {
            format!(
                "{}: site {} has no cron job {:?}",
                a.sites.display(),
                a.site,
                a.job
            )
        })?;
    let schedule = job.parsed().map_err(anyhow::Error::msg)?;
    let mut journal = super::open_existing(&a.journal)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let inv = Invocation {
        site: &a.site,
        job: &a.job,
        side: a.side,
        schedule: &schedule,
        max_wait: Duration::from_secs(a.max_wait),
        poll: Duration::from_millis(200),
        process: own_group(),
    };
    let argv = if a.command.is_empty() {
        vec!["sh".to_string(), "-c".to_string(), job.command.clone()]
    } else {
        a.command.clone()
    };
    // The slot `run` claims (the same due time, from the same instant), for the job to name
    // what it writes by.
    let slot = schedule.last_due(now);
    // Beats on a connection of its own while the job runs, so a run on this host stays known
    // alive to a migrator on another one (fence::beat; a failed beat is tried again next time).
    let stop = std::sync::atomic::AtomicBool::new(false);
    let beats = |me: &migrator::artifacts::liveness::ProcId| -> anyhow::Result<()> {
        let mut j = super::open_existing(&a.journal)?;
        let mut next = std::time::Instant::now() + Duration::from_secs(1);
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            if std::time::Instant::now() >= next {
                if let Err(e) = fence::beat(j.as_mut(), &a.site, me) {
                    tracing::warn!("cron-run {} {}: heartbeat: {e}", a.site, a.job);
                }
                next = std::time::Instant::now() + fence::HEARTBEAT;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    };
    let outcome = std::thread::scope(|sc| {
        let beating = inv.process.as_ref().map(|me| sc.spawn(move || beats(me)));
        let outcome = inv.run(journal.as_mut(), now, || {
            let mut cmd = std::process::Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .env("HOSTMOVE_CRON_SIDE", a.side.as_str());
            if let Some(s) = slot {
                cmd.env("HOSTMOVE_CRON_SLOT", s.to_string());
            }
            let status = cmd.status()?;
            Ok(status.code().unwrap_or(128))
        });
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(Ok(Err(e))) = beating.map(|h| h.join()) {
            tracing::warn!("cron-run {} {}: no heartbeat: {e:#}", a.site, a.job);
        }
        outcome
    })?;
    let outcome = outcome.with_context(|| format!("job {}: starting {:?}", a.job, argv[0]))?;
    match outcome {
        Outcome::Ran { exit } => Ok(exit),
        Outcome::Refused(why) => {
            eprintln!(
                "cron-run {} {}: not run on the {} side: {why}",
                a.site,
                a.job,
                a.side.as_str()
            );
            Ok(0)
        }
        Outcome::AlreadyRan { side } => {
            eprintln!(
                "cron-run {} {}: this slot already ran on the {} side",
                a.site,
                a.job,
                side.as_str()
            );
            Ok(0)
        }
    }
}

//! `migrator wave run|start|status|pause|resume|throttle`: run a wave (or start it for
//! workers, `worker.rs`) and steer it while it runs.
//!
//! A running wave serves a local control socket (default `<journal>.wave.sock`, mode 0600)
//! and obeys the journal's controls; `pause`/`resume`/`throttle` reach it through either
//! (`--socket` or `--journal`), and both are recorded in the journal with who and when.

use super::bundles::{BundleArgs, Bundles};
use super::{engine_options, journal_for, systems_for, Common};
use crate::cmd::progress::WaveProgress;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use migrator::control::{whoami, Action, Controls, WaveStatus};
use migrator::control_socket::{self, Command as SockCmd, ControlServer};
use migrator::cutover::group::SiteOutcome;
use migrator::journal::open_journal_at;
use migrator::journal::{JournalStore, SiteState};
use migrator::monitor::ErrorRate;
use migrator::site_spec::{SiteSpec, SpecFile};
use migrator::wave::{new_monitor, run_wave_with, WaveOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Where a control goes: a running wave's socket, or the journal it obeys.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The running wave's control socket (wins over --journal: with both, e.g. the journal
    /// from the config file, the control goes to the socket).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The journal the wave runs on, a file or a MariaDB URL (the control is written there;
    /// the wave obeys it within a second, on whatever host it runs). Without --socket or
    /// --journal: nothing to talk to, an error.
    #[arg(long, value_name = "FILE|URL")]
    pub journal: Option<PathBuf>,
    /// The wave (with --journal; default: the wave that published its status last).
    #[arg(long, value_name = "N")]
    pub wave: Option<u32>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    /// A note recorded with the control (why).
    #[arg(long)]
    pub note: Option<String>,
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
        /// Sites (move groups) cut over at the same time.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Pause the wave once more than this many sites failed since the last resume.
        #[arg(long, default_value_t = 3)]
        max_failures: usize,
        /// A site (move group) aborted back to the old side is tried again at the end of the
        /// wave this many times (e.g. the tunnel failed inside its freeze).
        #[arg(long, default_value_t = 1)]
        retries: u32,
        /// When the stop rule pauses the wave, wait for `migrator wave resume` instead of
        /// ending the run.
        #[arg(long)]
        hold_on_stop: bool,
        /// Hold freezes while this many sites failed within the last minute (0: never).
        #[arg(long, default_value_t = 2)]
        max_error_rate: usize,
        /// The control socket (default: the journal's path + `.wave.sock`; for a MariaDB
        /// journal, a socket in the temporary directory named by the wave and the PID).
        #[arg(long, value_name = "PATH")]
        control_socket: Option<PathBuf>,
        #[command(flatten)]
        bundles: BundleArgs,
    },
    /// Start wave N for workers: its move groups are written to the journal (a shared
    /// MariaDB journal for workers on many hosts), where `migrator worker N` claims them.
    Start {
        /// Wave number in the plan.
        number: u32,
        /// The plan file (`migrator plan`).
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Cap a shared resource fleet-wide: at most N move groups loading it are worked on at
    /// once by all workers (`sql:<proxy admin address>`, `filer:<old homes' directory>`,
    /// `tunnel:<config>`, as `wave start` names them); 0 removes the cap.
    Cap {
        resource: String,
        n: u32,
        /// The journal the workers share (a file or a MariaDB URL).
        #[arg(long, value_name = "FILE|URL")]
        journal: PathBuf,
        #[command(flatten)]
        dry: DryRun,
    },
    /// The running wave's status: sites per state, bytes, rate, ETA, why it waits.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// No new site starts and no site freezes; sites inside their freeze finish.
    Pause {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        dry: DryRun,
    },
    /// Lifts a pause (an operator's or the stop rule's).
    Resume {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        dry: DryRun,
    },
    /// At most N sites (move groups) in progress at once; 0 removes the limit.
    Throttle {
        n: u32,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        dry: DryRun,
    },
}

pub fn run(cmd: WaveCmd) -> anyhow::Result<i32> {
    match cmd {
        WaveCmd::Run {
            number,
            plan,
            common,
            concurrency,
            max_failures,
            retries,
            hold_on_stop,
            max_error_rate,
            control_socket,
            bundles,
        } => {
            let o = WaveOptions {
                wave: number,
                concurrency,
                max_failures,
                retries,
                exit_on_stop: !hold_on_stop,
                errors: ErrorRate {
                    max_recent: max_error_rate,
                    ..Default::default()
                },
                ..Default::default()
            };
            let bundles = bundles.get(common.dry_run);
            wave_run(&plan, &common, &o, control_socket, bundles.as_ref())
        }
        WaveCmd::Start {
            number,
            plan,
            common,
        } => super::worker::start(number, &plan, &common),
        WaveCmd::Cap {
            resource,
            n,
            journal,
            dry,
        } => super::worker::cap(&resource, n, &journal, dry.dry_run),
        WaveCmd::Status { target } => control(None, &target),
        WaveCmd::Pause { target, dry } => control_or_dry(Action::Pause, &target, dry),
        WaveCmd::Resume { target, dry } => control_or_dry(Action::Resume, &target, dry),
        WaveCmd::Throttle { n, target, dry } => control_or_dry(Action::Throttle(n), &target, dry),
    }
}

/// `--dry-run` of a wave control or cap.
#[derive(Args, Debug, Clone, Copy)]
pub struct DryRun {
    /// Say what would be sent or recorded, change nothing (the status shown is read as usual).
    #[arg(long)]
    pub dry_run: bool,
}

/// A control, or with `--dry-run` the status only and what would have been sent.
fn control_or_dry(action: Action, t: &Target, dry: DryRun) -> anyhow::Result<i32> {
    if !dry.dry_run {
        return control(Some(action), t);
    }
    let code = control(None, t)?;
    let to = match (&t.socket, &t.journal) {
        (Some(s), _) => format!("the control socket {}", s.display()),
        (None, Some(j)) => format!("the journal {}", j.display()),
        (None, None) => String::new(),
    };
    eprintln!(
        "dry run: would send {} to {to}; nothing sent",
        action.name()
    );
    Ok(code)
}

fn control(action: Option<Action>, t: &Target) -> anyhow::Result<i32> {
    let status: WaveStatus = match (&t.socket, &t.journal) {
        (Some(sock), _) => {
            let cmd = SockCmd {
                cmd: action.map_or("status", Action::name).to_string(),
                value: match action {
                    Some(Action::Throttle(n)) => Some(n),
                    _ => None,
                },
                who: Some(whoami()),
                note: t.note.clone(),
            };
            let a = control_socket::send(sock, &cmd)?;
            if !a.ok {
                bail!(
                    "control socket {}: {}",
                    sock.display(),
                    a.error.unwrap_or_default()
                );
            }
            a.status.context("the wave answered without a status")?
        }
        (None, Some(j)) => {
            crate::cmd::require_journal(j)?;
            let c = Controls::open(j)?;
            let wave = match t.wave {
                Some(w) => w,
                None => c.latest_wave()?,
            };
            if let Some(a) = action {
                c.request(wave, a, &whoami(), "cli", t.note.as_deref())?;
            }
            let mut st = c.status(Some(wave))?.unwrap_or(WaveStatus {
                wave,
                ..Default::default()
            });
            st.control = c.current(wave)?;
            // A wave started for workers: where its move groups are, fleet-wide.
            let fleet = migrator::fleet::Fleet::open(j)?;
            if fleet.started(wave)? {
                st.groups = Some(fleet.progress(wave)?);
            }
            st
        }
        (None, None) => bail!(
            "say which wave to talk to: --socket PATH (a running wave's control socket, \
             default <journal>.wave.sock) or --journal FILE"
        ),
    };
    if t.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        if let Some(a) = action {
            println!("{} recorded for wave {}", a.name(), status.wave);
        }
        println!("{}", status.line());
        if status.finished {
            println!("(the wave has ended)");
        }
        for (site, why) in &status.waiting {
            println!("  {site:<30} waiting: {why}");
        }
    }
    Ok(0)
}

/// The sites of wave `number` of the plan file, in plan order.
pub(crate) fn plan_sites(number: u32, plan: &Path) -> anyhow::Result<Vec<String>> {
    let plan_file =
        planner::Plan::read(plan).with_context(|| format!("plan {}", plan.display()))?;
    let Some(w) = plan_file.waves.iter().find(|w| w.number == number) else {
        bail!(
            "plan {} has no wave {number} (it has {} waves)",
            plan.display(),
            plan_file.waves.len()
        );
    };
    Ok(w.groups
        .iter()
        .flat_map(|g| g.sites.iter().cloned())
        .collect())
}

pub(super) fn wave_specs(
    number: u32,
    plan: &Path,
    common: &Common,
) -> anyhow::Result<Vec<SiteSpec>> {
    let names = plan_sites(number, plan)?;
    let file = SpecFile::load(&common.sites)?;
    let mut specs = Vec::new();
    let mut missing = Vec::new();
    for n in &names {
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
    Ok(specs)
}

fn wave_run(
    plan: &Path,
    common: &Common,
    o: &WaveOptions,
    socket: Option<PathBuf>,
    bundles: Option<&Bundles>,
) -> anyhow::Result<i32> {
    let number = o.wave;
    let specs = wave_specs(number, plan, common)?;
    let scratch = tempfile::tempdir()?;
    let jp = journal_for(common, &scratch)?;
    {
        let mut j = open_journal_at(&jp)?;
        j.set_plan(&format!("{}#wave{number}", plan.display()))?;
    }
    let eo = engine_options(common, &jp);
    let build = |s: &SiteSpec| systems_for(s, common, &jp);
    if !common.dry_run {
        // Sites of other waves left frozen by a dead migrator: their lease says so.
        let all = SpecFile::load(&common.sites)?;
        for r in migrator::cutover::watchdog::recover_expired(&jp, &all.sites, &build, &eo)? {
            eprintln!(
                "lease of {} (pid {} on {}) had expired: {}",
                r.site,
                r.lease.pid,
                r.lease.host,
                r.outcome()
            );
        }
        // The proxy must route every database where the journal says its data is: a wave
        // started on top of a disagreement would build on it (and `committed()` would lie).
        let r = crate::cmd::routes::check_and_record(&all.sites, &jp)?;
        if !r.clean() {
            eprintln!(
                "wave {number} NOT STARTED: the SQL proxy's routes disagree with the journal"
            );
            for m in &r.mismatches {
                eprintln!("  {}", m.line());
            }
            for u in &r.unreachable {
                eprintln!("  {}", u.line());
            }
            eprintln!("  {}", r.summary());
            let fix = crate::cmd::routes::fix_command(&common.sites, &common.journal);
            if !r.mismatches.is_empty() {
                eprintln!("repair, then run the wave again (runbooks/cutover.md, \"The proxy disagrees with the journal\"):");
                eprintln!("  {fix} --dry-run");
                eprintln!("  {fix}");
            } else {
                eprintln!("a proxy did not answer: its routes cannot be confirmed; fix it, then run the wave again");
            }
            return Ok(r.exit_code());
        }
    }
    // Each site's bundle from the moment it is live, off the wave's threads.
    let bg = bundles.map(|b| b.start(&jp, common.json)).transpose()?;
    let given = std::sync::Mutex::new(Vec::<String>::new());
    let monitor = Arc::new(new_monitor(&jp, &specs, o));
    let sock_path = socket.unwrap_or_else(|| {
        match migrator::journal::JournalLocation::parse(&common.journal) {
            // A MariaDB journal has no file to put the socket beside: a private temporary one.
            Ok(migrator::journal::JournalLocation::MariaDb(_)) => std::env::temp_dir()
                .join(format!("migrator-wave{number}.{}.sock", std::process::id())),
            _ => control_socket::default_path(&common.journal),
        }
    });
    let _server = if common.dry_run {
        None
    } else {
        let m = monitor.clone();
        Some(
            ControlServer::start(&sock_path, number, &jp, Arc::new(move || m.snapshot()))
                .context("starting the wave's control socket (--control-socket)")?,
        )
    };
    if !common.dry_run && !common.json {
        eprintln!(
            "wave {number}: {} sites; control: migrator wave status|pause|resume|throttle N --socket {}",
            specs.len(),
            sock_path.display()
        );
    }
    let progress = WaveProgress::start(monitor.clone(), common.json || common.dry_run);
    let json = common.json;
    let total = specs.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let on_done = |out: &SiteOutcome| {
        let n = done.fetch_add(1, Ordering::SeqCst) + 1;
        let live = out.report.as_ref().map(|r| r.state) == Some(SiteState::Live);
        if let (Some(bg), true) = (&bg, live) {
            if let Some(spec) = specs.iter().find(|s| s.site == out.site) {
                bg.submit(spec);
                given
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(out.site.clone());
            }
        }
        if json {
            return;
        }
        let line = match (&out.report, &out.error) {
            (Some(r), _) => format!(
                "[{n}/{total}] {}: {} (freeze {})",
                out.site,
                r.state,
                r.freeze_ms
                    .map(|f| format!("{f:.0} ms"))
                    .unwrap_or_else(|| "-".into())
            ),
            (None, Some(e)) => format!("[{n}/{total}] {}: FAILED: {e}", out.site),
            (None, None) => return,
        };
        progress.println(&line);
    };
    let report = run_wave_with(&jp, &specs, &build, o, &eo, &monitor, &on_done);
    progress.finish();
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
    let code = if report.failed == 0 && report.stopped.is_none() {
        0
    } else {
        1
    };
    let Some((b, bg)) = bundles.zip(bg) else {
        return Ok(code);
    };
    let given = given.into_inner().unwrap_or_else(|e| e.into_inner());
    let names: Vec<String> = specs.iter().map(|s| s.site.clone()).collect();
    let bundles_code = b.finish(bg, &given, &names, &jp, common)?;
    Ok(if code == 0 { bundles_code } else { code })
}

//! `migrator routes check|reconcile`: does the SQL proxy route each database where the journal
//! says its data lives, and the repair ([`migrator::route_check`]). The same check runs in
//! `migrator status --sites`, at the start of `migrator wave run` and in every
//! `migrator lease-watch` round (helpers below).

use clap::Subcommand;
use migrator::journal::JournalStore;
use migrator::real_systems;
use migrator::route_check::{self, store, RouteReport, EXIT_MISMATCH, EXIT_UNCONFIRMED};
use migrator::site_spec::{SiteSpec, SpecFile};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one admin API call of the check may take (connect, then each read).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

const CHECK_HELP: &str = "\
What it compares, per database of every site in --sites:
  journal state switched, live, finalized        -> the proxy must serve it from the new side
  any other state (planned ... verified, aborted,
  failed, rolled_back)                           -> from the old side
  `paused` is normal only while the site's freeze lease is held by a live migrator;
  a database paused outside a freeze waits for nobody: `migrator lease-watch --once`
  (an abandoned freeze) or the site's abort decides. Never resume it by hand.

Exit codes:
  0  every database is routed as the journal says
  3  MISMATCH: at least one database on the wrong side, or paused outside a freeze
  4  NOT CONFIRMED: no mismatch seen, but a proxy did not answer (nothing is confirmed)
  2  the command itself failed (spec file, journal)

Each check is recorded in the journal (table route_checks): the dashboard shows a banner and
/metrics exports migrator_route_mismatches. Runbook: runbooks/cutover.md, \"The proxy
disagrees with the journal\".";

const RECONCILE_HELP: &str = "\
What it does: `check`, then for each database served from the wrong side, open (not paused),
of a site with no freeze lease and no rollback in progress, PUT /routes/DB {\"side\": SIDE}
on the proxy's admin API, after reading the site's journal row and the route once more
(anything changed since the check is skipped: run it again). One line per database:
  shop_db: old -> new (site shop, journal state live)
  shop_db: NOT CHANGED, paused on old (site shop, journal state synced): <why>

Never changed here (each printed with the command that decides it):
  - a paused database: resume or abort ends a pause (`migrator lease-watch --once` for an
    abandoned freeze); a proxy with a route store also refuses it (409: \"LEFT PAUSED\");
  - a site whose freeze is in progress, abandoned, or stopped mid-freeze, or whose rollback
    is unfinished;
  - a database the sites sharing it disagree on.

Before you run it at 3 a.m.: a database served from the wrong side has taken writes there.
Moving the route back does not move those writes. Look at the line's `sessions`, and the
runbook (runbooks/cutover.md, \"The proxy disagrees with the journal\") first.
Start with --dry-run: the same lines, nothing changed.

Exit codes:
  0  every mismatch repaired (dry run: would be), every proxy answered
  1  something was left as it is (skipped, left paused, failed, or a proxy did not answer)
  2  the command itself failed (spec file, journal)";

#[derive(Subcommand, Debug)]
pub enum RoutesCmd {
    /// Compare the proxy's routes with the journal (read-only on the proxy); print each
    /// mismatch. Exit 3 on a mismatch, 4 when a proxy did not answer.
    #[command(after_long_help = CHECK_HELP)]
    Check {
        /// The site spec file (which databases, which proxy).
        #[arg(long, value_name = "FILE")]
        sites: PathBuf,
        /// The journal of the campaign (its file, or a mysql:// URL).
        #[arg(long, value_name = "FILE|URL")]
        journal: PathBuf,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Repair the proxy from the journal: set each database served from the wrong side to
    /// the side the journal names (PUT /routes/DB). Paused databases are never touched.
    #[command(after_long_help = RECONCILE_HELP)]
    Reconcile {
        /// The site spec file (which databases, which proxy).
        #[arg(long, value_name = "FILE")]
        sites: PathBuf,
        /// The journal of the campaign (its file, or a mysql:// URL): the source of truth.
        #[arg(long, value_name = "FILE|URL")]
        journal: PathBuf,
        /// Print the same lines, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum RoutesCommand {
    /// The SQL proxy's routes against the journal: check, reconcile.
    #[command(subcommand)]
    Routes(RoutesCmd),
}

pub fn run(c: RoutesCommand) -> anyhow::Result<i32> {
    let RoutesCommand::Routes(c) = c;
    match c {
        RoutesCmd::Check {
            sites,
            journal,
            json,
        } => {
            let specs = SpecFile::load(&sites)?;
            let r = check_and_record(&specs.sites, &journal)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_check(&r, &sites, &journal);
            }
            Ok(r.exit_code())
        }
        RoutesCmd::Reconcile {
            sites,
            journal,
            dry_run,
            json,
        } => {
            let specs = SpecFile::load(&sites)?;
            let j = open_journal(&journal)?;
            let admin = |p: &_| real_systems::route_admin(p, CHECK_TIMEOUT);
            let r = route_check::reconcile(&specs.sites, &j, &admin, dry_run)?;
            if !dry_run {
                // What the proxies look like now is what the dashboard should show.
                record_quietly(&specs.sites, &journal);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for u in &r.check.unreachable {
                    println!("{}", u.line());
                }
                for line in &r.repairs {
                    println!("{}", line.line());
                }
                let changed = r.repairs.iter().filter(|l| l.repaired()).count();
                println!(
                    "{} {changed} of {} mismatches{}; {} not changed",
                    if dry_run { "would repair" } else { "repaired" },
                    r.repairs.len(),
                    if r.check.unreachable.is_empty() {
                        String::new()
                    } else {
                        format!(", {} proxies did not answer", r.check.unreachable.len())
                    },
                    r.repairs.len() - changed
                );
            }
            Ok(if r.complete() { 0 } else { 1 })
        }
    }
}

fn open_journal(journal: &Path) -> anyhow::Result<Box<dyn JournalStore + Send>> {
    crate::cmd::open_existing(journal)
}

/// Checks `specs` against the journal at `journal` and records the result there.
pub fn check_and_record(specs: &[SiteSpec], journal: &Path) -> anyhow::Result<RouteReport> {
    check_with(specs, journal, CHECK_TIMEOUT, true)
}

/// The check; `record`: also append it to the journal's `route_checks`.
pub fn check_with(
    specs: &[SiteSpec],
    journal: &Path,
    timeout: Duration,
    record: bool,
) -> anyhow::Result<RouteReport> {
    let j = open_journal(journal)?;
    let admin = |p: &_| real_systems::route_admin(p, timeout);
    let r = route_check::check(specs, &j, &admin)?;
    if record {
        store::record(journal, &r)?;
    }
    Ok(r)
}

/// Records a fresh check, reporting a failure on stderr (the caller's result stands).
fn record_quietly(specs: &[SiteSpec], journal: &Path) {
    if let Err(e) = check_and_record(specs, journal) {
        tracing::warn!("recording the route check in the journal failed: {e:#}");
    }
}

/// The command that repairs what `check` found.
pub fn fix_command(sites: &Path, journal: &Path) -> String {
    format!(
        "migrator routes reconcile --sites {} --journal {}",
        sites.display(),
        journal.display()
    )
}

/// Every finding, one line each, then the summary and what to run.
pub fn print_check(r: &RouteReport, sites: &Path, journal: &Path) {
    for m in &r.mismatches {
        println!("{}", m.line());
    }
    for u in &r.unreachable {
        println!("{}", u.line());
    }
    println!("{}", r.summary());
    match r.exit_code() {
        EXIT_MISMATCH => {
            let fix = fix_command(sites, journal);
            println!("the proxy disagrees with the journal (runbooks/cutover.md, \"The proxy disagrees with the journal\")");
            println!("  see what would change: {fix} --dry-run");
            println!("  repair:                {fix}");
        }
        EXIT_UNCONFIRMED => {
            println!("a proxy did not answer: its routes are NOT confirmed");
        }
        _ => {}
    }
}

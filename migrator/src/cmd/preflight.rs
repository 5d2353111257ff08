//! `migrator preflight`: before a wave, which sites will break on the new platform, and why
//! (issue 21; the library is `migrator::preflight`).

use anyhow::Context;
use clap::{Args, Subcommand};
use migrator::preflight::code::Scanner;
use migrator::preflight::rules::RuleTable;
use migrator::preflight::run::{from_inventory, run, DbAccess};
use migrator::preflight::verdict::FleetSummary;
use migrator::preflight::{report, PreflightConfig};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum PreflightCommand {
    /// Before a wave: scan sites' homes and databases for what breaks after the move (raw IPs
    /// and host names of the old platform, foreign absolute paths, unix sockets, PHP removed
    /// in the destination's version, .htaccess rules nginx ignores, accounts the SQL proxy
    /// cannot authenticate, tables without a key or a snapshot, binary log settings); a
    /// verdict per site (ok, warn, blocked) with every finding and its fix.
    /// Exit 0: no site blocked; 3: some site blocked.
    Preflight(PreflightArgs),
}

#[derive(Args)]
pub struct PreflightArgs {
    /// The inventory directory (sites, homes, databases, the old SQL servers' names and IPs).
    #[arg(long)]
    inventory: PathBuf,
    /// Pre-flight settings (TOML; see `migrator::preflight::config`).
    #[arg(long)]
    settings: Option<PathBuf>,
    /// Only these sites (comma-separated); default every site of the inventory.
    #[arg(long, value_delimiter = ',')]
    sites: Vec<String>,
    /// Read homes under another prefix on this host: FROM=TO (e.g. /homez.=/mnt/filers/homez.).
    #[arg(long = "home-map", value_name = "FROM=TO")]
    home_map: Vec<String>,
    /// SERVER=FILE: a file (mode 0600) holding the mysql:// URL of an account that reads
    /// mysql.user, mysql.db and information_schema on that source SQL server (repeatable).
    /// Databases on servers without one are not read.
    #[arg(long = "db-url-file", value_name = "SERVER=FILE")]
    db_url_files: Vec<String>,
    /// A file (mode 0600) holding the destination SQL server's mysql:// URL (definers).
    #[arg(long, value_name = "FILE")]
    dest_url_file: Option<PathBuf>,
    /// The per-site results, one JSON line each (what `plan --exclude-from` reads).
    #[arg(long, default_value = "preflight.jsonl")]
    out: PathBuf,
    /// Also write a static HTML report here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Keep results in this journal (file or MariaDB URL): a rerun reads only homes that
    /// changed, and a killed run resumes.
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Print the fleet summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_cmd(a: PreflightArgs) -> anyhow::Result<i32> {
    let config = match &a.settings {
        Some(p) => PreflightConfig::read(p)?,
        None => PreflightConfig::default(),
    };
    let inv = planner::load(&a.inventory, &planner::LoadOptions::default())?;
    let mut home_map = Vec::new();
    for m in &a.home_map {
        let (from, to) = m
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--home-map {m:?}: expected FROM=TO"))?;
        home_map.push((from.to_string(), to.to_string()));
    }
    let only = (!a.sites.is_empty()).then_some(a.sites.as_slice());
    let (sites, served) = from_inventory(&inv, only, &home_map, &config);
    if let Some(o) = only {
        for s in o {
            if !sites.iter().any(|x| &x.site == s) {
                anyhow::bail!(
                    "--sites: site {s} is not in the inventory {}",
                    a.inventory.display()
                );
            }
        }
    }
    let mut access = DbAccess::default();
    for d in &a.db_url_files {
        let (server, file) = d
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--db-url-file {d:?}: expected SERVER=FILE"))?;
        let opts = super::db::url_from(&Some(PathBuf::from(file)), "", server)?;
        access.sources.insert(server.to_string(), opts);
    }
    if let Some(f) = &a.dest_url_file {
        access.destination = Some(super::db::url_from(&Some(f.clone()), "", "destination")?);
    }
    let scanner = Scanner::new(&config, RuleTable::builtin()?, served)?;
    let journal = match &a.journal {
        Some(j) => Some(migrator::journal::open_sql_at(j)?),
        None => None,
    };
    let (reports, stats) = run(&sites, &scanner, &config, &access, journal)?;
    report::write_jsonl(&a.out, &reports)
        .with_context(|| format!("writing {}", a.out.display()))?;
    let mut summary = FleetSummary::default();
    for r in &reports {
        summary.add(r);
    }
    if let Some(h) = &a.html {
        report::write_html(h, &reports, &summary)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{} sites: {} ok, {} warn, {} blocked ({} homes read, {} unchanged since the last run)",
            summary.sites, summary.ok, summary.warn, summary.blocked, stats.scanned, stats.reused
        );
        for (reason, c) in &summary.by_reason {
            println!(
                "  {reason:<24} {:<8} {} sites, {} findings",
                c.severity.map_or("", |s| s.as_str()),
                c.sites,
                c.findings
            );
        }
        println!("results: {}", a.out.display());
    }
    Ok(if summary.blocked > 0 { 3 } else { 0 })
}

pub fn run_group(c: PreflightCommand) -> anyhow::Result<i32> {
    match c {
        PreflightCommand::Preflight(a) => run_cmd(a),
    }
}

//! `migrator plan …` and `migrator inventory …`: the operator's face of the `planner` crate.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use planner::explain::{diff, explain};
use planner::generate::{generate, GenerateOptions};
use planner::settings::WaveWindow;
use planner::write_inventory::SitesFormat;
use planner::{LoadOptions, Plan, PlanRunError, Settings};

const PLAN_HELP: &str = "\
Plan migration waves from an inventory.

Reads the inventory directory (datacenters.jsonl, clusters.jsonl, filers.jsonl,
sql_servers.jsonl, databases.jsonl, and sites.jsonl or sites.csv), groups sites that share a
database or a login (a group never splits), and fills numbered waves in draining order (whole
filers and source clusters empty early) under: the canary ramp, site and database caps per
wave, the byte budget (bandwidth x window x efficiency), customers' maintenance windows and
destination capacity (minus headroom). Prints one line per wave and writes the plan file.

Settings come from built-in defaults, then --settings FILE (TOML, see planner/README.md),
then the flags below. The plan file records the settings and the inventory checksum, so the
same inputs always give a byte-identical plan.

Examples:
  migrator plan --inventory inv/ --out plan.json
  migrator plan --inventory inv/ --pin-last-file big-customer.txt --out plan2.json
  migrator plan --inventory inv/ --bandwidth 20Gbit/s --max-sites 30000 --out plan3.json
  migrator plan explain s0001234 --plan plan.json
  migrator plan diff plan.json plan2.json";

/// Commands of this group.
#[derive(Subcommand)]
pub enum PlanningCommand {
    /// Plan migration waves from an inventory (and explain or compare plans).
    #[command(args_conflicts_with_subcommands = true, long_about = PLAN_HELP)]
    Plan(Box<PlanCmd>),
    /// Generate or check an inventory.
    #[command(subcommand)]
    Inventory(InventoryCmd),
}

#[derive(Args)]
pub struct PlanCmd {
    #[command(subcommand)]
    action: Option<PlanAction>,
    #[command(flatten)]
    args: PlanArgs,
}

#[derive(Subcommand)]
enum PlanAction {
    /// Say which wave a site is in, with which group, and which constraint put it there.
    Explain {
        /// The site id, as in the inventory.
        site: String,
        /// The plan file to read.
        #[arg(long, default_value = "plan.json")]
        plan: PathBuf,
        /// Print JSON instead of sentences.
        #[arg(long)]
        json: bool,
    },
    /// List the sites whose wave differs between plan A and plan B (and why, in B).
    Diff {
        a: PathBuf,
        b: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Show at most this many moved sites in the table (JSON always has all).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Args)]
struct PlanArgs {
    /// Inventory directory to plan.
    #[arg(long, value_name = "DIR")]
    inventory: Option<PathBuf>,
    /// Where to write the plan file.
    #[arg(long, value_name = "FILE", default_value = "plan.json")]
    out: PathBuf,
    /// Plan and print the waves, write no plan file.
    #[arg(long)]
    dry_run: bool,
    /// TOML settings file; flags given here override it.
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
    /// Tunnel bandwidth between the datacenters, e.g. 10Gbit/s or 1.2GB/s.
    #[arg(long)]
    bandwidth: Option<String>,
    /// Share of the bandwidth a wave really gets, 0 < e <= 1.
    #[arg(long)]
    efficiency: Option<f64>,
    /// Most sites in one wave.
    #[arg(long, value_name = "N")]
    max_sites: Option<u32>,
    /// Most databases in one wave.
    #[arg(long, value_name = "N")]
    max_databases: Option<u32>,
    /// Percentage of each destination (disk, site slots, database slots) kept free.
    #[arg(long, value_name = "PCT")]
    headroom: Option<f64>,
    /// Site caps of the first (canary) waves, e.g. 10,100,1000; "none" for no canaries.
    #[arg(long, value_name = "LIST")]
    canary: Option<String>,
    /// Wave window NAME=HH:MM-HH:MM[@ZONE], ZONE a UTC offset or an IANA zone, e.g.
    /// night=22:00-06:00@+01:00 or night=22:00-06:00@Europe/Paris (named zones need
    /// --campaign-start). Repeat for several; replaces the windows of the settings.
    #[arg(long = "window", value_name = "SPEC")]
    windows: Vec<String>,
    /// Date the campaign starts (YYYY-MM-DD, the first wave's night): waves get dates, and
    /// every window (the waves' and customers' maintenance windows) is resolved on its night
    /// in its own time zone, so daylight-saving changes keep customers' local hours.
    #[arg(long, value_name = "DATE")]
    campaign_start: Option<String>,
    /// Waves per night in a dated campaign (default 1).
    #[arg(long, value_name = "N")]
    waves_per_night: Option<u32>,
    /// Put these sites (comma-separated) in the final wave(s).
    #[arg(long, value_name = "SITES", value_delimiter = ',')]
    pin_last: Vec<String>,
    /// File with one site id per line (# comments) to put in the final wave(s).
    #[arg(long, value_name = "FILE")]
    pin_last_file: Vec<PathBuf>,
    /// Pin a site to a wave: SITE=WAVE (repeatable).
    #[arg(long = "pin", value_name = "SITE=WAVE")]
    pins: Vec<String>,
    /// Do not move these sites (comma-separated); their whole group stays.
    #[arg(long, value_name = "SITES", value_delimiter = ',')]
    exclude: Vec<String>,
    /// File with one site id per line (# comments) not to move.
    #[arg(long, value_name = "FILE")]
    exclude_file: Vec<PathBuf>,
    /// `migrator preflight`'s JSON lines: its `blocked` sites are not moved (their whole
    /// group stays), and `plan explain` says why.
    #[arg(long, value_name = "PREFLIGHT_JSONL")]
    exclude_from: Vec<PathBuf>,
    /// Stop reading the inventory after this many problems.
    #[arg(long, default_value_t = 20)]
    max_errors: usize,
    /// Print JSON (overview, timings) instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum InventoryCmd {
    /// Write a realistic synthetic inventory (deterministic for a given seed).
    ///
    /// At 3,000,000 sites: ~7,000 servers, ~800,000 databases (at most 2,500 per SQL server),
    /// heavy-tailed sizes, shared databases, multi-database sites, external DNS zones.
    Generate {
        /// Number of sites.
        #[arg(long)]
        sites: u64,
        /// Random seed: the same seed gives the same files.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Directory to write (created; existing inventory files are replaced).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Format of the sites file.
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        sites_format: Format,
        /// Also write artifacts.jsonl: cron jobs, PHP pools, web rules and certificates for a
        /// share of the sites (the shares are in `migrator::artifacts::inventory::generate`).
        #[arg(long)]
        artifacts: bool,
        /// Print JSON counts.
        #[arg(long)]
        json: bool,
    },
    /// Load and validate an inventory; list problems with file, line and field.
    ///
    /// Checks artifacts.jsonl too when the directory has one (each line
    /// `{"site": ID, "artifacts": {...}}`, the site spec's artifacts section; its certificate
    /// files are read at prepare, not here).
    Check {
        #[arg(long, value_name = "DIR")]
        inventory: PathBuf,
        #[arg(long, default_value_t = 20)]
        max_errors: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

pub fn run(command: PlanningCommand) -> anyhow::Result<i32> {
    match command {
        PlanningCommand::Plan(cmd) => match *cmd {
            PlanCmd { action: None, args } => plan(args),
            PlanCmd {
                action: Some(action),
                ..
            } => match action {
                PlanAction::Explain { site, plan, json } => {
                    let p = Plan::read(&plan)?;
                    let e = explain(&p, &site)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&e)?);
                    } else {
                        for l in &e.text {
                            println!("{l}");
                        }
                    }
                    Ok(0)
                }
                PlanAction::Diff { a, b, json, limit } => {
                    let (pa, pb) = (Plan::read(&a)?, Plan::read(&b)?);
                    let d = diff(&pa, &pb);
                    if json {
                        println!("{}", serde_json::to_string(&d)?);
                        return Ok(0);
                    }
                    println!(
                    "{} -> {}: {} site(s) moved; waves {} -> {}; inventory {}; settings changed: {}",
                    a.display(),
                    b.display(),
                    d.moved.len(),
                    d.waves_a,
                    d.waves_b,
                    if d.inventory_changed { "CHANGED" } else { "same" },
                    if d.settings_changed.is_empty() {
                        "none".to_string()
                    } else {
                        d.settings_changed.join(", ")
                    }
                );
                    for m in d.moved.iter().take(limit) {
                        let why = m
                            .reason
                            .as_ref()
                            .map(|r| serde_json::to_string(r).unwrap_or_default())
                            .unwrap_or_default();
                        println!(
                            "  {:<14} {:>10} -> {:<10} {}",
                            m.site,
                            m.from.to_string(),
                            m.to.to_string(),
                            why
                        );
                    }
                    if d.moved.len() > limit {
                        println!(
                            "  ... {} more (--limit, or --json for all)",
                            d.moved.len() - limit
                        );
                    }
                    Ok(0)
                }
            },
        },
        PlanningCommand::Inventory(InventoryCmd::Generate {
            sites,
            seed,
            out,
            sites_format,
            artifacts,
            json,
        }) => {
            let t = Instant::now();
            let format = match sites_format {
                Format::Jsonl => SitesFormat::Jsonl,
                Format::Csv => SitesFormat::Csv,
            };
            let g = generate(
                &out,
                &GenerateOptions {
                    sites,
                    seed,
                    format,
                },
            )
            .with_context(|| format!("writing inventory to {}", out.display()))?;
            let arts = if artifacts {
                Some(generate_artifacts(&out, seed)?)
            } else {
                None
            };
            if json {
                let mut v = serde_json::to_value(&g)?;
                if let Some(c) = arts {
                    v["artifacts"] = serde_json::to_value(c)?;
                }
                println!("{v}");
            } else {
                println!(
                    "wrote {} in {:.1}s: {} sites ({:.1} TB), {} databases ({:.1} TB), {} source \
                     clusters ({} web servers), {} filers, {} source SQL servers; destination: {} \
                     clusters, {} SQL servers",
                    out.display(),
                    t.elapsed().as_secs_f64(),
                    g.sites,
                    g.site_bytes as f64 / 1e12,
                    g.databases,
                    g.database_bytes as f64 / 1e12,
                    g.source_clusters,
                    g.web_servers,
                    g.filers,
                    g.source_sql_servers,
                    g.destination_clusters,
                    g.destination_sql_servers
                );
                if let Some(c) = arts {
                    println!(
                        "{}: {}",
                        migrator::artifacts::inventory::FILE,
                        counts_line(&c)
                    );
                }
            }
            Ok(0)
        }
        PlanningCommand::Inventory(InventoryCmd::Check {
            inventory,
            max_errors,
            json,
        }) => match planner::load(&inventory, &LoadOptions { max_errors }) {
            Ok(inv) => {
                let ids: std::collections::HashSet<&str> =
                    (0..inv.site_count()).map(|i| inv.site_id(i)).collect();
                let arts = match migrator::artifacts::inventory::check(
                    &inventory,
                    |s| ids.contains(s),
                    max_errors,
                ) {
                    Ok(c) => c,
                    Err((errors, truncated)) => {
                        if json {
                            println!(
                                "{}",
                                serde_json::json!({"valid": false, "errors": errors,
                                    "truncated": truncated})
                            );
                        } else {
                            eprintln!("{}", planner::InventoryError::Invalid { errors, truncated });
                        }
                        return Ok(1);
                    }
                };
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"valid": true, "sites": inv.site_count(),
                            "databases": inv.database_count(), "checksum": inv.checksum,
                            "artifacts": arts})
                    );
                } else {
                    println!(
                        "{}: valid, {} sites, {} databases, checksum {}",
                        inventory.display(),
                        inv.site_count(),
                        inv.database_count(),
                        inv.checksum.blake3
                    );
                    if let Some(c) = arts {
                        println!(
                            "{}: valid, {} (not in the checksum: plans do not depend on it)",
                            migrator::artifacts::inventory::FILE,
                            counts_line(&c)
                        );
                    }
                }
                Ok(0)
            }
            Err(planner::InventoryError::Invalid { errors, truncated }) if json => {
                println!(
                    "{}",
                    serde_json::json!({"valid": false, "errors": errors, "truncated": truncated})
                );
                Ok(1)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(1)
            }
        },
    }
}

/// Writes artifacts.jsonl for the inventory just generated in `dir`.
fn generate_artifacts(
    dir: &Path,
    seed: u64,
) -> anyhow::Result<migrator::artifacts::inventory::Counts> {
    let inv = planner::load(dir, &LoadOptions { max_errors: 1 })
        .with_context(|| format!("reading back {}", dir.display()))?;
    let sites: Vec<(String, String, Vec<String>)> = (0..inv.site_count())
        .map(|i| {
            let s = inv.site(i);
            (s.id, s.login, s.domains)
        })
        .collect();
    migrator::artifacts::inventory::generate(dir, seed, &sites).with_context(|| {
        format!(
            "writing {}",
            dir.join(migrator::artifacts::inventory::FILE).display()
        )
    })
}

fn counts_line(c: &migrator::artifacts::inventory::Counts) -> String {
    format!(
        "{} sites with artifacts: {} cron jobs, {} certificates, {} PHP pools, {} web rules",
        c.sites, c.cron_jobs, c.certificates, c.php_pools, c.web_rules
    )
}

fn read_list(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// `NAME=HH:MM-HH:MM[@OFFSET]`.
fn parse_window(spec: &str) -> anyhow::Result<WaveWindow> {
    let bad = || {
        anyhow::anyhow!(
            "--window {spec:?}: expected NAME=HH:MM-HH:MM[@ZONE], e.g. night=22:00-06:00@+01:00 or night=22:00-06:00@Europe/Paris"
        )
    };
    let (name, rest) = spec.split_once('=').ok_or_else(bad)?;
    let (times, tz) = rest.split_once('@').unwrap_or((rest, "UTC"));
    let (start, end) = times.split_once('-').ok_or_else(bad)?;
    Ok(WaveWindow {
        name: name.into(),
        start: start.into(),
        end: end.into(),
        tz: tz.into(),
    })
}

fn settings_from(a: &PlanArgs) -> anyhow::Result<Settings> {
    let mut s = match &a.settings {
        Some(p) => Settings::from_toml_file(p)?,
        None => Settings::default(),
    };
    if let Some(v) = &a.bandwidth {
        s.bandwidth = v.clone();
    }
    if let Some(v) = a.efficiency {
        s.efficiency = v;
    }
    if let Some(v) = a.max_sites {
        s.max_sites_per_wave = v;
    }
    if let Some(v) = a.max_databases {
        s.max_databases_per_wave = v;
    }
    if let Some(v) = a.headroom {
        s.headroom_percent = v;
    }
    if let Some(c) = &a.canary {
        s.canary_ramp = if c.trim() == "none" {
            Vec::new()
        } else {
            c.split(',')
                .map(|x| x.trim().parse::<u32>())
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    anyhow::anyhow!("--canary {c:?}: expected sizes like 10,100,1000 or none")
                })?
        };
    }
    if !a.windows.is_empty() {
        s.windows = a
            .windows
            .iter()
            .map(|w| parse_window(w))
            .collect::<Result<_, _>>()?;
    }
    if let Some(d) = &a.campaign_start {
        s.campaign_start = Some(d.clone());
    }
    if let Some(n) = a.waves_per_night {
        s.waves_per_night = n;
    }
    s.pin_last
        .extend(a.pin_last.iter().filter(|x| !x.is_empty()).cloned());
    for f in &a.pin_last_file {
        s.pin_last.extend(read_list(f)?);
    }
    for p in &a.pins {
        let (site, wave) = p
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--pin {p:?}: expected SITE=WAVE"))?;
        let wave: u32 = wave
            .parse()
            .map_err(|_| anyhow::anyhow!("--pin {p:?}: the wave must be a number"))?;
        s.pin_wave.insert(site.to_string(), wave);
    }
    s.exclude
        .extend(a.exclude.iter().filter(|x| !x.is_empty()).cloned());
    for f in &a.exclude_file {
        s.exclude.extend(read_list(f)?);
    }
    for f in &a.exclude_from {
        for r in migrator::preflight::report::read_jsonl(f)? {
            if r.verdict == migrator::preflight::Verdict::Blocked {
                s.exclude_why.insert(
                    r.site.clone(),
                    format!("pre-flight verdict blocked: {}", r.reasons.join(", ")),
                );
                s.exclude.push(r.site);
            }
        }
    }
    s.validate()?;
    Ok(s)
}

fn human_secs(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

fn plan(a: PlanArgs) -> anyhow::Result<i32> {
    let Some(dir) = a.inventory.clone() else {
        bail!("migrator plan needs --inventory DIR (or a subcommand: explain, diff); see --help");
    };
    let settings = settings_from(&a)?;
    let t = Instant::now();
    let mut planned = match planner::plan_dir(
        &dir,
        &settings,
        &LoadOptions {
            max_errors: a.max_errors,
        },
    ) {
        Ok(p) => p,
        Err(PlanRunError::Inventory(planner::InventoryError::Invalid { errors, truncated }))
            if a.json =>
        {
            println!(
                "{}",
                serde_json::json!({"valid": false, "errors": errors, "truncated": truncated})
            );
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    if !a.dry_run {
        planned.write_file(&a.out)?;
    }
    let total = t.elapsed();
    let o = &planned.overview;
    let tm = &planned.timings;
    if a.json {
        let v = serde_json::json!({
            "plan_file": a.out,
            "dry_run": a.dry_run,
            "inventory": o.inventory,
            "summary": o.summary,
            "waves": o.waves,
            "timings_ms": {
                "load": tm.load.as_millis(), "group": tm.group.as_millis(),
                "waves": tm.waves.as_millis(), "write": tm.write.as_millis(),
                "total": total.as_millis(),
            },
        });
        println!("{v}");
        return Ok(0);
    }
    println!(
        "{:>4}  {:<6}  {:<10}  {:>7}  {:>7}  {:>9}  {:>6}  {:>8}  {:<20}  retires",
        "wave", "kind", "window", "sites", "groups", "GB", "DBs", "est.time", "limited by"
    );
    for w in &o.waves {
        let r = &w.retires;
        let mut ret = Vec::new();
        if !r.clusters.is_empty() {
            ret.push(format!(
                "{} cluster(s)/{} servers",
                r.clusters.len(),
                r.web_servers
            ));
        }
        if !r.filers.is_empty() {
            ret.push(format!("{} filer(s)", r.filers.len()));
        }
        if !r.sql_servers.is_empty() {
            ret.push(format!("{} SQL", r.sql_servers.len()));
        }
        println!(
            "{:>4}  {:<6}  {:<10}  {:>7}  {:>7}  {:>9.1}  {:>6}  {:>8}  {:<20}  {}",
            w.number,
            serde_json::to_value(w.kind)?.as_str().unwrap_or(""),
            w.window,
            w.sites,
            w.group_count,
            w.bytes as f64 / 1e9,
            w.databases,
            human_secs(w.est_seconds),
            serde_json::to_value(w.limited_by)?.as_str().unwrap_or(""),
            if ret.is_empty() {
                "-".to_string()
            } else {
                ret.join(", ")
            }
        );
    }
    let s = &o.summary;
    println!(
        "\n{} waves: {} sites in {} groups, {} databases, {:.1} TB, est. transfer {} in all.",
        s.waves,
        s.sites_planned,
        s.groups_planned,
        s.databases_planned,
        s.bytes_planned as f64 / 1e12,
        human_secs(s.est_seconds_total)
    );
    println!(
        "Not planned: {} site(s) unplaced, {} excluded (see `migrator plan explain <site>`).",
        s.sites_unplaced, s.sites_excluded
    );
    println!(
        "Retired by the plan: {} source clusters ({} web servers), {} filers, {} SQL servers.",
        s.retired_clusters, s.retired_web_servers, s.retired_filers, s.retired_sql_servers
    );
    println!(
        "{} {} (inventory checksum {}…); {:.2}s: load {:.2}s, group {:.2}s, waves {:.2}s, write {:.2}s.",
        if a.dry_run { "Dry run: plan NOT written to" } else { "Plan written to" },
        a.out.display(),
        &o.inventory.checksum.blake3[..16],
        total.as_secs_f64(),
        tm.load.as_secs_f64(),
        tm.group.as_secs_f64(),
        tm.waves.as_secs_f64(),
        tm.write.as_secs_f64()
    );
    Ok(0)
}

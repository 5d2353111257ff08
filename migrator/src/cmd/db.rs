//! `migrator copy-db`, `migrator follow-db` and `migrator verify`.
//!
//! Database URLs carry credentials, so they never appear on the command line: each side's
//! `mysql://user:password@host:port` URL comes from an environment variable or from a file
//! readable only by its owner (mode 0600). URLs and passwords are never printed or logged.

use super::files::FileSides;
use super::progress::Reporter;
use super::site_lease;
use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use migrator::db::copy::{self, CopyOptions};
use migrator::db::follow;
use migrator::db::rows::LoadMethod;
use migrator::journal::{open_journal, JournalLocation, JournalStore};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// `--load-method`: `auto` or one [`LoadMethod`].
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LoadChoice {
    Auto,
    Bulk,
    LoadData,
    Insert,
}

impl LoadChoice {
    fn forced(self) -> Option<LoadMethod> {
        match self {
            LoadChoice::Auto => None,
            LoadChoice::Bulk => Some(LoadMethod::Bulk),
            LoadChoice::LoadData => Some(LoadMethod::LoadData),
            LoadChoice::Insert => Some(LoadMethod::Insert),
        }
    }
}

/// Where the database URLs of both sides come from.
#[derive(Args, Debug, Clone)]
pub struct DbSides {
    /// Environment variable holding the source server's URL (mysql://user:pass@host:port).
    #[arg(long, value_name = "VAR", default_value = "MIGRATOR_SRC_DB_URL")]
    pub src_url_env: String,
    /// Environment variable holding the destination server's URL.
    #[arg(long, value_name = "VAR", default_value = "MIGRATOR_DST_DB_URL")]
    pub dst_url_env: String,
    /// File (mode 0600) holding the source URL; wins over --src-url-env.
    #[arg(long, value_name = "FILE")]
    pub src_url_file: Option<PathBuf>,
    /// File (mode 0600) holding the destination URL; wins over --dst-url-env.
    #[arg(long, value_name = "FILE")]
    pub dst_url_file: Option<PathBuf>,
}

pub(super) fn url_from(
    file: &Option<PathBuf>,
    var: &str,
    side: &str,
) -> anyhow::Result<mysql_async::Opts> {
    let text = match file {
        Some(f) => {
            let md =
                std::fs::metadata(f).with_context(|| format!("{side} URL file {}", f.display()))?;
            if md.permissions().mode() & 0o077 != 0 {
                bail!(
                    "{side} URL file {} is readable by group or others (mode {:o}): chmod 600 it",
                    f.display(),
                    md.permissions().mode() & 0o777
                );
            }
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => std::env::var(var)
            .with_context(|| format!("{side} database URL: set {var} or pass --{side}-url-file"))?,
    };
    // The error must not echo the URL: it holds a password.
    text.trim().parse::<mysql_async::Opts>().map_err(|_| {
        anyhow::anyhow!(
            "{side} database URL (from {}) is not a valid mysql:// URL",
            file.as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| var.to_string())
        )
    })
}

impl DbSides {
    pub fn urls(&self) -> anyhow::Result<(mysql_async::Opts, mysql_async::Opts)> {
        Ok((
            url_from(&self.src_url_file, &self.src_url_env, "src")?,
            url_from(&self.dst_url_file, &self.dst_url_env, "dst")?,
        ))
    }
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Copy one database (accounts with the same password hash, schema, rows, objects).
    CopyDb {
        /// Database name (the same on both sides).
        db: String,
        /// The site the database belongs to: its lease is held for the whole run (refused
        /// while another migrator holds the site, or once the site switched). Default: the
        /// journal's site named like the database; required when the journal tracks other
        /// sites.
        #[arg(long, value_name = "NAME")]
        site: Option<String>,
        #[command(flatten)]
        sides: DbSides,
        /// The journal: its file (SQLite), or mysql://user@host:port/db?password_file=PATH
        /// (MariaDB; the password file must be mode 0600). Created if missing.
        #[arg(long, value_name = "FILE|URL")]
        journal: PathBuf,
        /// Re-copy only tables whose checksum differs between the sides.
        #[arg(long)]
        delta: bool,
        /// Tables copied in parallel.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Print what would be copied (tables, estimated rows and bytes), change nothing.
        #[arg(long)]
        dry_run: bool,
        /// How rows reach the destination. `auto` takes the fastest the destination offers:
        /// `bulk` on MariaDB (a prepared INSERT run over thousands of rows per round trip),
        /// else `load-data` when the server has local_infile on, else `insert` (multi-row
        /// INSERT text). A forced method the destination cannot take is refused before
        /// anything is written.
        #[arg(long, value_enum, default_value_t = LoadChoice::Auto)]
        load_method: LoadChoice,
        /// Print a JSON summary on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Keep one database following its source by change capture from the source's ROW binary
    /// log: the first run copies it (recording the snapshot's binary log position), later runs
    /// apply the changes logged since, up to the source's position when the run starts.
    /// Tables the log shows changed in definition (DDL) are copied again. Resumable: the
    /// applied position is in the journal; a killed run replays from it (idempotent by primary
    /// key). The source must log in ROW format with full row images (the error says which
    /// setting to change).
    ///
    /// With --tail (only once writes to the database are stopped: the cutover's freeze), it
    /// also copies the tables that cannot be followed (no primary key) and creates the
    /// triggers and events, which wait until then (they would fire on captured rows).
    FollowDb {
        /// Database name (the same on both sides).
        db: String,
        /// The site the database belongs to: its lease is held for the whole run (refused
        /// while another migrator holds the site, or once the site switched). Default: the
        /// journal's site named like the database; required when the journal tracks other
        /// sites.
        #[arg(long, value_name = "NAME")]
        site: Option<String>,
        #[command(flatten)]
        sides: DbSides,
        /// The journal (file or mysql:// URL, as for copy-db); created if missing. It holds the
        /// capture's position.
        #[arg(long, value_name = "FILE|URL")]
        journal: PathBuf,
        /// Tables copied in parallel (first copy and re-copies).
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Finish: writes to the database are stopped (see above).
        #[arg(long)]
        tail: bool,
        /// Print a JSON summary on stdout.
        #[arg(long)]
        json: bool,
        /// Say what a run would do (first copy, or changes from the journaled position up to
        /// the source's current one; tables to copy again), change nothing: no lease, no
        /// copy, no journal step.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare a site's files (manifests) and databases (table checksums) on both sides and
    /// print every difference. Exit code 1 when anything differs.
    Verify {
        /// Site name (for the journal).
        site: String,
        #[command(flatten)]
        files: FileSides,
        /// Databases of the site to compare (repeatable).
        #[arg(long = "db", value_name = "NAME")]
        dbs: Vec<String>,
        #[command(flatten)]
        sides: DbSides,
        /// The journal (file or mysql:// URL, as for copy-db): the verification is recorded as
        /// a step.
        #[arg(long, value_name = "FILE|URL")]
        journal: Option<PathBuf>,
        /// Print a JSON summary on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// `follow-db --dry-run`: what a run would do, read-only.
fn follow_dry_run(
    src: &mysql_async::Opts,
    db: &str,
    site: &str,
    journal: &std::path::Path,
    tail: bool,
    json: bool,
) -> anyhow::Result<i32> {
    let rt = runtime()?;
    if let Some(why) = rt.block_on(follow::capturable(src))? {
        bail!("follow-db {db}: the source's changes cannot be captured: {why}");
    }
    let j = open_journal(&JournalLocation::parse(journal)?)?;
    let j: Arc<Mutex<dyn JournalStore + Send>> = Arc::new(Mutex::new(j));
    let plan = rt.block_on(follow::plan(src, db, &j))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(0);
    }
    match &plan.applied {
        None => println!(
            "DRY RUN: follow-db {db} (site {site}): first copy of every table, then the changes up to {} at least",
            plan.source_now
        ),
        Some(from) => println!(
            "DRY RUN: follow-db {db} (site {site}): changes from {from} up to {} at least",
            plan.source_now
        ),
    }
    for (t, why) in &plan.recopy {
        println!("would copy again {t}: {why}");
    }
    let verb = if tail {
        "would copy (tail)"
    } else {
        "not followed"
    };
    for (t, why) in &plan.uncaptured {
        println!("{verb} {t}: {why}");
    }
    println!("nothing changed: no lease taken, nothing copied or applied, no journal step");
    Ok(0)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

pub fn run(command: DbCommand) -> anyhow::Result<i32> {
    match command {
        DbCommand::CopyDb {
            db,
            site,
            sides,
            journal,
            delta,
            threads,
            dry_run,
            load_method,
            json,
        } => {
            let (src, dst) = sides.urls()?;
            let held = if dry_run {
                None
            } else {
                let site = site_lease::site_of_db(&journal, &db, site.as_deref(), "copy-db")?;
                Some(site_lease::hold(&journal, &site, "copy-db")?)
            };
            let j = open_journal(&JournalLocation::parse(&journal)?)?;
            let j: Arc<Mutex<dyn JournalStore + Send>> = Arc::new(Mutex::new(j));
            let step = if dry_run {
                None
            } else {
                Some(j.lock().expect("journal").begin_step(&db, "copy-db")?)
            };
            let reporter = Reporter::new("tables", json);
            let opts = CopyOptions {
                threads,
                delta,
                dry_run,
                load_method: load_method.forced(),
                ..Default::default()
            };
            let res = runtime()?.block_on(copy::copy_database(&src, &dst, &db, j.clone(), &opts));
            reporter.finish();
            let report = match res {
                Ok(r) => r,
                Err(e) => {
                    if let Some(id) = step {
                        j.lock().expect("journal").fail_step(id, &e.to_string())?;
                    }
                    return Err(e).with_context(|| format!("copy-db {db}"));
                }
            };
            if let Some(h) = held {
                h.release()?;
            }
            let bytes: u64 = report.tables.iter().map(|t| t.bytes).sum();
            if let Some(id) = step {
                let sums: Vec<String> = report
                    .tables
                    .iter()
                    .map(|t| format!("{}={}", t.table, t.source_checksum))
                    .collect();
                j.lock().expect("journal").finish_step(
                    id,
                    &migrator::journal::StepOutcome {
                        bytes,
                        checksum: Some(sums.join(",")),
                    },
                )?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for t in &report.tables {
                    println!(
                        "{:<30} {:<13} {:>10} rows {:>12} bytes {}",
                        t.table, t.action, t.rows, t.bytes, t.source_checksum
                    );
                }
                println!(
                    "{db}: {}{} tables copied of {}, {} bytes, {} accounts, {} views, {} triggers/routines/events, rows by {}, {:.2}s",
                    if dry_run { "DRY RUN: " } else { "" },
                    report.tables.iter().filter(|t| t.copied).count(),
                    report.tables.len(),
                    bytes,
                    report.users.len(),
                    report.views,
                    report.other_objects,
                    report.load_method.map_or("-", LoadMethod::name),
                    report.seconds
                );
            }
            for s in &report.users_skipped {
                eprintln!("{db}: not replayed: {s}");
            }
            Ok(0)
        }
        DbCommand::FollowDb {
            db,
            site,
            sides,
            journal,
            threads,
            tail,
            json,
            dry_run,
        } => {
            let (src, dst) = sides.urls()?;
            let site = site_lease::site_of_db(&journal, &db, site.as_deref(), "follow-db")?;
            if dry_run {
                return follow_dry_run(&src, &db, &site, &journal, tail, json);
            }
            let held = site_lease::hold(&journal, &site, "follow-db")?;
            let rt = runtime()?;
            if let Some(why) = rt.block_on(follow::capturable(&src))? {
                bail!("follow-db {db}: the source's changes cannot be captured: {why}");
            }
            let j = open_journal(&JournalLocation::parse(&journal)?)?;
            let j: Arc<Mutex<dyn JournalStore + Send>> = Arc::new(Mutex::new(j));
            let step_name = if tail { "follow-db-tail" } else { "follow-db" };
            let step = j.lock().expect("journal").begin_step(&db, step_name)?;
            let res = if tail {
                rt.block_on(follow::tail(&src, &dst, &db, j.clone(), threads))
            } else {
                rt.block_on(follow::sync(&src, &dst, &db, j.clone(), threads))
            };
            let report = match res {
                Ok(r) => r,
                Err(e) => {
                    j.lock().expect("journal").fail_step(step, &e.to_string())?;
                    return Err(e).with_context(|| format!("follow-db {db}"));
                }
            };
            held.release()?;
            j.lock().expect("journal").finish_step(
                step,
                &migrator::journal::StepOutcome {
                    bytes: report.bytes,
                    checksum: None,
                },
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for (t, why) in &report.copied {
                    println!("copied {t}: {why}");
                }
                for (t, why) in &report.uncaptured {
                    println!("not followed {t}: {why}");
                }
                println!(
                    "{db}: {} row changes applied, {} bytes moved, at {}, {:.2}s",
                    report.rows_applied, report.bytes, report.applied, report.seconds
                );
            }
            Ok(0)
        }
        DbCommand::Verify {
            site,
            files,
            dbs,
            sides,
            journal,
            json,
        } => {
            let mut out = serde_json::Map::new();
            let mut differences: Vec<String> = Vec::new();
            if files.configured() {
                let src = files.src()?;
                let mut dst = files.destination()?;
                let r = migrator::verify::verify_files(&src, dst.as_mut(), files.checksum)?;
                differences.extend(r.differences.iter().map(|d| format!("files: {d}")));
                out.insert("files".into(), serde_json::to_value(&r)?);
            }
            if !dbs.is_empty() {
                let (s, d) = sides.urls()?;
                let rt = runtime()?;
                for db in &dbs {
                    let diffs = rt.block_on(copy::verify_database(&s, &d, db))?;
                    differences.extend(diffs.iter().map(|x| format!("database {db}: {x}")));
                    out.insert(format!("db:{db}"), serde_json::to_value(&diffs)?);
                }
            }
            if !files.configured() && dbs.is_empty() {
                bail!("nothing to verify: give --src/--dst for files and/or --db NAME");
            }
            if let Some(path) = journal {
                let mut j = open_journal(&JournalLocation::parse(&path)?)?;
                let id = j.begin_step(&site, "verify")?;
                if differences.is_empty() {
                    j.finish_step(id, &migrator::journal::StepOutcome::default())?;
                } else {
                    j.fail_step(id, &differences.join("\n"))?;
                }
            }
            out.insert(
                "equal".into(),
                serde_json::Value::Bool(differences.is_empty()),
            );
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else if differences.is_empty() {
                println!("{site}: both sides are equal");
            } else {
                for d in &differences {
                    println!("{d}");
                }
                println!("{site}: {} difference(s)", differences.len());
            }
            Ok(if differences.is_empty() { 0 } else { 1 })
        }
    }
}

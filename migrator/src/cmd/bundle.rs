//! `migrator bundle capture|list|show|verify|restore|expire`: consistency-point bundles
//! ([`migrator::bundle`]), a site's databases and files as they were at the switch.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use migrator::bundle::capture::{self, CaptureOptions};
use migrator::bundle::check;
use migrator::bundle::job;
use migrator::bundle::sign;
use migrator::bundle::state::Stage;
use migrator::bundle::store::{self, BundleRef, BundleStore, LocalStore};
use migrator::bundle::store_ssh::SshStore;
use migrator::journal::{JournalStore, SiteState};
use migrator::site_spec::SpecFile;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod help;
use help::{ABOUT_HELP, CAPTURE_HELP, RESTORE_HELP, VERIFY_HELP};

#[derive(Subcommand, Debug)]
pub enum BundleCmd {
    /// Capture a live site's bundle from its old side (throttled, resumable).
    #[command(after_long_help = CAPTURE_HELP)]
    Capture {
        /// The site (or use --wave).
        #[arg(required_unless_present = "wave", conflicts_with = "wave")]
        site: Option<String>,
        /// Every site of wave N of --plan that is live or finalized (the others are skipped
        /// and said so): run it after `wave run`, off the freeze.
        #[arg(long, value_name = "N", requires = "plan")]
        wave: Option<u32>,
        #[arg(long, value_name = "FILE")]
        plan: Option<PathBuf>,
        /// Verify each bundle right after its capture, restoring the dumps into scratch
        /// databases on this server (0600 file with mysql://user:pass@host:port).
        #[arg(long, value_name = "FILE")]
        verify_scratch_url_file: Option<PathBuf>,
        /// The site spec file (the site's databases, old SQL server, old homes).
        #[arg(long, value_name = "FILE")]
        sites: PathBuf,
        #[arg(long, value_name = "FILE|URL")]
        journal: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// The ed25519 signing key (created, mode 0600, when missing; public key KEY.pub).
        #[arg(long, value_name = "FILE", env = "MIGRATOR_BUNDLE_KEY")]
        key: PathBuf,
        /// Days the bundle is kept; `bundle expire` deletes it after.
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        keep_days: u32,
        /// MiB per second read from the old side (0: no limit).
        #[arg(long, value_name = "MIB", default_value_t = 50)]
        max_rate: u64,
        /// Also store a tar of every home (restorable with `bundle restore --home`).
        #[arg(long)]
        tar: bool,
        /// Say what would be captured, write nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// List the bundles of a store (complete or not, expiry, size); read only.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this site's.
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One bundle's manifest: switch instant, databases and their checksums, homes, parts;
    /// read only.
    Show {
        /// SITE/SWITCH_MS, as `bundle list` prints.
        bundle: String,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Check a bundle: signature, every part, dumps restored and compared with the switch.
    #[command(after_long_help = VERIFY_HELP)]
    Verify {
        bundle: String,
        #[command(flatten)]
        store: StoreArgs,
        /// The signer's public key (KEY.pub).
        #[arg(long, value_name = "FILE", env = "MIGRATOR_BUNDLE_PUBLIC_KEY")]
        public_key: PathBuf,
        /// A 0600 file with mysql://user:pass@host:port of a server for scratch databases.
        #[arg(long, value_name = "FILE", required_unless_present_any = ["no_restore", "dry_run"])]
        scratch_url_file: Option<PathBuf>,
        /// Check the signature and the parts only.
        #[arg(long)]
        no_restore: bool,
        /// Check the signature and the parts (read only), say what a verification would
        /// restore; no scratch database, nothing recorded in the journal.
        #[arg(long)]
        dry_run: bool,
        /// Record the result as the site's bundle state (what finalize reads).
        #[arg(long, value_name = "FILE|URL")]
        journal: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Recreate a database under a new name, or a home into a directory, from a bundle.
    #[command(after_long_help = RESTORE_HELP)]
    Restore {
        bundle: String,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_name = "FILE", env = "MIGRATOR_BUNDLE_PUBLIC_KEY")]
        public_key: PathBuf,
        /// The database to restore (its name at the switch).
        #[arg(long, requires_all = ["as_name", "url_file"], conflicts_with = "home")]
        db: Option<String>,
        /// The name to create it under (must not exist).
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
        /// A 0600 file with mysql://user:pass@host:port of the server to restore to.
        #[arg(long, value_name = "FILE")]
        url_file: Option<PathBuf>,
        /// The home to restore (its old path, as `bundle show` lists it).
        #[arg(
            long,
            value_name = "PATH",
            requires = "into",
            required_unless_present = "db"
        )]
        home: Option<PathBuf>,
        /// Where to extract it (missing or empty).
        #[arg(long, value_name = "DIR")]
        into: Option<PathBuf>,
        /// Check the bundle and say what would be restored, create nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete the bundles whose retention (--keep-days at capture) has ended.
    Expire {
        #[command(flatten)]
        store: StoreArgs,
        /// Say which would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Decide as if it were this instant (Unix ms) instead of now: with --dry-run, what
        /// a run at that time would delete.
        #[arg(long, value_name = "MS")]
        now_ms: Option<i64>,
        #[arg(long)]
        json: bool,
    },
}

/// Where the bundles are: a local directory, or another host's over SSH.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// The bundle directory: a local path, or ssh://[user@]host[:port]/path (then
    /// --ssh-known-hosts and --ssh-identity).
    #[arg(long = "store", value_name = "DIR|URL", env = "MIGRATOR_BUNDLE_STORE")]
    pub store: PathBuf,
    /// For an ssh:// store: the known_hosts file its host key must be in (anything else is
    /// refused before connecting further).
    #[arg(long, value_name = "FILE", env = "MIGRATOR_BUNDLE_SSH_KNOWN_HOSTS")]
    pub ssh_known_hosts: Option<PathBuf>,
    /// For an ssh:// store: the private key to log in with (not readable by others).
    #[arg(long, value_name = "FILE", env = "MIGRATOR_BUNDLE_SSH_IDENTITY")]
    pub ssh_identity: Option<PathBuf>,
}

impl StoreArgs {
    /// A local directory.
    pub fn local(dir: &Path) -> StoreArgs {
        StoreArgs {
            store: dir.to_path_buf(),
            ssh_known_hosts: None,
            ssh_identity: None,
        }
    }

    pub fn open(&self) -> anyhow::Result<Arc<dyn BundleStore>> {
        let s = self.store.to_string_lossy();
        if !s.starts_with("ssh://") {
            return Ok(Arc::new(LocalStore::new(&self.store)));
        }
        let (Some(kh), Some(id)) = (&self.ssh_known_hosts, &self.ssh_identity) else {
            bail!(
                "--store {s}: an ssh:// store needs --ssh-known-hosts FILE and --ssh-identity FILE"
            );
        };
        Ok(Arc::new(SshStore::connect(&s, kh, id)?))
    }
}

#[derive(Subcommand, Debug)]
pub enum BundleCommand {
    /// Consistency-point bundles: capture, list, show, verify, restore, expire.
    #[command(subcommand, after_long_help = ABOUT_HELP)]
    Bundle(BundleCmd),
}

/// Captures (and with a scratch server, verifies) the bundles of `names`: `bundle capture`,
/// and `wave run --bundle-store` once its sites are done.
pub struct CaptureJob<'a> {
    pub sites: &'a Path,
    pub journal: &'a Path,
    pub store: &'a StoreArgs,
    pub key: &'a Path,
    pub opts: CaptureOptions,
    pub verify_scratch_url_file: Option<&'a Path>,
    /// Skip (and say so) sites not live or finalized, instead of failing on them.
    pub only_live: bool,
    pub dry_run: bool,
    pub json: bool,
    /// Lines on stderr (stdout belongs to another command's output, as `wave run --json`).
    pub stderr: bool,
}

impl CaptureJob<'_> {
    /// Exit code: 0 when every bundle was captured (and verified when asked), else 1.
    pub fn run(&self, names: &[String]) -> anyhow::Result<i32> {
        let file = SpecFile::load(self.sites)?;
        let mut j = crate::cmd::open_existing(self.journal)?;
        let st = self.store.open()?;
        let scratch = self
            .verify_scratch_url_file
            .map(|f| url_file("--verify-scratch-url-file", f))
            .transpose()?;
        let key = match self.dry_run {
            true => None,
            false => Some(sign::load_or_create(self.key)?),
        };
        let (mut reports, mut failed) = (Vec::new(), 0);
        for n in names {
            let spec = file.site(n)?;
            let live = matches!(
                j.site_state(n)?,
                Some(SiteState::Live | SiteState::Finalized)
            );
            if self.only_live && !live {
                eprintln!("{n}: skipped (not live: no switch to capture)");
                continue;
            }
            let Some(key) = &key else {
                match capture::bundle_of(&*j, n)? {
                    Some(b) => println!(
                        "{n}: would capture {} into {}: databases {:?}, homes {:?}{}, at most {} MiB/s",
                        b.id(),
                        self.store.store.display(),
                        spec.databases,
                        spec.homes.iter().map(|h| &h.old).collect::<Vec<_>>(),
                        if self.opts.tar_homes { " (with tars)" } else { "" },
                        self.opts.rate.map(|r| (r >> 20).to_string()).unwrap_or("unlimited".into()),
                    ),
                    None => println!("{n}: no finished switch in the journal: nothing to capture"),
                }
                continue;
            };
            let r =
                job::capture_and_verify(&mut *j, spec, &*st, key, &self.opts, scratch.as_ref())?;
            match (&r.error, self.json) {
                (_, false) => print_bundle(&r, self.stderr),
                (Some(e), true) => eprintln!("{n}: {e}"),
                (None, true) => {}
            }
            failed += usize::from(!r.ok());
            if let Some(r) = r.capture {
                reports.push(r);
            }
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&reports)?);
        }
        Ok(if failed == 0 { 0 } else { 1 })
    }
}

/// Lines saying what became of one site's bundle; failures on stderr, the rest there too
/// with `stderr` (stdout belongs to another command's output).
pub fn print_bundle(r: &job::SiteBundle, stderr: bool) {
    let say = |line: String| match stderr {
        true => eprintln!("{line}"),
        false => println!("{line}"),
    };
    if let Some(c) = &r.capture {
        say(capture_line(c));
    }
    match (&r.error, &r.capture) {
        (Some(e), Some(c)) => eprintln!("{}: {e}", c.bundle),
        (Some(e), None) => eprintln!("{}: {e}", r.site),
        (None, Some(c)) if r.verified == Some(true) => say(format!("{}: VERIFIED", c.bundle)),
        _ => {}
    }
}

fn capture_line(r: &capture::CaptureReport) -> String {
    if r.already {
        format!("{}: already complete ({} bytes)", r.bundle, r.bytes)
    } else {
        let paused = if r.pauses > 0 {
            format!(
                " (paused {} time(s), {:.1} s in all, while sites were frozen)",
                r.pauses, r.paused_seconds
            )
        } else {
            String::new()
        };
        format!(
            "{}: captured: {} parts written, {} kept from an earlier run; {:.1} MiB stored \
             ({:.1} MiB before compression) in {:.1} s{paused}",
            r.bundle,
            r.written.len(),
            r.skipped.len(),
            r.bytes as f64 / 1048576.0,
            r.raw_bytes as f64 / 1048576.0,
            r.seconds
        )
    }
}

pub(crate) fn url_file(field: &str, p: &Path) -> anyhow::Result<mysql_async::Opts> {
    let text = drivers::secret::read_secret_file(field, p)?;
    text.parse()
        .map_err(|_| anyhow::anyhow!("{field} {}: not a mysql:// URL", p.display()))
}

pub fn run(c: BundleCommand) -> anyhow::Result<i32> {
    let BundleCommand::Bundle(c) = c;
    match c {
        BundleCmd::Capture {
            site,
            wave,
            plan,
            verify_scratch_url_file,
            sites,
            journal,
            store,
            key,
            keep_days,
            max_rate,
            tar,
            dry_run,
            json,
        } => {
            let names = match (site, wave, plan) {
                (Some(s), _, _) => vec![s],
                (None, Some(w), Some(p)) => crate::cmd::cutover::wave::plan_sites(w, &p)?,
                _ => bail!("say which: a SITE, or --wave N --plan FILE"),
            };
            let job = CaptureJob {
                sites: &sites,
                journal: &journal,
                store: &store,
                key: &key,
                opts: CaptureOptions {
                    keep_days,
                    rate: (max_rate > 0).then_some(max_rate << 20),
                    tar_homes: tar,
                    ..Default::default()
                },
                verify_scratch_url_file: verify_scratch_url_file.as_deref(),
                only_live: wave.is_some(),
                dry_run,
                json,
                stderr: false,
            };
            job.run(&names)
        }
        BundleCmd::List { store, site, json } => {
            let st = store.open()?;
            let mut rows = Vec::new();
            for b in st.list(site.as_deref())? {
                let m = store::read_manifest(&*st, &b)?;
                rows.push(serde_json::json!({
                    "bundle": b.id(),
                    "complete": m.is_some(),
                    "switch_ms": b.switch_ms,
                    "expires_ms": m.as_ref().map(|m| m.0.expires_ms),
                    "bytes": st.size(&b)?,
                }));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no bundles in {}", st.describe());
            } else {
                for r in &rows {
                    println!(
                        "{}  {}  {} bytes  expires_ms {}",
                        r["bundle"].as_str().unwrap_or(""),
                        if r["complete"] == true {
                            "complete"
                        } else {
                            "INCOMPLETE"
                        },
                        r["bytes"],
                        r["expires_ms"]
                    );
                }
            }
            Ok(0)
        }
        BundleCmd::Show {
            bundle,
            store,
            json,
        } => {
            let st = store.open()?;
            let (m, _, _) = check::manifest(&*st, &BundleRef::parse(&bundle)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
                return Ok(0);
            }
            println!(
                "bundle {} (switch at {} ms, captured {} ms, expires {} ms)",
                m.id(),
                m.switch_ms,
                m.captured_ms,
                m.expires_ms
            );
            for d in &m.databases {
                println!(
                    "database {} ({} / {}): {} tables, checksums from {:?}, part {}",
                    d.name,
                    d.charset,
                    d.collation,
                    d.checksums.len(),
                    d.checksums_from,
                    d.part
                );
            }
            for h in &m.homes {
                println!(
                    "home {}: {} entries, {} bytes, manifest {}, tar {}",
                    h.path.display(),
                    h.files,
                    h.file_bytes,
                    h.manifest_part,
                    h.tar_part.as_deref().unwrap_or("(none)")
                );
            }
            for p in &m.parts {
                println!(
                    "part {} ({:?}): {} bytes, blake3 {}",
                    p.name, p.kind, p.bytes, p.blake3
                );
            }
            Ok(0)
        }
        BundleCmd::Verify {
            bundle,
            store,
            public_key,
            scratch_url_file,
            no_restore,
            dry_run,
            journal,
            json,
        } => {
            let st = store.open()?;
            let b = BundleRef::parse(&bundle)?;
            let public = sign::load_public(&public_key)?;
            if dry_run {
                return verify_dry_run(&*st, &b, &public, json);
            }
            let scratch = match (&scratch_url_file, no_restore) {
                (Some(f), false) => Some(url_file("--scratch-url-file", f)?),
                _ => None,
            };
            let mut j = journal
                .as_deref()
                .map(crate::cmd::open_existing)
                .transpose()?;
            let result = check::verify(&*st, &b, &public, scratch.as_ref());
            let (stage, error) = match &result {
                Ok(r) if r.ok && scratch.is_some() => (Stage::Verified, None),
                Ok(r) if r.ok => (Stage::Captured, None),
                Ok(r) => (Stage::Failed, Some(r.problems().join("; "))),
                Err(e) => (Stage::Failed, Some(e.to_string())),
            };
            if let Some(j) = j.as_mut() {
                job::record(&mut **j, &*st, &b, stage, error)?;
            }
            let r = result?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if r.ok {
                let restored: usize = r.databases.iter().map(|d| d.tables).sum();
                println!(
                    "{}: VERIFIED: signature, {} parts{}",
                    r.bundle,
                    r.parts_checked,
                    if scratch.is_some() {
                        format!(
                            ", {} databases restored ({restored} tables equal to the switch)",
                            r.databases.len()
                        )
                    } else {
                        " (dumps not restored: --no-restore)".into()
                    }
                );
            } else {
                println!("{}: FAILED", r.bundle);
                for p in r.problems() {
                    println!("  {p}");
                }
            }
            Ok(if r.ok { 0 } else { 1 })
        }
        BundleCmd::Restore {
            bundle,
            store,
            public_key,
            db,
            as_name,
            url_file: target,
            home,
            into,
            dry_run,
            json,
        } => {
            let st = store.open()?;
            let b = BundleRef::parse(&bundle)?;
            let public = sign::load_public(&public_key)?;
            if dry_run {
                let r = check::verify(&*st, &b, &public, None)?;
                if !r.ok {
                    bail!("{}: {}", r.bundle, r.problems().join("; "));
                }
                let what = restore_json(&r.bundle, &db, &as_name, &home, &into, true);
                if json {
                    println!("{}", serde_json::to_string_pretty(&what)?);
                    return Ok(0);
                }
                match (&db, &home) {
                    (Some(d), _) => println!(
                        "{}: intact; would restore database {d} as {}",
                        r.bundle,
                        as_name.as_deref().unwrap_or("?")
                    ),
                    (_, Some(h)) => println!(
                        "{}: intact; would restore home {} into {}",
                        r.bundle,
                        h.display(),
                        into.as_deref().unwrap_or(Path::new("?")).display()
                    ),
                    _ => {}
                }
                return Ok(0);
            }
            let what = restore_json(&b.id(), &db, &as_name, &home, &into, false);
            if let Some(d) = &db {
                let (as_name, target) = (as_name.context("--as")?, target.context("--url-file")?);
                let url = url_file("--url-file", &target)?;
                check::restore_db(&*st, &b, &public, d, &url, &as_name)?;
                if !json {
                    println!("{}: database {d} restored as {as_name}", b.id());
                }
            } else if let (Some(h), Some(into)) = (&home, &into) {
                let dir = check::restore_home(&*st, &b, &public, h, into)?;
                if !json {
                    println!(
                        "{}: home {} restored into {}",
                        b.id(),
                        h.display(),
                        dir.display()
                    );
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&what)?);
            }
            Ok(0)
        }
        BundleCmd::Expire {
            store,
            dry_run,
            now_ms,
            json,
        } => {
            let st = store.open()?;
            let now = match now_ms {
                Some(ms) => ms,
                None => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis() as i64,
            };
            let gone = store::expire(&*st, now, dry_run)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&gone)?);
            } else if gone.is_empty() {
                println!("nothing expired in {}", st.describe());
            } else {
                for g in &gone {
                    println!(
                        "{}: expired at {} ms: {} ({} bytes)",
                        g.bundle,
                        g.expires_ms,
                        if dry_run {
                            "would be deleted"
                        } else {
                            "deleted"
                        },
                        g.bytes
                    );
                }
            }
            Ok(0)
        }
    }
}

/// `bundle restore --json`: what was (or, in a dry run, would be) restored.
fn restore_json(
    bundle: &str,
    db: &Option<String>,
    as_name: &Option<String>,
    home: &Option<PathBuf>,
    into: &Option<PathBuf>,
    dry_run: bool,
) -> serde_json::Value {
    serde_json::json!({
        "bundle": bundle,
        "dry_run": dry_run,
        "database": db,
        "as": as_name,
        "home": home,
        "into": into,
    })
}

/// `bundle verify --dry-run`: the signature and every part checked (read only); what a
/// verification would restore. Exit 1 when the bundle is already not intact.
fn verify_dry_run(
    st: &dyn BundleStore,
    b: &BundleRef,
    public: &ed25519_dalek::VerifyingKey,
    json: bool,
) -> anyhow::Result<i32> {
    let r = check::verify(st, b, public, None)?;
    let (m, _, _) = check::manifest(st, b)?;
    let dbs: Vec<&str> = m.databases.iter().map(|d| d.name.as_str()).collect();
    if json {
        let v = serde_json::json!({
            "dry_run": true,
            "report": r,
            "would_restore": dbs,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if r.ok {
        println!(
            "{}: dry run: signature and {} parts intact; a verification would restore {} \
             database(s) {:?} into scratch databases, compare them with the switch's checksums \
             and record the result in the journal",
            r.bundle,
            r.parts_checked,
            dbs.len(),
            dbs
        );
    } else {
        println!("{}: FAILED (dry run)", r.bundle);
        for p in r.problems() {
            println!("  {p}");
        }
    }
    Ok(if r.ok { 0 } else { 1 })
}

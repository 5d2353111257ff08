//! `migrator bundle capture|list|show|verify|restore|expire`: consistency-point bundles
//! ([`migrator::bundle`]), a site's databases and files as they were at the switch.

use anyhow::{bail, Context};
use clap::Subcommand;
use migrator::bundle::capture::{self, CaptureOptions};
use migrator::bundle::check;
use migrator::bundle::sign;
use migrator::bundle::state::{self, BundleState, Stage};
use migrator::bundle::store::{self, BundleRef, BundleStore, LocalStore};
use migrator::journal::{JournalStore, SiteState};
use migrator::site_spec::SpecFile;
use std::path::{Path, PathBuf};

const ABOUT_HELP: &str = "\
A bundle is a site's state at the instant its writes moved to the new side: per database a
compressed dump restorable with the stock client, per home the file manifest (paths, sizes,
modes, BLAKE3) and optionally a tar, and a manifest with the switch instant, the table
checksums the cutover journaled at the switch, the size and BLAKE3 of every part, signed with
an ed25519 key. It is captured from the OLD side after the switch (nothing writes there any
more), so the freeze is not made longer.

The life of a bundle:
  migrator bundle capture shop --sites S --journal J --store /srv/bundles --key K
  migrator bundle verify shop/1733450000000 --store /srv/bundles --public-key K.pub \\
      --scratch-url-file /etc/migrator/scratch.url --journal J
  migrator finalize shop ...          (refused until the bundle is verified)
  migrator bundle expire --store /srv/bundles        (daily: deletes expired bundles)

By hand, without the migrator:
  zstd -dc db-shop_db-*.sql.zst | mariadb NEWNAME   (after CREATE DATABASE NEWNAME)
  zstd -dc home-*.tar.zst | tar -x -C DIR";

const CAPTURE_HELP: &str = "\
Captures the site's bundle from its old side. The site must be live (or finalized): the
journal's last finished `switch` names the bundle (SITE/SWITCH_MS). Run it after the wave,
any time before the old side is released; it reads the old SQL server (mariadb-dump,
--single-transaction) and the old homes, at most --max-rate MiB/s.

Killed or failed: run it again. Parts finished before are re-hashed and kept; only the part
being written is redone. A complete bundle is never rewritten (`already complete`).

The signing key (--key) is created when missing (mode 0600) with its public key next to it
(KEY.pub): give that file to whoever verifies bundles.

Exit codes: 0 captured (or already complete), 1 refused or failed (the journal records the
bundle as failed, with the reason), 2 the command itself failed.";

const VERIFY_HELP: &str = "\
Checks, in order: the manifest's signature against --public-key; every part's size and
BLAKE3 (an altered or missing part is named); then, unless --no-restore, each database dump
is restored into a scratch database on the --scratch-url-file server (named
bundle_verify_<db>_<random>, dropped afterwards) and every table's checksum compared with the
checksum journaled at the switch.

With --journal the site's bundle state becomes `verified` or `failed`: `migrator finalize`
refuses a site whose bundle is not verified.

Exit codes: 0 verified, 1 a problem (each printed), 2 the command itself failed.";

const RESTORE_HELP: &str = "\
Recreates one database, under a name you choose, on the server of --url-file:
  migrator bundle restore shop/1733450000000 --store S --public-key K.pub \\
      --db shop_db --as shop_db_at_switch --url-file /etc/migrator/old.url
or one home (captured with --tar) into a directory that is missing or empty:
  migrator bundle restore shop/1733450000000 --store S --public-key K.pub \\
      --home /homez.1/shop --into /srv/restore/shop

Never overwrites: an existing database name or a non-empty directory is refused. The
signature and the part's hash are checked first; a tampered bundle restores nothing.";

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
        /// The bundle directory.
        #[arg(long, value_name = "DIR", env = "MIGRATOR_BUNDLE_STORE")]
        store: PathBuf,
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
    /// List the bundles of a store (complete or not, expiry, size).
    List {
        #[arg(long, value_name = "DIR", env = "MIGRATOR_BUNDLE_STORE")]
        store: PathBuf,
        /// Only this site's.
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One bundle's manifest: switch instant, databases and their checksums, homes, parts.
    Show {
        /// SITE/SWITCH_MS, as `bundle list` prints.
        bundle: String,
        #[arg(long, value_name = "DIR", env = "MIGRATOR_BUNDLE_STORE")]
        store: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check a bundle: signature, every part, dumps restored and compared with the switch.
    #[command(after_long_help = VERIFY_HELP)]
    Verify {
        bundle: String,
        #[arg(long, value_name = "DIR", env = "MIGRATOR_BUNDLE_STORE")]
        store: PathBuf,
        /// The signer's public key (KEY.pub).
        #[arg(long, value_name = "FILE", env = "MIGRATOR_BUNDLE_PUBLIC_KEY")]
        public_key: PathBuf,
        /// A 0600 file with mysql://user:pass@host:port of a server for scratch databases.
        #[arg(long, value_name = "FILE", required_unless_present = "no_restore")]
        scratch_url_file: Option<PathBuf>,
        /// Check the signature and the parts only.
        #[arg(long)]
        no_restore: bool,
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
        #[arg(long, value_name = "DIR", env = "MIGRATOR_BUNDLE_STORE")]
        store: PathBuf,
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
    },
    /// Delete the bundles whose retention (--keep-days at capture) has ended.
    Expire {
        #[arg(long, value_name = "DIR", env = "MIGRATOR_BUNDLE_STORE")]
        store: PathBuf,
        /// Say which would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
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
    pub store: &'a Path,
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
        let st = LocalStore::new(self.store);
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
                        self.store.display(),
                        spec.databases,
                        spec.homes.iter().map(|h| &h.old).collect::<Vec<_>>(),
                        if self.opts.tar_homes { " (with tars)" } else { "" },
                        self.opts.rate.map(|r| (r >> 20).to_string()).unwrap_or("unlimited".into()),
                    ),
                    None => println!("{n}: no finished switch in the journal: nothing to capture"),
                }
                continue;
            };
            let r = match capture::capture(&mut *j, spec, &st, key, &self.opts) {
                Ok(r) => r,
                Err(e) => {
                    failed += 1;
                    eprintln!("{n}: capture FAILED: {e}");
                    continue;
                }
            };
            if !self.json {
                self.say(&capture_line(&r));
            }
            if let Some(url) = &scratch {
                let b = BundleRef::parse(&r.bundle)?;
                let v = check::verify(&st, &b, &key.verifying_key(), Some(url));
                let (stage, error) = match &v {
                    Ok(v) if v.ok => (Stage::Verified, None),
                    Ok(v) => (Stage::Failed, Some(v.problems().join("; "))),
                    Err(e) => (Stage::Failed, Some(e.to_string())),
                };
                record(&mut *j, &st, &b, stage, error.clone())?;
                match error {
                    None => self.say(&format!("{}: VERIFIED", r.bundle)),
                    Some(e) => {
                        failed += 1;
                        eprintln!("{}: verification FAILED: {e}", r.bundle);
                    }
                }
            }
            reports.push(r);
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&reports)?);
        }
        Ok(if failed == 0 { 0 } else { 1 })
    }

    fn say(&self, line: &str) {
        if self.stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

fn capture_line(r: &capture::CaptureReport) -> String {
    if r.already {
        format!("{}: already complete ({} bytes)", r.bundle, r.bytes)
    } else {
        format!(
            "{}: captured: {} parts written, {} kept from an earlier run; {:.1} MiB stored \
             ({:.1} MiB before compression) in {:.1} s",
            r.bundle,
            r.written.len(),
            r.skipped.len(),
            r.bytes as f64 / 1048576.0,
            r.raw_bytes as f64 / 1048576.0,
            r.seconds
        )
    }
}

fn url_file(field: &str, p: &Path) -> anyhow::Result<mysql_async::Opts> {
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
            let st = LocalStore::new(&store);
            let mut rows = Vec::new();
            for b in st.list(site.as_deref())? {
                let m = store::read_manifest(&st, &b)?;
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
                println!("no bundles in {}", store.display());
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
            let st = LocalStore::new(&store);
            let (m, _, _) = check::manifest(&st, &BundleRef::parse(&bundle)?)?;
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
            journal,
            json,
        } => {
            let st = LocalStore::new(&store);
            let b = BundleRef::parse(&bundle)?;
            let public = sign::load_public(&public_key)?;
            let scratch = match (&scratch_url_file, no_restore) {
                (Some(f), false) => Some(url_file("--scratch-url-file", f)?),
                _ => None,
            };
            let mut j = journal
                .as_deref()
                .map(crate::cmd::open_existing)
                .transpose()?;
            let result = check::verify(&st, &b, &public, scratch.as_ref());
            let (stage, error) = match &result {
                Ok(r) if r.ok && scratch.is_some() => (Stage::Verified, None),
                Ok(r) if r.ok => (Stage::Captured, None),
                Ok(r) => (Stage::Failed, Some(r.problems().join("; "))),
                Err(e) => (Stage::Failed, Some(e.to_string())),
            };
            if let Some(j) = j.as_mut() {
                record(&mut **j, &st, &b, stage, error)?;
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
        } => {
            let st = LocalStore::new(&store);
            let b = BundleRef::parse(&bundle)?;
            let public = sign::load_public(&public_key)?;
            if dry_run {
                let r = check::verify(&st, &b, &public, None)?;
                if !r.ok {
                    bail!("{}: {}", r.bundle, r.problems().join("; "));
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
            if let Some(d) = db {
                let (as_name, target) = (as_name.context("--as")?, target.context("--url-file")?);
                let url = url_file("--url-file", &target)?;
                check::restore_db(&st, &b, &public, &d, &url, &as_name)?;
                println!("{}: database {d} restored as {as_name}", b.id());
            } else if let (Some(h), Some(into)) = (home, into) {
                let dir = check::restore_home(&st, &b, &public, &h, &into)?;
                println!(
                    "{}: home {} restored into {}",
                    b.id(),
                    h.display(),
                    dir.display()
                );
            }
            Ok(0)
        }
        BundleCmd::Expire {
            store,
            dry_run,
            json,
        } => {
            let st = LocalStore::new(&store);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64;
            let gone = store::expire(&st, now, dry_run)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&gone)?);
            } else if gone.is_empty() {
                println!("nothing expired in {}", store.display());
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

/// Records a verification's result as the site's bundle state, when `b` is the bundle of the
/// site's last switch (an older bundle's result says nothing about the current one).
fn record(
    j: &mut dyn JournalStore,
    st: &dyn BundleStore,
    b: &BundleRef,
    stage: Stage,
    error: Option<String>,
) -> anyhow::Result<()> {
    if capture::bundle_of(j, &b.site)?.as_ref() != Some(b) {
        return Ok(());
    }
    let s = BundleState {
        stage,
        bundle: b.id(),
        store: st.describe(),
        bytes: st.size(b)?,
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64,
        error,
    };
    state::set(j, &b.site, &s)?;
    Ok(())
}

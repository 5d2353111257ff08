//! `migrator sync-files`, `migrator verify` and `migrator receive` (the far side over SSH).

use super::progress::Reporter;
use anyhow::Context;
use clap::{Args, Subcommand};
use migrator::files::owners::{MappedOwners, OwnerMap};
use migrator::files::remote::{SshDestination, SshOptions, SshTarget};
use migrator::files::sync::{self, Destination, LocalDestination, PassOptions};
use migrator::journal::{open_journal, JournalLocation};
use std::path::PathBuf;

/// Both sides of a site's home.
#[derive(Args, Debug, Clone)]
pub struct FileSides {
    /// The site's home on the old side, a local path (the filer mounted on this host).
    #[arg(long, value_name = "PATH")]
    pub src: Option<PathBuf>,
    /// The home on the new side: a local path, or ssh://[user@]host[:port]/path.
    #[arg(long, value_name = "PATH|URL")]
    pub dst: Option<String>,
    /// known_hosts file the SSH host key must match (unknown or changed key = refusal).
    #[arg(long, value_name = "FILE", default_value = "~/.ssh/known_hosts")]
    pub known_hosts: String,
    /// Private key for SSH (must be 0600).
    #[arg(long, value_name = "FILE", default_value = "~/.ssh/id_ed25519")]
    pub identity: String,
    /// The `migrator` binary on the far host.
    #[arg(long, value_name = "CMD", default_value = "migrator")]
    pub remote_migrator: String,
    /// Compare content by BLAKE3 too (reads every file on both sides).
    #[arg(long)]
    pub checksum: bool,
    /// Map owners to the new side's ids: lines `uid SOURCE DESTINATION` / `gid SOURCE
    /// DESTINATION`; an owner the map does not name refuses the pass before anything is
    /// written. Without it, uid and gid are copied as they are.
    #[arg(long, value_name = "FILE")]
    pub owner_map: Option<PathBuf>,
}

fn expand(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

fn current_user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "root".to_string())
}

impl FileSides {
    pub fn configured(&self) -> bool {
        self.src.is_some() || self.dst.is_some()
    }

    pub fn src(&self) -> anyhow::Result<PathBuf> {
        self.src.clone().context("--src PATH is required for files")
    }

    /// Opens the destination: local directory or SSH connection.
    pub fn destination(&self) -> anyhow::Result<Box<dyn Destination>> {
        let dst = self
            .dst
            .as_deref()
            .context("--dst PATH|URL is required for files")?;
        // Read before connecting: a bad map is refused before anything happens.
        let map = self.owner_map.as_deref().map(OwnerMap::load).transpose()?;
        let inner: Box<dyn Destination> = if dst.starts_with("ssh://") {
            let target = SshTarget::parse(dst, &current_user())?;
            let opts = SshOptions {
                known_hosts: expand(&self.known_hosts),
                identity: expand(&self.identity),
                remote_migrator: self.remote_migrator.clone(),
            };
            Box::new(SshDestination::connect(&target, &opts)?)
        } else {
            Box::new(LocalDestination::new(&PathBuf::from(dst)))
        };
        Ok(match map {
            Some(map) => Box::new(MappedOwners { inner, map }),
            None => inner,
        })
    }
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum FilesCommand {
    /// Copy a site's home to the new side: only differences move; deletions propagate.
    /// Runs under the site's lease (refused while another migrator holds the site, or once
    /// the site switched).
    SyncFiles {
        /// Site name (the key in the journal).
        site: String,
        #[command(flatten)]
        sides: FileSides,
        /// The journal: its file (SQLite), or mysql://user@host:port/db?password_file=PATH
        /// (MariaDB; the password file must be mode 0600). Created if missing.
        #[arg(long, value_name = "FILE|URL")]
        journal: PathBuf,
        /// Print what would be copied (files, bytes), change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Walk the destination even if the journal's cached manifest of it is still valid
        /// (catches files edited in place on the destination behind the migrator's back).
        #[arg(long)]
        full: bool,
        /// Sync a source that holds nothing but its root over a destination that holds files
        /// (refused by default: an unmounted filer leaves an empty mount point, and the pass
        /// would delete the whole destination).
        #[arg(long)]
        allow_empty_source: bool,
        /// End the pass with the destination durable (`syncfs`). Without it a local pass, like
        /// rsync, leaves the written data to the kernel's writeback and records this host's
        /// boot id: its cached manifest is then trusted only until the next reboot, so after a
        /// crash the next pass walks the destination and rewrites what was lost. Use it for the
        /// last pass before switching a site by hand (the cutover engine's final pass always
        /// syncs). SSH destinations always sync.
        #[arg(long)]
        sync: bool,
        /// Print a JSON summary on stdout.
        #[arg(long)]
        json: bool,
        /// The socket of `migrator watch` running where the source's writes land: the pass
        /// re-stats only what changed since the last committed pass instead of walking every
        /// file. Missing, silent or with a broken chain: a warning and a full walk.
        #[arg(long, value_name = "SOCKET")]
        feed: Option<PathBuf>,
        /// The source root as `migrator watch` was given it, when the watcher runs on a filer
        /// that exports the home under another path than this host's mount (default: --src).
        #[arg(long, value_name = "PATH", requires = "feed")]
        feed_root: Option<PathBuf>,
    },
    /// Serve a sync on this host (started by `sync-files` over SSH; not for interactive use).
    #[command(hide = true)]
    Receive {
        #[arg(long)]
        root: PathBuf,
    },
}

pub fn run(command: FilesCommand) -> anyhow::Result<i32> {
    match command {
        FilesCommand::SyncFiles {
            site,
            sides,
            journal,
            dry_run,
            full,
            allow_empty_source,
            sync,
            json,
            feed,
            feed_root,
        } => {
            let src = sides.src()?;
            // The site's lease for the whole pass (a dry run writes nothing and takes none).
            let held = if dry_run {
                None
            } else {
                Some(super::site_lease::hold(&journal, &site, "sync-files")?)
            };
            let mut dst = sides.destination()?;
            let mut journal = open_journal(&JournalLocation::parse(&journal)?)?;
            let reporter = Reporter::new("files", json);
            let progress = |p: sync::Progress| {
                reporter.update(p.files_done, p.files_total, p.bytes_done, p.bytes_total)
            };
            let opts = PassOptions {
                checksum: sides.checksum,
                dry_run,
                full,
                allow_empty_source,
                defer_sync: !sync,
            };
            let feed = feed.map(|socket| sync::FeedOptions {
                socket,
                root: feed_root,
                timeout: migrator::files::feed::DEFAULT_TIMEOUT,
            });
            let report = sync::run_pass_journaled_with_feed(
                journal.as_mut(),
                &site,
                &src,
                dst.as_mut(),
                opts,
                feed.as_ref(),
                &progress,
            )
            .with_context(|| format!("sync-files {site}"))?;
            if let Some(h) = held {
                h.release()?;
            }
            reporter.finish();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for w in &report.warnings {
                    eprintln!("warning: {w}");
                }
                for line in &report.would_change {
                    println!("would {line}");
                }
                println!(
                    "{site}: {}{} files, {} bytes written, {} deleted, {} metadata-only, \
                     source {} entries / {} bytes, {:.2}s{}",
                    if dry_run { "DRY RUN: would have " } else { "" },
                    report.files_written,
                    report.bytes_written,
                    report.deleted,
                    report.metadata_only,
                    report.source_entries,
                    report.source_bytes,
                    report.seconds,
                    if report.synced { ", synced" } else { "" }
                );
            }
            Ok(0)
        }
        FilesCommand::Receive { root } => {
            migrator::files::receive::serve(
                &root,
                std::io::stdin().lock(),
                std::io::stdout().lock(),
            )
            .with_context(|| format!("receive into {}", root.display()))?;
            Ok(0)
        }
    }
}

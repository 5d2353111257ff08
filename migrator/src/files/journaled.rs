//! A sync pass recorded in the journal, with its two shortcuts: the cached destination manifest
//! ([`crate::files::dest_cache`]) and the change feed ([`crate::files::feed`]) in place of the source
//! walk.
//!
//! Order of a pass with `--feed`:
//! 1. checkpoint the feed, before anything is walked (a change after it is in the next epoch);
//! 2. read the cache head and check the destination's directory stamps;
//! 3. if the checkpoint continues the last committed pass's chain and nothing is dirty and the
//!    stamps hold: the pass is done, without decoding the cached manifest at all;
//! 4. otherwise the source manifest is the cached one patched with fresh `lstat`s of the dirty
//!    entries ([`crate::files::feed_patch`]), or a full walk when the chain is broken;
//! 5. on commit only: the cache and the feed record (`feed_id`, `seq`) are written.
//!
//! `--full` and `--checksum` walk both sides (they still checkpoint, so the next pass can use
//! the feed again); a dry run takes no checkpoint (it would break the next pass's chain).

use crate::files::dest_cache::{self, CacheHead, DestCache};
use crate::files::feed::{self, ChainBreak, Checkpoint, FeedRecord};
use crate::files::feed_patch::{self, Patched};
use crate::files::manifest::Manifest;
use crate::files::sync::{
    run_pass_with, Destination, PassOptions, PassReport, Progress, SyncCheckpoint, SyncError,
};
use crate::journal::{JournalStore, StepOutcome};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the change feed of the source is served (`migrator watch --socket`).
#[derive(Debug, Clone)]
pub struct FeedOptions {
    pub socket: PathBuf,
    /// The source root as the watcher knows it (`None`: the source path, resolved here; give
    /// it when the watcher runs on a filer that exports the home under another path).
    pub root: Option<PathBuf>,
    /// A watcher silent this long is treated as absent (a warning, then a full walk).
    pub timeout: Duration,
}

/// A pass recorded in the journal: the step is written before it runs and finished (with
/// bytes and the manifest digest) only after the destination finished (and synced, unless the
/// pass defers that: `PassOptions::defer_sync`); the checkpoint says which source manifest the
/// destination was last brought to.
pub fn run_pass_journaled(
    journal: &mut dyn JournalStore,
    site: &str,
    src_root: &Path,
    dst: &mut dyn Destination,
    opts: PassOptions,
    progress: &dyn Fn(Progress),
) -> Result<PassReport, SyncError> {
    run_pass_journaled_with_feed(journal, site, src_root, dst, opts, None, progress)
}

/// Reads a feed checkpoint, or says why there is none.
fn take_checkpoint(
    feed: Option<&FeedOptions>,
    src_root: &Path,
    consumer: &str,
    opts: PassOptions,
) -> (Option<Checkpoint>, Option<String>, Option<String>) {
    let Some(f) = feed else {
        return (None, None, None);
    };
    if opts.dry_run {
        let why = "not used: a dry run takes no checkpoint (it would break the next pass's chain)";
        return (None, Some(why.into()), None);
    }
    let root = f.root.clone().unwrap_or_else(|| feed::local_root(src_root));
    match feed::checkpoint(&f.socket, &root, consumer, f.timeout) {
        Ok(c) => (Some(c), None, None),
        Err(e) => (
            None,
            Some(format!("not used: {e}")),
            Some(format!("{e}; walking the whole source instead")),
        ),
    }
}

/// Why a pass walks the whole source although the feed answered (the pass report's note).
#[derive(Debug, thiserror::Error)]
enum FeedNotUsed {
    #[error("--full/--checksum walk the whole source")]
    WalkAll,
    #[error("no cached manifest of the last committed pass")]
    NoCachedManifest,
    #[error(transparent)]
    ChainBroken(#[from] ChainBreak),
    #[error("the feed sent a damaged path {0:?}")]
    DamagedPath(String),
}

fn dirty_paths(cp: &Checkpoint) -> Result<Vec<(Vec<u8>, bool)>, FeedNotUsed> {
    cp.dirty
        .iter()
        .map(|d| {
            d.path_bytes()
                .map(|p| (p, d.recursive))
                .ok_or_else(|| FeedNotUsed::DamagedPath(d.path.clone()))
        })
        .collect()
}

/// [`run_pass_journaled`] with an optional change feed of the source.
pub fn run_pass_journaled_with_feed(
    journal: &mut dyn JournalStore,
    site: &str,
    src_root: &Path,
    dst: &mut dyn Destination,
    opts: PassOptions,
    feed: Option<&FeedOptions>,
    progress: &dyn Fn(Progress),
) -> Result<PassReport, SyncError> {
    let t0 = std::time::Instant::now();
    // Before the feed's "nothing changed" shortcut too: a vanished source is never a success.
    crate::files::sync::check_source_root(src_root)?;
    let key = dest_cache::key(site, src_root, &dst.identity());
    let (cp, mut note, warning) = take_checkpoint(feed, src_root, &feed::consumer(&key), opts);
    let (head_key, feed_key) = (dest_cache::head_key(&key), dest_cache::feed_key(&key));
    let walk_all = opts.checksum || opts.full;
    let stored = journal
        .cache(&head_key)?
        .and_then(|b| dest_cache::decode_head(&b));
    // Rows to drop before applying: the stored head, trusted or not.
    let had_cache = stored.is_some();
    let boot = dest_cache::boot_id();
    let head = stored.filter(|h| h.trusted(opts.defer_sync, boot.as_deref()));
    let stamps_ok = match &head {
        Some(h) if !walk_all => dst.dir_stamps(&h.dirs, false)? == Some(h.stamps.clone()),
        _ => false,
    };
    // The dirty entries, when the checkpoint continues the last committed pass's chain.
    let mut dirty = None;
    if let Some(c) = &cp {
        let usable = if walk_all {
            Err(FeedNotUsed::WalkAll)
        } else if head.is_none() {
            Err(FeedNotUsed::NoCachedManifest)
        } else {
            let prev = journal
                .cache(&feed_key)?
                .and_then(|b| serde_json::from_slice::<FeedRecord>(&b).ok());
            feed::continues(prev.as_ref(), c)
                .map_err(FeedNotUsed::from)
                .and_then(|()| dirty_paths(c))
        };
        match usable {
            Ok(d) => dirty = Some(d),
            Err(why) => note = Some(format!("not used: {why}; walked the whole source")),
        }
    }
    let commit_feed = |journal: &mut dyn JournalStore, cache_ok: bool| match &cp {
        Some(c) if cache_ok => {
            let rec = FeedRecord {
                feed_id: c.feed_id.clone(),
                seq: c.seq,
            };
            let json = serde_json::to_vec(&rec).expect("feed record serializes");
            journal.put_cache(&feed_key, &json)
        }
        _ => journal.drop_cache(&feed_key),
    };
    if let (Some(d), Some(h), true, false) = (&dirty, &head, stamps_ok, opts.dry_run) {
        if d.is_empty() {
            let r = nothing_changed(h, t0);
            let id = journal.begin_step(site, "sync-files")?;
            commit(journal, id, site, &r)?;
            commit_feed(journal, true)?;
            return Ok(r);
        }
    }
    // The cached manifest, when the stamps or the feed can use it.
    let cached: Option<Manifest> = match &head {
        Some(h) if stamps_ok || dirty.is_some() => journal
            .cache(&key)?
            .and_then(|b| dest_cache::decode_manifest(h, &b)),
        _ => None,
    };
    let (dest_cached, base) = match (cached, stamps_ok, dirty.is_some()) {
        (Some(m), true, true) => (Some(m.clone()), Some(m)),
        (Some(m), true, false) => (Some(m), None),
        (Some(m), false, true) => (None, Some(m)),
        _ => (None, None),
    };
    let mut source = None;
    match (base, &dirty) {
        (Some(base), Some(d)) => match feed_patch::patch(src_root, base, d) {
            Ok(Patched::Manifest { manifest, statted }) => {
                note = Some(format!(
                    "used: {} dirty entries, {statted} stat'ed",
                    d.len()
                ));
                source = Some((manifest, statted));
            }
            Ok(Patched::NeedsWalk(why)) => {
                note = Some(format!("not used: {why}; walked the whole source"))
            }
            Err(e) => return Err(SyncError::SourceWalk(e)),
        },
        (None, Some(_)) => note = Some("not used: the cached manifest is damaged".into()),
        _ => {}
    }
    let finish = |mut r: PassReport| {
        r.feed = note.clone();
        r.warnings.extend(warning.clone());
        r.seconds = t0.elapsed().as_secs_f64();
        r
    };
    if opts.dry_run {
        return run_pass_with(
            src_root,
            dst,
            opts,
            progress,
            dest_cached,
            source,
            &mut || Ok(()),
        )
        .map(|(r, _)| finish(r));
    }
    let id = journal.begin_step(site, "sync-files")?;
    let mut drop_cache = || -> Result<(), SyncError> {
        if had_cache {
            // The head first: without it the manifest row is never used.
            journal.drop_cache(&head_key)?;
            journal.drop_cache(&key)?;
        }
        Ok(())
    };
    let outcome = run_pass_with(
        src_root,
        dst,
        opts,
        progress,
        dest_cached,
        source,
        &mut drop_cache,
    );
    match outcome {
        Ok((r, src)) => {
            let r = finish(r);
            commit(journal, id, site, &r)?;
            // A cached pass that applied nothing to a source equal to the cache left it valid.
            // Its warnings too: the digest does not cover them, and a later "nothing changed"
            // pass reports the cached ones.
            let unchanged = r.destination_cached
                && r.operations == 0
                && head.as_ref().is_some_and(|h| {
                    h.digest == r.manifest_digest && same(&h.warnings, &src.warnings)
                });
            let mut cache_ok = unchanged;
            // Written durable, or deferred under a known boot id (else not cached at all).
            let unsynced_boot = match (r.synced, &boot) {
                (true, _) => Some(None),
                (false, Some(b)) => Some(Some(b.clone())),
                (false, None) => None,
            };
            if let (false, 0, Some(unsynced_boot)) = (unchanged, r.apply_warnings, unsynced_boot) {
                let dirs = dest_cache::dirs(&src);
                if let Some(stamps) = dst.dir_stamps(&dirs, true)? {
                    let (head, blob) = dest_cache::encode(&DestCache {
                        manifest: src,
                        stamps,
                        unsynced_boot,
                    });
                    journal.put_cache(&key, &blob)?;
                    journal.put_cache(&head_key, &head)?;
                    cache_ok = true;
                }
            }
            commit_feed(journal, cache_ok)?;
            Ok(r)
        }
        Err(e) => {
            journal.fail_step(id, &e.to_string())?;
            Err(e)
        }
    }
}

/// The same warnings, in any order.
fn same(a: &[String], b: &[String]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

/// The report of a pass the feed and the stamps proved empty.
fn nothing_changed(h: &CacheHead, t0: std::time::Instant) -> PassReport {
    PassReport {
        source_entries: h.entries,
        source_bytes: h.bytes,
        manifest_digest: h.digest.clone(),
        warnings: h.warnings.clone(),
        destination_cached: true,
        source_walked: false,
        source_entries_statted: 0,
        feed: Some("used: nothing changed".into()),
        synced: h.unsynced_boot.is_none(),
        seconds: t0.elapsed().as_secs_f64(),
        ..Default::default()
    }
}

/// Finishes the step and records which manifest the destination now holds.
fn commit(
    journal: &mut dyn JournalStore,
    id: i64,
    site: &str,
    r: &PassReport,
) -> Result<(), SyncError> {
    journal.finish_step(
        id,
        &StepOutcome {
            bytes: r.bytes_written,
            checksum: Some(r.manifest_digest.clone()),
        },
    )?;
    let saved = SyncCheckpoint {
        manifest_digest: r.manifest_digest.clone(),
        files_written: r.files_written,
        bytes_written: r.bytes_written,
    };
    let json = serde_json::to_string(&saved).expect("checkpoint serializes");
    journal.put_checkpoint_raw(SyncCheckpoint::SCOPE, site, &json)?;
    Ok(())
}

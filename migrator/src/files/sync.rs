//! File sync: one pass = walk both sides, diff the manifests, move only the differences.
//!
//! A pass turns the diff into ordered operations ([`plan`]): leftover temporaries and deletions
//! first, then directories (parents first), file and symlink writes (parallel), hard links
//! (after their leader is in place), and last the metadata of changed entries and directories,
//! deepest first, so writing a child does not disturb its parent's mtime afterwards.
//! A [`Destination`] applies them: [`LocalDestination`] in-process, or the SSH destination
//! (`remote.rs`) streaming batches to `migrator receive` on the far side.
//!
//! Resume: every file lands under its final name only complete (temporary name + rename), so
//! after a kill the next pass's diff sees exactly the committed files and redoes nothing else.

use crate::files::apply::{Applied, Applier, ApplyError, Data, Meta, Op, SourceFile};
use crate::files::beneath::Tree;
pub use crate::files::journaled::{run_pass_journaled, run_pass_journaled_with_feed, FeedOptions};
pub use guards::check_source_root;
use guards::{check_not_emptied, check_source_manifest};

mod guards;
use crate::files::manifest::{self, Change, Entry, Kind, Manifest, ManifestError, WalkOptions};
use crate::files::stamps::{self, DirStamp};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("source: {0}")]
    SourceWalk(#[source] ManifestError),
    /// The source root is missing or not a directory (an unmounted filer, a home moved aside):
    /// never synced as an empty home, which would delete the whole destination.
    #[error(
        "source {path}: {why}; refusing to sync (an empty source would delete the destination)"
    )]
    SourceRoot { path: PathBuf, why: String },
    #[error("destination: {0}")]
    DestinationWalk(#[source] ManifestError),
    #[error("destination: {0}")]
    Apply(#[from] ApplyError),
    #[error("reading source file {path}: {source}")]
    ReadSource {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("remote destination: {0}")]
    Remote(String),
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    /// An owner the operator's map does not name: nothing is written rather than a wrong uid.
    #[error(
        "{}: owner not in the owner map {}: {entries}; add a line `uid SOURCE DESTINATION` \
         (or `gid …`) for it; nothing was written",
        root.display(),
        map.display()
    )]
    UnmappedOwner {
        root: PathBuf,
        map: PathBuf,
        entries: String,
    },
}

/// The far side of a sync.
pub trait Destination: Send {
    /// Walks the destination (no escape check: the destination is ours).
    fn manifest(&mut self, checksum: bool) -> Result<Manifest, SyncError>;
    /// Sends or applies one batch. Remote destinations may pipeline: errors can surface on a
    /// later call or on [`Destination::finish`].
    fn apply(&mut self, ops: Vec<Op>) -> Result<(), SyncError>;
    /// Waits for everything sent and reports the totals; `sync`: also makes it durable
    /// (destinations that cannot defer that, see [`Destination::defers_sync`], always do).
    fn finish(&mut self, sync: bool) -> Result<Applied, SyncError>;
    /// Whether [`Destination::finish`] may leave durability to the kernel's writeback: only
    /// where this host's boot id tells whether unsynced writes survived (local file systems).
    fn defers_sync(&self) -> bool {
        false
    }
    /// Whether ownership is preserved there (so uid/gid are compared).
    fn sets_owner(&self) -> bool;
    /// Refuses a source manifest this destination cannot take as it is (an owner its map
    /// does not name: [`crate::files::owners`]), before anything is applied.
    fn check_source(&self, _src_root: &Path, _src: &Manifest) -> Result<(), SyncError> {
        Ok(())
    }
    /// Names this destination (host and path): the key of its cached manifest.
    fn identity(&self) -> String;
    /// Stamps of these directories (`dest_cache`), `settled` past the racy window; `None`
    /// when this destination cannot tell, and then every pass walks it.
    fn dir_stamps(
        &mut self,
        dirs: &[Vec<u8>],
        settled: bool,
    ) -> Result<Option<Vec<DirStamp>>, SyncError>;
}

/// A destination directory on this host (a mounted filer).
pub struct LocalDestination {
    applier: Applier,
    total: Applied,
}

impl LocalDestination {
    pub fn new(root: &Path) -> LocalDestination {
        LocalDestination {
            applier: Applier::new(root),
            total: Applied::default(),
        }
    }
}

impl Destination for LocalDestination {
    fn manifest(&mut self, checksum: bool) -> Result<Manifest, SyncError> {
        let opts = WalkOptions {
            checksum,
            refuse_escaping_symlinks: false,
            leftovers: true,
        };
        manifest::build(self.applier.root(), &opts).map_err(SyncError::DestinationWalk)
    }
    fn apply(&mut self, ops: Vec<Op>) -> Result<(), SyncError> {
        let a = self.applier.apply(&ops)?;
        self.total.bytes += a.bytes;
        self.total.files += a.files;
        self.total.warnings.extend(a.warnings);
        Ok(())
    }
    fn finish(&mut self, sync: bool) -> Result<Applied, SyncError> {
        if sync {
            self.applier.sync()?;
        } else {
            self.applier.remove_kept()?;
        }
        Ok(std::mem::take(&mut self.total))
    }
    fn defers_sync(&self) -> bool {
        true
    }
    fn sets_owner(&self) -> bool {
        self.applier.sets_owner()
    }
    fn identity(&self) -> String {
        self.applier.root().display().to_string()
    }
    fn dir_stamps(
        &mut self,
        dirs: &[Vec<u8>],
        settled: bool,
    ) -> Result<Option<Vec<DirStamp>>, SyncError> {
        let root = self.applier.root();
        Ok(Some(if settled {
            stamps::settled_stamps(root, dirs)
        } else {
            stamps::current_stamps(root, dirs)
        }))
    }
}

/// The operations of one pass plus what they amount to.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// Files (and symlinks) to write, bytes of file content to move.
    pub write_files: u64,
    pub write_bytes: u64,
    pub deletes: u64,
    pub metadata_only: u64,
    pub changes: Vec<Change>,
}

fn parent(p: &[u8]) -> Option<&[u8]> {
    if p.is_empty() {
        return None;
    }
    Some(match p.iter().rposition(|&b| b == b'/') {
        Some(i) => &p[..i],
        None => &p[..0],
    })
}

fn is_under(p: &[u8], dir: &[u8]) -> bool {
    p.len() > dir.len() && p.starts_with(dir) && p[dir.len()] == b'/'
}

/// Turns a diff into ordered operations. `src_root` is where file content is read from.
pub fn plan(src_root: &Arc<Tree>, src: &Manifest, dst: &Manifest, owners: bool) -> Plan {
    let changes = manifest::diff(src, dst, owners);
    let mut p = Plan::default();
    let mut deletes = Vec::new();
    let mut mkdirs = Vec::new();
    let mut writes = Vec::new();
    let mut links = Vec::new();
    let mut metas: Vec<(Vec<u8>, Kind, Meta)> = Vec::new();
    let mut touched_dirs: HashSet<Vec<u8>> = HashSet::new();
    let mut rewritten_leaders: HashSet<Vec<u8>> = HashSet::new();
    let mut linked: HashSet<Vec<u8>> = HashSet::new();

    for t in &dst.temp_files {
        p.ops.push(Op::RemoveTemp { path: t.clone() });
    }
    let mut last_deleted_dir: Option<Vec<u8>> = None;
    let mut write = |e: &Entry, p: &mut Plan, writes: &mut Vec<Op>, mkdirs: &mut Vec<Op>| {
        let meta = Meta::of(e);
        match e.kind {
            Kind::Dir => mkdirs.push(Op::Mkdir {
                path: e.path.clone(),
                meta,
            }),
            Kind::Symlink => {
                p.write_files += 1;
                writes.push(Op::Symlink {
                    path: e.path.clone(),
                    target: e.link_target.clone().unwrap_or_default(),
                    meta,
                });
            }
            Kind::File => {
                if matches!(&e.hardlink, Some(l) if *l != e.path) {
                    return; // a follower: linked after its leader
                }
                if e.hardlink.is_some() {
                    rewritten_leaders.insert(e.path.clone());
                }
                p.write_files += 1;
                p.write_bytes += e.size;
                writes.push(Op::File {
                    path: e.path.clone(),
                    meta,
                    data: Data::Local(SourceFile {
                        tree: src_root.clone(),
                        rel: e.path.clone(),
                    }),
                });
            }
        }
    };
    for c in &changes {
        if let Some(par) = parent(c.path()) {
            // Thousands of changes share a parent: allocate each one once.
            if !touched_dirs.contains(par) {
                touched_dirs.insert(par.to_vec());
            }
        }
        match c {
            Change::Removed(d) => {
                if matches!(&last_deleted_dir, Some(dir) if is_under(&d.path, dir)) {
                    continue;
                }
                p.deletes += 1;
                deletes.push(Op::Delete {
                    path: d.path.clone(),
                });
                if d.kind == Kind::Dir {
                    last_deleted_dir = Some(d.path.clone());
                }
            }
            Change::Added(s) => {
                write(s, &mut p, &mut writes, &mut mkdirs);
                if s.kind == Kind::Dir {
                    touched_dirs.insert(s.path.clone());
                }
            }
            Change::Modified { src: s, dst: d } => {
                if s.kind != d.kind && (s.kind == Kind::Dir || d.kind == Kind::Dir) {
                    p.deletes += 1;
                    deletes.push(Op::Delete {
                        path: d.path.clone(),
                    });
                    if d.kind == Kind::Dir {
                        last_deleted_dir = Some(d.path.clone());
                    }
                }
                if s.kind == Kind::Dir {
                    touched_dirs.insert(s.path.clone());
                }
                write(s, &mut p, &mut writes, &mut mkdirs);
            }
            Change::Metadata { src: s, .. } => {
                p.metadata_only += 1;
                if s.kind == Kind::Dir {
                    touched_dirs.insert(s.path.clone());
                } else {
                    metas.push((s.path.clone(), s.kind, Meta::of(s)));
                }
            }
        }
    }
    // Hard-link followers: (re)link when they changed or their leader's inode was replaced.
    let changed: HashSet<&[u8]> = changes
        .iter()
        .filter(|c| !matches!(c, Change::Removed(_) | Change::Metadata { .. }))
        .map(|c| c.path())
        .collect();
    for e in &src.entries {
        if let (Kind::File, Some(leader)) = (e.kind, &e.hardlink) {
            if *leader != e.path
                && (changed.contains(e.path.as_slice()) || rewritten_leaders.contains(leader))
                && linked.insert(e.path.clone())
            {
                p.write_files += 1;
                links.push(Op::HardLink {
                    path: e.path.clone(),
                    leader: leader.clone(),
                });
                if let Some(par) = parent(&e.path) {
                    touched_dirs.insert(par.to_vec());
                }
            }
        }
    }
    // Directory metadata last, deepest first; ancestors of touched dirs too (their mtime may
    // not change, but mode and owner are cheap to reassert only where needed).
    let mut dirs: Vec<&Entry> = src
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Dir && touched_dirs.contains(&e.path))
        .collect();
    dirs.sort_by(|a, b| b.path.cmp(&a.path));
    p.ops.extend(deletes);
    p.ops.extend(mkdirs);
    p.ops.extend(writes);
    p.ops.extend(links);
    for (path, kind, meta) in metas {
        p.ops.push(Op::SetMeta { path, kind, meta });
    }
    for d in dirs {
        p.ops.push(Op::SetMeta {
            path: d.path.clone(),
            kind: Kind::Dir,
            meta: Meta::of(d),
        });
    }
    p.changes = changes;
    p
}

/// Options of one pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassOptions {
    pub checksum: bool,
    pub dry_run: bool,
    /// Walk the destination even when the journal holds a valid cached manifest of it
    /// (catches files rewritten in place on the destination; see `dest_cache`).
    pub full: bool,
    /// Sync a source that holds nothing but its root over a destination that holds files.
    /// Off by default: an unmounted filer leaves an empty mount point, and syncing it would
    /// delete the whole destination (on a rollback copy-back, the live old side).
    pub allow_empty_source: bool,
    /// Leave durability to the kernel's writeback instead of ending with `syncfs`, as `rsync`
    /// does (local destinations; SSH ones always sync). The pass then records this host's boot
    /// id with its cached manifest, and the cache is trusted only under the same boot: after a
    /// crash or reboot the next pass walks the destination and rewrites whatever did not reach
    /// the disk. A pass without it (the final pass inside the freeze) makes everything durable,
    /// including what deferred passes left in memory.
    pub defer_sync: bool,
}

/// Progress of a pass, reported after each batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// The result of one pass.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PassReport {
    pub dry_run: bool,
    pub source_entries: u64,
    pub source_bytes: u64,
    pub files_written: u64,
    pub bytes_written: u64,
    pub deleted: u64,
    pub metadata_only: u64,
    /// Digest of the source manifest this pass brought the destination to.
    pub manifest_digest: String,
    pub warnings: Vec<String>,
    /// For a dry run: what would change, one line each.
    pub would_change: Vec<String>,
    pub seconds: f64,
    /// Of which: waiting for the destination to finish and make everything durable (syncfs).
    pub finish_seconds: f64,
    /// The destination is known durable at the end of the pass: it ended with `syncfs`, or
    /// applied nothing over a cache written durable. False when the pass deferred durability
    /// (`defer_sync`).
    pub synced: bool,
    /// The destination manifest came from the journal's cache (its directories unchanged since
    /// the last committed pass) instead of a walk.
    pub destination_cached: bool,
    /// Of the warnings, those from applying (a source file vanished mid-pass): the
    /// destination then differs from the manifest, so it is not cached.
    pub apply_warnings: u64,
    /// Operations applied to the destination (0: nothing touched it).
    pub operations: u64,
    /// The source was walked in full (false: the change feed said what to re-stat).
    pub source_walked: bool,
    /// Source entries stat'ed by this pass (the whole tree on a walk, the dirty entries with a
    /// change feed, 0 when the feed reported nothing).
    pub source_entries_statted: u64,
    /// What the change feed did for this pass, in words (`None`: no `--feed`).
    pub feed: Option<String>,
}

const BATCH_OPS: usize = 512;
const BATCH_BYTES: u64 = 16 << 20;

/// Runs one pass from `src_root` to `dst`, walking both sides (never the cache: this is what
/// the final pass inside the freeze uses).
pub fn run_pass(
    src_root: &Path,
    dst: &mut dyn Destination,
    opts: PassOptions,
    progress: &dyn Fn(Progress),
) -> Result<PassReport, SyncError> {
    run_pass_with(src_root, dst, opts, progress, None, None, &mut || Ok(())).map(|(r, _)| r)
}

/// One pass. `cached`: the destination's manifest when known without a walk; `source`: the
/// source manifest when known without a walk (change feed) and how many entries were stat'ed
/// for it; `before_apply` runs once, just before the first operation is applied. Returns the
/// source manifest too.
pub(crate) fn run_pass_with(
    src_root: &Path,
    dst: &mut dyn Destination,
    opts: PassOptions,
    progress: &dyn Fn(Progress),
    cached: Option<Manifest>,
    source: Option<(Manifest, u64)>,
    before_apply: &mut dyn FnMut() -> Result<(), SyncError>,
) -> Result<(PassReport, Manifest), SyncError> {
    let t0 = std::time::Instant::now();
    check_source_root(src_root)?;
    let walk = WalkOptions {
        checksum: opts.checksum,
        refuse_escaping_symlinks: true,
        leftovers: false,
    };
    // Every read of the source goes through this one descriptor of its root: nothing of the
    // customer's tree is followed out of it (`beneath`).
    let src_tree = Arc::new(Tree::open(src_root).map_err(|e| SyncError::SourceRoot {
        path: src_root.to_path_buf(),
        why: e.to_string(),
    })?);
    let destination_cached = cached.is_some();
    let source_walked = source.is_none();
    let mut statted = 0;
    let walk_src = |statted: &mut u64| -> Result<Manifest, SyncError> {
        match source {
            Some((m, n)) => {
                *statted = n;
                Ok(m)
            }
            None => {
                let m = manifest::build_tree(&src_tree, &walk).map_err(SyncError::SourceWalk)?;
                *statted = (m.entries.len() + m.warnings.len() + m.temp_files.len()) as u64;
                Ok(m)
            }
        }
    };
    let (src, dstm) = match cached {
        Some(c) => (walk_src(&mut statted), Ok(c)),
        None => rayon::join(|| walk_src(&mut statted), || dst.manifest(opts.checksum)),
    };
    let (src, dstm) = (src?, dstm?);
    check_source_manifest(src_root, &src)?;
    check_not_emptied(src_root, &src, &dstm, opts.allow_empty_source)?;
    dst.check_source(src_root, &src)?;
    let plan = plan(&src_tree, &src, &dstm, dst.sets_owner());
    let mut report = PassReport {
        dry_run: opts.dry_run,
        source_entries: src.entries.len() as u64,
        source_bytes: src.total_bytes(),
        deleted: plan.deletes,
        metadata_only: plan.metadata_only,
        manifest_digest: src.digest(),
        warnings: src.warnings.clone(),
        destination_cached,
        source_walked,
        source_entries_statted: statted,
        ..Default::default()
    };
    if opts.dry_run {
        report.files_written = plan.write_files;
        report.bytes_written = plan.write_bytes;
        report.would_change = plan
            .changes
            .iter()
            .map(|c| {
                let (what, size) = match c {
                    Change::Added(e) => ("add", e.size),
                    Change::Modified { src, .. } => ("update", src.size),
                    Change::Metadata { .. } => ("metadata", 0),
                    Change::Removed(_) => ("delete", 0),
                };
                format!("{what} {} ({size} bytes)", manifest::display(c.path()))
            })
            .collect();
        report.seconds = t0.elapsed().as_secs_f64();
        return Ok((report, src));
    }
    if plan.ops.is_empty() && destination_cached {
        // Nothing to apply to what the last committed pass left. A pass that must end durable
        // trusts only a cache written durable (`CacheHead::trusted`): it is durable already.
        report.synced = !opts.defer_sync;
        report.seconds = t0.elapsed().as_secs_f64();
        return Ok((report, src));
    }
    before_apply()?;
    report.operations = plan.ops.len() as u64;
    // Sizes for progress, from the manifest (no second stat per file).
    let size_of = |path: &[u8]| {
        src.entries
            .binary_search_by(|e| e.path.as_slice().cmp(path))
            .map_or(0, |i| src.entries[i].size)
    };
    let mut pr = Progress {
        files_total: plan.write_files,
        bytes_total: plan.write_bytes,
        ..Default::default()
    };
    progress(pr);
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    let mut batch_files = 0;
    for op in plan.ops {
        match &op {
            Op::File {
                data: Data::Local(_),
                path,
                ..
            } => {
                batch_bytes += size_of(path);
                batch_files += 1;
            }
            Op::Symlink { .. } | Op::HardLink { .. } => batch_files += 1,
            _ => {}
        }
        batch.push(op);
        if batch.len() >= BATCH_OPS || batch_bytes >= BATCH_BYTES {
            dst.apply(std::mem::take(&mut batch))?;
            pr.files_done += batch_files;
            pr.bytes_done += batch_bytes;
            progress(pr);
            batch_bytes = 0;
            batch_files = 0;
        }
    }
    if !batch.is_empty() {
        dst.apply(batch)?;
        pr.files_done += batch_files;
        pr.bytes_done += batch_bytes;
        progress(pr);
    }
    let tf = std::time::Instant::now();
    let sync = !(opts.defer_sync && dst.defers_sync());
    let applied = dst.finish(sync)?;
    report.synced = sync;
    report.finish_seconds = tf.elapsed().as_secs_f64();
    report.files_written = applied.files;
    report.bytes_written = applied.bytes;
    report.apply_warnings = applied.warnings.len() as u64;
    report.warnings.extend(applied.warnings);
    report.seconds = t0.elapsed().as_secs_f64();
    Ok((report, src))
}

/// Committed progress of the last complete pass of a site: checkpoint scope
/// [`SyncCheckpoint::SCOPE`], keyed by the site's name.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct SyncCheckpoint {
    pub manifest_digest: String,
    pub files_written: u64,
    pub bytes_written: u64,
}

impl SyncCheckpoint {
    /// The journal checkpoint scope of file passes.
    pub const SCOPE: &'static str = "sync-files";
}

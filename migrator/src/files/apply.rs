//! The destination side of a file sync: operations and how they are applied to a directory.
//!
//! The same code runs in-process for a local destination and inside `migrator receive` on the
//! far side of an SSH connection. A file that replaces an existing one is written to a
//! temporary name in the same directory and renamed into place only once its content and
//! metadata are complete, so a reader never sees a torn file under a name that had a whole
//! one; temporary names never collide with a customer's file (`staging.rs`), and a killed
//! pass's leftovers are extra files the next pass deletes. A file whose path is
//! free (first sync, new files) is created under its final name directly, saving the rename:
//! its times are set last, so a copy killed half-way has a current mtime, differs from the
//! source in the next pass's compare and is copied again (`partial_direct_copy_is_redone`).
//! Large files resume mid-way ([`large_copy`]).
//!
//! Every access stays inside the root ([`crate::files::beneath`]): a rollback writes into the
//! old home, which the customer can change under us, so no path component is ever followed
//! through a symlink, and owner, mode and times are set through descriptors (`fsops.rs`).
//! Paths from the wire are checked ([`check_rel`]) before anything of their batch is applied.

mod fsops;
pub mod large_copy;
mod staging;

use crate::files::beneath::{self, check_rel, open_source, split_parent, SourceFailure, Tree};
use crate::files::manifest::{join, Kind};
use fsops::{mtime_only, set_meta_at, set_meta_fd};
use rayon::prelude::*;
use staging::{rename_into, sibling, unlink, Staging};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

/// Metadata to set on a destination entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_s: i64,
    pub mtime_ns: u32,
}

impl Meta {
    pub fn of(e: &crate::files::manifest::Entry) -> Meta {
        Meta {
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime_s: e.mtime_s,
            mtime_ns: e.mtime_ns,
        }
    }
}

/// A source file: its home, opened once for the pass, and its path inside it. Read only
/// through [`open_source`] (never a symlink, never a FIFO or device).
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub tree: Arc<Tree>,
    pub rel: Vec<u8>,
}

impl SourceFile {
    /// The absolute path, for messages only.
    pub fn abs(&self) -> PathBuf {
        self.tree.display(&self.rel)
    }
}

impl PartialEq for SourceFile {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.tree, &o.tree) && self.rel == o.rel
    }
}
impl Eq for SourceFile {}

/// Where a file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// A file readable by this process (local destination): copied with the kernel's copy path.
    Local(SourceFile),
    /// The bytes themselves (small files over SSH).
    Inline(Vec<u8>),
    /// Already written by earlier [`Op::Chunk`]s (large files over SSH).
    Staged,
}

/// One operation on the destination. Paths are relative to the destination root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A leftover temporary file of an interrupted pass: kept when it can resume a large copy,
    /// else removed.
    RemoveTemp { path: Vec<u8> },
    /// Remove a file, symlink or a whole directory tree.
    Delete { path: Vec<u8> },
    /// Create a directory if missing and set its mode and owner (times come last, by `SetMeta`).
    Mkdir { path: Vec<u8>, meta: Meta },
    /// Write a file: directly when its path is free, else atomically (temporary name, then
    /// rename).
    File {
        path: Vec<u8>,
        meta: Meta,
        data: Data,
    },
    /// Part of a large file, written to its temporary file.
    Chunk {
        path: Vec<u8>,
        offset: u64,
        data: Vec<u8>,
    },
    Symlink {
        path: Vec<u8>,
        target: Vec<u8>,
        meta: Meta,
    },
    /// Make `path` another name of `leader` (already in place).
    HardLink { path: Vec<u8>, leader: Vec<u8> },
    /// Set mode (not for symlinks), owner and times.
    SetMeta {
        path: Vec<u8>,
        kind: Kind,
        meta: Meta,
    },
}

impl Op {
    /// The destination paths this operation touches.
    fn paths(&self) -> [Option<&[u8]>; 2] {
        match self {
            Op::RemoveTemp { path }
            | Op::Delete { path }
            | Op::Mkdir { path, .. }
            | Op::File { path, .. }
            | Op::Chunk { path, .. }
            | Op::Symlink { path, .. }
            | Op::SetMeta { path, .. } => [Some(path), None],
            Op::HardLink { path, leader } => [Some(path), Some(leader)],
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct ApplyError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ApplyError + 'a {
    move |source| ApplyError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What applying a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub bytes: u64,
    pub files: u64,
    /// Non-fatal problems (a source file vanished while the site is live: the next pass will see).
    pub warnings: Vec<String>,
}

/// Applies operations under `root`. Runs of `File`/`Symlink` operations are applied in
/// parallel; everything else in order.
pub struct Applier {
    root: PathBuf,
    /// The root, opened once it exists (the batch creating it, or the first one): every
    /// access goes through it, and `syncfs` on it reports the write-back errors of its file
    /// system since *this* descriptor was opened, so it must be open before the pass writes.
    tree: OnceLock<Tree>,
    /// Whether to set ownership (only root can).
    chown: bool,
    /// Copies still go through `copy_file_range` (cleared by the first refusal, e.g. source
    /// and destination on different file systems).
    kernel_copy: AtomicBool,
    /// Temporary names, kept resumable leftovers, large files arriving in chunks.
    staging: Staging,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Applier {
    pub fn new(root: &Path) -> Applier {
        Applier {
            root: root.to_path_buf(),
            tree: OnceLock::new(),
            // SAFETY: geteuid has no preconditions.
            chown: unsafe { libc::geteuid() } == 0,
            kernel_copy: AtomicBool::new(true),
            staging: Staging::new(),
        }
    }

    /// The absolute path of `rel`, for messages.
    fn at(&self, rel: &[u8]) -> PathBuf {
        join(&self.root, rel)
    }

    /// The open root ([`Applier::tree`]).
    fn tree(&self) -> Result<&Tree, ApplyError> {
        if let Some(t) = self.tree.get() {
            return Ok(t);
        }
        let t = Tree::open(&self.root).map_err(err("open", &self.root))?;
        let _ = self.tree.set(t);
        Ok(self.tree.get().expect("just set"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether ownership is preserved (comparisons of uid/gid make sense).
    pub fn sets_owner(&self) -> bool {
        self.chown
    }

    /// Opens what a file's content is written to. A path with nothing under it yet (first
    /// sync, new files) is created directly (`O_EXCL`, never through a symlink): killed
    /// half-way, it is left with a current mtime, which differs from the source's, so the
    /// next pass copies it again. A path that exists is replaced through a temporary file
    /// (its path returned), renamed over it once complete, so a reader never sees a torn file.
    /// Created with the final permission bits (never more than final; setuid, setgid and
    /// sticky only by [`set_meta_fd`], after the owner is set).
    fn create(&self, rel: &[u8], meta: &Meta) -> Result<(File, Option<Vec<u8>>), ApplyError> {
        let tree = self.tree()?;
        let mode = meta.mode & 0o777;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
        match tree.open_at(rel, flags, mode) {
            Ok(fd) => return Ok((File::from(fd), None)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err("create", &self.at(rel))(e)),
        }
        if let Some(left) = self.staging.take_kept(rel) {
            // A resumable leftover of a large copy: this pass writes the path small.
            let _ = unlink(tree, &left);
        }
        let (f, tmp) = self
            .staging
            .create(tree, rel, mode)
            .map_err(err("create a temporary file for", &self.at(rel)))?;
        Ok((f, Some(tmp)))
    }

    fn write_file(&self, rel: &[u8], meta: &Meta, data: &Data) -> Result<Applied, ApplyError> {
        let mut applied = Applied::default();
        let (out, tmp) = match data {
            Data::Local(src) => {
                let (input, st) = match open_source(&src.tree, &src.rel) {
                    Ok(x) => x,
                    Err(SourceFailure::Gone(why)) => {
                        applied.warnings.push(format!(
                            "{}: {why} during the pass; the next pass will reconcile",
                            src.abs().display()
                        ));
                        return Ok(applied);
                    }
                    Err(SourceFailure::Error(e)) => return Err(err("open source", &src.abs())(e)),
                };
                let size = st.st_size as u64;
                if size >= large_copy::RESUME_MIN {
                    let (out, tmp) = self.large_temp(rel)?;
                    let (_, name) = split_parent(rel);
                    applied.bytes =
                        large_copy::copy_resumable(&input, &st, &out, name, &self.kernel_copy)
                            .map_err(err("copy to", &self.at(&tmp)))?;
                    (out, Some(tmp))
                } else {
                    let (out, tmp) = self.create(rel, meta)?;
                    applied.bytes =
                        large_copy::copy_range(&input, &out, 0, size, &self.kernel_copy)
                            .map_err(err("copy to", &self.at(tmp.as_deref().unwrap_or(rel))))?;
                    (out, tmp)
                }
            }
            Data::Inline(bytes) => {
                let (mut out, tmp) = self.create(rel, meta)?;
                out.write_all(bytes)
                    .map_err(err("write", &self.at(tmp.as_deref().unwrap_or(rel))))?;
                applied.bytes = bytes.len() as u64;
                (out, tmp)
            }
            Data::Staged => {
                let c = lock(&self.staging.chunked).remove(rel).ok_or_else(|| {
                    err("find staged", &self.at(rel))(std::io::Error::other(
                        "no chunks were sent for this file",
                    ))
                })?;
                let p = self.at(&c.tmp);
                let out = File::from(
                    self.tree()?
                        .open_at(&c.tmp, libc::O_RDWR, 0)
                        .map_err(err("find staged", &p))?,
                );
                let len = out.metadata().map_err(err("stat", &p))?.len();
                // Bytes moved by this pass: not what an interrupted one had committed.
                let from = c.resume.map_or(0, |(_, _, start)| start);
                // Whatever wrote this temporary file, no record reaches the customer's file.
                large_copy::remove_record(&out).map_err(err("record", &p))?;
                applied.bytes = len.saturating_sub(from);
                (out, Some(c.tmp))
            }
        };
        set_meta_fd(out.as_fd(), meta, self.chown)
            .map_err(err("set owner, mode and times of", &self.at(rel)))?;
        drop(out);
        if let Some(tmp) = tmp {
            rename_into(self.tree()?, &tmp, rel).map_err(err("rename into", &self.at(rel)))?;
        }
        applied.files = 1;
        Ok(applied)
    }

    /// A symlink is created under its final name when nothing is there yet (its target is
    /// set atomically with it; a kill before its owner and times leaves a current mtime, which
    /// the next pass corrects), else under a temporary name and renamed over it.
    fn symlink(&self, rel: &[u8], target: &[u8], meta: &Meta) -> Result<Applied, ApplyError> {
        let p = self.at(rel);
        let (dir, name) = self.tree()?.parent_of(rel).map_err(err("open", &p))?;
        let finish = |n: &[u8]| -> std::io::Result<()> {
            if self.chown {
                beneath::chown_in(&dir, n, meta.uid, meta.gid)?;
            }
            beneath::set_mtime_in(&dir, n, &mtime_only(meta))
        };
        match beneath::symlink_in(&dir, name, target) {
            Ok(()) => finish(name).map_err(err("set owner and times of", &p))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let tmp = self
                    .staging
                    .reserve(|n| beneath::symlink_in(&dir, n, target))
                    .map_err(err("create symlink", &p))?;
                finish(&tmp).map_err(err("set owner and times of", &p))?;
                beneath::rename_in(&dir, &tmp, &dir, name).map_err(err("rename into", &p))?;
            }
            Err(e) => return Err(err("create symlink", &p)(e)),
        }
        Ok(Applied {
            files: 1,
            ..Default::default()
        })
    }

    fn mkdir(&self, rel: &[u8], meta: &Meta) -> Result<(), ApplyError> {
        let p = self.at(rel);
        let set = |fd: std::os::fd::BorrowedFd<'_>| -> std::io::Result<()> {
            if self.chown {
                // SAFETY: the descriptor is open.
                if unsafe { libc::fchown(std::os::fd::AsRawFd::as_raw_fd(&fd), meta.uid, meta.gid) }
                    != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Owner-writable while we fill it; the final mode comes with `SetMeta`.
            // SAFETY: the descriptor is open.
            let mode = (meta.mode | 0o700) as libc::mode_t;
            if unsafe { libc::fchmod(std::os::fd::AsRawFd::as_raw_fd(&fd), mode) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        if rel.is_empty() {
            // The home itself: its parent (the filer's mount) may need creating too.
            std::fs::create_dir_all(&self.root).map_err(err("create directory", &p))?;
            return set(self.tree()?.root_fd()).map_err(err("set owner and mode of", &p));
        }
        let (dir, name) = self.tree()?.parent_of(rel).map_err(err("open", &p))?;
        match beneath::mkdir_in(&dir, name, 0o700) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err("create directory", &p)(e)),
        }
        // Not a directory (a symlink, a file put there): the open fails, nothing is changed.
        let fd = beneath::open_in(&dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(err("create directory", &p))?;
        set(fd.as_fd()).map_err(err("set owner and mode of", &p))
    }

    fn one(&self, op: &Op) -> Result<Applied, ApplyError> {
        match op {
            Op::RemoveTemp { path } => {
                let tree = self.tree()?;
                let p = self.at(path);
                let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
                let record = match tree.open_at(path, flags, 0) {
                    Ok(fd) => large_copy::read_record(&fd),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Ok(Applied::default())
                    }
                    Err(_) => None,
                };
                match record {
                    Some((_, _, name)) => self.staging.keep(sibling(path, &name), path.clone()),
                    None => {
                        let (dir, name) = tree.parent_of(path).map_err(err("open", &p))?;
                        beneath::remove_in(&dir, name).map_err(err("remove", &p))?;
                    }
                }
            }
            Op::Delete { path } => {
                let p = self.at(path);
                let (dir, name) = self.tree()?.parent_of(path).map_err(err("open", &p))?;
                beneath::remove_in(&dir, name).map_err(err("remove", &p))?;
            }
            Op::Mkdir { path, meta } => self.mkdir(path, meta)?,
            Op::File { path, meta, data } => return self.write_file(path, meta, data),
            Op::Chunk { path, offset, data } => self.chunk(path, *offset, data)?,
            Op::Symlink { path, target, meta } => return self.symlink(path, target, meta),
            Op::HardLink { path, leader } => {
                let p = self.at(path);
                let tree = self.tree()?;
                let (ldir, lname) = tree
                    .parent_of(leader)
                    .map_err(err("open", &self.at(leader)))?;
                let (dir, name) = tree.parent_of(path).map_err(err("open", &p))?;
                let tmp = self
                    .staging
                    .reserve(|n| beneath::link_in(&ldir, lname, &dir, n))
                    .map_err(err("hard-link", &p))?;
                beneath::rename_in(&dir, &tmp, &dir, name).map_err(err("rename into", &p))?;
                return Ok(Applied {
                    files: 1,
                    ..Default::default()
                });
            }
            Op::SetMeta { path, kind, meta } => {
                set_meta_at(self.tree()?, path, *kind, meta, self.chown)
                    .map_err(err("set owner, mode and times of", &self.at(path)))?;
            }
        }
        Ok(Applied::default())
    }

    /// Refuses a batch holding a path that would leave the root (absolute, `..`, empty
    /// components, NUL), before applying any of it: the receiver takes paths from the wire.
    fn check_paths(&self, ops: &[Op]) -> Result<(), ApplyError> {
        for op in ops {
            for rel in op.paths().into_iter().flatten() {
                let bad = check_rel(rel).err().or_else(|| match op {
                    // Only the root is created, changed or written as "".
                    Op::Mkdir { .. } | Op::SetMeta { .. } => None,
                    _ if rel.is_empty() => Some(beneath::BadPath {
                        path: ".".into(),
                        why: "the root itself",
                    }),
                    _ => None,
                });
                if let Some(bad) = bad {
                    return Err(ApplyError {
                        action: "refuse",
                        path: PathBuf::from(bad.path.clone()),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, bad),
                    });
                }
            }
        }
        Ok(())
    }

    /// Applies a batch in order, parallelising runs of independent file and symlink writes,
    /// and runs of directory creations level by level (the plan lists parents first, so a
    /// directory's parent is on the level before it or already there).
    pub fn apply(&self, ops: &[Op]) -> Result<Applied, ApplyError> {
        self.check_paths(ops)?;
        // Opened before the pass writes (see `tree`); a root not there yet is opened by the
        // batch that creates it.
        let _ = self.tree();
        let mut total = Applied::default();
        let mut merge = |a: Applied| {
            total.bytes += a.bytes;
            total.files += a.files;
            total.warnings.extend(a.warnings);
        };
        let parallel = |op: &Op| matches!(op, Op::File { .. } | Op::Symlink { .. });
        let mkdir = |op: &Op| matches!(op, Op::Mkdir { .. });
        let mut i = 0;
        while i < ops.len() {
            let start = i;
            if parallel(&ops[i]) {
                while i < ops.len() && parallel(&ops[i]) {
                    i += 1;
                }
                let parts: Vec<Applied> = ops[start..i]
                    .par_iter()
                    .map(|op| self.one(op))
                    .collect::<Result<_, _>>()?;
                parts.into_iter().for_each(&mut merge);
            } else if mkdir(&ops[i]) {
                while i < ops.len() && mkdir(&ops[i]) {
                    i += 1;
                }
                let depth = |op: &Op| match op {
                    Op::Mkdir { path, .. } if !path.is_empty() => {
                        1 + path.iter().filter(|&&b| b == b'/').count()
                    }
                    _ => 0,
                };
                let mut levels: Vec<Vec<&Op>> = Vec::new();
                for op in &ops[start..i] {
                    let d = depth(op);
                    if levels.len() <= d {
                        levels.resize_with(d + 1, Vec::new);
                    }
                    levels[d].push(op);
                }
                for level in levels {
                    level
                        .par_iter()
                        .try_for_each(|op| self.one(op).map(|_| ()))?;
                }
            } else {
                merge(self.one(&ops[i])?);
                i += 1;
            }
        }
        Ok(total)
    }

    /// Removes the leftovers kept until the end of the pass, and the temporary files of large
    /// files whose chunks began but no write finished; the pass is over: the next one opens
    /// the root afresh (it may have been replaced meanwhile).
    pub fn remove_kept(&mut self) -> Result<(), ApplyError> {
        let r = self.remove_leftovers();
        self.tree = OnceLock::new();
        r
    }

    fn remove_leftovers(&self) -> Result<(), ApplyError> {
        match self.tree() {
            Ok(tree) => self
                .staging
                .remove_all(tree)
                .map_err(err("remove leftovers in", &self.root)),
            // Nothing was ever written: nothing to remove.
            Err(_) if !self.root.exists() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// [`Applier::remove_kept`], then makes everything written so far durable (one `syncfs`
    /// for the whole file system, instead of an fsync per file).
    pub fn sync(&mut self) -> Result<(), ApplyError> {
        let r = self.remove_leftovers().and_then(|()| self.syncfs());
        self.tree = OnceLock::new();
        r
    }

    fn syncfs(&self) -> Result<(), ApplyError> {
        let tree = self.tree()?;
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is valid for the lifetime of the tree.
        if unsafe { libc::syncfs(tree.root_fd().as_raw_fd()) } != 0 {
            return Err(err("sync file system of", &self.root)(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

//! The destination side of a file sync: operations and how they are applied to a directory.
//!
//! The same code runs in-process for a local destination and inside `migrator receive` on the
//! far side of an SSH connection. A file that replaces an existing one is written to a
//! temporary name in the same directory and renamed into place only once its content and
//! metadata are complete, so a reader never sees a torn file under a name that had a whole
//! one; leftovers carry [`TEMP_PREFIX`] and are removed by the next pass. A file whose path is
//! free (first sync, new files) is created under its final name directly, saving the rename:
//! its times are set last, so a copy killed half-way has a current mtime, differs from the
//! source in the next pass's compare and is copied again (`partial_direct_copy_is_redone`).
//! Large files resume mid-way ([`large_copy`]).

mod fsops;
pub mod large_copy;

use fsops::SourceFailure::{SourceError, SourceGone};
use fsops::{chmod, fstat, lchown, mtime_only, open_source, remove_any, set_times};

use crate::files::manifest::{join, Kind, TEMP_PREFIX};
use rayon::prelude::*;
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

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

/// Where a file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// A file readable by this process (local destination): copied with the kernel's copy path.
    Local(PathBuf),
    /// The bytes themselves (small files over SSH).
    Inline(Vec<u8>),
    /// Already written by earlier [`Op::Chunk`]s (large files over SSH).
    Staged,
}

/// One operation on the destination. Paths are relative to the destination root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Remove a leftover temporary file of an interrupted pass.
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
    /// Part of a large file, written to its temporary name.
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
    /// Whether to set ownership (only root can).
    chown: bool,
    /// Leftover temporaries holding a resumable large copy ([`large_copy`]), kept by
    /// `RemoveTemp` for the write of their path to continue; removed by [`Applier::sync`] if
    /// no write of the pass took them back.
    kept: Mutex<HashSet<PathBuf>>,
    /// Copies still go through `copy_file_range` (cleared by the first refusal, e.g. source
    /// and destination on different file systems).
    kernel_copy: AtomicBool,
    /// The root, opened before the pass writes (or right after the batch that created it):
    /// `syncfs` reports the write-back errors of its file system since *this* descriptor was
    /// opened, so opening it at the end would miss the errors of the pass itself.
    sync_handle: Mutex<Option<std::fs::File>>,
    /// Large files arriving in chunks (SSH) that may resume: temporary path → (the source they
    /// copy, offset committed, offset the pass started from). See [`Applier::resume_offset`].
    resuming: Mutex<std::collections::HashMap<PathBuf, (large_copy::SourceId, u64, u64)>>,
}

/// The temporary name for `rel` (same directory, so the rename is atomic).
pub fn temp_path(root: &Path, rel: &[u8]) -> PathBuf {
    let full = join(root, rel);
    let name = full.file_name().map(|n| n.as_bytes()).unwrap_or(b"");
    let mut tmp = TEMP_PREFIX.to_vec();
    tmp.extend_from_slice(name);
    full.with_file_name(std::ffi::OsStr::from_bytes(&tmp))
}
impl Applier {
    pub fn new(root: &Path) -> Applier {
        Applier {
            root: root.to_path_buf(),
            // SAFETY: geteuid has no preconditions.
            chown: unsafe { libc::geteuid() } == 0,
            kept: Mutex::new(HashSet::new()),
            kernel_copy: AtomicBool::new(true),
            sync_handle: Mutex::new(None),
            resuming: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Where the chunks of large file `rel`, a copy of source `id`, should start: the offset
    /// its temporary file committed in an earlier, interrupted pass when that pass copied the
    /// same source (the file is cut back to it), else 0 (any leftover removed). From here on
    /// the chunks of `rel` commit every [`large_copy::COMMIT_EVERY`] bytes (`fdatasync`, then
    /// the record), as a local large copy does.
    pub fn resume_offset(&self, rel: &[u8], id: large_copy::SourceId) -> Result<u64, ApplyError> {
        let tmp = temp_path(&self.root, rel);
        self.take_kept(&tmp);
        use std::os::unix::fs::OpenOptionsExt;
        let existing = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp);
        let start = match existing {
            Ok(f) => match large_copy::read_record(&f) {
                // The data must really be there: a record beyond the file's length (a record
                // that outlived its data) would make set_len fill the gap with zeros.
                Some((was, committed))
                    if was == id
                        && committed <= id.size
                        && f.metadata().is_ok_and(|m| m.len() >= committed) =>
                {
                    // Whatever lies past the committed offset was never made durable.
                    f.set_len(committed).map_err(err("truncate", &tmp))?;
                    committed
                }
                _ => {
                    drop(f);
                    std::fs::remove_file(&tmp).map_err(err("remove", &tmp))?;
                    0
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(err("open", &tmp)(e)),
        };
        self.resuming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tmp, (id, start, start));
        Ok(start)
    }

    /// Opens [`Applier::sync_handle`] once the root exists.
    fn open_sync_handle(&self) {
        let mut h = self.sync_handle.lock().unwrap_or_else(|p| p.into_inner());
        if h.is_none() {
            *h = std::fs::File::open(&self.root).ok();
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether ownership is preserved (comparisons of uid/gid make sense).
    pub fn sets_owner(&self) -> bool {
        self.chown
    }

    fn finish_meta(&self, p: &Path, kind: Kind, meta: &Meta) -> Result<(), ApplyError> {
        if self.chown {
            lchown(p, meta.uid, meta.gid).map_err(err("chown", p))?;
        }
        if kind != Kind::Symlink {
            chmod(p, meta.mode).map_err(err("chmod", p))?;
        }
        set_times(p, meta).map_err(err("set times of", p))
    }

    /// Sets owner, mode and times of a file through its open descriptor, touching only what
    /// differs: a file just created by root for root with the mode asked for at creation
    /// needs one `fstat` and the `futimens` (times always last: until they are set, the
    /// file's mtime is "now", which no pass takes for a finished copy).
    fn finish_fd(&self, f: &File, p: &Path, meta: &Meta) -> Result<(), ApplyError> {
        let st = fstat(f).map_err(err("stat", p))?;
        let mode = st.st_mode & 0o7777;
        let chowned = self.chown && (st.st_uid != meta.uid || st.st_gid != meta.gid);
        if chowned {
            std::os::unix::fs::fchown(f, Some(meta.uid), Some(meta.gid))
                .map_err(err("chown", p))?;
        }
        // chown may clear setuid/setgid: after one, those bits are unknown.
        if mode != meta.mode || (chowned && mode & 0o6000 != 0) {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(meta.mode))
                .map_err(err("chmod", p))?;
        }
        let ts = mtime_only(meta);
        // SAFETY: the descriptor is open for the lifetime of `f`; ts holds two timespecs.
        if unsafe { libc::futimens(f.as_raw_fd(), ts.as_ptr()) } != 0 {
            return Err(err("set times of", p)(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Opens what a file's content is written to. A path with nothing under it yet (first
    /// sync, new files) is created directly (`O_EXCL`, never through a symlink): killed
    /// half-way, it is left with a current mtime, which differs from the source's, so the
    /// next pass copies it again. A path that exists is replaced through its temporary name
    /// (returned), renamed over it once complete, so a reader never sees a torn file.
    /// Created with the final permission bits (never more than final; setuid, setgid and
    /// sticky only by [`Applier::finish_fd`], after the owner is set).
    fn create(
        &self,
        rel: &[u8],
        dst: &Path,
        meta: &Meta,
    ) -> Result<(File, Option<PathBuf>), ApplyError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mode = meta.mode & 0o777;
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dst);
        match direct {
            Ok(f) => return Ok((f, None)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err("create", dst)(e)),
        }
        let tmp = temp_path(&self.root, rel);
        if self.take_kept(&tmp) {
            // A resumable leftover of a large copy: this pass writes the path small.
            let _ = std::fs::remove_file(&tmp);
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(err("create", &tmp))?;
        Ok((f, Some(tmp)))
    }

    fn write_file(&self, rel: &[u8], meta: &Meta, data: &Data) -> Result<Applied, ApplyError> {
        let dst = join(&self.root, rel);
        let mut applied = Applied::default();
        let (out, tmp) = match data {
            Data::Local(src) => {
                let (input, st) = match open_source(src) {
                    Ok(x) => x,
                    Err(SourceGone(why)) => {
                        applied.warnings.push(format!(
                            "{}: {why} during the pass; the next pass will reconcile",
                            src.display()
                        ));
                        return Ok(applied);
                    }
                    Err(SourceError(e)) => return Err(err("open source", src)(e)),
                };
                let size = st.st_size as u64;
                if size >= large_copy::RESUME_MIN {
                    let tmp = temp_path(&self.root, rel);
                    self.take_kept(&tmp);
                    let (out, n) = large_copy::copy_resumable(&input, &st, &tmp, &self.kernel_copy)
                        .map_err(err("copy to", &tmp))?;
                    applied.bytes = n;
                    (out, Some(tmp))
                } else {
                    let (out, tmp) = self.create(rel, &dst, meta)?;
                    applied.bytes =
                        large_copy::copy_range(&input, &out, 0, size, &self.kernel_copy)
                            .map_err(err("copy to", tmp.as_deref().unwrap_or(&dst)))?;
                    (out, tmp)
                }
            }
            Data::Inline(bytes) => {
                let (mut out, tmp) = self.create(rel, &dst, meta)?;
                out.write_all(bytes)
                    .map_err(err("write", tmp.as_deref().unwrap_or(&dst)))?;
                applied.bytes = bytes.len() as u64;
                (out, tmp)
            }
            Data::Staged => {
                let tmp = temp_path(&self.root, rel);
                let out = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&tmp)
                    .map_err(err("find staged", &tmp))?;
                let len = out.metadata().map_err(err("stat", &tmp))?.len();
                // Bytes moved by this pass: not what an interrupted one had committed.
                let resumed = self
                    .resuming
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&tmp);
                let from = resumed.map_or(0, |(_, _, start)| start);
                // Whatever wrote this temporary file, no record reaches the customer's file.
                large_copy::remove_record(&out).map_err(err("record", &tmp))?;
                applied.bytes = len.saturating_sub(from);
                (out, Some(tmp))
            }
        };
        self.finish_fd(&out, tmp.as_deref().unwrap_or(&dst), meta)?;
        drop(out);
        if let Some(tmp) = tmp {
            std::fs::rename(&tmp, &dst).map_err(err("rename into", &dst))?;
        }
        applied.files = 1;
        Ok(applied)
    }

    /// A symlink is created under its final name when nothing is there yet (its target is
    /// set atomically with it; a kill before its owner and times leaves a current mtime, which
    /// the next pass corrects), else through its temporary name and a rename.
    fn symlink(&self, rel: &[u8], target: &[u8], meta: &Meta) -> Result<Applied, ApplyError> {
        let dst = join(&self.root, rel);
        let target = std::ffi::OsStr::from_bytes(target);
        match std::os::unix::fs::symlink(target, &dst) {
            Ok(()) => self.finish_meta(&dst, Kind::Symlink, meta)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let tmp = temp_path(&self.root, rel);
                self.take_kept(&tmp);
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(target, &tmp).map_err(err("create symlink", &tmp))?;
                self.finish_meta(&tmp, Kind::Symlink, meta)?;
                std::fs::rename(&tmp, &dst).map_err(err("rename into", &dst))?;
            }
            Err(e) => return Err(err("create symlink", &dst)(e)),
        }
        Ok(Applied {
            files: 1,
            ..Default::default()
        })
    }

    /// Forgets a kept resumable leftover (its path is about to be written); whether it was one.
    fn take_kept(&self, tmp: &Path) -> bool {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        !kept.is_empty() && kept.remove(tmp)
    }

    fn one(&self, op: &Op) -> Result<Applied, ApplyError> {
        match op {
            Op::RemoveTemp { path } => {
                let p = join(&self.root, path);
                if large_copy::is_resumable(&p) {
                    self.kept
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(p);
                } else {
                    remove_any(&p).map_err(err("remove", &p))?;
                }
            }
            Op::Delete { path } => {
                let p = join(&self.root, path);
                remove_any(&p).map_err(err("remove", &p))?;
            }
            Op::Mkdir { path, meta } => {
                let p = join(&self.root, path);
                let made = if path.is_empty() {
                    // The home itself: its parent (the filer's mount) may need creating too.
                    std::fs::create_dir_all(&p)
                } else {
                    std::fs::create_dir(&p)
                };
                match made {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => {}
                    Err(e) => return Err(err("create directory", &p)(e)),
                }
                if self.chown {
                    lchown(&p, meta.uid, meta.gid).map_err(err("chown", &p))?;
                }
                // Owner-writable while we fill it; the final mode comes with `SetMeta`.
                chmod(&p, meta.mode | 0o700).map_err(err("chmod", &p))?;
            }
            Op::File { path, meta, data } => return self.write_file(path, meta, data),
            Op::Chunk { path, offset, data } => {
                let tmp = temp_path(&self.root, path);
                if *offset == 0 && self.take_kept(&tmp) {
                    // A local pass's resumable leftover: its record must not reach the file.
                    let _ = std::fs::remove_file(&tmp);
                }
                let f = if *offset == 0 {
                    std::fs::File::create(&tmp)
                } else {
                    std::fs::OpenOptions::new().write(true).open(&tmp)
                }
                .map_err(err("open", &tmp))?;
                use std::os::unix::fs::FileExt;
                let end = offset.checked_add(data.len() as u64).ok_or_else(|| {
                    err("write", &tmp)(std::io::Error::other("chunk offset out of range"))
                })?;
                f.write_all_at(data, *offset).map_err(err("write", &tmp))?;
                let mut resuming = self.resuming.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((id, committed, start)) = resuming.get_mut(&tmp) {
                    if end.saturating_sub(*committed) >= large_copy::COMMIT_EVERY && end < id.size {
                        f.sync_data().map_err(err("sync", &tmp))?;
                        if large_copy::write_record(&f, id, end).map_err(err("record", &tmp))? {
                            *committed = end;
                        } else if *start == 0 {
                            // No user extended attributes here: no resume, no more syncs.
                            resuming.remove(&tmp);
                        }
                    }
                }
            }
            Op::Symlink { path, target, meta } => return self.symlink(path, target, meta),
            Op::HardLink { path, leader } => {
                let dst = join(&self.root, path);
                let src = join(&self.root, leader);
                let tmp = temp_path(&self.root, path);
                let _ = std::fs::remove_file(&tmp);
                std::fs::hard_link(&src, &tmp).map_err(err("hard-link", &tmp))?;
                std::fs::rename(&tmp, &dst).map_err(err("rename into", &dst))?;
                return Ok(Applied {
                    files: 1,
                    ..Default::default()
                });
            }
            Op::SetMeta { path, kind, meta } => {
                let p = join(&self.root, path);
                self.finish_meta(&p, *kind, meta)?;
            }
        }
        Ok(Applied::default())
    }

    /// Applies a batch in order, parallelising runs of independent file and symlink writes,
    /// and runs of directory creations level by level (the plan lists parents first, so a
    /// directory's parent is on the level before it or already there).
    pub fn apply(&self, ops: &[Op]) -> Result<Applied, ApplyError> {
        self.open_sync_handle();
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
        // The batch that created the root.
        self.open_sync_handle();
        Ok(total)
    }

    /// Removes the files kept until the end of the pass, and the temporary files of large
    /// files a `Resume` announced but no write finished.
    pub fn remove_kept(&self) -> Result<(), ApplyError> {
        let mut kept = std::mem::take(&mut *self.kept.lock().unwrap_or_else(|p| p.into_inner()));
        let resuming =
            std::mem::take(&mut *self.resuming.lock().unwrap_or_else(|p| p.into_inner()));
        kept.extend(resuming.into_keys());
        for p in kept {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err("remove", &p)(e)),
            }
        }
        Ok(())
    }

    /// [`Applier::remove_kept`], then makes everything written so far durable (one `syncfs`
    /// for the whole file system, instead of an fsync per file).
    pub fn sync(&self) -> Result<(), ApplyError> {
        self.remove_kept()?;
        self.open_sync_handle();
        let h = self.sync_handle.lock().unwrap_or_else(|p| p.into_inner());
        let f = match h.as_ref() {
            Some(f) => f,
            None => &std::fs::File::open(&self.root).map_err(err("open", &self.root))?,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is valid for the lifetime of `f`.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(err("sync file system of", &self.root)(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

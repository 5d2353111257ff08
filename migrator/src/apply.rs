//! The destination side of a file sync: operations and how they are applied to a directory.
//!
//! The same code runs in-process for a local destination and inside `migrator receive` on the
//! far side of an SSH connection. Every write goes to a temporary name in the same directory and
//! is renamed into place only once its content and metadata are complete, so a killed pass
//! never leaves a torn file under the real name; leftovers carry [`TEMP_PREFIX`] and are
//! removed by the next pass.

use crate::manifest::{join, Kind, TEMP_PREFIX};
use rayon::prelude::*;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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
    pub fn of(e: &crate::manifest::Entry) -> Meta {
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
    /// Write a file atomically (temporary name, then rename).
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
}

/// The temporary name for `rel` (same directory, so the rename is atomic).
pub fn temp_path(root: &Path, rel: &[u8]) -> PathBuf {
    let full = join(root, rel);
    let name = full.file_name().map(|n| n.as_bytes()).unwrap_or(b"");
    let mut tmp = TEMP_PREFIX.to_vec();
    tmp.extend_from_slice(name);
    full.with_file_name(std::ffi::OsStr::from_bytes(&tmp))
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))
}

fn set_times(p: &Path, meta: &Meta) -> std::io::Result<()> {
    let c = cpath(p)?;
    let ts = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: meta.mtime_s as libc::time_t,
            tv_nsec: meta.mtime_ns as _,
        },
    ];
    // SAFETY: c is a valid NUL-terminated path, ts points to two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Copies `input` to the (empty) `out` in the kernel: one `fstat` for the size, then
/// `copy_file_range` until that many bytes moved or the source ends (a file growing meanwhile
/// keeps its old manifest mtime, so the next pass copies it again). Falls back to read/write
/// where the kernel cannot (other file systems, old kernels).
fn copy_whole(input: &std::fs::File, out: &std::fs::File) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let size = input.metadata()?.len();
    let mut done = 0u64;
    while done < size {
        let want = (size - done).min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the duration of the call; null offsets mean
        // "use and advance the file positions".
        let n = unsafe {
            libc::copy_file_range(
                input.as_raw_fd(),
                std::ptr::null_mut(),
                out.as_raw_fd(),
                std::ptr::null_mut(),
                want,
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {
                    let (mut i, mut o) = (input, out);
                    Ok(done + std::io::copy(&mut i, &mut o)?)
                }
                Some(libc::EINTR) => continue,
                _ => Err(e),
            };
        }
        if n == 0 {
            break; // shrank meanwhile
        }
        done += n as u64;
    }
    Ok(done)
}

fn lchown(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let c = cpath(p)?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn chmod(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Applier {
    pub fn new(root: &Path) -> Applier {
        Applier {
            root: root.to_path_buf(),
            // SAFETY: geteuid has no preconditions.
            chown: unsafe { libc::geteuid() } == 0,
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

    fn write_file(&self, rel: &[u8], meta: &Meta, data: &Data) -> Result<Applied, ApplyError> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let dst = join(&self.root, rel);
        let tmp = temp_path(&self.root, rel);
        let mut applied = Applied::default();
        // Metadata is set through the open descriptor (no path lookups), then one rename.
        let create = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err("create", &tmp))
        };
        let mut out = match data {
            Data::Local(src) => {
                let input = match std::fs::File::open(src) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        applied.warnings.push(format!(
                            "{}: vanished from the source during the pass; the next pass will reconcile",
                            src.display()
                        ));
                        return Ok(applied);
                    }
                    Err(e) => return Err(err("open source", src)(e)),
                };
                let out = create()?;
                applied.bytes = copy_whole(&input, &out).map_err(err("copy to", &tmp))?;
                out
            }
            Data::Inline(bytes) => {
                let mut out = create()?;
                out.write_all(bytes).map_err(err("write", &tmp))?;
                applied.bytes = bytes.len() as u64;
                out
            }
            Data::Staged => {
                let out = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&tmp)
                    .map_err(err("find staged", &tmp))?;
                applied.bytes = out.metadata().map_err(err("stat", &tmp))?.len();
                out
            }
        };
        if self.chown {
            std::os::unix::fs::fchown(&out, Some(meta.uid), Some(meta.gid))
                .map_err(err("chown", &tmp))?;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            out.set_permissions(std::fs::Permissions::from_mode(meta.mode))
                .map_err(err("chmod", &tmp))?;
        }
        let ts = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            libc::timespec {
                tv_sec: meta.mtime_s as libc::time_t,
                tv_nsec: meta.mtime_ns as _,
            },
        ];
        // SAFETY: the descriptor is open for the lifetime of `out`; ts holds two timespecs.
        if unsafe { libc::futimens(out.as_raw_fd(), ts.as_ptr()) } != 0 {
            return Err(err("set times of", &tmp)(std::io::Error::last_os_error()));
        }
        out.flush().map_err(err("write", &tmp))?;
        drop(out);
        std::fs::rename(&tmp, &dst).map_err(err("rename into", &dst))?;
        applied.files = 1;
        Ok(applied)
    }

    fn symlink(&self, rel: &[u8], target: &[u8], meta: &Meta) -> Result<Applied, ApplyError> {
        let dst = join(&self.root, rel);
        let tmp = temp_path(&self.root, rel);
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &tmp)
            .map_err(err("create symlink", &tmp))?;
        self.finish_meta(&tmp, Kind::Symlink, meta)?;
        std::fs::rename(&tmp, &dst).map_err(err("rename into", &dst))?;
        Ok(Applied {
            files: 1,
            ..Default::default()
        })
    }

    fn one(&self, op: &Op) -> Result<Applied, ApplyError> {
        match op {
            Op::RemoveTemp { path } | Op::Delete { path } => {
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
                let f = if *offset == 0 {
                    std::fs::File::create(&tmp)
                } else {
                    std::fs::OpenOptions::new().write(true).open(&tmp)
                }
                .map_err(err("open", &tmp))?;
                use std::os::unix::fs::FileExt;
                f.write_all_at(data, *offset).map_err(err("write", &tmp))?;
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

    /// Applies a batch in order, parallelising runs of independent file and symlink writes.
    pub fn apply(&self, ops: &[Op]) -> Result<Applied, ApplyError> {
        let mut total = Applied::default();
        let mut merge = |a: Applied| {
            total.bytes += a.bytes;
            total.files += a.files;
            total.warnings.extend(a.warnings);
        };
        let parallel = |op: &Op| matches!(op, Op::File { .. } | Op::Symlink { .. });
        let mut i = 0;
        while i < ops.len() {
            if parallel(&ops[i]) {
                let start = i;
                while i < ops.len() && parallel(&ops[i]) {
                    i += 1;
                }
                let parts: Vec<Applied> = ops[start..i]
                    .par_iter()
                    .map(|op| self.one(op))
                    .collect::<Result<_, _>>()?;
                parts.into_iter().for_each(&mut merge);
            } else {
                merge(self.one(&ops[i])?);
                i += 1;
            }
        }
        Ok(total)
    }

    /// Makes everything written so far durable (one `syncfs` for the whole file system,
    /// instead of an fsync per file).
    pub fn sync(&self) -> Result<(), ApplyError> {
        let f = std::fs::File::open(&self.root).map_err(err("open", &self.root))?;
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

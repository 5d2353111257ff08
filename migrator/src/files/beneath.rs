//! Every file access of a sync stays inside its home, whatever the customer does meanwhile.
//!
//! The migrator runs as root over homes whose content the customer controls, while the site is
//! live: any directory of a path may be swapped for a symlink (to `/etc`, to another customer's
//! home) between the walk and the read or write, and any file for a FIFO or a device. So a
//! path is never handed to the kernel from `/`: a [`Tree`] holds its root open, and an entry
//! is reached from it with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (one system call,
//! no symlink followed in any component, no `..` above the root); on kernels without
//! `openat2` (before 5.6) each component is opened with `openat(O_NOFOLLOW)` from its parent's
//! descriptor. Operations on the last component (`unlinkat`, `renameat`, `fchownat`, …) run
//! on the parent directory's descriptor with the `*at` calls that do not follow it.
//!
//! Relative paths come from manifests and, on the receiving side of SSH, from the wire:
//! [`check_rel`] refuses absolute ones, `..`, `.`, empty components and NUL.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Why a relative path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path {path:?} refused: {why}")]
pub struct BadPath {
    /// The path as received, escaped where not UTF-8.
    pub path: String,
    pub why: &'static str,
}

/// A relative manifest path must stay inside its root: no leading `/`, no `..` or `.`
/// component, no empty component (`a//b`, trailing `/`), no NUL. The empty path is the root.
pub fn check_rel(rel: &[u8]) -> Result<(), BadPath> {
    let bad = |why| {
        Err(BadPath {
            path: crate::files::manifest::display(rel),
            why,
        })
    };
    if rel.is_empty() {
        return Ok(());
    }
    if rel[0] == b'/' {
        return bad("absolute");
    }
    if rel.contains(&0) {
        return bad("contains NUL");
    }
    for c in rel.split(|&b| b == b'/') {
        match c {
            b"" => return bad("empty component"),
            b".." => return bad("`..` component"),
            b"." => return bad("`.` component"),
            _ => {}
        }
    }
    Ok(())
}

/// `rel` split into its parent (empty: the root) and last component.
pub fn split_parent(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&rel[..0], rel),
    }
}

fn cstr(b: &[u8]) -> std::io::Result<CString> {
    CString::new(b).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL"))
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A directory whose entries are reached without leaving it.
#[derive(Debug)]
pub struct Tree {
    path: PathBuf,
    /// Opened `O_RDONLY | O_DIRECTORY` (the operator's path, followed if it is a symlink): the
    /// anchor of every lookup, and `fchmod`/`fchown`/`futimens` of the root itself.
    fd: OwnedFd,
}

/// A directory reached inside a [`Tree`]: the root itself (borrowed) or one opened `O_PATH`.
pub enum DirFd<'a> {
    Root(BorrowedFd<'a>),
    Opened(OwnedFd),
}

impl AsFd for DirFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DirFd::Root(b) => *b,
            DirFd::Opened(o) => o.as_fd(),
        }
    }
}

impl Tree {
    pub fn open(path: &Path) -> std::io::Result<Tree> {
        let c = cstr(path.as_os_str().as_bytes())?;
        // SAFETY: c is NUL-terminated.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Tree {
            path: path.to_path_buf(),
            // SAFETY: fd was just opened and is owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The absolute path of `rel`, for messages only (never opened).
    pub fn display(&self, rel: &[u8]) -> PathBuf {
        crate::files::manifest::join(&self.path, rel)
    }

    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `rel` (non-empty, checked by [`check_rel`]) with `flags` (`O_NOFOLLOW` and
    /// `O_CLOEXEC` added): no symlink is followed in any component, nothing outside the root
    /// is reached. A symlink anywhere on the way fails with `ELOOP`.
    pub fn open_at(&self, rel: &[u8], flags: libc::c_int, mode: u32) -> std::io::Result<OwnedFd> {
        check_rel(rel).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        open_beneath(self.fd.as_raw_fd(), rel, flags, mode)
    }

    /// The parent directory of `rel` (an `O_PATH` descriptor, reached as [`Tree::open_at`]
    /// does) and the last component, for the `*at` calls.
    pub fn parent_of<'a, 'r>(&'a self, rel: &'r [u8]) -> std::io::Result<(DirFd<'a>, &'r [u8])> {
        check_rel(rel).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        if rel.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the root has no parent inside the tree",
            ));
        }
        let (parent, name) = split_parent(rel);
        if parent.is_empty() {
            return Ok((DirFd::Root(self.fd.as_fd()), name));
        }
        let fd = open_beneath(
            self.fd.as_raw_fd(),
            parent,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        Ok((DirFd::Opened(fd), name))
    }
}

/// Whether this kernel has `openat2` (cleared by the first `ENOSYS`).
static OPENAT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

fn open_beneath(
    root: RawFd,
    rel: &[u8],
    flags: libc::c_int,
    mode: u32,
) -> std::io::Result<OwnedFd> {
    use std::sync::atomic::Ordering;
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    if OPENAT2.load(Ordering::Relaxed) {
        let c = cstr(rel)?;
        // SAFETY: open_how is plain data; all zeros is its "nothing asked" value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = flags as u64;
        if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
            how.mode = mode as u64;
        }
        how.resolve =
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        // A rename elsewhere in the file system during the lookup makes RESOLVE_BENEATH fail
        // with EAGAIN (it cannot prove the walk stayed inside): try again, a bounded number
        // of times.
        for _ in 0..16 {
            // SAFETY: c is NUL-terminated, how is a valid open_how of the size given.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    root,
                    c.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if fd >= 0 {
                // SAFETY: the kernel returned a new descriptor we own.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                Some(libc::ENOSYS) => {
                    OPENAT2.store(false, Ordering::Relaxed);
                    break;
                }
                _ => return Err(e),
            }
        }
        if OPENAT2.load(Ordering::Relaxed) {
            return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
        }
    }
    // Without openat2: one component at a time, none followed.
    let (parent, name) = split_parent(rel);
    let mut dir: Option<OwnedFd> = None;
    for c in parent.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        let at = dir.as_ref().map_or(root, |d| d.as_raw_fd());
        dir = Some(openat(
            at,
            c,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0,
        )?);
    }
    openat(
        dir.as_ref().map_or(root, |d| d.as_raw_fd()),
        name,
        flags,
        mode,
    )
}

fn openat(dir: RawFd, name: &[u8], flags: libc::c_int, mode: u32) -> std::io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: c is NUL-terminated; dir is an open descriptor.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `name` in `dir` (not following it) with `flags`.
pub fn open_in(
    dir: &impl AsFd,
    name: &[u8],
    flags: libc::c_int,
    mode: u32,
) -> std::io::Result<OwnedFd> {
    openat(
        dir.as_fd().as_raw_fd(),
        name,
        flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        mode,
    )
}

/// `fstatat(AT_SYMLINK_NOFOLLOW)`.
pub fn stat_in(dir: &impl AsFd, name: &[u8]) -> std::io::Result<libc::stat> {
    let c = cstr(name)?;
    // SAFETY: a zeroed stat is a valid out-buffer; c is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe {
        libc::fstatat(
            dir.as_fd().as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// `fstat` of an open descriptor.
pub fn fstat(f: &impl AsFd) -> std::io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid out-buffer; the descriptor is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(f.as_fd().as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub fn readlink_in(dir: &impl AsFd, name: &[u8]) -> std::io::Result<Vec<u8>> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: c is NUL-terminated; buf is writable for its length.
    let n = unsafe {
        libc::readlinkat(
            dir.as_fd().as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

pub fn unlink_in(dir: &impl AsFd, name: &[u8], flags: libc::c_int) -> std::io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: c is NUL-terminated.
    check(unsafe { libc::unlinkat(dir.as_fd().as_raw_fd(), c.as_ptr(), flags) })
}

pub fn mkdir_in(dir: &impl AsFd, name: &[u8], mode: u32) -> std::io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: c is NUL-terminated.
    check(unsafe { libc::mkdirat(dir.as_fd().as_raw_fd(), c.as_ptr(), mode) })
}

pub fn symlink_in(dir: &impl AsFd, name: &[u8], target: &[u8]) -> std::io::Result<()> {
    let (c, t) = (cstr(name)?, cstr(target)?);
    // SAFETY: both are NUL-terminated.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_fd().as_raw_fd(), c.as_ptr()) })
}

/// `renameat`: replaces `to` atomically (never follows either name).
pub fn rename_in(
    from_dir: &impl AsFd,
    from: &[u8],
    to_dir: &impl AsFd,
    to: &[u8],
) -> std::io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: both are NUL-terminated; the descriptors are open.
    check(unsafe {
        libc::renameat(
            from_dir.as_fd().as_raw_fd(),
            f.as_ptr(),
            to_dir.as_fd().as_raw_fd(),
            t.as_ptr(),
        )
    })
}

/// `linkat` without following `from` (a symlink is linked as itself).
pub fn link_in(
    from_dir: &impl AsFd,
    from: &[u8],
    to_dir: &impl AsFd,
    to: &[u8],
) -> std::io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: both are NUL-terminated; the descriptors are open.
    check(unsafe {
        libc::linkat(
            from_dir.as_fd().as_raw_fd(),
            f.as_ptr(),
            to_dir.as_fd().as_raw_fd(),
            t.as_ptr(),
            0,
        )
    })
}

/// Owner of `name` itself (`AT_SYMLINK_NOFOLLOW`: a symlink's own owner).
pub fn chown_in(dir: &impl AsFd, name: &[u8], uid: u32, gid: u32) -> std::io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: c is NUL-terminated.
    check(unsafe {
        libc::fchownat(
            dir.as_fd().as_raw_fd(),
            c.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Modification time of `name` itself (`AT_SYMLINK_NOFOLLOW`), access time left alone.
pub fn set_mtime_in(dir: &impl AsFd, name: &[u8], ts: &[libc::timespec; 2]) -> std::io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: c is NUL-terminated; ts points to two timespecs.
    check(unsafe {
        libc::utimensat(
            dir.as_fd().as_raw_fd(),
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Removes `name` in `dir`: a file or symlink, or a whole directory tree, each level opened
/// from its parent's descriptor without following anything. Missing is fine.
pub fn remove_in(dir: &impl AsFd, name: &[u8]) -> std::io::Result<()> {
    let st = match stat_in(dir, name) {
        Ok(st) => st,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return match unlink_in(dir, name, 0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let sub = open_in(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    for child in list_dir(&sub)? {
        remove_in(&sub, &child)?;
    }
    drop(sub);
    match unlink_in(dir, name, libc::AT_REMOVEDIR) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The names in an open directory (without `.` and `..`). Reads through a duplicate of the
/// descriptor, so `dir` stays usable.
pub fn list_dir(dir: &impl AsFd) -> std::io::Result<Vec<Vec<u8>>> {
    // SAFETY: dup of an open descriptor; fdopendir takes ownership of the copy.
    let dup = unsafe { libc::fcntl(dir.as_fd().as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: dup is a directory descriptor we own; on success the DIR owns it.
    let d = unsafe { libc::fdopendir(dup) };
    if d.is_null() {
        let e = std::io::Error::last_os_error();
        // SAFETY: fdopendir failed, so we still own dup.
        unsafe { libc::close(dup) };
        return Err(e);
    }
    // The shared file offset of a dup: start from the beginning.
    // SAFETY: d is a valid DIR.
    unsafe { libc::rewinddir(d) };
    let mut out = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; d is valid.
        unsafe { *libc::__errno_location() = 0 };
        let ent = unsafe { libc::readdir64(d) };
        if ent.is_null() {
            let errno = unsafe { *libc::__errno_location() };
            break if errno == 0 {
                Ok(())
            } else {
                Err(std::io::Error::from_raw_os_error(errno))
            };
        }
        // SAFETY: d_name is NUL-terminated inside the entry readdir returned.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            out.push(name.to_vec());
        }
    };
    // SAFETY: d is valid and closed once (this also closes dup).
    unsafe { libc::closedir(d) };
    result.map(|()| out)
}

/// Why a source file cannot be read.
pub enum SourceFailure {
    /// It vanished, became a symlink (anywhere on its path) or something other than a regular
    /// file (the site is live): a warning, the next pass reconciles.
    Gone(&'static str),
    Error(std::io::Error),
}

/// Opens source file `rel` of `tree` for reading: beneath the root, no symlink followed in any
/// component, never blocking on a FIFO swapped in (`O_NONBLOCK`), and only if `fstat` says
/// it is still a regular file (a device is opened but never read).
pub fn open_source(tree: &Tree, rel: &[u8]) -> Result<(File, libc::stat), SourceFailure> {
    let fd = match tree.open_at(rel, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY, 0) {
        Ok(fd) => fd,
        Err(e) => {
            return Err(match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => {
                    SourceFailure::Gone("vanished from the source")
                }
                Some(libc::ELOOP) | Some(libc::EXDEV) => {
                    SourceFailure::Gone("is now reached through a symlink; not followed")
                }
                _ => SourceFailure::Error(e),
            })
        }
    };
    let f = File::from(fd);
    let st = fstat(&f).map_err(SourceFailure::Error)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(SourceFailure::Gone("is no longer a regular file"));
    }
    Ok((f, st))
}

/// `OsStr` of raw bytes, for messages.
pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_that_leave_the_root_are_refused() {
        for ok in [&b""[..], b"a", b"a/b", b"..a/b..", b".hidden/x"] {
            assert!(check_rel(ok).is_ok(), "{ok:?}");
        }
        for (bad, why) in [
            (&b"/etc/passwd"[..], "absolute"),
            (b"../x", "`..` component"),
            (b"a/../../x", "`..` component"),
            (b"a//b", "empty component"),
            (b"a/", "empty component"),
            (b"./a", "`.` component"),
            (b"a\0b", "contains NUL"),
        ] {
            assert_eq!(check_rel(bad).unwrap_err().why, why, "{bad:?}");
        }
    }

    #[test]
    fn an_intermediate_symlink_is_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("home");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::write(root.join("real/f"), b"in").unwrap();
        std::fs::create_dir(d.path().join("outside")).unwrap();
        std::fs::write(d.path().join("outside/f"), b"secret").unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), root.join("link")).unwrap();
        let t = Tree::open(&root).unwrap();
        assert!(t.open_at(b"real/f", libc::O_RDONLY, 0).is_ok());
        let e = t.open_at(b"link/f", libc::O_RDONLY, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        assert!(t.parent_of(b"link/f").is_err());
        let (dir, name) = t.parent_of(b"real/f").unwrap();
        assert_eq!(stat_in(&dir, name).unwrap().st_size, 2);
        remove_in(&t.root_fd(), b"real").unwrap();
        assert!(!root.join("real").exists());
        assert!(d.path().join("outside/f").exists());
    }
}

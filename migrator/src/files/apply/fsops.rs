//! The system calls a destination write is made of, each refusing to follow a symlink where
//! the path could be swapped under us: times, owner, mode, removal, and opening a source file.

use super::Meta;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))
}

/// Access time left alone, modification time from `meta` (for `utimensat`/`futimens`).
pub(super) fn mtime_only(meta: &Meta) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: meta.mtime_s as libc::time_t,
            tv_nsec: meta.mtime_ns as _,
        },
    ]
}

pub(super) fn set_times(p: &Path, meta: &Meta) -> std::io::Result<()> {
    let c = cpath(p)?;
    let ts = mtime_only(meta);
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

/// `fstat` of an open file (the raw struct: mode, owner, inode, times with nanoseconds).
pub(super) fn fstat(f: &File) -> std::io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid out-buffer; the descriptor is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(f.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// Why a source file cannot be copied.
pub(super) enum SourceFailure {
    /// It vanished or is no longer a regular file (the site is live): a warning.
    SourceGone(&'static str),
    SourceError(std::io::Error),
}
use SourceFailure::{SourceError, SourceGone};

/// Opens a source file for copying: never through a symlink (a file swapped for a link to
/// `/etc/shadow` between the walk and the copy is not followed), never blocking on a FIFO
/// swapped in, and only if it is still a regular file.
pub(super) fn open_source(src: &Path) -> Result<(File, libc::stat), SourceFailure> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(src);
    let f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SourceGone("vanished from the source"))
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(SourceGone("became a symlink"))
        }
        Err(e) => return Err(SourceError(e)),
    };
    let st = fstat(&f).map_err(SourceError)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(SourceGone("is no longer a regular file"));
    }
    Ok((f, st))
}

pub(super) fn lchown(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let c = cpath(p)?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn chmod(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

pub(super) fn remove_any(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

//! Owner, mode and times of a destination entry, always through a descriptor or a `*at`
//! call on its parent that does not follow it: a rollback writes into the old home, which the
//! customer can change under us, so a path is never `chmod`ed (it would follow a symlink
//! swapped in to `/etc/shadow`).

use super::Meta;
use crate::files::beneath::{self, fstat, Tree};
use crate::files::manifest::Kind;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

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

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets owner, mode and times through an open descriptor, touching only what differs (a file
/// just created by root for root with the mode asked for at creation needs one `fstat` and
/// the `futimens`; times always last: until they are set the mtime is "now", which no pass
/// takes for a finished copy).
pub(super) fn set_meta_fd(f: BorrowedFd<'_>, meta: &Meta, chown: bool) -> std::io::Result<()> {
    let st = fstat(&f)?;
    let mode = st.st_mode & 0o7777;
    let chowned = chown && (st.st_uid != meta.uid || st.st_gid != meta.gid);
    if chowned {
        // SAFETY: the descriptor is open.
        check(unsafe { libc::fchown(f.as_raw_fd(), meta.uid, meta.gid) })?;
    }
    // chown may clear setuid/setgid: after one, those bits are unknown.
    if mode != meta.mode || (chowned && mode & 0o6000 != 0) {
        // SAFETY: the descriptor is open.
        check(unsafe { libc::fchmod(f.as_raw_fd(), meta.mode as libc::mode_t) })?;
    }
    let ts = mtime_only(meta);
    // SAFETY: the descriptor is open; ts holds two timespecs.
    check(unsafe { libc::futimens(f.as_raw_fd(), ts.as_ptr()) })
}

/// Owner, mode and times of entry `rel` of `tree`, which must still be of `kind`: a file or
/// directory is opened (never following it, never blocking) and changed through its
/// descriptor; a symlink's own owner and times are set on its parent's descriptor.
pub(super) fn set_meta_at(
    tree: &Tree,
    rel: &[u8],
    kind: Kind,
    meta: &Meta,
    chown: bool,
) -> std::io::Result<()> {
    if rel.is_empty() {
        return set_meta_fd(tree.root_fd(), meta, chown);
    }
    let (dir, name) = tree.parent_of(rel)?;
    if kind == Kind::Symlink {
        if chown {
            beneath::chown_in(&dir, name, meta.uid, meta.gid)?;
        }
        return beneath::set_mtime_in(&dir, name, &mtime_only(meta));
    }
    let (flags, want) = match kind {
        Kind::Dir => (libc::O_RDONLY | libc::O_DIRECTORY, libc::S_IFDIR),
        _ => (
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
            libc::S_IFREG,
        ),
    };
    let fd = beneath::open_in(&dir, name, flags, 0).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            std::io::Error::other("is a symlink now; not following it")
        } else {
            e
        }
    })?;
    if fstat(&fd)?.st_mode & libc::S_IFMT != want {
        return Err(std::io::Error::other(
            "is no longer of the kind it was copied as; left alone",
        ));
    }
    set_meta_fd(fd.as_fd(), meta, chown)
}

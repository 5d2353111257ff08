//! The store's lock file: one process at a time uses a store for writing.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::StoreError;

/// `<store>.lock`: an exclusive `flock` for the life of the process, holding its PID for the
/// error another process gets.
pub(super) struct LockFile {
    _file: File,
}

impl LockFile {
    pub(super) fn acquire(store: &Path) -> Result<LockFile, StoreError> {
        let mut s = store.as_os_str().to_owned();
        s.push(".lock");
        let lock = PathBuf::from(s);
        let io = |what| {
            let lock = lock.clone();
            move |source| StoreError::Io {
                path: lock,
                what,
                source,
            }
        };
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock)
            .map_err(io("opening the lock file"))?;
        // SAFETY: flock on a descriptor we own; no memory is shared.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(StoreError::Locked {
                    path: store.into(),
                    lock,
                    pid: pid.trim().to_string(),
                });
            }
            return Err(io("locking")(err));
        }
        file.set_len(0).map_err(io("writing the lock file"))?;
        file.rewind().map_err(io("writing the lock file"))?;
        write!(file, "{}", std::process::id()).map_err(io("writing the lock file"))?;
        Ok(LockFile { _file: file })
    }
}

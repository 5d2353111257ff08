//! `migrator watch`'s socket: a stale one cleared before binding, then one request line and
//! one reply line per connection (split from watch.rs).

use super::{WatchError, Watcher};
use crate::files::feed::{Reply, Request};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Refuses an existing socket path unless it is a stale socket of ours, 0600, that nobody
/// answers on (then it is removed).
pub(super) fn clear_stale_socket(path: &Path) -> Result<(), WatchError> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(WatchError::Io {
                path: path.into(),
                source,
            })
        }
    };
    let refuse = |why: String| WatchError::Socket {
        path: path.into(),
        why,
    };
    if !md.file_type().is_socket() {
        return Err(refuse("exists and is not a socket; not removing it".into()));
    }
    if md.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "exists with mode {:04o} (looser than 0600); remove it if it is yours",
            md.mode() & 0o7777
        )));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(refuse("another watcher is answering on it".into()));
    }
    std::fs::remove_file(path).map_err(|source| WatchError::Io {
        path: path.into(),
        source,
    })
}

impl Watcher {
    fn answer(&mut self, stream: UnixStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let mut line = String::new();
        // A request line is small: never read more than 64 KiB from a client.
        let mut reader = BufReader::new(std::io::Read::take(&stream, 64 * 1024));
        if reader.read_line(&mut line).is_err() || line.is_empty() {
            return;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Checkpoint { root, consumer }) => match hex::decode(&root) {
                Ok(root) => match self.checkpoint(&root, &consumer) {
                    Ok(c) => Reply::Ok(c),
                    Err(e) => Reply::Error(e.to_string()),
                },
                Err(e) => Reply::Error(format!("root is not hex: {e}")),
            },
            Err(e) => Reply::Error(format!("malformed request: {e}")),
        };
        let mut out = serde_json::to_vec(&reply).expect("reply serializes");
        out.push(b'\n');
        let _ = (&stream).write_all(&out);
    }

    /// Serves until `stop` is set (checked at least every 200 ms); removes the socket then.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), WatchError> {
        let Some(listener) = self.listener.take() else {
            return Err(WatchError::Socket {
                path: self.socket.clone(),
                why: "the watcher already ran".into(),
            });
        };
        listener
            .set_nonblocking(true)
            .map_err(|source| WatchError::Io {
                path: self.socket.clone(),
                source,
            })?;
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [
                libc::pollfd {
                    fd: self.inotify.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfd structs.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 200) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(WatchError::Inotify(e));
            }
            if fds[0].revents != 0 {
                self.drain()?;
            }
            if fds[1].revents != 0 {
                while let Ok((s, _)) = listener.accept() {
                    let _ = s.set_nonblocking(false);
                    self.answer(s);
                }
            }
        }
        Ok(())
    }
}

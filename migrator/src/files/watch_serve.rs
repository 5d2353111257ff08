//! `migrator watch`'s socket: one request line, one reply line per connection (split from
//! watch.rs).

use super::{WatchError, Watcher};
use crate::files::feed::{Reply, Request};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
                    Err(e) => Reply::Error(e),
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

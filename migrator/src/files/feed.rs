//! The change feed: what changed under a source root since the last sync pass, so a pass can
//! re-stat only those entries instead of walking the whole home.
//!
//! `migrator watch` ([`crate::files::watch`]) runs where the writes land (the web host, or the
//! filer that owns the disk: inotify on an NFS client does not see other clients' writes) and
//! serves one request on a unix socket: [`Checkpoint`] of a root for a consumer. A checkpoint
//! atomically ends that consumer's current epoch of the root and starts a new one; the reply
//! carries the entries dirtied during the epoch that just ended. Each consumer (a pass uses
//! [`consumer`] of its site/source/destination cache key) has its own epochs, so two syncs of
//! one home (two destinations, an operator's pass next to the wave's) do not break each other's
//! chain; a design improvement over one epoch per root.
//!
//! A pass may replace its source walk by "previous manifest + fresh lstat of the dirty entries"
//! only when the chain is unbroken (README "Change feed"):
//! - same `feed_id` as the last committed pass (a restarted watcher missed events),
//! - `since_seq` equal to the `seq` the last committed pass recorded (no other checkpoint of
//!   this consumer in between, and that pass did commit),
//! - `complete` (no queue overflow, no watch that could not be added, not the first epoch).
//!
//! Anything else, or a socket that is missing, insecure or silent within the timeout, means a
//! full walk, with a warning, never a failed pass.
//!
//! Layout: [`protocol`] holds what crosses the socket (one JSON line each way) and the chain
//! rules ([`continues`]); this file is the pass's side of the socket: [`check_socket`], a
//! bounded connect and exchange, the peer's credentials, [`checkpoint`].

mod protocol;

pub use protocol::{
    consumer, continues, local_root, reply_size, ChainBreak, Checkpoint, Dirty, FeedRecord, Reply,
    Request, DEFAULT_MAX_DIRTY, MAX_REPLY,
};

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a pass waits for the watcher (the whole exchange: connect, request, reply) before
/// walking in full.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("change feed {socket}: {source}")]
    Io {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("change feed {socket}: refusing to use it: {why}")]
    Insecure { socket: PathBuf, why: String },
    #[error("change feed {socket}: refusing to use it: {source}")]
    Peer {
        socket: PathBuf,
        #[source]
        source: PeerRefused,
    },
    #[error("change feed {socket}: malformed reply: {why}")]
    Protocol { socket: PathBuf, why: String },
    #[error("change feed {socket}: the watcher refused: {message}")]
    Refused { socket: PathBuf, message: String },
}

/// The socket must be a socket, owned by us or root, and closed to group and others: a feed
/// that lies "nothing changed" would make a pass skip changed files.
pub fn check_socket(socket: &Path) -> Result<(), FeedError> {
    let md = std::fs::symlink_metadata(socket).map_err(|source| FeedError::Io {
        socket: socket.to_path_buf(),
        source,
    })?;
    let insecure = |why: String| FeedError::Insecure {
        socket: socket.to_path_buf(),
        why,
    };
    if !md.file_type().is_socket() {
        return Err(insecure("not a unix socket".into()));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if md.uid() != me && md.uid() != 0 {
        return Err(insecure(format!(
            "owned by uid {}, not by us (uid {me}) or root",
            md.uid()
        )));
    }
    if md.mode() & 0o077 != 0 {
        return Err(insecure(format!(
            "mode {:04o} lets other users connect; the watcher creates it 0600",
            md.mode() & 0o7777
        )));
    }
    Ok(())
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer in time ({what})"),
    )
}

fn wait_fd(fd: i32, events: i16, deadline: Instant, what: &str) -> std::io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out(what));
        }
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut p, 1, ms) } {
            n if n > 0 => return Ok(()),
            0 => continue,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Connects without ever blocking past `deadline`: a watcher alive but not accepting (its
/// backlog full) is "unavailable" at once, never a hang. The stream is left non-blocking.
fn connect(socket: &Path, deadline: Instant) -> std::io::Result<UnixStream> {
    // SAFETY: a plain zeroed C struct.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = socket.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "socket path too long for a unix socket (or has a NUL)",
        ));
    }
    for (d, b) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *b as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: addr is a valid sockaddr_un of at least `len` bytes.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "the watcher is not accepting connections (its backlog is full)",
                ))
            }
            Some(libc::EINPROGRESS) => {
                wait_fd(fd.as_raw_fd(), libc::POLLOUT, deadline, "connect")?;
                let mut err: libc::c_int = 0;
                let mut n = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: valid fd, out-pointers to locals of the right size.
                let r = unsafe {
                    libc::getsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_ERROR,
                        (&mut err as *mut libc::c_int).cast(),
                        &mut n,
                    )
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if err != 0 {
                    return Err(std::io::Error::from_raw_os_error(err));
                }
            }
            _ => return Err(e),
        }
    }
    Ok(UnixStream::from(fd))
}

/// Why the process answering on the socket is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum PeerRefused {
    #[error("cannot read the watcher's credentials: {0}")]
    Credentials(#[source] std::io::Error),
    #[error("the process answering (pid {pid}) runs as uid {uid}, not as us or root")]
    OtherUser { pid: libc::pid_t, uid: libc::uid_t },
}

/// The process serving the socket must run as one of `allowed` (checked on the connection:
/// the socket file's owner, checked before connecting, may change in between).
fn check_peer(stream: &UnixStream, allowed: &[libc::uid_t]) -> Result<(), PeerRefused> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut n = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: valid fd, out-pointers to locals of the right size.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut n,
        )
    };
    if r < 0 {
        return Err(PeerRefused::Credentials(std::io::Error::last_os_error()));
    }
    if !allowed.contains(&cred.uid) {
        return Err(PeerRefused::OtherUser {
            pid: cred.pid,
            uid: cred.uid,
        });
    }
    Ok(())
}

/// Sends `req` and reads one reply line of at most `max` bytes, all before `deadline` (a
/// watcher trickling its reply does not hold the pass).
fn exchange(
    stream: &mut UnixStream,
    req: &[u8],
    deadline: Instant,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let fd = stream.as_raw_fd();
    let mut sent = 0;
    while sent < req.len() {
        match stream.write(&req[sent..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                wait_fd(fd, libc::POLLOUT, deadline, "sending the request")?
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut reply = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if Instant::now() >= deadline {
            return Err(timed_out("the reply"));
        }
        match stream.read(&mut buf) {
            Ok(0) => return Ok(reply),
            Ok(n) => {
                let nl = buf[..n].iter().position(|&b| b == b'\n');
                let take = nl.map_or(n, |i| i + 1);
                if reply.len() + take > max {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("the reply is longer than {max} bytes"),
                    ));
                }
                reply.extend_from_slice(&buf[..take]);
                if nl.is_some() {
                    return Ok(reply);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                wait_fd(fd, libc::POLLIN, deadline, "the reply")?
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Takes a checkpoint of `root`: the path as the watcher knows it (sent as given; the watcher
/// canonicalizes it on its side when it does not match one of its roots exactly). With the
/// watcher on this host, [`local_root`] of the source is right; on a filer exporting the home
/// under another path, give that path. `timeout` bounds the whole exchange.
pub fn checkpoint(
    socket: &Path,
    root: &Path,
    consumer: &str,
    timeout: Duration,
) -> Result<Checkpoint, FeedError> {
    checkpoint_with(socket, root, consumer, timeout, MAX_REPLY)
}

fn checkpoint_with(
    socket: &Path,
    root: &Path,
    consumer: &str,
    timeout: Duration,
    max_reply: usize,
) -> Result<Checkpoint, FeedError> {
    let deadline = Instant::now() + timeout;
    let io = |source| FeedError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    check_socket(socket)?;
    let mut stream = connect(socket, deadline).map_err(io)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    check_peer(&stream, &[me, 0]).map_err(|source| FeedError::Peer {
        socket: socket.to_path_buf(),
        source,
    })?;
    let req = Request::Checkpoint {
        root: hex::encode(root.as_os_str().as_bytes()),
        consumer: consumer.to_string(),
    };
    let mut line = serde_json::to_vec(&req).expect("request serializes");
    line.push(b'\n');
    let reply = exchange(&mut stream, &line, deadline, max_reply).map_err(io)?;
    let protocol = |why: String| FeedError::Protocol {
        socket: socket.to_path_buf(),
        why,
    };
    if reply.is_empty() {
        return Err(protocol("the watcher closed the connection".into()));
    }
    match serde_json::from_slice::<Reply>(&reply).map_err(|e| protocol(e.to_string()))? {
        Reply::Ok(c) => Ok(c),
        Reply::Error(message) => Err(FeedError::Refused {
            socket: socket.to_path_buf(),
            message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;
    use std::time::Instant;

    #[test]
    fn silent_watcher_times_out_and_loose_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("feed.sock");
        // Bound but never accepting: the connect succeeds (backlog), the reply never comes.
        let _l = UnixListener::bind(&sock).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = std::time::Instant::now();
        let err = checkpoint(&sock, dir.path(), "t", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, FeedError::Io { .. }), "{err}");
        assert!(t.elapsed() < Duration::from_secs(2));
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = checkpoint(&sock, dir.path(), "t", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, FeedError::Insecure { .. }), "{err}");
        let missing = checkpoint(&dir.path().join("nope"), dir.path(), "t", DEFAULT_TIMEOUT);
        assert!(matches!(missing, Err(FeedError::Io { .. })));
    }

    fn listener(dir: &Path) -> (PathBuf, UnixListener) {
        let sock = dir.join("feed.sock");
        let l = UnixListener::bind(&sock).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
        (sock, l)
    }

    /// Runs `f` on a thread; its result, or `None` when it did not end within `limit` (the
    /// thread is left behind: the test fails).
    fn within<T: Send + 'static>(
        limit: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(limit).ok()
    }

    #[test]
    fn a_watcher_with_a_full_backlog_is_unavailable_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, _l) = listener(dir.path());
        // Fill the backlog: connections nobody accepts, kept open.
        let mut queued = Vec::new();
        let far = Instant::now() + Duration::from_secs(5);
        while queued.len() < 10_000 {
            match connect(&sock, far) {
                Ok(s) => queued.push(s),
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
                    break;
                }
            }
        }
        assert!(queued.len() < 10_000, "the backlog never filled");
        let (s, root) = (sock.clone(), dir.path().to_path_buf());
        let t = Instant::now();
        let r = within(Duration::from_secs(10), move || {
            checkpoint(&s, &root, "t", Duration::from_millis(300))
        });
        let err = r.expect("checkpoint hung in connect").unwrap_err();
        assert!(matches!(err, FeedError::Io { .. }), "{err}");
        assert!(err.to_string().contains("backlog"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_trickling_or_endless_reply_ends_at_the_deadline_or_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, l) = listener(dir.path());
        // Trickles a byte every 20 ms for up to 10 s: each read succeeds, none ends the line.
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut s, _) = l.accept().unwrap();
                let mut req = [0u8; 4096];
                let _ = s.read(&mut req);
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(10) {
                    if s.write_all(b" ").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        let t = Instant::now();
        let err = checkpoint(&sock, dir.path(), "t", Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, FeedError::Io { .. }), "{err}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // The same reply against a small cap: refused once longer than the cap.
        let t = Instant::now();
        let err = checkpoint_with(&sock, dir.path(), "t", Duration::from_secs(30), 10).unwrap_err();
        assert!(err.to_string().contains("longer than 10 bytes"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        server.join().unwrap();
    }

    #[test]
    fn a_peer_of_another_uid_is_refused() {
        let (a, _b) = UnixStream::pair().unwrap();
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        assert!(check_peer(&a, &[me]).is_ok());
        let err = check_peer(&a, &[me.wrapping_add(4242)]).unwrap_err();
        assert!(
            matches!(err, PeerRefused::OtherUser { uid, .. } if uid == me),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("runs as uid {me}")),
            "{err}"
        );
    }
}

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
//! Wire format: one JSON line each way. Paths are hex-encoded raw bytes (names need not be
//! UTF-8), relative to the root, `/`-separated; the empty path is the root itself.

use serde::{Deserialize, Serialize};
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

/// `migrator watch --max-dirty` by default.
pub const DEFAULT_MAX_DIRTY: usize = 100_000;

/// The largest reply a pass reads: [`DEFAULT_MAX_DIRTY`] entries with paths of ~280 bytes
/// (hex-encoded, JSON around them). The watcher answers "incomplete" rather than send more; a
/// longer reply is refused (a full walk).
pub const MAX_REPLY: usize = DEFAULT_MAX_DIRTY * 640;

/// The reply size of `dirty` entries (paths hex-encoded, the JSON around each), bounded above.
pub fn reply_size<'a>(paths: impl Iterator<Item = &'a [u8]>) -> usize {
    4096 + paths.map(|p| 2 * p.len() + 40).sum::<usize>()
}

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
    #[error("change feed {socket}: malformed reply: {why}")]
    Protocol { socket: PathBuf, why: String },
    #[error("change feed {socket}: the watcher refused: {message}")]
    Refused { socket: PathBuf, message: String },
}

/// One dirty entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dirty {
    /// Relative path, hex of the raw bytes.
    pub path: String,
    /// The whole subtree must be walked (a directory created, moved in or re-created: files
    /// written into it before its watch existed raised no event).
    pub recursive: bool,
}

impl Dirty {
    pub fn new(path: &[u8], recursive: bool) -> Dirty {
        Dirty {
            path: hex::encode(path),
            recursive,
        }
    }
    /// The raw relative path; `None` if the hex is damaged.
    pub fn path_bytes(&self) -> Option<Vec<u8>> {
        hex::decode(&self.path).ok()
    }
}

/// The reply to a checkpoint: the epoch that just ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Random per watcher start: a different id means events were missed while no watcher ran.
    pub feed_id: String,
    /// The epoch this checkpoint starts; record it when the pass commits.
    pub seq: u64,
    /// The `seq` of the previous checkpoint of this root (0: none since the watcher started).
    pub since_seq: u64,
    /// Every change of the ended epoch is in `dirty` (false after an overflow, a watch that
    /// could not be added, or for the first epoch).
    pub complete: bool,
    /// Why the epoch is incomplete, for the operator.
    #[serde(default)]
    pub reason: Option<String>,
    /// Entries changed during the ended epoch (empty when not complete).
    pub dirty: Vec<Dirty>,
}

/// A request on the socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Hex of the root's absolute path; `consumer` names whose chain this is (each consumer
    /// has its own epochs; a pass uses [`consumer`] of its cache key).
    Checkpoint {
        root: String,
        #[serde(default)]
        consumer: String,
    },
}

/// The watcher's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok(Checkpoint),
    Error(String),
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

/// The process serving the socket must run as one of `allowed` (checked on the connection:
/// the socket file's owner, checked before connecting, may change in between).
fn check_peer(stream: &UnixStream, allowed: &[libc::uid_t]) -> Result<(), String> {
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
        return Err(format!(
            "cannot read the watcher's credentials: {}",
            std::io::Error::last_os_error()
        ));
    }
    if !allowed.contains(&cred.uid) {
        return Err(format!(
            "the process answering (pid {}) runs as uid {}, not as us or root",
            cred.pid, cred.uid
        ));
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
    check_peer(&stream, &[me, 0]).map_err(|why| FeedError::Insecure {
        socket: socket.to_path_buf(),
        why,
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

/// The consumer name of a sync (site, source, destination): its journal cache key, hashed.
pub fn consumer(cache_key: &str) -> String {
    blake3::hash(cache_key.as_bytes()).to_hex()[..16].to_string()
}

/// The canonical path of a local source root (what a watcher on this host was given, resolved).
pub fn local_root(root: &Path) -> PathBuf {
    std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf())
}

/// What the last committed pass recorded of the feed (in the journal, next to the cache).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedRecord {
    pub feed_id: String,
    pub seq: u64,
}

/// Whether `cp` continues the chain of the last committed pass; `Err` says why not.
pub fn continues(prev: Option<&FeedRecord>, cp: &Checkpoint) -> Result<(), String> {
    let Some(prev) = prev else {
        return Err("no earlier pass recorded this feed".into());
    };
    if prev.feed_id != cp.feed_id {
        return Err("the watcher restarted since the last pass (new feed id)".into());
    }
    if prev.seq != cp.since_seq {
        return Err(format!(
            "another checkpoint was taken after the last committed pass (seq {} recorded, \
             the feed continues from {})",
            prev.seq, cp.since_seq
        ));
    }
    if !cp.complete {
        return Err(cp
            .reason
            .clone()
            .unwrap_or_else(|| "the feed is incomplete".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;
    use std::time::Instant;

    fn cp(feed_id: &str, since: u64, complete: bool) -> Checkpoint {
        Checkpoint {
            feed_id: feed_id.into(),
            seq: since + 1,
            since_seq: since,
            complete,
            reason: None,
            dirty: vec![],
        }
    }

    #[test]
    fn chain_breaks_on_restart_gap_incomplete_and_first_pass() {
        let rec = FeedRecord {
            feed_id: "a".into(),
            seq: 4,
        };
        assert_eq!(continues(Some(&rec), &cp("a", 4, true)), Ok(()));
        assert!(continues(Some(&rec), &cp("b", 4, true))
            .unwrap_err()
            .contains("restarted"));
        assert!(continues(Some(&rec), &cp("a", 5, true))
            .unwrap_err()
            .contains("another checkpoint"));
        assert!(continues(Some(&rec), &cp("a", 4, false)).is_err());
        assert!(continues(None, &cp("a", 4, true)).is_err());
    }

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

    #[test]
    fn dirty_paths_survive_non_utf8() {
        let d = Dirty::new(b"caf\xe9/x", true);
        let back: Dirty = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back.path_bytes().unwrap(), b"caf\xe9/x");
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
        assert_eq!(check_peer(&a, &[me]), Ok(()));
        let err = check_peer(&a, &[me.wrapping_add(4242)]).unwrap_err();
        assert!(err.contains(&format!("runs as uid {me}")), "{err}");
    }

    #[test]
    fn the_watcher_never_sends_a_reply_longer_than_the_cap() {
        let many = std::iter::repeat_n(&[b'x'; 280][..], DEFAULT_MAX_DIRTY);
        assert!(reply_size(many) <= MAX_REPLY);
        let longer = std::iter::repeat_n(&[b'x'; 400][..], DEFAULT_MAX_DIRTY);
        assert!(reply_size(longer) > MAX_REPLY);
    }
}

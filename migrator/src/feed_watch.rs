//! `migrator watch`: inotify over source roots, serving checkpoints of what changed
//! ([`crate::change_feed`] has the protocol and the rules a pass follows).
//!
//! One thread, one `poll` over the inotify descriptor and the listening socket. A checkpoint
//! first drains every event already queued by the kernel (a write that returned before the
//! request was sent has queued its event: inotify is synchronous with the syscall), then cuts
//! the epoch: so a pass that starts after its checkpoint misses nothing that happened before.
//!
//! Events, per watched directory `D` (one watch per directory: `max_user_watches`):
//! - a named event on `D/n` dirties `D/n` and `D` (its mtime changed too);
//! - a directory created or moved in at `D/n` gets watches on its whole subtree and is dirty
//!   *recursive* (files written between `mkdir` and our `add_watch` raised no event);
//! - a directory moved away or deleted: its old path is dirty recursive (the pass drops every
//!   entry under it); its watches follow the inode, and are re-pointed when it reappears;
//! - every consumer's open epoch of the root gets the dirty entries (epochs are per consumer);
//! - queue overflow, a watch that cannot be added (ENOSPC: `max_user_watches`), the root itself
//!   moved, deleted or unmounted: every epoch of the root is *lost*, each consumer's next
//!   checkpoint says incomplete (its pass walks everything), the first one re-arms the watches;
//!   more dirty entries than `max_dirty` loses that consumer's epoch only.
//!
//! Not seen by inotify (the pass cannot know; `--full`, `verify` and the final pass in the
//! freeze walk everything): writes through a shared `mmap`, writes by other NFS clients, and
//! writes through a hard link whose other name lies outside the watched root.

use crate::change_feed::{Checkpoint, Dirty, Reply, Request};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("socket {path}: {why}")]
    Socket { path: PathBuf, why: String },
    #[error("inotify: {0}")]
    Inotify(#[source] std::io::Error),
    #[error("cannot watch every directory under {root}: {why}")]
    Watch { root: PathBuf, why: String },
}

/// What to watch and where to answer.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub socket: PathBuf,
    pub roots: Vec<PathBuf>,
    /// More dirty entries than this in one epoch: the root is lost (a walk is cheaper).
    pub max_dirty: usize,
}

const MASK: u32 = libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR
    | libc::IN_DONT_FOLLOW;

/// One consumer's current epoch of one root.
#[derive(Default)]
struct Epoch {
    /// Dirty entries of the current epoch: path -> recursive.
    dirty: BTreeMap<Vec<u8>, bool>,
    /// Why this epoch cannot be trusted.
    lost: Option<String>,
    /// The `seq` of this consumer's last checkpoint (0: none yet, never complete).
    since_seq: u64,
}

/// One watched root.
struct Root {
    /// Canonical absolute path (what clients ask for, canonicalized the same way).
    path: PathBuf,
    /// Epochs by consumer: two destinations synced from one home (or an operator's pass next
    /// to the wave's) each keep their own chain instead of breaking each other's.
    epochs: HashMap<String, Epoch>,
    /// A watch may be missing (overflow, failed add): re-armed at the next checkpoint.
    rearm: bool,
}

/// At most this many consumers per root; more are refused (their passes walk).
const MAX_CONSUMERS: usize = 64;

/// The running watcher.
pub struct Watcher {
    inotify: OwnedFd,
    /// Bound last, once every directory is watched: the socket existing means ready.
    listener: Option<UnixListener>,
    socket: PathBuf,
    /// We bound the socket (so we remove it when done; never someone else's).
    socket_owned: bool,
    roots: Vec<Root>,
    /// Watch descriptor -> (root index, relative directory path).
    wds: HashMap<i32, (usize, Vec<u8>)>,
    feed_id: String,
    next_seq: u64,
    max_dirty: usize,
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // Never the same id twice in practice: time and pid.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b[..8].copy_from_slice(&(t as u64).to_le_bytes());
        b[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    hex::encode(b)
}

fn join(root: &Path, rel: &[u8]) -> PathBuf {
    crate::manifest::join(root, rel)
}

fn child(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        c.extend_from_slice(dir);
        c.push(b'/');
    }
    c.extend_from_slice(name);
    c
}

/// Refuses an existing socket path unless it is a stale socket of ours, 0600, that nobody
/// answers on (then it is removed).
fn clear_stale_socket(path: &Path) -> Result<(), WatchError> {
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
    /// Adds watches on every directory under every root, then binds the socket (0600): once
    /// the socket exists, the watcher is ready.
    pub fn start(opts: &WatchOptions) -> Result<Watcher, WatchError> {
        clear_stale_socket(&opts.socket)?;
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(WatchError::Inotify(std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh descriptor we own.
        let inotify = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut roots = Vec::new();
        for r in &opts.roots {
            let path = std::fs::canonicalize(r).map_err(|source| WatchError::Io {
                path: r.clone(),
                source,
            })?;
            roots.push(Root {
                path,
                epochs: HashMap::new(),
                rearm: false,
            });
        }
        let mut w = Watcher {
            inotify,
            listener: None,
            socket: opts.socket.clone(),
            socket_owned: false,
            roots,
            wds: HashMap::new(),
            feed_id: random_id(),
            next_seq: 1,
            max_dirty: opts.max_dirty,
        };
        for i in 0..w.roots.len() {
            if let Err(why) = w.arm(i, b"") {
                return Err(WatchError::Watch {
                    root: w.roots[i].path.clone(),
                    why,
                });
            }
        }
        // Bind under a umask that leaves the socket 0600 from its first instant.
        // SAFETY: umask only changes this process's file creation mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(&opts.socket);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        w.listener = Some(bound.map_err(|source| WatchError::Io {
            path: opts.socket.clone(),
            source,
        })?);
        w.socket_owned = true;
        Ok(w)
    }

    pub fn feed_id(&self) -> &str {
        &self.feed_id
    }

    pub fn watches(&self) -> usize {
        self.wds.len()
    }

    /// Watches `rel` under root `i` and every directory below it (watch first, then list, so
    /// a subdirectory created meanwhile is either listed or raises an event). A watch that
    /// cannot be added loses the root's epochs (and is the error).
    fn arm(&mut self, i: usize, rel: &[u8]) -> Result<(), String> {
        let mut stack = vec![rel.to_vec()];
        while let Some(dir) = stack.pop() {
            let abs = join(&self.roots[i].path, &dir);
            let c = std::ffi::CString::new(abs.as_os_str().as_bytes()).expect("no NUL in paths");
            // SAFETY: valid fd and NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(self.inotify.as_raw_fd(), c.as_ptr(), MASK) };
            if wd < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    // Gone or replaced by a non-directory meanwhile: its parent's event says so.
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) => continue,
                    Some(libc::ENOSPC) => {
                        let why = format!(
                            "cannot watch {}: {e} (raise fs.inotify.max_user_watches: one \
                             watch per directory)",
                            abs.display()
                        );
                        self.lose(i, why.clone());
                        return Err(why);
                    }
                    _ => {
                        let why = format!("cannot watch {}: {e}", abs.display());
                        self.lose(i, why.clone());
                        return Err(why);
                    }
                }
            }
            self.wds.insert(wd, (i, dir.clone()));
            let Ok(rd) = std::fs::read_dir(&abs) else {
                continue;
            };
            for de in rd.flatten() {
                if de.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(child(&dir, de.file_name().as_bytes()));
                }
            }
        }
        Ok(())
    }

    /// Every epoch of root `i` is lost, and its watches are re-armed at the next checkpoint.
    fn lose(&mut self, i: usize, why: String) {
        let r = &mut self.roots[i];
        r.rearm = true;
        for e in r.epochs.values_mut() {
            lose_epoch(e, &why);
        }
    }

    fn mark(&mut self, i: usize, rel: Vec<u8>, recursive: bool) {
        let max = self.max_dirty;
        for e in self.roots[i].epochs.values_mut() {
            if e.lost.is_some() {
                continue;
            }
            *e.dirty.entry(rel.clone()).or_insert(false) |= recursive;
            if e.dirty.len() > max {
                lose_epoch(e, &format!("more than {max} changes in one epoch"));
            }
        }
    }

    /// Reads and applies every queued event.
    pub fn drain(&mut self) -> Result<(), WatchError> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            // SAFETY: buffer valid for its length; non-blocking fd.
            let n =
                unsafe { libc::read(self.inotify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return match e.kind() {
                    std::io::ErrorKind::WouldBlock => Ok(()),
                    std::io::ErrorKind::Interrupted => continue,
                    _ => Err(WatchError::Inotify(e)),
                };
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + 16 <= n {
                let word = |k: usize| {
                    u32::from_ne_bytes(buf[off + k..off + k + 4].try_into().expect("4 bytes"))
                };
                let (wd, mask, len) = (word(0) as i32, word(4), word(12) as usize);
                let raw = &buf[off + 16..(off + 16 + len).min(n)];
                let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
                let name = name.to_vec();
                self.event(wd, mask, &name);
                off += 16 + len;
            }
        }
    }

    fn event(&mut self, wd: i32, mask: u32, name: &[u8]) {
        if mask & libc::IN_Q_OVERFLOW != 0 {
            for i in 0..self.roots.len() {
                self.lose(
                    i,
                    "the inotify queue overflowed (events were dropped)".into(),
                );
            }
            return;
        }
        if mask & libc::IN_IGNORED != 0 {
            self.wds.remove(&wd);
            return;
        }
        let Some((i, dir)) = self.wds.get(&wd).cloned() else {
            return;
        };
        if mask & libc::IN_UNMOUNT != 0 {
            self.lose(
                i,
                format!(
                    "{} was unmounted",
                    join(&self.roots[i].path, &dir).display()
                ),
            );
            return;
        }
        if name.is_empty() {
            if dir.is_empty() && mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0 {
                let p = self.roots[i].path.display().to_string();
                self.lose(i, format!("the root {p} itself was moved or deleted"));
                return;
            }
            // Its own attributes, or it went away (the parent's event has the name too).
            self.mark(i, dir, false);
            return;
        }
        let c = child(&dir, name);
        self.mark(i, dir, false);
        let is_dir = mask & libc::IN_ISDIR != 0;
        if is_dir && mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
            self.mark(i, c.clone(), true);
            // A failure has lost the epochs already.
            let _ = self.arm(i, &c);
        } else if is_dir && mask & (libc::IN_MOVED_FROM | libc::IN_DELETE) != 0 {
            self.mark(i, c, true);
        } else {
            self.mark(i, c, false);
        }
    }

    /// Ends `consumer`'s epoch of the root at `root` (absolute path bytes, as the watcher was
    /// given it or resolving to it).
    pub fn checkpoint(&mut self, root: &[u8], consumer: &str) -> Result<Checkpoint, String> {
        self.drain().map_err(|e| e.to_string())?;
        // As given, else resolved here (a client naming the root through a symlink).
        let resolved = std::fs::canonicalize(OsStr::from_bytes(root)).ok();
        let i = self
            .roots
            .iter()
            .position(|r| r.path.as_os_str().as_bytes() == root)
            .or_else(|| {
                let c = resolved.as_deref()?;
                self.roots.iter().position(|r| r.path == c)
            })
            .ok_or_else(|| {
                format!(
                    "{} is not watched here (watched: {})",
                    String::from_utf8_lossy(root),
                    self.roots
                        .iter()
                        .map(|r| r.path.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        if !self.roots[i].epochs.contains_key(consumer)
            && self.roots[i].epochs.len() >= MAX_CONSUMERS
        {
            return Err(format!(
                "more than {MAX_CONSUMERS} consumers of {}",
                self.roots[i].path.display()
            ));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let feed_id = self.feed_id.clone();
        let r = &mut self.roots[i];
        let e = r.epochs.entry(consumer.to_string()).or_default();
        let reason = match (&e.lost, e.since_seq == 0) {
            (Some(why), _) => Some(why.clone()),
            (None, true) => {
                Some("first checkpoint of this consumer since the watcher started".into())
            }
            (None, false) => None,
        };
        let complete = reason.is_none();
        let dirty = std::mem::take(&mut e.dirty);
        let cp = Checkpoint {
            feed_id,
            seq,
            since_seq: e.since_seq,
            complete,
            reason,
            dirty: if complete {
                dirty
                    .into_iter()
                    .map(|(p, rec)| Dirty::new(&p, rec))
                    .collect()
            } else {
                Vec::new()
            },
        };
        e.since_seq = seq;
        e.lost = None;
        if std::mem::take(&mut r.rearm) {
            // Re-arm before answering: the pass's walk starts after the reply, so whatever
            // changes before the watches exist again is seen by that walk. A failure loses
            // the new epochs again.
            let _ = self.arm(i, b"");
        }
        Ok(cp)
    }

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

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.socket_owned {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

#[cfg(test)]
#[path = "feed_watch_tests.rs"]
mod tests;

fn lose_epoch(e: &mut Epoch, why: &str) {
    if e.lost.is_none() {
        e.lost = Some(why.to_string());
    }
    e.dirty.clear();
}

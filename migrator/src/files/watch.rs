//! `migrator watch`: inotify over source roots, serving checkpoints of what changed
//! ([`crate::files::feed`] has the protocol and the rules a pass follows).
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
//!   more dirty entries than `max_dirty` loses that consumer's epoch only;
//! - a root that cannot be watched at a re-arm (still missing): its epochs stay lost, and the
//!   re-arm pending, until it is watched again;
//! - a file with more than one link written or chmod'ed: every epoch of every root is lost
//!   (a write raises events only under the name it went through; the other names are unknown).
//!
//! Roots that overlap (the same directory twice, one inside another) are refused at start: a
//! directory has one watch descriptor, which can serve one root only. A directory reachable
//! under two names (a bind mount) loses both roots' epochs for good (each re-arm finds it again).
//!
//! Not seen by inotify (the pass cannot know; `--full`, `verify` and the final pass in the
//! freeze walk everything): writes through a shared `mmap`, writes by other NFS clients, and
//! writes through a hard link whose other name lies outside every watched root.

use crate::files::feed::{Checkpoint, Dirty};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

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
    #[error("cannot watch every directory under {root}: {source}")]
    Watch {
        root: PathBuf,
        #[source]
        source: ArmError,
    },
    #[error(
        "roots {a} and {b} overlap (the same directory, or one inside the other): one inotify \
         watch per directory cannot serve both; give each home once, and no home inside another"
    )]
    Overlap { a: PathBuf, b: PathBuf },
}

/// Why (part of) a root could not be watched; its epochs stay lost until it is again.
#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    #[error("the root {path} cannot be watched: {source}")]
    RootGone {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot watch {path}: {source} (raise fs.inotify.max_user_watches: one watch per \
         directory)"
    )]
    NoWatchesLeft {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch {path}: {source}")]
    Failed {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{a} and {b} are the same directory (a bind mount?): one inotify watch cannot serve \
         both names"
    )]
    SameDirectory { a: PathBuf, b: PathBuf },
}

/// Why the watcher refused a checkpoint (the pass then walks in full).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointRefused {
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("{root} is not watched here (watched: {watched})")]
    NotWatched { root: String, watched: String },
    #[error("more than {MAX_CONSUMERS} consumers of {root}")]
    TooManyConsumers { root: PathBuf },
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
    crate::files::manifest::join(root, rel)
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

impl Watcher {
    /// Adds watches on every directory under every root, then binds the socket (0600): once
    /// the socket exists, the watcher is ready.
    pub fn start(opts: &WatchOptions) -> Result<Watcher, WatchError> {
        serve::clear_stale_socket(&opts.socket)?;
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
            // Nested or duplicate roots: inotify gives one watch (one wd) per directory, which
            // maps to one root only; the other root would never hear of its changes.
            if let Some(o) = roots
                .iter()
                .find(|o: &&Root| o.path.starts_with(&path) || path.starts_with(&o.path))
            {
                return Err(WatchError::Overlap {
                    a: o.path.clone(),
                    b: path,
                });
            }
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
            if let Err(source) = w.arm(i, b"") {
                return Err(WatchError::Watch {
                    root: w.roots[i].path.clone(),
                    source,
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
    fn arm(&mut self, i: usize, rel: &[u8]) -> Result<(), ArmError> {
        let mut stack = vec![rel.to_vec()];
        while let Some(dir) = stack.pop() {
            let abs = join(&self.roots[i].path, &dir);
            let c = std::ffi::CString::new(abs.as_os_str().as_bytes()).expect("no NUL in paths");
            // SAFETY: valid fd and NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(self.inotify.as_raw_fd(), c.as_ptr(), MASK) };
            if wd < 0 {
                let e = std::io::Error::last_os_error();
                let why = match e.raw_os_error() {
                    // The root itself missing: nothing of it is watched; every epoch stays
                    // lost (and the re-arm pending) until it can be watched again.
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) if dir.is_empty() => {
                        ArmError::RootGone {
                            path: abs,
                            source: e,
                        }
                    }
                    // Gone or replaced by a non-directory meanwhile: its parent's event says so.
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) => continue,
                    Some(libc::ENOSPC) => ArmError::NoWatchesLeft {
                        path: abs,
                        source: e,
                    },
                    _ => ArmError::Failed {
                        path: abs,
                        source: e,
                    },
                };
                self.lose(i, why.to_string());
                return Err(why);
            }
            if let Some((j, old)) = self.wds.get(&wd).cloned() {
                // The same wd under another name: a directory moved (its watch followed it:
                // re-pointed here), or one directory reachable twice (a bind mount): one wd
                // cannot serve two names, so both roots' epochs stay lost.
                let old_abs = join(&self.roots[j].path, &old);
                if (j, old.as_slice()) != (i, dir.as_slice()) && same_dir(&old_abs, &abs) {
                    let why = ArmError::SameDirectory { a: old_abs, b: abs };
                    self.lose(i, why.to_string());
                    self.lose(j, why.to_string());
                    return Err(why);
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

    /// Every epoch of every root is lost (the watches stay as they are).
    fn lose_all_epochs(&mut self, why: &str) {
        for r in &mut self.roots {
            for e in r.epochs.values_mut() {
                lose_epoch(e, why);
            }
        }
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
                // Its watches followed the moved tree, which is no longer the root: drop them
                // (the re-arm watches whatever the root's path holds then).
                self.unwatch(i);
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
            if !is_dir && mask & (libc::IN_MODIFY | libc::IN_CLOSE_WRITE | libc::IN_ATTRIB) != 0 {
                // Written through this name: its other names (another home, or outside every
                // root) raise no event; whoever holds them must walk.
                let abs = join(&self.roots[i].path, &c);
                if std::fs::symlink_metadata(&abs).is_ok_and(|m| !m.is_dir() && m.nlink() > 1) {
                    self.lose_all_epochs(&format!(
                        "{} is hard-linked and changed: its other names are unknown",
                        abs.display()
                    ));
                }
            }
            self.mark(i, c, false);
        }
    }

    /// Removes every watch of root `i`.
    fn unwatch(&mut self, i: usize) {
        let wds: Vec<i32> = self
            .wds
            .iter()
            .filter(|(_, (j, _))| *j == i)
            .map(|(wd, _)| *wd)
            .collect();
        for wd in wds {
            self.wds.remove(&wd);
            // SAFETY: valid inotify fd; a wd already gone gives EINVAL, ignored.
            unsafe { libc::inotify_rm_watch(self.inotify.as_raw_fd(), wd) };
        }
    }

    /// Ends `consumer`'s epoch of the root at `root` (absolute path bytes, as the watcher was
    /// given it or resolving to it).
    pub fn checkpoint(
        &mut self,
        root: &[u8],
        consumer: &str,
    ) -> Result<Checkpoint, CheckpointRefused> {
        self.drain()?;
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
            .ok_or_else(|| CheckpointRefused::NotWatched {
                root: String::from_utf8_lossy(root).into_owned(),
                watched: self
                    .roots
                    .iter()
                    .map(|r| r.path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if !self.roots[i].epochs.contains_key(consumer)
            && self.roots[i].epochs.len() >= MAX_CONSUMERS
        {
            return Err(CheckpointRefused::TooManyConsumers {
                root: self.roots[i].path.clone(),
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let feed_id = self.feed_id.clone();
        let r = &mut self.roots[i];
        let e = r.epochs.entry(consumer.to_string()).or_default();
        let too_big = crate::files::feed::reply_size(e.dirty.keys().map(|p| p.as_slice()))
            > crate::files::feed::MAX_REPLY;
        let reason = match (&e.lost, e.since_seq == 0) {
            (Some(why), _) => Some(why.clone()),
            (None, true) => {
                Some("first checkpoint of this consumer since the watcher started".into())
            }
            // A pass refuses a longer reply: say incomplete instead (a walk either way).
            (None, false) if too_big => Some(format!(
                "the changes of this epoch exceed the {} bytes a reply may carry",
                crate::files::feed::MAX_REPLY
            )),
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
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.socket_owned {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

/// Serving checkpoints on the socket.
#[path = "watch_serve.rs"]
mod serve;

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;

/// Both paths name the same directory now (same device and inode).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(x), Ok(y)) => x.is_dir() && x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn lose_epoch(e: &mut Epoch, why: &str) {
    if e.lost.is_none() {
        e.lost = Some(why.to_string());
    }
    e.dirty.clear();
}

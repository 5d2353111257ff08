//! The change feed: what changed under a source root since the last sync pass, so a pass can
//! re-stat only those entries instead of walking the whole home.
//!
//! `migrator watch` ([`crate::feed_watch`]) runs where the writes land (the web host, or the
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
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a pass waits for the watcher before walking in full.
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

/// Takes a checkpoint of `root`: the path as the watcher knows it (sent as given; the watcher
/// canonicalizes it on its side when it does not match one of its roots exactly). With the
/// watcher on this host, [`local_root`] of the source is right; on a filer exporting the home
/// under another path, give that path.
pub fn checkpoint(
    socket: &Path,
    root: &Path,
    consumer: &str,
    timeout: Duration,
) -> Result<Checkpoint, FeedError> {
    let io = |source| FeedError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    check_socket(socket)?;
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let req = Request::Checkpoint {
        root: hex::encode(root.as_os_str().as_bytes()),
        consumer: consumer.to_string(),
    };
    let mut line = serde_json::to_vec(&req).expect("request serializes");
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).map_err(io)?;
    let protocol = |why: String| FeedError::Protocol {
        socket: socket.to_path_buf(),
        why,
    };
    if reply.is_empty() {
        return Err(protocol("the watcher closed the connection".into()));
    }
    match serde_json::from_str::<Reply>(&reply).map_err(|e| protocol(e.to_string()))? {
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
}

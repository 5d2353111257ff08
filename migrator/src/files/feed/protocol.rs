//! The change feed's protocol and chain rules: what a watcher and a pass say to each other
//! (one JSON line each way: [`Request`], [`Reply`] with a [`Checkpoint`]), how large a reply
//! may be, and when a checkpoint continues the last committed pass ([`continues`]).
//!
//! Paths are hex-encoded raw bytes (names need not be UTF-8), relative to the root,
//! `/`-separated; the empty path is the root itself.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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

/// Why a checkpoint does not continue the last committed pass's chain (the pass then walks
/// the whole source).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("no earlier pass recorded this feed")]
    NoEarlierPass,
    #[error("the watcher restarted since the last pass (new feed id)")]
    WatcherRestarted,
    #[error(
        "another checkpoint was taken after the last committed pass (seq {recorded} recorded, \
         the feed continues from {since})"
    )]
    Gap { recorded: u64, since: u64 },
    /// The watcher's reason, when it gave one.
    #[error("{}", .0.as_deref().unwrap_or("the feed is incomplete"))]
    Incomplete(Option<String>),
}

/// Whether `cp` continues the chain of the last committed pass; `Err` says why not.
pub fn continues(prev: Option<&FeedRecord>, cp: &Checkpoint) -> Result<(), ChainBreak> {
    let Some(prev) = prev else {
        return Err(ChainBreak::NoEarlierPass);
    };
    if prev.feed_id != cp.feed_id {
        return Err(ChainBreak::WatcherRestarted);
    }
    if prev.seq != cp.since_seq {
        return Err(ChainBreak::Gap {
            recorded: prev.seq,
            since: cp.since_seq,
        });
    }
    if !cp.complete {
        return Err(ChainBreak::Incomplete(cp.reason.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            .to_string()
            .contains("restarted"));
        assert_eq!(
            continues(Some(&rec), &cp("a", 5, true))
                .unwrap_err()
                .to_string(),
            "another checkpoint was taken after the last committed pass (seq 4 recorded, \
             the feed continues from 5)"
        );
        let incomplete = continues(Some(&rec), &cp("a", 4, false)).unwrap_err();
        assert_eq!(incomplete.to_string(), "the feed is incomplete");
        let overflow = Checkpoint {
            reason: Some("queue overflow".into()),
            ..cp("a", 4, false)
        };
        assert_eq!(
            continues(Some(&rec), &overflow).unwrap_err().to_string(),
            "queue overflow"
        );
        assert_eq!(
            continues(None, &cp("a", 4, true)),
            Err(ChainBreak::NoEarlierPass)
        );
    }

    #[test]
    fn dirty_paths_survive_non_utf8() {
        let d = Dirty::new(b"caf\xe9/x", true);
        let back: Dirty = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back.path_bytes().unwrap(), b"caf\xe9/x");
    }

    #[test]
    fn the_watcher_never_sends_a_reply_longer_than_the_cap() {
        let many = std::iter::repeat_n(&[b'x'; 280][..], DEFAULT_MAX_DIRTY);
        assert!(reply_size(many) <= MAX_REPLY);
        let longer = std::iter::repeat_n(&[b'x'; 400][..], DEFAULT_MAX_DIRTY);
        assert!(reply_size(longer) > MAX_REPLY);
    }
}

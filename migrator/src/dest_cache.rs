//! The destination manifest cached in the journal, so a no-change pass walks only the source.
//!
//! After a committed pass the destination holds exactly the source manifest that pass applied
//! (every write lands complete, the pass ends with `syncfs`, apply warnings void the cache).
//! That manifest is stored in the journal together with a [`DirStamp`] of every destination
//! directory: inode and `ctime`, which the kernel sets on any entry created, removed or renamed
//! in a directory, and on any change of its own mode, owner or times; nobody can set it back.
//!
//! The rule (README "What a sync pass guarantees"):
//! - A pass uses the cache only when every directory stamp still matches: anything added,
//!   removed, renamed or re-created on the destination behind our back makes the pass walk the
//!   destination in full.
//! - Not caught by the stamps: a file rewritten *in place* on the destination (same name).
//!   `--full` and `--checksum` always walk the destination, and so does the final pass inside
//!   the freeze (the cutover engine calls [`crate::sync_files::run_pass`], which never uses
//!   the cache); `migrator verify` always walks both sides.
//! - The cache is dropped (durably) before a pass applies its first operation and written
//!   again only after the pass finished and synced, so a killed pass leaves no cache and the
//!   next pass walks everything.
//!
//! Racy stamps (the "racy git" problem): `ctime` has the kernel's coarse clock granularity, so
//! a change made in the same tick as our last write could leave a stamp unchanged. Stamps are
//! therefore taken only once every directory's `ctime` is older than [`RACY_WINDOW`]; if one is
//! newer, we wait and stamp again.

use crate::manifest::{join, Kind, Manifest};
use rayon::prelude::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Format of the cached blob; a different value is ignored (the pass walks in full).
const CACHE_VERSION: u8 = 1;
/// Longer than any coarse clock tick of the kernel (a jiffy is 1–10 ms).
pub const RACY_WINDOW: Duration = Duration::from_millis(30);

/// What identifies one destination directory's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirStamp {
    pub dev: u64,
    pub ino: u64,
    pub ctime_s: i64,
    pub ctime_ns: i64,
}

/// A cached destination manifest and the stamps of its directories (in manifest order).
#[derive(Debug, Clone, PartialEq)]
pub struct DestCache {
    pub manifest: Manifest,
    pub stamps: Vec<DirStamp>,
}

/// The journal key of a (site, source, destination) triple.
pub fn key(site: &str, src_root: &Path, dst_identity: &str) -> String {
    format!("sync-files\0{site}\0{}\0{dst_identity}", src_root.display())
}

/// Relative paths of the directories of a manifest, in manifest order.
pub fn dirs(m: &Manifest) -> Vec<Vec<u8>> {
    m.entries
        .iter()
        .filter(|e| e.kind == Kind::Dir)
        .map(|e| e.path.clone())
        .collect()
}

fn stamp_once(root: &Path, dirs: &[Vec<u8>]) -> Vec<DirStamp> {
    dirs.par_iter()
        .map(|d| match std::fs::symlink_metadata(join(root, d)) {
            Ok(md) if md.is_dir() => DirStamp {
                dev: md.dev(),
                ino: md.ino(),
                ctime_s: md.ctime(),
                ctime_ns: md.ctime_nsec(),
            },
            // Missing or no longer a directory: a stamp no real directory has.
            _ => DirStamp::default(),
        })
        .collect()
}

fn newest(stamps: &[DirStamp]) -> Duration {
    stamps
        .iter()
        .map(|s| {
            Duration::new(
                s.ctime_s.max(0) as u64,
                s.ctime_ns.clamp(0, 999_999_999) as u32,
            )
        })
        .max()
        .unwrap_or_default()
}

/// Stamps of `dirs` under `root` as they are now (for validating a cache).
pub fn current_stamps(root: &Path, dirs: &[Vec<u8>]) -> Vec<DirStamp> {
    stamp_once(root, dirs)
}

/// Stamps to store after a pass: waits until no directory's `ctime` is within the racy window
/// of now, so any later change gets a different `ctime`.
pub fn settled_stamps(root: &Path, dirs: &[Vec<u8>]) -> Vec<DirStamp> {
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    };
    // A few rounds at most: a filer whose clock runs ahead of ours never settles, and then
    // the cache is simply not used (stamps that match nothing).
    for _ in 0..4 {
        let t = now();
        let stamps = stamp_once(root, dirs);
        let newest = newest(&stamps);
        if newest + RACY_WINDOW <= t {
            return stamps;
        }
        std::thread::sleep((newest + RACY_WINDOW).saturating_sub(t).min(RACY_WINDOW));
    }
    vec![DirStamp::default(); dirs.len()]
}

/// Encodes a cache for the journal.
pub fn encode(c: &DestCache) -> Vec<u8> {
    let mut out = vec![CACHE_VERSION];
    out.extend_from_slice(&(c.stamps.len() as u64).to_le_bytes());
    for s in &c.stamps {
        out.extend_from_slice(&s.dev.to_le_bytes());
        out.extend_from_slice(&s.ino.to_le_bytes());
        out.extend_from_slice(&s.ctime_s.to_le_bytes());
        out.extend_from_slice(&s.ctime_ns.to_le_bytes());
    }
    out.extend_from_slice(&crate::wire::encode_manifest(&c.manifest));
    out
}

/// Decodes a cached blob; `None` for another version or a damaged blob (then the pass walks
/// the destination: a cache is never trusted blindly).
pub fn decode(b: &[u8]) -> Option<DestCache> {
    let (&version, rest) = b.split_first()?;
    if version != CACHE_VERSION || rest.len() < 8 {
        return None;
    }
    let n = u64::from_le_bytes(rest[..8].try_into().ok()?) as usize;
    let rest = &rest[8..];
    let body = rest.get(..n.checked_mul(32)?)?;
    let word = |c: &[u8], i: usize| u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().unwrap());
    let stamps = body
        .chunks_exact(32)
        .map(|c| DirStamp {
            dev: word(c, 0),
            ino: word(c, 1),
            ctime_s: word(c, 2) as i64,
            ctime_ns: word(c, 3) as i64,
        })
        .collect::<Vec<_>>();
    let manifest = crate::wire::decode_manifest(&rest[n * 32..]).ok()?;
    let ndirs = manifest
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Dir)
        .count();
    (ndirs == stamps.len()).then_some(DestCache { manifest, stamps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{build, WalkOptions};

    #[test]
    fn round_trip_and_damage_is_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/f"), b"x").unwrap();
        let m = build(dir.path(), &WalkOptions::default()).unwrap();
        let d = dirs(&m);
        assert_eq!(d.len(), 2);
        let c = DestCache {
            stamps: settled_stamps(dir.path(), &d),
            manifest: m,
        };
        let bytes = encode(&c);
        assert_eq!(decode(&bytes), Some(c.clone()));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        let mut other = bytes.clone();
        other[0] = 99;
        assert_eq!(decode(&other), None);
        // Stamps are settled: the next change is visible.
        assert_eq!(current_stamps(dir.path(), &d), c.stamps);
        std::fs::write(dir.path().join("a/g"), b"y").unwrap();
        assert_ne!(current_stamps(dir.path(), &d), c.stamps);
    }
}

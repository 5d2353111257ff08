//! Directory stamps: inode and `ctime` of each destination directory, which the kernel sets on
//! any entry created, removed or renamed in it and on any change of its own mode, owner or
//! times. The destination cache ([`crate::files::dest_cache`]) is trusted only while every
//! stamp still matches; the wire protocol ([`crate::files::wire`]) carries them for a remote
//! destination.
//!
//! Racy stamps (the "racy git" problem): `ctime` has the kernel's coarse clock granularity, so
//! a change made in the same tick as our last write could leave a stamp unchanged. Stamps to
//! store are therefore taken only once every directory's `ctime` is older than
//! [`RACY_WINDOW`].

use crate::files::manifest::join;
use rayon::prelude::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

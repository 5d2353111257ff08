//! The destination manifest cached in the journal, so a no-change pass walks only the source.
//!
//! After a committed pass the destination holds exactly the source manifest that pass applied
//! (every write lands complete, apply warnings void the cache), durably when the pass ended
//! with `syncfs`. A pass that deferred durability (`PassOptions::defer_sync`) records this
//! host's boot id in the head: its cache is trusted only under that boot, since a crash can
//! lose writes still in the page cache; after a reboot the next pass walks the destination,
//! and a pass that must end durable never trusts it (it walks, applies, and syncs).
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
//!   the freeze (the cutover engine calls [`crate::files::sync::run_pass`], which never uses
//!   the cache); `migrator verify` always walks both sides.
//! - The cache is dropped (durably) before a pass applies its first operation and written
//!   again only after the pass finished and synced, so a killed pass leaves no cache and the
//!   next pass walks everything.
//!
//! Storage: two journal rows. The small [`CacheHead`] (digest, counts, warnings, directory
//! paths and stamps, BLAKE3 of the manifest blob) is read on every pass; the manifest blob only
//! when a pass needs it. With the change feed reporting nothing dirty
//! ([`crate::files::journaled`]), a pass validates the stamps and finishes without decoding the
//! manifest. Older journals' one-row caches (version 1) are ignored: that pass walks and
//! writes the current format.
//!
//! Racy stamps (the "racy git" problem): `ctime` has the kernel's coarse clock granularity, so
//! a change made in the same tick as our last write could leave a stamp unchanged. Stamps are
//! therefore taken only once every directory's `ctime` is older than [`crate::files::stamps::RACY_WINDOW`]; if one is
//! newer, we wait and stamp again ([`crate::files::stamps`]).

use crate::files::manifest::{Kind, Manifest};
use crate::files::stamps::DirStamp;
use std::path::Path;

/// Format of the cached blob; a different value is ignored (the pass walks in full).
const CACHE_VERSION: u8 = 3;
/// A cached destination manifest and the stamps of its directories (in manifest order).
#[derive(Debug, Clone, PartialEq)]
pub struct DestCache {
    pub manifest: Manifest,
    pub stamps: Vec<DirStamp>,
    /// The boot id under which the pass that wrote it deferred durability; `None`: durable.
    pub unsynced_boot: Option<String>,
}

/// This host's boot id (`/proc/sys/kernel/random/boot_id`): a new one after every boot, so
/// it tells whether writes left in the page cache may have been lost. `None` if unreadable,
/// and then nothing unsynced is trusted.
pub fn boot_id() -> Option<String> {
    let s = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
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

/// The small half of a cache, read on every pass: enough to validate the destination and, with
/// the change feed reporting nothing dirty, to finish the pass without decoding the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheHead {
    /// [`Manifest::digest`] of the cached manifest (the pass's `manifest_digest`).
    pub digest: String,
    pub entries: u64,
    pub bytes: u64,
    pub warnings: Vec<String>,
    /// The manifest's directories, in manifest order, and their stamps.
    pub dirs: Vec<Vec<u8>>,
    pub stamps: Vec<DirStamp>,
    /// BLAKE3 of the manifest blob: the two rows are written separately, and a head never
    /// vouches for another pass's manifest.
    pub manifest_hash: [u8; 32],
    /// See [`DestCache::unsynced_boot`].
    pub unsynced_boot: Option<String>,
}

impl CacheHead {
    /// Whether a pass may trust this cache: always when its pass ended durable; when it
    /// deferred durability, only a pass that defers too (one that must end durable walks and
    /// syncs) and only under the same boot.
    pub fn trusted(&self, defer_sync: bool, boot: Option<&str>) -> bool {
        match &self.unsynced_boot {
            None => true,
            Some(b) => defer_sync && boot == Some(b.as_str()),
        }
    }
}

/// Journal key of the head (the manifest itself is under [`key`]).
pub fn head_key(key: &str) -> String {
    format!("{key}\0head")
}

/// Journal key of the change-feed record of the last committed pass.
pub fn feed_key(key: &str) -> String {
    format!("{key}\0feed")
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

/// Encodes a cache for the journal: (head, manifest blob).
pub fn encode(c: &DestCache) -> (Vec<u8>, Vec<u8>) {
    let blob = crate::files::wire::encode_manifest(&c.manifest);
    let mut out = vec![CACHE_VERSION];
    put_bytes(&mut out, c.manifest.digest().as_bytes());
    out.extend_from_slice(&(c.manifest.entries.len() as u64).to_le_bytes());
    out.extend_from_slice(&c.manifest.total_bytes().to_le_bytes());
    out.extend_from_slice(&(c.manifest.warnings.len() as u64).to_le_bytes());
    for w in &c.manifest.warnings {
        put_bytes(&mut out, w.as_bytes());
    }
    out.extend_from_slice(blake3::hash(&blob).as_bytes());
    out.extend_from_slice(&(c.stamps.len() as u64).to_le_bytes());
    for (d, s) in dirs(&c.manifest).iter().zip(&c.stamps) {
        put_bytes(&mut out, d);
        out.extend_from_slice(&s.dev.to_le_bytes());
        out.extend_from_slice(&s.ino.to_le_bytes());
        out.extend_from_slice(&s.ctime_s.to_le_bytes());
        out.extend_from_slice(&s.ctime_ns.to_le_bytes());
    }
    put_bytes(
        &mut out,
        c.unsynced_boot.as_deref().unwrap_or("").as_bytes(),
    );
    (out, blob)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u64()?).ok()?;
        self.take(n)
    }
}

/// Decodes a head; `None` for another version (an older journal: the pass walks and writes
/// the current format) or a damaged blob. A cache is never trusted blindly.
pub fn decode_head(b: &[u8]) -> Option<CacheHead> {
    let mut r = Reader(b);
    if r.take(1)? != [CACHE_VERSION] {
        return None;
    }
    let digest = String::from_utf8(r.bytes()?.to_vec()).ok()?;
    let (entries, bytes) = (r.u64()?, r.u64()?);
    let nw = r.u64()?;
    let mut warnings = Vec::new();
    for _ in 0..nw {
        warnings.push(String::from_utf8(r.bytes()?.to_vec()).ok()?);
    }
    let manifest_hash: [u8; 32] = r.take(32)?.try_into().ok()?;
    let nd = r.u64()?;
    let (mut dirs, mut stamps) = (Vec::new(), Vec::new());
    for _ in 0..nd {
        dirs.push(r.bytes()?.to_vec());
        stamps.push(DirStamp {
            dev: r.u64()?,
            ino: r.u64()?,
            ctime_s: r.u64()? as i64,
            ctime_ns: r.u64()? as i64,
        });
    }
    let boot = String::from_utf8(r.bytes()?.to_vec()).ok()?;
    let unsynced_boot = (!boot.is_empty()).then_some(boot);
    r.0.is_empty().then_some(CacheHead {
        unsynced_boot,
        digest,
        entries,
        bytes,
        warnings,
        dirs,
        stamps,
        manifest_hash,
    })
}

/// Decodes the manifest blob a head vouches for; `None` if it is not that one or damaged.
pub fn decode_manifest(head: &CacheHead, blob: &[u8]) -> Option<Manifest> {
    if blake3::hash(blob).as_bytes() != &head.manifest_hash {
        return None;
    }
    crate::files::wire::decode_manifest(blob).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::manifest::{build, WalkOptions};
    use crate::files::stamps::{current_stamps, settled_stamps};

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
            unsynced_boot: None,
        };
        let (head, blob) = encode(&c);
        let h = decode_head(&head).unwrap();
        assert_eq!(h.dirs, d);
        assert_eq!(h.stamps, c.stamps);
        assert_eq!(h.digest, c.manifest.digest());
        assert_eq!(decode_manifest(&h, &blob), Some(c.manifest.clone()));
        assert_eq!(h.unsynced_boot, None);
        assert!(h.trusted(false, None) && h.trusted(true, None));
        // A deferred pass's head: trusted by deferred passes under the same boot only.
        let boot = boot_id().expect("boot id");
        let deferred = DestCache {
            unsynced_boot: Some(boot.clone()),
            ..c.clone()
        };
        let hd = decode_head(&encode(&deferred).0).unwrap();
        assert_eq!(hd.unsynced_boot.as_deref(), Some(boot.as_str()));
        assert!(hd.trusted(true, Some(&boot)));
        assert!(!hd.trusted(false, Some(&boot)), "a durable pass walks");
        assert!(!hd.trusted(true, Some("another-boot")), "rebooted since");
        assert!(!hd.trusted(true, None), "boot id unknown");
        assert_eq!(decode_head(&head[..head.len() - 1]), None);
        assert_eq!(decode_manifest(&h, &blob[..blob.len() - 1]), None);
        let mut other = head.clone();
        other[0] = 1;
        assert_eq!(decode_head(&other), None);
        // Stamps are settled: the next change is visible.
        assert_eq!(current_stamps(dir.path(), &d), c.stamps);
        std::fs::write(dir.path().join("a/g"), b"y").unwrap();
        assert_ne!(current_stamps(dir.path(), &d), c.stamps);
    }
}

//! Who owns the copied files on the new side: an explicit uid/gid map.
//!
//! The two datacenters need not number their users alike: copying `st_uid` raw hands a home to
//! whoever holds that number on the new side. With a map ([`OwnerMap::load`], `sync-files
//! --owner-map FILE`), every owner written is the mapped one, a source entry whose owner the
//! map does not name refuses the whole pass before anything is written (naming the entry and
//! the id), and the destination's owners are read back through the inverse map, so the diff,
//! the cached manifest and `verify` keep speaking source ids. Without a map owners are copied
//! as they are (both sides share one user database), as before. The cutover engine's passes
//! take a home's map from the site spec (`HomeSpec::owner_map`), reversed for a rollback.
//!
//! File format, one mapping a line, `#` starts a comment:
//!
//! ```text
//! uid 1001 52001    # alice
//! gid 1001 52001
//! ```
//!
//! A source id appears at most once, and two source ids never map to one destination id (the
//! destination's owners could not be read back).

use crate::files::apply::{Applied, Meta, Op};
use crate::files::manifest::{display, Manifest};
use crate::files::stamps::DirStamp;
use crate::files::sync::{Destination, SyncError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OwnerMapError {
    #[error("owner map {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("owner map {file}, line {line}: {why}")]
    Parse {
        file: PathBuf,
        line: usize,
        why: String,
    },
}

/// A uid map and a gid map, each one-to-one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerMap {
    /// Where it was read from, for messages.
    file: PathBuf,
    uids: HashMap<u32, u32>,
    gids: HashMap<u32, u32>,
    /// The inverses, to read the destination's owners back as source ids.
    uids_back: HashMap<u32, u32>,
    gids_back: HashMap<u32, u32>,
}

/// What a destination owner no source id maps to reads back as: never equal to a source id
/// (4294967295 is not a valid id), so the entry's owner is rewritten.
const UNMAPPED: u32 = u32::MAX;

impl OwnerMap {
    pub fn load(file: &Path) -> Result<OwnerMap, OwnerMapError> {
        let text = std::fs::read_to_string(file).map_err(|source| OwnerMapError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        OwnerMap::parse(&text, file)
    }

    pub fn parse(text: &str, file: &Path) -> Result<OwnerMap, OwnerMapError> {
        let mut m = OwnerMap {
            file: file.to_path_buf(),
            ..Default::default()
        };
        for (i, raw) in text.lines().enumerate() {
            let bad = |why: String| OwnerMapError::Parse {
                file: file.to_path_buf(),
                line: i + 1,
                why,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            let [kind, from, to] = f[..] else {
                return Err(bad(format!(
                    "expected `uid|gid SOURCE DESTINATION`, got `{line}`"
                )));
            };
            let id = |s: &str| {
                s.parse::<u32>()
                    .ok()
                    .filter(|&n| n != UNMAPPED)
                    .ok_or_else(|| bad(format!("`{s}` is not a user or group id")))
            };
            let (fwd, back) = match kind {
                "uid" => (&mut m.uids, &mut m.uids_back),
                "gid" => (&mut m.gids, &mut m.gids_back),
                other => return Err(bad(format!("`{other}`: expected uid or gid"))),
            };
            let (from, to) = (id(from)?, id(to)?);
            if fwd.insert(from, to).is_some() {
                return Err(bad(format!("{kind} {from} is mapped twice")));
            }
            if let Some(other) = back.insert(to, from) {
                return Err(bad(format!(
                    "{kind}s {other} and {from} both map to {to}: the new side could not tell \
                     them apart"
                )));
            }
        }
        Ok(m)
    }

    /// The same map read the other way (a rollback copies new → old).
    pub fn reversed(self) -> OwnerMap {
        OwnerMap {
            file: self.file,
            uids: self.uids_back,
            gids: self.gids_back,
            uids_back: self.uids,
            gids_back: self.gids,
        }
    }

    /// The map's content in a few characters (changes the destination's identity: a cached
    /// manifest read back through another map is not trusted).
    pub fn digest(&self) -> String {
        let mut pairs: Vec<(u8, u32, u32)> = self
            .uids
            .iter()
            .map(|(a, b)| (0, *a, *b))
            .chain(self.gids.iter().map(|(a, b)| (1, *a, *b)))
            .collect();
        pairs.sort_unstable();
        let mut h = blake3::Hasher::new();
        for (k, a, b) in pairs {
            h.update(&[k]);
            h.update(&a.to_le_bytes());
            h.update(&b.to_le_bytes());
        }
        h.finalize().to_hex()[..16].to_string()
    }

    /// Every owner of `src` must be mapped: the first entries that are not, named, else `Ok`.
    pub fn check(&self, src_root: &Path, src: &Manifest) -> Result<(), SyncError> {
        let mut missing = Vec::new();
        for e in &src.entries {
            if !self.uids.contains_key(&e.uid) {
                missing.push(format!("{} (uid {})", display(&e.path), e.uid));
            } else if !self.gids.contains_key(&e.gid) {
                missing.push(format!("{} (gid {})", display(&e.path), e.gid));
            }
            if missing.len() == 5 {
                break;
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(SyncError::UnmappedOwner {
            root: src_root.to_path_buf(),
            map: self.file.clone(),
            entries: missing.join(", "),
        })
    }

    /// A source owner as the new side writes it (checked beforehand by [`OwnerMap::check`]).
    fn forward(&self, meta: &mut Meta) -> Result<(), SyncError> {
        match (self.uids.get(&meta.uid), self.gids.get(&meta.gid)) {
            (Some(&u), Some(&g)) => {
                meta.uid = u;
                meta.gid = g;
                Ok(())
            }
            _ => Err(SyncError::UnmappedOwner {
                root: PathBuf::new(),
                map: self.file.clone(),
                entries: format!("uid {} gid {}", meta.uid, meta.gid),
            }),
        }
    }

    /// The destination's owners as source ids.
    fn back(&self, m: &mut Manifest) {
        for e in &mut m.entries {
            e.uid = self.uids_back.get(&e.uid).copied().unwrap_or(UNMAPPED);
            e.gid = self.gids_back.get(&e.gid).copied().unwrap_or(UNMAPPED);
        }
    }
}

/// A destination whose owners go through an [`OwnerMap`].
pub struct MappedOwners {
    pub inner: Box<dyn Destination>,
    pub map: OwnerMap,
}

impl Destination for MappedOwners {
    fn manifest(&mut self, checksum: bool) -> Result<Manifest, SyncError> {
        let mut m = self.inner.manifest(checksum)?;
        if self.inner.sets_owner() {
            self.map.back(&mut m);
        }
        Ok(m)
    }
    fn check_source(&self, src_root: &Path, src: &Manifest) -> Result<(), SyncError> {
        if self.inner.sets_owner() {
            self.map.check(src_root, src)?;
        }
        self.inner.check_source(src_root, src)
    }
    fn apply(&mut self, mut ops: Vec<Op>) -> Result<(), SyncError> {
        for op in &mut ops {
            match op {
                Op::Mkdir { meta, .. }
                | Op::File { meta, .. }
                | Op::Symlink { meta, .. }
                | Op::SetMeta { meta, .. } => self.map.forward(meta)?,
                Op::RemoveTemp { .. }
                | Op::Delete { .. }
                | Op::Chunk { .. }
                | Op::HardLink { .. } => {}
            }
        }
        self.inner.apply(ops)
    }
    fn finish(&mut self, sync: bool) -> Result<Applied, SyncError> {
        self.inner.finish(sync)
    }
    fn defers_sync(&self) -> bool {
        self.inner.defers_sync()
    }
    fn sets_owner(&self) -> bool {
        self.inner.sets_owner()
    }
    fn identity(&self) -> String {
        format!("{}#owners={}", self.inner.identity(), self.map.digest())
    }
    fn dir_stamps(
        &mut self,
        dirs: &[Vec<u8>],
        settled: bool,
    ) -> Result<Option<Vec<DirStamp>>, SyncError> {
        self.inner.dir_stamps(dirs, settled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_map_is_refused_naming_its_line() {
        let f = Path::new("owners.map");
        let m = OwnerMap::parse("# ids\nuid 1001 52001  # alice\n\ngid 100 500\n", f).unwrap();
        assert_eq!(m.uids.get(&1001), Some(&52001));
        for (text, line, why) in [
            ("uid 1 2\nuid 1 3\n", 2, "mapped twice"),
            ("uid 1 9\nuid 2 9\n", 2, "both map to 9"),
            ("gid x 2\n", 1, "not a user or group id"),
            ("user alice bob\n", 1, "expected uid or gid"),
            ("uid 1\n", 1, "expected `uid|gid"),
            ("uid 1 4294967295\n", 1, "not a user or group id"),
        ] {
            let e = OwnerMap::parse(text, f).unwrap_err().to_string();
            assert!(
                e.contains(&format!("line {line}")) && e.contains(why),
                "{text:?}: {e}"
            );
        }
    }
}

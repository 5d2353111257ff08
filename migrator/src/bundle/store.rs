//! Where bundles are kept: the [`BundleStore`] trait (a local directory here; an SSH
//! destination or object storage would be another implementation of the same calls) and
//! [`LocalStore`], one directory per bundle, `<root>/<site>/<switch_ms>/`.
//!
//! Every part is written under a temporary name (`.tmp.<name>`), made durable and renamed
//! into place; small files (`progress.json`, `manifest.json`, `manifest.sig`) the same way.
//! A bundle is complete once its signature is stored (written last).

use super::{BundleError, BundleManifest, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
pub const PROGRESS: &str = "progress.json";

/// A part being written: committed (renamed into place, durable) only by [`PartSink::commit`];
/// dropped uncommitted, it leaves at most a temporary file the next write of that part
/// replaces.
pub trait PartSink: Write {
    fn commit(self: Box<Self>) -> Result<()>;
}

/// One bundle in a store, complete or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRef {
    pub site: String,
    pub switch_ms: i64,
}

impl BundleRef {
    pub fn id(&self) -> String {
        super::bundle_id(&self.site, self.switch_ms)
    }
    /// Parses `SITE/SWITCH_MS`.
    pub fn parse(id: &str) -> Result<BundleRef> {
        let bad = || BundleError::Invalid {
            bundle: id.to_string(),
            message: "not a bundle id (SITE/SWITCH_MS, as `bundle list` shows)".into(),
        };
        let (site, ms) = id.rsplit_once('/').ok_or_else(bad)?;
        let switch_ms = ms.parse().map_err(|_| bad())?;
        if site.is_empty() || site.contains('/') || site.starts_with('.') {
            return Err(bad());
        }
        Ok(BundleRef {
            site: site.to_string(),
            switch_ms,
        })
    }
}

/// Where bundles live. Names are file names inside one bundle (no `/`).
pub trait BundleStore: Send + Sync {
    /// For messages: the directory or URL.
    fn describe(&self) -> String;
    /// Every bundle, of `site` only when given.
    fn list(&self, site: Option<&str>) -> Result<Vec<BundleRef>>;
    /// A new part's sink (its temporary file).
    fn create(&self, b: &BundleRef, name: &str) -> Result<Box<dyn PartSink>>;
    /// Reads a stored part; `None` when it is not there.
    fn open(&self, b: &BundleRef, name: &str) -> Result<Option<Box<dyn Read + Send>>>;
    /// Stores a small file atomically.
    fn put_small(&self, b: &BundleRef, name: &str, bytes: &[u8]) -> Result<()> {
        let mut s = self.create(b, name)?;
        s.write_all(bytes).map_err(BundleError::io(name))?;
        s.commit()
    }
    /// A small file's content; `None` when it is not there.
    fn get_small(&self, b: &BundleRef, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(mut r) = self.open(b, name)? else {
            return Ok(None);
        };
        let mut v = Vec::new();
        r.read_to_end(&mut v).map_err(BundleError::io(name))?;
        Ok(Some(v))
    }
    /// Deletes the bundle whole; the bytes it held.
    fn delete(&self, b: &BundleRef) -> Result<u64>;
    /// The bytes a bundle holds (parts, temporaries and small files).
    fn size(&self, b: &BundleRef) -> Result<u64>;
}

/// The stored size and BLAKE3 (hex) of a part, read back whole; `None` when it is missing.
pub fn hash_part(
    store: &dyn BundleStore,
    b: &BundleRef,
    name: &str,
) -> Result<Option<(u64, String)>> {
    let Some(mut r) = store.open(b, name)? else {
        return Ok(None);
    };
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).map_err(BundleError::io(name))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok(Some((n, h.finalize().to_hex().to_string())))
}

/// A complete bundle's manifest, its exact bytes and its signature; `None` while incomplete.
pub fn read_manifest(
    store: &dyn BundleStore,
    b: &BundleRef,
) -> Result<Option<(BundleManifest, Vec<u8>, String)>> {
    let Some(sig) = store.get_small(b, SIGNATURE)? else {
        return Ok(None);
    };
    let bytes = store
        .get_small(b, MANIFEST)?
        .ok_or_else(|| BundleError::Invalid {
            bundle: b.id(),
            message: format!("{SIGNATURE} without {MANIFEST}"),
        })?;
    let m: BundleManifest = serde_json::from_slice(&bytes).map_err(|e| BundleError::Invalid {
        bundle: b.id(),
        message: format!("{MANIFEST}: line {}, column {}: {e}", e.line(), e.column()),
    })?;
    if m.format != super::FORMAT {
        return Err(BundleError::Invalid {
            bundle: b.id(),
            message: format!(
                "{MANIFEST}: format {} (this migrator reads {})",
                m.format,
                super::FORMAT
            ),
        });
    }
    Ok(Some((m, bytes, String::from_utf8_lossy(&sig).into_owned())))
}

/// Bundles in a local directory (a filer, a backup volume).
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: &Path) -> LocalStore {
        LocalStore {
            root: root.to_path_buf(),
        }
    }
    pub fn dir(&self, b: &BundleRef) -> PathBuf {
        self.root.join(&b.site).join(b.switch_ms.to_string())
    }
    fn checked(name: &str) -> Result<&str> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(BundleError::Invalid {
                bundle: name.into(),
                message: "not a part name".into(),
            });
        }
        Ok(name)
    }
}

struct LocalSink {
    file: std::fs::File,
    tmp: PathBuf,
    path: PathBuf,
}

impl Write for LocalSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl PartSink for LocalSink {
    fn commit(self: Box<Self>) -> Result<()> {
        self.file.sync_all().map_err(BundleError::io(&self.tmp))?;
        std::fs::rename(&self.tmp, &self.path).map_err(BundleError::io(&self.path))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(BundleError::io(dir))?;
        }
        Ok(())
    }
}

impl BundleStore for LocalStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self, site: Option<&str>) -> Result<Vec<BundleRef>> {
        let mut out = Vec::new();
        let sites: Vec<String> = match site {
            Some(s) => vec![s.to_string()],
            None => match std::fs::read_dir(&self.root) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(BundleError::io(&self.root)(e)),
            },
        };
        for s in sites {
            let dir = self.root.join(&s);
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(BundleError::io(&dir)(e)),
            };
            for e in rd.filter_map(|e| e.ok()) {
                if let Some(ms) = e.file_name().to_str().and_then(|n| n.parse::<i64>().ok()) {
                    out.push(BundleRef {
                        site: s.clone(),
                        switch_ms: ms,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.site, a.switch_ms).cmp(&(&b.site, b.switch_ms)));
        Ok(out)
    }

    fn create(&self, b: &BundleRef, name: &str) -> Result<Box<dyn PartSink>> {
        let name = Self::checked(name)?;
        let dir = self.dir(b);
        std::fs::create_dir_all(&dir).map_err(BundleError::io(&dir))?;
        let tmp = dir.join(format!(".tmp.{name}"));
        let file = std::fs::File::create(&tmp).map_err(BundleError::io(&tmp))?;
        Ok(Box::new(LocalSink {
            file,
            tmp,
            path: dir.join(name),
        }))
    }

    fn open(&self, b: &BundleRef, name: &str) -> Result<Option<Box<dyn Read + Send>>> {
        let path = self.dir(b).join(Self::checked(name)?);
        match std::fs::File::open(&path) {
            Ok(f) => Ok(Some(Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                f,
            )))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BundleError::io(path)(e)),
        }
    }

    fn delete(&self, b: &BundleRef) -> Result<u64> {
        let n = self.size(b)?;
        let dir = self.dir(b);
        std::fs::remove_dir_all(&dir).map_err(BundleError::io(&dir))?;
        // The site's directory goes with its last bundle.
        let _ = std::fs::remove_dir(self.root.join(&b.site));
        Ok(n)
    }

    fn size(&self, b: &BundleRef) -> Result<u64> {
        let dir = self.dir(b);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(BundleError::io(&dir)(e)),
        };
        Ok(rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum())
    }
}

/// What `expire` did (or, in a dry run, would do) with one bundle.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Expired {
    pub bundle: String,
    pub expires_ms: i64,
    pub bytes: u64,
}

/// Deletes the complete bundles whose retention ended before `now_ms` (incomplete ones are
/// left: a capture may still be running); with `dry_run` only says which.
pub fn expire(store: &dyn BundleStore, now_ms: i64, dry_run: bool) -> Result<Vec<Expired>> {
    let mut out = Vec::new();
    for b in store.list(None)? {
        let Some((m, _, _)) = read_manifest(store, &b)? else {
            continue;
        };
        if m.expires_ms > now_ms {
            continue;
        }
        let bytes = if dry_run {
            store.size(&b)?
        } else {
            store.delete(&b)?
        };
        out.push(Expired {
            bundle: b.id(),
            expires_ms: m.expires_ms,
            bytes,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_appears_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        let b = BundleRef::parse("shop/1700000000000").unwrap();
        let mut w = s.create(&b, "db-x.sql.zst").unwrap();
        w.write_all(b"half").unwrap();
        assert!(s.open(&b, "db-x.sql.zst").unwrap().is_none());
        drop(w);
        let mut w = s.create(&b, "db-x.sql.zst").unwrap();
        w.write_all(b"whole").unwrap();
        w.commit().unwrap();
        assert_eq!(s.get_small(&b, "db-x.sql.zst").unwrap().unwrap(), b"whole");
        assert_eq!(
            hash_part(&s, &b, "db-x.sql.zst").unwrap().unwrap(),
            (5, blake3::hash(b"whole").to_hex().to_string())
        );
        assert_eq!(s.list(None).unwrap(), vec![b.clone()]);
        assert!(s.create(&b, "../evil").is_err());
        assert!(BundleRef::parse("shop").is_err());
        assert!(BundleRef::parse("../x/12").is_err());
        assert!(BundleRef::parse("../12").is_err());
    }
}

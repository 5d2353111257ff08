//! A home walked in parallel: every directory is a rayon task (`rayon::scope`), files are
//! read into a per-thread buffer and given to the [`Scanner`]. Skipped without reading: media
//! and binaries by extension, symbolic links (the walk stays inside the home), files larger
//! than the limit; skipped after the first 8 KiB: files with a NUL byte there (binary).
//!
//! The same walk gives the home's [`HomeScan::stamp`]: a digest of every entry's relative
//! path, size and mtime, independent of the walk's order. [`stamp_home`] computes it without
//! reading a file, so a rerun scans only homes whose stamp changed.

use super::code::Scanner;
use super::config::{PreflightConfig, MEDIA_EXTENSIONS};
use super::rules::FileClass;
use super::{Finding, PreflightError, Result};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

/// Bytes sniffed for a NUL.
const SNIFF: usize = 8192;
/// Unreadable entries kept by name (the count is whole).
const MAX_ERRORS: usize = 20;

/// What the walk skips.
#[derive(Debug, Clone)]
pub struct WalkLimits {
    pub max_file_bytes: u64,
    /// Lower-case extensions never read.
    pub skip: HashSet<String>,
}

impl WalkLimits {
    pub fn from_config(c: &PreflightConfig) -> WalkLimits {
        let mut skip: HashSet<String> = MEDIA_EXTENSIONS.iter().map(|s| s.to_string()).collect();
        skip.extend(
            c.skip_extensions
                .iter()
                .map(|e| e.trim_start_matches('.').to_ascii_lowercase()),
        );
        WalkLimits {
            max_file_bytes: c.max_file_bytes,
            skip,
        }
    }

    fn skips(&self, name: &str) -> bool {
        match name.rsplit_once('.') {
            Some((_, ext)) if !ext.is_empty() => {
                self.skip.contains(ext) || self.skip.contains(&ext.to_ascii_lowercase())
            }
            _ => false,
        }
    }
}

/// Counts of one walk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkCounts {
    pub files: u64,
    pub bytes: u64,
    pub skipped_media: u64,
    pub skipped_binary: u64,
    pub skipped_large: u64,
    pub unreadable: u64,
}

impl WalkCounts {
    fn add(&mut self, o: &WalkCounts) {
        self.files += o.files;
        self.bytes += o.bytes;
        self.skipped_media += o.skipped_media;
        self.skipped_binary += o.skipped_binary;
        self.skipped_large += o.skipped_large;
        self.unreadable += o.unreadable;
    }
}

/// One home's scan.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HomeScan {
    pub counts: WalkCounts,
    /// See the file's documentation.
    pub stamp: u64,
    /// Sorted by file and line.
    pub findings: Vec<Finding>,
    /// Entries that could not be read (at most [`MAX_ERRORS`]; `counts.unreadable` is whole).
    pub errors: Vec<String>,
}

#[derive(Default)]
struct Acc {
    counts: WalkCounts,
    stamp: u64,
    findings: Vec<Finding>,
    errors: Vec<String>,
}

struct Walk<'a> {
    scanner: Option<&'a Scanner>,
    limits: &'a WalkLimits,
    compat: &'a [String],
    acc: Mutex<Acc>,
}

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn entry_hash(rel: &str, size: u64, mtime_ns: i128) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    rel.hash(&mut h);
    size.hash(&mut h);
    mtime_ns.hash(&mut h);
    h.finish()
}

fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

/// Scans every file of `home` (see the file's documentation). `compat` is the site's set of
/// absolute paths that keep working, its own home first.
pub fn scan_home(
    scanner: &Scanner,
    limits: &WalkLimits,
    home: &Path,
    compat: &[String],
) -> Result<HomeScan> {
    walk(Some(scanner), limits, home, compat)
}

/// The home's stamp alone (every entry stat-ed, no file read).
pub fn stamp_home(limits: &WalkLimits, home: &Path) -> Result<u64> {
    Ok(walk(None, limits, home, &[])?.stamp)
}

fn walk(
    scanner: Option<&Scanner>,
    limits: &WalkLimits,
    home: &Path,
    compat: &[String],
) -> Result<HomeScan> {
    std::fs::read_dir(home).map_err(|source| PreflightError::Io {
        path: home.to_path_buf(),
        source,
    })?;
    let w = Walk {
        scanner,
        limits,
        compat,
        acc: Mutex::new(Acc::default()),
    };
    rayon::scope(|s| w.dir(s, home.to_path_buf(), String::new()));
    let acc = w.acc.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut findings = acc.findings;
    findings.sort_by(|a, b| {
        let key = |f: &Finding| match &f.at {
            super::Where::File { path, line } => (path.clone(), *line),
            _ => (String::new(), 0),
        };
        key(a).cmp(&key(b)).then_with(|| a.rule.cmp(&b.rule))
    });
    let mut errors = acc.errors;
    errors.sort();
    Ok(HomeScan {
        counts: acc.counts,
        stamp: acc.stamp,
        findings,
        errors,
    })
}

impl<'a> Walk<'a> {
    fn dir<'s>(&'s self, s: &rayon::Scope<'s>, dir: std::path::PathBuf, rel: String) {
        let mut local = Acc::default();
        match std::fs::read_dir(&dir) {
            Err(e) => self.error(&mut local, &rel, &e),
            Ok(rd) => {
                for entry in rd {
                    let entry = match entry {
                        Ok(e) => e,
                        Err(e) => {
                            self.error(&mut local, &rel, &e);
                            continue;
                        }
                    };
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    let child_rel = if rel.is_empty() {
                        name.to_string()
                    } else {
                        format!("{rel}/{name}")
                    };
                    let Ok(ft) = entry.file_type() else {
                        local.counts.unreadable += 1;
                        continue;
                    };
                    if ft.is_dir() {
                        if let Ok(m) = entry.metadata() {
                            local.stamp =
                                local
                                    .stamp
                                    .wrapping_add(entry_hash(&child_rel, 0, mtime_ns(&m)));
                        }
                        let path = entry.path();
                        s.spawn(move |s| self.dir(s, path, child_rel));
                    } else if ft.is_file() {
                        self.file(&mut local, &entry.path(), &child_rel, &name);
                    }
                }
            }
        }
        let mut acc = self.acc.lock().unwrap_or_else(|p| p.into_inner());
        acc.counts.add(&local.counts);
        acc.stamp = acc.stamp.wrapping_add(local.stamp);
        acc.findings.append(&mut local.findings);
        for e in local.errors {
            if acc.errors.len() < MAX_ERRORS {
                acc.errors.push(e);
            }
        }
    }

    fn error(&self, local: &mut Acc, rel: &str, e: &std::io::Error) {
        local.counts.unreadable += 1;
        if local.errors.len() < MAX_ERRORS {
            local
                .errors
                .push(format!("{}: {e}", if rel.is_empty() { "." } else { rel }));
        }
    }

    fn file(&self, local: &mut Acc, path: &Path, rel: &str, name: &str) {
        let Some(scanner) = self.scanner else {
            match std::fs::symlink_metadata(path) {
                Ok(m) => {
                    local.stamp = local
                        .stamp
                        .wrapping_add(entry_hash(rel, m.len(), mtime_ns(&m)))
                }
                Err(e) => self.error(local, rel, &e),
            }
            return;
        };
        if self.limits.skips(name) {
            local.counts.skipped_media += 1;
            if let Ok(m) = std::fs::symlink_metadata(path) {
                local.stamp = local
                    .stamp
                    .wrapping_add(entry_hash(rel, m.len(), mtime_ns(&m)));
            }
            return;
        }
        let mut f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => return self.error(local, rel, &e),
        };
        let m = match f.metadata() {
            Ok(m) => m,
            Err(e) => return self.error(local, rel, &e),
        };
        local.stamp = local
            .stamp
            .wrapping_add(entry_hash(rel, m.len(), mtime_ns(&m)));
        if m.len() > self.limits.max_file_bytes {
            local.counts.skipped_large += 1;
            return;
        }
        BUF.with(|b| {
            let mut buf = b.borrow_mut();
            buf.clear();
            if let Err(e) = (&mut f)
                .take(self.limits.max_file_bytes)
                .read_to_end(&mut buf)
            {
                return self.error(local, rel, &e);
            }
            if memchr::memchr(0, &buf[..buf.len().min(SNIFF)]).is_some() {
                local.counts.skipped_binary += 1;
                return;
            }
            local.counts.files += 1;
            local.counts.bytes += buf.len() as u64;
            scanner.scan(
                FileClass::of(name),
                rel,
                &buf,
                self.compat,
                &mut local.findings,
            );
        });
    }
}

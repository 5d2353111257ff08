//! Consistency-point bundles (issue 19): a signed, verifiable snapshot of one site at the
//! instant its writes moved, kept for a number of days after the switch.
//!
//! Why from the old side: once the switch committed nothing writes there any more, so the old
//! copy *is* the consistency point. A bundle is captured from it after the unfreeze, off the
//! critical path (the freeze is not made longer), throttled and resumable part by part.
//!
//! Layout:
//! - this file: the [`BundleManifest`] and its parts, [`BundleError`];
//! - `sign.rs`: the ed25519 key (0600, created when missing, public key next to it), signing
//!   and checking a manifest;
//! - `part.rs`: writing one part (a child's output throttled, zstd-compressed, hashed with
//!   BLAKE3, written under a temporary name and renamed), the [`part::Throttle`], and the
//!   client option file that keeps database passwords off command lines;
//! - `store.rs`: the [`store::BundleStore`] trait and its local-directory implementation,
//!   listing and expiry; `store_ssh.rs`: the same on another host over SSH (host key checked
//!   against known_hosts);
//! - `capture.rs`: one site's capture (per database a `mariadb-dump`, per home the file
//!   manifest and optionally a tar), resumed after a kill without redoing finished parts;
//! - `check.rs`: `verify` (signature, every part's hash, the dumps restored into scratch
//!   databases and compared with the checksums recorded at the switch) and `restore`;
//! - `pause.rs`: a capture pauses while a site is frozen (this process's freeze leases and the
//!   journal's), so that the freeze is not made longer;
//! - `job.rs`: one site's capture then verification, recorded in the journal, and the
//!   background thread that does it for each site of a wave as soon as it is live;
//! - `state.rs`: a site's bundle state in the journal (what `finalize`, `status`, the
//!   dashboard and `/metrics` read).
//!
//! A bundle is a directory `<store>/<site>/<switch_ms>/` holding its parts, `progress.json`
//! (the parts finished so far, for a resumed capture), and, once complete, `manifest.json`
//! and `manifest.sig` (hex ed25519 signature of the manifest's exact bytes).

pub mod capture;
pub mod check;
pub mod job;
pub mod part;
pub mod pause;
pub mod sign;
pub mod state;
pub mod store;
pub mod store_ssh;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The manifest format this migrator writes and reads.
pub const FORMAT: u32 = 1;

/// Errors of bundles; each names the file, part, database or key it is about.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A child program (`mariadb-dump`, `mariadb`, `tar`) failed.
    #[error("{program} ({what}): {message}")]
    Program {
        program: String,
        what: String,
        message: String,
    },
    #[error("database {db}: {message}")]
    Database { db: String, message: String },
    #[error("key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("bundle {bundle}: {message}")]
    Invalid { bundle: String, message: String },
    #[error("site {site}: {message}")]
    Refused { site: String, message: String },
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
}

impl BundleError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BundleError {
        let path = path.into();
        move |source| BundleError::Io { path, source }
    }
}

pub type Result<T, E = BundleError> = std::result::Result<T, E>;

/// What a part holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartKind {
    /// `mariadb-dump` output of one database, zstd: `zstd -dc PART | mariadb NEWNAME`.
    Dump,
    /// A home's file manifest (JSON lines: path, kind, size, mode, BLAKE3), zstd.
    FileManifest,
    /// A tar of a home, zstd: `zstd -dc PART | tar -x -C DIR`.
    HomeTar,
}

/// One stored file of a bundle, as finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// File name inside the bundle directory.
    pub name: String,
    pub kind: PartKind,
    /// Stored (compressed) bytes.
    pub bytes: u64,
    /// Bytes before compression (what the dump or tar produced).
    pub raw_bytes: u64,
    /// BLAKE3 of the stored bytes, hex.
    pub blake3: String,
}

/// Where a database's checksums at the switch come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumSource {
    /// Journaled by the cutover's verification at the switch (`switch-checksums` scope).
    Journal,
    /// Not journaled (the verification after the switch was lost): computed from the old
    /// side at capture time, which nothing has written since the switch.
    Capture,
}

/// One database of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbRecord {
    pub name: String,
    pub charset: String,
    pub collation: String,
    /// The dump part's name.
    pub part: String,
    /// Table → checksum (`rows:sum:xor`, [`crate::db::schema::table_checksum`]) at the switch.
    pub checksums: BTreeMap<String, String>,
    pub checksums_from: ChecksumSource,
}

/// One home of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeRecord {
    /// The old side's path (where the files were captured from).
    pub path: PathBuf,
    pub manifest_part: String,
    pub tar_part: Option<String>,
    pub files: u64,
    pub file_bytes: u64,
}

/// The signed description of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleManifest {
    pub format: u32,
    pub site: String,
    /// The switch's commit (the `switch` phase's end in the journal), Unix ms.
    pub switch_ms: i64,
    pub captured_ms: i64,
    /// After this instant `bundle expire` deletes the bundle (Unix ms).
    pub expires_ms: i64,
    pub databases: Vec<DbRecord>,
    pub homes: Vec<HomeRecord>,
    pub parts: Vec<PartInfo>,
    /// The signer's public key, hex (informative: `verify` checks against the key file it is
    /// given, never against this).
    pub public_key: String,
}

impl BundleManifest {
    /// The bundle's id: `<site>/<switch_ms>`.
    pub fn id(&self) -> String {
        bundle_id(&self.site, self.switch_ms)
    }
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes).sum()
    }
    pub fn part(&self, name: &str) -> Option<&PartInfo> {
        self.parts.iter().find(|p| p.name == name)
    }
}

pub fn bundle_id(site: &str, switch_ms: i64) -> String {
    format!("{site}/{switch_ms}")
}

/// A file name made of `prefix`, the name's safe characters and a short hash of the whole
/// name (two names differing only in unsafe characters still get two files).
pub(crate) fn part_name(prefix: &str, name: &str, suffix: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let h = blake3::hash(name.as_bytes()).to_hex();
    format!("{prefix}-{safe}-{}{suffix}", &h[..8])
}

#[cfg(test)]
mod tests {
    #[test]
    fn part_names_are_safe_and_distinct() {
        let a = super::part_name("db", "shop/../x", ".sql.zst");
        let b = super::part_name("db", "shop_.._x", ".sql.zst");
        assert!(
            a.starts_with("db-shop____x-") && a.ends_with(".sql.zst"),
            "{a}"
        );
        assert!(!a.contains('/'));
        assert_ne!(a, b);
    }
}

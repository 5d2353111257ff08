//! Verification: both sides' file manifests (and, in `db::copy`, table checksums) compared, with
//! every difference listed in words an operator can act on.

use crate::files::manifest::{self, Change, WalkOptions};
use crate::files::sync::{Destination, SyncError};
use std::path::Path;

/// The outcome of comparing the files of both sides.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FileVerifyReport {
    pub source_entries: u64,
    pub destination_entries: u64,
    /// One line per difference, e.g. `only on source: www/index.php`.
    pub differences: Vec<String>,
    /// What the source walk left out (escaping symlinks, sockets, devices).
    pub warnings: Vec<String>,
    pub checksummed: bool,
}

impl FileVerifyReport {
    pub fn equal(&self) -> bool {
        self.differences.is_empty()
    }
}

fn describe(c: &Change) -> String {
    let p = manifest::display(c.path());
    match c {
        Change::Added(e) => format!("only on source: {p} ({:?}, {} bytes)", e.kind, e.size),
        Change::Removed(e) => format!("only on destination: {p} ({:?})", e.kind),
        Change::Modified { src, dst } => {
            let mut what = Vec::new();
            if src.kind != dst.kind {
                what.push(format!("type {:?} vs {:?}", src.kind, dst.kind));
            }
            if src.size != dst.size {
                what.push(format!("size {} vs {}", src.size, dst.size));
            }
            if (src.mtime_s, src.mtime_ns) != (dst.mtime_s, dst.mtime_ns) {
                what.push(format!(
                    "mtime {}.{:09} vs {}.{:09}",
                    src.mtime_s, src.mtime_ns, dst.mtime_s, dst.mtime_ns
                ));
            }
            if src.link_target != dst.link_target {
                what.push("symlink target".to_string());
            }
            if src.hardlink != dst.hardlink {
                what.push("hard-link group".to_string());
            }
            if src.blake3.is_some() && src.blake3 != dst.blake3 {
                what.push("content (BLAKE3)".to_string());
            }
            format!("differs: {p}: {}", what.join(", "))
        }
        Change::Metadata { src, dst } => {
            let mut what = Vec::new();
            if src.mode != dst.mode {
                what.push(format!("mode {:o} vs {:o}", src.mode, dst.mode));
            }
            if (src.uid, src.gid) != (dst.uid, dst.gid) {
                what.push(format!(
                    "owner {}:{} vs {}:{}",
                    src.uid, src.gid, dst.uid, dst.gid
                ));
            }
            if (src.mtime_s, src.mtime_ns) != (dst.mtime_s, dst.mtime_ns) {
                what.push(format!(
                    "mtime {}.{:09} vs {}.{:09}",
                    src.mtime_s, src.mtime_ns, dst.mtime_s, dst.mtime_ns
                ));
            }
            format!("metadata differs: {p}: {}", what.join(", "))
        }
    }
}

/// Compares the source tree with the destination. `checksum`: compare content by BLAKE3 too.
pub fn verify_files(
    src_root: &Path,
    dst: &mut dyn Destination,
    checksum: bool,
) -> Result<FileVerifyReport, SyncError> {
    // A missing source root would walk as an empty home and report every destination file as
    // extra: say what is wrong instead.
    crate::files::sync::check_source_root(src_root)?;
    let walk = WalkOptions {
        checksum,
        refuse_escaping_symlinks: true,
        leftovers: false,
    };
    let src = manifest::build(src_root, &walk).map_err(SyncError::SourceWalk)?;
    let dstm = dst.manifest(checksum)?;
    let changes = manifest::diff(&src, &dstm, dst.sets_owner());
    let mut differences: Vec<String> = changes.iter().map(describe).collect();
    for t in &dstm.temp_files {
        differences.push(format!(
            "leftover temporary file on destination: {}",
            manifest::display(t)
        ));
    }
    Ok(FileVerifyReport {
        source_entries: src.entries.len() as u64,
        destination_entries: dstm.entries.len() as u64,
        differences,
        warnings: src.warnings,
        checksummed: checksum,
    })
}

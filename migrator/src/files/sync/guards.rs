//! What a pass checks of the source before it applies anything: a missing or emptied root is
//! never synced as an empty home (which would delete the whole destination).

use super::SyncError;
use crate::files::manifest::Manifest;
use std::path::Path;

/// The source root must exist and be a directory (followed if it is a symlink): a missing
/// root walks as an empty manifest, right for a fresh destination, fatal for a source.
pub fn check_source_root(src_root: &Path) -> Result<(), SyncError> {
    let err = |why: String| SyncError::SourceRoot {
        path: src_root.to_path_buf(),
        why,
    };
    match std::fs::metadata(src_root) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(err("not a directory".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(err("does not exist (unmounted filer? moved aside?)".into()))
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// A source manifest must contain its root directory: one without it came from a root that
/// vanished (during the walk, or under a change-feed patch).
pub(super) fn check_source_manifest(src_root: &Path, m: &Manifest) -> Result<(), SyncError> {
    match m.entries.first() {
        Some(e) if e.path.is_empty() => Ok(()),
        _ => Err(SyncError::SourceRoot {
            path: src_root.to_path_buf(),
            why: "vanished while the pass read it".into(),
        }),
    }
}

/// A source holding only its root over a destination holding files is refused unless
/// `allowed`: the usual cause is a filer that is not mounted (an empty mount point), and the
/// pass would delete the whole destination.
pub(super) fn check_not_emptied(
    src_root: &Path,
    src: &Manifest,
    dst: &Manifest,
    allowed: bool,
) -> Result<(), SyncError> {
    let held = dst.entries.iter().filter(|e| !e.path.is_empty()).count();
    if allowed || held == 0 || src.entries.iter().any(|e| !e.path.is_empty()) {
        return Ok(());
    }
    Err(SyncError::SourceRoot {
        path: src_root.to_path_buf(),
        why: format!(
            "is empty while the destination holds {held} entries (is the filer mounted?); \
             if the home really was emptied, run again with --allow-empty-source"
        ),
    })
}

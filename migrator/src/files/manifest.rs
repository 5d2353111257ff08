//! File manifests: what a home directory holds, entry by entry, and the difference between two.
//!
//! A manifest is built by a parallel walk (`rayon` across subdirectories and for hashing),
//! each directory opened from its parent's descriptor without following it
//! ([`crate::files::beneath`]): a directory swapped for a symlink during the walk is never
//! entered. Paths are relative, `/`-separated raw bytes, so names that are not UTF-8 survive.
//! Symlinks are recorded, never followed; on the source side a symlink whose target resolves
//! outside the home is left out with a warning. Sockets, FIFOs and devices are left out with a
//! warning. Hard links are recorded as a group named by the group's smallest path (its
//! "leader"), which is comparable across both sides, unlike inode numbers.

use crate::files::beneath::{self, Tree};
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Prefix of the temporary names the applier writes before an atomic rename. A customer's file
/// may carry it too and is copied like any other: only a destination file that also carries a
/// resume record (a large copy of a killed pass) is reported as a leftover
/// ([`Manifest::temp_files`]); other leftovers are extra files the next pass deletes.
pub const TEMP_PREFIX: &[u8] = b".~migrator-tmp.";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("walking {path}: {source}")]
    Walk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("hashing {path}: {source}")]
    Hash {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// One entry of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// Relative path, `/`-separated, raw bytes; empty for the root itself.
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Bytes for files; 0 otherwise (a symlink's size is its target's length and not compared).
    pub size: u64,
    pub mtime_s: i64,
    pub mtime_ns: u32,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub link_target: Option<Vec<u8>>,
    /// The hard-link group's leader (smallest path of the group) when the file has more than one
    /// name inside the tree.
    pub hardlink: Option<Vec<u8>>,
    pub blake3: Option<[u8; 32]>,
}

impl Entry {
    /// The entry at `rel` as `st` (an `lstat`) describes it; no hard-link group, no checksum.
    pub fn from_stat(
        rel: Vec<u8>,
        kind: Kind,
        size: u64,
        st: &libc::stat,
        link_target: Option<Vec<u8>>,
    ) -> Entry {
        Entry {
            path: rel,
            kind,
            size,
            mtime_s: st.st_mtime,
            mtime_ns: st.st_mtime_nsec as u32,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            link_target,
            hardlink: None,
            blake3: None,
        }
    }
}

/// A manifest and what the walk had to leave out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    /// Sorted by path (bytewise).
    pub entries: Vec<Entry>,
    /// Things left out, in words for the operator (escaping symlinks, sockets, devices).
    pub warnings: Vec<String>,
    /// Leftover temporary files of an interrupted pass that can resume a large copy (relative
    /// paths; destination walks only).
    pub temp_files: Vec<Vec<u8>>,
}

impl Manifest {
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// A digest of the whole manifest, stored in the journal as the pass's checksum.
    pub fn digest(&self) -> String {
        let mut h = blake3::Hasher::new();
        for e in &self.entries {
            h.update(&(e.path.len() as u64).to_le_bytes());
            h.update(&e.path);
            h.update(&[e.kind as u8]);
            h.update(&e.size.to_le_bytes());
            h.update(&e.mtime_s.to_le_bytes());
            h.update(&e.mtime_ns.to_le_bytes());
            h.update(&e.mode.to_le_bytes());
            h.update(&e.uid.to_le_bytes());
            h.update(&e.gid.to_le_bytes());
            if let Some(t) = &e.link_target {
                h.update(t);
            }
            if let Some(l) = &e.hardlink {
                h.update(l);
            }
        }
        h.finalize().to_hex().to_string()
    }
}

/// Options of a walk.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalkOptions {
    /// Compute BLAKE3 of every regular file (slow: reads everything).
    pub checksum: bool,
    /// Leave out symlinks resolving outside the root (the source side).
    pub refuse_escaping_symlinks: bool,
    /// Report files named [`TEMP_PREFIX`]… that carry a resume record as leftovers instead of
    /// entries (the destination side; on the source such a file is the customer's).
    pub leftovers: bool,
}

/// Lexical resolution of a symlink target: does `link` (relative path of the link inside the
/// root) pointing at `target` stay inside the root? Absolute targets count as inside only when
/// they lie under `root_abs`.
pub fn symlink_stays_inside(root_abs: &Path, link: &[u8], target: &[u8]) -> bool {
    let mut stack: Vec<&[u8]> = Vec::new();
    let rest: &[u8] = if target.first() == Some(&b'/') {
        let root = root_abs.as_os_str().as_bytes();
        let root = root.strip_suffix(b"/").unwrap_or(root);
        match target.strip_prefix(root) {
            Some(r) if r.is_empty() || r[0] == b'/' => r,
            _ => return false,
        }
    } else {
        // Start from the link's parent directory.
        let parent = match link.iter().rposition(|&b| b == b'/') {
            Some(i) => &link[..i],
            None => &link[..0],
        };
        for c in parent.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            stack.push(c);
        }
        target
    };
    for c in rest.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if stack.pop().is_none() {
                    return false;
                }
            }
            c => stack.push(c),
        }
    }
    true
}

/// Joins a relative manifest path to a root.
pub fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

struct Raw {
    entry: Entry,
    /// (dev, ino) for files with nlink > 1, to build hard-link groups.
    inode: Option<(u64, u64)>,
}

enum Seen {
    Keep(Raw),
    Warn(String),
    Temp(Vec<u8>),
}

/// `rel`: the entry's relative path; `name`: its file name (empty for the root); `dir`: the
/// directory holding it (the root's own descriptor for the root).
fn classify(
    root: &Tree,
    dir: &impl AsFd,
    rel: Vec<u8>,
    name: &[u8],
    st: &libc::stat,
    opts: &WalkOptions,
) -> Seen {
    let fmt = st.st_mode & libc::S_IFMT;
    if opts.leftovers && fmt == libc::S_IFREG && name.starts_with(TEMP_PREFIX) {
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
        let ours = beneath::open_in(dir, name, flags, 0)
            .ok()
            .and_then(|fd| crate::files::apply::large_copy::read_record(&fd))
            .is_some();
        if ours {
            return Seen::Temp(rel);
        }
    }
    let (kind, size, link_target) = match fmt {
        libc::S_IFDIR => (Kind::Dir, 0, None),
        libc::S_IFREG => (Kind::File, st.st_size as u64, None),
        libc::S_IFLNK => {
            let target = match beneath::readlink_in(dir, name) {
                Ok(t) => t,
                Err(e) => {
                    return Seen::Warn(format!(
                        "{}: cannot read symlink: {e}",
                        root.display(&rel).display()
                    ))
                }
            };
            if opts.refuse_escaping_symlinks && !symlink_stays_inside(root.path(), &rel, &target) {
                return Seen::Warn(format!(
                    "{}: symlink to {} resolves outside the home; not copied",
                    root.display(&rel).display(),
                    String::from_utf8_lossy(&target)
                ));
            }
            (Kind::Symlink, 0, Some(target))
        }
        _ => {
            return Seen::Warn(format!(
                "{}: socket, FIFO or device file; not copied",
                root.display(&rel).display()
            ))
        }
    };
    let inode = (kind == Kind::File && st.st_nlink > 1).then_some((st.st_dev, st.st_ino));
    Seen::Keep(Raw {
        entry: Entry::from_stat(rel, kind, size, st, link_target),
        inode,
    })
}

/// Walks one open directory (relative path `rel`): entries are stat'ed relative to it
/// (`fstatat`, never following them), subdirectories opened from it (`O_NOFOLLOW`: one
/// swapped for a symlink since it was stat'ed fails to open, and the walk stops with an error
/// rather than enter it), in parallel.
fn walk_dir(
    root: &Tree,
    dir: &OwnedFd,
    rel: &[u8],
    opts: &WalkOptions,
) -> Result<Vec<Seen>, ManifestError> {
    let werr = |rel: &[u8]| {
        let path = root.display(rel);
        move |source| ManifestError::Walk { path, source }
    };
    let mut out = Vec::new();
    let mut subdirs = Vec::new();
    for name in beneath::list_dir(dir).map_err(werr(rel))? {
        let mut child = Vec::with_capacity(rel.len() + 1 + name.len());
        if !rel.is_empty() {
            child.extend_from_slice(rel);
            child.push(b'/');
        }
        child.extend_from_slice(&name);
        let st = match beneath::stat_in(dir, &name) {
            Ok(st) => st,
            // Deleted since the directory was listed (a live site): it is not there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(werr(&child)(e)),
        };
        let seen = classify(root, dir, child, &name, &st, opts);
        if let Seen::Keep(r) = &seen {
            if r.entry.kind == Kind::Dir {
                subdirs.push((name, r.entry.path.clone()));
            }
        }
        out.push(seen);
    }
    let nested: Vec<Vec<Seen>> = subdirs
        .par_iter()
        .map(|(name, rel)| {
            let sub = beneath::open_in(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .map_err(werr(rel))?;
            walk_dir(root, &sub, rel, opts)
        })
        .collect::<Result<_, _>>()?;
    out.extend(nested.into_iter().flatten());
    Ok(out)
}

/// Walks `root` into a manifest. A missing root gives an empty manifest (a fresh destination).
pub fn build(root: &Path, opts: &WalkOptions) -> Result<Manifest, ManifestError> {
    let tree = match Tree::open(root) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
        Err(source) => {
            return Err(ManifestError::Walk {
                path: root.to_path_buf(),
                source,
            })
        }
    };
    build_tree(&tree, opts)
}

/// Walks an open tree into a manifest.
pub fn build_tree(tree: &Tree, opts: &WalkOptions) -> Result<Manifest, ManifestError> {
    let werr = |source| ManifestError::Walk {
        path: tree.path().to_path_buf(),
        source,
    };
    let root_st = beneath::fstat(&tree.root_fd()).map_err(werr)?;
    let root_fd = tree.root_fd().try_clone_to_owned().map_err(werr)?;
    let mut seen = vec![classify(tree, &root_fd, Vec::new(), b"", &root_st, opts)];
    seen.extend(walk_dir(tree, &root_fd, b"", opts)?);

    let mut m = Manifest::default();
    let mut raws = Vec::with_capacity(seen.len());
    for s in seen {
        match s {
            Seen::Keep(r) => raws.push(r),
            Seen::Warn(w) => m.warnings.push(w),
            Seen::Temp(t) => m.temp_files.push(t),
        }
    }
    raws.par_sort_unstable_by(|a, b| a.entry.path.cmp(&b.entry.path));
    // Hard-link groups: the leader is the smallest path, which the sort visits first.
    let mut leaders: HashMap<(u64, u64), (Vec<u8>, usize)> = HashMap::new();
    for r in &raws {
        if let Some(ino) = r.inode {
            leaders
                .entry(ino)
                .and_modify(|(_, n)| *n += 1)
                .or_insert_with(|| (r.entry.path.clone(), 1));
        }
    }
    m.entries = raws
        .into_iter()
        .map(|mut r| {
            if let Some(ino) = r.inode {
                if let Some((leader, n)) = leaders.get(&ino) {
                    if *n > 1 {
                        r.entry.hardlink = Some(leader.clone());
                    }
                }
            }
            r.entry
        })
        .collect();
    if opts.checksum {
        hash_tree(tree, &mut m.entries)?;
    }
    m.warnings.sort();
    Ok(m)
}

/// Fills in BLAKE3 of every regular file of an open tree, in parallel; each opened as a
/// source file is ([`beneath::open_source`]: no symlink, no FIFO).
pub fn hash_tree(tree: &Tree, entries: &mut [Entry]) -> Result<(), ManifestError> {
    entries
        .par_iter_mut()
        .filter(|e| e.kind == Kind::File)
        .try_for_each(|e| {
            let herr = |source| ManifestError::Hash {
                path: tree.display(&e.path),
                source,
            };
            let mut f = match beneath::open_source(tree, &e.path) {
                Ok((f, _)) => f,
                Err(beneath::SourceFailure::Gone(why)) => {
                    return Err(herr(std::io::Error::other(why)))
                }
                Err(beneath::SourceFailure::Error(e)) => return Err(herr(e)),
            };
            let mut h = blake3::Hasher::new();
            std::io::copy(&mut f, &mut h).map_err(herr)?;
            e.blake3 = Some(*h.finalize().as_bytes());
            Ok(())
        })
}

/// How one path differs between source and destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Missing on the destination.
    Added(Entry),
    /// Present on both sides, content (or type, or link target, or hard-link group) differs.
    Modified { src: Entry, dst: Entry },
    /// Only metadata (mode, owner, mtime) differs.
    Metadata { src: Entry, dst: Entry },
    /// Only on the destination.
    Removed(Entry),
}

impl Change {
    pub fn path(&self) -> &[u8] {
        match self {
            Change::Added(e) | Change::Removed(e) => &e.path,
            Change::Modified { src, .. } | Change::Metadata { src, .. } => &src.path,
        }
    }
}

fn content_differs(s: &Entry, d: &Entry) -> bool {
    if s.kind != d.kind || s.link_target != d.link_target || s.hardlink != d.hardlink {
        return true;
    }
    if s.kind == Kind::File {
        if s.size != d.size || s.mtime_s != d.mtime_s || s.mtime_ns != d.mtime_ns {
            return true;
        }
        if let (Some(a), Some(b)) = (&s.blake3, &d.blake3) {
            return a != b;
        }
    }
    false
}

fn meta_differs(s: &Entry, d: &Entry, owners: bool) -> bool {
    let mode_differs = s.kind != Kind::Symlink && s.mode != d.mode;
    mode_differs
        || (owners && (s.uid != d.uid || s.gid != d.gid))
        || s.mtime_s != d.mtime_s
        || s.mtime_ns != d.mtime_ns
}

/// Compares two manifests (both sorted by path). `owners`: compare uid/gid (off when the
/// destination cannot set ownership, i.e. not running as root).
pub fn diff(src: &Manifest, dst: &Manifest, owners: bool) -> Vec<Change> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < src.entries.len() || j < dst.entries.len() {
        let ord = match (src.entries.get(i), dst.entries.get(j)) {
            (Some(s), Some(d)) => s.path.cmp(&d.path),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                out.push(Change::Added(src.entries[i].clone()));
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(Change::Removed(dst.entries[j].clone()));
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (s, d) = (&src.entries[i], &dst.entries[j]);
                if content_differs(s, d) {
                    out.push(Change::Modified {
                        src: src.entries[i].clone(),
                        dst: dst.entries[j].clone(),
                    });
                } else if meta_differs(s, d, owners) {
                    out.push(Change::Metadata {
                        src: src.entries[i].clone(),
                        dst: dst.entries[j].clone(),
                    });
                }
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// A path for messages: lossless where it is UTF-8, escaped bytes where not.
pub fn display(path: &[u8]) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    path.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_escape_is_lexical_and_bounded_by_root() {
        let root = Path::new("/homez.1/alice");
        assert!(symlink_stays_inside(root, b"www/link", b"../data/x"));
        assert!(symlink_stays_inside(root, b"link", b"www/./index.php"));
        assert!(!symlink_stays_inside(root, b"link", b"../bob/secret"));
        assert!(!symlink_stays_inside(
            root,
            b"www/link",
            b"../../../etc/passwd"
        ));
        assert!(symlink_stays_inside(root, b"l", b"/homez.1/alice/www"));
        assert!(!symlink_stays_inside(root, b"l", b"/homez.1/alicex/www"));
        assert!(!symlink_stays_inside(root, b"l", b"/etc/passwd"));
    }

    fn entry(path: &str, kind: Kind, size: u64) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            size,
            mtime_s: 1,
            mtime_ns: 0,
            mode: 0o644,
            uid: 1,
            gid: 1,
            link_target: None,
            hardlink: None,
            blake3: None,
        }
    }

    #[test]
    fn diff_finds_added_modified_metadata_removed() {
        let src = Manifest {
            entries: vec![
                entry("a", Kind::File, 1),
                entry("b", Kind::File, 2),
                entry("c", Kind::File, 3),
            ],
            ..Default::default()
        };
        let mut b = entry("b", Kind::File, 2);
        b.mode = 0o600;
        let dst = Manifest {
            entries: vec![b, entry("c", Kind::File, 4), entry("d", Kind::File, 1)],
            ..Default::default()
        };
        let d = diff(&src, &dst, true);
        let kinds: Vec<_> = d
            .iter()
            .map(|c| match c {
                Change::Added(_) => "added",
                Change::Modified { .. } => "modified",
                Change::Metadata { .. } => "metadata",
                Change::Removed(_) => "removed",
            })
            .collect();
        assert_eq!(kinds, ["added", "metadata", "modified", "removed"]);
        assert!(diff(&src, &src, true).is_empty());
    }

    #[test]
    fn display_escapes_non_utf8() {
        assert_eq!(display(b"caf\xe9 menu"), "caf\\xe9 menu");
        assert_eq!(display(b""), ".");
    }
}

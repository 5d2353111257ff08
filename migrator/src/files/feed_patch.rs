//! A source manifest without a walk: the last committed pass's manifest patched with a fresh
//! `lstat` of the entries the change feed reports dirty ([`crate::files::feed`]).
//!
//! Same rules as the walk in [`crate::files::manifest`]: symlinks recorded, never followed, those
//! resolving outside the home left out with a warning; sockets, FIFOs and devices left out with
//! a warning; nothing reached through a symlink. A dirty path that vanished takes its
//! whole subtree with it; a dirty-recursive directory is walked in full.
//!
//! Hard links fall back to a full walk ([`Patched::NeedsWalk`]): a group's leader and members
//! are derived from inode numbers across the whole tree, which a patch cannot see.

use crate::files::beneath::{self, Tree};
use crate::files::manifest::{self, Entry, Kind, Manifest, ManifestError};
use std::path::Path;

/// The outcome of a patch.
#[derive(Debug)]
pub enum Patched {
    /// The manifest as a walk now would give it, and how many entries were stat'ed.
    Manifest { manifest: Manifest, statted: u64 },
    /// The patch cannot be exact; walk everything (the reason, for the operator).
    NeedsWalk(String),
}

enum Stat {
    Keep(Entry),
    Warn(String),
    /// Missing (or only reachable through a symlink).
    Skip,
    /// The patch cannot be exact (a hard-linked file): walk everything, for this reason.
    NeedsWalk(String),
}

fn werr(path: &Path) -> impl FnOnce(std::io::Error) -> ManifestError + '_ {
    move |source| ManifestError::Walk {
        path: path.to_path_buf(),
        source,
    }
}

/// `lstat` of one entry, classified as [`manifest::build`] does; [`Stat::NeedsWalk`] for a
/// hard-linked file. Reached from the root without following any symlink on the way
/// ([`beneath`]): an entry under a directory swapped for a symlink is not there.
fn stat(root: &Tree, rel: &[u8]) -> Result<Stat, ManifestError> {
    let path = root.display(rel);
    let gone = |e: &std::io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV)
        )
    };
    let (dir, name) = if rel.is_empty() {
        (beneath::DirFd::Root(root.root_fd()), &rel[..0])
    } else {
        match root.parent_of(rel) {
            Ok(x) => x,
            Err(e) if gone(&e) => return Ok(Stat::Skip),
            Err(e) => return Err(werr(&path)(e)),
        }
    };
    let st = if rel.is_empty() {
        beneath::fstat(&root.root_fd())
    } else {
        beneath::stat_in(&dir, name)
    };
    let st = match st {
        Ok(st) => st,
        Err(e) if gone(&e) => return Ok(Stat::Skip),
        Err(e) => return Err(werr(&path)(e)),
    };
    let (kind, size, link_target) = match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => (Kind::Dir, 0, None),
        libc::S_IFREG => {
            if st.st_nlink > 1 {
                return Ok(Stat::NeedsWalk(format!(
                    "{} is hard-linked",
                    path.display()
                )));
            }
            (Kind::File, st.st_size as u64, None)
        }
        libc::S_IFLNK => {
            let target = match beneath::readlink_in(&dir, name) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Stat::Skip),
                Err(e) => {
                    return Ok(Stat::Warn(format!(
                        "{}: cannot read symlink: {e}",
                        path.display()
                    )))
                }
            };
            if !manifest::symlink_stays_inside(root.path(), rel, &target) {
                return Ok(Stat::Warn(format!(
                    "{}: symlink to {} resolves outside the home; not copied",
                    path.display(),
                    String::from_utf8_lossy(&target)
                )));
            }
            (Kind::Symlink, 0, Some(target))
        }
        _ => {
            return Ok(Stat::Warn(format!(
                "{}: socket, FIFO or device file; not copied",
                path.display()
            )))
        }
    };
    Ok(Stat::Keep(Entry::from_stat(
        rel.to_vec(),
        kind,
        size,
        &st,
        link_target,
    )))
}

fn under(p: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || (p.len() > dir.len() && p.starts_with(dir) && p[dir.len()] == b'/')
}

/// What the patch collected: fresh entries, warnings, the paths whose subtrees are replaced.
#[derive(Default)]
struct Fresh {
    entries: Vec<Entry>,
    warnings: Vec<(Vec<u8>, String)>,
    statted: u64,
}

impl Fresh {
    /// Stats `rel`, and walks below it when `recursive` (or when it is a directory the base
    /// did not have as one). Returns a reason when the patch cannot be exact.
    fn add(
        &mut self,
        root: &Tree,
        rel: &[u8],
        recursive: bool,
        was_dir: bool,
    ) -> Result<Option<String>, ManifestError> {
        self.statted += 1;
        match stat(root, rel)? {
            Stat::NeedsWalk(why) => Ok(Some(why)),
            Stat::Skip => Ok(None),
            Stat::Warn(w) => {
                self.warnings.push((rel.to_vec(), w));
                Ok(None)
            }
            Stat::Keep(e) => {
                let descend = e.kind == Kind::Dir && (recursive || !was_dir);
                self.entries.push(e);
                if !descend {
                    return Ok(None);
                }
                let dir = root.display(rel);
                let opened = if rel.is_empty() {
                    root.root_fd().try_clone_to_owned()
                } else {
                    root.open_at(rel, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                };
                let names = match opened.and_then(|fd| beneath::list_dir(&fd)) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(werr(&dir)(e)),
                };
                for name in names {
                    let mut c = rel.to_vec();
                    if !c.is_empty() {
                        c.push(b'/');
                    }
                    c.extend_from_slice(&name);
                    if let Some(why) = self.add(root, &c, true, false)? {
                        return Ok(Some(why));
                    }
                }
                Ok(None)
            }
        }
    }
}

/// Patches `base` (the last committed pass's source manifest of `root`) with `dirty`
/// (relative path, recursive) entries.
pub fn patch(
    root: &Path,
    base: Manifest,
    dirty: &[(Vec<u8>, bool)],
) -> Result<Patched, ManifestError> {
    let root = &Tree::open(root).map_err(werr(root))?;
    let find = |p: &[u8]| base.entries.binary_search_by(|e| e.path.as_slice().cmp(p));
    // Subtrees replaced wholesale (a dirty directory, or a dirty path that was one) and single
    // entries replaced.
    let mut subtrees: Vec<Vec<u8>> = Vec::new();
    let mut singles: Vec<Vec<u8>> = Vec::new();
    let mut fresh = Fresh::default();
    for (rel, recursive) in dirty {
        let old = find(rel).ok().map(|i| &base.entries[i]);
        if let Some(o) = old {
            if o.hardlink.is_some() {
                return Ok(Patched::NeedsWalk(format!(
                    "{} was hard-linked",
                    manifest::display(rel)
                )));
            }
        }
        let was_dir = matches!(old, Some(o) if o.kind == Kind::Dir);
        let before = fresh.entries.len();
        if let Some(why) = fresh.add(root, rel, *recursive, was_dir)? {
            return Ok(Patched::NeedsWalk(why));
        }
        let now_dir = fresh.entries[before..]
            .first()
            .is_some_and(|e| e.kind == Kind::Dir && e.path == *rel);
        // A directory walked now (recursive, or newly one) or one that went away replaces its
        // whole subtree; otherwise only the entry itself.
        let walked = now_dir && (*recursive || !was_dir);
        if walked || (was_dir && !now_dir) {
            subtrees.push(rel.clone());
        } else {
            singles.push(rel.clone());
        }
    }
    subtrees.sort();
    singles.sort();
    let replaced = |p: &[u8]| {
        singles.binary_search_by(|s| s.as_slice().cmp(p)).is_ok()
            || subtrees.iter().any(|d| d.as_slice() == p || under(p, d))
    };
    // Hard-link groups inside a replaced subtree also need the whole tree.
    let mut kept = Vec::with_capacity(base.entries.len() + fresh.entries.len());
    for e in base.entries {
        if replaced(&e.path) {
            if e.hardlink.is_some() {
                return Ok(Patched::NeedsWalk(format!(
                    "{} was hard-linked",
                    manifest::display(&e.path)
                )));
            }
            continue;
        }
        kept.push(e);
    }
    fresh.entries.sort_by(|a, b| a.path.cmp(&b.path));
    fresh.entries.dedup_by(|a, b| a.path == b.path);
    let mut entries = Vec::with_capacity(kept.len() + fresh.entries.len());
    let mut from_fresh = Vec::with_capacity(fresh.entries.len());
    let (mut a, mut b) = (
        kept.into_iter().peekable(),
        fresh.entries.into_iter().peekable(),
    );
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.path < y.path,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if !take_a {
            from_fresh.push(entries.len());
        }
        entries.push(if take_a { a.next() } else { b.next() }.expect("peeked"));
    }
    // Every fresh entry's parent must be a directory of the manifest, or the patch missed
    // something (kept entries lose their parent only with their whole subtree).
    for &k in &from_fresh {
        let e = &entries[k];
        if e.path.is_empty() {
            continue;
        }
        let parent = match e.path.iter().rposition(|&c| c == b'/') {
            Some(i) => &e.path[..i],
            None => &e.path[..0],
        };
        let ok = entries
            .binary_search_by(|x| x.path.as_slice().cmp(parent))
            .is_ok_and(|i| entries[i].kind == Kind::Dir);
        if !ok {
            return Ok(Patched::NeedsWalk(format!(
                "{} has no parent directory in the patched manifest",
                manifest::display(&e.path)
            )));
        }
    }
    // Never an empty manifest from a vanished root: the pass would delete the destination.
    if entries
        .first()
        .is_none_or(|e| !e.path.is_empty() || e.kind != Kind::Dir)
    {
        return Err(ManifestError::Walk {
            path: root.path().to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the source root vanished or is no longer a directory",
            ),
        });
    }
    // Warnings: those of re-stat'ed paths are replaced by what the stat said now. A base
    // warning names its path as `<root>/<rel>: …` (manifest::build writes them so). A single
    // entry replaces only its own warning (`<path>: `, never `<path>/…` nor `<path>:x…`); a
    // re-walked subtree replaces every warning under it.
    let abs = |p: &[u8]| root.display(p).display().to_string();
    let singles_abs: Vec<String> = singles.iter().map(|p| abs(p)).collect();
    let subtrees_abs: Vec<String> = subtrees.iter().map(|p| abs(p)).collect();
    let mut warnings: Vec<String> = base
        .warnings
        .into_iter()
        .filter(|w| {
            let own = |p: &String| {
                w.strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with(": "))
            };
            let below = |p: &String| {
                w.strip_prefix(p.as_str()).is_some_and(|rest| {
                    rest.starts_with(": ") || (rest.starts_with('/') && !p.ends_with('/'))
                }) || (p.ends_with('/') && w.starts_with(p.as_str()))
            };
            !(singles_abs.iter().any(own) || subtrees_abs.iter().any(below))
        })
        .collect();
    warnings.extend(fresh.warnings.into_iter().map(|(_, w)| w));
    warnings.sort();
    warnings.dedup();
    Ok(Patched::Manifest {
        manifest: Manifest {
            entries,
            warnings,
            temp_files: Vec::new(),
        },
        statted: fresh.statted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::manifest::{build, WalkOptions};
    use std::fs;

    fn walk(root: &Path) -> Manifest {
        let mut m = build(
            root,
            &WalkOptions {
                checksum: false,
                refuse_escaping_symlinks: true,
                leftovers: false,
            },
        )
        .unwrap();
        m.temp_files.clear();
        m
    }

    #[test]
    fn patch_equals_a_fresh_walk() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        fs::write(r.join("a/f"), b"1").unwrap();
        fs::write(r.join("a/b/g"), b"2").unwrap();
        fs::create_dir(r.join("old")).unwrap();
        fs::write(r.join("old/x"), b"3").unwrap();
        let base = walk(r);
        // Change, add, delete, a new dir with files, a renamed dir, an escaping symlink.
        fs::write(r.join("a/f"), b"changed").unwrap();
        fs::write(r.join("a/new"), b"n").unwrap();
        fs::remove_file(r.join("a/b/g")).unwrap();
        fs::create_dir_all(r.join("fresh/deep")).unwrap();
        fs::write(r.join("fresh/deep/y"), b"y").unwrap();
        fs::rename(r.join("old"), r.join("moved")).unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", r.join("a/esc")).unwrap();
        let dirty: Vec<(Vec<u8>, bool)> = [
            ("", false),
            ("a", false),
            ("a/f", false),
            ("a/new", false),
            ("a/b", false),
            ("a/b/g", false),
            ("fresh", true),
            ("old", true),
            ("moved", true),
            ("a/esc", false),
        ]
        .iter()
        .map(|(p, r)| (p.as_bytes().to_vec(), *r))
        .collect();
        let Patched::Manifest { manifest, statted } = patch(r, base, &dirty).unwrap() else {
            panic!("expected a patch");
        };
        assert_eq!(manifest, walk(r));
        assert!(statted >= dirty.len() as u64, "{statted}");
    }

    #[test]
    fn hard_links_ask_for_a_walk() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::write(r.join("f"), b"1").unwrap();
        let base = walk(r);
        fs::hard_link(r.join("f"), r.join("g")).unwrap();
        let dirty = vec![(b"g".to_vec(), false), (Vec::new(), false)];
        assert!(matches!(
            patch(r, base, &dirty).unwrap(),
            Patched::NeedsWalk(_)
        ));
    }

    fn sorted(mut m: Manifest) -> Manifest {
        m.warnings.sort();
        m
    }

    #[test]
    fn warnings_of_entries_not_restatted_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("a/deep")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("a/deep/esc")).unwrap();
        fs::write(r.join("a/f"), b"1").unwrap();
        fs::write(r.join("b"), b"1").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("b:x")).unwrap();
        let base = walk(r);
        assert_eq!(base.warnings.len(), 2, "{:?}", base.warnings);
        // `a` dirty but not recursive: its subtree was not re-stat'ed, its warnings stay;
        // `b` re-stat'ed: the warning of `b:x` is not `b`'s.
        fs::write(r.join("a/g"), b"2").unwrap();
        fs::write(r.join("b"), b"2").unwrap();
        let dirty: Vec<(Vec<u8>, bool)> = [("a", false), ("a/g", false), ("b", false)]
            .iter()
            .map(|(p, r)| (p.as_bytes().to_vec(), *r))
            .collect();
        let Patched::Manifest { manifest, .. } = patch(r, base, &dirty).unwrap() else {
            panic!("expected a patch");
        };
        assert_eq!(sorted(manifest), sorted(walk(r)));
        // A re-walked subtree replaces its warnings: the escaping link fixed, its warning gone.
        let base = walk(r);
        fs::remove_file(r.join("a/deep/esc")).unwrap();
        std::os::unix::fs::symlink("f", r.join("a/deep/esc")).unwrap();
        let Patched::Manifest { manifest, .. } = patch(r, base, &[(b"a".to_vec(), true)]).unwrap()
        else {
            panic!("expected a patch");
        };
        assert_eq!(sorted(manifest), sorted(walk(r)));
    }

    #[test]
    fn a_vanished_root_is_an_error_never_an_empty_manifest() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("home");
        fs::create_dir_all(r.join("www")).unwrap();
        fs::write(r.join("www/index.php"), b"1").unwrap();
        let base = walk(&r);
        fs::rename(&r, d.path().join("aside")).unwrap();
        let dirty = vec![(Vec::new(), false), (b"www".to_vec(), true)];
        assert!(patch(&r, base.clone(), &dirty).is_err());
        // Replaced by a file: the same.
        fs::write(&r, b"x").unwrap();
        assert!(patch(&r, base, &dirty).is_err());
    }
}

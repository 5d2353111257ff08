//! Temporary files of a pass: names that never collide with a customer's file, the resumable
//! leftovers of an interrupted pass, and large files arriving in chunks.
//!
//! A temporary name is [`TEMP_PREFIX`] followed by a per-process random seed and a counter,
//! created with `O_EXCL` (or `symlinkat`/`linkat`, which never replace) in the directory of
//! the file it will replace: a customer file that happens to carry the same name is never
//! opened, truncated or renamed (the create fails and the next name is tried). A leftover of a
//! killed pass is then an ordinary extra file on the destination, deleted by the next pass's
//! diff; only a leftover carrying a resume record ([`super::large_copy`]) is reported by the
//! destination walk as one, and kept for the name its record names.
//!
//! Also here: the [`super::Applier`]'s large-file methods (resuming a leftover, chunks
//! arriving over SSH).

use super::large_copy::{self, SourceId};
use super::{err, ApplyError};
use crate::files::beneath::check_rel;
use crate::files::beneath::{self, split_parent, Tree};
use crate::files::manifest::TEMP_PREFIX;
use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A large file arriving in chunks (SSH).
pub(super) struct Chunked {
    /// Its temporary file (relative path).
    pub tmp: Vec<u8>,
    /// When resumable: the source it copies, the offset committed, the offset this pass
    /// started from.
    pub resume: Option<(SourceId, u64, u64)>,
}

pub(super) struct Staging {
    seed: u64,
    counter: AtomicU64,
    /// Resumable leftovers of an earlier pass: the path they are a copy for → their path.
    kept: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    /// Large files arriving in chunks: path → their temporary file.
    pub chunked: Mutex<HashMap<Vec<u8>, Chunked>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Attempts before giving up on finding a free temporary name (each taken name means a file
/// of that exact name already exists: only a customer guessing ours gets past one).
const NAME_TRIES: usize = 64;

impl Staging {
    pub fn new() -> Staging {
        let mut seed = [0u8; 8];
        // SAFETY: seed is writable for its length. A short read leaves zeros: the names stay
        // unique per process through the counter, and O_EXCL keeps them from colliding.
        unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
        Staging {
            seed: u64::from_ne_bytes(seed) ^ u64::from(std::process::id()),
            counter: AtomicU64::new(0),
            kept: Mutex::new(HashMap::new()),
            chunked: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh temporary name (one component).
    pub fn name(&self) -> Vec<u8> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut v = TEMP_PREFIX.to_vec();
        v.extend_from_slice(format!("{:016x}.{n}", self.seed).as_bytes());
        v
    }

    /// Runs `make` with fresh names until one is free (`EEXIST` means taken); returns it.
    pub fn reserve(
        &self,
        mut make: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<Vec<u8>> {
        for _ in 0..NAME_TRIES {
            let name = self.name();
            match make(&name) {
                Ok(()) => return Ok(name),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "no free temporary name",
        ))
    }

    /// Creates a fresh temporary file beside `rel` (read-write, `mode`); returns it and its
    /// relative path.
    pub fn create(&self, tree: &Tree, rel: &[u8], mode: u32) -> std::io::Result<(File, Vec<u8>)> {
        let (dir, _) = tree.parent_of(rel)?;
        let mut file = None;
        let name = self.reserve(|name| {
            let fd = beneath::open_in(
                &dir,
                name,
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                mode,
            )?;
            file = Some(File::from(fd));
            Ok(())
        })?;
        Ok((file.expect("set on success"), sibling(rel, &name)))
    }

    /// Records leftover `tmp` as a resumable copy for `target`.
    pub fn keep(&self, target: Vec<u8>, tmp: Vec<u8>) {
        lock(&self.kept).insert(target, tmp);
    }

    /// The resumable leftover kept for `rel`, if any (taken: the caller resumes or removes it).
    pub fn take_kept(&self, rel: &[u8]) -> Option<Vec<u8>> {
        let mut kept = lock(&self.kept);
        if kept.is_empty() {
            return None;
        }
        kept.remove(rel)
    }

    /// Removes what no write of the pass took back: kept leftovers (only while they still carry
    /// a record: a file put there since is not ours) and unfinished chunked copies.
    pub fn remove_all(&self, tree: &Tree) -> std::io::Result<()> {
        let kept = std::mem::take(&mut *lock(&self.kept));
        let chunked = std::mem::take(&mut *lock(&self.chunked));
        for tmp in kept.into_values() {
            match tree.open_at(&tmp, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY, 0) {
                Ok(fd) if large_copy::read_record(&fd).is_some() => unlink(tree, &tmp)?,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        for c in chunked.into_values() {
            unlink(tree, &c.tmp)?;
        }
        Ok(())
    }
}

/// `name` in the directory of `rel`.
pub(super) fn sibling(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let (parent, _) = split_parent(rel);
    let mut v = Vec::with_capacity(parent.len() + 1 + name.len());
    if !parent.is_empty() {
        v.extend_from_slice(parent);
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

/// Removes file `rel` (missing is fine).
pub(super) fn unlink(tree: &Tree, rel: &[u8]) -> std::io::Result<()> {
    let (dir, name) = tree.parent_of(rel)?;
    match beneath::unlink_in(&dir, name, 0) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Renames temporary file `tmp` over `rel` (same directory, atomic).
pub(super) fn rename_into(tree: &Tree, tmp: &[u8], rel: &[u8]) -> std::io::Result<()> {
    let (dir, name) = tree.parent_of(rel)?;
    let (_, tmp_name) = split_parent(tmp);
    beneath::rename_in(&dir, tmp_name, &dir, name)
}

/// The applier's large files: resumed leftovers, chunks arriving over SSH.
impl super::Applier {
    /// Where the chunks of large file `rel`, a copy of source `id`, should start: the offset
    /// a leftover of an earlier, interrupted pass committed when that pass copied the same
    /// source for the same name (the file is cut back to it), else 0 (a fresh temporary file;
    /// any leftover removed). From here on the chunks of `rel` commit every
    /// [`large_copy::COMMIT_EVERY`] bytes (`fdatasync`, then the record), as a local large
    /// copy does.
    pub fn resume_offset(&self, rel: &[u8], id: large_copy::SourceId) -> Result<u64, ApplyError> {
        check_rel(rel).map_err(|e| err("refuse", &self.at(rel))(std::io::Error::other(e)))?;
        let tree = self.tree()?;
        let (_, name) = split_parent(rel);
        let mut resumed = None;
        if let Some(left) = self.staging.take_kept(rel) {
            let p = self.at(&left);
            match tree.open_at(&left, libc::O_RDWR | libc::O_NONBLOCK, 0) {
                Ok(fd) => {
                    let f = File::from(fd);
                    let len = beneath::fstat(&f)
                        .ok()
                        .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
                        .map(|st| st.st_size as u64);
                    match (large_copy::read_record(&f), len) {
                        // The data must really be there: a record beyond the file's length
                        // (a record that outlived its data) would make set_len fill zeros.
                        (Some((was, committed, for_name)), Some(len))
                            if was == id
                                && for_name == name
                                && committed <= id.size
                                && len >= committed =>
                        {
                            // Whatever lies past the committed offset was never made durable.
                            f.set_len(committed).map_err(err("truncate", &p))?;
                            resumed = Some((left, committed));
                        }
                        _ => unlink(tree, &left).map_err(err("remove", &p))?,
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err("open", &p)(e)),
            }
        }
        let (tmp, start) = match resumed {
            Some(r) => r,
            None => {
                let (_, tmp) = self
                    .staging
                    .create(tree, rel, 0o600)
                    .map_err(err("create a temporary file for", &self.at(rel)))?;
                (tmp, 0)
            }
        };
        lock(&self.staging.chunked).insert(
            rel.to_vec(),
            Chunked {
                tmp,
                resume: Some((id, start, start)),
            },
        );
        Ok(start)
    }

    /// A large local copy's temporary file: the kept leftover of the same path (resumed if its
    /// record matches, see [`large_copy::copy_resumable`]) or a fresh one.
    pub(super) fn large_temp(&self, rel: &[u8]) -> Result<(File, Vec<u8>), ApplyError> {
        let tree = self.tree()?;
        if let Some(left) = self.staging.take_kept(rel) {
            match tree.open_at(&left, libc::O_RDWR | libc::O_NONBLOCK, 0) {
                Ok(fd) => {
                    let f = File::from(fd);
                    let regular = beneath::fstat(&f)
                        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG);
                    if regular {
                        return Ok((f, left));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err("open", &self.at(&left))(e)),
            }
        }
        self.staging
            .create(tree, rel, 0o600)
            .map_err(err("create a temporary file for", &self.at(rel)))
    }

    pub(super) fn chunk(&self, rel: &[u8], offset: u64, data: &[u8]) -> Result<(), ApplyError> {
        let tree = self.tree()?;
        let tmp = {
            let mut chunked = lock(&self.staging.chunked);
            match chunked.get(rel) {
                Some(c) => c.tmp.clone(),
                None if offset == 0 => {
                    let (_, tmp) = self
                        .staging
                        .create(tree, rel, 0o600)
                        .map_err(err("create a temporary file for", &self.at(rel)))?;
                    chunked.insert(
                        rel.to_vec(),
                        Chunked {
                            tmp: tmp.clone(),
                            resume: None,
                        },
                    );
                    tmp
                }
                None => {
                    return Err(err("write", &self.at(rel))(std::io::Error::other(format!(
                        "a chunk at offset {offset} without the start of the file"
                    ))))
                }
            }
        };
        let p = self.at(&tmp);
        let f = File::from(
            tree.open_at(&tmp, libc::O_WRONLY, 0)
                .map_err(err("open", &p))?,
        );
        use std::os::unix::fs::FileExt;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| err("write", &p)(std::io::Error::other("chunk offset out of range")))?;
        f.write_all_at(data, offset).map_err(err("write", &p))?;
        let mut chunked = lock(&self.staging.chunked);
        let Some(c) = chunked.get_mut(rel) else {
            return Ok(());
        };
        if let Some((id, committed, start)) = c.resume.as_mut() {
            if end.saturating_sub(*committed) >= large_copy::COMMIT_EVERY && end < id.size {
                f.sync_data().map_err(err("sync", &p))?;
                let (_, name) = split_parent(rel);
                if large_copy::write_record(&f, id, end, name).map_err(err("record", &p))? {
                    *committed = end;
                } else if *start == 0 {
                    // No user extended attributes here: no resume, no more syncs.
                    c.resume = None;
                }
            }
        }
        Ok(())
    }
}

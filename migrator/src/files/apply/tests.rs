//! The applier: direct creation, replacement, partial copies, kept leftovers.

use super::*;
use crate::files::manifest::{self, Change, WalkOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn meta(mode: u32, mtime_s: i64) -> Meta {
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    Meta {
        mode,
        uid,
        gid,
        mtime_s,
        mtime_ns: 123,
    }
}

fn file(path: &str, m: Meta, data: &[u8]) -> Op {
    Op::File {
        path: path.as_bytes().to_vec(),
        meta: m,
        data: Data::Inline(data.to_vec()),
    }
}

#[test]
fn partial_direct_copy_is_redone() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let content: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    let a = Applier::new(&src);
    a.apply(&[
        file("torn", meta(0o644, 1_600_000_000), &content),
        file("whole-no-times", meta(0o644, 1_600_000_000), &content),
    ])
    .unwrap();
    // What a pass killed inside a direct creation leaves: the content so far (all of it,
    // for the second file), mode and owner maybe, but the times not yet set.
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(dst.join("torn"), &content[..4000]).unwrap();
    std::fs::write(dst.join("whole-no-times"), &content).unwrap();
    let opts = WalkOptions::default();
    let changes = manifest::diff(
        &manifest::build(&src, &opts).unwrap(),
        &manifest::build(&dst, &opts).unwrap(),
        true,
    );
    let modified: Vec<&[u8]> = changes
        .iter()
        .filter(|c| matches!(c, Change::Modified { .. }))
        .map(|c| c.path())
        .collect();
    assert_eq!(modified, [b"torn".as_slice(), b"whole-no-times"]);
    let mut d = crate::files::sync::LocalDestination::new(&dst);
    let r = crate::files::sync::run_pass(&src, &mut d, Default::default(), &|_| {}).unwrap();
    assert_eq!(r.files_written, 2);
    for name in ["torn", "whole-no-times"] {
        assert_eq!(std::fs::read(dst.join(name)).unwrap(), content);
        assert_eq!(
            std::fs::metadata(dst.join(name)).unwrap().mtime(),
            1_600_000_000
        );
    }
    let again = crate::files::sync::run_pass(&src, &mut d, Default::default(), &|_| {}).unwrap();
    assert_eq!(again.files_written, 0);
}

#[test]
fn new_files_are_created_in_place_existing_ones_replaced_never_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("home");
    std::fs::create_dir_all(&root).unwrap();
    let a = Applier::new(&root);
    let special = if a.sets_owner() { 0o4750 } else { 0o750 };
    a.apply(&[
        file("ro", meta(0o444, 1_000), b"read only"),
        file("x", meta(special, 2_000), b"#!/bin/sh\n"),
        file("none", meta(0o000, 3_000), b""),
    ])
    .unwrap();
    let md = |n: &str| std::fs::symlink_metadata(root.join(n)).unwrap();
    assert_eq!(md("ro").permissions().mode() & 0o7777, 0o444);
    assert_eq!(md("x").permissions().mode() & 0o7777, special);
    assert_eq!(md("none").permissions().mode() & 0o7777, 0);
    assert_eq!((md("x").mtime(), md("x").mtime_nsec()), (2_000, 123));
    // Replacing: a new inode renamed over the old one; a symlink in the way is replaced,
    // its target untouched.
    let outside = dir.path().join("outside");
    std::fs::write(&outside, b"keep").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    let ino = md("ro").ino();
    a.apply(&[
        file("ro", meta(0o640, 4_000), b"new content"),
        file("link", meta(0o600, 5_000), b"not through the link"),
    ])
    .unwrap();
    assert_ne!(md("ro").ino(), ino);
    assert_eq!(std::fs::read(root.join("ro")).unwrap(), b"new content");
    assert_eq!(md("ro").permissions().mode() & 0o7777, 0o640);
    assert_eq!(md("ro").mtime(), 4_000);
    assert!(md("link").is_file());
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
    let names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 4, "leftover temporaries: {names:?}");
}

/// Writes a leftover like a killed large copy leaves: `len` bytes of `data`, a record for
/// `name` committed at `committed`; false when the file system has no user xattrs.
fn leftover(
    path: &Path,
    data: &[u8],
    id: &large_copy::SourceId,
    committed: u64,
    name: &[u8],
) -> bool {
    std::fs::write(path, data).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    large_copy::write_record(&f, id, committed, name).unwrap()
}

#[test]
fn an_unclaimed_resumable_leftover_is_removed_when_the_pass_finishes() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut a = Applier::new(dir.path());
    let tmp = dir.path().join(".~migrator-tmp.0123.4");
    let id = large_copy::SourceId {
        ino: 1,
        size: 100,
        mtime: (1, 2),
        ctime: (3, 4),
    };
    if !leftover(&tmp, b"partial", &id, 7, b"big") {
        eprintln!("no user xattrs here");
        return;
    }
    a.apply(&[Op::RemoveTemp {
        path: b".~migrator-tmp.0123.4".to_vec(),
    }])
    .unwrap();
    assert!(tmp.exists(), "a resumable leftover is kept during the pass");
    a.sync().unwrap();
    assert!(!tmp.exists());
}

/// Issue 18 (10): a customer's own file named like our temporaries is an ordinary file: it is
/// copied, never truncated, kept or removed, and replacing a file beside it leaves it alone.
#[test]
fn a_customer_file_named_like_a_temporary_is_copied_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join(".~migrator-tmp.foo"), b"customer data").unwrap();
    std::fs::write(src.join("foo"), b"v1").unwrap();
    let mut d = crate::files::sync::LocalDestination::new(&dst);
    let r = crate::files::sync::run_pass(&src, &mut d, Default::default(), &|_| {}).unwrap();
    assert_eq!(r.files_written, 2, "{r:?}");
    assert_eq!(
        std::fs::read(dst.join(".~migrator-tmp.foo")).unwrap(),
        b"customer data"
    );
    // Replacing `foo` goes through a temporary file: not the customer's.
    std::fs::write(src.join("foo"), b"v2, longer").unwrap();
    crate::files::sync::run_pass(&src, &mut d, Default::default(), &|_| {}).unwrap();
    assert_eq!(std::fs::read(dst.join("foo")).unwrap(), b"v2, longer");
    assert_eq!(
        std::fs::read(dst.join(".~migrator-tmp.foo")).unwrap(),
        b"customer data"
    );
    let again = crate::files::sync::run_pass(&src, &mut d, Default::default(), &|_| {}).unwrap();
    assert_eq!((again.files_written, again.deleted), (0, 0), "{again:?}");
}

/// The receiver's side of a resumed large file (SSH): a leftover committed of the same source
/// continues from its record; a record beyond the leftover's length (it outlived its data) is
/// not trusted (no zero-filled gap); the record never reaches the final file; a resume that
/// no write finished leaves no temporary file after the pass.
#[test]
fn chunked_large_files_resume_only_from_data_that_is_there() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let a = std::cell::RefCell::new(Applier::new(&root));
    let data: Vec<u8> = (0..(2 * large_copy::COMMIT_EVERY + 777))
        .map(|i| (i % 253) as u8)
        .collect();
    let id = large_copy::SourceId {
        ino: 5,
        size: data.len() as u64,
        mtime: (1, 2),
        ctime: (3, 4),
    };
    let c = large_copy::COMMIT_EVERY as usize;
    let tmp_name = b".~migrator-tmp.killed.1";
    let tmp = root.join(std::ffi::OsStr::from_bytes(tmp_name));
    let left = |len: usize, committed: u64| {
        let ok = leftover(&tmp, &data[..len], &id, committed, b"big");
        // What the destination walk reports and the plan turns into the first operation.
        a.borrow()
            .apply(&[Op::RemoveTemp {
                path: tmp_name.to_vec(),
            }])
            .unwrap();
        ok
    };
    if !left(c + 100, c as u64) {
        eprintln!("no user xattrs on /var/tmp: resume not testable here");
        return;
    }
    let chunks_from = |at: usize| {
        let mut ops: Vec<Op> = data[at..]
            .chunks(3 << 20)
            .enumerate()
            .map(|(i, d)| Op::Chunk {
                path: b"big".to_vec(),
                offset: (at + i * (3 << 20)) as u64,
                data: d.to_vec(),
            })
            .collect();
        ops.push(Op::File {
            path: b"big".to_vec(),
            meta: meta(0o644, 1),
            data: Data::Staged,
        });
        ops
    };
    let names = || -> Vec<_> {
        std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    };
    // Committed and there: continue from it.
    assert_eq!(a.borrow().resume_offset(b"big", id).unwrap(), c as u64);
    let applied = a.borrow().apply(&chunks_from(c)).unwrap();
    assert_eq!(applied.bytes, (data.len() - c) as u64);
    assert_eq!(std::fs::read(root.join("big")).unwrap(), data);
    let big = std::fs::File::open(root.join("big")).unwrap();
    assert!(
        large_copy::read_record(&big).is_none(),
        "record left on the file"
    );
    assert_eq!(names().len(), 1, "{:?}", names());

    // A record that says more than the leftover holds: start over.
    assert!(left(c / 4, c as u64));
    assert_eq!(a.borrow().resume_offset(b"big", id).unwrap(), 0);
    assert!(!tmp.exists());
    a.borrow().apply(&chunks_from(0)).unwrap();
    assert_eq!(std::fs::read(root.join("big")).unwrap(), data);

    // Announced, never written: gone when the pass finishes.
    assert!(left(c + 100, c as u64));
    assert_eq!(a.borrow().resume_offset(b"big", id).unwrap(), c as u64);
    a.borrow_mut().sync().unwrap();
    assert!(!tmp.exists(), "an unfinished resume's temporary file");
    assert_eq!(names().len(), 1, "{:?}", names());
}

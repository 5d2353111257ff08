//! Tests of `migrator watch`'s epochs over real inotify (split from watch.rs).

use super::*;
use std::fs;

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

fn start(root: &Path, max_dirty: usize) -> Watcher {
    Watcher::start(&WatchOptions {
        socket: root.parent().unwrap().join("feed.sock"),
        roots: vec![root.to_path_buf()],
        max_dirty,
    })
    .unwrap()
}

fn dirty(c: &Checkpoint) -> Vec<(String, bool)> {
    c.dirty
        .iter()
        .map(|d| {
            let p = d.path_bytes().unwrap();
            (String::from_utf8(p).unwrap(), d.recursive)
        })
        .collect()
}

#[test]
fn epochs_collect_changes_and_new_dirs_recursively() {
    let t = scratch();
    let root = t.path().join("home");
    fs::create_dir_all(root.join("a")).unwrap();
    fs::write(root.join("a/f"), b"1").unwrap();
    let mut w = start(&root, 1000);
    let canon = fs::canonicalize(&root).unwrap();
    let key = canon.as_os_str().as_bytes();
    let c1 = w.checkpoint(key, "a").unwrap();
    assert!(!c1.complete, "the first epoch is never complete");
    assert_eq!(c1.since_seq, 0);
    fs::write(root.join("a/f"), b"2").unwrap();
    fs::create_dir(root.join("n")).unwrap();
    fs::write(root.join("n/x"), b"x").unwrap();
    let c2 = w.checkpoint(key, "a").unwrap();
    assert!(c2.complete);
    assert_eq!(c2.since_seq, c1.seq);
    let d = dirty(&c2);
    for want in [("a/f", false), ("a", false), ("", false), ("n", true)] {
        assert!(
            d.contains(&(want.0.to_string(), want.1)),
            "{want:?} in {d:?}"
        );
    }
    // The new directory is watched: a change inside is seen by name.
    fs::write(root.join("n/x"), b"y").unwrap();
    let c3 = w.checkpoint(key, "a").unwrap();
    assert!(dirty(&c3).contains(&("n/x".to_string(), false)));
    // Nothing happened: an empty, complete epoch.
    let c4 = w.checkpoint(key, "a").unwrap();
    assert!(c4.complete && c4.dirty.is_empty());
    assert!(w.checkpoint(b"/not/watched", "a").is_err());
    // Another consumer has its own chain: its first epoch is incomplete, and its checkpoints
    // do not take changes away from "a".
    assert!(!w.checkpoint(key, "b").unwrap().complete);
    fs::write(root.join("a/f"), b"3").unwrap();
    let b = w.checkpoint(key, "b").unwrap();
    assert!(b.complete && dirty(&b).contains(&("a/f".to_string(), false)));
    let a = w.checkpoint(key, "a").unwrap();
    assert!(a.complete && dirty(&a).contains(&("a/f".to_string(), false)));
    assert_eq!(a.since_seq, c4.seq);
}

#[test]
fn overflow_and_too_many_changes_lose_the_epoch_then_rearm() {
    let t = scratch();
    let root = t.path().join("home");
    fs::create_dir_all(&root).unwrap();
    let mut w = start(&root, 50);
    let key = fs::canonicalize(&root).unwrap();
    let key = key.as_os_str().as_bytes().to_vec();
    w.checkpoint(&key, "a").unwrap();
    for i in 0..60 {
        fs::write(root.join(format!("f{i}")), b"x").unwrap();
    }
    let c = w.checkpoint(&key, "a").unwrap();
    assert!(!c.complete && c.dirty.is_empty());
    assert!(c.reason.unwrap().contains("more than 50"));
    // The next epoch is trusted again.
    fs::write(root.join("f1"), b"y").unwrap();
    let c = w.checkpoint(&key, "a").unwrap();
    assert!(c.complete, "{:?}", c.reason);
    // A queue overflow: more events than max_queued_events, none read meanwhile.
    let max: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16384);
    if max <= 100_000 {
        w.max_dirty = usize::MAX;
        // Two events a write (modify, close-write: never merged as they alternate).
        for i in 0..max / 2 + 100 {
            fs::write(root.join("f1"), i.to_string()).unwrap();
        }
        let c = w.checkpoint(&key, "a").unwrap();
        assert!(!c.complete);
        assert!(c.reason.unwrap().contains("overflow"));
    }
}

fn start_roots(t: &Path, roots: &[PathBuf]) -> Result<Watcher, WatchError> {
    Watcher::start(&WatchOptions {
        socket: t.join("feed.sock"),
        roots: roots.to_vec(),
        max_dirty: 1000,
    })
}

#[test]
fn nested_and_duplicate_roots_are_refused_naming_both() {
    let t = scratch();
    let h = t.path().join("h");
    fs::create_dir_all(h.join("alice/www")).unwrap();
    let canon = fs::canonicalize(&h).unwrap();
    for roots in [
        vec![h.clone(), h.join("alice")],
        vec![h.join("alice"), h.clone()],
        vec![h.clone(), h.clone()],
        vec![h.clone(), t.path().join("h/./alice/..")],
    ] {
        let err = start_roots(t.path(), &roots)
            .err()
            .expect("overlap refused");
        assert!(matches!(err, WatchError::Overlap { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(canon.to_str().unwrap()), "{msg}");
        assert!(!t.path().join("feed.sock").exists());
    }
    // Siblings whose names share a prefix are not nested.
    fs::create_dir_all(t.path().join("h2")).unwrap();
    start_roots(t.path(), &[h.clone(), t.path().join("h2")]).unwrap();
}

#[test]
fn a_root_missing_at_a_checkpoint_stays_untrusted_until_watched_again() {
    let t = scratch();
    let root = t.path().join("alice");
    fs::create_dir_all(&root).unwrap();
    let key = fs::canonicalize(&root).unwrap();
    let key = key.as_os_str().as_bytes().to_vec();
    let mut w = start_roots(t.path(), std::slice::from_ref(&root)).unwrap();
    w.checkpoint(&key, "c").unwrap();
    fs::rename(&root, t.path().join("alice.old")).unwrap();
    let c = w.checkpoint(&key, "c").unwrap();
    assert!(!c.complete, "root moved away: incomplete");
    // Still missing: every checkpoint says incomplete.
    let c = w.checkpoint(&key, "c").unwrap();
    assert!(
        !c.complete,
        "the root is not watched, yet the epoch is complete"
    );
    // Writes into the moved-away tree are not the root's.
    fs::write(t.path().join("alice.old/stale"), b"s").unwrap();
    fs::create_dir_all(root.join("www")).unwrap();
    fs::write(root.join("www/index.php"), b"restored").unwrap();
    // Re-created: this checkpoint still covers the unwatched time (incomplete) and re-arms.
    let c = w.checkpoint(&key, "c").unwrap();
    assert!(!c.complete, "re-created and filled while unwatched: {c:?}");
    fs::write(root.join("www/index.php"), b"edited").unwrap();
    let c = w.checkpoint(&key, "c").unwrap();
    assert!(c.complete, "{:?}", c.reason);
    assert_eq!(
        dirty(&c),
        vec![
            ("www".to_string(), false),
            ("www/index.php".to_string(), false)
        ]
    );
}

#[test]
fn a_write_through_another_roots_hard_link_loses_every_epoch() {
    let t = scratch();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    fs::create_dir_all(a.join("www")).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("www/shared"), b"1").unwrap();
    let mut w = start_roots(t.path(), &[a.clone(), b.clone()]).unwrap();
    let ka = fs::canonicalize(&a)
        .unwrap()
        .as_os_str()
        .as_bytes()
        .to_vec();
    let kb = fs::canonicalize(&b)
        .unwrap()
        .as_os_str()
        .as_bytes()
        .to_vec();
    fs::hard_link(a.join("www/shared"), b.join("other-name")).unwrap();
    w.checkpoint(&ka, "c").unwrap();
    w.checkpoint(&kb, "c").unwrap();
    assert!(w.checkpoint(&ka, "c").unwrap().complete);
    assert!(w.checkpoint(&kb, "c").unwrap().complete);
    // Written through b's name: a's epoch cannot know.
    fs::write(b.join("other-name"), b"changed via b").unwrap();
    let ca = w.checkpoint(&ka, "c").unwrap();
    assert!(!ca.complete, "a missed the write through b: {ca:?}");
    assert!(ca.reason.unwrap().contains("hard-linked"));
    assert!(!w.checkpoint(&kb, "c").unwrap().complete);
    // A plain file's write loses nothing.
    fs::write(a.join("www/plain"), b"p").unwrap();
    w.checkpoint(&ka, "c").unwrap();
    fs::write(a.join("www/plain"), b"q").unwrap();
    assert!(w.checkpoint(&ka, "c").unwrap().complete);
}

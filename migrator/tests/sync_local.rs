//! File sync between two local directories (a filer mounted on the migrator host): the
//! generated home of the acceptance criteria, a second pass that copies nothing, and a changed,
//! an added and a deleted file caught by the next pass.

use migrator::files::sync::{
    run_pass_journaled, LocalDestination, PassOptions, Progress, SyncCheckpoint, SyncError,
};
use migrator::fixtures::{generate_home, HomeSpec};
use migrator::journal::{JournalExt, JournalStore, SqliteJournal, StepStatus};
use migrator::verify::verify_files;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

/// Scratch space for generated homes: tmpfs when the machine has one, so creating and
/// deleting tens of thousands of files does not hit the ext4 inode-reuse slowdown
/// (shared/BENCHMARKS.md) and the suite stays fast.
fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(t) = tempfile::tempdir_in(shm) {
            return t;
        }
    }
    tempfile::tempdir().unwrap()
}

fn no_progress(_: Progress) {}

#[test]
fn local_sync_of_generated_home_then_no_change_then_delta() {
    let tmp = scratch();
    let src = tmp.path().join("homez.1/alice");
    let dst = tmp.path().join("homez.9/alice");
    let mut spec = HomeSpec::small(20_000);
    spec.big_file = Some(200 << 20);
    let t = std::time::Instant::now();
    generate_home(&src, &spec).unwrap();
    eprintln!("generated in {:?}", t.elapsed());
    let mut journal = SqliteJournal::open(&tmp.path().join("journal.sqlite")).unwrap();
    let mut dest = LocalDestination::new(&dst);

    // Dry run: says what it would copy, copies nothing.
    let dry = run_pass_journaled(
        &mut journal,
        "alice",
        &src,
        &mut dest,
        PassOptions {
            dry_run: true,
            ..Default::default()
        },
        &no_progress,
    )
    .unwrap();
    assert!(dry.files_written > 20_000, "{}", dry.files_written);
    assert!(dry.bytes_written > 200 << 20);
    assert!(!dst.exists(), "a dry run must not create the destination");

    eprintln!("dry run at {:?}", t.elapsed());
    let first = run_pass_journaled(
        &mut journal,
        "alice",
        &src,
        &mut dest,
        PassOptions::default(),
        &no_progress,
    )
    .unwrap();
    // 20,000 files + big + odd (3 names, 2 hard-link names, leader, 4 symlinks, script).
    assert!(first.files_written >= 20_010, "{first:?}");
    assert_eq!(first.bytes_written, dry.bytes_written);
    assert!(first
        .warnings
        .iter()
        .any(|w| w.contains("link-escape") && w.contains("outside the home")));
    assert!(first.warnings.iter().any(|w| w.contains("a-fifo")));

    // What landed: odd names, hard links sharing an inode, symlinks not followed, no escape.
    let odd = dst.join("odd");
    assert_eq!(
        std::fs::read(odd.join(OsStr::from_bytes(b"caf\xe9-latin1.txt"))).unwrap(),
        b"latin1\n"
    );
    assert!(odd.join("name with spaces.txt").is_file());
    let a = std::fs::metadata(odd.join("leader.txt")).unwrap();
    let b = std::fs::metadata(odd.join("second-name.txt")).unwrap();
    let c = std::fs::metadata(dst.join("third-name.txt")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 3));
    assert_eq!(a.ino(), c.ino());
    assert_eq!(
        std::fs::read_link(odd.join("link-inside")).unwrap(),
        std::path::Path::new("leader.txt")
    );
    assert!(std::fs::symlink_metadata(odd.join("link-escape")).is_err());
    assert!(std::fs::symlink_metadata(odd.join("a-fifo")).is_err());
    assert_eq!(
        std::fs::metadata(odd.join("script.sh")).unwrap().mode() & 0o7777,
        0o750
    );
    assert_eq!(
        std::fs::metadata(src.join("big.bin")).unwrap().mtime(),
        std::fs::metadata(dst.join("big.bin")).unwrap().mtime()
    );

    eprintln!("first pass at {:?}", t.elapsed());
    let v = verify_files(&src, &mut dest, false).unwrap();
    assert!(v.equal(), "{:?}", v.differences);
    assert_eq!(v.source_entries, v.destination_entries);

    // Second pass: nothing to do.
    let second = run_pass_journaled(
        &mut journal,
        "alice",
        &src,
        &mut dest,
        PassOptions::default(),
        &no_progress,
    )
    .unwrap();
    eprintln!("second pass at {:?}", t.elapsed());
    assert_eq!((second.files_written, second.bytes_written), (0, 0));
    assert_eq!((second.deleted, second.metadata_only), (0, 0));
    assert!(
        second.destination_cached,
        "the first pass cached the destination manifest"
    );

    // A changed, an added and a deleted file.
    let changed = src.join("d000/s0000/f000001.dat");
    std::fs::write(&changed, b"changed content").unwrap();
    std::fs::write(src.join("d000/new file.txt"), b"added").unwrap();
    std::fs::remove_file(src.join("d000/s0001/f000050.dat")).unwrap();
    let v = verify_files(&src, &mut dest, false).unwrap();
    let files: Vec<_> = v
        .differences
        .iter()
        .filter(|d| d.contains(".dat") || d.contains(".txt"))
        .collect();
    assert_eq!(files.len(), 3, "{:?}", v.differences);
    assert!(files[0].starts_with("only on source: d000/new file.txt"));
    assert!(files[1].starts_with("differs: d000/s0000/f000001.dat: size 15 vs"));
    assert!(files[2].starts_with("only on destination: d000/s0001/f000050.dat"));
    let third = run_pass_journaled(
        &mut journal,
        "alice",
        &src,
        &mut dest,
        PassOptions::default(),
        &no_progress,
    )
    .unwrap();
    eprintln!("third pass at {:?}", t.elapsed());
    assert_eq!(third.files_written, 2, "{third:?}");
    assert_eq!(third.bytes_written, 15 + 5);
    assert_eq!(third.deleted, 1);
    assert_eq!(
        std::fs::read(dst.join("d000/s0000/f000001.dat")).unwrap(),
        b"changed content"
    );
    assert!(!dst.join("d000/s0001/f000050.dat").exists());
    let v = verify_files(&src, &mut dest, false).unwrap();
    assert!(v.equal(), "{:?}", v.differences);

    // The journal has the three real passes, done, with the digest of what was copied.
    let steps = journal.steps("alice").unwrap();
    assert_eq!(steps.len(), 3);
    assert!(steps.iter().all(|s| s.status == StepStatus::Done));
    assert_eq!(steps[0].bytes, first.bytes_written);
    let cp: SyncCheckpoint = journal
        .checkpoint(SyncCheckpoint::SCOPE, "alice")
        .unwrap()
        .unwrap();
    assert_eq!(cp.manifest_digest, third.manifest_digest);
    eprintln!("end at {:?}", t.elapsed());
}

#[test]
fn checksum_mode_catches_same_size_same_mtime_change() {
    let tmp = scratch();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    generate_home(&src, &HomeSpec::small(200)).unwrap();
    let mut dest = LocalDestination::new(&dst);
    migrator::files::sync::run_pass(&src, &mut dest, PassOptions::default(), &no_progress).unwrap();
    // Corrupt one destination byte without changing size or mtime.
    let p = dst.join("d000/s0000/f000003.dat");
    let md = std::fs::metadata(&p).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    let t = std::fs::FileTimes::new().set_modified(md.modified().unwrap());
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_times(t)
        .unwrap();
    assert!(verify_files(&src, &mut dest, false).unwrap().equal());
    let v = verify_files(&src, &mut dest, true).unwrap();
    assert_eq!(v.differences.len(), 1, "{:?}", v.differences);
    assert!(v.differences[0].contains("f000003.dat"));
    let opts = PassOptions {
        checksum: true,
        ..Default::default()
    };
    let r = migrator::files::sync::run_pass(&src, &mut dest, opts, &no_progress).unwrap();
    assert_eq!(r.files_written, 1);
    assert!(verify_files(&src, &mut dest, true).unwrap().equal());
}

/// The cached destination manifest (`dest_cache`): entries added, removed or renamed on the
/// destination behind our back make the next pass walk it; a file rewritten in place is only
/// seen by a `full` pass (the documented rule; the final pass inside the freeze is `run_pass`,
/// which always walks).
#[test]
fn destination_changed_behind_our_back_is_caught() {
    let tmp = scratch();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    generate_home(&src, &HomeSpec::small(300)).unwrap();
    let mut journal = SqliteJournal::open(&tmp.path().join("journal.sqlite")).unwrap();
    let mut dest = LocalDestination::new(&dst);
    let mut pass = |journal: &mut SqliteJournal, full: bool| {
        let opts = PassOptions {
            full,
            ..Default::default()
        };
        run_pass_journaled(journal, "bob", &src, &mut dest, opts, &no_progress).unwrap()
    };
    let first = pass(&mut journal, false);
    assert!(!first.destination_cached);
    assert!(first.files_written >= 300);
    let second = pass(&mut journal, false);
    assert!(second.destination_cached);
    assert_eq!((second.files_written, second.deleted), (0, 0));

    // A stray file added and a file deleted on the destination: directory stamps changed.
    std::fs::write(dst.join("d000/s0000/stray"), b"not ours").unwrap();
    std::fs::remove_file(dst.join("d000/s0001/f000050.dat")).unwrap();
    let third = pass(&mut journal, false);
    assert!(!third.destination_cached, "{third:?}");
    assert_eq!((third.files_written, third.deleted), (1, 1));
    assert!(!dst.join("d000/s0000/stray").exists());
    let mut check = LocalDestination::new(&dst);
    assert!(verify_files(&src, &mut check, false).unwrap().equal());

    // A file rewritten in place and another chmod'ed: no directory changed, so the cached
    // pass does not see them; a full pass does.
    let fourth = pass(&mut journal, false);
    assert!(fourth.destination_cached);
    std::fs::write(
        dst.join("d000/s0000/f000003.dat"),
        b"edited on the destination",
    )
    .unwrap();
    std::fs::set_permissions(
        dst.join("d000/s0000/f000004.dat"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let cached = pass(&mut journal, false);
    assert!(cached.destination_cached);
    assert_eq!((cached.files_written, cached.metadata_only), (0, 0));
    let full = pass(&mut journal, true);
    assert!(!full.destination_cached);
    assert_eq!((full.files_written, full.metadata_only), (1, 1), "{full:?}");
    assert!(verify_files(&src, &mut check, false).unwrap().equal());

    // A source change after a cached pass is applied and the cache refreshed.
    std::fs::write(src.join("d000/s0000/f000005.dat"), b"new").unwrap();
    let fifth = pass(&mut journal, false);
    assert!(fifth.destination_cached);
    assert_eq!(fifth.files_written, 1);
    let sixth = pass(&mut journal, false);
    assert!(sixth.destination_cached);
    assert_eq!(sixth.files_written, 0);
    assert!(verify_files(&src, &mut check, false).unwrap().equal());

    // The destination replaced wholesale: new inodes everywhere, full walk.
    std::fs::remove_dir_all(&dst).unwrap();
    let seventh = pass(&mut journal, false);
    assert!(!seventh.destination_cached);
    assert_eq!(seventh.files_written, first.files_written);
}

/// An empty source over a destination that holds files (an unmounted filer leaves an empty
/// mount point) is refused, by the CLI's pass and by the engine's `run_pass` alike, and the
/// destination stays (a missing source root is an error for `verify` too);
/// `allow_empty_source` syncs a home that really was emptied.
#[test]
fn empty_source_over_a_full_destination_is_refused_unless_allowed() {
    let tmp = scratch();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    generate_home(&src, &HomeSpec::small(50)).unwrap();
    let mut journal = SqliteJournal::open(&tmp.path().join("journal.sqlite")).unwrap();
    let mut dest = LocalDestination::new(&dst);
    let opts = PassOptions::default();
    run_pass_journaled(&mut journal, "carol", &src, &mut dest, opts, &no_progress).unwrap();
    let walk_count = |p: &std::path::Path| walkdir::WalkDir::new(p).into_iter().count();
    let before = walk_count(&dst);
    assert!(before > 50);
    // The "filer" goes away: its mount point stays, empty.
    std::fs::rename(&src, tmp.path().join("aside")).unwrap();
    std::fs::create_dir(&src).unwrap();
    let err =
        run_pass_journaled(&mut journal, "carol", &src, &mut dest, opts, &no_progress).unwrap_err();
    assert!(matches!(err, SyncError::SourceRoot { .. }), "{err}");
    assert!(err.to_string().contains("--allow-empty-source"), "{err}");
    let err = migrator::files::sync::run_pass(&src, &mut dest, opts, &no_progress).unwrap_err();
    assert!(matches!(err, SyncError::SourceRoot { .. }), "{err}");
    // Nothing was deleted (the source was moved aside, so its absolute symlinks escape it
    // now: count the destination instead of verifying against the moved tree).
    assert_eq!(walk_count(&dst), before);
    // verify says the source root is missing instead of listing every file as extra.
    let missing = tmp.path().join("never-mounted");
    let err = verify_files(&missing, &mut dest, false).unwrap_err();
    assert!(matches!(err, SyncError::SourceRoot { .. }), "{err}");

    let allowed = PassOptions {
        allow_empty_source: true,
        ..Default::default()
    };
    let r = run_pass_journaled(
        &mut journal,
        "carol",
        &src,
        &mut dest,
        allowed,
        &no_progress,
    )
    .unwrap();
    assert!(r.deleted >= 1, "{r:?}"); // whole subtrees count once
    assert!(std::fs::read_dir(&dst).unwrap().next().is_none());
}

/// A pass that defers durability (`defer_sync`, the CLI's default, like rsync) records the boot
/// id with its cached manifest: the next deferred pass trusts it under the same boot; a pass
/// that must end durable walks and syncs; after a reboot (another boot id) a file that lost its
/// unsynced data is found by the walk and copied again.
#[test]
fn deferred_durability_is_trusted_only_under_the_same_boot() {
    use migrator::files::dest_cache::{self, DestCache};
    use migrator::files::sync::Destination;
    let tmp = scratch();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    generate_home(&src, &HomeSpec::small(200)).unwrap();
    let mut journal = SqliteJournal::open(&tmp.path().join("journal.sqlite")).unwrap();
    let mut dest = LocalDestination::new(&dst);
    let key = dest_cache::key("carol", &src, &dest.identity());
    let head_key = dest_cache::head_key(&key);
    let boot = dest_cache::boot_id().expect("this host's boot id");
    let head_boot = |journal: &mut SqliteJournal| {
        let b = journal.cache(&head_key).unwrap().expect("a cache head");
        dest_cache::decode_head(&b).unwrap().unsynced_boot
    };
    let mut pass = |journal: &mut SqliteJournal, defer_sync: bool| {
        let opts = PassOptions {
            defer_sync,
            ..Default::default()
        };
        run_pass_journaled(journal, "carol", &src, &mut dest, opts, &no_progress).unwrap()
    };

    let first = pass(&mut journal, true);
    assert!(!first.synced && first.files_written >= 200, "{first:?}");
    assert_eq!(head_boot(&mut journal), Some(boot.clone()));
    let second = pass(&mut journal, true);
    assert!(second.destination_cached, "same boot: the cache holds");
    assert_eq!(second.files_written, 0);
    // A pass that must end durable does not trust an unsynced cache: it walks, then syncs.
    let durable = pass(&mut journal, false);
    assert!(!durable.destination_cached && durable.synced, "{durable:?}");
    assert_eq!(durable.files_written, 0);
    assert_eq!(head_boot(&mut journal), None);
    let after = pass(&mut journal, true);
    assert!(after.destination_cached, "a durable cache is trusted");
    let durable_noop = pass(&mut journal, false);
    assert!(
        durable_noop.destination_cached && durable_noop.synced,
        "{durable_noop:?}"
    );
    assert_eq!(durable_noop.operations, 0);

    // A change copied by a deferred pass; then "a crash": the boot id changes and the file's
    // unsynced data is gone (empty, same mtime: what a lost writeback looks like).
    let changed = "d000/s0000/f000007.dat";
    std::fs::write(src.join(changed), b"written before the crash").unwrap();
    let fifth = pass(&mut journal, true);
    assert_eq!((fifth.files_written, fifth.synced), (1, false));
    let c = journal.cache(&head_key).unwrap().unwrap();
    let h = dest_cache::decode_head(&c).unwrap();
    let blob = journal.cache(&key).unwrap().unwrap();
    let rebooted = DestCache {
        manifest: dest_cache::decode_manifest(&h, &blob).unwrap(),
        stamps: h.stamps.clone(),
        unsynced_boot: Some("another-boot".into()),
    };
    let (head, blob) = dest_cache::encode(&rebooted);
    journal.put_cache(&key, &blob).unwrap();
    journal.put_cache(&head_key, &head).unwrap();
    let lost = dst.join(changed);
    let mtime = std::fs::metadata(&lost).unwrap().modified().unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&lost).unwrap();
    f.set_len(0).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let sixth = pass(&mut journal, true);
    assert!(
        !sixth.destination_cached,
        "another boot: the destination is walked"
    );
    assert_eq!(sixth.files_written, 1, "{sixth:?}");
    assert_eq!(std::fs::read(&lost).unwrap(), b"written before the crash");
    let mut check = LocalDestination::new(&dst);
    assert!(verify_files(&src, &mut check, false).unwrap().equal());
}

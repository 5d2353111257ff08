//! File sync over SSH to a real sshd on loopback: `migrator receive` runs on the far side over
//! the exec channel. Host keys are verified: an unknown or changed key is refused.

use migrator::files::remote::{SshDestination, SshOptions, SshTarget};
use migrator::files::sync::{run_pass, run_pass_journaled, PassOptions, Progress, SyncError};
use migrator::fixtures::{generate_home, HomeSpec};
use migrator::journal::SqliteJournal;
use migrator::verify::verify_files;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use testkit::Sshd;

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

fn target(sshd: &Sshd, path: &std::path::Path) -> SshTarget {
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        sshd.user(),
        sshd.port(),
        path.display()
    );
    SshTarget::parse(&url, "root").unwrap()
}

fn options(sshd: &Sshd, known_hosts: std::path::PathBuf) -> SshOptions {
    SshOptions {
        known_hosts,
        identity: sshd.client_key(),
        remote_migrator: env!("CARGO_BIN_EXE_migrator").to_string(),
    }
}

#[test]
fn ssh_sync_of_generated_home_then_no_change_then_delta() {
    let t0 = std::time::Instant::now();
    let sshd = Sshd::start().unwrap();
    eprintln!("sshd up at {:?}", t0.elapsed());
    let tmp = scratch();
    let src = tmp.path().join("old/alice");
    let dst = tmp.path().join("new/alice");
    let mut spec = HomeSpec::small(20_000);
    spec.big_file = Some(200 << 20);
    generate_home(&src, &spec).unwrap();
    eprintln!("generated at {:?}", t0.elapsed());
    let opts = options(&sshd, sshd.known_hosts().unwrap());
    let mut dest = SshDestination::connect(&target(&sshd, &dst), &opts).unwrap();
    eprintln!("connected at {:?}", t0.elapsed());

    let t = std::time::Instant::now();
    let first = run_pass(&src, &mut dest, PassOptions::default(), &no_progress).unwrap();
    eprintln!("first pass over SSH: {:?} {first:?}", t.elapsed());
    assert!(first.files_written >= 20_010, "{first:?}");
    assert!(first.bytes_written > 200 << 20);
    assert!(first.warnings.iter().any(|w| w.contains("link-escape")));
    assert_eq!(
        std::fs::read(
            dst.join("odd")
                .join(OsStr::from_bytes(b"caf\xe9-latin1.txt"))
        )
        .unwrap(),
        b"latin1\n"
    );
    let a = std::fs::metadata(dst.join("odd/leader.txt")).unwrap();
    let c = std::fs::metadata(dst.join("third-name.txt")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (c.ino(), 3));
    assert_eq!(
        std::fs::metadata(src.join("big.bin")).unwrap().len(),
        std::fs::metadata(dst.join("big.bin")).unwrap().len()
    );
    let v = verify_files(&src, &mut dest, false).unwrap();
    assert!(v.equal(), "{:?}", v.differences);

    eprintln!("verified at {:?}", t.elapsed());
    // Journaled passes: the first walks the far side and caches its manifest (stamps taken
    // by the receiver), the next one only compares directory stamps over the wire.
    let mut journal = SqliteJournal::open(&tmp.path().join("journal.sqlite")).unwrap();
    let mut journaled = |dest: &mut SshDestination| {
        run_pass_journaled(
            &mut journal,
            "alice",
            &src,
            dest,
            PassOptions::default(),
            &no_progress,
        )
        .unwrap()
    };
    let second = journaled(&mut dest);
    assert_eq!((second.files_written, second.bytes_written), (0, 0));
    assert_eq!(second.deleted, 0);
    assert!(!second.destination_cached);
    let cached = journaled(&mut dest);
    assert!(cached.destination_cached);
    assert_eq!((cached.files_written, cached.deleted), (0, 0));
    // A stray file on the far side: its directory's stamp changed, so the next pass walks.
    std::fs::write(dst.join("odd/stray"), b"not ours").unwrap();

    eprintln!("second pass at {:?}", t.elapsed());
    std::fs::write(src.join("d001/s0050/f002500.dat"), b"new content").unwrap();
    std::fs::write(src.join("odd/added file"), b"added").unwrap();
    std::fs::remove_file(src.join("d000/s0000/f000000.dat")).unwrap();
    let third = journaled(&mut dest);
    assert!(!third.destination_cached);
    assert_eq!(
        (third.files_written, third.bytes_written, third.deleted),
        (2, 11 + 5, 2)
    );
    assert!(!dst.join("odd/stray").exists());
    assert_eq!(std::fs::read(dst.join("odd/added file")).unwrap(), b"added");
    eprintln!("third pass at {:?}", t.elapsed());
    let v = verify_files(&src, &mut dest, false).unwrap();
    assert!(v.equal(), "{:?}", v.differences);
    drop(dest);
    eprintln!("dropped at {:?}", t.elapsed());
    drop(sshd);
    eprintln!("sshd stopped at {:?}", t0.elapsed());
}

#[test]
fn changed_host_key_is_refused_before_anything_is_sent() {
    let sshd = Sshd::start().unwrap();
    let tmp = scratch();
    let dst = tmp.path().join("never");
    let opts = options(&sshd, sshd.known_hosts_with_wrong_key().unwrap());
    let err = match SshDestination::connect(&target(&sshd, &dst), &opts) {
        Ok(_) => panic!("connected despite a changed host key"),
        Err(e) => e,
    };
    let SyncError::Remote(msg) = &err else {
        panic!("unexpected error {err:?}")
    };
    assert!(msg.contains("does NOT match line"), "{msg}");
    assert!(msg.contains("refusing to connect"), "{msg}");
    assert!(!dst.exists());

    // A known_hosts that does not list the host at all.
    let empty = tmp.path().join("known_hosts_empty");
    std::fs::write(&empty, "").unwrap();
    let opts = options(&sshd, empty);
    let err = SshDestination::connect(&target(&sshd, &dst), &opts)
        .err()
        .expect("an unknown host must be refused");
    let msg = err.to_string();
    assert!(msg.contains("is not in"), "{msg}");
    assert!(msg.contains("SHA256:"), "{msg}");
}

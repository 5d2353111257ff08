//! Issue 18, finding 3 (and the file items of 10): file sync runs as root over homes the
//! customer controls while the site is live, and must never read or write outside them.
//! Each test plays the attack against the real thing: a real sshd on loopback running the real
//! `migrator receive`, real homes in a temporary directory. The customer's moves between the
//! walk and the copy are made by a destination wrapper that runs them just before the first
//! batch is handed on (the source is read by the destination's `apply`, after the walk).

use migrator::files::apply::{Data, Meta, Op};
use migrator::files::manifest::Manifest;
use migrator::files::remote::{SshDestination, SshOptions, SshTarget};
use migrator::files::stamps::DirStamp;
use migrator::files::sync::{
    run_pass, Destination, LocalDestination, PassOptions, PassReport, SyncError,
};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use testkit::Sshd;

/// Runs `swap` once, right before the first batch reaches `inner`: after both walks.
struct SwapBeforeApply<D> {
    inner: D,
    swap: Option<Box<dyn FnOnce() + Send>>,
}

impl<D: Destination> Destination for SwapBeforeApply<D> {
    fn manifest(&mut self, checksum: bool) -> Result<Manifest, SyncError> {
        self.inner.manifest(checksum)
    }
    fn apply(&mut self, ops: Vec<Op>) -> Result<(), SyncError> {
        if let Some(swap) = self.swap.take() {
            swap();
        }
        self.inner.apply(ops)
    }
    fn finish(&mut self, sync: bool) -> Result<migrator::files::apply::Applied, SyncError> {
        self.inner.finish(sync)
    }
    fn defers_sync(&self) -> bool {
        self.inner.defers_sync()
    }
    fn sets_owner(&self) -> bool {
        self.inner.sets_owner()
    }
    fn identity(&self) -> String {
        self.inner.identity()
    }
    fn dir_stamps(
        &mut self,
        dirs: &[Vec<u8>],
        settled: bool,
    ) -> Result<Option<Vec<DirStamp>>, SyncError> {
        self.inner.dir_stamps(dirs, settled)
    }
}

fn connect(sshd: &Sshd, path: &Path) -> SshDestination {
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        sshd.user(),
        sshd.port(),
        path.display()
    );
    let opts = SshOptions {
        known_hosts: sshd.known_hosts().unwrap(),
        identity: sshd.client_key(),
        remote_migrator: env!("CARGO_BIN_EXE_migrator").to_string(),
    };
    SshDestination::connect(&SshTarget::parse(&url, "root").unwrap(), &opts).unwrap()
}

const SECRET: &[u8] = b"TOP SECRET: not the customer's";

/// Every regular file under `root` (not following symlinks) that holds [`SECRET`].
fn leaked(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else {
        return out;
    };
    for e in rd {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(leaked(&e.path()));
        } else if ft.is_file() {
            let b = std::fs::read(e.path()).unwrap();
            if b.windows(SECRET.len()).any(|w| w == SECRET) {
                out.push(e.path());
            }
        }
    }
    out
}

/// A home with a file and a directory, and secrets outside it.
struct Homes {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
    outside: PathBuf,
}

fn homes() -> Homes {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("old/alice");
    let dst = tmp.path().join("new/alice");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(src.join("www")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(src.join("notes.txt"), b"mine").unwrap();
    std::fs::write(src.join("www/config.php"), b"<?php // mine").unwrap();
    std::fs::write(outside.join("shadow"), SECRET).unwrap();
    std::fs::write(outside.join("config.php"), SECRET).unwrap();
    std::fs::set_permissions(outside.join("shadow"), PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::set_permissions(outside.join("config.php"), PermissionsExt::from_mode(0o600)).unwrap();
    // Symlinks out of the home from the start: left out by the walk.
    std::os::unix::fs::symlink("/etc", src.join("etc")).unwrap();
    std::os::unix::fs::symlink(outside.join("shadow"), src.join("pw")).unwrap();
    Homes {
        _tmp: tmp,
        src,
        dst,
        outside,
    }
}

/// After the walk: `notes.txt` becomes a symlink to a secret file, `www` a symlink to a
/// directory of secrets (the intermediate component of `www/config.php`).
fn swap_to_symlinks(h: &Homes) -> Box<dyn FnOnce() + Send> {
    let (src, outside) = (h.src.clone(), h.outside.clone());
    Box::new(move || {
        std::fs::remove_file(src.join("notes.txt")).unwrap();
        std::os::unix::fs::symlink(outside.join("shadow"), src.join("notes.txt")).unwrap();
        std::fs::rename(src.join("www"), src.join("www.moved")).unwrap();
        std::os::unix::fs::symlink(&outside, src.join("www")).unwrap();
    })
}

fn check_nothing_leaked(h: &Homes, r: &PassReport) {
    assert_eq!(leaked(&h.dst), Vec::<PathBuf>::new(), "{r:?}");
    for name in ["notes.txt", "www/config.php"] {
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains(name) && w.contains("symlink")),
            "no warning about {name}: {:?}",
            r.warnings
        );
    }
    for name in ["etc", "pw"] {
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains(name) && w.contains("outside the home")),
            "{:?}",
            r.warnings
        );
        assert!(std::fs::symlink_metadata(h.dst.join(name)).is_err());
    }
}

#[test]
fn ssh_sender_never_reads_through_a_symlink_swapped_in_after_the_walk() {
    let sshd = Sshd::start().unwrap();
    let h = homes();
    let mut d = SwapBeforeApply {
        inner: connect(&sshd, &h.dst),
        swap: Some(swap_to_symlinks(&h)),
    };
    let r = run_pass(&h.src, &mut d, PassOptions::default(), &|_| {}).unwrap();
    check_nothing_leaked(&h, &r);
}

#[test]
fn local_copy_never_reads_through_a_directory_swapped_for_a_symlink() {
    let h = homes();
    let mut d = SwapBeforeApply {
        inner: LocalDestination::new(&h.dst),
        swap: Some(swap_to_symlinks(&h)),
    };
    let r = run_pass(&h.src, &mut d, PassOptions::default(), &|_| {}).unwrap();
    check_nothing_leaked(&h, &r);
}

/// Opens the FIFO for writing and closes it, so a reader blocked on it sees end of file.
struct UnblockFifo(PathBuf);
impl Drop for UnblockFifo {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc_o_nonblock())
            .open(&self.0);
    }
}
fn libc_o_nonblock() -> i32 {
    0o4000 // O_NONBLOCK on Linux
}

fn mkfifo(p: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn a_fifo_in_the_home_never_blocks_the_ssh_sync() {
    let sshd = Sshd::start().unwrap();
    let h = homes();
    mkfifo(&h.src.join("pipe"));
    std::fs::write(h.src.join("data.txt"), b"will be a FIFO").unwrap();
    let swapped = h.src.join("data.txt");
    let _unblock = UnblockFifo(swapped.clone());
    let mut d = SwapBeforeApply {
        inner: connect(&sshd, &h.dst),
        swap: Some(Box::new(move || {
            std::fs::remove_file(&swapped).unwrap();
            mkfifo(&swapped);
        })),
    };
    let src = h.src.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = run_pass(&src, &mut d, PassOptions::default(), &|_| {});
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the pass blocked on a FIFO for 60 s")
        .unwrap();
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("pipe") && w.contains("FIFO")),
        "{:?}",
        r.warnings
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("data.txt") && w.contains("no longer a regular file")),
        "{:?}",
        r.warnings
    );
    assert_eq!(std::fs::read(h.dst.join("notes.txt")).unwrap(), b"mine");
}

fn meta_of(p: &Path) -> Meta {
    let md = std::fs::metadata(p).unwrap();
    Meta {
        mode: 0o644,
        uid: md.uid(),
        gid: md.gid(),
        mtime_s: 1_600_000_000,
        mtime_ns: 0,
    }
}

#[test]
fn the_receiver_refuses_paths_that_leave_its_root() {
    let sshd = Sshd::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("new/alice");
    std::fs::create_dir_all(&root).unwrap();
    let victim = tmp.path().join("new/victim");
    std::fs::write(&victim, b"keep").unwrap();
    let abs = tmp.path().join("abs-escaped");
    let m = meta_of(&root);
    let file = |path: &[u8]| Op::File {
        path: path.to_vec(),
        meta: m,
        data: Data::Inline(b"written by the sender".to_vec()),
    };
    let crafted: Vec<(Op, String)> = vec![
        (file(b"../escaped"), "../escaped".into()),
        (
            file(abs.as_os_str().as_encoded_bytes()),
            abs.display().to_string(),
        ),
        (file(b"www//x"), "www//x".into()),
        (
            Op::Delete {
                path: b"../victim".to_vec(),
            },
            "../victim".into(),
        ),
        (
            Op::HardLink {
                path: b"pw".to_vec(),
                leader: b"../victim".to_vec(),
            },
            "../victim".into(),
        ),
        (
            Op::SetMeta {
                path: b"../victim".to_vec(),
                kind: migrator::files::manifest::Kind::File,
                meta: Meta { mode: 0o777, ..m },
            },
            "../victim".into(),
        ),
    ];
    for (op, named) in crafted {
        // A fresh connection each: a refused batch ends the conversation.
        let mut d = connect(&sshd, &root);
        let what = format!("{op:?}");
        let refused = d.apply(vec![op]).and_then(|()| d.finish(true));
        let e = refused.expect_err(&what).to_string();
        assert!(e.contains(&named) && e.contains("refused"), "{what}: {e}");
    }
    let mut d = connect(&sshd, &root);
    let e = d.dir_stamps(&[b"../..".to_vec()], false).unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");
    assert!(!tmp.path().join("new/escaped").exists());
    assert!(!abs.exists());
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    let md = std::fs::metadata(&victim).unwrap();
    assert_eq!((md.mode() & 0o777, md.nlink()), (0o644, 1));
    assert!(!root.join("pw").exists());
}

/// A rollback copies the new home back over the old one, which the customer can change: a
/// file or directory whose mode changed is swapped for a symlink to a file outside between
/// the walk and the `SetMeta`; the file outside keeps its mode and mtime.
#[test]
fn rollback_never_changes_mode_or_times_through_a_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let new = tmp.path().join("new/alice");
    let old = tmp.path().join("old/alice");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(new.join("d")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(new.join("f"), b"f").unwrap();
    std::fs::write(new.join("d/g"), b"g").unwrap();
    for (p, mode) in [(outside.join("f"), 0o600), (outside.join("g"), 0o600)] {
        std::fs::write(&p, SECRET).unwrap();
        std::fs::set_permissions(&p, PermissionsExt::from_mode(mode)).unwrap();
    }
    let before = |p: &Path| {
        let md = std::fs::metadata(p).unwrap();
        (md.mode() & 0o7777, md.mtime(), md.mtime_nsec())
    };
    let (f_before, g_before) = (before(&outside.join("f")), before(&outside.join("g")));
    let mut back = LocalDestination::new(&old);
    run_pass(&new, &mut back, PassOptions::default(), &|_| {}).unwrap();
    // On the new side the modes change (the site's owner ran chmod): the next copy-back is
    // metadata only.
    std::fs::set_permissions(new.join("f"), PermissionsExt::from_mode(0o666)).unwrap();
    std::fs::set_permissions(new.join("d/g"), PermissionsExt::from_mode(0o666)).unwrap();
    let (o, out) = (old.clone(), outside.clone());
    let mut d = SwapBeforeApply {
        inner: back,
        swap: Some(Box::new(move || {
            std::fs::remove_file(o.join("f")).unwrap();
            std::os::unix::fs::symlink(out.join("f"), o.join("f")).unwrap();
            std::fs::rename(o.join("d"), o.join("d.moved")).unwrap();
            std::os::unix::fs::symlink(&out, o.join("d")).unwrap();
        })),
    };
    let r = run_pass(&new, &mut d, PassOptions::default(), &|_| {});
    assert_eq!(before(&outside.join("f")), f_before, "{r:?}");
    assert_eq!(before(&outside.join("g")), g_before, "{r:?}");
    // Refused, naming the entry (a symlink where a directory was: "Not a directory"; where
    // the file was: "is a symlink now").
    let e = r
        .expect_err("changing modes through swapped symlinks")
        .to_string();
    assert!(
        e.contains("old/alice/d/g") || e.contains("old/alice/f"),
        "{e}"
    );
}

/// Issue 18 (10): a customer's files named like the sync's temporaries are copied like any
/// other, and a second pass finds nothing to do (they are neither skipped nor deleted).
#[test]
fn customer_files_named_like_temporaries_are_copied_over_ssh() {
    let sshd = Sshd::start().unwrap();
    let h = homes();
    std::fs::write(h.src.join(".~migrator-tmp.foo"), b"customer's own").unwrap();
    std::fs::write(h.src.join("www/.~migrator-tmp.bar"), b"also theirs").unwrap();
    let mut d = connect(&sshd, &h.dst);
    let first = run_pass(&h.src, &mut d, PassOptions::default(), &|_| {}).unwrap();
    assert_eq!(
        std::fs::read(h.dst.join(".~migrator-tmp.foo")).unwrap(),
        b"customer's own"
    );
    assert_eq!(
        std::fs::read(h.dst.join("www/.~migrator-tmp.bar")).unwrap(),
        b"also theirs"
    );
    // Rewriting a neighbour goes through a temporary file that is not the customer's.
    std::fs::write(h.src.join("notes.txt"), b"mine, edited").unwrap();
    let second = run_pass(&h.src, &mut d, PassOptions::default(), &|_| {}).unwrap();
    assert_eq!((second.files_written, second.deleted), (1, 0), "{second:?}");
    let third = run_pass(&h.src, &mut d, PassOptions::default(), &|_| {}).unwrap();
    assert_eq!(
        (third.files_written, third.deleted, third.metadata_only),
        (0, 0, 0),
        "{first:?} {third:?}"
    );
    assert_eq!(
        std::fs::read(h.dst.join(".~migrator-tmp.foo")).unwrap(),
        b"customer's own"
    );
}

/// Issue 18 (10): owners go through the operator's map (`sync-files --owner-map`, the real
/// binary over the real sshd): the new side gets the mapped ids, a second pass finds nothing
/// to change (owners are read back through the map), and an owner the map does not name
/// refuses the pass before anything is written, naming the file and the id.
#[test]
fn owners_are_mapped_and_an_unmapped_owner_is_refused() {
    let sshd = Sshd::start().unwrap();
    if sshd.user() != "root" {
        eprintln!("not root: owners cannot be set, nothing to map");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("old/alice");
    let dst = tmp.path().join("new/alice");
    std::fs::create_dir_all(src.join("www")).unwrap();
    std::fs::write(src.join("www/index.php"), b"<?php echo 1;").unwrap();
    std::os::unix::fs::symlink("index.php", src.join("www/home.php")).unwrap();
    for p in [&src, &src.join("www"), &src.join("www/index.php")] {
        std::os::unix::fs::chown(p, Some(1001), Some(1001)).unwrap();
    }
    std::os::unix::fs::lchown(src.join("www/home.php"), Some(1001), Some(1001)).unwrap();
    let map = tmp.path().join("owners.map");
    std::fs::write(&map, "# alice\nuid 1001 52001\ngid 1001 52002\n").unwrap();
    let journal = tmp.path().join("journal.sqlite");
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        sshd.user(),
        sshd.port(),
        dst.display()
    );
    let (kh, key) = (sshd.known_hosts().unwrap(), sshd.client_key());
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_migrator"))
            .args(["sync-files", "alice", "--json", "--src"])
            .arg(&src)
            .args(["--dst", &url, "--journal"])
            .arg(&journal)
            .arg("--known-hosts")
            .arg(&kh)
            .arg("--identity")
            .arg(&key)
            .args(["--remote-migrator", env!("CARGO_BIN_EXE_migrator")])
            .arg("--owner-map")
            .arg(&map)
            .output()
            .unwrap()
    };
    let json = |out: std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let first = json(run());
    assert_eq!(first["files_written"], 2, "{first}");
    for p in [&dst, &dst.join("www"), &dst.join("www/index.php")] {
        let md = std::fs::metadata(p).unwrap();
        assert_eq!((md.uid(), md.gid()), (52001, 52002), "{}", p.display());
    }
    let link = std::fs::symlink_metadata(dst.join("www/home.php")).unwrap();
    assert_eq!((link.uid(), link.gid()), (52001, 52002));
    let second = json(run());
    assert_eq!(
        (&second["files_written"], &second["metadata_only"]),
        (&0.into(), &0.into()),
        "{second}"
    );
    // A file of another user appears: refused, nothing of the pass written.
    std::fs::write(src.join("www/added.php"), b"mapped owner").unwrap();
    std::os::unix::fs::chown(src.join("www/added.php"), Some(1001), Some(1001)).unwrap();
    std::fs::write(src.join("www/other.php"), b"not alice's").unwrap();
    std::os::unix::fs::chown(src.join("www/other.php"), Some(1002), Some(1001)).unwrap();
    let out = run();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("www/other.php (uid 1002)") && e.contains("owner map"),
        "{e}"
    );
    assert!(!dst.join("www/other.php").exists());
    assert!(!dst.join("www/added.php").exists());
}

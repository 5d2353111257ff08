//! The change feed end to end: the real `migrator watch` (inotify) and `migrator sync-files
//! --feed` binaries over real files. Changes of every kind made after a pass are caught by the
//! next feed-driven pass (verified equal by `migrator verify`); an unchanged tree gives a pass
//! that stats nothing; every broken chain (restart, someone else's checkpoint, lost epoch,
//! missing or silent socket) falls back to a full walk with the reason reported.

use migrator::fixtures::{generate_home, HomeSpec};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_migrator");

fn scratch() -> tempfile::TempDir {
    match tempfile::tempdir_in("/dev/shm") {
        Ok(t) => t,
        Err(_) => tempfile::tempdir().unwrap(),
    }
}

/// A running `migrator watch`, stopped (by its PID) when dropped.
struct Watch {
    child: Child,
    socket: PathBuf,
}

impl Watch {
    fn start(root: &Path, socket: &Path, extra: &[&str]) -> Watch {
        let child = Command::new(BIN)
            .arg("watch")
            .arg(root)
            .arg("--socket")
            .arg(socket)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn migrator watch");
        let w = Watch {
            child,
            socket: socket.to_path_buf(),
        };
        // The socket is bound once every directory is watched. Waited for by connecting, not
        // by its file: the file exists from bind(), a moment before listen() (a client
        // connecting then is refused). The watcher drops a connection that sends nothing.
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&w.socket).is_err() {
            assert!(t.elapsed() < Duration::from_secs(30), "watcher not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        w
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // SIGTERM: the watcher removes its socket.
        // SAFETY: signalling the child we spawned.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

struct Site {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
    journal: PathBuf,
    socket: PathBuf,
}

fn site(files: usize) -> Site {
    let tmp = scratch();
    let src = tmp.path().join("homez.1/alice");
    generate_home(&src, &HomeSpec::small(files)).unwrap();
    Site {
        src,
        dst: tmp.path().join("homez.9/alice"),
        journal: tmp.path().join("journal.sqlite"),
        socket: tmp.path().join("feed.sock"),
        _tmp: tmp,
    }
}

impl Site {
    /// One `sync-files --feed --json` pass; its JSON report and stderr.
    fn pass(&self) -> (Value, String) {
        self.pass_with(&[])
    }

    fn pass_with(&self, extra: &[&str]) -> (Value, String) {
        let out = Command::new(BIN)
            .args(["sync-files", "alice", "--json"])
            .args(extra)
            .arg("--src")
            .arg(&self.src)
            .arg("--dst")
            .arg(&self.dst)
            .arg("--journal")
            .arg(&self.journal)
            .arg("--feed")
            .arg(&self.socket)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "sync-files failed: {stderr}");
        (serde_json::from_slice(&out.stdout).unwrap(), stderr)
    }

    fn verify_equal(&self) {
        let out = Command::new(BIN)
            .args(["verify", "alice", "--src"])
            .arg(&self.src)
            .arg("--dst")
            .arg(&self.dst)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn walked(r: &Value) -> bool {
    r["source_walked"].as_bool().unwrap()
}

fn feed_note(r: &Value) -> String {
    r["feed"].as_str().unwrap_or_default().to_string()
}

#[test]
fn feed_driven_passes_catch_every_change_and_stat_nothing_when_unchanged() {
    let s = site(2_000);
    let _w = Watch::start(&s.src, &s.socket, &[]);
    let (first, _) = s.pass();
    assert!(walked(&first), "the first epoch is never complete");
    assert!(first["files_written"].as_u64().unwrap() > 2_000);

    let (idle, _) = s.pass();
    assert!(!walked(&idle), "{idle}");
    assert_eq!(idle["source_entries_statted"], 0);
    assert_eq!(idle["files_written"], 0);
    assert_eq!(idle["source_entries"], first["source_entries"]);
    assert_eq!(idle["manifest_digest"], first["manifest_digest"]);
    assert_eq!(feed_note(&idle), "used: nothing changed");

    // A changed, an added, a deleted file; a new directory filled right after mkdir; a
    // renamed directory (then written into); a chmod.
    let d = s.src.join("d000");
    std::fs::write(d.join("s0000/f000001.dat"), b"changed content").unwrap();
    std::fs::write(d.join("s0000/added.txt"), b"new").unwrap();
    std::fs::remove_file(d.join("s0001/f000050.dat")).unwrap();
    std::fs::create_dir_all(s.src.join("fresh/deeper")).unwrap();
    for i in 0..20 {
        std::fs::write(s.src.join(format!("fresh/deeper/f{i}")), b"x").unwrap();
    }
    std::fs::rename(d.join("s0002"), d.join("s0002-renamed")).unwrap();
    std::fs::write(d.join("s0002-renamed/after-rename"), b"r").unwrap();
    std::fs::write(d.join("s0002-renamed/f000100.dat"), b"rewritten").unwrap();
    std::fs::set_permissions(
        d.join("s0003/f000151.dat"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();

    let (delta, _) = s.pass();
    assert!(!walked(&delta), "{delta}");
    assert!(feed_note(&delta).starts_with("used:"), "{delta}");
    let statted = delta["source_entries_statted"].as_u64().unwrap();
    assert!(statted > 20 && statted < 1_000, "{statted}");
    // 1 changed + 1 added + 20 new + 50 under the new name (+1 new there), 1 metadata-only.
    assert!(delta["files_written"].as_u64().unwrap() >= 73, "{delta}");
    assert!(delta["deleted"].as_u64().unwrap() >= 2, "{delta}");
    assert!(delta["metadata_only"].as_u64().unwrap() >= 1, "{delta}");
    s.verify_equal();

    let (idle, _) = s.pass();
    assert!(
        !walked(&idle) && idle["source_entries_statted"] == 0,
        "{idle}"
    );
    assert_eq!(idle["files_written"], 0);
    assert_eq!(idle["manifest_digest"], delta["manifest_digest"]);

    // The root named as the watcher knows it (here through a symlink, resolved by the
    // watcher): the same feed, the chain continues.
    let alias = s.src.parent().unwrap().join("alice-alias");
    std::os::unix::fs::symlink(&s.src, &alias).unwrap();
    std::fs::write(d.join("s0000/via-alias"), b"a").unwrap();
    let (aliased, _) = s.pass_with(&["--feed-root", alias.to_str().unwrap()]);
    assert!(!walked(&aliased), "{aliased}");
    assert_eq!(aliased["files_written"], 1);
    s.verify_equal();
}

#[test]
fn broken_chains_walk_everything_and_say_why() {
    let s = site(300);
    let w = Watch::start(&s.src, &s.socket, &[]);
    s.pass();
    let (ok, _) = s.pass();
    assert!(!walked(&ok), "{ok}");

    // Someone else took a checkpoint in between: the seq gap forces a walk.
    // (A checkpoint of another consumer does not break it.)
    let other =
        migrator::files::feed::checkpoint(&s.socket, &s.src, "other", Duration::from_secs(5));
    assert!(!other.unwrap().complete);
    let (ok, _) = s.pass();
    assert!(
        !walked(&ok),
        "another consumer's checkpoint broke the chain: {ok}"
    );
    let key = migrator::files::dest_cache::key("alice", &s.src, &s.dst.display().to_string());
    let consumer = migrator::files::feed::consumer(&key);
    migrator::files::feed::checkpoint(&s.socket, &s.src, &consumer, Duration::from_secs(5))
        .unwrap();
    std::fs::write(s.src.join("during-gap"), b"g").unwrap();
    let (gap, _) = s.pass();
    assert!(walked(&gap), "{gap}");
    assert!(feed_note(&gap).contains("another checkpoint"), "{gap}");
    assert_eq!(gap["files_written"], 1);
    let (ok, _) = s.pass();
    assert!(!walked(&ok), "{ok}");

    // --full walks everything, and keeps the chain for the next pass.
    let (full, _) = s.pass_with(&["--full"]);
    assert!(walked(&full) && !full["destination_cached"].as_bool().unwrap());
    let (ok, _) = s.pass();
    assert!(!walked(&ok), "{ok}");

    // The watcher restarts: a new feed id, a walk.
    drop(w);
    let w = Watch::start(&s.src, &s.socket, &[]);
    let (restarted, _) = s.pass();
    assert!(walked(&restarted));
    assert!(feed_note(&restarted).contains("restarted"), "{restarted}");
    let (ok, _) = s.pass();
    assert!(!walked(&ok), "{ok}");

    // No watcher at all: a warning and a walk, the pass still succeeds.
    drop(w);
    std::fs::write(s.src.join("while-down"), b"d").unwrap();
    let (down, stderr) = s.pass();
    assert!(walked(&down));
    assert!(feed_note(&down).starts_with("not used"), "{down}");
    assert!(
        down["warnings"]
            .to_string()
            .contains("walking the whole source"),
        "{down} {stderr}"
    );
    assert_eq!(down["files_written"], 1);
    let w = Watch::start(&s.src, &s.socket, &["--max-dirty", "5"]);
    let (after, _) = s.pass();
    assert!(
        walked(&after),
        "a pass without the feed ended the chain: {after}"
    );
    let (ok, _) = s.pass();
    assert!(!walked(&ok), "{ok}");

    // A lost epoch (here: more changes than --max-dirty): a walk that still copies them.
    for i in 0..10 {
        std::fs::write(s.src.join(format!("burst{i}")), b"b").unwrap();
    }
    let (lost, _) = s.pass();
    assert!(walked(&lost), "{lost}");
    assert!(feed_note(&lost).contains("more than 5"), "{lost}");
    assert_eq!(lost["files_written"], 10);
    s.verify_equal();
    drop(w);

    // A socket nobody answers on: the pass waits the short timeout, warns and walks.
    let silent = std::os::unix::net::UnixListener::bind(&s.socket).unwrap();
    std::fs::set_permissions(&s.socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    let t = Instant::now();
    let (mute, _) = s.pass();
    assert!(walked(&mute));
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(feed_note(&mute).starts_with("not used"), "{mute}");
    drop(silent);
}

/// A source home that is missing (moved aside, an unmounted filer) or not a directory is an
/// error naming it, never an empty source that deletes the destination; with the feed too.
#[test]
fn missing_source_root_is_an_error_and_the_destination_stays() {
    let s = site(50);
    let w = Watch::start(&s.src, &s.socket, &[]);
    s.pass();
    let (ok, _) = s.pass();
    assert!(!walked(&ok), "{ok}");
    let before = std::fs::read_dir(s.dst.join("d000")).unwrap().count();
    let aside = s.src.with_file_name("alice.aside");
    std::fs::rename(&s.src, &aside).unwrap();
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .args(["sync-files", "alice", "--json"])
            .args(extra)
            .arg("--src")
            .arg(&s.src)
            .arg("--dst")
            .arg(&s.dst)
            .arg("--journal")
            .arg(&s.journal)
            .output()
            .unwrap()
    };
    let feed = ["--feed", s.socket.to_str().unwrap()];
    for extra in [&feed[..], &[], &["--full"]] {
        let out = run(extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{extra:?}: a missing source succeeded"
        );
        assert!(
            stderr.contains(s.src.to_str().unwrap()) && stderr.contains("does not exist"),
            "{extra:?}: {stderr}"
        );
        assert_eq!(
            std::fs::read_dir(s.dst.join("d000")).unwrap().count(),
            before,
            "{extra:?}: the destination changed"
        );
    }
    // A file where the home was: not a directory, same refusal.
    std::fs::write(&s.src, b"not a home").unwrap();
    let out = run(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
    std::fs::remove_file(&s.src).unwrap();
    // Back in place: the destination is intact and the passes resume.
    std::fs::rename(&aside, &s.src).unwrap();
    drop(w);
    s.verify_equal();
}

/// Warnings (an escaping symlink, not copied) are the same on a feed pass as on a walk: a
/// dirty directory keeps its subtree's warnings, and a warning that appeared without any
/// operation reaches the cache, so the next "nothing changed" pass reports it.
#[test]
fn feed_passes_report_the_same_warnings_as_a_walk() {
    let s = site(50);
    std::fs::create_dir_all(s.src.join("a/deep")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", s.src.join("a/deep/esc")).unwrap();
    let _w = Watch::start(&s.src, &s.socket, &[]);
    let outside = |r: &Value| {
        r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w.as_str().unwrap().contains("resolves outside the home"))
            .count()
    };
    let (first, _) = s.pass();
    let base = outside(&first);
    assert!(base >= 1, "{first}");
    let (idle, _) = s.pass();
    assert!(!walked(&idle), "{idle}");
    assert_eq!(outside(&idle), base, "{idle}");
    std::fs::write(s.src.join("a/g"), b"g").unwrap();
    let (delta, _) = s.pass();
    assert!(!walked(&delta), "{delta}");
    assert_eq!(
        outside(&delta),
        base,
        "a dirty directory dropped its subtree's warnings"
    );
    // A new escaping link: a warning, and no operation (its directory's times put back).
    let a = std::fs::File::open(s.src.join("a")).unwrap();
    let md = a.metadata().unwrap();
    std::os::unix::fs::symlink("/etc/shadow", s.src.join("a/esc2")).unwrap();
    let times = std::fs::FileTimes::new()
        .set_accessed(md.accessed().unwrap())
        .set_modified(md.modified().unwrap());
    a.set_times(times).unwrap();
    let (warned, _) = s.pass();
    assert!(!walked(&warned), "{warned}");
    assert_eq!(warned["operations"], 0, "{warned}");
    assert_eq!(outside(&warned), base + 1, "{warned}");
    let (idle, _) = s.pass();
    assert_eq!(feed_note(&idle), "used: nothing changed", "{idle}");
    assert_eq!(
        outside(&idle),
        base + 1,
        "the cache kept the old warnings: {idle}"
    );
    let (full, _) = s.pass_with(&["--full"]);
    assert_eq!(outside(&full), base + 1, "{full}");
}

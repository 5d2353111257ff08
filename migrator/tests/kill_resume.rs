//! SIGKILL the `migrator` binary in the middle of a copy, run the same command again: the job
//! finishes, committed work is not redone, and the destination is never left with a torn file.
//! Four points: a local file sync early in the pass, an SSH sync and a local sync in the middle
//! of a large file (each rerun continues from the offset committed on the destination), and a
//! database copy in the middle of a chunked table.

use migrator::fixtures::{generate_home, HomeSpec};
use migrator::journal::{JournalStore, SqliteJournal};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

const BIN: &str = env!("CARGO_BIN_EXE_migrator");

/// Kills the child by its own PID on drop (test failure included).
struct Killer(Child);
impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sync-files SITE --src SRC --dst DST --journal J` between two local paths.
fn local_sync_args(site: &str, src: &Path, dst: &Path, journal: &Path) -> Vec<String> {
    let p = |p: &Path| p.to_str().unwrap().to_string();
    vec![
        "sync-files".into(),
        site.into(),
        "--src".into(),
        p(src),
        "--dst".into(),
        p(dst),
        "--journal".into(),
        p(journal),
    ]
}

fn spawn(args: &[&str], env: &[(&str, String)]) -> Killer {
    let mut c = Command::new(BIN);
    c.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    Killer(c.spawn().unwrap())
}

fn run_json(args: &[&str], env: &[(&str, String)]) -> serde_json::Value {
    let mut c = Command::new(BIN);
    c.args(args).arg("--json");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits until `cond` holds, then SIGKILLs the process. Returns false if it ended first.
fn kill_when(k: &mut Killer, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if let Ok(Some(_)) = k.0.try_wait() {
            return false;
        }
        if cond() {
            k.0.kill().unwrap(); // SIGKILL
            k.0.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("condition not reached in {timeout:?}");
}

fn count_files(p: &Path) -> usize {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count()
}

fn verify_equal(site: &str, src: &Path, dst: &str, extra: &[&str]) {
    let mut args = vec![
        "verify",
        site,
        "--src",
        src.to_str().unwrap(),
        "--dst",
        dst,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = Command::new(BIN).args(&args).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["equal"], true, "{v}");
}

#[test]
fn local_sync_killed_early_resumes_without_redoing_committed_files() {
    let tmp = scratch();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    let mut spec = HomeSpec::small(6000);
    spec.big_file = None;
    generate_home(&src, &spec).unwrap();
    let journal = tmp.path().join("j.sqlite");
    let owned = local_sync_args("s1", &src, &dst, &journal);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let mut k = spawn(&args, &[]);
    let killed = kill_when(&mut k, Duration::from_secs(60), || {
        dst.exists() && count_files(&dst) > 1000
    });
    assert!(killed, "the pass ended before it could be killed");
    let committed = count_files(&dst);
    let r = run_json(&args, &[]);
    let written = r["files_written"].as_u64().unwrap() as usize;
    assert!(
        written < 6000 + 10 - committed + 600,
        "rewrote committed files: {written} written after {committed} committed"
    );
    assert_eq!(r["warnings"].as_array().unwrap().len(), 2); // escape symlink, FIFO
    verify_equal("s1", &src, dst.to_str().unwrap(), &[]);
    // The journal: the killed step is still `started`, the second is `done`.
    let j = SqliteJournal::open(&journal).unwrap();
    let steps = j.steps("s1").unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].status.name(), "started");
    assert_eq!(steps[1].status.name(), "done");
}

#[test]
fn ssh_sync_killed_inside_a_large_file_continues_from_the_committed_offset() {
    let sshd = testkit::Sshd::start().unwrap();
    // On disk: user xattrs for the resume record, and fdatasyncs that take real time.
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    let big = 96u64 << 20;
    let mut spec = HomeSpec::small(300);
    spec.big_file = Some(big);
    let total = generate_home(&src, &spec).unwrap();
    let journal = tmp.path().join("j.sqlite");
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        sshd.user(),
        sshd.port(),
        dst.display()
    );
    let kh = sshd.known_hosts().unwrap();
    let key = sshd.client_key();
    let args = [
        "sync-files",
        "s2",
        "--src",
        src.to_str().unwrap(),
        "--dst",
        &url,
        "--journal",
        journal.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        "--identity",
        key.to_str().unwrap(),
        "--remote-migrator",
        BIN,
    ];
    let mut k = spawn(&args, &[]);
    let killed = kill_when(&mut k, Duration::from_secs(120), || {
        temp_of(&dst).is_some_and(|t| committed(&t).is_some_and(|c| c > 0))
    });
    assert!(killed, "the pass ended before it could be killed");
    let tmpname = temp_of(&dst).expect("the temporary file of big.bin");
    // The receiver on the far side may write what it had already received (a chunk, its
    // fdatasync, then the record): wait until neither the length nor the record has changed
    // for three looks in a row, then read what it committed.
    let (mut last, mut same) = (None, 0);
    for _ in 0..100 {
        let now = std::fs::metadata(&tmpname)
            .ok()
            .map(|m| (m.len(), committed(&tmpname)));
        same = if now.is_some() && now == last {
            same + 1
        } else {
            0
        };
        if same == 3 {
            break;
        }
        last = now;
        std::thread::sleep(Duration::from_millis(200));
    }
    rerun_continues(&args, &dst, big, total);
    verify_equal(
        "s2",
        &src,
        &url,
        &[
            "--known-hosts",
            kh.to_str().unwrap(),
            "--identity",
            key.to_str().unwrap(),
            "--remote-migrator",
            BIN,
            "--checksum",
        ],
    );
}

/// After a kill inside `big.bin` (`big` bytes of a home of `total`): part of it is committed
/// on the destination's temporary file and nothing torn is under the real name; the same
/// command again writes only what was not committed and leaves no temporary file and no record.
fn rerun_continues(args: &[&str], dst: &Path, big: u64, total: u64) {
    let tmpname = temp_of(dst).expect("the temporary file of big.bin survives the kill");
    let done = committed(&tmpname).expect("the resume record survives the kill");
    assert!(done > 0 && done < big, "committed {done} of {big}");
    assert!(
        !dst.join("big.bin").exists(),
        "torn file under the real name"
    );
    let r = run_json(args, &[]);
    let written = r["bytes_written"].as_u64().unwrap();
    assert!(
        written <= total - done && written >= big - done,
        "rerun wrote {written} bytes; {done} of the big file were committed, {total} in all"
    );
    assert!(!tmpname.exists(), "leftover temporary file");
    assert_eq!(
        committed(&dst.join("big.bin")),
        None,
        "resume record left on the file"
    );
}

/// The temporary file a large copy of `big.bin` writes: a fresh name of the sync's prefix (never
/// one derived from the file's, which a customer's file could carry), found by its record.
fn temp_of(dst: &Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dst).ok()?.find_map(|e| {
        let p = e.ok()?.path();
        let name = p.file_name()?.to_str()?.to_string();
        (name.starts_with(".~migrator-tmp.") && record(&p).is_some()).then_some(p)
    })
}

/// The resume record on a file: `v2 <ino> <size> <mtime> <ns> <ctime> <ns> <committed>
/// <name hex>`.
fn record(tmp: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(tmp.as_os_str().as_bytes()).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: c and the name are NUL-terminated; buf is writable for its length.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"user.hostmove.resume".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n <= 0 {
        return None;
    }
    Some(std::str::from_utf8(&buf[..n as usize]).ok()?.to_string())
}

/// The committed offset a resumable copy recorded on its temporary file, if any.
fn committed(tmp: &Path) -> Option<u64> {
    record(tmp)?.split(' ').nth(7)?.parse().ok()
}

#[test]
fn local_sync_killed_inside_a_large_file_continues_from_the_committed_offset() {
    // On disk, not tmpfs: each commit's fdatasync takes real time, which leaves a window to
    // kill the copy in the middle of the file (and the file system has user xattrs).
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    let big = 512u64 << 20;
    let mut spec = HomeSpec::small(200);
    spec.big_file = Some(big);
    let total = generate_home(&src, &spec).unwrap();
    let journal = tmp.path().join("j.sqlite");
    let owned = local_sync_args("s4", &src, &dst, &journal);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let mut k = spawn(&args, &[]);
    let killed = kill_when(&mut k, Duration::from_secs(120), || {
        temp_of(&dst).is_some_and(|t| committed(&t).is_some_and(|c| c > 0))
    });
    assert!(killed, "the pass ended before it could be killed");
    rerun_continues(&args, &dst, big, total);
    verify_equal("s4", &src, dst.to_str().unwrap(), &["--checksum"]);
}

#[test]
fn db_copy_killed_mid_table_resumes_from_the_checkpoint() {
    let src = testkit::MariaDb::start().unwrap();
    let dst = testkit::MariaDb::start().unwrap();
    src.exec(
        "CREATE DATABASE big; USE big;
         CREATE TABLE t (id INT PRIMARY KEY, pad VARCHAR(200));
         INSERT INTO t SELECT seq, REPEAT('x', 150) FROM seq_1_to_400000;
         CREATE TABLE small (id INT PRIMARY KEY); INSERT INTO small VALUES (1), (2);",
    )
    .unwrap();
    let tmp = scratch();
    let journal = tmp.path().join("j.sqlite");
    let env = [
        ("MIGRATOR_SRC_DB_URL", src.admin_url()),
        ("MIGRATOR_DST_DB_URL", dst.admin_url()),
    ];
    let args = [
        "copy-db",
        "big",
        "--journal",
        journal.to_str().unwrap(),
        "--threads",
        "2",
    ];
    let mut k = spawn(&args, &env);
    let killed = kill_when(&mut k, Duration::from_secs(120), || {
        SqliteJournal::open(&journal)
            .and_then(|j| j.checkpoints("copy-db:big"))
            .is_ok_and(|c| c.iter().any(|(t, v)| t == "t" && v.contains("last_pk")))
    });
    assert!(killed, "the copy ended before it could be killed");
    let r = run_json(&args, &env);
    let t = r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "t")
        .unwrap()
        .clone();
    assert_eq!(t["action"], "resumed", "{r}");
    assert!(t["rows"].as_u64().unwrap() < 400_000, "{t}");
    assert_eq!(t["source_checksum"], t["destination_checksum"]);
    assert_eq!(
        dst.exec("SELECT COUNT(*) FROM big.t").unwrap().trim(),
        "400000"
    );
    let out = Command::new(BIN)
        .args(["verify", "big", "--db", "big", "--json"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["equal"], true, "{v}");
}

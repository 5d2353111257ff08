//! `scenarios supervise` as a real process (no root needed): the child killed by the PID in the
//! status file is restarted under a new PID; SIGTERM stops the child by its PID and the
//! supervisor exits 0; a child that keeps dying hits the start limit and the supervisor exits 1.

use scenarios::process;
use scenarios::supervise::{read_status, Status};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A temporary directory removed on drop, and the supervisor killed (by its PID) if the test
/// failed before stopping it.
struct Fixture {
    dir: PathBuf,
    sup: Option<Child>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(c) = &mut self.sup {
            if c.try_wait().ok().flatten().is_none() {
                process::signal_pid(c.id() as i32, libc::SIGTERM);
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("hm-sup-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Fixture { dir, sup: None }
}

fn supervise(f: &mut Fixture, extra: &[&str], command: &[&str]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scenarios"));
    cmd.args(["supervise", "--service", "test/sleeper", "--status-file"])
        .arg(f.dir.join("status.json"))
        .arg("--child-log")
        .arg(f.dir.join("child.log"))
        .args(["--backoff-min-ms", "50"])
        .args(extra)
        .arg("--")
        .args(command)
        .stderr(std::fs::File::create(f.dir.join("supervisor.log")).unwrap());
    f.sup = Some(cmd.spawn().expect("start the supervisor"));
}

fn wait_status(file: &Path, what: &str, ok: impl Fn(&Status) -> bool) -> Status {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = read_status(file) {
            if ok(&s) {
                return s;
            }
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killed_child_is_restarted_and_sigterm_stops_it_by_pid() {
    let mut f = fixture("restart");
    supervise(&mut f, &[], &["sleep", "60"]);
    let status = f.dir.join("status.json");
    let first = wait_status(&status, "a running child", |s| {
        s.child.as_ref().is_some_and(process::alive)
    })
    .child
    .unwrap();
    for round in 1..=3u64 {
        let before = read_status(&status).unwrap().child.unwrap();
        process::signal_pid(before.pid, libc::SIGKILL);
        let s = wait_status(&status, "the restarted child", |s| {
            s.restarts == round && s.child.as_ref().is_some_and(|c| c.pid != before.pid)
        });
        let last = s.last_exit.unwrap_or_default();
        assert!(last.contains("signal 9 (SIGKILL)"), "{last}");
        assert!(process::alive(s.child.as_ref().unwrap()));
    }
    let child = read_status(&status).unwrap().child.unwrap();
    assert_ne!(child.pid, first.pid);
    let sup = f.sup.as_mut().unwrap();
    process::signal_pid(sup.id() as i32, libc::SIGTERM);
    let code = sup.wait().unwrap();
    assert_eq!(code.code(), Some(0), "supervisor exit");
    assert!(!process::alive(&child), "the child outlived its supervisor");
    let s = read_status(&status).unwrap();
    assert_eq!((s.state.as_str(), s.child), ("stopped", None));
    let log = std::fs::read_to_string(f.dir.join("supervisor.log")).unwrap();
    assert_eq!(
        log.matches("killed by signal 9 (SIGKILL)").count(),
        3,
        "{log}"
    );
}

#[test]
fn a_child_that_keeps_dying_hits_the_start_limit() {
    let mut f = fixture("limit");
    supervise(
        &mut f,
        &["--max-starts", "3", "--window-secs", "60"],
        &["sh", "-c", "exit 7"],
    );
    let sup = f.sup.as_mut().unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(c) = sup.try_wait().unwrap() {
            break c;
        }
        assert!(Instant::now() < end, "the supervisor never gave up");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code.code(), Some(1));
    let s = read_status(&f.dir.join("status.json")).unwrap();
    assert_eq!((s.state.as_str(), s.starts, s.restarts), ("gave_up", 3, 2));
    assert!(s.last_exit.unwrap().starts_with("pid"), "exit described");
    let log = std::fs::read_to_string(f.dir.join("supervisor.log")).unwrap();
    assert!(
        log.contains("exited 7") && log.contains("start limit hit"),
        "{log}"
    );
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_scenarios"))
        .args([
            "supervise",
            "--service",
            "x",
            "--status-file",
            "/nonexistent/s",
        ])
        .args([
            "--child-log",
            "/nonexistent/l",
            "--max-starts",
            "0",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-starts"), "{err}");
}

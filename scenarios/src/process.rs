//! Running commands and supervising daemons: every daemon is started by us, recorded by PID
//! (with its kernel start time, so a recycled PID is never mistaken for ours) and stopped by PID.

use crate::error::{LabError, Result};
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A daemon the lab started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcRecord {
    /// Service name, e.g. `old-dc/mariadb`.
    pub service: String,
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat` at spawn time: guards against PID reuse.
    pub start_time: u64,
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion; returns its stdout, or an error carrying its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    run_with_input(cmd, None)
}

/// Runs a command feeding `input` on stdin (used for SQL scripts holding passwords, which
/// therefore never touch the disk or the argument list).
pub fn run_with_input(cmd: &mut Command, input: Option<&[u8]>) -> Result<String> {
    let command = describe(cmd);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| LabError::Command {
        command: command.clone(),
        status: "could not start".into(),
        stderr: e.to_string(),
    })?;
    if let Some(data) = input {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let data = data.to_vec();
        // Feed stdin from a thread so a large script cannot deadlock against a full stdout pipe.
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output();
        let _ = writer.join();
        finish(command, out)
    } else {
        finish(command, child.wait_with_output())
    }
}

fn finish(command: String, out: std::io::Result<std::process::Output>) -> Result<String> {
    let out = out.map_err(|e| LabError::Command {
        command: command.clone(),
        status: "wait failed".into(),
        stderr: e.to_string(),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// A command that runs `program args` inside network namespace `netns`, and inside the
/// persistent mount namespace `mount_ns` when given (the DC's private view of `/homez.*`).
/// `ip netns exec` also binds `/etc/netns/<netns>/resolv.conf`, so names resolve via lab DNS.
pub fn in_ns(mount_ns: Option<&Path>, netns: &str, program: &str) -> Command {
    let mut cmd;
    if let Some(m) = mount_ns {
        cmd = Command::new("nsenter");
        cmd.arg(format!("--mount={}", m.display()))
            .arg("--")
            .arg("ip");
    } else {
        cmd = Command::new("ip");
    }
    cmd.args(["netns", "exec", netns, program]);
    cmd
}

/// Reads field 22 (start time in clock ticks) of `/proc/<pid>/stat`.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 is index 19.
    fields.get(19)?.parse().ok()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}

/// Starts a daemon in its own session with stdout/stderr appended to `log`, and records it.
/// `nsenter` and `ip netns exec` both `exec`, so the PID is the daemon's own.
pub fn spawn_daemon(service: &str, mut cmd: Command, log: &Path) -> Result<ProcRecord> {
    let command = describe(&cmd);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(LabError::io("opening daemon log", log))?;
    let file2 = file
        .try_clone()
        .map_err(LabError::io("opening daemon log", log))?;
    cmd.stdin(Stdio::null()).stdout(file).stderr(file2);
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from our terminal signals.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| LabError::Command {
        command,
        status: "could not start".into(),
        stderr: e.to_string(),
    })?;
    let pid = child.id() as i32;
    // The Child handle is dropped on purpose: stop() reaps by PID when the daemon is ours.
    drop(child);
    Ok(ProcRecord {
        service: service.to_string(),
        pid,
        start_time: start_time(pid).unwrap_or(0),
    })
}

/// True when the recorded process still runs (same PID and same start time).
pub fn alive(rec: &ProcRecord) -> bool {
    match start_time(rec.pid) {
        Some(t) => (rec.start_time == 0 || t == rec.start_time) && !is_zombie(rec.pid),
        None => false,
    }
}

fn reap(pid: i32) {
    // Reaps the process if it is our child; ECHILD otherwise, which is fine.
    unsafe {
        let mut status = 0;
        libc::waitpid(pid, &mut status, libc::WNOHANG);
    }
}

/// Stops a recorded process: SIGTERM, wait up to `grace`, then SIGKILL. Only ever by PID,
/// and only if the start time still matches the record.
pub fn stop(rec: &ProcRecord, grace: Duration) {
    if !alive(rec) {
        reap(rec.pid);
        return;
    }
    signal_pid(rec.pid, libc::SIGTERM);
    // A process frozen by a fault (SIGSTOP) only handles SIGTERM once continued.
    signal_pid(rec.pid, libc::SIGCONT);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        reap(rec.pid);
        if !alive(rec) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(rec) {
        signal_pid(rec.pid, libc::SIGKILL);
        for _ in 0..100 {
            reap(rec.pid);
            if !alive(rec) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sends a signal to one PID.
pub fn signal_pid(pid: i32, sig: i32) {
    if pid > 1 {
        // SAFETY: plain kill(2) on a single positive PID.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// PIDs of every process whose network namespace is `netns` (all started by this lab, since
/// the namespace name is unique to the run).
pub fn pids_in_netns(netns: &str) -> Vec<i32> {
    match run(Command::new("ip").args(["netns", "pids", netns])) {
        Ok(out) => out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Polls `probe` until it returns Ok or `timeout` passes; returns the probe's last error.
pub fn wait_until<F, E>(timeout: Duration, mut probe: F) -> std::result::Result<(), E>
where
    F: FnMut() -> std::result::Result<(), E>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self_is_stable_and_alive() {
        let pid = std::process::id() as i32;
        let t = start_time(pid).expect("own stat");
        assert_eq!(start_time(pid), Some(t));
        let rec = ProcRecord {
            service: "self".into(),
            pid,
            start_time: t,
        };
        assert!(alive(&rec));
        let wrong = ProcRecord {
            start_time: t + 1,
            ..rec
        };
        assert!(
            !alive(&wrong),
            "a different start time means a recycled PID"
        );
    }

    #[test]
    fn spawned_daemon_is_stopped_by_pid() {
        let dir = std::env::temp_dir().join(format!("lab-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let rec = spawn_daemon("sleep", cmd, &dir.join("log")).unwrap();
        assert!(alive(&rec));
        stop(&rec, Duration::from_secs(2));
        assert!(!alive(&rec));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failing_command_reports_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        match err {
            LabError::Command { stderr, .. } => assert_eq!(stderr, "boom"),
            other => panic!("unexpected {other}"),
        }
    }
}

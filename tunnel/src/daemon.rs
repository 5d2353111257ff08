//! The userspace backend's process: `wireguard-go -f <iface>` started by us, tracked by PID
//! (plus its kernel start time, so a recycled PID is never mistaken for it), stopped by PID.
//!
//! Each daemon gets a private mount namespace with a tmpfs on `/run/wireguard`, so its UAPI
//! socket `<iface>.sock` never collides with a same-named interface in another network
//! namespace. From outside, the socket is reachable as
//! `/proc/<pid>/root/run/wireguard/<iface>.sock`; it disappears with the daemon.

use crate::error::{Error, Result};
use crate::netns;
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The userspace implementation we run; `TUNNEL_WIREGUARD_GO` overrides the path.
pub fn program() -> String {
    std::env::var("TUNNEL_WIREGUARD_GO").unwrap_or_else(|_| "wireguard-go".to_string())
}

/// Identity of a daemon we started (recorded in the side's state file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: guards against PID reuse.
    pub start_ticks: u64,
}

/// The daemon's UAPI socket as seen from our mount namespace.
pub fn socket_path(pid: u32, iface: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root/run/wireguard/{iface}.sock"))
}

struct ProcStat {
    state: char,
    start_ticks: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        // field 22 overall = index 19 after pid and comm
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Reaps `pid` if it is our exited child (a no-op otherwise), so no zombie lingers in a
/// long-lived library user.
fn reap(pid: u32) {
    let mut status = 0;
    // SAFETY: plain syscall; WNOHANG never blocks; ECHILD when not our child is ignored.
    unsafe {
        libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG);
    }
}

impl DaemonInfo {
    /// Still the same wireguard-go process, and not a zombie.
    pub fn alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some(st) if st.start_ticks == self.start_ticks => {
                if st.state == 'Z' || st.state == 'X' {
                    reap(self.pid);
                    false
                } else {
                    true
                }
            }
            _ => false,
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; reaps it if it was our child.
    pub fn stop(&self, grace: Duration) -> Result<()> {
        if !self.alive() {
            return Ok(());
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.alive() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal(libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if !self.alive() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(Error::Command {
            command: format!("kill -KILL {}", self.pid),
            status: "still running".into(),
            stderr: "wireguard-go did not exit".into(),
        })
    }

    fn signal(&self, sig: libc::c_int) {
        if self.alive() {
            // SAFETY: plain syscall on a PID we verified is our daemon.
            unsafe {
                libc::kill(self.pid as libc::pid_t, sig);
            }
        }
    }
}

/// Starts `wireguard-go -f <iface>` in `netns` with a private `/run/wireguard`, logging to
/// `log`, and waits (up to 5 s) until its UAPI socket accepts connections.
pub fn start(netns: Option<&str>, iface: &str, log: &Path) -> Result<DaemonInfo> {
    fs::create_dir_all("/run/wireguard").map_err(|source| Error::Spawn {
        program: "mkdir /run/wireguard".into(),
        source,
    })?;
    let prog = program();
    let script = format!(
        "mount -t tmpfs -o mode=0700,size=1m tmpfs /run/wireguard && exec {prog} -f \"$0\""
    );
    let mut cmd = netns::command(
        netns,
        "unshare",
        &[
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            iface,
        ],
    );
    let logf = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .map_err(|source| Error::Spawn {
            program: format!("open {}", log.display()),
            source,
        })?;
    let logf2 = logf.try_clone().map_err(|source| Error::Spawn {
        program: format!("open {}", log.display()),
        source,
    })?;
    // Own process group: a Ctrl-C aimed at the operator's command does not reach the daemon.
    cmd.stdin(Stdio::null())
        .stdout(logf)
        .stderr(logf2)
        .process_group(0)
        // wireguard-go exits after its banner when it sees a kernel module and no override.
        .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1");
    let describe = netns::describe(&cmd);
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        program: describe.clone(),
        source,
    })?;
    let pid = child.id();
    tracing::info!(
        "{iface}: started `{describe}` (pid {pid}, log {})",
        log.display()
    );
    let fail = |message: String| Error::DaemonStart {
        interface: iface.to_string(),
        message,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(fail(format!(
                "`{describe}` exited with {status}; log {}: {}",
                log.display(),
                log_tail(log)
            )));
        }
        // `exec wireguard-go` happens only after the tmpfs is mounted, so once the comm is
        // wireguard-go the socket path below is the daemon's own.
        if comm(pid).as_deref() == Some(short_comm(&prog))
            && UnixStream::connect(socket_path(pid, iface)).is_ok()
        {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "no UAPI socket after 5 s; log {}: {}",
                log.display(),
                log_tail(log)
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let start_ticks = proc_stat(pid)
        .map(|s| s.start_ticks)
        .ok_or_else(|| fail(format!("pid {pid} vanished right after start")))?;
    // The Child handle is dropped without waiting: the daemon outlives this call. DaemonInfo
    // reaps it when it is found dead.
    drop(child);
    Ok(DaemonInfo { pid, start_ticks })
}

/// `/proc/<pid>/comm` holds at most 15 bytes of the executable's file name.
fn short_comm(prog: &str) -> &str {
    let base = prog.rsplit('/').next().unwrap_or(prog);
    &base[..base.len().min(15)]
}

/// The last non-empty line of a log file (for error messages).
pub fn log_tail(log: &Path) -> String {
    fs::read_to_string(log)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty() && !l.contains('│') && !l.contains('─'))
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_default()
}

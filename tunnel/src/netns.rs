//! Running things "on a side": in the current network namespace, or inside a named one
//! (`/run/netns/<name>`, as created by `ip netns add`). Commands go through `ip -n` /
//! `ip netns exec`; Rust code runs on a scoped thread that `setns(2)`s into the namespace
//! (network namespaces are per thread, so the rest of the process is untouched).

use crate::error::{Error, Result};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `/run/netns/<name>`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Errors with [`Error::NetnsMissing`] when a named namespace does not exist.
pub fn ensure_exists(netns: Option<&str>) -> Result<()> {
    match netns {
        Some(ns) if !path(ns).exists() => Err(Error::NetnsMissing(ns.to_string())),
        _ => Ok(()),
    }
}

/// A command that runs `program args` inside `netns` (or here when `None`).
pub fn command(netns: Option<&str>, program: &str, args: &[&str]) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]).args(args);
            c
        }
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }
}

/// Runs a command to completion; non-zero exit becomes [`Error::Command`] with its stderr.
pub fn run(mut cmd: Command) -> Result<String> {
    let display = describe(&cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: display,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip [-n netns] args...`
pub fn ip(netns: Option<&str>, args: &[&str]) -> Result<String> {
    let mut c = Command::new("ip");
    if let Some(ns) = netns {
        c.args(["-n", ns]);
    }
    c.args(args);
    run(c)
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `f` on a thread inside `netns` (or directly when `None`) and returns its result.
/// Sockets opened by `f` belong to that namespace, even after `f` returns.
pub fn run_in<T: Send>(netns: Option<&str>, f: impl FnOnce() -> T + Send) -> Result<T> {
    let Some(ns) = netns else {
        return Ok(f());
    };
    let file = std::fs::File::open(path(ns)).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::NetnsMissing(ns.to_string()),
        _ => Error::Netns {
            netns: ns.to_string(),
            source,
        },
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a valid fd; only this thread changes namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(Error::Netns {
                    netns: ns.to_string(),
                    source: std::io::Error::last_os_error(),
                });
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The inode of a network namespace (`None` = this process's), to tell namespaces apart.
pub fn inode(netns: Option<&str>) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let p = match netns {
        Some(ns) => path(ns),
        None => PathBuf::from("/proc/self/ns/net"),
    };
    std::fs::metadata(&p)
        .map(|m| m.ino())
        .map_err(|source| match netns {
            Some(ns) if source.kind() == std::io::ErrorKind::NotFound => {
                Error::NetnsMissing(ns.to_string())
            }
            _ => Error::Netns {
                netns: netns.unwrap_or("(own)").to_string(),
                source,
            },
        })
}

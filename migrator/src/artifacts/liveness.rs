//! Whether a job run registered in the owner token ([`super::fence::Running`]) is still alive,
//! and stopping one that outlasts the freeze's wait.
//!
//! `migrator cron-run` makes itself the leader of a new process group before it registers a
//! run, and records a [`ProcId`]: its pid (the group's id), the host's boot id and its start
//! time in clock ticks since boot (`/proc/PID/stat`, field 22). On the same host and boot:
//! - the leader is there with the same start time: **alive**;
//! - the pid is gone, or taken by a process started at another time: the leader died; the
//!   run is alive while a process of its group is left (an orphaned job; the kernel does not
//!   hand out a pid still used as a group id), else **dead**. A zombie counts as dead.
//!
//! Another boot id means another host (or a reboot of this one): **unknown**, never reaped
//! from here.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The process that registered a run, as [`ProcId::me`] saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: u32,
    pub boot_id: String,
    /// Start time, clock ticks after boot.
    pub start: u64,
    /// Whether `pid` leads its own process group (the group then holds the job's processes).
    pub group: bool,
    /// The pid namespace it runs in (`/proc/self/ns/pid`): the same host in another container
    /// is another host here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    /// Another host or boot: not decidable here.
    Unknown,
}

fn pid_ns() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.display().to_string())
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// From `/proc/PID/stat`: the state (field 3), process group (5) and start time (22), for a
/// process that is not a zombie (a zombie writes nothing more: dead, only not yet reaped).
fn stat(pid: &str) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    if matches!(f.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    Some((f.get(2)?.parse().ok()?, f.get(19)?.parse().ok()?))
}

fn start_of(pid: u32) -> Option<u64> {
    stat(&pid.to_string()).map(|(_, start)| start)
}

/// Whether a live process of group `pgid` is left.
fn group_alive(pgid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.bytes().all(|b| b.is_ascii_digit()) && stat(&name).is_some_and(|(g, _)| g == pgid)
    })
}

impl ProcId {
    /// This process (`None` when `/proc` cannot tell).
    pub fn me() -> Option<ProcId> {
        let pid = std::process::id();
        // SAFETY: getpgrp has no preconditions.
        let group = unsafe { libc::getpgrp() } as u32 == pid;
        Some(ProcId {
            pid,
            boot_id: boot_id()?,
            start: start_of(pid)?,
            group,
            pid_ns: pid_ns(),
        })
    }

    /// Whether this process runs on this host, this boot, in this pid namespace.
    pub fn is_local(&self) -> bool {
        boot_id().as_deref() == Some(self.boot_id.as_str()) && self.pid_ns == pid_ns()
    }

    pub fn liveness(&self) -> Liveness {
        if !self.is_local() {
            return Liveness::Unknown;
        }
        if start_of(self.pid) == Some(self.start) {
            return Liveness::Alive;
        }
        if self.group && group_alive(self.pid) {
            return Liveness::Alive;
        }
        Liveness::Dead
    }

    /// Stops the run: SIGTERM to its process group, SIGKILL after `grace`; waits until it is
    /// dead (up to `grace` more). Only a local group leader's run can be stopped; returns how
    /// it ended (`"SIGTERM"`, `"SIGKILL"`, `"ended"` by itself) or why it could not be.
    pub fn stop(&self, grace: Duration) -> Result<&'static str, String> {
        if !self.is_local() {
            return Err(format!("pid {} runs on another host", self.pid));
        }
        if !self.group {
            return Err(format!("pid {} does not lead its process group", self.pid));
        }
        if self.liveness() == Liveness::Dead {
            // Ended meanwhile: its pid may be someone else's by now, never signalled.
            return Ok("ended");
        }
        let pg = -(self.pid as i32);
        let gone = |until: Instant| loop {
            if self.liveness() == Liveness::Dead {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // SAFETY: signals to a process group this run's leader created.
        unsafe { libc::kill(pg, libc::SIGTERM) };
        if gone(Instant::now() + grace) {
            return Ok("SIGTERM");
        }
        unsafe { libc::kill(pg, libc::SIGKILL) };
        if gone(Instant::now() + grace) {
            return Ok("SIGKILL");
        }
        Err(format!(
            "process group {} still there after SIGKILL",
            self.pid
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_dead_and_unknown() {
        let me = ProcId::me().expect("/proc tells");
        assert_eq!(me.liveness(), Liveness::Alive);
        // A real child, ended and reaped: dead (its pid not reused with the same start).
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        let start = start_of(pid);
        c.wait().unwrap();
        let gone = ProcId {
            pid,
            start: start.unwrap_or(1),
            group: false,
            ..me.clone()
        };
        assert_eq!(gone.liveness(), Liveness::Dead);
        // The same pid started at another time (a reused pid): not the run's process.
        let reused = ProcId {
            start: me.start + 1,
            group: false,
            ..me.clone()
        };
        assert_eq!(reused.liveness(), Liveness::Dead);
        let elsewhere = ProcId {
            boot_id: "another-host".into(),
            ..me.clone()
        };
        assert_eq!(elsewhere.liveness(), Liveness::Unknown);
        let container = ProcId {
            pid_ns: Some("pid:[1]".into()),
            ..me.clone()
        };
        assert_eq!(container.liveness(), Liveness::Unknown);
        assert!(elsewhere
            .stop(Duration::ZERO)
            .unwrap_err()
            .contains("another host"));
        // Never signals a group it does not lead (here: the test runner's).
        let not_leader = ProcId { group: false, ..me };
        assert!(not_leader
            .stop(Duration::ZERO)
            .unwrap_err()
            .contains("does not lead"));
    }
}

//! A guard for one child process: on drop it sends SIGTERM to exactly that PID, waits a few
//! seconds, then SIGKILL. Never kills by name.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{err, wait_until, Result};

/// Owns a spawned child; stopping it is idempotent.
pub struct ChildGuard {
    /// What the process is, for messages ("mariadbd on 127.0.0.1:41234").
    pub what: String,
    child: Option<Child>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed; stdout/stderr go where `cmd` says (inherit by default).
    pub fn spawn(what: impl Into<String>, cmd: &mut Command) -> Result<Self> {
        let what = what.into();
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| err(format!("cannot start {what}: {e}")))?;
        Ok(Self {
            what,
            child: Some(child),
        })
    }

    /// The PID of the running child, if it was not stopped yet.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the child has exited (without reaping anything but this child).
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Sends `sig` to the child's PID (e.g. `libc::SIGKILL` to simulate a crash).
    pub fn signal(&self, sig: i32) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| err(format!("{} already stopped", self.what)))?;
        // SAFETY: kill(2) on a PID we spawned and have not reaped yet, so it cannot be reused.
        let rc = unsafe { libc::kill(pid as i32, sig) };
        if rc != 0 {
            return Err(err(format!(
                "kill({pid}, {sig}) for {}: {}",
                self.what,
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// Stops the child: SIGTERM, up to 10 s for it to exit, then SIGKILL. Reaps it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            // SAFETY: as in `signal`; the child is not reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let exited = wait_until(Duration::from_secs(10), || {
                !matches!(child.try_wait(), Ok(None))
            });
            if !exited {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

//! A throw-away file system for benchmarks: ext4 on a loop device backed by a file in a
//! private tmpfs ([`LoopFs`]), so every timed copy meets the same empty file system and the
//! host's disk is not what is measured. Needs root and loop devices ([`can_loop_mount`]).

use crate::{err, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Root with `/dev/loop-control`: [`LoopFs::create`] can work.
pub fn can_loop_mount() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Path::new("/dev/loop-control").exists()
}

/// A file system of its own for one timed copy: ext4 on a loop device backed by a file in a
/// private tmpfs, made with all its inode tables initialised (no `ext4lazyinit` running
/// under a timed run). Every tool meets the same empty file system, never one where another
/// tool's copy was deleted minutes ago (the disk trap). Unmounted and removed on drop, panics
/// included.
pub struct LoopFs {
    /// `<base>/fs-<pid>-<n>-<name>`: `t` is the tmpfs, `t/img` the image, `m` the mount.
    dir: PathBuf,
    mounted: bool,
}

/// Runs `cmd`; an error names the command and says why (its stderr).
fn cmd_ok(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().map_err(|e| err(format!("{cmd:?}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl LoopFs {
    /// A fresh file system of `gib` GiB with `inodes` inodes under
    /// `<base>/fs-<pid>-<n>-<name>`; errors name the command that failed.
    pub fn create(base: &Path, name: &str, gib: u64, inodes: u64) -> Result<LoopFs> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = base.join(format!("fs-{}-{n}-{name}", std::process::id()));
        let (t, m) = (dir.join("t"), dir.join("m"));
        std::fs::create_dir_all(&t).map_err(|e| err(format!("{}: {e}", t.display())))?;
        std::fs::create_dir_all(&m).map_err(|e| err(format!("{}: {e}", m.display())))?;
        let mut fs = LoopFs {
            dir,
            mounted: false,
        };
        cmd_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={}g", gib + 1))
                .arg("tmpfs")
                .arg(&t),
        )?;
        fs.mounted = true;
        let img = t.join("img");
        cmd_ok(Command::new("truncate").arg(format!("-s{gib}G")).arg(&img))?;
        cmd_ok(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-N", &inodes.to_string()])
                .args(["-E", "lazy_itable_init=0,lazy_journal_init=0"])
                .arg(&img),
        )?;
        cmd_ok(Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&m))?;
        Ok(fs)
    }

    /// Where it is mounted.
    pub fn path(&self) -> PathBuf {
        self.dir.join("m")
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if !self.mounted {
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        let mut clean = true;
        for p in [self.dir.join("m"), self.dir.join("t")] {
            let mounted = Command::new("mountpoint")
                .arg("-q")
                .arg(&p)
                .status()
                .is_ok_and(|s| s.success());
            if mounted
                && cmd_ok(Command::new("umount").arg(&p)).is_err()
                && cmd_ok(Command::new("umount").arg("-l").arg(&p)).is_err()
            {
                eprintln!("could not unmount {}; left in place", p.display());
                clean = false;
            }
        }
        if clean {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

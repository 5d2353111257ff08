//! Backends: kernel WireGuard (an `ip link ... type wireguard`, configured over netlink) or
//! userspace `wireguard-go` (our supervised daemon, configured over its UAPI socket). Both are
//! configured with `wireguard-control`; this module hides where the device lives.
//!
//! Userspace UAPI path: `wireguard-control` only looks in `/var/run/wireguard/<name>.sock`, so
//! for each daemon we place a symlink `/run/wireguard/<alias>.sock` pointing at the daemon's
//! own socket (`/proc/<pid>/root/run/wireguard/<iface>.sock`) and talk to `<alias>`. `wg show
//! <alias>` works too. The symlink is removed by `down`.

use crate::config::BackendChoice;
use crate::daemon::{self, DaemonInfo};
use crate::error::{Error, Result};
use crate::netns;
use crate::side::Resolved;
use serde::{Deserialize, Serialize};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use wireguard_control::{Backend as WgBackend, Device, DeviceUpdate, InterfaceName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Kernel,
    Userspace,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Kernel => "kernel",
            Backend::Userspace => "userspace (wireguard-go)",
        })
    }
}

/// Whether this kernel has WireGuard: the module is loaded or built in.
pub fn kernel_available() -> bool {
    Path::new("/sys/module/wireguard").is_dir()
}

/// Resolves `auto` by detection; refuses `kernel` where the kernel has no WireGuard.
pub fn select(choice: BackendChoice) -> Result<Backend> {
    select_with(choice, kernel_available())
}

pub fn select_with(choice: BackendChoice, kernel: bool) -> Result<Backend> {
    match (choice, kernel) {
        (BackendChoice::Auto, true) | (BackendChoice::Kernel, true) => Ok(Backend::Kernel),
        (BackendChoice::Auto, false) | (BackendChoice::Userspace, _) => Ok(Backend::Userspace),
        (BackendChoice::Kernel, false) => Err(Error::KernelUnavailable),
    }
}

/// `/run/wireguard/<alias>.sock`, the link `wireguard-control` connects through.
pub fn alias_socket(alias: &str) -> PathBuf {
    PathBuf::from("/run/wireguard").join(format!("{alias}.sock"))
}

/// Points the alias at a (new) daemon's socket.
pub fn link_alias(alias: &str, d: &DaemonInfo, iface: &str) -> Result<()> {
    let link = alias_socket(alias);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(daemon::socket_path(d.pid, iface), &link).map_err(|source| {
        Error::Uapi {
            interface: iface.to_string(),
            source,
        }
    })
}

pub fn unlink_alias(alias: &str) {
    let _ = std::fs::remove_file(alias_socket(alias));
}

fn wg_name(name: &str) -> Result<InterfaceName> {
    name.parse().map_err(|_| Error::Uapi {
        interface: name.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad interface name"),
    })
}

/// Where the device of a side is configured.
#[derive(Debug, Clone)]
pub enum Handle<'a> {
    Kernel {
        netns: Option<&'a str>,
        iface: &'a str,
    },
    Userspace {
        alias: &'a str,
        iface: &'a str,
    },
}

impl<'a> Handle<'a> {
    pub fn of(r: &'a Resolved<'a>, backend: Backend) -> Handle<'a> {
        match backend {
            Backend::Kernel => Handle::Kernel {
                netns: r.ns(),
                iface: r.iface(),
            },
            Backend::Userspace => Handle::Userspace {
                alias: &r.alias,
                iface: r.iface(),
            },
        }
    }

    fn iface(&self) -> &str {
        match self {
            Handle::Kernel { iface, .. } | Handle::Userspace { iface, .. } => iface,
        }
    }

    fn uapi_err(&self, source: std::io::Error) -> Error {
        Error::Uapi {
            interface: self.iface().to_string(),
            source,
        }
    }

    /// Confirms the userspace socket answers before handing it to `wireguard-control`, whose
    /// `apply` would otherwise spawn a daemon of its own on a missing socket.
    fn check_socket(&self) -> Result<()> {
        if let Handle::Userspace { alias, .. } = self {
            UnixStream::connect(alias_socket(alias)).map_err(|e| self.uapi_err(e))?;
        }
        Ok(())
    }

    /// Reads the device (keys, port, peers and their counters).
    pub fn get(&self) -> Result<Device> {
        match self {
            Handle::Kernel { netns, iface } => {
                let name = wg_name(iface)?;
                netns::run_in(*netns, || Device::get(&name, WgBackend::Kernel))?
                    .map_err(|e| self.uapi_err(e))
            }
            Handle::Userspace { alias, .. } => {
                self.check_socket()?;
                Device::get(&wg_name(alias)?, WgBackend::Userspace).map_err(|e| self.uapi_err(e))
            }
        }
    }

    /// Applies one configuration transaction.
    pub fn apply(&self, update: DeviceUpdate) -> Result<()> {
        match self {
            Handle::Kernel { netns, iface } => {
                let name = wg_name(iface)?;
                netns::run_in(*netns, || update.apply(&name, WgBackend::Kernel))?
                    .map_err(|e| self.uapi_err(e))
            }
            Handle::Userspace { alias, .. } => {
                self.check_socket()?;
                update
                    .apply(&wg_name(alias)?, WgBackend::Userspace)
                    .map_err(|e| self.uapi_err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_is_detected_and_overridable() {
        assert_eq!(
            select_with(BackendChoice::Auto, true).unwrap(),
            Backend::Kernel
        );
        assert_eq!(
            select_with(BackendChoice::Auto, false).unwrap(),
            Backend::Userspace
        );
        assert_eq!(
            select_with(BackendChoice::Userspace, true).unwrap(),
            Backend::Userspace
        );
        assert!(matches!(
            select_with(BackendChoice::Kernel, false),
            Err(Error::KernelUnavailable)
        ));
    }

    #[test]
    fn detection_matches_this_machine() {
        // This machine class has no wireguard module: auto must pick userspace here, and the
        // answer must follow /sys/module/wireguard wherever the test runs.
        let has = Path::new("/sys/module/wireguard").exists();
        assert_eq!(kernel_available(), has);
        let picked = select(BackendChoice::Auto).unwrap();
        assert_eq!(picked == Backend::Kernel, has);
    }
}

//! [`Side`]: "which datacenter am I, and where do I run" (runtime options, kept apart from the
//! config so one config file serves every side), and the side's small state file recording
//! what `up` created — the only things `down` removes.

use crate::backend::Backend;
use crate::config::{BackendChoice, Config, Datacenter};
use crate::daemon::DaemonInfo;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// Default folder of state files and daemon logs.
pub const DEFAULT_STATE_DIR: &str = "/run/tunnel";

/// Runtime options of one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    /// Name of the datacenter (in the config) this side acts for.
    pub name: String,
    /// Run inside this network namespace (`/run/netns/<name>`); `None` falls back to the
    /// datacenter's `netns` in the config, then to the caller's own namespace.
    pub netns: Option<String>,
    /// Overrides the config's `backend`.
    pub backend: Option<BackendChoice>,
    /// State files and daemon logs; default [`DEFAULT_STATE_DIR`].
    pub state_dir: PathBuf,
}

impl Side {
    pub fn new(name: impl Into<String>) -> Side {
        Side {
            name: name.into(),
            netns: None,
            backend: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        }
    }

    /// This side runs inside network namespace `ns`.
    pub fn in_netns(mut self, ns: impl Into<String>) -> Side {
        self.netns = Some(ns.into());
        self
    }

    pub fn with_backend(mut self, b: BackendChoice) -> Side {
        self.backend = Some(b);
        self
    }

    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Side {
        self.state_dir = dir.into();
        self
    }
}

/// A side resolved against its config: everything the pipeline stages need.
#[derive(Debug, Clone)]
pub struct Resolved<'a> {
    pub cfg: &'a Config,
    pub dc: &'a Datacenter,
    pub netns: Option<String>,
    pub choice: BackendChoice,
    /// Short name of the UAPI socket link in `/run/wireguard` (userspace backend) and of the
    /// state file: unique per (netns, interface).
    pub alias: String,
    pub state_path: PathBuf,
    pub log_path: PathBuf,
}

impl<'a> Resolved<'a> {
    pub fn new(cfg: &'a Config, side: &Side) -> Result<Resolved<'a>> {
        let dc = cfg
            .datacenter(&side.name)
            .ok_or_else(|| Error::UnknownSide {
                name: side.name.clone(),
                known: cfg
                    .datacenters
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let netns = side.netns.clone().or_else(|| dc.netns.clone());
        let alias = alias(netns.as_deref(), &cfg.interface);
        Ok(Resolved {
            cfg,
            dc,
            choice: side.backend.unwrap_or(cfg.backend),
            state_path: side.state_dir.join(format!("{alias}.json")),
            log_path: side.state_dir.join(format!("{alias}.log")),
            netns,
            alias,
        })
    }

    pub fn ns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    pub fn iface(&self) -> &str {
        &self.cfg.interface
    }

    /// "wg0 in netns old-dc" / "wg0" for messages.
    pub fn where_(&self) -> String {
        match &self.netns {
            Some(ns) => format!(" in netns {ns}"),
            None => String::new(),
        }
    }
}

/// `tn` + 8 hex digits of a hash of (netns, interface): at most 10 bytes, a valid interface
/// name for `wireguard-control`, stable across runs.
pub fn alias(netns: Option<&str>, iface: &str) -> String {
    // FNV-1a, 64 bit: stable across Rust versions (unlike DefaultHasher).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in netns
        .unwrap_or("")
        .bytes()
        .chain([0u8])
        .chain(iface.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("tn{:08x}", (h ^ (h >> 32)) as u32)
}

/// What `up` created on a side. Written after the side effect, removed by `down`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideState {
    pub side: String,
    pub netns: Option<String>,
    pub interface: String,
    pub backend: Backend,
    /// The wireguard-go process (userspace backend).
    pub daemon: Option<DaemonInfo>,
}

pub fn read_state(path: &Path) -> Result<Option<SideState>> {
    match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::State {
                path: path.to_path_buf(),
                message: format!("unreadable ({e}); if no tunnel runs here, delete it"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::State {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

pub fn write_state(path: &Path, state: &SideState) -> Result<()> {
    let err = |e: std::io::Error| Error::State {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(state).expect("state serializes");
    fs::write(&tmp, text).map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// An exclusive `flock` on the state folder, held while a side is changed (`up`, `down`,
/// `rotate`) so two concurrent runs never start two daemons. Released on drop; leaves no file.
pub(crate) struct DirLock(#[allow(dead_code)] fs::File);

pub(crate) fn lock_dir(dir: &Path) -> Result<DirLock> {
    use std::os::fd::AsRawFd;
    let err = |e: std::io::Error| Error::State {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    fs::create_dir_all(dir).map_err(err)?;
    let f = fs::File::open(dir).map_err(err)?;
    // SAFETY: flock on a descriptor we own; blocks until the other holder is done.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(DirLock(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_is_short_stable_and_distinct() {
        let a = alias(Some("old-dc"), "wg0");
        assert_eq!(a, alias(Some("old-dc"), "wg0"));
        assert_ne!(a, alias(Some("new-dc"), "wg0"));
        assert_ne!(a, alias(None, "wg0"));
        assert!(a.len() <= 15 && a.starts_with("tn"));
    }
}

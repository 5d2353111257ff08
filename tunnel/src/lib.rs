//! WireGuard links between datacenters: config, keys, backends (kernel or userspace
//! `wireguard-go`), reconcile (`plan`/`up`/`down`) and health (`status`/`health`/`check`).
//!
//! # Layout
//! - [`config`]: the TOML file, validated into [`Config`]; errors name file and field.
//! - [`keys`]: key pairs on disk (`<name>.key` 0600, `<name>.pub`), permission check on load.
//! - [`side`]: [`Side`], the runtime options of one side (which datacenter, which network
//!   namespace, backend override, state folder) and the state file of what `up` created.
//! - [`netns`]: running commands and Rust closures inside a network namespace.
//! - [`ip`]: interface, addresses and routes through iproute2.
//! - [`daemon`]: the supervised `wireguard-go` process (started, checked and stopped by PID).
//! - [`backend`]: kernel vs userspace detection and the `wireguard-control` handle of a device.
//! - [`reconcile`]: desired vs actual → [`Plan`] (its [`Change`]s in `reconcile/changes.rs`);
//!   [`up`] applies it, [`down`] undoes `up`.
//! - [`mod@health`]: [`status`], [`health()`] (the cutover gate) and [`check`].
//! - [`rotate`](mod@rotate): coordinated key rotation; [`outage`] measures its interruption.
//!
//! # Using it from Rust
//! ```no_run
//! use tunnel::{Config, Side};
//! let cfg = Config::load("lab/tunnel.toml".as_ref())?;
//! let old = Side::new("old-dc").in_netns("lab-old");
//! tunnel::up(&cfg, &old)?;              // idempotent
//! let h = tunnel::health(&cfg, &old);   // never errors: unhealthy carries the reason
//! if !h.healthy { eprintln!("refusing cutover: {}", h.reason); }
//! tunnel::down(&cfg, &old)?;
//! # Ok::<(), tunnel::Error>(())
//! ```

pub mod backend;
pub mod cidr;
pub mod config;
pub mod daemon;
pub mod error;
pub mod health;
pub mod ip;
pub mod keys;
pub mod netns;
pub mod outage;
pub mod reconcile;
pub mod rotate;
pub mod side;
pub mod textfile;

pub use backend::Backend;
pub use cidr::Cidr;
pub use config::{BackendChoice, Config, Datacenter};
pub use error::{ConfigError, Error, Result};
pub use health::{
    check, health, health_quick, status, CheckOptions, CheckReport, Health, PeerStatus, Probe,
    Status,
};
pub use reconcile::{down, plan, up, Change, DownReport, Plan};
pub use rotate::{rotate, RotateReport};
pub use side::{Side, DEFAULT_STATE_DIR};

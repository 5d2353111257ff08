//! The staging lab: two datacenters on one machine (network namespaces) with real MariaDB,
//! nginx + php-fpm, HAProxy, Knot DNS, sshd and a WireGuard tunnel; scenario files for dry runs.
//!
//! # Layout
//! - [`lab`]: `up`, the order in which the lab is built; [`teardown`]: `down`, [`lab::LabGuard`].
//! - [`topology`]: namespaces, veth "internet", DC LANs, resolv.conf, mount namespaces.
//! - [`dc_services`]: MariaDB, php-fpm, nginx, HAProxy, sshd of one datacenter.
//! - [`sql_proxy`]: our `sql-proxy` daemon on old-dc's DB endpoint, MariaDB behind it;
//!   [`tools`]: finding the workspace binaries the lab runs (`sql-proxy`, `migrator`).
//! - [`dns`]: Knot with TSIG-only updates for the hosted zone.
//! - [`tunnel_link`]: the WireGuard link old-dc ↔ new-dc through the `tunnel` crate.
//! - [`sites`] and [`php_app`]: synthetic customer sites (files, databases, PHP code).
//! - [`secrets`]: passwords, TSIG and SSH keys (0600 files).
//! - [`lab_tls`]: `lab up --artifacts`: the lab CA, site certificates, HAProxy's crt-lists.
//! - [`state`]: the JSON state file the migrator reads; [`process`]: daemons by PID.
//! - [`supervise`]: `scenarios supervise`, which keeps `sql-proxy` running (restart on exit,
//!   backoff, start limit, child PID in a status file), like systemd in production.
//! - [`status`]: `lab status` probes; [`inventory`]: planner-compatible inventory files.
//! - [`traffic`]: the bounded traffic generator (runs in the `client` namespace).
//!   Every HTTP request of the lab (the traffic, `lab status` probes, the proxy's admin API)
//!   goes through `drivers::http`; a probe from a namespace makes its connection on a thread
//!   that has joined it ([`topology::in_netns`]).
//! - [`check`]: proves zero lost writes and counts failures from a traffic log.
//! - [`cron_lab`]: `lab up --artifacts`, each site's cron job and the DCs' cron daemons
//!   ([`crond`], `scenarios crond`).
//! - [`faults`]: faults injected during a scenario (HAProxy maintenance, SQL server pause).
//! - [`scenario`]: `scenario.toml` + `expect.toml`, `scenarios run <name>`.
//! - [`migration`]: the `[migration]` a scenario runs with the real `migrator` (wave, rollback,
//!   crash-resume, tunnel flap); [`serving`]: which side serves each site, read from the
//!   proxy, HAProxy and DNS.

pub mod check;
pub mod cron_lab;
pub mod crond;
pub mod dc_services;
pub mod dns;
pub mod error;
pub mod faults;
pub mod galera;
pub mod inventory;
pub mod lab;
pub mod lab_tls;
pub mod migration;
pub mod php_app;
pub mod process;
pub mod scenario;
pub mod secrets;
pub mod serving;
pub mod sites;
pub mod sql_proxy;
pub mod state;
pub mod status;
pub mod supervise;
pub mod teardown;
pub mod tools;
pub mod topology;
pub mod traffic;
pub mod tunnel_link;
pub mod units;
pub mod web_artifacts;

pub use error::{LabError, Result};
pub use lab::{LabConfig, LabGuard};
pub use state::LabState;

//! The outside systems a cutover touches, each behind a small trait, so the engine runs the same
//! code for real ([`crate::real_systems`]) and in a dry run or a test
//! ([`crate::dry_run::Recorder`], which prints or records every action and does none). The
//! load balancer and hosted DNS traits are `drivers`' ([`LoadBalancer`], [`Dns`]); so is the
//! SQL proxy's ([`drivers::proxy::SqlProxy`]), which the engine sees through [`ProxyControl`]
//! (its three calls, errors as [`SystemError`]s).

use crate::site_spec::SiteSpec;
use drivers::dns::Dns;
use drivers::lb::LoadBalancer;
use drivers::proxy::SqlProxy;
use std::sync::Arc;

/// Which datacenter an action concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dc {
    Old,
    New,
}

impl std::fmt::Display for Dc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dc::Old => "old-dc",
            Dc::New => "new-dc",
        })
    }
}

/// A failure of an outside system, with the system, the side and whether retrying may help.
#[derive(Debug, thiserror::Error)]
#[error("{system} ({dc}): {message}")]
pub struct SystemError {
    pub system: &'static str,
    pub dc: Dc,
    pub message: String,
    pub retryable: bool,
}

impl SystemError {
    pub fn new(system: &'static str, dc: Dc, message: impl Into<String>) -> SystemError {
        SystemError {
            system,
            dc,
            message: message.into(),
            retryable: false,
        }
    }
    /// A hosted-DNS failure (`drivers::dns`); its message names the server.
    pub fn from_dns(dc: Dc, e: drivers::dns::DnsError) -> SystemError {
        SystemError {
            system: "dns",
            dc,
            retryable: e.is_retryable(),
            message: e.to_string(),
        }
    }
    /// An SQL proxy admin API failure (`drivers::proxy`): the proxy serves the old DC's
    /// database endpoints; retryable when it did not answer.
    pub fn from_proxy(e: drivers::proxy::ProxyError) -> SystemError {
        SystemError {
            system: "sql-proxy",
            dc: Dc::Old,
            retryable: e.is_retryable(),
            message: e.to_string(),
        }
    }
    pub fn from_driver(system: &'static str, dc: Dc, e: drivers::DriverError) -> SystemError {
        SystemError {
            system,
            dc,
            retryable: e.is_retryable(),
            message: e.to_string(),
        }
    }
}

pub type SysResult<T> = Result<T, SystemError>;

/// A database's mode as the SQL proxy has it: the proxy's own type, so a new mode there is a
/// compile error here rather than a string nobody matches.
pub use drivers::proxy::Mode;

/// The proxy's view of one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub side: String,
    pub mode: Mode,
}

impl Route {
    pub fn paused(&self) -> bool {
        self.mode == Mode::Paused
    }
}

/// The SQL proxy as the cutover engine uses it. Every `drivers::proxy::SqlProxy` is one (its
/// errors become the old DC's `sql-proxy` [`SystemError`]s); the dry run records instead.
pub trait ProxyControl: Send + Sync {
    fn route(&self, db: &str) -> SysResult<Route>;
    /// Holds new statements of `db` and returns once nothing runs on it.
    fn pause(&self, db: &str) -> SysResult<()>;
    /// Ends the pause, on `side` when given; returns the pause clients saw (ms).
    fn resume(&self, db: &str, side: Option<&str>) -> SysResult<f64>;
}

impl<P: SqlProxy + ?Sized> ProxyControl for P {
    fn route(&self, db: &str) -> SysResult<Route> {
        let r = SqlProxy::route(self, db).map_err(SystemError::from_proxy)?;
        Ok(Route {
            side: r.side,
            mode: r.mode,
        })
    }
    fn pause(&self, db: &str) -> SysResult<()> {
        SqlProxy::pause(self, db).map_err(SystemError::from_proxy)
    }
    fn resume(&self, db: &str, side: Option<&str>) -> SysResult<f64> {
        SqlProxy::resume(self, db, side).map_err(SystemError::from_proxy)
    }
}

/// Why the tunnel may not carry a site's traffic now.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// Its configuration could not be read: nothing was probed.
    #[error("tunnel config: {0}")]
    Config(#[from] tunnel::ConfigError),
    /// The probes found it unfit; the tunnel's own reason (a peer that does not answer, loss).
    #[error("{0}")]
    Unhealthy(String),
}

/// Whether the tunnel is fit to carry a site's traffic.
pub trait TunnelGate: Send + Sync {
    /// `Ok(reason)` when healthy (what the probes saw), the reason not to use it otherwise.
    fn check(&self) -> Result<String, TunnelError>;
    /// A cheap liveness confirmation right after a passing `check`, asked inside a freeze
    /// where every millisecond is downtime. Defaults to the full check.
    fn confirm(&self) -> Result<String, TunnelError> {
        self.check()
    }
}

/// Direction of a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// old → new (migration).
    Forward,
    /// new → old (rollback).
    Back,
}

/// Data movement and destination preparation (files, databases, web config).
pub trait DataMover: Send + Sync {
    /// Destination homes, databases and users (same hash), compat paths, new-side web config.
    /// Idempotent.
    fn prepare(&self, spec: &SiteSpec) -> SysResult<()>;
    /// One file pass over every home; returns bytes moved.
    fn sync_files(&self, spec: &SiteSpec, dir: Direction) -> SysResult<u64>;
    /// Copies `dbs` (full, or only changed tables with `delta`); returns bytes moved.
    fn copy_dbs(
        &self,
        spec: &SiteSpec,
        dbs: &[String],
        dir: Direction,
        delta: bool,
    ) -> SysResult<u64>;
    /// The freeze's last copy of `dbs` (old → new, writes paused and drained). By default a
    /// delta copy; a mover that follows the databases by change capture applies the tail of
    /// the changes instead ([`crate::db::follow::tail`]).
    fn tail_dbs(&self, spec: &SiteSpec, dbs: &[String]) -> SysResult<u64> {
        self.copy_dbs(spec, dbs, Direction::Forward, true)
    }
    /// Every difference between the sides (empty = equal), inside the freeze. A mover may
    /// leave databases it followed by capture to [`DataMover::verify_after_switch`], pinning
    /// the new side's state here.
    fn verify(&self, spec: &SiteSpec, dbs: &[String]) -> SysResult<Vec<String>>;
    /// After the switch: the differences between the old side (no longer written) and the new
    /// side as pinned inside the freeze. By default nothing is left to verify.
    fn verify_after_switch(&self, _spec: &SiteSpec) -> SysResult<Vec<String>> {
        Ok(Vec::new())
    }
    /// Whether [`DataMover::verify_after_switch`] has anything to verify for the site (the
    /// phase is journaled only then).
    fn verifies_after_switch(&self, _spec: &SiteSpec) -> bool {
        false
    }
    /// A commit point's move of the site's artifacts ([`crate::artifacts::activate`]): enabled
    /// on `owner`'s side, disabled on the other. Idempotent; by default nothing to move.
    fn activate_artifacts(
        &self,
        _spec: &SiteSpec,
        _owner: crate::artifacts::fence::Side,
    ) -> SysResult<()> {
        Ok(())
    }
    /// Before a freeze of a site with cron jobs: the side about to gain the site enabled
    /// ([`crate::artifacts::activate`], with its reloads), the other left as it is. Its cron then
    /// starts the jobs' runs at every due time too, each refused by the owner token until the
    /// commit point gives it the site, so a slot due during the freeze is started on both
    /// sides, waits for the unfreeze and runs once on the owner (enabled only at the commit
    /// point, a slot due between the freeze and that point was started by the losing side
    /// alone, which then refused it: the run was lost). Idempotent; by default nothing.
    fn arm_artifacts(
        &self,
        _spec: &SiteSpec,
        _side: crate::artifacts::fence::Side,
    ) -> SysResult<()> {
        Ok(())
    }
    /// With `artifacts.verify_served`, after the switch: how the new web server's answers
    /// differ from the site's rules and PHP settings ([`crate::artifacts::served_diffs`]),
    /// one line each. By default nothing to compare.
    fn served_artifacts(&self, _spec: &SiteSpec) -> SysResult<Vec<String>> {
        Ok(Vec::new())
    }
    /// A fingerprint of the site's HTTP answer (status and body digest).
    fn fingerprint(&self, spec: &SiteSpec) -> SysResult<Option<String>>;
}

/// Everything the engine needs for one site.
#[derive(Clone)]
pub struct Systems {
    pub lb_old: Arc<dyn LoadBalancer>,
    pub lb_new: Arc<dyn LoadBalancer>,
    pub dns: Option<Arc<dyn Dns>>,
    pub proxy: Arc<dyn ProxyControl>,
    pub tunnel: Option<Arc<dyn TunnelGate>>,
    pub data: Arc<dyn DataMover>,
}

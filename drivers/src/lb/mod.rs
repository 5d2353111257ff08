//! The load balancer in front of a site's web servers, behind [`LoadBalancer`]: what the
//! cutover asks of it (point a server at an address, drain/maint/ready, weight), every change
//! read back before it counts. One file per implementation:
//! - [`haproxy`]: HAProxy's runtime API over its admin socket ([`Haproxy`]).

pub mod haproxy;

pub use haproxy::Haproxy;

use serde::Serialize;
use std::net::SocketAddr;

use crate::Result;

/// Administrative state of a server, as the runtime API sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Takes traffic.
    Ready,
    /// Finishes open sessions, takes no new ones.
    Drain,
    /// Takes nothing: the backend answers 503 when no other server is left.
    Maint,
}

impl AdminState {
    pub fn keyword(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

/// A server's state as read back from `show servers state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerState {
    pub backend: String,
    pub server: String,
    pub addr: SocketAddr,
    pub admin: AdminState,
    /// User weight (`srv_uweight`).
    pub weight: u32,
    /// Operational state number (`srv_op_state`: 0 stopped, 1 starting, 2 running, 3 stopping).
    pub op_state: u8,
}

/// What the cutover needs from a load balancer. Implementations verify each change by reading
/// the state back and return [`DriverError::NotApplied`](crate::DriverError::NotApplied) when it did not take.
pub trait LoadBalancer: Send + Sync {
    /// Reads one server's state.
    fn server_state(&self, backend: &str, server: &str) -> Result<ServerState>;
    /// Points a server at a new address and port, then reads it back.
    fn set_server_addr(&self, backend: &str, server: &str, addr: SocketAddr) -> Result<()>;
    /// Sets the administrative state, then reads it back.
    fn set_server_admin(&self, backend: &str, server: &str, state: AdminState) -> Result<()>;
    /// Sets the weight, then reads it back.
    fn set_server_weight(&self, backend: &str, server: &str, weight: u32) -> Result<()>;
    /// Requests the server is handling or has queued now (a freeze waits for 0 after putting
    /// it in maintenance). 0 when the balancer cannot tell.
    fn in_flight(&self, _backend: &str, _server: &str) -> Result<u64> {
        Ok(0)
    }
}

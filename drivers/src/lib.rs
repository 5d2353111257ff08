//! Cutover drivers for the outside systems a site's traffic passes through, each behind a small
//! interface so the cutover engine can run them for real or print them in a dry run.
//!
//! Layout:
//! - [`haproxy`]: the [`LoadBalancer`](haproxy::LoadBalancer) trait and its HAProxy runtime API
//!   implementation (admin socket): point a server at a new address, drain/maint/ready, weight;
//!   every change is read back before it counts.
//! - [`dns`]: RFC 2136 updates signed with TSIG ([`DnsUpdater`](dns::DnsUpdater)): atomic
//!   in-place replacement of a name's address set, TTL changes, and read-back on every
//!   authoritative server.

pub mod dns;
pub mod haproxy;

/// What went wrong talking to an outside system. `Rejected` carries the system's own answer;
/// `NotApplied` means the system accepted the change but reading it back disagrees.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{system} refused `{command}`: {answer}")]
    Rejected {
        system: &'static str,
        command: String,
        answer: String,
    },
    #[error("change not applied: {0}")]
    NotApplied(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl DriverError {
    /// Whether trying the same call again may help (transport trouble, not a refusal).
    pub fn is_retryable(&self) -> bool {
        matches!(self, DriverError::Io { .. } | DriverError::NotApplied(_))
    }
}

pub type Result<T> = std::result::Result<T, DriverError>;

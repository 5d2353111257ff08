//! Drivers for the outside systems a cutover touches. Each system sits behind a small trait
//! owned here, so the cutover engine runs the same code for real, in a dry run (which prints
//! every action) and in tests (which record them); each implementation is one file.
//!
//! Layout:
//! - [`lb`]: the load balancer. [`lb::LoadBalancer`] (point a server at an address,
//!   drain/maint/ready, weight; every change read back) and its implementation
//!   [`lb::haproxy`] (HAProxy runtime API on the admin socket). Errors: [`DriverError`].
//! - [`dns`]: hosted DNS. [`dns::Dns`] (current set, TTL lowering, in-place replacement
//!   confirmed on every authoritative server), the site spec's section [`dns::DnsConfig`]
//!   (an enum of providers, tagged `provider`), and one file per provider: [`dns::rfc2136`]
//!   (RFC 2136 updates signed with TSIG) and [`dns::powerdns`] (PowerDNS HTTP API). The
//!   confirmation queries live in [`dns::probe`]. Errors: [`dns::DnsError`] (which server,
//!   whether a retry may help).
//! - [`proxy`]: the SQL proxy in front of the old databases. [`proxy::SqlProxy`] (routes, a
//!   database's side and [`proxy::Mode`], pause and resume) and its implementation
//!   [`proxy::http`] (our `sql-proxy` daemon's admin API: bearer token, a restarting proxy
//!   waited for). Errors: [`proxy::ProxyError`] (refused with a status, unreachable, bad answer).
//! - [`http`]: the one HTTP client of the workspace ([`http::HttpClient`], `ureq`): outside
//!   systems' APIs, the site fingerprint, the lab's probes and traffic, test clients. Timeouts,
//!   JSON or any body, per-request headers (`Host`), secret headers never shown, typed errors
//!   with status and body, refused connections told apart.
//! - [`secret`]: secret files (keys, tokens): mode 0600, never shown.
//! - [`tls_probe`]: the certificate chain a TLS server presents for a name (SNI), captured
//!   for the caller to judge (the new VIP's certificate at verify, the lab's checks).
//!
//! How each driver is tested against the real thing, and how to add one: `drivers/README.md`.

pub mod dns;
pub mod http;
pub mod lb;
pub mod proxy;
pub mod secret;
pub mod tls_probe;

/// What went wrong talking to the load balancer. `Rejected` carries the system's own answer;
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

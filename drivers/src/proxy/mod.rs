//! The SQL proxy in front of the old datacenter's databases, behind [`SqlProxy`]: its routes
//! (which side each database is served from, and its [`Mode`]), the pause that holds a
//! database's statements during a freeze, and the resume that ends it, on a new side if asked.
//! One file per implementation:
//! - [`http`]: our `sql-proxy` daemon's admin API over HTTP ([`HttpProxy`]): bearer token from
//!   a 0600 file, a proxy restarting under its supervisor waited for.
//!
//! The route check and its repair in the migrator use the whole trait; the cutover engine uses
//! [`SqlProxy::route`], [`SqlProxy::pause`] and [`SqlProxy::resume`] through its own
//! `ProxyControl` view (its errors become the engine's).

pub mod http;

pub use http::HttpProxy;
/// A database's mode as the proxy has it: the proxy's own type, so a new mode there is a
/// compile error in every client rather than a string nobody matches.
pub use sql_proxy::mode::Mode;

use serde::{Deserialize, Serialize};

/// The proxy's view of one database (an element of `GET /routes`). Unknown fields are ignored;
/// `sessions` and `epoch` are absent from older proxies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    #[serde(default)]
    pub database: String,
    /// The side the database is served from (the proxy's name for it: `old`, `new`).
    pub side: String,
    pub mode: Mode,
    /// Client sessions on the database now.
    #[serde(default)]
    pub sessions: Option<u64>,
    /// Raised by every committed route change (a proxy with a route store).
    #[serde(default)]
    pub epoch: Option<u64>,
}

impl Route {
    pub fn paused(&self) -> bool {
        self.mode == Mode::Paused
    }
}

/// A failed admin API call: not answered, refused with a status, or answered with something
/// that is not what the call returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The client could not be set up (the token file), found before anything was sent.
    #[error("{0}")]
    Invalid(String),
    /// Not answered: refused for longer than the client waits for a restart, a timeout, a
    /// reset connection.
    #[error("{0}")]
    Unreachable(String),
    /// Answered with an error status (`409`: refused, e.g. the database is paused; `503`).
    #[error("{call}: HTTP {status}: {message}")]
    Refused {
        call: String,
        status: u16,
        /// The proxy's `error` text, or its whole answer when it gave none.
        message: String,
    },
    /// Answered 200 with something that is not what the call returns.
    #[error("{call}: unexpected answer: {message}")]
    BadAnswer { call: String, message: String },
}

impl ProxyError {
    /// Whether the same call may succeed later: only when the proxy did not answer. A refusal
    /// or an answer we cannot read needs a person (or the next round of a check).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProxyError::Unreachable(_))
    }
}

pub type Result<T> = std::result::Result<T, ProxyError>;

/// What the migrator asks of the SQL proxy. Every call is one admin API request; a change
/// returns what the proxy has now.
///
/// Several proxy instances sharing their routes (a `[fleet]`, see sql-proxy/README.md) are
/// driven through any one of them with the same calls: a change answers only once every live
/// instance acknowledged it (a pause: held and drained everywhere; a resume: the new side
/// served everywhere), within about one lease of an instance that stopped answering. Not
/// acknowledged in time: [`ProxyError::Refused`] with status 504 (a pause is undone then, a
/// resume stays committed). The single-instance proxy answers the same calls as before.
pub trait SqlProxy: Send + Sync {
    /// Every database the proxy routes (`GET /routes`).
    fn routes(&self) -> Result<Vec<Route>>;
    /// One database's route (`GET /routes/{db}`); a proxy without a stored route answers its
    /// default side.
    fn route(&self, db: &str) -> Result<Route>;
    /// Serves `db` from `side` (`PUT /routes/{db}`); refused (409) while it is paused.
    fn set_side(&self, db: &str, side: &str) -> Result<Route>;
    /// Holds new statements of `db` and returns once nothing runs on it
    /// (`POST /routes/{db}/pause`).
    fn pause(&self, db: &str) -> Result<()>;
    /// Ends the pause, on `side` when given (`POST /routes/{db}/resume`); returns how long
    /// clients were held (ms).
    fn resume(&self, db: &str, side: Option<&str>) -> Result<f64>;
}

//! The lab's error type: which step failed, on which side, with the detail an operator needs.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong while building, probing or tearing down the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A file or directory operation failed.
    #[error("{what} ({path}): {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An external command (ip, mariadb, keymgr, ...) could not start or exited non-zero.
    #[error("command `{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// A service did not answer its readiness probe in time.
    #[error(
        "{service} in {namespace} did not become ready at {address} within {secs} s: {detail}"
    )]
    NotReady {
        service: String,
        namespace: String,
        address: String,
        secs: u64,
        detail: String,
    },
    /// The JSON state file could not be read or written.
    #[error("state file {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A scenario or expectation file is malformed.
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    /// No lab with this name is recorded.
    #[error("lab `{name}` is not up (no state file at {path})")]
    NotUp { name: String, path: PathBuf },
    /// The lab needs root (namespaces, mounts, daemons).
    #[error("the lab must run as root (network namespaces, mounts, daemons)")]
    NotRoot,
    /// Joining a network namespace failed.
    #[error("entering network namespace {namespace}: {source}")]
    Netns {
        namespace: String,
        #[source]
        source: nix::Error,
    },
    /// A query against a lab database failed.
    #[error("database on {side} ({what}): {source}")]
    Sql {
        side: String,
        what: String,
        #[source]
        source: mysql_async::Error,
    },
    /// A worker thread of `lab up` panicked (a bug, reported instead of propagated).
    #[error("internal: {0}")]
    Internal(String),
    /// The tunnel between the datacenters could not be brought up.
    #[error("tunnel between old-dc and new-dc: {0}")]
    Tunnel(String),
    /// A TCP connection from inside a namespace failed (nothing listens, no route).
    #[error("connect to {addr} from {namespace}: {source}")]
    Connect {
        namespace: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// An HTTP exchange with a lab service failed: no answer, an error status, not the JSON
    /// expected. It names the method and the URL.
    #[error(transparent)]
    Http(#[from] drivers::http::HttpError),
    /// A daemon the lab started has exited; its log says why.
    #[error("{service} (pid {pid}) exited: see {}", log.display())]
    Exited {
        service: String,
        pid: i32,
        log: PathBuf,
    },
    /// A supervised daemon has no running child yet.
    #[error("{supervisor} has not started {service} yet")]
    NotStarted {
        supervisor: &'static str,
        service: &'static str,
    },
    /// The lab was built without what the call needs.
    #[error("the lab has no {0}")]
    Missing(&'static str),
}

impl LabError {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| LabError::Io { what, path, source }
    }
}

/// Result alias for the lab.
pub type Result<T> = std::result::Result<T, LabError>;

//! The lab's error type: which step failed, on which side, with the detail an operator needs.

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

//! The one error type of the library. Every variant says what failed and where (file, field,
//! namespace, command); `retryable()` says whether running the same call again may help.

use std::path::PathBuf;

/// A configuration problem, always naming the file and the field (`datacenter[1].address`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, unknown keys or wrong types; the message carries line and column.
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    /// A value that parsed but is not acceptable.
    #[error("{file}: field `{field}`: {message}")]
    Invalid {
        file: PathBuf,
        field: String,
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("side `{name}` is not a datacenter of the config (known: {known})")]
    UnknownSide { name: String, known: String },

    #[error("private key {path} has mode {mode:04o}; it must not be readable or writable by group or others (run: chmod 600 {path})")]
    KeyPermissions { path: PathBuf, mode: u32 },

    #[error("key file {path}: {message}")]
    Key { path: PathBuf, message: String },

    #[error("key file {path}: {source}")]
    KeyIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("network namespace `{0}` does not exist (no /run/netns/{0})")]
    NetnsMissing(String),

    #[error("entering network namespace `{netns}`: {source}")]
    Netns {
        netns: String,
        #[source]
        source: std::io::Error,
    },

    #[error("kernel WireGuard backend requested but this kernel has no wireguard module (/sys/module/wireguard missing); use backend = \"userspace\"")]
    KernelUnavailable,

    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },

    #[error("unexpected output from `{command}`: {message}")]
    Output { command: String, message: String },

    #[error("wireguard-go for {interface} did not come up: {message}")]
    DaemonStart { interface: String, message: String },

    #[error("WireGuard configuration interface (UAPI) of {interface}: {source}")]
    Uapi {
        interface: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "interface {interface} exists{where_} but was not created by tunnel; refusing to touch it"
    )]
    ForeignInterface { interface: String, where_: String },

    #[error("UDP port {port} (listen_port){where_} is already in use; stop its user or change listen_port")]
    PortInUse { port: u16, where_: String },

    #[error("this side is up with the {running} backend, {wanted} was asked for; run `tunnel down` first, then `tunnel up`")]
    BackendChanged {
        running: crate::backend::Backend,
        wanted: crate::backend::Backend,
    },

    #[error("state file {path}: {message}")]
    State { path: PathBuf, message: String },

    #[error("key rotation: {0}")]
    Rotate(String),
}

impl Error {
    /// Whether calling again (after a pause) may succeed without operator action.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Error::Command { .. } | Error::DaemonStart { .. } | Error::Uapi { .. }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

//! Pre-flight (issue 21): before a wave, which sites will break on the new platform, and why.
//!
//! The compat paths and the SQL proxy cover what the platform knows about: each site's own
//! home path, the old DB host names and IPs the proxy listens on. Customers' code also holds
//! raw IPs of other old servers, unix sockets, paths on other filers, PHP functions the new
//! runtime removed; their databases may have accounts the proxy cannot authenticate, tables
//! that make the freeze slow, source servers whose binary log cannot be followed. Pre-flight
//! finds those per site, gives each a verdict (`ok`, `warn`, `blocked`) with every finding and
//! its fix, and a fleet summary by reason.
//!
//! Layout (one file per stage):
//! - this file: the types every stage shares ([`Finding`], [`Severity`], [`Where`]) and
//!   [`PreflightError`];
//! - `config.rs`: [`PreflightConfig`], the operator's settings (TOML): destination PHP
//!   version, the old platform's networks and domains, what its listeners serve, file limits,
//!   the freeze budget;
//! - `rules.rs` + `rules.toml`: the versioned rule table (data, compiled in): PHP constructs
//!   removed per PHP version, unix-socket DB connections, `.htaccess` directives nginx ignores;
//! - `code.rs`: one file's bytes against the rules and the old platform's names (IPs, host
//!   names, absolute paths), each match placed at its line;
//! - `walk.rs`: a home walked in parallel (rayon over directories), media and binaries
//!   skipped by extension and by a NUL in the first 8 KiB, large files skipped;
//! - `db.rs`: a database and its server read over MariaDB (accounts' authentication
//!   plugins, keys, engines, definers, sizes, the binary log's settings);
//! - `write_rate.rs`: each database's write rate measured on its server's binary log (two
//!   positions some seconds apart, the events between attributed to their database);
//! - `verdict.rs`: a site's verdict and predicted freeze, the fleet summary;
//! - `report.rs`: JSON lines and the static HTML report (every value escaped);
//! - `run.rs`: a run over many sites (homes in parallel, then servers and databases, then
//!   reports saved one by one), and the inventory's view of the fleet;
//! - `store.rs`: results kept in the journal (table `preflight_sites`), so a rerun scans
//!   only homes whose newest mtime changed and a killed run resumes where it stopped.

pub mod code;
pub mod config;
pub mod db;
pub mod report;
pub mod rules;
pub mod run;
pub mod store;
pub mod verdict;
pub mod walk;
pub mod write_rate;

pub use config::PreflightConfig;
pub use verdict::{SiteReport, Verdict};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How bad a finding is. Ordered: the worst finding of a site is its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Moves, with a note (a longer freeze, a setting the new tier ignores).
    Warn,
    /// Will break after the move: fix first, or keep the site out of the wave.
    Blocked,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warn => "warn",
            Severity::Blocked => "blocked",
        }
    }
}

/// Where a finding is: a line of a file, or a database object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Where {
    /// A line of a file under the site's home (path relative to the home).
    File { path: String, line: u64 },
    /// A database object: `db`, `db.table`, `'user'@'host'`, `routine db.name`.
    Db { object: String },
    /// A source SQL server (its id in the inventory).
    Server { server: String },
}

impl std::fmt::Display for Where {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Where::File { path, line } => write!(f, "{path}:{line}"),
            Where::Db { object } => f.write_str(object),
            Where::Server { server } => write!(f, "server {server}"),
        }
    }
}

/// One thing that will break, or will move with a note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule's stable id (`php.mysql_ext`, `net.old_ip`, `db.no_pk` ...): the fleet summary
    /// groups by it.
    pub rule: String,
    pub severity: Severity,
    #[serde(rename = "where")]
    pub at: Where,
    /// What was found, for the operator (the matched text, a plugin name ...).
    pub found: String,
    /// What to do about it.
    pub fix: String,
}

/// Errors of a pre-flight run, each naming its file, line or server.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A settings file or the rule table that does not parse (the message names the line).
    #[error("{file}: {message}")]
    Config { file: String, message: String },
    /// A rule whose pattern does not compile.
    #[error("{file}: rule {rule}: field `{field}`: {message}")]
    Rule {
        file: String,
        rule: String,
        field: &'static str,
        message: String,
    },
    #[error("SQL server {server}: {what}: {source}")]
    Db {
        server: String,
        what: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
}

pub type Result<T> = std::result::Result<T, PreflightError>;

//! The journal: the source of truth of a migration (docs/ARCHITECTURE.md §4, §8).
//!
//! What it holds:
//! - the plan reference (which plan file, which version) the journal was started for;
//! - each site's [`SiteState`], the persisted model of the per-site state machine;
//! - steps (phases): one row per step, written *before* it runs (`started`) and updated *after*
//!   (`done` with bytes and checksum, or `failed` with the error);
//! - checkpoints: small serde structs of committed progress (for example "table `orders` copied
//!   up to primary key 41200"), written only after the side effect they describe committed.
//!   Resume reads exactly those, never live state.
//!
//! Layout:
//! - this file: the [`JournalStore`] trait, the types that cross it and [`JournalError`];
//! - `sql.rs`: [`SqlConn`], one connection to the journal's database for its other tables
//!   (the wave's controls, status and events, route checks, the dashboard's summary), which
//!   both backends implement: those readers and writers are one code path for both;
//! - `sqlite/`: [`SqliteJournal`], one file in WAL mode, the embedded default (the only place
//!   that uses rusqlite), and its [`SqliteSql`];
//! - `mariadb/`: [`MariaDbJournal`] and its [`MariaDbSql`], InnoDB tables in one database of a MariaDB server or
//!   Galera cluster that many migrator processes share (issue 17). Same semantics: every write
//!   is committed when the call returns, [`JournalStore::swap_checkpoint_raw`] is an atomic
//!   compare-and-swap against every other connection, and the schema carries a version;
//! - `location.rs`: [`JournalLocation`], what `--journal` names (a file path, or a
//!   `mysql://`/`mariadb://` URL whose password comes from a 0600 file, never from the URL),
//!   and [`open_journal`], which opens either behind the trait;
//! - `suite.rs` (tests only): the cases every backend must pass; `tests.rs` runs them on
//!   SQLite, `tests/journal_backends.rs` on a real MariaDB server; `suite_store.rs` the same
//!   for the tables beyond the trait (controls, route checks, the dashboard's summary, the
//!   fleet's claims), run by `store_tests.rs` and the same integration test.
//!
//! Both backends version their schema (append-only migrations applied at open, a journal
//! newer than this migrator refused); every command takes `--journal FILE|URL`.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

mod location;
mod mariadb;
pub mod sql;
mod sqlite;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod suite;
#[cfg(test)]
mod tests;

pub use location::{open_journal, JournalLocation, LocationError, MariaDbTarget};
pub use location::{open_journal_at, open_sql, open_sql_at};
pub use mariadb::{MariaDbJournal, MariaDbSql, SCHEMA_VERSION as MARIADB_SCHEMA_VERSION};
pub use sql::{Dialect, SqlConn, SqlRow, SqlValue};
pub use sqlite::{SqliteJournal, SqliteSql, SCHEMA_VERSION as SQLITE_SCHEMA_VERSION};

/// Errors of the journal, each naming the journal: its file, or `mysql://host:port/db` for
/// a MariaDB journal (never a password).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The `--journal` value itself (a bad URL, an unreadable password file).
    #[error(transparent)]
    Location(#[from] LocationError),
    #[error("journal {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("journal {journal}: {source}")]
    MariaDb {
        journal: String,
        #[source]
        source: mysql_async::Error,
    },
    /// The journal's thread (MariaDB) could not start, or its runtime could not be built.
    #[error("journal {journal}: starting the journal's connection thread: {source}")]
    Thread {
        journal: String,
        #[source]
        source: std::io::Error,
    },
    /// A MariaDB journal's connection settings name no database.
    #[error("journal {journal}: the URL names no database (mysql://user@host:port/DATABASE)")]
    NoDatabase { journal: String },
    /// The journal's thread is gone (it panicked): nothing more can be written.
    #[error("journal {journal}: the journal's connection thread stopped")]
    Stopped { journal: String },
    /// A value read back is not of the type its column should hold (a damaged journal).
    #[error("journal {journal}: {what} does not read back: {reason}")]
    BadValue {
        journal: String,
        what: &'static str,
        reason: String,
    },
    #[error(
        "journal {journal}: schema version {found} is newer than this migrator's \
         ({supported}); use a migrator at least as new as the one that wrote it"
    )]
    SchemaTooNew {
        journal: String,
        found: u32,
        supported: u32,
    },
    #[error(
        "journal {journal}: checkpoint {scope}/{key} is not valid JSON for this version: {source}"
    )]
    Checkpoint {
        journal: String,
        scope: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "journal {journal}: site {site} has unknown state {state:?} (written by a newer migrator?)"
    )]
    UnknownState {
        journal: String,
        site: String,
        state: String,
    },
    #[error("journal {journal}: step {id} does not exist")]
    NoSuchStep { journal: String, id: i64 },
}

impl JournalError {
    /// The server rolled the transaction back for a deadlock or a Galera certification
    /// conflict (another node committed a conflicting write first): running the whole
    /// transaction again may succeed. (The connection thread retries single statements
    /// itself; a transaction the caller opened is the caller's to redo.)
    pub fn is_conflict(&self) -> bool {
        const ER_LOCK_DEADLOCK: u16 = 1213;
        matches!(
            self,
            JournalError::MariaDb {
                source: mysql_async::Error::Server(e),
                ..
            } if e.code == ER_LOCK_DEADLOCK
        )
    }
}

pub type Result<T> = std::result::Result<T, JournalError>;

/// A state name read back from a journal, or the error naming the journal, site and text.
pub(crate) fn parse_state(journal: &str, site: &str, state: String) -> Result<SiteState> {
    state.parse().map_err(|_| JournalError::UnknownState {
        journal: journal.to_string(),
        site: site.to_string(),
        state,
    })
}

/// The per-site state machine of docs/ARCHITECTURE.md §4. Transitions are driven by the cutover
/// engine; the journal only persists the state.
///
/// Wherever a state leaves the process (the journal's `sites` table, reports, the wave's
/// status, the dashboard's JSON) it is written by its stable name, [`SiteState::as_str`]:
/// serde, [`std::fmt::Display`] and both backends use that name, and reading one back
/// ([`std::str::FromStr`], serde, the backends) refuses an unknown name with an error that
/// names it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SiteState {
    #[default]
    Planned,
    Prepared,
    Synced,
    Frozen,
    FinalSynced,
    Verified,
    Switched,
    Live,
    Finalized,
    /// Failed before `switched`: the site was put back on the old side.
    Aborted,
    /// A step failed and needs an operator; the error is in the step's row.
    Failed,
    /// Rolled back to the old side after `switched`.
    RolledBack,
}

impl SiteState {
    pub const ALL: [SiteState; 12] = [
        SiteState::Planned,
        SiteState::Prepared,
        SiteState::Synced,
        SiteState::Frozen,
        SiteState::FinalSynced,
        SiteState::Verified,
        SiteState::Switched,
        SiteState::Live,
        SiteState::Finalized,
        SiteState::Aborted,
        SiteState::Failed,
        SiteState::RolledBack,
    ];

    /// The name stored in the journal (stable across versions).
    pub fn as_str(self) -> &'static str {
        match self {
            SiteState::Planned => "planned",
            SiteState::Prepared => "prepared",
            SiteState::Synced => "synced",
            SiteState::Frozen => "frozen",
            SiteState::FinalSynced => "final_synced",
            SiteState::Verified => "verified",
            SiteState::Switched => "switched",
            SiteState::Live => "live",
            SiteState::Finalized => "finalized",
            SiteState::Aborted => "aborted",
            SiteState::Failed => "failed",
            SiteState::RolledBack => "rolled_back",
        }
    }
}

/// A state name this migrator does not know (a damaged journal, or one written by a newer
/// migrator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSiteState(pub String);

impl std::fmt::Display for UnknownSiteState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown site state {:?} (expected one of ", self.0)?;
        for (i, st) in SiteState::ALL.iter().enumerate() {
            f.write_str(if i == 0 { "" } else { ", " })?;
            f.write_str(st.as_str())?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for UnknownSiteState {}

impl std::str::FromStr for SiteState {
    type Err = UnknownSiteState;

    fn from_str(s: &str) -> std::result::Result<SiteState, UnknownSiteState> {
        SiteState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownSiteState(s.to_string()))
    }
}

impl std::fmt::Display for SiteState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a step ended, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Recorded before the side effect; if a journal still says `started` on resume, the
    /// migrator was killed during the step.
    Started,
    Done,
    Failed,
}

impl StepStatus {
    fn as_str(self) -> &'static str {
        match self {
            StepStatus::Started => "started",
            StepStatus::Done => "done",
            StepStatus::Failed => "failed",
        }
    }
    fn parse(s: &str) -> StepStatus {
        match s {
            "done" => StepStatus::Done,
            "failed" => StepStatus::Failed,
            _ => StepStatus::Started,
        }
    }
}

/// One step (phase) of one site as recorded in the journal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    pub id: i64,
    pub site: String,
    /// Phase name, e.g. `sync-files`, `copy-db`, `verify`.
    pub phase: String,
    pub status: StepStatus,
    /// Unix time in milliseconds.
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub bytes: u64,
    /// A checksum describing the result (manifest digest, table checksums), when there is one.
    pub checksum: Option<String>,
    pub error: Option<String>,
}

/// What a finished step reports.
#[derive(Debug, Clone, Default)]
pub struct StepOutcome {
    pub bytes: u64,
    pub checksum: Option<String>,
}

/// Storage of the journal. All writes are durable when the call returns.
pub trait JournalStore {
    /// Where this journal lives, for messages: its file, or `mysql://host:port/db` (never a
    /// password).
    fn name(&self) -> &str;
    fn set_plan(&mut self, plan_ref: &str) -> Result<()>;
    fn plan(&self) -> Result<Option<String>>;
    fn set_site_state(&mut self, site: &str, state: SiteState) -> Result<()>;
    fn site_state(&self, site: &str) -> Result<Option<SiteState>>;
    fn sites(&self) -> Result<Vec<(String, SiteState)>>;
    /// Records that a step is about to run; returns its id.
    fn begin_step(&mut self, site: &str, phase: &str) -> Result<i64>;
    fn finish_step(&mut self, id: i64, outcome: &StepOutcome) -> Result<()>;
    fn fail_step(&mut self, id: i64, error: &str) -> Result<()>;
    fn steps(&self, site: &str) -> Result<Vec<StepRecord>>;
    /// Stores committed progress (JSON) under `scope`/`key`, replacing the previous value.
    fn put_checkpoint_raw(&mut self, scope: &str, key: &str, json: &str) -> Result<()>;
    fn checkpoint_raw(&self, scope: &str, key: &str) -> Result<Option<String>>;
    /// Compare-and-set: stores `json` under `scope`/`key` only if the stored value is still
    /// `expected` (`None`: no row). Returns whether it was stored.
    fn swap_checkpoint_raw(
        &mut self,
        scope: &str,
        key: &str,
        expected: Option<&str>,
        json: &str,
    ) -> Result<bool>;
    /// Removes every checkpoint of `scope` (a finished copy starts fresh next time).
    fn clear_checkpoints(&mut self, scope: &str) -> Result<()>;
    /// Every checkpoint of a scope, by key.
    fn checkpoints(&self, scope: &str) -> Result<Vec<(String, String)>>;
    /// Stores a binary cache (for example a destination manifest) under `key`, replacing the
    /// previous one. Caches are derived data: losing one costs time, never correctness.
    fn put_cache(&mut self, key: &str, value: &[u8]) -> Result<()>;
    fn cache(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Removes a cache; durable when this returns (callers drop it before changing what it
    /// describes).
    fn drop_cache(&mut self, key: &str) -> Result<()>;
}

/// A boxed store is a store (what [`open_journal`] returns can go where a `dyn JournalStore`
/// or an `Arc<Mutex<dyn JournalStore + Send>>` is expected).
impl<J: JournalStore + ?Sized> JournalStore for Box<J> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn set_plan(&mut self, plan_ref: &str) -> Result<()> {
        (**self).set_plan(plan_ref)
    }
    fn plan(&self) -> Result<Option<String>> {
        (**self).plan()
    }
    fn set_site_state(&mut self, site: &str, state: SiteState) -> Result<()> {
        (**self).set_site_state(site, state)
    }
    fn site_state(&self, site: &str) -> Result<Option<SiteState>> {
        (**self).site_state(site)
    }
    fn sites(&self) -> Result<Vec<(String, SiteState)>> {
        (**self).sites()
    }
    fn begin_step(&mut self, site: &str, phase: &str) -> Result<i64> {
        (**self).begin_step(site, phase)
    }
    fn finish_step(&mut self, id: i64, outcome: &StepOutcome) -> Result<()> {
        (**self).finish_step(id, outcome)
    }
    fn fail_step(&mut self, id: i64, error: &str) -> Result<()> {
        (**self).fail_step(id, error)
    }
    fn steps(&self, site: &str) -> Result<Vec<StepRecord>> {
        (**self).steps(site)
    }
    fn put_checkpoint_raw(&mut self, scope: &str, key: &str, json: &str) -> Result<()> {
        (**self).put_checkpoint_raw(scope, key, json)
    }
    fn checkpoint_raw(&self, scope: &str, key: &str) -> Result<Option<String>> {
        (**self).checkpoint_raw(scope, key)
    }
    fn swap_checkpoint_raw(
        &mut self,
        scope: &str,
        key: &str,
        expected: Option<&str>,
        json: &str,
    ) -> Result<bool> {
        (**self).swap_checkpoint_raw(scope, key, expected, json)
    }
    fn clear_checkpoints(&mut self, scope: &str) -> Result<()> {
        (**self).clear_checkpoints(scope)
    }
    fn checkpoints(&self, scope: &str) -> Result<Vec<(String, String)>> {
        (**self).checkpoints(scope)
    }
    fn put_cache(&mut self, key: &str, value: &[u8]) -> Result<()> {
        (**self).put_cache(key, value)
    }
    fn cache(&self, key: &str) -> Result<Option<Vec<u8>>> {
        (**self).cache(key)
    }
    fn drop_cache(&mut self, key: &str) -> Result<()> {
        (**self).drop_cache(key)
    }
}

/// Typed helpers over the raw checkpoint storage, for every store (also `dyn JournalStore`).
pub trait JournalExt: JournalStore {
    fn put_checkpoint<T: Serialize>(&mut self, scope: &str, key: &str, value: &T) -> Result<()> {
        let json = serde_json::to_string(value).expect("checkpoint structs always serialize");
        self.put_checkpoint_raw(scope, key, &json)
    }

    fn checkpoint<T: DeserializeOwned>(&self, scope: &str, key: &str) -> Result<Option<T>> {
        let Some(json) = self.checkpoint_raw(scope, key)? else {
            return Ok(None);
        };
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|source| JournalError::Checkpoint {
                journal: self.name().to_string(),
                scope: scope.to_string(),
                key: key.to_string(),
                source,
            })
    }
}

impl<J: JournalStore + ?Sized> JournalExt for J {}

impl StepStatus {
    pub fn name(self) -> &'static str {
        self.as_str()
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it): every journal timestamp.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

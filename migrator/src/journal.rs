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
//! Storage sits behind [`JournalStore`]; [`SqliteJournal`] (one file, WAL) is the embedded
//! default. A shared MariaDB journal for many workers can implement the same trait later.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors of the journal, each naming the journal file.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "journal {path}: checkpoint {scope}/{key} is not valid JSON for this version: {source}"
    )]
    Checkpoint {
        path: PathBuf,
        scope: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "journal {path}: site {site} has unknown state {state:?} (written by a newer migrator?)"
    )]
    UnknownState {
        path: PathBuf,
        site: String,
        state: String,
    },
    #[error("journal {path}: step {id} does not exist")]
    NoSuchStep { path: PathBuf, id: i64 },
}

pub type Result<T> = std::result::Result<T, JournalError>;

/// The per-site state machine of docs/ARCHITECTURE.md §4. Transitions are driven by the cutover
/// engine; the journal only persists the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteState {
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

    pub fn parse(s: &str) -> Option<SiteState> {
        SiteState::ALL.into_iter().find(|st| st.as_str() == s)
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

/// Typed helpers over the raw checkpoint storage.
pub trait JournalExt: JournalStore {
    fn put_checkpoint<T: Serialize>(&mut self, scope: &str, key: &str, value: &T) -> Result<()> {
        let json = serde_json::to_string(value).expect("checkpoint structs always serialize");
        self.put_checkpoint_raw(scope, key, &json)
    }
    fn checkpoint<T: DeserializeOwned>(&self, scope: &str, key: &str) -> Result<Option<T>>;
}

impl JournalExt for SqliteJournal {
    fn checkpoint<T: DeserializeOwned>(&self, scope: &str, key: &str) -> Result<Option<T>> {
        match self.checkpoint_raw(scope, key)? {
            None => Ok(None),
            Some(json) => {
                serde_json::from_str(&json)
                    .map(Some)
                    .map_err(|source| JournalError::Checkpoint {
                        path: self.path.clone(),
                        scope: scope.to_string(),
                        key: key.to_string(),
                        source,
                    })
            }
        }
    }
}

/// The embedded journal: one SQLite file in WAL mode.
pub struct SqliteJournal {
    conn: Connection,
    /// Kept for error messages: the operator must know which file is damaged.
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sites (
    site TEXT PRIMARY KEY, state TEXT NOT NULL, updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, phase TEXT NOT NULL,
    status TEXT NOT NULL, started_ms INTEGER NOT NULL, ended_ms INTEGER,
    bytes INTEGER NOT NULL DEFAULT 0, checksum TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS steps_site ON steps(site, id);
CREATE TABLE IF NOT EXISTS checkpoints (
    scope TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, updated_ms INTEGER NOT NULL,
    PRIMARY KEY (scope, key));
CREATE TABLE IF NOT EXISTS caches (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, updated_ms INTEGER NOT NULL);
";

/// Milliseconds since the Unix epoch (0 if the clock is before it): every journal timestamp.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl SqliteJournal {
    /// Opens (creating if needed) the journal file.
    pub fn open(path: &Path) -> Result<Self> {
        let wrap = |source| JournalError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(wrap)?;
        // FULL: a step recorded as done survives a power cut, which is the point of the journal.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(wrap)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(wrap)?;
        conn.execute_batch(SCHEMA).map_err(wrap)?;
        Ok(SqliteJournal {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn wrap(&self, source: rusqlite::Error) -> JournalError {
        JournalError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs one statement; the number of rows it changed.
    fn exec(&self, sql: &str, p: impl rusqlite::Params) -> Result<usize> {
        self.conn.execute(sql, p).map_err(|e| self.wrap(e))
    }

    /// The first column of the first row the query returns, if it returns one.
    fn value<T: rusqlite::types::FromSql>(
        &self,
        sql: &str,
        p: impl rusqlite::Params,
    ) -> Result<Option<T>> {
        self.conn
            .query_row(sql, p, |r| r.get(0))
            .optional()
            .map_err(|e| self.wrap(e))
    }
}

impl JournalStore for SqliteJournal {
    fn set_plan(&mut self, plan_ref: &str) -> Result<()> {
        self.exec(
            "INSERT INTO meta(k, v) VALUES('plan', ?1) ON CONFLICT(k) DO UPDATE SET v = ?1",
            params![plan_ref],
        )?;
        Ok(())
    }

    fn plan(&self) -> Result<Option<String>> {
        self.value("SELECT v FROM meta WHERE k = 'plan'", [])
    }

    fn set_site_state(&mut self, site: &str, state: SiteState) -> Result<()> {
        self.exec(
            "INSERT INTO sites(site, state, updated_ms) VALUES(?1, ?2, ?3)
                 ON CONFLICT(site) DO UPDATE SET state = ?2, updated_ms = ?3",
            params![site, state.as_str(), now_ms()],
        )?;
        Ok(())
    }

    fn site_state(&self, site: &str) -> Result<Option<SiteState>> {
        let s: Option<String> =
            self.value("SELECT state FROM sites WHERE site = ?1", params![site])?;
        s.map(|s| {
            SiteState::parse(&s).ok_or_else(|| JournalError::UnknownState {
                path: self.path.clone(),
                site: site.to_string(),
                state: s,
            })
        })
        .transpose()
    }

    fn sites(&self) -> Result<Vec<(String, SiteState)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT site, state FROM sites ORDER BY site")
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.wrap(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (site, state) = row.map_err(|e| self.wrap(e))?;
            let st = SiteState::parse(&state).ok_or_else(|| JournalError::UnknownState {
                path: self.path.clone(),
                site: site.clone(),
                state,
            })?;
            out.push((site, st));
        }
        Ok(out)
    }

    fn begin_step(&mut self, site: &str, phase: &str) -> Result<i64> {
        self.exec(
            "INSERT INTO steps(site, phase, status, started_ms) VALUES(?1, ?2, 'started', ?3)",
            params![site, phase, now_ms()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn finish_step(&mut self, id: i64, outcome: &StepOutcome) -> Result<()> {
        let n = self.exec(
            "UPDATE steps SET status = 'done', ended_ms = ?2, bytes = ?3, checksum = ?4
                 WHERE id = ?1",
            params![id, now_ms(), outcome.bytes as i64, outcome.checksum],
        )?;
        if n == 0 {
            return Err(JournalError::NoSuchStep {
                path: self.path.clone(),
                id,
            });
        }
        Ok(())
    }

    fn fail_step(&mut self, id: i64, error: &str) -> Result<()> {
        let n = self.exec(
            "UPDATE steps SET status = 'failed', ended_ms = ?2, error = ?3 WHERE id = ?1",
            params![id, now_ms(), error],
        )?;
        if n == 0 {
            return Err(JournalError::NoSuchStep {
                path: self.path.clone(),
                id,
            });
        }
        Ok(())
    }

    fn steps(&self, site: &str) -> Result<Vec<StepRecord>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, site, phase, status, started_ms, ended_ms, bytes, checksum, error
                 FROM steps WHERE site = ?1 ORDER BY id",
            )
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params![site], |r| {
                Ok(StepRecord {
                    id: r.get(0)?,
                    site: r.get(1)?,
                    phase: r.get(2)?,
                    status: StepStatus::parse(&r.get::<_, String>(3)?),
                    started_ms: r.get(4)?,
                    ended_ms: r.get(5)?,
                    bytes: r.get::<_, i64>(6)? as u64,
                    checksum: r.get(7)?,
                    error: r.get(8)?,
                })
            })
            .map_err(|e| self.wrap(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.wrap(e))
    }

    fn put_checkpoint_raw(&mut self, scope: &str, key: &str, json: &str) -> Result<()> {
        self.exec(
            "INSERT INTO checkpoints(scope, key, value, updated_ms) VALUES(?1, ?2, ?3, ?4)
                 ON CONFLICT(scope, key) DO UPDATE SET value = ?3, updated_ms = ?4",
            params![scope, key, json, now_ms()],
        )?;
        Ok(())
    }

    fn swap_checkpoint_raw(
        &mut self,
        scope: &str,
        key: &str,
        expected: Option<&str>,
        json: &str,
    ) -> Result<bool> {
        // One statement each: atomic against every other connection to the journal.
        let n = match expected {
            None => self.conn.execute(
                "INSERT OR IGNORE INTO checkpoints(scope, key, value, updated_ms)
                 VALUES(?1, ?2, ?3, ?4)",
                params![scope, key, json, now_ms()],
            ),
            Some(old) => self.conn.execute(
                "UPDATE checkpoints SET value = ?3, updated_ms = ?4
                 WHERE scope = ?1 AND key = ?2 AND value = ?5",
                params![scope, key, json, now_ms(), old],
            ),
        }
        .map_err(|e| self.wrap(e))?;
        Ok(n == 1)
    }

    fn checkpoint_raw(&self, scope: &str, key: &str) -> Result<Option<String>> {
        self.value(
            "SELECT value FROM checkpoints WHERE scope = ?1 AND key = ?2",
            params![scope, key],
        )
    }

    fn clear_checkpoints(&mut self, scope: &str) -> Result<()> {
        self.exec("DELETE FROM checkpoints WHERE scope = ?1", params![scope])?;
        Ok(())
    }

    fn checkpoints(&self, scope: &str) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, value FROM checkpoints WHERE scope = ?1 ORDER BY key")
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params![scope], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.wrap(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.wrap(e))
    }

    fn put_cache(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.exec(
            "INSERT INTO caches(key, value, updated_ms) VALUES(?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET value = ?2, updated_ms = ?3",
            params![key, value, now_ms()],
        )?;
        Ok(())
    }

    fn cache(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.value("SELECT value FROM caches WHERE key = ?1", params![key])
    }

    fn drop_cache(&mut self, key: &str) -> Result<()> {
        self.exec("DELETE FROM caches WHERE key = ?1", params![key])?;
        Ok(())
    }
}

impl StepStatus {
    pub fn name(self) -> &'static str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Progress {
        table: String,
        last_pk: Vec<String>,
    }

    #[test]
    fn state_names_round_trip() {
        for st in SiteState::ALL {
            assert_eq!(SiteState::parse(st.as_str()), Some(st));
        }
        assert_eq!(SiteState::parse("bogus"), None);
    }

    #[test]
    fn steps_and_checkpoints_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        {
            let mut j = SqliteJournal::open(&path).unwrap();
            j.set_plan("plan.json@v3").unwrap();
            j.set_site_state("shop", SiteState::Prepared).unwrap();
            let a = j.begin_step("shop", "sync-files").unwrap();
            j.finish_step(
                a,
                &StepOutcome {
                    bytes: 42,
                    checksum: Some("abc".into()),
                },
            )
            .unwrap();
            let b = j.begin_step("shop", "copy-db").unwrap();
            j.put_checkpoint(
                "copy-db:shop",
                "orders",
                &Progress {
                    table: "orders".into(),
                    last_pk: vec!["17".into()],
                },
            )
            .unwrap();
            // `b` is never finished: as if the process were killed during the step.
            let _ = b;
        }
        let j = SqliteJournal::open(&path).unwrap();
        assert_eq!(j.plan().unwrap().as_deref(), Some("plan.json@v3"));
        assert_eq!(j.site_state("shop").unwrap(), Some(SiteState::Prepared));
        assert_eq!(j.site_state("other").unwrap(), None);
        let steps = j.steps("shop").unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].status, StepStatus::Done);
        assert_eq!(steps[0].bytes, 42);
        assert_eq!(steps[0].checksum.as_deref(), Some("abc"));
        assert_eq!(steps[1].status, StepStatus::Started);
        assert_eq!(steps[1].ended_ms, None);
        let p: Progress = j.checkpoint("copy-db:shop", "orders").unwrap().unwrap();
        assert_eq!(p.last_pk, vec!["17".to_string()]);
    }

    #[test]
    fn failed_step_keeps_error_and_unknown_step_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = SqliteJournal::open(&dir.path().join("j.sqlite")).unwrap();
        let id = j.begin_step("s", "verify").unwrap();
        j.fail_step(id, "table t differs").unwrap();
        let steps = j.steps("s").unwrap();
        assert_eq!(steps[0].status, StepStatus::Failed);
        assert_eq!(steps[0].error.as_deref(), Some("table t differs"));
        assert!(matches!(
            j.finish_step(999, &StepOutcome::default()),
            Err(JournalError::NoSuchStep { id: 999, .. })
        ));
    }

    #[test]
    fn bad_checkpoint_json_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = SqliteJournal::open(&dir.path().join("j.sqlite")).unwrap();
        j.put_checkpoint_raw("scope", "k", "{\"nope\": 1}").unwrap();
        let err = j.checkpoint::<Progress>("scope", "k").unwrap_err();
        assert!(matches!(err, JournalError::Checkpoint { ref key, .. } if key == "k"));
        j.clear_checkpoints("scope").unwrap();
        assert!(j.checkpoint::<Progress>("scope", "k").unwrap().is_none());
    }
}

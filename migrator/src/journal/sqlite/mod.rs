//! The embedded journal: one SQLite file in WAL mode, the default backend of [`JournalStore`].
//! `sql.rs`: the same file as a [`super::SqlConn`] (the journal's other tables).
//!
//! **Schema.** SQLite's `user_version` says which of [`MIGRATIONS`] are applied; opening
//! applies the missing ones in one `IMMEDIATE` transaction (so two processes opening a fresh
//! file at once both succeed) and refuses a file newer than this migrator. Every step is
//! `IF NOT EXISTS` DDL: a file written before versions existed (version 0, with some of these
//! tables already there) upgrades in place.

use super::*;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

mod sql;
pub use sql::SqliteSql;

/// The embedded journal: one SQLite file in WAL mode.
pub struct SqliteJournal {
    conn: Connection,
    /// Kept for error messages: the operator must know which file is damaged.
    path: PathBuf,
    /// `path` as text, what [`JournalStore::name`] returns.
    name: String,
}

impl rusqlite::types::ToSql for SiteState {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl rusqlite::types::FromSql for SiteState {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        v.as_str()?
            .parse()
            .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

/// The schema version this migrator creates and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Step `i` brings the schema from version `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    V1,
    V2_CONTROLS_AND_ROUTES,
    V3_FLEET,
    V4_PREFLIGHT,
    V5_CLAIM_INDEX,
];

const V1: &str = "
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

/// The wave's controls, status and events (`crate::control`) and the route checks' history
/// (`crate::route_check::store`): created by those modules on first use before version 2.
const V2_CONTROLS_AND_ROUTES: &str = "
CREATE TABLE IF NOT EXISTS wave_controls (
    id INTEGER PRIMARY KEY AUTOINCREMENT, wave INTEGER NOT NULL, action TEXT NOT NULL,
    value INTEGER, who TEXT NOT NULL, at_ms INTEGER NOT NULL, source TEXT NOT NULL, note TEXT);
CREATE INDEX IF NOT EXISTS wave_controls_wave ON wave_controls(wave, id);
CREATE TABLE IF NOT EXISTS wave_status (
    wave INTEGER PRIMARY KEY, json TEXT NOT NULL, updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS wave_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, wave INTEGER NOT NULL, site TEXT, kind TEXT NOT NULL,
    message TEXT NOT NULL, at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS route_checks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, checked_ms INTEGER NOT NULL,
    mismatches INTEGER NOT NULL, unreachable INTEGER NOT NULL, json TEXT NOT NULL);
";

/// Waves started for workers and their move groups, claimed with a lease (`crate::fleet`).
const V3_FLEET: &str = "
CREATE TABLE IF NOT EXISTS wave_runs (
    wave INTEGER PRIMARY KEY, plan TEXT NOT NULL, started_ms INTEGER NOT NULL, who TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS wave_groups (
    wave INTEGER NOT NULL, grp INTEGER NOT NULL, sites TEXT NOT NULL, state TEXT NOT NULL,
    owner TEXT, lease_until_ms INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    updated_ms INTEGER NOT NULL, PRIMARY KEY (wave, grp));
CREATE TABLE IF NOT EXISTS group_resources (
    wave INTEGER NOT NULL, grp INTEGER NOT NULL, resource TEXT NOT NULL,
    PRIMARY KEY (wave, grp, resource));
CREATE INDEX IF NOT EXISTS group_resources_resource ON group_resources(resource, wave, grp);
CREATE TABLE IF NOT EXISTS resource_caps (resource TEXT PRIMARY KEY, cap INTEGER NOT NULL);
";

/// Pre-flight results per site (`crate::preflight::store`).
const V4_PREFLIGHT: &str = "
CREATE TABLE IF NOT EXISTS preflight_sites (
    site TEXT PRIMARY KEY, stamp TEXT NOT NULL, verdict TEXT NOT NULL, json TEXT NOT NULL,
    scanned_ms INTEGER NOT NULL);
";

/// The fleet's claims look up a wave's claimable groups by state (`crate::fleet`): without
/// it each claim walked the primary key through every group already done.
const V5_CLAIM_INDEX: &str = "
CREATE INDEX IF NOT EXISTS wave_groups_claim ON wave_groups(wave, state, grp);
";

/// Applies the missing migrations (see the file's documentation).
fn migrate(conn: &Connection) -> rusqlite::Result<std::result::Result<(), u32>> {
    let version =
        |c: &Connection| c.pragma_query_value(None, "user_version", |r| r.get::<_, u32>(0));
    if version(conn)? == SCHEMA_VERSION {
        return Ok(Ok(()));
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let run = || -> rusqlite::Result<std::result::Result<(), u32>> {
        let found = version(conn)?;
        if found > SCHEMA_VERSION {
            return Ok(Err(found));
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            conn.execute_batch(step)?;
            conn.pragma_update(None, "user_version", (i + 1) as u32)?;
        }
        Ok(Ok(()))
    };
    let r = run();
    match &r {
        Ok(Ok(())) => conn.execute_batch("COMMIT")?,
        _ => {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    r
}

impl SqliteJournal {
    /// Opens (creating if needed) the journal file.
    pub fn open(path: &Path) -> Result<Self> {
        let wrap = |source| JournalError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(wrap)?;
        // First: processes opening a new journal at once wait for each other's locks (the
        // switch to WAL and the schema migration take one) instead of failing with "busy".
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(wrap)?;
        // Switching a new file to WAL can answer "busy" at once, without waiting (SQLite avoids
        // a deadlock between two connections upgrading their locks): retried for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let migrated = loop {
            let attempt = conn
                .pragma_update(None, "journal_mode", "WAL")
                // FULL: a step recorded as done survives a power cut, which is the point of
                // the journal.
                .and_then(|()| conn.pragma_update(None, "synchronous", "FULL"))
                .and_then(|()| migrate(&conn));
            match attempt {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.map_err(wrap)?,
            }
        };
        if let Err(found) = migrated {
            return Err(JournalError::SchemaTooNew {
                journal: path.display().to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(SqliteJournal {
            conn,
            path: path.to_path_buf(),
            name: path.display().to_string(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The same connection as a [`SqlConn`] (the journal's other tables).
    pub fn into_sql(self) -> SqliteSql {
        SqliteSql::from_conn(self.conn, self.path)
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
    fn name(&self) -> &str {
        &self.name
    }

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
            params![site, state, now_ms()],
        )?;
        Ok(())
    }

    fn site_state(&self, site: &str) -> Result<Option<SiteState>> {
        let s: Option<String> =
            self.value("SELECT state FROM sites WHERE site = ?1", params![site])?;
        s.map(|s| parse_state(&self.name, site, s)).transpose()
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
            let st = parse_state(&self.name, &site, state)?;
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
                journal: self.name.clone(),
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
                journal: self.name.clone(),
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

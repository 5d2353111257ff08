//! The embedded journal: one SQLite file in WAL mode, the default backend of [`JournalStore`].

use super::*;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

/// The embedded journal: one SQLite file in WAL mode.
pub struct SqliteJournal {
    conn: Connection,
    /// Kept for error messages: the operator must know which file is damaged.
    path: PathBuf,
    /// `path` as text, what [`JournalStore::name`] returns.
    name: String,
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
            name: path.display().to_string(),
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

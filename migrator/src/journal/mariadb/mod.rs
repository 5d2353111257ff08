//! The shared journal: InnoDB tables in one database of a MariaDB server or Galera cluster, so
//! that many migrator processes on many hosts can use one journal (issue 17).
//!
//! **Why a thread of its own.** [`JournalStore`] is synchronous and `mysql_async` is not. The
//! journal is called from plain threads (the wave's workers) *and* from inside async code on a
//! tokio runtime: a database copy locks its `Arc<Mutex<dyn JournalStore>>` and writes
//! checkpoints from async fns run by `Runtime::block_on` (`db/copy.rs`, `db/table.rs`,
//! `db/capture/mod.rs`). A runtime owned by the store and entered with `block_on` would panic
//! there ("cannot start a runtime from within a runtime"). So the store starts one thread that
//! owns a current-thread runtime and the connection; each call sends its statement there and
//! waits for the answer on a std channel, which is allowed anywhere. Waiting blocks the calling
//! thread for one round trip, as the SQLite journal blocks it on its `fsync`.
//!
//! **Semantics, as SQLite's.** Every statement runs with autocommit on: it is committed (and on
//! Galera certified by the cluster) when the call returns. `swap_checkpoint_raw` is one
//! conditional statement: `UPDATE … WHERE value = expected` with the connection's
//! `CLIENT_FOUND_ROWS` (affected rows = matched rows, so storing the same value again still
//! counts), or a plain `INSERT` that a duplicate key refuses when no row was expected. Keys are
//! `VARBINARY` and compared values are compared as bytes, so `Orders` and `orders`, or a
//! trailing space, stay different as they are in SQLite. A deadlock or a Galera certification
//! conflict (1213: the statement was rolled back) is retried a few times, except inside a
//! transaction a caller opened (`SqlConn::batch("START TRANSACTION")`: there the whole
//! transaction was rolled back, and the error goes to the caller); a lost connection is
//! an error for that call and the next call reconnects (a write is never re-sent blindly).
//!
//! **Schema.** The `meta` row `schema_version` says which of [`MIGRATIONS`] are applied.
//! Opening creates the database if it is missing, then applies what is missing; every step is
//! idempotent DDL (`CREATE TABLE IF NOT EXISTS`), and the version is only ever raised, so two
//! processes opening a fresh journal at once both succeed. (No `GET_LOCK`: on Galera it would
//! lock one node only.) A journal newer than this migrator is refused.

use super::*;
use mysql_async::{Opts, OptsBuilder, Params, Row, Value};
use std::sync::mpsc;
use std::thread::JoinHandle;
use worker::{serve, Op, Reply, Request, Startup, ER_DUP_ENTRY};

mod sql;
mod worker;

pub use sql::MariaDbSql;

/// The schema version this migrator creates and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Step `i` brings the schema from version `i` to `i + 1`. Append only; each statement must be
/// safe to run twice and concurrently (`IF NOT EXISTS`).
const MIGRATIONS: &[&[&str]] = &[
    V1,
    V2_CONTROLS_AND_ROUTES,
    V3_FLEET,
    V4_PREFLIGHT,
    V5_CLAIM_INDEX,
];

/// The fleet's claims look up a wave's claimable groups by state (`crate::fleet`): without
/// it each claim walked the primary key `(wave, grp)` through every group already done.
const V5_CLAIM_INDEX: &[&str] =
    &["CREATE INDEX IF NOT EXISTS wave_groups_claim ON wave_groups (wave, state, grp)"];

/// Pre-flight results per site (`crate::preflight::store`).
const V4_PREFLIGHT: &[&str] = &["CREATE TABLE IF NOT EXISTS preflight_sites (
        site VARBINARY(255) NOT NULL PRIMARY KEY,
        stamp VARCHAR(32) CHARACTER SET ascii NOT NULL,
        verdict VARCHAR(16) CHARACTER SET ascii NOT NULL,
        json LONGTEXT CHARACTER SET utf8mb4 NOT NULL,
        scanned_ms BIGINT NOT NULL
    ) ENGINE=InnoDB"];

/// Waves started for workers and their move groups, claimed with a lease (`crate::fleet`).
const V3_FLEET: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS wave_runs (
        wave INT UNSIGNED NOT NULL PRIMARY KEY,
        plan TEXT CHARACTER SET utf8mb4 NOT NULL,
        started_ms BIGINT NOT NULL,
        who VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS wave_groups (
        wave INT UNSIGNED NOT NULL,
        grp INT UNSIGNED NOT NULL,
        sites LONGTEXT CHARACTER SET utf8mb4 NOT NULL,
        state VARCHAR(16) CHARACTER SET ascii NOT NULL,
        owner VARBINARY(255) NULL,
        lease_until_ms BIGINT NOT NULL DEFAULT 0,
        attempts INT UNSIGNED NOT NULL DEFAULT 0,
        updated_ms BIGINT NOT NULL,
        PRIMARY KEY (wave, grp)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS group_resources (
        wave INT UNSIGNED NOT NULL,
        grp INT UNSIGNED NOT NULL,
        resource VARBINARY(512) NOT NULL,
        PRIMARY KEY (wave, grp, resource),
        KEY group_resources_resource (resource, wave, grp)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS resource_caps (
        resource VARBINARY(512) NOT NULL PRIMARY KEY,
        cap INT UNSIGNED NOT NULL
    ) ENGINE=InnoDB",
];

const V1: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS sites (
        site VARBINARY(255) NOT NULL PRIMARY KEY,
        state VARCHAR(32) CHARACTER SET ascii NOT NULL,
        updated_ms BIGINT NOT NULL
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS steps (
        id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        site VARBINARY(255) NOT NULL,
        phase VARBINARY(255) NOT NULL,
        status VARCHAR(16) CHARACTER SET ascii NOT NULL,
        started_ms BIGINT NOT NULL,
        ended_ms BIGINT NULL,
        bytes BIGINT UNSIGNED NOT NULL DEFAULT 0,
        checksum LONGTEXT CHARACTER SET utf8mb4 NULL,
        error LONGTEXT CHARACTER SET utf8mb4 NULL,
        KEY steps_site (site, id)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS checkpoints (
        scope VARBINARY(255) NOT NULL,
        k VARBINARY(2048) NOT NULL,
        value LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        updated_ms BIGINT NOT NULL,
        PRIMARY KEY (scope, k)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS caches (
        k VARBINARY(2048) NOT NULL PRIMARY KEY,
        value LONGBLOB NOT NULL,
        updated_ms BIGINT NOT NULL
    ) ENGINE=InnoDB",
];

/// The wave's controls, status and events (`crate::control`) and the route checks' history
/// (`crate::route_check::store`).
const V2_CONTROLS_AND_ROUTES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS wave_controls (
        id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        wave INT UNSIGNED NOT NULL,
        action VARCHAR(32) CHARACTER SET ascii NOT NULL,
        value INT UNSIGNED NULL,
        who VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
        at_ms BIGINT NOT NULL,
        source VARCHAR(64) CHARACTER SET utf8mb4 NOT NULL,
        note TEXT CHARACTER SET utf8mb4 NULL,
        KEY wave_controls_wave (wave, id)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS wave_status (
        wave INT UNSIGNED NOT NULL PRIMARY KEY,
        json LONGTEXT CHARACTER SET utf8mb4 NOT NULL,
        updated_ms BIGINT NOT NULL,
        KEY wave_status_updated (updated_ms)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS wave_events (
        id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        wave INT UNSIGNED NOT NULL,
        site VARBINARY(255) NULL,
        kind VARCHAR(32) CHARACTER SET utf8mb4 NOT NULL,
        message TEXT CHARACTER SET utf8mb4 NOT NULL,
        at_ms BIGINT NOT NULL,
        KEY wave_events_wave (wave, id)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS route_checks (
        id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        checked_ms BIGINT NOT NULL,
        mismatches BIGINT NOT NULL,
        unreachable BIGINT NOT NULL,
        json LONGTEXT CHARACTER SET utf8mb4 NOT NULL
    ) ENGINE=InnoDB",
];

/// Created before anything else: it holds the schema version.
const CREATE_META: &str = "CREATE TABLE IF NOT EXISTS meta (
    k VARBINARY(64) NOT NULL PRIMARY KEY,
    v LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
) ENGINE=InnoDB";

/// Every session: statements commit on their own; too-long or invalid values are errors, not
/// silent truncations; a table is InnoDB or is not created.
const SESSION_SETUP: &str =
    "SET SESSION autocommit = 1, sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'";

/// A journal in a MariaDB database (see the file's documentation).
pub struct MariaDbJournal {
    /// Statements for the journal's thread; `None` once dropped.
    tx: Option<mpsc::Sender<Request>>,
    /// The thread that owns the connection and its runtime; joined on drop.
    thread: Option<JoinHandle<()>>,
    /// `mysql://host:port/db`, for every message (never the password).
    name: String,
}

/// Positional parameters.
fn p<const N: usize>(values: [Value; N]) -> Params {
    Params::Positional(values.into())
}

impl MariaDbJournal {
    /// Connects to the database of `opts` (creating it if missing), and creates or upgrades the
    /// schema. `opts` must name a database.
    pub fn open(opts: Opts) -> Result<Self> {
        Self::open_any(vec![opts])
    }

    /// As [`MariaDbJournal::open`], for the nodes of one Galera cluster (same account and
    /// database on each): connects to the first that answers, and moves to the next when its
    /// node goes away.
    pub fn open_any(nodes: Vec<Opts>) -> Result<Self> {
        let name = sql_proxy::store_nodes::name(&nodes);
        if nodes.is_empty() || nodes.iter().any(|o| o.db_name().is_none_or(str::is_empty)) {
            return Err(JournalError::NoDatabase { journal: name });
        }
        let opts: Vec<Opts> = nodes
            .into_iter()
            .map(|o| {
                OptsBuilder::from_opts(o)
                    .client_found_rows(true)
                    .init(vec![SESSION_SETUP])
                    .into()
            })
            .collect();
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("journal-mariadb".into())
            .spawn(move || serve(opts, rx, ready_tx))
            .map_err(|source| JournalError::Thread {
                journal: name.clone(),
                source,
            })?;
        // Built first, so that every way out below joins the thread.
        let journal = MariaDbJournal {
            tx: Some(tx),
            thread: Some(thread),
            name,
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(Startup::Runtime(source))) => {
                return Err(JournalError::Thread {
                    journal: journal.name.clone(),
                    source,
                })
            }
            Ok(Err(Startup::Connect(source))) => return Err(journal.wrap(source)),
            Err(_) => return Err(journal.stopped()),
        }
        journal.ensure_schema()?;
        Ok(journal)
    }

    /// The same connection as a [`SqlConn`] (the journal's other tables).
    pub fn into_sql(self) -> MariaDbSql {
        MariaDbSql::new(self)
    }

    fn wrap(&self, source: mysql_async::Error) -> JournalError {
        JournalError::MariaDb {
            journal: self.name.clone(),
            source,
        }
    }

    fn stopped(&self) -> JournalError {
        JournalError::Stopped {
            journal: self.name.clone(),
        }
    }

    /// Runs one operation on the journal's thread; the server's error as it came.
    fn call_raw(&self, op: Op) -> Result<std::result::Result<Reply, mysql_async::Error>> {
        let (reply, rx) = mpsc::sync_channel(1);
        let tx = self.tx.as_ref().ok_or_else(|| self.stopped())?;
        tx.send(Request { op, reply }).map_err(|_| self.stopped())?;
        rx.recv().map_err(|_| self.stopped())
    }

    fn call(&self, op: Op) -> Result<Reply> {
        self.call_raw(op)?.map_err(|e| self.wrap(e))
    }

    fn exec(&self, sql: &'static str, params: Params) -> Result<Reply> {
        self.call(Op::Exec(sql.into(), params))
    }

    fn query(&self, sql: &'static str, params: Params) -> Result<Vec<Row>> {
        Ok(self.call(Op::Query(sql.into(), params))?.rows)
    }

    /// The first column of the first row, if there is one.
    fn value<T: mysql_async::prelude::FromValue>(
        &self,
        sql: &'static str,
        params: Params,
        what: &'static str,
    ) -> Result<Option<T>> {
        match self.query(sql, params)?.into_iter().next() {
            None => Ok(None),
            Some(mut row) => self.take(&mut row, 0, what).map(Some),
        }
    }

    /// Column `i` of `row` as a `T`, or an error naming `what`.
    fn take<T: mysql_async::prelude::FromValue>(
        &self,
        row: &mut Row,
        i: usize,
        what: &'static str,
    ) -> Result<T> {
        let bad = |reason: String| JournalError::BadValue {
            journal: self.name.clone(),
            what,
            reason,
        };
        match row.take_opt::<T, usize>(i) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(bad(e.to_string())),
            None => Err(bad(format!("column {i} is missing"))),
        }
    }

    fn ensure_schema(&self) -> Result<()> {
        self.call(Op::Text(CREATE_META.into()))?;
        let mut version = self.schema_version()?;
        while version < SCHEMA_VERSION {
            for sql in MIGRATIONS[version as usize] {
                self.call(Op::Text((*sql).into()))?;
            }
            version += 1;
            // Only ever raised: a process that is behind never lowers what another recorded.
            self.exec(
                "INSERT INTO meta(k, v) VALUES('schema_version', ?)
                 ON DUPLICATE KEY UPDATE v = IF(CAST(v AS UNSIGNED) < ?, ?, v)",
                p([
                    version.to_string().into(),
                    version.into(),
                    version.to_string().into(),
                ]),
            )?;
        }
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(JournalError::SchemaTooNew {
                journal: self.name.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// The recorded schema version (0: none yet).
    fn schema_version(&self) -> Result<u32> {
        let v: Option<String> = self.value(
            "SELECT v FROM meta WHERE k = 'schema_version'",
            Params::Empty,
            "meta schema_version",
        )?;
        match v {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| JournalError::BadValue {
                journal: self.name.clone(),
                what: "meta schema_version",
                reason: format!("{v:?} is not a version number"),
            }),
        }
    }

    fn step_updated(&self, id: i64, reply: Reply) -> Result<()> {
        if reply.affected == 0 {
            return Err(JournalError::NoSuchStep {
                journal: self.name.clone(),
                id,
            });
        }
        Ok(())
    }
}

impl Drop for MariaDbJournal {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; it disconnects and returns.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `mysql://host:port/db`: what the journal is called in messages.
/// `mysql://host:port,host:port/db`: every node, as messages name a clustered journal.
impl JournalStore for MariaDbJournal {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_plan(&mut self, plan_ref: &str) -> Result<()> {
        self.exec(
            "INSERT INTO meta(k, v) VALUES('plan', ?) ON DUPLICATE KEY UPDATE v = ?",
            p([plan_ref.into(), plan_ref.into()]),
        )?;
        Ok(())
    }

    fn plan(&self) -> Result<Option<String>> {
        self.value(
            "SELECT v FROM meta WHERE k = 'plan'",
            Params::Empty,
            "the plan reference",
        )
    }

    fn set_site_state(&mut self, site: &str, state: SiteState) -> Result<()> {
        let now = now_ms();
        self.exec(
            "INSERT INTO sites(site, state, updated_ms) VALUES(?, ?, ?)
             ON DUPLICATE KEY UPDATE state = ?, updated_ms = ?",
            p([
                site.into(),
                state.as_str().into(),
                now.into(),
                state.as_str().into(),
                now.into(),
            ]),
        )?;
        Ok(())
    }

    fn site_state(&self, site: &str) -> Result<Option<SiteState>> {
        let s: Option<String> = self.value(
            "SELECT state FROM sites WHERE site = ?",
            p([site.into()]),
            "a site's state",
        )?;
        s.map(|s| parse_state(&self.name, site, s)).transpose()
    }

    fn sites(&self) -> Result<Vec<(String, SiteState)>> {
        let rows = self.query("SELECT site, state FROM sites ORDER BY site", Params::Empty)?;
        let mut out = Vec::with_capacity(rows.len());
        for mut row in rows {
            let site: String = self.take(&mut row, 0, "a site's name")?;
            let state: String = self.take(&mut row, 1, "a site's state")?;
            let st = parse_state(&self.name, &site, state)?;
            out.push((site, st));
        }
        Ok(out)
    }

    fn begin_step(&mut self, site: &str, phase: &str) -> Result<i64> {
        let r = self.exec(
            "INSERT INTO steps(site, phase, status, started_ms) VALUES(?, ?, 'started', ?)",
            p([site.into(), phase.into(), now_ms().into()]),
        )?;
        r.last_id
            .and_then(|id| i64::try_from(id).ok())
            .ok_or_else(|| JournalError::BadValue {
                journal: self.name.clone(),
                what: "a new step's id",
                reason: format!("the server returned {:?}", r.last_id),
            })
    }

    fn finish_step(&mut self, id: i64, outcome: &StepOutcome) -> Result<()> {
        let r = self.exec(
            "UPDATE steps SET status = 'done', ended_ms = ?, bytes = ?, checksum = ?
             WHERE id = ?",
            p([
                now_ms().into(),
                outcome.bytes.into(),
                outcome.checksum.clone().into(),
                id.into(),
            ]),
        )?;
        self.step_updated(id, r)
    }

    fn fail_step(&mut self, id: i64, error: &str) -> Result<()> {
        let r = self.exec(
            "UPDATE steps SET status = 'failed', ended_ms = ?, error = ? WHERE id = ?",
            p([now_ms().into(), error.into(), id.into()]),
        )?;
        self.step_updated(id, r)
    }

    fn steps(&self, site: &str) -> Result<Vec<StepRecord>> {
        let rows = self.query(
            "SELECT id, site, phase, status, started_ms, ended_ms, bytes, checksum, error
             FROM steps WHERE site = ? ORDER BY id",
            p([site.into()]),
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for mut r in rows {
            out.push(StepRecord {
                id: self.take(&mut r, 0, "a step's id")?,
                site: self.take(&mut r, 1, "a step's site")?,
                phase: self.take(&mut r, 2, "a step's phase")?,
                status: StepStatus::parse(&self.take::<String>(&mut r, 3, "a step's status")?),
                started_ms: self.take(&mut r, 4, "a step's start")?,
                ended_ms: self.take(&mut r, 5, "a step's end")?,
                bytes: self.take(&mut r, 6, "a step's bytes")?,
                checksum: self.take(&mut r, 7, "a step's checksum")?,
                error: self.take(&mut r, 8, "a step's error")?,
            });
        }
        Ok(out)
    }

    fn put_checkpoint_raw(&mut self, scope: &str, key: &str, json: &str) -> Result<()> {
        let now = now_ms();
        self.exec(
            "INSERT INTO checkpoints(scope, k, value, updated_ms) VALUES(?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE value = ?, updated_ms = ?",
            p([
                scope.into(),
                key.into(),
                json.into(),
                now.into(),
                json.into(),
                now.into(),
            ]),
        )?;
        Ok(())
    }

    fn checkpoint_raw(&self, scope: &str, key: &str) -> Result<Option<String>> {
        self.value(
            "SELECT value FROM checkpoints WHERE scope = ? AND k = ?",
            p([scope.into(), key.into()]),
            "a checkpoint",
        )
    }

    fn swap_checkpoint_raw(
        &mut self,
        scope: &str,
        key: &str,
        expected: Option<&str>,
        json: &str,
    ) -> Result<bool> {
        // One statement each, atomic against every other connection (see the file's
        // documentation for why affected rows are matched rows here).
        let Some(old) = expected else {
            let r = self.call_raw(Op::Exec(
                "INSERT INTO checkpoints(scope, k, value, updated_ms) VALUES(?, ?, ?, ?)".into(),
                p([scope.into(), key.into(), json.into(), now_ms().into()]),
            ))?;
            return match r {
                Ok(_) => Ok(true),
                Err(mysql_async::Error::Server(e)) if e.code == ER_DUP_ENTRY => Ok(false),
                Err(e) => Err(self.wrap(e)),
            };
        };
        let r = self.exec(
            "UPDATE checkpoints SET value = ?, updated_ms = ?
             WHERE scope = ? AND k = ? AND CAST(value AS BINARY) = CAST(? AS BINARY)",
            p([
                json.into(),
                now_ms().into(),
                scope.into(),
                key.into(),
                old.into(),
            ]),
        )?;
        if r.affected == 0 && r.reconnected {
            // The first attempt may have committed before its node went away: then the value
            // is ours (a lease or checkpoint names its writer, so nobody else writes it).
            return Ok(self.checkpoint_raw(scope, key)?.as_deref() == Some(json));
        }
        Ok(r.affected == 1)
    }

    fn clear_checkpoints(&mut self, scope: &str) -> Result<()> {
        self.exec("DELETE FROM checkpoints WHERE scope = ?", p([scope.into()]))?;
        Ok(())
    }

    fn checkpoints(&self, scope: &str) -> Result<Vec<(String, String)>> {
        let rows = self.query(
            "SELECT k, value FROM checkpoints WHERE scope = ? ORDER BY k",
            p([scope.into()]),
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for mut r in rows {
            let k = self.take(&mut r, 0, "a checkpoint's key")?;
            let v = self.take(&mut r, 1, "a checkpoint")?;
            out.push((k, v));
        }
        Ok(out)
    }

    fn put_cache(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let now = now_ms();
        self.exec(
            "INSERT INTO caches(k, value, updated_ms) VALUES(?, ?, ?)
             ON DUPLICATE KEY UPDATE value = ?, updated_ms = ?",
            p([
                key.into(),
                value.into(),
                now.into(),
                value.into(),
                now.into(),
            ]),
        )?;
        Ok(())
    }

    fn cache(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.value(
            "SELECT value FROM caches WHERE k = ?",
            p([key.into()]),
            "a cache",
        )
    }

    fn drop_cache(&mut self, key: &str) -> Result<()> {
        self.exec("DELETE FROM caches WHERE k = ?", p([key.into()]))?;
        Ok(())
    }
}

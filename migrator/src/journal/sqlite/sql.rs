//! The SQLite journal file as a [`SqlConn`].

use super::super::sql::{Dialect, Exec, SqlConn, SqlRow, SqlValue};
use super::super::{JournalError, Result};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::Arc;

impl rusqlite::types::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            SqlValue::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            SqlValue::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            SqlValue::Real(v) => ToSqlOutput::Borrowed(ValueRef::Real(*v)),
            SqlValue::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            SqlValue::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

fn value(v: ValueRef<'_>) -> SqlValue {
    match v {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Int(i),
        ValueRef::Real(f) => SqlValue::Real(f),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => SqlValue::Text(s.to_string()),
            Err(_) => SqlValue::Blob(t.to_vec()),
        },
        ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
    }
}

/// One connection to a journal file (statements are prepared once and cached).
pub struct SqliteSql {
    conn: Connection,
    path: PathBuf,
    name: Arc<str>,
}

impl SqliteSql {
    pub(in crate::journal) fn from_conn(conn: Connection, path: PathBuf) -> SqliteSql {
        let name = path.display().to_string().into();
        SqliteSql { conn, path, name }
    }

    /// A read-only connection to an existing journal file (the dashboard's readers): no
    /// migration, never a write lock.
    pub fn open_read_only(path: &Path) -> Result<SqliteSql> {
        let wrap = |source| JournalError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(wrap)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(wrap)?;
        conn.pragma_update(None, "cache_size", -65536)
            .map_err(wrap)?;
        Ok(SqliteSql::from_conn(conn, path.to_path_buf()))
    }

    /// Waits up to `d` for another writer's lock (a long rebuild holds it).
    pub fn set_busy_timeout(&self, d: std::time::Duration) -> Result<()> {
        self.conn.busy_timeout(d).map_err(|e| self.wrap(e))
    }

    fn wrap(&self, source: rusqlite::Error) -> JournalError {
        JournalError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

impl SqlConn for SqliteSql {
    fn name(&self) -> &str {
        &self.name
    }

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec(&self, sql: &str, params: &[SqlValue]) -> Result<Exec> {
        let mut st = self.conn.prepare_cached(sql).map_err(|e| self.wrap(e))?;
        let n = st
            .execute(rusqlite::params_from_iter(params.iter()))
            .map_err(|e| self.wrap(e))?;
        Ok(Exec {
            affected: n as u64,
            last_id: self.conn.last_insert_rowid(),
        })
    }

    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<SqlRow>> {
        let mut st = self.conn.prepare_cached(sql).map_err(|e| self.wrap(e))?;
        let cols = st.column_count();
        let mut rows = st
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(|e| self.wrap(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.wrap(e))? {
            let mut values = Vec::with_capacity(cols);
            for i in 0..cols {
                values.push(value(r.get_ref(i).map_err(|e| self.wrap(e))?));
            }
            out.push(SqlRow::new(self.name.clone(), values));
        }
        Ok(out)
    }

    fn batch(&self, sql: &str) -> Result<()> {
        self.conn.execute_batch(sql).map_err(|e| self.wrap(e))
    }
}

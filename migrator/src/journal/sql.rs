//! [`SqlConn`]: one connection to a journal's database, for the journal's tables beyond the
//! [`super::JournalStore`] trait (the wave's controls, status and events, the route checks'
//! history, the dashboard's summary). Both backends implement it ([`super::SqliteJournal`]'s
//! file, [`super::MariaDbJournal`]'s server), so each of those readers and writers is one code
//! path; where the two SQL dialects differ, [`Dialect`] says how.
//!
//! Statements use `?` placeholders only (both dialects take them), with [`SqlValue`] arguments;
//! a connection is opened with the journal's schema migrations applied ([`super::open_sql`]).

use super::{JournalError, Result};
use std::sync::Arc;

/// A value passed to or read from a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::Int(v)
    }
}
impl From<u32> for SqlValue {
    fn from(v: u32) -> Self {
        SqlValue::Int(v.into())
    }
}
impl From<f64> for SqlValue {
    fn from(v: f64) -> Self {
        SqlValue::Real(v)
    }
}
impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(v.to_string())
    }
}
impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}
impl From<&String> for SqlValue {
    fn from(v: &String) -> Self {
        SqlValue::Text(v.clone())
    }
}
impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(SqlValue::Null, Into::into)
    }
}

/// What a statement changed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exec {
    /// Rows changed (on MariaDB: matched).
    pub affected: u64,
    /// The id an `INSERT` gave its row (0 when none).
    pub last_id: i64,
}

/// One row of a query's answer; each getter names the journal and the column when the value
/// is not of the expected type.
#[derive(Debug, Clone)]
pub struct SqlRow {
    journal: Arc<str>,
    values: Vec<SqlValue>,
}

impl SqlRow {
    pub(crate) fn new(journal: Arc<str>, values: Vec<SqlValue>) -> SqlRow {
        SqlRow { journal, values }
    }

    fn bad(&self, i: usize, want: &str) -> JournalError {
        JournalError::BadValue {
            journal: self.journal.to_string(),
            what: "a column",
            reason: format!(
                "column {i} is {:?}, expected {want}",
                self.values.get(i).unwrap_or(&SqlValue::Null)
            ),
        }
    }

    fn raw(&self, i: usize) -> &SqlValue {
        self.values.get(i).unwrap_or(&SqlValue::Null)
    }

    /// An integer, or `None` for NULL. Text holding a number (MariaDB's `SUM` is a decimal)
    /// is read as that number.
    pub fn opt_i64(&self, i: usize) -> Result<Option<i64>> {
        match self.raw(i) {
            SqlValue::Null => Ok(None),
            SqlValue::Int(v) => Ok(Some(*v)),
            SqlValue::Real(v) => Ok(Some(*v as i64)),
            SqlValue::Text(t) => t
                .parse::<i64>()
                .or_else(|_| t.parse::<f64>().map(|f| f as i64))
                .map(Some)
                .map_err(|_| self.bad(i, "an integer")),
            SqlValue::Blob(_) => Err(self.bad(i, "an integer")),
        }
    }

    pub fn i64(&self, i: usize) -> Result<i64> {
        self.opt_i64(i)?.ok_or_else(|| self.bad(i, "an integer"))
    }

    pub fn opt_f64(&self, i: usize) -> Result<Option<f64>> {
        match self.raw(i) {
            SqlValue::Null => Ok(None),
            SqlValue::Int(v) => Ok(Some(*v as f64)),
            SqlValue::Real(v) => Ok(Some(*v)),
            SqlValue::Text(t) => t
                .parse::<f64>()
                .map(Some)
                .map_err(|_| self.bad(i, "a number")),
            SqlValue::Blob(_) => Err(self.bad(i, "a number")),
        }
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.raw(i) {
            SqlValue::Null => Ok(None),
            SqlValue::Text(t) => Ok(Some(t.clone())),
            SqlValue::Int(v) => Ok(Some(v.to_string())),
            SqlValue::Real(v) => Ok(Some(v.to_string())),
            SqlValue::Blob(b) => String::from_utf8(b.clone())
                .map(Some)
                .map_err(|_| self.bad(i, "UTF-8 text")),
        }
    }

    pub fn text(&self, i: usize) -> Result<String> {
        self.opt_text(i)?.ok_or_else(|| self.bad(i, "text"))
    }
}

/// Which SQL a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    MariaDb,
}

impl Dialect {
    /// What follows `INSERT … VALUES(…)` to update the row whose key `key` exists already:
    /// the assignments come next.
    pub fn upsert(self, key: &str) -> String {
        match self {
            Dialect::Sqlite => format!("ON CONFLICT({key}) DO UPDATE SET"),
            Dialect::MariaDb => "ON DUPLICATE KEY UPDATE".to_string(),
        }
    }

    /// The value an upsert tried to insert into `col`.
    pub fn excluded(self, col: &str) -> String {
        match self {
            Dialect::Sqlite => format!("excluded.{col}"),
            Dialect::MariaDb => format!("VALUES({col})"),
        }
    }

    /// The key column of `checkpoints` (`key` is reserved in MariaDB).
    pub fn ckey(self) -> &'static str {
        match self {
            Dialect::Sqlite => "key",
            Dialect::MariaDb => "k",
        }
    }

    /// `a` and `b` concatenated (SQL expressions).
    pub fn concat(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Sqlite => format!("({a} || {b})"),
            Dialect::MariaDb => format!("CONCAT({a}, {b})"),
        }
    }

    /// `CAST(e AS <integer>)`.
    pub fn cast_int(self, e: &str) -> String {
        match self {
            Dialect::Sqlite => format!("CAST({e} AS INTEGER)"),
            Dialect::MariaDb => format!("CAST({e} AS SIGNED)"),
        }
    }
}

/// One connection to a journal's database (see the file's documentation). Every statement
/// commits when it returns unless the caller opened a transaction with [`SqlConn::batch`].
pub trait SqlConn: Send {
    /// The journal's name, as [`super::JournalStore::name`].
    fn name(&self) -> &str;
    fn dialect(&self) -> Dialect;
    /// Runs one statement.
    fn exec(&self, sql: &str, params: &[SqlValue]) -> Result<Exec>;
    /// Runs one query; its rows.
    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<SqlRow>>;
    /// Runs statements without parameters, `;`-separated (DDL, `BEGIN`/`COMMIT`).
    fn batch(&self, sql: &str) -> Result<()>;

    /// The first row, if any.
    fn row(&self, sql: &str, params: &[SqlValue]) -> Result<Option<SqlRow>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

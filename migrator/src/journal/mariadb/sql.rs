//! The MariaDB journal's connection as a [`SqlConn`].

use super::worker::Op;
use super::MariaDbJournal;
use crate::journal::sql::{Dialect, Exec, SqlConn, SqlRow, SqlValue};
use crate::journal::{JournalStore, Result};
use mysql_async::{Params, Value};
use std::sync::Arc;

/// One connection to a MariaDB journal (its own thread, as [`MariaDbJournal`]'s).
pub struct MariaDbSql {
    journal: MariaDbJournal,
    name: Arc<str>,
}

impl MariaDbSql {
    pub(super) fn new(journal: MariaDbJournal) -> MariaDbSql {
        let name = journal.name().into();
        MariaDbSql { journal, name }
    }
}

fn param(v: &SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::NULL,
        SqlValue::Int(i) => Value::Int(*i),
        SqlValue::Real(f) => Value::Double(*f),
        SqlValue::Text(t) => Value::Bytes(t.as_bytes().to_vec()),
        SqlValue::Blob(b) => Value::Bytes(b.clone()),
    }
}

fn params(values: &[SqlValue]) -> Params {
    if values.is_empty() {
        Params::Empty
    } else {
        Params::Positional(values.iter().map(param).collect())
    }
}

fn value(v: Value) -> SqlValue {
    match v {
        Value::NULL => SqlValue::Null,
        Value::Int(i) => SqlValue::Int(i),
        Value::UInt(u) => i64::try_from(u).map_or(SqlValue::Real(u as f64), SqlValue::Int),
        Value::Float(f) => SqlValue::Real(f.into()),
        Value::Double(f) => SqlValue::Real(f),
        Value::Bytes(b) => match String::from_utf8(b) {
            Ok(s) => SqlValue::Text(s),
            Err(e) => SqlValue::Blob(e.into_bytes()),
        },
        other => SqlValue::Text(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

impl SqlConn for MariaDbSql {
    fn name(&self) -> &str {
        &self.name
    }

    fn dialect(&self) -> Dialect {
        Dialect::MariaDb
    }

    fn exec(&self, sql: &str, p: &[SqlValue]) -> Result<Exec> {
        let r = self
            .journal
            .call(Op::Exec(sql.to_string().into(), params(p)))?;
        Ok(Exec {
            affected: r.affected,
            last_id: r.last_id.and_then(|i| i64::try_from(i).ok()).unwrap_or(0),
        })
    }

    fn query(&self, sql: &str, p: &[SqlValue]) -> Result<Vec<SqlRow>> {
        let rows = self
            .journal
            .call(Op::Query(sql.to_string().into(), params(p)))?
            .rows;
        Ok(rows
            .into_iter()
            .map(|r| {
                SqlRow::new(
                    self.name.clone(),
                    r.unwrap().into_iter().map(value).collect(),
                )
            })
            .collect())
    }

    fn batch(&self, sql: &str) -> Result<()> {
        self.journal.call(Op::Text(sql.to_string().into()))?;
        Ok(())
    }
}

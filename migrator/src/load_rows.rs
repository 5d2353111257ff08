//! The row stream of a database copy: one `SELECT` per table (in primary-key order) read from
//! the source snapshot becomes buffers the destination loads, with reading and writing
//! overlapped (a small channel between a reader on the source connection and a writer on the
//! destination connection). Each buffer is one statement, committed on its own (autocommit):
//! after it the caller records the last primary key it held (the resume point).
//!
//! Bytes travel untouched: the source session reads with `character_set_results = binary`
//! (every value in its column's own charset, no conversion) and the destination stores them
//! the same way. Rows go as `LOAD DATA LOCAL INFILE … CHARACTER SET binary` streamed from
//! memory when the destination allows `local_infile` (the server parses tab-separated fields,
//! far cheaper than SQL), else as multi-row `INSERT` statements sent with
//! `character_set_client = binary` (values as escaped byte strings). The per-table checksums
//! after the copy (`db_schema::table_checksum`) catch any value that did not survive.

use crate::db_schema::{ctx, ident, DbError, Result, Side, TableInfo};
use mysql_async::consts::ColumnType;
use mysql_async::prelude::*;
use mysql_async::{Conn, Value};

/// A buffer is sent when it reaches this size.
const STMT_BYTES: usize = 4 << 20;

fn is_numeric(t: ColumnType) -> bool {
    use ColumnType::*;
    matches!(
        t,
        MYSQL_TYPE_TINY
            | MYSQL_TYPE_SHORT
            | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG
            | MYSQL_TYPE_INT24
            | MYSQL_TYPE_FLOAT
            | MYSQL_TYPE_DOUBLE
            | MYSQL_TYPE_DECIMAL
            | MYSQL_TYPE_NEWDECIMAL
            | MYSQL_TYPE_YEAR
    )
}

/// Appends one value as an SQL literal: numbers raw, everything else as an escaped byte string
/// (the session's `character_set_client` is binary: the bytes land in the column unconverted).
fn push_value(out: &mut Vec<u8>, v: &Value, numeric: bool) {
    match v {
        Value::NULL => out.extend_from_slice(b"NULL"),
        Value::Bytes(b) if numeric => out.extend_from_slice(b),
        Value::Bytes(b) => {
            out.push(b'\'');
            for &c in b {
                match c {
                    0 => out.extend_from_slice(b"\\0"),
                    b'\'' => out.extend_from_slice(b"\\'"),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    0x1a => out.extend_from_slice(b"\\Z"),
                    c => out.push(c),
                }
            }
            out.push(b'\'');
        }
        other => out.extend_from_slice(other.as_sql(false).as_bytes()),
    }
}

/// Appends one value as a `LOAD DATA` field (tab-separated, backslash escapes, `\N` for NULL),
/// bytes as they are (the statement says `CHARACTER SET binary`).
fn push_field(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::NULL => out.extend_from_slice(b"\\N"),
        Value::Bytes(b) => {
            for &c in b {
                match c {
                    0 => out.extend_from_slice(b"\\0"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    c => out.push(c),
                }
            }
        }
        other => out.extend_from_slice(other.as_sql(true).trim_matches('\'').as_bytes()),
    }
}

/// A primary-key value as an SQL literal: printable ASCII quoted (numbers, dates and most
/// keys), anything else as a hex string (compared in the column's own charset).
fn pk_literal(v: &Option<Vec<u8>>) -> String {
    match v {
        None => "NULL".into(),
        Some(b) if b.iter().all(|c| (0x20..0x7f).contains(c)) => {
            crate::db_schema::literal(&String::from_utf8_lossy(b))
        }
        Some(b) => format!("X'{}'", hex::encode(b)),
    }
}

/// `pk > vals` written so the range optimizer uses the key, also for composite keys:
/// `a > x OR (a = x AND b > y)`.
pub fn pk_after(t: &TableInfo, vals: &[Option<Vec<u8>>]) -> String {
    let cols: Vec<String> = t.pk.iter().map(|c| ident(c)).collect();
    let lits: Vec<String> = vals.iter().map(pk_literal).collect();
    let n = cols.len().min(lits.len());
    let mut ors = Vec::new();
    for i in 0..n {
        let mut ands: Vec<String> = (0..i)
            .map(|j| format!("{} = {}", cols[j], lits[j]))
            .collect();
        ands.push(format!("{} > {}", cols[i], lits[i]));
        ors.push(format!("({})", ands.join(" AND ")));
    }
    ors.join(" OR ")
}

/// How rows travel to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMethod {
    /// `LOAD DATA LOCAL INFILE` streamed from memory (the server parses far less).
    LoadData,
    /// Multi-row `INSERT` statements (when the destination refuses `local_infile`).
    Insert,
}

/// The statement that loads one buffer (LOAD DATA), or the head of one (INSERT … VALUES).
fn load_head(db: &str, t: &TableInfo, method: LoadMethod) -> String {
    let cols: Vec<String> = t.columns.iter().map(|c| ident(c)).collect();
    let table = format!("{}.{}", ident(db), ident(&t.name));
    match method {
        LoadMethod::Insert => format!("INSERT INTO {table} ({}) VALUES ", cols.join(",")),
        LoadMethod::LoadData => format!(
            "LOAD DATA LOCAL INFILE 'migrator-rows' INTO TABLE {table} CHARACTER SET binary ({})",
            cols.join(",")
        ),
    }
}

/// One buffer committed on the destination.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    pub rows: u64,
    pub bytes: u64,
    /// The buffer's last row's primary-key values (raw bytes), when the table has a key.
    pub last_pk: Option<Vec<Option<Vec<u8>>>>,
}

/// Streams `select` (the whole table, or its rest after a resume point, in primary-key order)
/// from `src` into `dst`; returns rows and bytes. After each buffer is committed on the
/// destination, `committed` is told (the caller records the resume point there). Reading
/// the source and writing the destination overlap: full buffers go through a small channel
/// to a writer on the destination connection.
pub async fn copy_rows(
    src: &mut Conn,
    dst: &mut Conn,
    db: &str,
    t: &TableInfo,
    select: String,
    method: LoadMethod,
    committed: &mut (dyn FnMut(&Committed) -> Result<()> + Send),
) -> Result<(u64, u64)> {
    let pk_idx: Vec<usize> =
        t.pk.iter()
            .filter_map(|p| t.columns.iter().position(|c| c == p))
            .collect();
    let head = load_head(db, t, method);
    // INSERT text carries raw bytes: binary client charset for the stream only (DDL on this
    // connection must keep utf8mb4, its literals are UTF-8 text).
    const BINARY: &str = "SET character_set_client = binary, character_set_connection = binary";
    const TEXT: &str = "SET character_set_client = utf8mb4, character_set_connection = utf8mb4";
    let charset = |sql: &'static str| ctx(Side::Destination, move || sql.to_string());
    if method == LoadMethod::Insert {
        dst.query_drop(BINARY).await.map_err(charset(BINARY))?;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u8>, Committed)>(3);
    let insert_head = head.as_str();
    let reader = async move {
        let mut rows = src
            .query_iter(select)
            .await
            .map_err(ctx(Side::Source, || format!("reading `{}`", t.name)))?;
        let mut buf: Vec<u8> = Vec::with_capacity(STMT_BYTES + 65536);
        let (mut n, mut bytes, mut in_buf) = (0u64, 0u64, 0u64);
        let mut numeric: Option<Vec<bool>> = None;
        let mut last: Option<Vec<Value>> = None;
        let pk_of = |vals: &[Value]| -> Option<Vec<Option<Vec<u8>>>> {
            (!pk_idx.is_empty()).then(|| {
                pk_idx
                    .iter()
                    .map(|&i| match &vals[i] {
                        Value::Bytes(b) => Some(b.clone()),
                        _ => None,
                    })
                    .collect()
            })
        };
        while let Some(row) = rows
            .next()
            .await
            .map_err(ctx(Side::Source, || format!("reading `{}`", t.name)))?
        {
            let k = numeric.get_or_insert_with(|| {
                row.columns_ref()
                    .iter()
                    .map(|c| is_numeric(c.column_type()))
                    .collect()
            });
            let vals = row.unwrap();
            match method {
                LoadMethod::LoadData => {
                    for (i, v) in vals.iter().enumerate() {
                        if i > 0 {
                            buf.push(b'\t');
                        }
                        push_field(&mut buf, v);
                    }
                    buf.push(b'\n');
                }
                LoadMethod::Insert => {
                    if buf.is_empty() {
                        buf.extend_from_slice(insert_head.as_bytes());
                    } else {
                        buf.push(b',');
                    }
                    buf.push(b'(');
                    for (i, v) in vals.iter().enumerate() {
                        if i > 0 {
                            buf.push(b',');
                        }
                        push_value(&mut buf, v, k[i]);
                    }
                    buf.push(b')');
                }
            }
            n += 1;
            in_buf += 1;
            if buf.len() >= STMT_BYTES {
                bytes += buf.len() as u64;
                let done = Committed {
                    rows: in_buf,
                    bytes: buf.len() as u64,
                    last_pk: pk_of(&vals),
                };
                in_buf = 0;
                let full = std::mem::replace(&mut buf, Vec::with_capacity(STMT_BYTES + 65536));
                if tx.send((full, done)).await.is_err() {
                    break; // the writer failed: its error is the one to report
                }
            } else {
                last = Some(vals);
            }
        }
        drop(rows);
        if !buf.is_empty() {
            bytes += buf.len() as u64;
            let done = Committed {
                rows: in_buf,
                bytes: buf.len() as u64,
                last_pk: last.as_deref().and_then(pk_of),
            };
            let _ = tx.send((buf, done)).await;
        }
        Ok::<_, DbError>((n, bytes))
    };
    let writer = async {
        while let Some((buf, done)) = rx.recv().await {
            let werr = ctx(Side::Destination, || format!("writing `{}`", t.name));
            match method {
                LoadMethod::LoadData => {
                    use futures_util::StreamExt;
                    let data = bytes::Bytes::from(buf);
                    dst.set_infile_handler(async move {
                        Ok(futures_util::stream::once(async move { Ok(data) }).boxed())
                    });
                    dst.query_drop(head.as_str()).await.map_err(werr)?;
                }
                // Raw bytes: the session's character_set_client is binary.
                LoadMethod::Insert => dst.query_drop(buf).await.map_err(werr)?,
            }
            // Autocommit: the buffer is committed.
            committed(&done)?;
        }
        Ok::<_, DbError>(())
    };
    let (read, wrote) = tokio::join!(reader, writer);
    wrote?;
    let out = read?;
    if method == LoadMethod::Insert {
        dst.query_drop(TEXT).await.map_err(charset(TEXT))?;
    }
    Ok(out)
}

/// `LOAD DATA LOCAL` when the destination allows it (`local_infile`), else `INSERT`s.
pub async fn load_method(dst: &mut Conn) -> Result<LoadMethod> {
    let on: Option<i64> = dst
        .query_first("SELECT @@GLOBAL.local_infile")
        .await
        .map_err(ctx(Side::Destination, || {
            "reading local_infile".to_string()
        }))?;
    Ok(if on == Some(1) {
        LoadMethod::LoadData
    } else {
        LoadMethod::Insert
    })
}

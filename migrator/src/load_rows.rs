//! The row stream of a database copy: rows read from the source snapshot become buffers the
//! destination loads, with reading and writing overlapped (a two-buffer channel between a
//! reader on the source connection and a writer on the destination connection).
//!
//! Rows travel as `LOAD DATA LOCAL INFILE` data streamed from memory when the destination
//! allows `local_infile` (the server parses tab-separated fields, far cheaper than SQL), else
//! as multi-row `INSERT` statements. Binary values travel as hex and are decoded by the
//! server (`UNHEX` in the `SET` clause, `X'…'` literals), so every buffer is valid UTF-8 text
//! apart from the utf8mb4 values themselves. The per-table checksums after the copy
//! (`db_schema::table_checksum`) catch any value that did not survive.

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

/// Appends one value as an SQL literal: numbers raw, binary as hex, text quoted and escaped.
fn push_value(out: &mut Vec<u8>, v: &Value, numeric: bool, binary: bool) {
    match v {
        Value::NULL => out.extend_from_slice(b"NULL"),
        Value::Bytes(b) if numeric => out.extend_from_slice(b),
        Value::Bytes(b) if binary => {
            if b.is_empty() {
                out.extend_from_slice(b"''");
            } else {
                out.extend_from_slice(b"X'");
                out.extend_from_slice(hex::encode(b).as_bytes());
                out.push(b'\'');
            }
        }
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

/// Appends one value as a `LOAD DATA` field (tab-separated, backslash escapes, `\N` for NULL);
/// binary values as hex, turned back into bytes by `UNHEX` in the statement's `SET` clause.
fn push_field(out: &mut Vec<u8>, v: &Value, binary: bool) {
    match v {
        Value::NULL => out.extend_from_slice(b"\\N"),
        Value::Bytes(b) if binary => {
            let start = out.len();
            out.resize(start + 2 * b.len(), 0);
            hex::encode_to_slice(b, &mut out[start..]).expect("buffer sized for hex");
        }
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

/// How rows travel to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMethod {
    /// `LOAD DATA LOCAL INFILE` streamed from memory (the server parses far less).
    LoadData,
    /// Multi-row `INSERT` statements (when the destination refuses `local_infile`).
    Insert,
}

/// The statement that loads one buffer, and the buffer's per-row layout.
fn load_head(db: &str, t: &TableInfo, kinds: &[(bool, bool)], method: LoadMethod) -> String {
    match method {
        LoadMethod::Insert => {
            let cols: Vec<String> = t.columns.iter().map(|c| ident(c)).collect();
            format!(
                "INSERT INTO {}.{} ({}) VALUES ",
                ident(db),
                ident(&t.name),
                cols.join(",")
            )
        }
        LoadMethod::LoadData => {
            let mut targets = Vec::new();
            let mut sets = Vec::new();
            for (i, c) in t.columns.iter().enumerate() {
                if kinds.get(i).is_some_and(|k| k.1) {
                    targets.push(format!("@v{i}"));
                    sets.push(format!("{} = UNHEX(@v{i})", ident(c)));
                } else {
                    targets.push(ident(c));
                }
            }
            let set = if sets.is_empty() {
                String::new()
            } else {
                format!(" SET {}", sets.join(","))
            };
            format!(
                "LOAD DATA LOCAL INFILE 'migrator-rows' INTO TABLE {}.{} CHARACTER SET utf8mb4 \
                 ({}){set}",
                ident(db),
                ident(&t.name),
                targets.join(",")
            )
        }
    }
}

/// Copies one chunk (or the whole table when `where_sql` is empty); returns rows, bytes and
/// the last row's primary-key values. Reading the source and writing the destination overlap:
/// full buffers go through a small channel to a writer on the destination connection.
pub async fn copy_rows(
    src: &mut Conn,
    dst: &mut Conn,
    db: &str,
    t: &TableInfo,
    select: String,
    method: LoadMethod,
) -> Result<(u64, u64, Option<Vec<Option<String>>>)> {
    let pk_idx: Vec<usize> =
        t.pk.iter()
            .filter_map(|p| t.columns.iter().position(|c| c == p))
            .collect();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Vec<u8>)>(2);
    let reader = async move {
        let mut rows = src
            .query_iter(select)
            .await
            .map_err(ctx(Side::Source, || format!("reading `{}`", t.name)))?;
        let mut buf: Vec<u8> = Vec::with_capacity(STMT_BYTES + 65536);
        let (mut n, mut bytes) = (0u64, 0u64);
        let mut last_pk = None;
        let mut kinds: Option<(Vec<(bool, bool)>, String)> = None;
        while let Some(row) = rows
            .next()
            .await
            .map_err(ctx(Side::Source, || format!("reading `{}`", t.name)))?
        {
            let (k, head) = kinds.get_or_insert_with(|| {
                let k: Vec<(bool, bool)> = row
                    .columns_ref()
                    .iter()
                    .map(|c| (is_numeric(c.column_type()), c.character_set() == 63))
                    .collect();
                let head = load_head(db, t, &k, method);
                (k, head)
            });
            let vals = row.unwrap();
            if !pk_idx.is_empty() {
                last_pk = Some(
                    pk_idx
                        .iter()
                        .map(|&i| match &vals[i] {
                            Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
                            _ => None,
                        })
                        .collect(),
                );
            }
            match method {
                LoadMethod::LoadData => {
                    for (i, v) in vals.iter().enumerate() {
                        if i > 0 {
                            buf.push(b'\t');
                        }
                        push_field(&mut buf, v, k[i].1);
                    }
                    buf.push(b'\n');
                }
                LoadMethod::Insert => {
                    if buf.is_empty() {
                        buf.extend_from_slice(head.as_bytes());
                    } else {
                        buf.push(b',');
                    }
                    buf.push(b'(');
                    for (i, v) in vals.iter().enumerate() {
                        if i > 0 {
                            buf.push(b',');
                        }
                        push_value(&mut buf, v, k[i].0, k[i].1);
                    }
                    buf.push(b')');
                }
            }
            n += 1;
            if buf.len() >= STMT_BYTES {
                bytes += buf.len() as u64;
                let full = std::mem::replace(&mut buf, Vec::with_capacity(STMT_BYTES + 65536));
                if tx.send((head.clone(), full)).await.is_err() {
                    break; // the writer failed: its error is the one to report
                }
            }
        }
        drop(rows);
        if !buf.is_empty() {
            bytes += buf.len() as u64;
            if let Some((_, head)) = &kinds {
                let _ = tx.send((head.clone(), buf)).await;
            }
        }
        Ok::<_, DbError>((n, bytes, last_pk))
    };
    let writer = async {
        while let Some((head, buf)) = rx.recv().await {
            let werr = ctx(Side::Destination, || format!("writing `{}`", t.name));
            match method {
                LoadMethod::LoadData => {
                    use futures_util::StreamExt;
                    let data = bytes::Bytes::from(buf);
                    dst.set_infile_handler(async move {
                        Ok(futures_util::stream::once(async move { Ok(data) }).boxed())
                    });
                    dst.query_drop(head).await.map_err(werr)?;
                }
                LoadMethod::Insert => {
                    // Text values were read as utf8mb4, binary values are hex: valid UTF-8.
                    let s = String::from_utf8(buf)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                    dst.query_drop(s).await.map_err(werr)?;
                }
            }
        }
        Ok::<_, DbError>(())
    };
    let (read, wrote) = tokio::join!(reader, writer);
    wrote?;
    read
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

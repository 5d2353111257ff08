//! Binary log positions, and what the source server says about its binary log: whether its
//! changes can be captured at all, its current position, and the position of a snapshot.

use crate::db::schema::{ctx, DbError, Result, Side};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::cmp::Ordering;

/// A position in the source's binary log: a file and a byte offset in it. Positions the
/// capture records are transaction boundaries.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BinlogPos {
    pub file: String,
    pub pos: u64,
}

impl BinlogPos {
    pub fn new(file: impl Into<String>, pos: u64) -> BinlogPos {
        BinlogPos {
            file: file.into(),
            pos,
        }
    }

    /// The file's sequence number (`binlog.000042` → 42), when it has one.
    fn seq(&self) -> Option<u64> {
        self.file.rsplit_once('.').and_then(|(_, n)| n.parse().ok())
    }
}

impl std::fmt::Display for BinlogPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

impl PartialOrd for BinlogPos {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Files in sequence order (`binlog.000010` after `binlog.000009`), then offsets.
impl Ord for BinlogPos {
    fn cmp(&self, other: &Self) -> Ordering {
        let files = match (self.seq(), other.seq()) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => self.file.cmp(&other.file),
        };
        files.then(self.pos.cmp(&other.pos))
    }
}

/// Why a source's changes cannot be captured from its binary log, with the server setting
/// to change. `None`: capturable (binary log on, ROW format, full row images).
pub async fn not_capturable(conn: &mut Conn) -> Result<Option<String>> {
    let row: Option<(u64, String, String)> = conn
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image")
        .await
        .map_err(ctx(Side::Source, || {
            "reading the binary log settings".into()
        }))?;
    let Some((log_bin, format, image)) = row else {
        return Ok(Some(
            "the server did not report its binary log settings".into(),
        ));
    };
    Ok(if log_bin == 0 {
        Some("the binary log is off (start mariadbd with --log-bin and a --server-id)".into())
    } else if !format.eq_ignore_ascii_case("ROW") {
        Some(format!(
            "binlog_format is {format}, not ROW (SET GLOBAL binlog_format = 'ROW' and \
             binlog_format=ROW in the server's configuration)"
        ))
    } else if !image.eq_ignore_ascii_case("FULL") {
        Some(format!(
            "binlog_row_image is {image}, not FULL (SET GLOBAL binlog_row_image = 'FULL' and \
             binlog_row_image=FULL in the server's configuration)"
        ))
    } else {
        None
    })
}

/// The source's current binary log position (the end of the last committed transaction).
pub async fn source_position(conn: &mut Conn) -> Result<BinlogPos> {
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(ctx(Side::Source, || "SHOW MASTER STATUS".into()))?;
    let row = row.ok_or_else(|| DbError::Capture {
        db: String::new(),
        reason: "SHOW MASTER STATUS returned nothing: the binary log is off".into(),
    })?;
    let file: Option<String> = row.get(0);
    let pos: Option<u64> = row.get(1);
    match (file, pos) {
        (Some(file), Some(pos)) => Ok(BinlogPos { file, pos }),
        _ => Err(DbError::Capture {
            db: String::new(),
            reason: "SHOW MASTER STATUS: no file or position".into(),
        }),
    }
}

/// The binary log position of the consistent snapshot open on `conn` (MariaDB's
/// `binlog_snapshot_file` / `binlog_snapshot_position`, read inside the snapshot's
/// transaction): every transaction committed before it is in the snapshot, none after.
pub async fn snapshot_position(conn: &mut Conn) -> Result<BinlogPos> {
    let rows: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(ctx(Side::Source, || {
            "SHOW STATUS LIKE 'binlog_snapshot_%'".into()
        }))?;
    let get = |k: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    match (
        get("binlog_snapshot_file"),
        get("binlog_snapshot_position").and_then(|p| p.parse().ok()),
    ) {
        (Some(file), Some(pos)) if !file.is_empty() => Ok(BinlogPos { file, pos }),
        _ => Err(DbError::Capture {
            db: String::new(),
            reason: "the server reports no binlog_snapshot_file/position (not MariaDB, or \
                     the binary log is off)"
                .into(),
        }),
    }
}

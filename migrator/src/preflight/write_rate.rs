//! Per-database write rates measured on a source server, not taken from the inventory: the
//! server's binary log position is read at the start of its scan and again at least
//! `write_sample_s` later ([`binlog_pos`]); the events written between the two
//! (`SHOW BINLOG EVENTS`) are attributed to their database ([`attribute`]) and divided by the
//! time between the two readings. The binary log is exactly what change capture replays at
//! the freeze, so its bytes per second are the apply volume the predicted freeze needs.
//!
//! Attribution: a `Table_map` event names `db.table` for a table id; the row events
//! (`Write_rows`, `Update_rows`, `Delete_rows`, compressed or not) that follow carry that id;
//! a statement (`Query`, `use `db`; ...`) names its database. Transaction framing (GTID,
//! `BEGIN`, `Xid`), annotations and rotations belong to no database. A server without a
//! binary log has no capture either: its databases are copied whole inside the freeze and the
//! write rate does not enter the prediction; the inventory's figure stays, marked not measured.

use super::{PreflightError, Result};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::collections::{BTreeMap, HashMap};

/// Events read at most per measurement: on a busier server the events read are a sample of
/// the window ([`BinlogBytes::truncated`]), each database's share of them scaled to the
/// window's bytes ([`BinlogBytes::rate`]).
pub const MAX_EVENTS: u64 = 200_000;

/// A position in a server's binary log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogPos {
    pub file: String,
    pub pos: u64,
}

/// One event as `SHOW BINLOG EVENTS` lists it.
#[derive(Debug, Clone)]
pub struct Event {
    pub pos: u64,
    pub event_type: String,
    pub end_log_pos: u64,
    pub info: String,
}

/// Bytes of binary log between two positions, per database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BinlogBytes {
    pub by_db: BTreeMap<String, u64>,
    /// Every event's bytes, attributed or not.
    pub total: u64,
    /// [`MAX_EVENTS`] were read before the end position.
    pub truncated: bool,
    /// Bytes between the two positions (the files' sizes).
    pub window: u64,
}

impl BinlogBytes {
    /// `db`'s bytes per second over `secs`.
    pub fn rate(&self, db: &str, secs: f64) -> f64 {
        let bytes = *self.by_db.get(db).unwrap_or(&0) as f64;
        let scale = if self.truncated && self.total > 0 {
            self.window as f64 / self.total as f64
        } else {
            1.0
        };
        bytes * scale / secs.max(1e-3)
    }
}

fn err(server: &str, what: String) -> impl FnOnce(mysql_async::Error) -> PreflightError {
    let server = server.to_string();
    move |source| PreflightError::Db {
        server,
        what,
        source,
    }
}

/// The server's current binary log position, `None` without a binary log.
pub async fn binlog_pos(id: &str, conn: &mut Conn) -> Result<Option<BinlogPos>> {
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(err(id, "reading the binary log position".into()))?;
    Ok(row.and_then(|r| {
        Some(BinlogPos {
            file: r.get::<String, _>(0)?,
            pos: r.get::<u64, _>(1)?,
        })
    }))
}

/// A binary log file name as the server gives it, checked before it is put in a statement.
fn log_name(id: &str, name: &str) -> Result<String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Ok(name.to_string())
    } else {
        Err(PreflightError::Config {
            file: format!("SQL server {id}"),
            message: format!("binary log file name {name:?} has unexpected characters"),
        })
    }
}

/// The binary log between `from` and `to` (see the file's documentation), per database.
pub async fn binlog_bytes(
    id: &str,
    conn: &mut Conn,
    from: &BinlogPos,
    to: &BinlogPos,
) -> Result<BinlogBytes> {
    let logs: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(err(id, "listing the binary logs".into()))?;
    let logs: Vec<(String, u64)> = logs
        .into_iter()
        .filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1)?)))
        .collect();
    let names: Vec<String> = logs.iter().map(|(n, _)| n.clone()).collect();
    let first = names.iter().position(|n| *n == from.file);
    let last = names.iter().position(|n| *n == to.file);
    let (Some(first), Some(last)) = (first, last) else {
        // Purged in between: nothing can be said; no rate rather than a wrong one.
        return Err(PreflightError::Config {
            file: format!("SQL server {id}"),
            message: format!(
                "binary log {} or {} was purged while write rates were measured",
                from.file, to.file
            ),
        });
    };
    let window: u64 = (first..=last)
        .map(|i| {
            let end = if i == last { to.pos } else { logs[i].1 };
            let start = if i == first { from.pos } else { 4 };
            end.saturating_sub(start)
        })
        .sum();
    let mut events = Vec::new();
    let mut budget = MAX_EVENTS;
    for name in &names[first..=last] {
        let file = log_name(id, name)?;
        let start = if *name == from.file { from.pos } else { 4 };
        let rows: Vec<(String, u64, String, u64, u64, String)> = conn
            .query(format!(
                "SHOW BINLOG EVENTS IN '{file}' FROM {start} LIMIT {budget}"
            ))
            .await
            .map_err(err(id, format!("reading binary log {file}")))?;
        let n = rows.len() as u64;
        for (_, pos, event_type, _, end_log_pos, info) in rows {
            if *name == to.file && pos >= to.pos {
                break;
            }
            events.push(Event {
                pos,
                event_type,
                end_log_pos,
                info,
            });
        }
        budget -= n.min(budget);
        if budget == 0 {
            let mut b = attribute(&events);
            b.truncated = true;
            b.window = window;
            return Ok(b);
        }
    }
    let mut b = attribute(&events);
    b.window = window;
    Ok(b)
}

/// Each event's bytes to its database (see the file's documentation).
pub fn attribute(events: &[Event]) -> BinlogBytes {
    let mut out = BinlogBytes::default();
    let mut tables: HashMap<u64, String> = HashMap::new();
    for e in events {
        let bytes = e.end_log_pos.saturating_sub(e.pos);
        out.total += bytes;
        let db = match e.event_type.as_str() {
            "Table_map" => table_map(&e.info).map(|(id, db)| {
                tables.insert(id, db.to_string());
                db.to_string()
            }),
            t if t.contains("_rows") && !t.starts_with("Annotate") => {
                table_id(&e.info).and_then(|id| tables.get(&id).cloned())
            }
            t if t.starts_with("Query") => use_db(&e.info).map(str::to_string),
            _ => None,
        };
        if let Some(db) = db {
            *out.by_db.entry(db).or_default() += bytes;
        }
    }
    out
}

/// `table_id: 33 ...` → 33.
fn table_id(info: &str) -> Option<u64> {
    let rest = info.strip_prefix("table_id: ")?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `table_id: 33 (shop.orders)` → (33, "shop").
fn table_map(info: &str) -> Option<(u64, &str)> {
    let id = table_id(info)?;
    let open = info.find('(')?;
    let name = info[open + 1..].strip_suffix(')')?;
    Some((id, name.split_once('.')?.0))
}

/// `use `shop`; INSERT ...` → "shop".
fn use_db(info: &str) -> Option<&str> {
    let rest = info.strip_prefix("use `")?;
    Some(&rest[..rest.find("`;")?])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(pos: u64, t: &str, end: u64, info: &str) -> Event {
        Event {
            pos,
            event_type: t.into(),
            end_log_pos: end,
            info: info.into(),
        }
    }

    #[test]
    fn events_are_attributed_to_their_database() {
        let b = attribute(&[
            ev(100, "Gtid", 142, "BEGIN GTID 0-7-5"),
            ev(
                142,
                "Annotate_rows",
                200,
                "INSERT INTO shop.orders VALUES (1)",
            ),
            ev(200, "Table_map", 250, "table_id: 33 (shop.orders)"),
            ev(250, "Write_rows_v1", 1300, "table_id: 33 flags: STMT_END_F"),
            ev(1300, "Xid", 1331, "COMMIT /* xid=9 */"),
            ev(1331, "Table_map", 1380, "table_id: 34 (blog.posts)"),
            ev(
                1380,
                "Update_rows_compressed_v1",
                1500,
                "table_id: 34 flags: STMT_END_F",
            ),
            ev(
                1500,
                "Query",
                1600,
                "use `blog`; DELETE FROM posts WHERE id < 3",
            ),
            ev(1600, "Query", 1650, "BEGIN"),
            ev(
                1650,
                "Write_rows_v1",
                1700,
                "table_id: 99 flags: STMT_END_F",
            ),
        ]);
        assert_eq!(b.by_db["shop"], 50 + 1050);
        assert_eq!(b.by_db["blog"], 49 + 120 + 100);
        assert_eq!(b.by_db.len(), 2, "{b:?}");
        assert_eq!(b.total, 1600);
    }
}

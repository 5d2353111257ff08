//! The journal's record of route checks: table `route_checks(id, checked_ms, mismatches,
//! unreachable, json)`, one row per check (`lease-watch` rounds, `routes check`, `routes
//! reconcile`, the start of `wave run`), the last [`KEEP`] kept. `json` is the
//! [`RouteReport`] with at most [`MAX_FINDINGS`] mismatches (`mismatches_total` says how many
//! there were). The dashboard reads the latest row ([`latest`]): its overview banner and
//! `/metrics` (`migrator_route_mismatches`, `migrator_route_check_age_seconds`).

use super::{RouteCheckError, RouteReport};
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use std::path::Path;

/// Rows kept (a `lease-watch` every 5 s: about 80 minutes of history).
pub const KEEP: i64 = 1000;
/// Mismatches stored per row; the counts are always whole.
pub const MAX_FINDINGS: usize = 200;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS route_checks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, checked_ms INTEGER NOT NULL,
    mismatches INTEGER NOT NULL, unreachable INTEGER NOT NULL, json TEXT NOT NULL);
";

/// The latest recorded check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recorded {
    pub checked_ms: i64,
    pub mismatches: i64,
    pub unreachable: i64,
    /// The stored report (mismatches capped at [`MAX_FINDINGS`]).
    pub report: serde_json::Value,
}

/// Appends `report` to the journal's `route_checks` (created on first use).
pub fn record(journal: &Path, report: &RouteReport) -> Result<(), RouteCheckError> {
    let wrap = |source| RouteCheckError::Sqlite {
        path: journal.to_path_buf(),
        source,
    };
    let conn = Connection::open(journal).map_err(wrap)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(wrap)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(wrap)?;
    conn.execute_batch(SCHEMA).map_err(wrap)?;
    let mut stored = report.clone();
    stored.mismatches.truncate(MAX_FINDINGS);
    let mut json = serde_json::to_value(&stored).unwrap_or(serde_json::Value::Null);
    if let Some(o) = json.as_object_mut() {
        o.insert(
            "mismatches_total".into(),
            serde_json::Value::from(report.mismatches.len()),
        );
    }
    conn.execute(
        "INSERT INTO route_checks (checked_ms, mismatches, unreachable, json)
         VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![
            report.checked_ms,
            report.mismatches.len() as i64,
            report.unreachable.len() as i64,
            json.to_string()
        ],
    )
    .map_err(wrap)?;
    conn.execute(
        "DELETE FROM route_checks WHERE id <= (SELECT MAX(id) FROM route_checks) - ?1",
        [KEEP],
    )
    .map_err(wrap)?;
    Ok(())
}

/// The latest check, if any was recorded (the table may not exist yet).
pub fn latest(conn: &Connection) -> rusqlite::Result<Option<Recorded>> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'route_checks')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    conn.query_row(
        "SELECT checked_ms, mismatches, unreachable, json FROM route_checks
          ORDER BY id DESC LIMIT 1",
        [],
        |r| {
            let json: String = r.get(3)?;
            Ok(Recorded {
                checked_ms: r.get(0)?,
                mismatches: r.get(1)?,
                unreachable: r.get(2)?,
                report: serde_json::from_str(&json).unwrap_or(serde_json::Value::Null),
            })
        },
    )
    .optional()
}

//! The journal's record of route checks: table `route_checks(id, checked_ms, mismatches,
//! unreachable, json)`, one row per check (`lease-watch` rounds, `routes check`, `routes
//! reconcile`, the start of `wave run`), the last [`KEEP`] kept. `json` is the
//! [`RouteReport`] with at most [`MAX_FINDINGS`] mismatches (`mismatches_total` says how many
//! there were). The dashboard reads the latest row ([`latest`]): its overview banner and
//! `/metrics` (`migrator_route_mismatches`, `migrator_route_check_age_seconds`).

use super::{RouteCheckError, RouteReport};
use crate::journal::{JournalError, SqlConn};
use serde::Serialize;
use std::path::Path;

/// Rows kept (a `lease-watch` every 5 s: about 80 minutes of history).
pub const KEEP: i64 = 1000;
/// Mismatches stored per row; the counts are always whole.
pub const MAX_FINDINGS: usize = 200;

/// The latest recorded check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recorded {
    pub checked_ms: i64,
    pub mismatches: i64,
    pub unreachable: i64,
    /// The stored report (mismatches capped at [`MAX_FINDINGS`]).
    pub report: serde_json::Value,
}

/// Appends `report` to the `route_checks` of the journal a `--journal` value names (a file
/// or a MariaDB URL).
pub fn record(journal: &Path, report: &RouteReport) -> Result<(), RouteCheckError> {
    let db = crate::journal::open_sql_at(journal)?;
    record_on(&*db, report)?;
    Ok(())
}

/// Appends `report` to the journal's `route_checks`, keeping the last [`KEEP`].
pub fn record_on(db: &dyn SqlConn, report: &RouteReport) -> Result<(), JournalError> {
    let mut stored = report.clone();
    stored.mismatches.truncate(MAX_FINDINGS);
    let mut json = serde_json::to_value(&stored).unwrap_or(serde_json::Value::Null);
    if let Some(o) = json.as_object_mut() {
        o.insert(
            "mismatches_total".into(),
            serde_json::Value::from(report.mismatches.len()),
        );
    }
    let r = db.exec(
        "INSERT INTO route_checks (checked_ms, mismatches, unreachable, json)
         VALUES (?, ?, ?, ?)",
        &[
            report.checked_ms.into(),
            (report.mismatches.len() as i64).into(),
            (report.unreachable.len() as i64).into(),
            json.to_string().into(),
        ],
    )?;
    db.exec(
        "DELETE FROM route_checks WHERE id <= ?",
        &[(r.last_id - KEEP).into()],
    )?;
    Ok(())
}

/// The latest check, if any was recorded.
pub fn latest(db: &dyn SqlConn) -> Result<Option<Recorded>, JournalError> {
    let Some(r) = db.row(
        "SELECT checked_ms, mismatches, unreachable, json FROM route_checks
          ORDER BY id DESC LIMIT 1",
        &[],
    )?
    else {
        return Ok(None);
    };
    Ok(Some(Recorded {
        checked_ms: r.i64(0)?,
        mismatches: r.i64(1)?,
        unreachable: r.i64(2)?,
        report: serde_json::from_str(&r.text(3)?).unwrap_or(serde_json::Value::Null),
    }))
}

//! Pre-flight results kept in the journal: table `preflight_sites(site, stamp, verdict, json,
//! scanned_ms)` (journal schema version 4, both backends), one row per site, written as soon
//! as the site is done. A rerun reuses a site's code findings when its home's stamp is the
//! one stored (nothing in the home changed), so only changed homes are read again; a run
//! killed at any point resumes from the rows already written.

use super::verdict::SiteReport;
use crate::journal::{JournalError, SqlConn, SqlValue};

/// Stores (replaces) a site's report.
pub fn save(db: &dyn SqlConn, r: &SiteReport) -> Result<(), JournalError> {
    let json = serde_json::to_string(r).expect("reports always serialize");
    let up = db.dialect().upsert("site");
    let ex = |c: &str| db.dialect().excluded(c);
    db.exec(
        &format!(
            "INSERT INTO preflight_sites (site, stamp, verdict, json, scanned_ms)
             VALUES (?, ?, ?, ?, ?) {up} stamp = {}, verdict = {}, json = {}, scanned_ms = {}",
            ex("stamp"),
            ex("verdict"),
            ex("json"),
            ex("scanned_ms")
        ),
        &[
            SqlValue::from(r.site.as_str()),
            format!("{:016x}", r.home_stamp).into(),
            r.verdict.as_str().into(),
            json.into(),
            crate::journal::now_ms().into(),
        ],
    )?;
    Ok(())
}

/// A site's stored report, if any.
pub fn load(db: &dyn SqlConn, site: &str) -> Result<Option<SiteReport>, JournalError> {
    let Some(row) = db.row(
        "SELECT json FROM preflight_sites WHERE site = ?",
        &[site.into()],
    )?
    else {
        return Ok(None);
    };
    let json = row.text(0)?;
    serde_json::from_str(&json)
        .map(Some)
        .map_err(|e| JournalError::BadValue {
            journal: db.name().to_string(),
            what: "a preflight_sites row",
            reason: format!("site {site}: {e}"),
        })
}

/// Sites per verdict, as stored.
pub fn counts(db: &dyn SqlConn) -> Result<Vec<(String, i64)>, JournalError> {
    db.query(
        "SELECT verdict, COUNT(*) FROM preflight_sites GROUP BY verdict ORDER BY verdict",
        &[],
    )?
    .iter()
    .map(|r| Ok((r.text(0)?, r.i64(1)?)))
    .collect()
}

//! The site page's read model: one site's summary row, its steps (the timeline) from the
//! journal's `(site, id)` index, its verification results, cutover checkpoints and controls.

use crate::cutover::checkpoints::SCOPE;
use crate::journal::SiteState;
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub id: i64,
    pub phase: String,
    pub status: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub bytes: i64,
    pub checksum: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Control {
    pub id: i64,
    pub at_ms: i64,
    pub who: String,
    pub action: String,
    pub target: String,
    pub detail: Option<String>,
    pub result: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SiteDetail {
    pub site: String,
    pub wave: Option<i64>,
    /// JSON: the state's journal name (`live`, `rolled_back`, ...).
    pub state: SiteState,
    pub bytes: i64,
    pub freeze_ms: Option<f64>,
    pub errors: i64,
    pub steps: Vec<Step>,
    /// Verification phases (`verify`, `rollback-verify`, `post-check`) and their outcome.
    pub verification: Vec<Step>,
    /// The site's cutover checkpoints (fingerprint, last delta, freeze figures).
    pub checkpoints: Vec<(String, String)>,
    /// A rollback is offered for switched or live sites.
    pub can_rollback: bool,
    pub controls: Vec<Control>,
}

/// The site page; `None` when the site is in neither the journal nor the plan.
pub fn site_detail(conn: &Connection, site: &str) -> rusqlite::Result<Option<SiteDetail>> {
    let row = conn
        .query_row(
            "SELECT wave, state, bytes, freeze_ms, errors FROM dash_site WHERE site = ?1",
            [site],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, SiteState>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<f64>>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            },
        )
        .optional()?;
    let Some((wave, state, bytes, freeze_ms, errors)) = row else {
        return Ok(None);
    };
    let mut st = conn.prepare_cached(
        "SELECT id, phase, status, started_ms, ended_ms, bytes, checksum, error FROM steps
          WHERE site = ?1 ORDER BY id",
    )?;
    let steps = st
        .query_map([site], |r| {
            Ok(Step {
                id: r.get(0)?,
                phase: r.get(1)?,
                status: r.get(2)?,
                started_ms: r.get(3)?,
                ended_ms: r.get(4)?,
                bytes: r.get(5)?,
                checksum: r.get(6)?,
                error: r.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let verification = steps
        .iter()
        .filter(|s| {
            matches!(
                s.phase.as_str(),
                "verify" | "rollback-verify" | "post-verify" | "post-check"
            )
        })
        .cloned()
        .collect();
    let prefix = crate::cutover::checkpoints::site_prefix(site);
    let mut st = conn.prepare_cached(
        "SELECT key, value FROM checkpoints WHERE scope = ?1 AND key >= ?2 AND key < ?3
          ORDER BY key",
    )?;
    // Every key from `<site>.` up to `<site>/` (the character after the dot): the site's own.
    let upper = format!("{site}/");
    let checkpoints = st
        .query_map([SCOPE, &prefix, &upper], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .filter_map(|r| r.ok())
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k[prefix.len()..].to_string(), v))
        .collect();
    let can_rollback = matches!(state, SiteState::Switched | SiteState::Live);
    let controls = controls_for(conn, site, 20)?;
    Ok(Some(SiteDetail {
        site: site.to_string(),
        wave: (wave != 0).then_some(wave),
        state,
        bytes,
        freeze_ms,
        errors,
        steps,
        verification,
        checkpoints,
        can_rollback,
        controls,
    }))
}

/// The latest controls on `target` (a site name, or `wave N`); all targets with `""`.
pub fn controls_for(conn: &Connection, target: &str, limit: i64) -> rusqlite::Result<Vec<Control>> {
    let mut st = conn.prepare_cached(
        "SELECT id, at_ms, who, action, target, detail, result FROM dash_controls
          WHERE ?1 = '' OR target = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = st.query_map(rusqlite::params![target, limit], |r| {
        Ok(Control {
            id: r.get(0)?,
            at_ms: r.get(1)?,
            who: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            detail: r.get(5)?,
            result: r.get(6)?,
        })
    })?;
    rows.collect()
}

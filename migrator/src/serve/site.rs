//! The site page's read model: one site's summary row, its steps (the timeline) from the
//! journal's `(site, id)` index, its verification results, cutover checkpoints and controls.

use crate::cutover::checkpoints::SCOPE;
use crate::journal::{JournalError, SiteState, SqlConn, SqlRow};
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
    /// The site's consistency-point bundle state (`migrator bundle`), when it has one.
    pub bundle: Option<crate::bundle::state::BundleState>,
    /// A rollback is offered for switched or live sites.
    pub can_rollback: bool,
    pub controls: Vec<Control>,
}

fn step(r: &SqlRow) -> Result<Step, JournalError> {
    Ok(Step {
        id: r.i64(0)?,
        phase: r.text(1)?,
        status: r.text(2)?,
        started_ms: r.i64(3)?,
        ended_ms: r.opt_i64(4)?,
        bytes: r.i64(5)?,
        checksum: r.opt_text(6)?,
        error: r.opt_text(7)?,
    })
}

/// The site page; `None` when the site is in neither the journal nor the plan.
pub fn site_detail(db: &dyn SqlConn, site: &str) -> Result<Option<SiteDetail>, JournalError> {
    let Some(r) = db.row(
        "SELECT wave, state, bytes, freeze_ms, errors FROM dash_site WHERE site = ?",
        &[site.into()],
    )?
    else {
        return Ok(None);
    };
    let wave = r.i64(0)?;
    let state = crate::journal::parse_state(db.name(), site, r.text(1)?)?;
    let (bytes, freeze_ms, errors) = (r.i64(2)?, r.opt_f64(3)?, r.i64(4)?);
    let steps = db
        .query(
            "SELECT id, phase, status, started_ms, ended_ms, bytes, checksum, error FROM steps
              WHERE site = ? ORDER BY id",
            &[site.into()],
        )?
        .iter()
        .map(step)
        .collect::<Result<Vec<_>, _>>()?;
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
    // Every key from `<site>.` up to `<site>/` (the character after the dot): the site's own.
    let upper = format!("{site}/");
    let k = db.dialect().ckey();
    let checkpoints = db
        .query(
            &format!(
                "SELECT {k}, value FROM checkpoints WHERE scope = ? AND {k} >= ? AND {k} < ?
                  ORDER BY {k}"
            ),
            &[SCOPE.into(), prefix.as_str().into(), upper.into()],
        )?
        .iter()
        .filter_map(|r| Some((r.text(0).ok()?, r.text(1).ok()?)))
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k[prefix.len()..].to_string(), v))
        .collect();
    let can_rollback = matches!(state, SiteState::Switched | SiteState::Live);
    let controls = controls_for(db, site, 20)?;
    let bundle = db
        .row(
            &format!("SELECT value FROM checkpoints WHERE scope = ? AND {k} = ?"),
            &[crate::bundle::state::SCOPE.into(), site.into()],
        )?
        .and_then(|r| r.text(0).ok())
        .and_then(|v| serde_json::from_str(&v).ok());
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
        bundle,
        can_rollback,
        controls,
    }))
}

/// The latest controls on `target` (a site name, or `wave N`); all targets with `""`.
pub fn controls_for(
    db: &dyn SqlConn,
    target: &str,
    limit: i64,
) -> Result<Vec<Control>, JournalError> {
    db.query(
        "SELECT id, at_ms, who, action, target, detail, result FROM dash_controls
          WHERE ? = '' OR target = ? ORDER BY id DESC LIMIT ?",
        &[target.into(), target.into(), limit.into()],
    )?
    .iter()
    .map(|r| {
        Ok(Control {
            id: r.i64(0)?,
            at_ms: r.i64(1)?,
            who: r.text(2)?,
            action: r.text(3)?,
            target: r.text(4)?,
            detail: r.opt_text(5)?,
            result: r.opt_text(6)?,
        })
    })
    .collect()
}

//! The dashboard's read model: every page and API answer is built here from the summary tables
//! of [`super::summary`] (a few hundred rows whatever the journal's size) and, for one page of
//! sites or one site, from the journal's `steps` through its `(site, id)` index.

use crate::journal::{JournalError, SiteState, SqlConn, SqlValue};
use serde::Serialize;
use std::collections::BTreeMap;

/// Minutes shown by the time-series charts.
pub const SERIES_MINUTES: i64 = 360;
/// Window of the "current" rates (throughput, error rate, sites per minute).
pub const RATE_MINUTES: i64 = 15;

#[derive(Debug, Serialize)]
pub struct WaveRow {
    pub wave: i64,
    pub kind: String,
    pub window: String,
    pub planned_sites: i64,
    pub states: BTreeMap<String, i64>,
    /// live + finalized.
    pub done: i64,
    /// failed + aborted + rolled_back.
    pub failed: i64,
    /// Sites in a state between planned and live.
    pub in_flight: i64,
    pub progress_pct: f64,
    pub eta_seconds: Option<f64>,
    /// The wave the journal's plan reference names as the one being run.
    pub current: bool,
}

#[derive(Debug, Serialize, Default)]
pub struct FreezeStats {
    pub count: i64,
    pub p50_ms: Option<i64>,
    pub p99_ms: Option<i64>,
    pub max_ms: Option<i64>,
    /// Histogram for the chart: `[lower ms, upper ms, sites]`, doubling buckets.
    pub histogram: Vec<(i64, i64, i64)>,
}

#[derive(Debug, Serialize, Default)]
pub struct Series {
    /// Unix minute of each point.
    pub minutes: Vec<i64>,
    pub bytes: Vec<i64>,
    pub done: Vec<i64>,
    pub failed: Vec<i64>,
    /// Sites per state at the end of each minute (every state but `planned`).
    pub states: BTreeMap<String, Vec<i64>>,
}

#[derive(Debug, Serialize)]
pub struct Overview {
    pub plan: Option<String>,
    pub total_sites: i64,
    pub states: Vec<(String, i64)>,
    pub waves: Vec<WaveRow>,
    pub bytes_total: i64,
    /// Over the last [`RATE_MINUTES`] minutes with data.
    pub throughput_bytes_per_s: f64,
    pub sites_live_per_min: f64,
    pub error_rate: f64,
    pub errors_total: i64,
    pub errors_by_phase: Vec<(String, i64)>,
    pub freeze: FreezeStats,
    pub series: Series,
    /// Tunnel health as journaled (checkpoint scope `tunnel`), when the engine records it.
    pub tunnel: Vec<(String, serde_json::Value)>,
    /// The latest check of the SQL proxy's routes against the journal (`lease-watch`,
    /// `routes check|reconcile`, `wave run`), if any was recorded.
    pub routes: Option<crate::route_check::store::Recorded>,
}

fn all_states() -> impl Iterator<Item = &'static str> {
    SiteState::ALL.into_iter().map(|s| s.as_str())
}

/// The wave named by the journal's plan reference (`plan.json#wave3` → 3).
pub fn current_wave(db: &dyn SqlConn) -> Result<(Option<String>, Option<i64>), JournalError> {
    let plan = match db.row("SELECT v FROM meta WHERE k = 'plan'", &[])? {
        Some(r) => Some(r.text(0)?),
        None => None,
    };
    let wave = plan
        .as_deref()
        .and_then(|p| p.rsplit_once("#wave"))
        .and_then(|(_, n)| n.parse().ok());
    Ok((plan, wave))
}

/// Freeze statistics of one wave, or of all (`-1`).
pub fn freeze_stats(db: &dyn SqlConn, wave: i64) -> Result<FreezeStats, JournalError> {
    let rows: Vec<(i64, i64)> = db
        .query(
            "SELECT ms, n FROM dash_freeze_hist WHERE wave = ? AND n > 0 ORDER BY ms",
            &[wave.into()],
        )?
        .iter()
        .map(|r| Ok((r.i64(0)?, r.i64(1)?)))
        .collect::<Result<_, JournalError>>()?;
    let count: i64 = rows.iter().map(|r| r.1).sum();
    let mut out = FreezeStats {
        count,
        max_ms: rows.last().map(|r| r.0),
        ..Default::default()
    };
    if count == 0 {
        return Ok(out);
    }
    // Nearest rank, as `wave::percentile` does.
    let rank = |p: f64| ((p / 100.0) * count as f64).ceil().max(1.0) as i64;
    let (r50, r99) = (rank(50.0), rank(99.0));
    let mut cum = 0;
    for &(ms, n) in &rows {
        let before = cum;
        cum += n;
        if before < r50 && cum >= r50 {
            out.p50_ms = Some(ms);
        }
        if before < r99 && cum >= r99 {
            out.p99_ms = Some(ms);
        }
    }
    // Doubling buckets: [0,64), [64,128), [128,256) ...
    let mut buckets: BTreeMap<i64, i64> = BTreeMap::new();
    for &(ms, n) in &rows {
        let mut lo = 0;
        let mut hi = 64;
        while ms >= hi {
            lo = hi;
            hi *= 2;
        }
        *buckets.entry(lo).or_default() += n;
    }
    out.histogram = buckets
        .into_iter()
        .map(|(lo, n)| (lo, if lo == 0 { 64 } else { lo * 2 }, n))
        .collect();
    Ok(out)
}

/// Per-minute series over the [`SERIES_MINUTES`] minutes ending at the latest journaled minute.
pub fn series(db: &dyn SqlConn, totals: &BTreeMap<String, i64>) -> Result<Series, JournalError> {
    let end = one_opt(
        db,
        "SELECT MAX(m) FROM (SELECT MAX(minute) AS m FROM dash_minute
                             UNION ALL SELECT MAX(minute) FROM dash_state_minute) AS t",
        &[],
    )?;
    let Some(end) = end else {
        return Ok(Series::default());
    };
    // From the first minute with data (at most SERIES_MINUTES back, at least 30 minutes).
    let first = one_opt(
        db,
        "SELECT MIN(minute) FROM dash_minute WHERE minute > ?",
        &[(end - SERIES_MINUTES).into()],
    )?;
    let start = first.unwrap_or(end).min(end - 29);
    let n = (end - start + 1) as usize;
    let mut s = Series {
        minutes: (start..=end).collect(),
        bytes: vec![0; n],
        done: vec![0; n],
        failed: vec![0; n],
        states: BTreeMap::new(),
    };
    let rows = db.query(
        "SELECT minute, bytes, done, failed FROM dash_minute WHERE minute >= ? AND minute <= ?",
        &[start.into(), end.into()],
    )?;
    for r in rows {
        let (m, b, d, f) = (r.i64(0)?, r.i64(1)?, r.i64(2)?, r.i64(3)?);
        let i = (m - start) as usize;
        s.bytes[i] = b;
        s.done[i] = d;
        s.failed[i] = f;
    }
    // Counts at the end of each minute: today's totals minus the deltas that came after it.
    let mut deltas: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let rows = db.query(
        "SELECT minute, state, delta FROM dash_state_minute WHERE minute > ? AND state <> 'planned'",
        &[start.into()],
    )?;
    for row in rows {
        let (m, state, d) = int_text_int(&row)?;
        let v = deltas.entry(state).or_insert_with(|| vec![0; n + 1]);
        // Index i holds the deltas of minute start + i; later minutes land in the last slot.
        let i = ((m - start) as usize).min(n);
        v[i] += d;
    }
    let charted = SiteState::ALL
        .into_iter()
        .filter(|s| *s != SiteState::Planned);
    for state in charted.map(SiteState::as_str) {
        let total = totals.get(state).copied().unwrap_or(0);
        let d = deltas.remove(state).unwrap_or_else(|| vec![0; n + 1]);
        let mut out = vec![0; n];
        let mut cur = total - d[n];
        for i in (0..n).rev() {
            out[i] = cur;
            cur -= d[i];
        }
        s.states.insert(state.to_string(), out);
    }
    Ok(s)
}

/// A row of (integer, text, integer), such as (minute, state, delta) or (wave, state, count).
fn int_text_int(r: &crate::journal::SqlRow) -> Result<(i64, String, i64), JournalError> {
    Ok((r.i64(0)?, r.text(1)?, r.i64(2)?))
}

/// The first column of the first row (`None`: no row, or NULL).
fn one_opt(db: &dyn SqlConn, sql: &str, p: &[SqlValue]) -> Result<Option<i64>, JournalError> {
    match db.row(sql, p)? {
        Some(r) => r.opt_i64(0),
        None => Ok(None),
    }
}

/// The first column of the first row, 0 when there is none.
fn one(db: &dyn SqlConn, sql: &str, p: &[SqlValue]) -> Result<i64, JournalError> {
    Ok(one_opt(db, sql, p)?.unwrap_or(0))
}

/// The overview page: waves, states, rates, freeze figures and the charts' series.
pub fn overview(db: &dyn SqlConn) -> Result<Overview, JournalError> {
    let (plan, current) = current_wave(db)?;
    let mut per_wave: BTreeMap<i64, BTreeMap<String, i64>> = BTreeMap::new();
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    {
        let rows = db.query("SELECT wave, state, n FROM dash_counts WHERE n <> 0", &[])?;
        for row in rows {
            let (w, state, n) = int_text_int(&row)?;
            *totals.entry(state.clone()).or_default() += n;
            per_wave.entry(w).or_default().insert(state, n);
        }
    }
    let total_sites: i64 = totals.values().sum();
    // Rates over the last RATE_MINUTES minutes that have data.
    let (last_min, bytes_total, errors_total) = match db.row(
        "SELECT MAX(minute), COALESCE(SUM(bytes), 0), COALESCE(SUM(failed), 0) FROM dash_minute",
        &[],
    )? {
        Some(r) => (r.opt_i64(0)?, r.i64(1)?, r.i64(2)?),
        None => (None, 0, 0),
    };
    let (mut throughput, mut error_rate, mut live_rate) = (0.0, 0.0, 0.0);
    if let Some(last) = last_min {
        // The last RATE_MINUTES minutes, or fewer when the data is younger than that.
        let first = one_opt(
            db,
            "SELECT MIN(minute) FROM dash_minute WHERE minute > ?",
            &[(last - RATE_MINUTES).into()],
        )?
        .unwrap_or(last);
        let from = first.max(last - RATE_MINUTES + 1);
        let span = (last - from + 1) as f64;
        let (b, d, f) = match db.row(
            "SELECT COALESCE(SUM(bytes), 0), COALESCE(SUM(done), 0), COALESCE(SUM(failed), 0)
               FROM dash_minute WHERE minute >= ?",
            &[from.into()],
        )? {
            Some(r) => (r.i64(0)?, r.i64(1)?, r.i64(2)?),
            None => (0, 0, 0),
        };
        throughput = b as f64 / (span * 60.0);
        if d + f > 0 {
            error_rate = f as f64 / (d + f) as f64;
        }
        let live = one(
            db,
            "SELECT COALESCE(SUM(delta), 0) FROM dash_state_minute
              WHERE minute >= ? AND state = 'live' AND delta > 0",
            &[from.into()],
        )?;
        live_rate = live as f64 / span;
    }
    let mut waves = Vec::new();
    {
        let rows = db.query(
            "SELECT wave, kind, win, planned_sites FROM dash_waves ORDER BY wave",
            &[],
        )?;
        let mut listed = Vec::new();
        for r in rows {
            listed.push((r.i64(0)?, r.text(1)?, r.text(2)?, r.i64(3)?));
        }
        // Sites journaled outside any planned wave show as wave 0.
        if per_wave.contains_key(&0) && !listed.iter().any(|w| w.0 == 0) {
            let n = per_wave[&0].values().sum();
            listed.insert(0, (0, "unplanned".into(), String::new(), n));
        }
        for (wave, kind, window, planned) in listed {
            let states = per_wave.remove(&wave).unwrap_or_default();
            let get = |s: SiteState| states.get(s.as_str()).copied().unwrap_or(0);
            let done = get(SiteState::Live) + get(SiteState::Finalized);
            let failed =
                get(SiteState::Failed) + get(SiteState::Aborted) + get(SiteState::RolledBack);
            let journaled: i64 = states.values().sum();
            let in_flight = journaled - done - failed - get(SiteState::Planned);
            let planned_sites = planned.max(journaled);
            let remaining = planned_sites - done;
            let eta_seconds = (remaining > 0 && live_rate > 0.0 && (in_flight > 0 || done > 0))
                .then(|| remaining as f64 / live_rate * 60.0);
            waves.push(WaveRow {
                wave,
                kind,
                window,
                planned_sites,
                progress_pct: if planned_sites > 0 {
                    100.0 * done as f64 / planned_sites as f64
                } else {
                    0.0
                },
                states,
                done,
                failed,
                in_flight,
                eta_seconds,
                current: current == Some(wave),
            });
        }
    }
    let errors_by_phase = {
        let rows = db.query(
            "SELECT phase, n FROM dash_errors WHERE n > 0 ORDER BY n DESC",
            &[],
        )?;
        rows.iter()
            .map(|r| Ok((r.text(0)?, r.i64(1)?)))
            .collect::<Result<Vec<_>, JournalError>>()?
    };
    let tunnel = {
        let k = db.dialect().ckey();
        let rows = db.query(
            &format!(
                "SELECT {k}, value FROM checkpoints WHERE scope = 'tunnel' ORDER BY {k} LIMIT 20"
            ),
            &[],
        )?;
        let mut v = Vec::new();
        for row in rows {
            let (k, val) = (row.text(0)?, row.text(1)?);
            let json = serde_json::from_str(&val).unwrap_or(serde_json::Value::String(val));
            v.push((k, json));
        }
        v
    };
    let series = series(db, &totals)?;
    Ok(Overview {
        plan,
        total_sites,
        states: all_states()
            .map(|s| (s.to_string(), totals.get(s).copied().unwrap_or(0)))
            .collect(),
        waves,
        bytes_total,
        throughput_bytes_per_s: throughput,
        sites_live_per_min: live_rate,
        error_rate,
        errors_total,
        errors_by_phase,
        freeze: freeze_stats(db, -1)?,
        series,
        tunnel,
        routes: crate::route_check::store::latest(db)?,
    })
}

/// Sort keys of the wave page (each backed by a `(wave, key)` index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    #[default]
    Site,
    State,
    Bytes,
    Freeze,
    Updated,
    Errors,
}

impl SortKey {
    fn column(self) -> &'static str {
        match self {
            SortKey::Site => "site",
            SortKey::State => "state",
            SortKey::Bytes => "bytes",
            SortKey::Freeze => "freeze_ms",
            SortKey::Updated => "updated_ms",
            SortKey::Errors => "errors",
        }
    }
}

/// Filters, sort and page of the wave page.
#[derive(Debug, Clone, serde::Deserialize, Default)]
#[serde(default)]
pub struct SiteFilter {
    /// Only sites in this state.
    pub state: Option<String>,
    /// Only sites whose name contains this text.
    pub q: Option<String>,
    /// Only sites with at least one failed step.
    pub errors: Option<bool>,
    pub sort: SortKey,
    /// Descending order.
    pub desc: Option<bool>,
    /// 1-based page number.
    pub page: Option<i64>,
    pub per_page: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct SiteRow {
    pub site: String,
    /// JSON: the state's journal name.
    pub state: SiteState,
    pub bytes: i64,
    pub freeze_ms: Option<f64>,
    pub errors: i64,
    pub last_error: Option<String>,
    pub last_phase: Option<String>,
    pub updated_ms: i64,
    /// Latest duration (ms) of each phase, from the journal's steps.
    pub phases: BTreeMap<String, i64>,
}

#[derive(Debug, Serialize)]
pub struct SitePage {
    pub wave: Option<i64>,
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
    pub pages: i64,
    pub rows: Vec<SiteRow>,
}

/// Why a filter was refused.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("unknown state {0:?} (expected one of planned, prepared, ..., rolled_back)")]
    State(String),
    #[error(transparent)]
    Sql(#[from] JournalError),
}

/// One page of the sites of `wave` (`None`: every site) matching `f`.
pub fn site_page(
    db: &dyn SqlConn,
    wave: Option<i64>,
    f: &SiteFilter,
) -> Result<SitePage, QueryError> {
    let mut cond = Vec::new();
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(w) = wave {
        cond.push("wave = ?");
        args.push(w.into());
    }
    if let Some(s) = f.state.as_deref().filter(|s| !s.is_empty()) {
        let st: SiteState = s.parse().map_err(|_| QueryError::State(s.to_string()))?;
        cond.push("state = ?");
        args.push(st.as_str().to_string().into());
    }
    if let Some(q) = f.q.as_deref().filter(|q| !q.is_empty()) {
        cond.push("instr(site, ?) > 0");
        // (MariaDB: `site` is binary, so this is case-sensitive there as in SQLite.)
        args.push(q.to_string().into());
    }
    if f.errors == Some(true) {
        cond.push("errors > 0");
    }
    let wh = if cond.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", cond.join(" AND "))
    };
    let total = one(db, &format!("SELECT COUNT(*) FROM dash_site {wh}"), &args)?;
    let per_page = f.per_page.unwrap_or(50).clamp(1, 500);
    let pages = ((total + per_page - 1) / per_page).max(1);
    let page = f.page.unwrap_or(1).clamp(1, pages);
    let dir = if f.desc == Some(true) { "DESC" } else { "ASC" };
    let col = f.sort.column();
    let order = if f.sort == SortKey::Site {
        format!("site {dir}")
    } else {
        format!("{col} {dir}, site {dir}")
    };
    let sql = format!(
        "SELECT site, state, bytes, freeze_ms, errors, last_error, last_phase, updated_ms
           FROM dash_site {wh} ORDER BY {order} LIMIT {per_page} OFFSET {}",
        (page - 1) * per_page
    );
    let mut rows = Vec::new();
    for r in db.query(&sql, &args)? {
        let site = r.text(0)?;
        let state = crate::journal::parse_state(db.name(), &site, r.text(1)?)?;
        rows.push(SiteRow {
            site,
            state,
            bytes: r.i64(2)?,
            freeze_ms: r.opt_f64(3)?,
            errors: r.i64(4)?,
            last_error: r.opt_text(5)?,
            last_phase: r.opt_text(6)?,
            updated_ms: r.i64(7)?,
            phases: BTreeMap::new(),
        });
    }
    for row in &mut rows {
        let steps = db.query(
            "SELECT phase, started_ms, ended_ms FROM steps WHERE site = ? AND status = 'done'
              ORDER BY id",
            &[row.site.as_str().into()],
        )?;
        for s in steps {
            let (phase, a, b) = (s.text(0)?, s.i64(1)?, s.opt_i64(2)?);
            if let Some(b) = b {
                row.phases.insert(phase, b - a);
            }
        }
    }
    Ok(SitePage {
        wave,
        total,
        page,
        per_page,
        pages,
        rows,
    })
}

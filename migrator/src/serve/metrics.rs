//! Prometheus text format (version 0.0.4) from the summary tables: sites per state (and per
//! wave), bytes copied, phase durations and write-unavailability as histograms, failed steps
//! by phase (the error kind).

use super::summary::PHASE_BUCKETS_MS;
use crate::journal::{JournalError, SqlConn};
use std::collections::BTreeMap;
use std::fmt::Write;

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Buckets (seconds) of the write-unavailability histogram.
const FREEZE_BUCKETS_MS: [i64; 10] = [
    100, 250, 500, 1000, 2000, 3000, 5000, 10_000, 30_000, 60_000,
];

/// The copy lag of the sites waiting to freeze (`synced`): the largest of their last sync
/// passes, in bytes (binary log bytes applied, for databases followed by change capture) and
/// in seconds; what the gate compares with the freeze budget. Found through the state index,
/// one checkpoint read per synced site.
fn sync_lag(db: &dyn SqlConn, out: &mut String) -> Result<(), JournalError> {
    use crate::cutover::checkpoints::{Checkpoint, SCOPE};
    let d = db.dialect();
    let sql = format!(
        "SELECT COALESCE(MAX({}), 0), COUNT(c.value)
           FROM dash_site d JOIN checkpoints c ON c.scope = ? AND c.{} = {}
          WHERE d.state = 'synced'",
        d.cast_int("c.value"),
        d.ckey(),
        d.concat("d.site", "?")
    );
    let max_of = |c: Checkpoint| -> Result<(i64, i64), JournalError> {
        match db.row(&sql, &[SCOPE.into(), format!(".{}", c.name()).into()])? {
            Some(r) => Ok((r.i64(0)?, r.i64(1)?)),
            None => Ok((0, 0)),
        }
    };
    let (bytes, n) = max_of(Checkpoint::LastDelta)?;
    let (ms, _) = max_of(Checkpoint::LastPassMs)?;
    let _ = writeln!(
        out,
        "# HELP migrator_sync_lag_bytes_max Largest last sync pass (bytes) among sites waiting to \
         freeze; binary log bytes applied for databases followed by change capture."
    );
    let _ = writeln!(out, "# TYPE migrator_sync_lag_bytes_max gauge");
    let _ = writeln!(out, "migrator_sync_lag_bytes_max {bytes}");
    let _ = writeln!(
        out,
        "# HELP migrator_sync_lag_seconds_max Longest last sync pass among sites waiting to freeze."
    );
    let _ = writeln!(out, "# TYPE migrator_sync_lag_seconds_max gauge");
    let _ = writeln!(out, "migrator_sync_lag_seconds_max {:.3}", ms as f64 / 1e3);
    let _ = writeln!(
        out,
        "# HELP migrator_sync_lag_sites Sites waiting to freeze with a measured sync pass."
    );
    let _ = writeln!(out, "# TYPE migrator_sync_lag_sites gauge");
    let _ = writeln!(out, "migrator_sync_lag_sites {n}");
    Ok(())
}

pub fn render(db: &dyn SqlConn) -> Result<String, JournalError> {
    let mut out = String::new();
    let mut per_state: BTreeMap<String, i64> = BTreeMap::new();
    let mut per_wave: Vec<(i64, String, i64)> = Vec::new();
    {
        let rows = db.query("SELECT wave, state, n FROM dash_counts ORDER BY 1, 2", &[])?;
        for row in rows {
            let (w, s, n) = (row.i64(0)?, row.text(1)?, row.i64(2)?);
            *per_state.entry(s.clone()).or_default() += n;
            per_wave.push((w, s, n));
        }
    }
    let _ = writeln!(
        out,
        "# HELP migrator_sites Sites per state, from the journal."
    );
    let _ = writeln!(out, "# TYPE migrator_sites gauge");
    for s in crate::journal::SiteState::ALL {
        let n = per_state.get(s.as_str()).copied().unwrap_or(0);
        let _ = writeln!(out, "migrator_sites{{state=\"{}\"}} {n}", s.as_str());
    }
    let _ = writeln!(out, "# HELP migrator_wave_sites Sites per wave and state.");
    let _ = writeln!(out, "# TYPE migrator_wave_sites gauge");
    for (w, s, n) in per_wave {
        let _ = writeln!(
            out,
            "migrator_wave_sites{{wave=\"{w}\",state=\"{}\"}} {n}",
            esc(&s)
        );
    }
    sync_lag(db, &mut out)?;
    let bytes = match db.row("SELECT COALESCE(SUM(bytes), 0) FROM dash_minute", &[])? {
        Some(r) => r.i64(0)?,
        None => 0,
    };
    let _ = writeln!(
        out,
        "# HELP migrator_bytes_copied_total Bytes moved by finished steps."
    );
    let _ = writeln!(out, "# TYPE migrator_bytes_copied_total counter");
    let _ = writeln!(out, "migrator_bytes_copied_total {bytes}");
    let _ = writeln!(
        out,
        "# HELP migrator_step_errors_total Failed steps by phase."
    );
    let _ = writeln!(out, "# TYPE migrator_step_errors_total counter");
    {
        let rows = db.query("SELECT phase, n FROM dash_errors ORDER BY phase", &[])?;
        for row in rows {
            let (p, n) = (row.text(0)?, row.i64(1)?);
            let _ = writeln!(
                out,
                "migrator_step_errors_total{{phase=\"{}\"}} {n}",
                esc(&p)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP migrator_phase_duration_seconds Duration of finished phases."
    );
    let _ = writeln!(out, "# TYPE migrator_phase_duration_seconds histogram");
    let mut phases: BTreeMap<String, (BTreeMap<i64, i64>, i64)> = BTreeMap::new();
    {
        let rows = db.query("SELECT phase, le, n, sum_ms FROM dash_phase_hist", &[])?;
        for row in rows {
            let (p, le, n, sum) = (row.text(0)?, row.i64(1)?, row.i64(2)?, row.i64(3)?);
            let e = phases.entry(p).or_default();
            *e.0.entry(le).or_default() += n;
            e.1 += sum;
        }
    }
    for (p, (buckets, sum_ms)) in &phases {
        let p = esc(p);
        let mut cum = 0;
        for le in PHASE_BUCKETS_MS {
            cum += buckets.get(&le).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "migrator_phase_duration_seconds_bucket{{phase=\"{p}\",le=\"{}\"}} {cum}",
                le as f64 / 1000.0
            );
        }
        cum += buckets.get(&-1).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "migrator_phase_duration_seconds_bucket{{phase=\"{p}\",le=\"+Inf\"}} {cum}"
        );
        let _ = writeln!(
            out,
            "migrator_phase_duration_seconds_sum{{phase=\"{p}\"}} {}",
            *sum_ms as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "migrator_phase_duration_seconds_count{{phase=\"{p}\"}} {cum}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP migrator_write_unavailability_seconds Per-site freeze (write-unavailability)."
    );
    let _ = writeln!(
        out,
        "# TYPE migrator_write_unavailability_seconds histogram"
    );
    {
        let rows: Vec<(i64, i64)> = db
            .query(
                "SELECT ms, n FROM dash_freeze_hist WHERE wave = -1 AND n > 0 ORDER BY ms",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.i64(0)?, r.i64(1)?)))
            .collect::<Result<_, JournalError>>()?;
        let total: i64 = rows.iter().map(|r| r.1).sum();
        let sum: i64 = rows.iter().map(|r| r.0 * r.1).sum();
        for le in FREEZE_BUCKETS_MS {
            let n: i64 = rows.iter().filter(|r| r.0 <= le).map(|r| r.1).sum();
            let _ = writeln!(
                out,
                "migrator_write_unavailability_seconds_bucket{{le=\"{}\"}} {n}",
                le as f64 / 1000.0
            );
        }
        let _ = writeln!(
            out,
            "migrator_write_unavailability_seconds_bucket{{le=\"+Inf\"}} {total}"
        );
        let _ = writeln!(
            out,
            "migrator_write_unavailability_seconds_sum {}",
            sum as f64 / 1000.0
        );
        let _ = writeln!(out, "migrator_write_unavailability_seconds_count {total}");
    }
    routes(db, &mut out)?;
    bundles(db, &mut out)?;
    Ok(out)
}

/// Consistency-point bundles (`migrator bundle`): sites per bundle stage, bytes stored, sites
/// whose last capture or verification failed. Reads one journal row per site with a bundle.
fn bundles(db: &dyn SqlConn, out: &mut String) -> Result<(), JournalError> {
    use crate::bundle::state::{BundleState, Stage, SCOPE};
    let k = db.dialect().ckey();
    let rows = db.query(
        &format!("SELECT {k}, value FROM checkpoints WHERE scope = ?"),
        &[SCOPE.into()],
    )?;
    let mut per: BTreeMap<&'static str, i64> = [
        Stage::Capturing,
        Stage::Captured,
        Stage::Verified,
        Stage::Failed,
    ]
    .iter()
    .map(|s| (s.as_str(), 0))
    .collect();
    let (mut bytes, mut overrides) = (0u64, 0i64);
    for r in rows {
        if r.text(0)?.ends_with(".override") {
            overrides += 1;
            continue;
        }
        if let Ok(s) = serde_json::from_str::<BundleState>(&r.text(1)?) {
            *per.entry(s.stage.as_str()).or_default() += 1;
            bytes += s.bytes;
        }
    }
    let _ = writeln!(
        out,
        "# HELP migrator_bundles Sites per state of their consistency-point bundle."
    );
    let _ = writeln!(out, "# TYPE migrator_bundles gauge");
    for (stage, n) in &per {
        let _ = writeln!(out, "migrator_bundles{{stage=\"{stage}\"}} {n}");
    }
    for (name, help, v) in [
        (
            "migrator_bundle_bytes",
            "Bytes stored by the sites' bundles.",
            bytes as i64,
        ),
        (
            "migrator_bundle_failures",
            "Sites whose last bundle capture or verification failed.",
            per[Stage::Failed.as_str()],
        ),
        (
            "migrator_bundle_overrides",
            "Sites finalized without a verified bundle (--override-reason).",
            overrides,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {v}");
    }
    Ok(())
}

/// The latest route check (absent until one is recorded: alert on `absent()` or the age).
fn routes(db: &dyn SqlConn, out: &mut String) -> Result<(), JournalError> {
    let Some(r) = crate::route_check::store::latest(db)? else {
        return Ok(());
    };
    let age = (crate::journal::now_ms() - r.checked_ms).max(0) as f64 / 1000.0;
    for (name, help, v) in [
        (
            "migrator_route_mismatches",
            "Databases the SQL proxy routes otherwise than the journal says (latest check).",
            r.mismatches as f64,
        ),
        (
            "migrator_route_check_unreachable",
            "SQL proxies the latest route check could not ask (their routes not confirmed).",
            r.unreachable as f64,
        ),
        (
            "migrator_route_check_age_seconds",
            "Seconds since the latest route check (lease-watch runs one every round).",
            age,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {v}");
    }
    Ok(())
}

//! Summary tables the dashboard reads, kept in the journal itself and maintained incrementally
//! by triggers on the journal's own tables (`sites`, `steps`, `checkpoints`): SQLite's here,
//! MariaDB's in `summary_mariadb.rs` (same tables, same figures).
//!
//! Why triggers: the engine (any process, any connection) writes the journal; a trigger updates
//! the summary in the same transaction, so the overview reads a few hundred rows whatever the
//! number of sites (3,000,000 at full size) and is never out of date. The tables are created
//! once with `IF NOT EXISTS`; a full rebuild (one transaction) happens only when they are new,
//! when their version changes or when a new plan is imported (wave membership).
//!
//! Tables (all prefixed `dash_`):
//! - `dash_wave_sites(site, wave)`: wave membership imported from the plan file;
//! - `dash_waves`: each wave's planned size;
//! - `dash_site`: one row per site: wave, state, bytes moved, write-unavailability, errors, last
//!   error and phase; indexed by `(wave, <sort key>)` for the wave page;
//! - `dash_counts(wave, state, n)`: sites per state per wave;
//! - `dash_minute(minute, bytes, done, failed)`: throughput and error rate over time;
//! - `dash_state_minute(minute, state, delta)`: state entries (+1) and exits (-1) per minute;
//! - `dash_freeze_hist(wave, ms, n)`: write-unavailability histogram at 1 ms resolution, per
//!   wave and for all waves (`wave = -1`);
//! - `dash_errors(phase, n)`: failed steps by phase (the error kind);
//! - `dash_phase_hist(phase, le, n, sum_ms)`: phase durations as a Prometheus histogram.
//! - `dash_controls`: the audit of dashboard controls (who, when, what, result).

use super::summary_mariadb as maria;
use crate::journal::{Dialect, JournalError, SqlConn, SqlValue};
use std::path::Path;

/// Bump when the summary schema or the triggers change: the next start rebuilds.
pub const SUMMARY_VERSION: &str = "1";

/// Upper bounds (ms) of the phase-duration histogram buckets; `+Inf` is implicit.
pub const PHASE_BUCKETS_MS: [i64; 14] = [
    10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000,
];

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS dash_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dash_waves (
    wave INTEGER PRIMARY KEY, kind TEXT NOT NULL, win TEXT NOT NULL,
    planned_sites INTEGER NOT NULL, planned_bytes INTEGER NOT NULL, est_seconds REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dash_wave_sites (site TEXT PRIMARY KEY, wave INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dash_site (
    site TEXT PRIMARY KEY, wave INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0, freeze_ms REAL, errors INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, last_phase TEXT, updated_ms INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS dash_site_w_site ON dash_site(wave, site);
CREATE INDEX IF NOT EXISTS dash_site_w_state ON dash_site(wave, state, site);
CREATE INDEX IF NOT EXISTS dash_site_w_bytes ON dash_site(wave, bytes);
CREATE INDEX IF NOT EXISTS dash_site_w_freeze ON dash_site(wave, freeze_ms);
CREATE INDEX IF NOT EXISTS dash_site_w_updated ON dash_site(wave, updated_ms);
CREATE INDEX IF NOT EXISTS dash_site_w_errors ON dash_site(wave, errors);
CREATE INDEX IF NOT EXISTS dash_site_state ON dash_site(state, site);
CREATE TABLE IF NOT EXISTS dash_counts (
    wave INTEGER NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (wave, state))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dash_minute (
    minute INTEGER PRIMARY KEY, bytes INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS dash_state_minute (
    minute INTEGER NOT NULL, state TEXT NOT NULL, delta INTEGER NOT NULL,
    PRIMARY KEY (minute, state)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dash_freeze_hist (
    wave INTEGER NOT NULL, ms INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (wave, ms))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dash_errors (phase TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dash_phase_hist (
    phase TEXT NOT NULL, le INTEGER NOT NULL, n INTEGER NOT NULL, sum_ms INTEGER NOT NULL,
    PRIMARY KEY (phase, le)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dash_controls (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, who TEXT NOT NULL,
    action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT, result TEXT);
";

/// SQL for the histogram bucket of a duration expression `d` (ms); -1 means `+Inf`.
pub(super) fn bucket_sql(d: &str) -> String {
    let mut s = String::from("CASE");
    for le in PHASE_BUCKETS_MS {
        s.push_str(&format!(" WHEN {d} <= {le} THEN {le}"));
    }
    s.push_str(" ELSE -1 END");
    s
}

/// The body shared by the insert and update triggers on `sites`: move the site's count from
/// its previous summary state to the new one.
const SITE_BODY: &str = "
    UPDATE dash_counts SET n = n - 1
     WHERE wave = (SELECT wave FROM dash_site WHERE site = NEW.site)
       AND state = (SELECT state FROM dash_site WHERE site = NEW.site);
    INSERT INTO dash_state_minute(minute, state, delta)
        SELECT NEW.updated_ms / 60000, state, -1 FROM dash_site WHERE site = NEW.site
        ON CONFLICT(minute, state) DO UPDATE SET delta = delta - 1;
    INSERT INTO dash_site(site, wave, state, updated_ms)
        VALUES (NEW.site, COALESCE((SELECT wave FROM dash_wave_sites WHERE site = NEW.site), 0),
                NEW.state, NEW.updated_ms)
        ON CONFLICT(site) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms;
    INSERT INTO dash_counts(wave, state, n)
        SELECT wave, state, 1 FROM dash_site WHERE site = NEW.site
        ON CONFLICT(wave, state) DO UPDATE SET n = n + 1;
    INSERT INTO dash_state_minute(minute, state, delta) VALUES (NEW.updated_ms / 60000, NEW.state, 1)
        ON CONFLICT(minute, state) DO UPDATE SET delta = delta + 1;
";

fn triggers() -> String {
    let dur = bucket_sql("(NEW.ended_ms - NEW.started_ms)");
    format!(
        "
CREATE TRIGGER IF NOT EXISTS dash_sites_ins AFTER INSERT ON sites BEGIN {SITE_BODY} END;
CREATE TRIGGER IF NOT EXISTS dash_sites_upd AFTER UPDATE ON sites BEGIN {SITE_BODY} END;
CREATE TRIGGER IF NOT EXISTS dash_steps_ins AFTER INSERT ON steps BEGIN
    UPDATE dash_site SET last_phase = NEW.phase WHERE site = NEW.site;
END;
CREATE TRIGGER IF NOT EXISTS dash_steps_done AFTER UPDATE OF status ON steps
WHEN NEW.status = 'done' AND OLD.status <> 'done' BEGIN
    INSERT INTO dash_minute(minute, bytes, done) VALUES (NEW.ended_ms / 60000, NEW.bytes, 1)
        ON CONFLICT(minute) DO UPDATE SET bytes = bytes + excluded.bytes, done = done + 1;
    UPDATE dash_site SET bytes = bytes + NEW.bytes WHERE site = NEW.site;
    INSERT INTO dash_phase_hist(phase, le, n, sum_ms)
        VALUES (NEW.phase, {dur}, 1, NEW.ended_ms - NEW.started_ms)
        ON CONFLICT(phase, le) DO UPDATE SET n = n + 1, sum_ms = sum_ms + excluded.sum_ms;
END;
CREATE TRIGGER IF NOT EXISTS dash_steps_failed AFTER UPDATE OF status ON steps
WHEN NEW.status = 'failed' AND OLD.status <> 'failed' BEGIN
    INSERT INTO dash_minute(minute, failed) VALUES (NEW.ended_ms / 60000, 1)
        ON CONFLICT(minute) DO UPDATE SET failed = failed + 1;
    UPDATE dash_site SET errors = errors + 1, last_error = NEW.error, last_phase = NEW.phase
     WHERE site = NEW.site;
    INSERT INTO dash_errors(phase, n) VALUES (NEW.phase, 1)
        ON CONFLICT(phase) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS dash_freeze_ins AFTER INSERT ON checkpoints
WHEN NEW.scope = 'cutover' AND substr(NEW.key, -10) = '.freeze_ms' BEGIN {FREEZE_BODY} END;
CREATE TRIGGER IF NOT EXISTS dash_freeze_upd AFTER UPDATE ON checkpoints
WHEN NEW.scope = 'cutover' AND substr(NEW.key, -10) = '.freeze_ms' BEGIN {FREEZE_BODY} END;
"
    )
}

/// Moves a site's write-unavailability from its old histogram bucket to the new one.
const FREEZE_BODY: &str = "
    UPDATE dash_freeze_hist SET n = n - 1
     WHERE wave IN (-1, (SELECT wave FROM dash_site
                          WHERE site = substr(NEW.key, 1, length(NEW.key) - 10)))
       AND ms = (SELECT CAST(freeze_ms AS INTEGER) FROM dash_site
                  WHERE site = substr(NEW.key, 1, length(NEW.key) - 10)
                    AND freeze_ms IS NOT NULL);
    UPDATE dash_site SET freeze_ms = CAST(NEW.value AS REAL)
     WHERE site = substr(NEW.key, 1, length(NEW.key) - 10);
    INSERT INTO dash_freeze_hist(wave, ms, n)
        SELECT wave, CAST(freeze_ms AS INTEGER), 1 FROM dash_site
         WHERE site = substr(NEW.key, 1, length(NEW.key) - 10) AND freeze_ms IS NOT NULL
        UNION ALL
        SELECT -1, CAST(freeze_ms AS INTEGER), 1 FROM dash_site
         WHERE site = substr(NEW.key, 1, length(NEW.key) - 10) AND freeze_ms IS NOT NULL
        ON CONFLICT(wave, ms) DO UPDATE SET n = n + 1;
";

/// Recomputes every summary table from the journal's own tables (inside the caller's
/// transaction).
fn rebuild(db: &dyn SqlConn) -> Result<(), JournalError> {
    if db.dialect() == Dialect::MariaDb {
        for sql in maria::rebuild() {
            db.batch(&sql)?;
        }
        return Ok(());
    }
    let dur = bucket_sql("(ended_ms - started_ms)");
    db.batch(&format!(
        "
DELETE FROM dash_site; DELETE FROM dash_counts; DELETE FROM dash_minute;
DELETE FROM dash_state_minute; DELETE FROM dash_freeze_hist; DELETE FROM dash_errors;
DELETE FROM dash_phase_hist;
INSERT INTO dash_site(site, wave, state, updated_ms)
    SELECT site, wave, 'planned', 0 FROM dash_wave_sites;
INSERT INTO dash_site(site, wave, state, updated_ms)
    SELECT s.site, COALESCE(w.wave, 0), s.state, s.updated_ms
      FROM sites s LEFT JOIN dash_wave_sites w ON w.site = s.site WHERE true
    ON CONFLICT(site) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms;
UPDATE dash_site SET bytes = a.b, errors = a.e
  FROM (SELECT site, SUM(CASE WHEN status = 'done' THEN bytes ELSE 0 END) AS b,
               SUM(status = 'failed') AS e FROM steps GROUP BY site) AS a
 WHERE a.site = dash_site.site;
UPDATE dash_site SET last_phase = l.phase
  FROM (SELECT site, phase FROM steps WHERE id IN (SELECT MAX(id) FROM steps GROUP BY site)) AS l
 WHERE l.site = dash_site.site;
UPDATE dash_site SET last_error = l.error, last_phase = l.phase
  FROM (SELECT site, phase, error FROM steps
         WHERE id IN (SELECT MAX(id) FROM steps WHERE status = 'failed' GROUP BY site)) AS l
 WHERE l.site = dash_site.site;
UPDATE dash_site SET freeze_ms = CAST(c.value AS REAL)
  FROM (SELECT substr(key, 1, length(key) - 10) AS site, value FROM checkpoints
         WHERE scope = 'cutover' AND substr(key, -10) = '.freeze_ms') AS c
 WHERE c.site = dash_site.site;
INSERT INTO dash_counts(wave, state, n) SELECT wave, state, COUNT(*) FROM dash_site GROUP BY 1, 2;
INSERT INTO dash_minute(minute, bytes, done, failed)
    SELECT ended_ms / 60000, SUM(CASE WHEN status = 'done' THEN bytes ELSE 0 END),
           SUM(status = 'done'), SUM(status = 'failed')
      FROM steps WHERE ended_ms IS NOT NULL GROUP BY 1;
INSERT INTO dash_state_minute(minute, state, delta)
    SELECT updated_ms / 60000, state, COUNT(*) FROM dash_site GROUP BY 1, 2;
INSERT INTO dash_freeze_hist(wave, ms, n)
    SELECT wave, CAST(freeze_ms AS INTEGER), COUNT(*) FROM dash_site
     WHERE freeze_ms IS NOT NULL GROUP BY 1, 2;
INSERT INTO dash_freeze_hist(wave, ms, n)
    SELECT -1, CAST(freeze_ms AS INTEGER), COUNT(*) FROM dash_site
     WHERE freeze_ms IS NOT NULL GROUP BY 2;
INSERT INTO dash_errors(phase, n) SELECT phase, COUNT(*) FROM steps WHERE status = 'failed'
    GROUP BY 1;
INSERT INTO dash_phase_hist(phase, le, n, sum_ms)
    SELECT phase, {dur}, COUNT(*), SUM(ended_ms - started_ms) FROM steps
     WHERE status = 'done' AND ended_ms IS NOT NULL GROUP BY 1, 2;
"
    ))
}

/// One wave of a plan, as the dashboard needs it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct WaveDef {
    pub number: u32,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub window_utc: String,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub est_seconds: f64,
    #[serde(default)]
    pub groups: Vec<GroupDef>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct GroupDef {
    pub sites: Vec<String>,
}

/// The waves of a plan, as imported.
#[derive(Debug, Clone)]
pub struct PlanWaves {
    /// Identifies the plan file's content (path, size, mtime): a change triggers a re-import.
    pub fingerprint: String,
    pub waves: Vec<WaveDef>,
}

impl PlanWaves {
    /// Reads the waves of a plan file (`migrator plan`), checking its format and version and
    /// reading only the fields the dashboard shows (a 3M-site plan is large).
    pub fn read(path: &Path) -> Result<PlanWaves, planner::PlanError> {
        #[derive(serde::Deserialize)]
        struct Lite {
            format: String,
            version: u32,
            waves: Vec<WaveDef>,
        }
        let fmt = |message: String| planner::PlanError::Format {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|source| planner::PlanError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let lite: Lite = serde_json::from_slice(&bytes).map_err(|e| fmt(e.to_string()))?;
        if lite.format != planner::PLAN_FORMAT {
            return Err(fmt(format!(
                "format is {:?}, expected {:?}",
                lite.format,
                planner::PLAN_FORMAT
            )));
        }
        if lite.version != planner::PLAN_VERSION {
            return Err(planner::PlanError::Version {
                path: path.to_path_buf(),
                found: lite.version,
                expected: planner::PLAN_VERSION,
            });
        }
        let md = std::fs::metadata(path).ok();
        let fingerprint = format!(
            "{}:{}:{:?}",
            path.display(),
            md.as_ref().map(|m| m.len()).unwrap_or(0),
            md.and_then(|m| m.modified().ok())
        );
        Ok(PlanWaves {
            fingerprint,
            waves: lite.waves,
        })
    }
}

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// The summary was current: nothing to do.
    Current,
    /// The summary was rebuilt from the journal (first start, new version or new plan).
    Rebuilt,
}

/// Wave memberships inserted per statement when a plan is imported.
const IMPORT_ROWS: usize = 400;

/// Creates the summary tables and triggers if needed and rebuilds the summary when it is new,
/// of another version, or `plan` differs from the imported one. One write transaction (on
/// MariaDB the tables and triggers are created before it: DDL commits on its own there).
pub fn install(db: &dyn SqlConn, plan: Option<&PlanWaves>) -> Result<Installed, JournalError> {
    match db.dialect() {
        Dialect::Sqlite => {
            db.batch("BEGIN IMMEDIATE")?;
            let r = db
                .batch(TABLES)
                .and_then(|()| db.batch(&triggers()))
                .and_then(|()| install_in_tx(db, plan));
            finish(db, r)
        }
        Dialect::MariaDb => {
            for sql in maria::TABLES {
                db.batch(sql)?;
            }
            for sql in maria::triggers() {
                db.batch(&sql)?;
            }
            db.batch("START TRANSACTION")?;
            let r = install_in_tx(db, plan);
            finish(db, r)
        }
    }
}

/// Commits after `r`, or rolls back.
fn finish(db: &dyn SqlConn, r: Result<Installed, JournalError>) -> Result<Installed, JournalError> {
    match r {
        Ok(i) => {
            db.batch("COMMIT")?;
            Ok(i)
        }
        Err(e) => {
            let _ = db.batch("ROLLBACK");
            Err(e)
        }
    }
}

fn install_in_tx(db: &dyn SqlConn, plan: Option<&PlanWaves>) -> Result<Installed, JournalError> {
    let d = db.dialect();
    let get = |k: &str| -> Result<Option<String>, JournalError> {
        match db.row("SELECT v FROM dash_meta WHERE k = ?", &[k.into()])? {
            Some(r) => r.opt_text(0),
            None => Ok(None),
        }
    };
    let set = |k: &str, v: &str| -> Result<(), JournalError> {
        db.exec(
            &format!(
                "INSERT INTO dash_meta(k, v) VALUES (?, ?) {} v = {}",
                d.upsert("k"),
                d.excluded("v")
            ),
            &[k.into(), v.into()],
        )?;
        Ok(())
    };
    let version = get("version")?;
    let plan_fp = get("plan")?;
    let want_plan = plan.map(|p| p.fingerprint.clone());
    let new_plan = plan.is_some() && plan_fp != want_plan;
    if version.as_deref() == Some(SUMMARY_VERSION) && !new_plan {
        return Ok(Installed::Current);
    }
    if let Some(p) = plan.filter(|_| new_plan) {
        db.exec("DELETE FROM dash_wave_sites", &[])?;
        db.exec("DELETE FROM dash_waves", &[])?;
        let ignore = match d {
            Dialect::Sqlite => "INSERT OR IGNORE",
            Dialect::MariaDb => "INSERT IGNORE",
        };
        let mut batch: Vec<SqlValue> = Vec::with_capacity(IMPORT_ROWS * 2);
        let flush = |batch: &mut Vec<SqlValue>| -> Result<(), JournalError> {
            if batch.is_empty() {
                return Ok(());
            }
            let rows = vec!["(?, ?)"; batch.len() / 2].join(", ");
            db.exec(
                &format!("{ignore} INTO dash_wave_sites(site, wave) VALUES {rows}"),
                batch,
            )?;
            batch.clear();
            Ok(())
        };
        for w in &p.waves {
            let sites: usize = w.groups.iter().map(|g| g.sites.len()).sum();
            db.exec(
                "INSERT INTO dash_waves(wave, kind, win, planned_sites, planned_bytes, est_seconds)
                 VALUES (?, ?, ?, ?, ?, ?)",
                &[
                    w.number.into(),
                    w.kind.as_str().into(),
                    w.window_utc.as_str().into(),
                    (sites as i64).into(),
                    (w.bytes as i64).into(),
                    w.est_seconds.into(),
                ],
            )?;
            for g in &w.groups {
                for s in &g.sites {
                    batch.push(s.as_str().into());
                    batch.push(w.number.into());
                    if batch.len() >= IMPORT_ROWS * 2 {
                        flush(&mut batch)?;
                    }
                }
            }
        }
        flush(&mut batch)?;
        set("plan", &p.fingerprint)?;
    }
    rebuild(db)?;
    set("version", SUMMARY_VERSION)?;
    Ok(Installed::Rebuilt)
}

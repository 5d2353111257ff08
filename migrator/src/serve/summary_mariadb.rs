//! The dashboard's summary (`summary.rs`) in MariaDB's dialect: the same tables, kept by the
//! same triggers (MariaDB triggers run in the writer's transaction, on whichever node of a
//! Galera cluster the writer is connected to), and the same rebuild.
//!
//! Differences from SQLite's text: `DIV` for integer division, `ON DUPLICATE KEY UPDATE` for
//! upserts, multi-table `UPDATE … JOIN` for the rebuild, `FLOOR` where SQLite truncates with
//! `CAST(… AS INTEGER)` (freeze figures are never negative), and the checkpoints' key column
//! is `k`. Each statement is sent on its own (a trigger's body holds `;`).

use super::summary::bucket_sql;

pub(super) const TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS dash_meta (
        k VARBINARY(64) NOT NULL PRIMARY KEY, v LONGTEXT CHARACTER SET utf8mb4 NOT NULL
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS dash_waves (
        wave BIGINT NOT NULL PRIMARY KEY, kind VARCHAR(64) CHARACTER SET utf8mb4 NOT NULL,
        win VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL, planned_sites BIGINT NOT NULL,
        planned_bytes BIGINT NOT NULL, est_seconds DOUBLE NOT NULL
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS dash_wave_sites (
        site VARBINARY(255) NOT NULL PRIMARY KEY, wave BIGINT NOT NULL
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS dash_site (
        site VARBINARY(255) NOT NULL PRIMARY KEY, wave BIGINT NOT NULL DEFAULT 0,
        state VARCHAR(32) CHARACTER SET ascii NOT NULL, bytes BIGINT NOT NULL DEFAULT 0,
        freeze_ms DOUBLE NULL, errors BIGINT NOT NULL DEFAULT 0,
        last_error LONGTEXT CHARACTER SET utf8mb4 NULL, last_phase VARBINARY(255) NULL,
        updated_ms BIGINT NOT NULL DEFAULT 0,
        KEY dash_site_w_site (wave, site), KEY dash_site_w_state (wave, state, site),
        KEY dash_site_w_bytes (wave, bytes), KEY dash_site_w_freeze (wave, freeze_ms),
        KEY dash_site_w_updated (wave, updated_ms), KEY dash_site_w_errors (wave, errors),
        KEY dash_site_state (state, site)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS dash_counts (
        wave BIGINT NOT NULL, state VARCHAR(32) CHARACTER SET ascii NOT NULL, n BIGINT NOT NULL,
        PRIMARY KEY (wave, state)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS dash_minute (
        minute BIGINT NOT NULL PRIMARY KEY, bytes BIGINT NOT NULL DEFAULT 0,
        done BIGINT NOT NULL DEFAULT 0, failed BIGINT NOT NULL DEFAULT 0
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS dash_state_minute (
        minute BIGINT NOT NULL, state VARCHAR(32) CHARACTER SET ascii NOT NULL,
        delta BIGINT NOT NULL, PRIMARY KEY (minute, state)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS dash_freeze_hist (
        wave BIGINT NOT NULL, ms BIGINT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (wave, ms)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS dash_errors (
        phase VARBINARY(255) NOT NULL PRIMARY KEY, n BIGINT NOT NULL
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS dash_phase_hist (
        phase VARBINARY(255) NOT NULL, le BIGINT NOT NULL, n BIGINT NOT NULL,
        sum_ms BIGINT NOT NULL, PRIMARY KEY (phase, le)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS dash_controls (
        id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, at_ms BIGINT NOT NULL,
        who VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
        action VARCHAR(64) CHARACTER SET utf8mb4 NOT NULL, target VARBINARY(255) NOT NULL,
        detail TEXT CHARACTER SET utf8mb4 NULL, result TEXT CHARACTER SET utf8mb4 NULL
    ) ENGINE=InnoDB",
];

const SITE_BODY: &str = "BEGIN
    UPDATE dash_counts c JOIN dash_site d ON d.site = NEW.site AND c.wave = d.wave
       AND c.state = d.state SET c.n = c.n - 1;
    INSERT INTO dash_state_minute(minute, state, delta)
        SELECT NEW.updated_ms DIV 60000, state, -1 FROM dash_site WHERE site = NEW.site
        ON DUPLICATE KEY UPDATE delta = delta - 1;
    INSERT INTO dash_site(site, wave, state, updated_ms)
        VALUES (NEW.site, COALESCE((SELECT wave FROM dash_wave_sites WHERE site = NEW.site), 0),
                NEW.state, NEW.updated_ms)
        ON DUPLICATE KEY UPDATE state = VALUES(state), updated_ms = VALUES(updated_ms);
    INSERT INTO dash_counts(wave, state, n)
        SELECT wave, state, 1 FROM dash_site WHERE site = NEW.site
        ON DUPLICATE KEY UPDATE n = n + 1;
    INSERT INTO dash_state_minute(minute, state, delta)
        VALUES (NEW.updated_ms DIV 60000, NEW.state, 1)
        ON DUPLICATE KEY UPDATE delta = delta + 1;
END";

/// The site a cutover checkpoint key `<site>.freeze_ms` names.
const FREEZE_SITE: &str = "LEFT(NEW.k, LENGTH(NEW.k) - 10)";

fn freeze_body() -> String {
    format!(
        "BEGIN
    IF NEW.scope = 'cutover' AND RIGHT(NEW.k, 10) = '.freeze_ms' THEN
        UPDATE dash_freeze_hist h JOIN dash_site d ON d.site = {FREEZE_SITE}
           AND d.freeze_ms IS NOT NULL AND h.ms = FLOOR(d.freeze_ms) AND h.wave IN (-1, d.wave)
           SET h.n = h.n - 1;
        UPDATE dash_site SET freeze_ms = CAST(NEW.value AS DOUBLE) WHERE site = {FREEZE_SITE};
        INSERT INTO dash_freeze_hist(wave, ms, n)
            SELECT wave, FLOOR(freeze_ms), 1 FROM dash_site
             WHERE site = {FREEZE_SITE} AND freeze_ms IS NOT NULL
            ON DUPLICATE KEY UPDATE n = n + 1;
        INSERT INTO dash_freeze_hist(wave, ms, n)
            SELECT -1, FLOOR(freeze_ms), 1 FROM dash_site
             WHERE site = {FREEZE_SITE} AND freeze_ms IS NOT NULL
            ON DUPLICATE KEY UPDATE n = n + 1;
    END IF;
END"
    )
}

pub(super) fn triggers() -> Vec<String> {
    let dur = bucket_sql("(NEW.ended_ms - NEW.started_ms)");
    vec![
        format!(
            "CREATE TRIGGER IF NOT EXISTS dash_sites_ins AFTER INSERT ON sites FOR EACH ROW \
             {SITE_BODY}"
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS dash_sites_upd AFTER UPDATE ON sites FOR EACH ROW \
             {SITE_BODY}"
        ),
        "CREATE TRIGGER IF NOT EXISTS dash_steps_ins AFTER INSERT ON steps FOR EACH ROW
            UPDATE dash_site SET last_phase = NEW.phase WHERE site = NEW.site"
            .to_string(),
        format!(
            "CREATE TRIGGER IF NOT EXISTS dash_steps_upd AFTER UPDATE ON steps FOR EACH ROW BEGIN
    IF NEW.status = 'done' AND OLD.status <> 'done' THEN
        INSERT INTO dash_minute(minute, bytes, done) VALUES (NEW.ended_ms DIV 60000, NEW.bytes, 1)
            ON DUPLICATE KEY UPDATE bytes = bytes + VALUES(bytes), done = done + 1;
        UPDATE dash_site SET bytes = bytes + NEW.bytes WHERE site = NEW.site;
        INSERT INTO dash_phase_hist(phase, le, n, sum_ms)
            VALUES (NEW.phase, {dur}, 1, NEW.ended_ms - NEW.started_ms)
            ON DUPLICATE KEY UPDATE n = n + 1, sum_ms = sum_ms + VALUES(sum_ms);
    END IF;
    IF NEW.status = 'failed' AND OLD.status <> 'failed' THEN
        INSERT INTO dash_minute(minute, failed) VALUES (NEW.ended_ms DIV 60000, 1)
            ON DUPLICATE KEY UPDATE failed = failed + 1;
        UPDATE dash_site SET errors = errors + 1, last_error = NEW.error,
               last_phase = NEW.phase WHERE site = NEW.site;
        INSERT INTO dash_errors(phase, n) VALUES (NEW.phase, 1)
            ON DUPLICATE KEY UPDATE n = n + 1;
    END IF;
END"
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS dash_freeze_ins AFTER INSERT ON checkpoints \
             FOR EACH ROW {}",
            freeze_body()
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS dash_freeze_upd AFTER UPDATE ON checkpoints \
             FOR EACH ROW {}",
            freeze_body()
        ),
    ]
}

/// The rebuild, one statement each (inside the caller's transaction).
pub(super) fn rebuild() -> Vec<String> {
    let dur = bucket_sql("(ended_ms - started_ms)");
    let mut v: Vec<String> = [
        "dash_site",
        "dash_counts",
        "dash_minute",
        "dash_state_minute",
        "dash_freeze_hist",
        "dash_errors",
        "dash_phase_hist",
    ]
    .iter()
    .map(|t| format!("DELETE FROM {t}"))
    .collect();
    v.extend(
        [
            "INSERT INTO dash_site(site, wave, state, updated_ms)
                SELECT site, wave, 'planned', 0 FROM dash_wave_sites",
            "INSERT INTO dash_site(site, wave, state, updated_ms)
                SELECT s.site, COALESCE(w.wave, 0), s.state, s.updated_ms
                  FROM sites s LEFT JOIN dash_wave_sites w ON w.site = s.site
                ON DUPLICATE KEY UPDATE state = VALUES(state), updated_ms = VALUES(updated_ms)",
            "UPDATE dash_site d JOIN (
                SELECT site, SUM(CASE WHEN status = 'done' THEN bytes ELSE 0 END) AS b,
                       SUM(status = 'failed') AS e FROM steps GROUP BY site) a ON a.site = d.site
                SET d.bytes = a.b, d.errors = a.e",
            "UPDATE dash_site d JOIN (
                SELECT s.site, s.phase FROM steps s
                  JOIN (SELECT MAX(id) AS id FROM steps GROUP BY site) m ON m.id = s.id) l
                ON l.site = d.site SET d.last_phase = l.phase",
            "UPDATE dash_site d JOIN (
                SELECT s.site, s.phase, s.error FROM steps s
                  JOIN (SELECT MAX(id) AS id FROM steps WHERE status = 'failed' GROUP BY site) m
                    ON m.id = s.id) l
                ON l.site = d.site SET d.last_error = l.error, d.last_phase = l.phase",
            "UPDATE dash_site d JOIN (
                SELECT LEFT(k, LENGTH(k) - 10) AS site, value FROM checkpoints
                 WHERE scope = 'cutover' AND RIGHT(k, 10) = '.freeze_ms') c ON c.site = d.site
                SET d.freeze_ms = CAST(c.value AS DOUBLE)",
            "INSERT INTO dash_counts(wave, state, n)
                SELECT wave, state, COUNT(*) FROM dash_site GROUP BY wave, state",
            "INSERT INTO dash_minute(minute, bytes, done, failed)
                SELECT ended_ms DIV 60000, SUM(CASE WHEN status = 'done' THEN bytes ELSE 0 END),
                       SUM(status = 'done'), SUM(status = 'failed')
                  FROM steps WHERE ended_ms IS NOT NULL GROUP BY ended_ms DIV 60000",
            "INSERT INTO dash_state_minute(minute, state, delta)
                SELECT updated_ms DIV 60000, state, COUNT(*) FROM dash_site
                 GROUP BY updated_ms DIV 60000, state",
            "INSERT INTO dash_freeze_hist(wave, ms, n)
                SELECT wave, FLOOR(freeze_ms), COUNT(*) FROM dash_site
                 WHERE freeze_ms IS NOT NULL GROUP BY wave, FLOOR(freeze_ms)",
            "INSERT INTO dash_freeze_hist(wave, ms, n)
                SELECT -1, FLOOR(freeze_ms), COUNT(*) FROM dash_site
                 WHERE freeze_ms IS NOT NULL GROUP BY FLOOR(freeze_ms)",
            "INSERT INTO dash_errors(phase, n)
                SELECT phase, COUNT(*) FROM steps WHERE status = 'failed' GROUP BY phase",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    v.push(format!(
        "INSERT INTO dash_phase_hist(phase, le, n, sum_ms)
            SELECT phase, {dur} AS le, COUNT(*), SUM(ended_ms - started_ms) FROM steps
             WHERE status = 'done' AND ended_ms IS NOT NULL GROUP BY phase, le"
    ));
    v
}

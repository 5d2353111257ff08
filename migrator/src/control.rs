//! Live control of a running wave, kept in the journal (docs/ARCHITECTURE.md §8: the journal is the
//! source of truth, the dashboard reads it).
//!
//! Three tables of the journal (its schema migrations create them, on SQLite and on MariaDB;
//! every statement here goes through [`SqlConn`], so a wave, `migrator wave pause` on another
//! host and the dashboard all steer the same wave through a shared MariaDB journal):
//! - `wave_controls`: every operator control (`pause`, `resume`, `throttle N`) with who sent
//!   it, from where (`socket`, `cli`, `dashboard`, `engine` for the stop rule) and when. The
//!   wave's state is the fold of these rows in order, so anything that can write the journal
//!   steers the wave: the running wave polls [`current`] at least once a second.
//! - `wave_status`: the running wave's published [`WaveStatus`] (sites per state, bytes, why it
//!   waits), rewritten about once a second. `migrator wave status --journal` and the dashboard
//!   read it without talking to the migrator process.
//! - `wave_events`: why the wave waited and when it went on (throttle reasons, stop rule),
//!   written only when a reason changes.

use crate::journal::{JournalError, SiteState, SqlConn, SqlValue};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("journal {journal}: wave status of wave {wave} is not valid JSON: {source}")]
    Status {
        journal: String,
        wave: u32,
        #[source]
        source: serde_json::Error,
    },
    #[error("journal {0}: no wave has published a status yet (is `migrator wave run` running?)")]
    NoWave(String),
}

pub type Result<T> = std::result::Result<T, ControlError>;

/// One operator control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "value")]
pub enum Action {
    /// No new site starts and no site is frozen; sites inside their freeze finish.
    Pause,
    Resume,
    /// At most N sites in progress at once; 0 removes the limit.
    Throttle(u32),
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Throttle(_) => "throttle",
        }
    }
}

/// A control as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRecord {
    pub id: i64,
    pub wave: u32,
    pub action: Action,
    pub who: String,
    /// `socket`, `cli`, `dashboard`, `engine` (the stop rule), `wave-run`.
    pub source: String,
    /// Unix time, milliseconds.
    pub at_ms: i64,
    /// Why, when the sender said (the stop rule always does).
    pub note: Option<String>,
}

/// What the controls of a wave add up to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    pub paused: bool,
    /// The operator's limit on sites in progress (`None`: the wave's `--concurrency`).
    pub concurrency_limit: Option<u32>,
    /// Why the wave is paused: who paused it, from where, when, and their note.
    pub reason: Option<String>,
    /// The pause was the stop rule's (too many failures), not an operator's.
    pub stopped_by_rule: bool,
    /// When the last `resume` was sent (the stop rule counts failures after it).
    pub resumed_ms: Option<i64>,
    /// The last control, if any.
    pub last: Option<ControlRecord>,
}

/// The running wave's picture, published to the journal and answered by the socket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WaveStatus {
    pub wave: u32,
    /// PID of the migrator running the wave.
    pub pid: u32,
    pub total: usize,
    /// Sites that ended in this run (live, failed, or left on the old side).
    #[serde(default)]
    pub ended: usize,
    /// Sites per state, in the state machine's order (JSON: keyed by the state's journal
    /// name, `planned`, `synced`, `frozen`, `live`, `failed`, ...).
    pub states: BTreeMap<SiteState, usize>,
    /// Sites being worked on now.
    pub running: Vec<String>,
    pub bytes: u64,
    /// Bytes per second since the wave started.
    pub rate: f64,
    pub eta_seconds: Option<f64>,
    pub elapsed_seconds: f64,
    pub failures: usize,
    pub control: ControlState,
    /// Sites waiting before their freeze, and why (tunnel, copy lag, error rate, pause).
    pub waiting: BTreeMap<String, String>,
    /// The wave ended (the status is the final one).
    pub finished: bool,
    pub updated_ms: i64,
    /// Where the wave's move groups are, when it was started for workers
    /// (`migrator wave start`; read from the journal, for the whole fleet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<crate::fleet::Progress>,
}

impl WaveStatus {
    /// One line for logs and the plain progress output.
    pub fn line(&self) -> String {
        let states: Vec<String> = self
            .states
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let mut s = format!(
            "wave {}: {} sites ({}), {} running, {} bytes, {:.1} MB/s",
            self.wave,
            self.total,
            states.join(", "),
            self.running.len(),
            self.bytes,
            self.rate / 1e6
        );
        if let Some(eta) = self.eta_seconds {
            s.push_str(&format!(", ETA {eta:.0} s"));
        }
        if let Some(r) = &self.control.reason {
            s.push_str(&format!("; PAUSED: {r}"));
        }
        if let Some(l) = self.control.concurrency_limit {
            s.push_str(&format!("; throttled to {l} at once"));
        }
        if let Some(w) = throttle_summary(&self.waiting) {
            s.push_str(&format!("; waiting: {w}"));
        }
        if let Some(g) = &self.groups {
            s.push_str(&format!(
                "; move groups: {} queued, {} claimed, {} claim expired, {} done",
                g.queued, g.claimed, g.expired, g.done
            ));
        }
        s
    }
}

/// "reason (n sites)" for the most common waiting reason, or `None`.
pub fn throttle_summary(waiting: &BTreeMap<String, String>) -> Option<String> {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for r in waiting.values() {
        *by.entry(r.as_str()).or_default() += 1;
    }
    by.into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(r, n)| format!("{r} ({n} site{})", if n == 1 { "" } else { "s" }))
}

/// A connection to the control tables of one journal.
pub struct Controls {
    db: Box<dyn SqlConn>,
}

impl Controls {
    /// Opens the journal a `--journal` value names: a file path or a MariaDB URL.
    pub fn open(journal: &Path) -> Result<Controls> {
        Ok(Controls {
            db: crate::journal::open_sql_at(journal)?,
        })
    }

    /// Controls over an open connection.
    pub fn on(db: Box<dyn SqlConn>) -> Controls {
        Controls { db }
    }

    /// The connection (the journal's other tables).
    pub fn sql(&self) -> &dyn SqlConn {
        &*self.db
    }

    /// Records a control; the running wave obeys it within a second.
    pub fn request(
        &self,
        wave: u32,
        action: Action,
        who: &str,
        source: &str,
        note: Option<&str>,
    ) -> Result<ControlRecord> {
        let value = match action {
            Action::Throttle(n) => Some(n),
            _ => None,
        };
        let at_ms = crate::journal::now_ms();
        let r = self.db.exec(
            "INSERT INTO wave_controls(wave, action, value, who, at_ms, source, note)
             VALUES(?, ?, ?, ?, ?, ?, ?)",
            &[
                wave.into(),
                action.name().into(),
                value.into(),
                who.into(),
                at_ms.into(),
                source.into(),
                note.into(),
            ],
        )?;
        Ok(ControlRecord {
            id: r.last_id,
            wave,
            action,
            who: who.to_string(),
            source: source.to_string(),
            at_ms,
            note: note.map(str::to_string),
        })
    }

    /// Every control of `wave`, oldest first.
    pub fn history(&self, wave: u32) -> Result<Vec<ControlRecord>> {
        let rows = self.db.query(
            "SELECT id, wave, action, value, who, at_ms, source, note FROM wave_controls
             WHERE wave = ? ORDER BY id",
            &[wave.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let value = r.opt_i64(3)?.unwrap_or(0);
            // Rows come only from `request`; an unknown action (a newer migrator) is skipped.
            let action = match r.text(2)?.as_str() {
                "pause" => Action::Pause,
                "resume" => Action::Resume,
                "throttle" => Action::Throttle(u32::try_from(value).unwrap_or(u32::MAX)),
                _ => continue,
            };
            out.push(ControlRecord {
                id: r.i64(0)?,
                wave: u32::try_from(r.i64(1)?).unwrap_or(wave),
                action,
                who: r.text(4)?,
                at_ms: r.i64(5)?,
                source: r.text(6)?,
                note: r.opt_text(7)?,
            });
        }
        Ok(out)
    }

    /// The fold of every control of `wave`.
    pub fn current(&self, wave: u32) -> Result<ControlState> {
        Ok(fold(&self.history(wave)?))
    }

    /// Publishes the running wave's status.
    pub fn publish(&self, status: &WaveStatus) -> Result<()> {
        let json = serde_json::to_string(status).expect("status serializes");
        let d = self.db.dialect();
        self.db.exec(
            &format!(
                "INSERT INTO wave_status(wave, json, updated_ms) VALUES(?, ?, ?) {} \
                 json = {}, updated_ms = {}",
                d.upsert("wave"),
                d.excluded("json"),
                d.excluded("updated_ms")
            ),
            &[
                status.wave.into(),
                json.into(),
                crate::journal::now_ms().into(),
            ],
        )?;
        Ok(())
    }

    /// The last published status of `wave`, or of the most recently updated wave.
    pub fn status(&self, wave: Option<u32>) -> Result<Option<WaveStatus>> {
        let row = match wave {
            Some(w) => self.db.row(
                "SELECT wave, json FROM wave_status WHERE wave = ?",
                &[w.into()],
            )?,
            None => self.db.row(
                "SELECT wave, json FROM wave_status ORDER BY updated_ms DESC LIMIT 1",
                &[],
            )?,
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let wave = u32::try_from(row.i64(0)?).unwrap_or(0);
        serde_json::from_str(&row.text(1)?)
            .map(Some)
            .map_err(|source| ControlError::Status {
                journal: self.db.name().to_string(),
                wave,
                source,
            })
    }

    /// The wave a control without `--wave` means: the most recently published one.
    pub fn latest_wave(&self) -> Result<u32> {
        let row = self.db.row(
            "SELECT wave FROM wave_status ORDER BY updated_ms DESC LIMIT 1",
            &[],
        )?;
        match row {
            Some(r) => Ok(u32::try_from(r.i64(0)?).unwrap_or(0)),
            None => Err(ControlError::NoWave(self.db.name().to_string())),
        }
    }

    /// Records why the wave (or one site) waits or goes on.
    pub fn event(&self, wave: u32, site: Option<&str>, kind: &str, message: &str) -> Result<()> {
        self.db.exec(
            "INSERT INTO wave_events(wave, site, kind, message, at_ms) VALUES(?, ?, ?, ?, ?)",
            &[
                wave.into(),
                site.into(),
                kind.into(),
                message.into(),
                crate::journal::now_ms().into(),
            ],
        )?;
        Ok(())
    }

    /// Events of `wave`, oldest first.
    pub fn events(&self, wave: u32) -> Result<Vec<WaveEvent>> {
        let rows = self.db.query(
            "SELECT site, kind, message, at_ms FROM wave_events WHERE wave = ? ORDER BY id",
            &[SqlValue::from(wave)],
        )?;
        rows.into_iter()
            .map(|r| {
                Ok(WaveEvent {
                    site: r.opt_text(0)?,
                    kind: r.text(1)?,
                    message: r.text(2)?,
                    at_ms: r.i64(3)?,
                })
            })
            .collect()
    }
}

/// Why the wave (or one site) waited or went on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaveEvent {
    pub site: Option<String>,
    /// `control` (pause/resume/throttle folded), `throttle` (a site waits), `go`.
    pub kind: String,
    pub message: String,
    pub at_ms: i64,
}

/// Folds controls in order into the state they leave.
pub fn fold(history: &[ControlRecord]) -> ControlState {
    let mut st = ControlState::default();
    for c in history {
        match c.action {
            Action::Pause => {
                st.paused = true;
                st.stopped_by_rule = c.source == STOP_RULE_SOURCE;
                st.reason = Some(format!(
                    "paused by {} ({}) at {}{}",
                    c.who,
                    c.source,
                    utc(c.at_ms),
                    c.note
                        .as_deref()
                        .map(|n| format!(": {n}"))
                        .unwrap_or_default()
                ));
            }
            Action::Resume => {
                st.resumed_ms = Some(c.at_ms);
                st.paused = false;
                st.stopped_by_rule = false;
                st.reason = None;
            }
            Action::Throttle(0) => st.concurrency_limit = None,
            Action::Throttle(n) => st.concurrency_limit = Some(n),
        }
        st.last = Some(c.clone());
    }
    st
}

/// The `source` the stop rule writes its pause with.
pub const STOP_RULE_SOURCE: &str = "engine";

/// `request` on the journal at `path` (one-shot connection).
pub fn request(
    journal: &Path,
    wave: u32,
    action: Action,
    who: &str,
    source: &str,
) -> Result<ControlRecord> {
    Controls::open(journal)?.request(wave, action, who, source, None)
}

/// `current` on the journal at `path` (one-shot connection).
pub fn current(journal: &Path, wave: u32) -> Result<ControlState> {
    Controls::open(journal)?.current(wave)
}

/// Who is at the keyboard: `$SUDO_USER`, `$USER`, or the uid.
pub fn whoami() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid has no preconditions and cannot fail.
            format!("uid {}", unsafe { libc::getuid() })
        })
}

/// `2026-11-22T21:30:05Z` from Unix milliseconds (UTC, no time-zone database needed).
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_fold_in_order_and_record_who_and_when() {
        let dir = tempfile::tempdir().unwrap();
        let jp = dir.path().join("j.sqlite");
        // The journal's own tables and the control tables share the file.
        let _j = crate::journal::SqliteJournal::open(&jp).unwrap();
        assert_eq!(current(&jp, 3).unwrap(), ControlState::default());
        request(&jp, 3, Action::Pause, "alice", "socket").unwrap();
        request(&jp, 4, Action::Throttle(9), "bob", "cli").unwrap();
        let st = current(&jp, 3).unwrap();
        assert!(st.paused && !st.stopped_by_rule);
        assert!(st
            .reason
            .as_deref()
            .unwrap()
            .starts_with("paused by alice (socket) at 20"));
        assert_eq!(
            st.concurrency_limit, None,
            "wave 4's throttle is not wave 3's"
        );
        request(&jp, 3, Action::Throttle(2), "bob", "dashboard").unwrap();
        request(&jp, 3, Action::Resume, "bob", "cli").unwrap();
        let st = current(&jp, 3).unwrap();
        assert!(!st.paused && st.reason.is_none());
        assert_eq!(st.concurrency_limit, Some(2));
        assert_eq!(st.last.as_ref().unwrap().who, "bob");
        let c = Controls::open(&jp).unwrap();
        let h = c.history(3).unwrap();
        assert_eq!(
            h.iter().map(|r| r.action).collect::<Vec<_>>(),
            [Action::Pause, Action::Throttle(2), Action::Resume]
        );
        assert!(h.iter().all(|r| r.at_ms > 0));
        c.request(3, Action::Throttle(0), "bob", "cli", None)
            .unwrap();
        c.request(
            3,
            Action::Pause,
            "stop-rule",
            STOP_RULE_SOURCE,
            Some("3 failed"),
        )
        .unwrap();
        let st = c.current(3).unwrap();
        assert_eq!(st.concurrency_limit, None);
        assert!(st.stopped_by_rule && st.reason.unwrap().ends_with(": 3 failed"));
    }

    #[test]
    fn status_is_published_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let jp = dir.path().join("j.sqlite");
        let c = Controls::open(&jp).unwrap();
        assert!(matches!(c.latest_wave(), Err(ControlError::NoWave(_))));
        let mut s = WaveStatus {
            wave: 7,
            total: 3,
            ..Default::default()
        };
        s.states.insert(SiteState::Live, 1);
        s.states.insert(SiteState::RolledBack, 2);
        // The states travel by their journal names (socket, journal, dashboard).
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["states"],
            serde_json::json!({"live": 1, "rolled_back": 2})
        );
        s.waiting.insert("a".into(), "tunnel unhealthy".into());
        c.publish(&s).unwrap();
        assert_eq!(c.latest_wave().unwrap(), 7);
        assert_eq!(c.status(None).unwrap().unwrap(), s);
        assert!(c.status(Some(8)).unwrap().is_none());
        assert!(s.line().contains("waiting: tunnel unhealthy (1 site)"));
        c.event(7, Some("a"), "throttle", "tunnel unhealthy")
            .unwrap();
        assert_eq!(c.events(7).unwrap()[0].message, "tunnel unhealthy");
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_383_005_000), "2026-11-22T21:30:05Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}

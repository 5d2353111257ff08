//! The running wave's live picture: what every site is doing, bytes moved, why sites wait,
//! the operator's controls and the wave's recent failures. The engine reports into it through
//! [`WaveSignals`]; the wave's control thread folds the journal's controls into it and
//! publishes [`WaveStatus`] snapshots; the socket, the progress bars and the dashboard read
//! those snapshots.

use crate::control::{ControlState, Controls, WaveStatus};
use crate::cutover::signals::{Hold, WaveSignals};
use crate::journal::SiteState;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits of the error-rate throttle.
#[derive(Debug, Clone)]
pub struct ErrorRate {
    /// Hold freezes while at least this many sites failed within `window` (0: never).
    pub max_recent: usize,
    pub window: Duration,
}

impl Default for ErrorRate {
    fn default() -> Self {
        ErrorRate {
            max_recent: 2,
            window: Duration::from_secs(60),
        }
    }
}

#[derive(Default)]
struct Inner {
    states: BTreeMap<String, SiteState>,
    bytes: u64,
    running: BTreeSet<String>,
    waiting: BTreeMap<String, String>,
    /// When each failure happened (Unix ms).
    failures: Vec<i64>,
    /// Sites that ended (live, failed, or left on the old side) in this run.
    ended: usize,
    control: ControlState,
    finished: bool,
}

pub struct WaveMonitor {
    wave: u32,
    total: usize,
    started: Instant,
    errors: ErrorRate,
    inner: Mutex<Inner>,
    /// Where reason changes are recorded (`wave_events`); none in a dry run's scratch world.
    events: Option<Mutex<Controls>>,
}

impl WaveMonitor {
    /// `sites`: every site of the wave with its journaled state.
    pub fn new(
        wave: u32,
        sites: &[(String, SiteState)],
        errors: ErrorRate,
        journal: Option<&Path>,
    ) -> WaveMonitor {
        let inner = Inner {
            states: sites.iter().map(|(s, st)| (s.clone(), *st)).collect(),
            ..Default::default()
        };
        WaveMonitor {
            wave,
            total: sites.len(),
            started: Instant::now(),
            errors,
            inner: Mutex::new(inner),
            events: journal.and_then(|p| Controls::open(p).ok().map(Mutex::new)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("monitor"))
    }

    pub fn wave(&self) -> u32 {
        self.wave
    }

    fn event(&self, site: Option<&str>, kind: &str, message: &str) {
        if let Some(c) = &self.events {
            // The event log is for people; a busy journal must not stop a site.
            let _ = c
                .lock()
                .expect("events")
                .event(self.wave, site, kind, message);
        }
    }

    pub fn set_control(&self, c: ControlState) {
        let changed = self.with(|i| {
            let changed =
                i.control.reason != c.reason || i.control.concurrency_limit != c.concurrency_limit;
            i.control = c.clone();
            changed
        });
        if changed {
            let msg = match (&c.reason, c.concurrency_limit) {
                (Some(r), _) => r.clone(),
                (None, Some(l)) => format!("running, at most {l} sites at once"),
                (None, None) => "running".into(),
            };
            self.event(None, "control", &msg);
        }
    }

    pub fn control(&self) -> ControlState {
        self.with(|i| i.control.clone())
    }

    pub fn site_started(&self, site: &str) {
        self.with(|i| i.running.insert(site.to_string()));
    }

    /// `site` ended in this run; `failed` counts for the stop rule and the error rate.
    pub fn site_ended(&self, site: &str, failed: bool, state: Option<SiteState>) {
        self.with(|i| {
            i.running.remove(site);
            i.waiting.remove(site);
            i.ended += 1;
            if failed {
                i.failures.push(crate::journal::now_ms());
            }
            if let Some(st) = state {
                i.states.insert(site.to_string(), st);
            }
        });
    }

    /// `site` ended an attempt back on the old side and is queued again (no failure counted:
    /// the stop rule and the error rate see only its last attempt).
    pub fn site_requeued(&self, site: &str, state: Option<SiteState>, why: &str) {
        self.with(|i| {
            i.running.remove(site);
            i.waiting.remove(site);
            if let Some(st) = state {
                i.states.insert(site.to_string(), st);
            }
        });
        self.event(Some(site), "retry", why);
    }

    pub fn running(&self) -> usize {
        self.with(|i| i.running.len())
    }

    /// Failures recorded after `since_ms` (all when `None`).
    pub fn failures_since(&self, since_ms: Option<i64>) -> usize {
        self.with(|i| {
            i.failures
                .iter()
                .filter(|t| since_ms.is_none_or(|s| **t > s))
                .count()
        })
    }

    pub fn finish(&self) {
        self.with(|i| i.finished = true);
    }

    pub fn snapshot(&self) -> WaveStatus {
        let elapsed = self.started.elapsed().as_secs_f64();
        self.with(|i| {
            let mut states = BTreeMap::new();
            for st in i.states.values() {
                *states.entry(*st).or_insert(0) += 1;
            }
            let rate = if elapsed > 0.0 {
                i.bytes as f64 / elapsed
            } else {
                0.0
            };
            let remaining = self.total.saturating_sub(i.ended);
            let eta_seconds =
                (i.ended > 0 && !i.finished).then(|| elapsed / i.ended as f64 * remaining as f64);
            WaveStatus {
                wave: self.wave,
                pid: std::process::id(),
                total: self.total,
                ended: i.ended,
                states,
                running: i.running.iter().cloned().collect(),
                bytes: i.bytes,
                rate,
                eta_seconds,
                elapsed_seconds: elapsed,
                failures: i.failures.len(),
                control: i.control.clone(),
                waiting: i.waiting.clone(),
                finished: i.finished,
                updated_ms: crate::journal::now_ms(),
                groups: None,
            }
        })
    }
}

impl WaveSignals for WaveMonitor {
    fn hold(&self) -> Option<Hold> {
        let (control, recent) = self.with(|i| {
            let since = crate::journal::now_ms() - self.errors.window.as_millis() as i64;
            (
                i.control.clone(),
                i.failures.iter().filter(|t| **t > since).count(),
            )
        });
        if control.paused {
            return Some(Hold {
                reason: control.reason.unwrap_or_else(|| "paused".into()),
                bounded: false,
            });
        }
        if self.errors.max_recent > 0 && recent >= self.errors.max_recent {
            return Some(Hold {
                reason: format!(
                    "error rate: {recent} sites failed in the last {} s (limit {})",
                    self.errors.window.as_secs(),
                    self.errors.max_recent
                ),
                bounded: true,
            });
        }
        None
    }

    fn waiting(&self, site: &str, reason: Option<&str>) {
        let changed = self.with(|i| match reason {
            Some(r) => i.waiting.insert(site.to_string(), r.to_string()).as_deref() != Some(r),
            None => i.waiting.remove(site).is_some(),
        });
        if changed {
            match reason {
                Some(r) => self.event(Some(site), "throttle", r),
                None => self.event(Some(site), "go", "no reason to wait: going on"),
            }
        }
    }

    fn state(&self, site: &str, state: SiteState) {
        self.with(|i| i.states.insert(site.to_string(), state));
    }

    fn bytes(&self, _site: &str, bytes: u64) {
        self.with(|i| i.bytes += bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Action;

    #[test]
    fn holds_on_pause_and_error_rate_and_logs_reason_changes() {
        let dir = tempfile::tempdir().unwrap();
        let jp = dir.path().join("j");
        let sites = vec![
            ("a".to_string(), SiteState::Planned),
            ("b".to_string(), SiteState::Live),
        ];
        let m = WaveMonitor::new(
            2,
            &sites,
            ErrorRate {
                max_recent: 1,
                window: Duration::from_secs(60),
            },
            Some(&jp),
        );
        assert!(m.hold().is_none());
        let c = Controls::open(&jp).unwrap();
        c.request(2, Action::Pause, "dave", "cli", None).unwrap();
        m.set_control(c.current(2).unwrap());
        let h = m.hold().unwrap();
        assert!(!h.bounded && h.reason.contains("dave"), "{h:?}");
        c.request(2, Action::Resume, "dave", "cli", None).unwrap();
        m.set_control(c.current(2).unwrap());
        m.site_started("a");
        m.waiting("a", Some("tunnel unhealthy: x"));
        m.waiting("a", Some("tunnel unhealthy: x"));
        m.bytes("a", 10);
        let s = m.snapshot();
        assert_eq!(s.running, ["a"]);
        assert_eq!(s.waiting["a"], "tunnel unhealthy: x");
        assert_eq!(s.states[&SiteState::Planned], 1);
        assert_eq!(s.bytes, 10);
        m.waiting("a", None);
        m.site_ended("a", true, Some(SiteState::Synced));
        let h = m.hold().unwrap();
        assert!(h.bounded && h.reason.starts_with("error rate: 1 sites failed"));
        assert_eq!(m.failures_since(None), 1);
        assert_eq!(m.failures_since(Some(crate::journal::now_ms() + 1)), 0);
        let ev: Vec<String> = c.events(2).unwrap().into_iter().map(|e| e.kind).collect();
        // pause, running, one throttle (not two: the reason did not change), go.
        assert_eq!(ev, ["control", "control", "throttle", "go"]);
        assert!(m.snapshot().eta_seconds.is_some());
    }
}

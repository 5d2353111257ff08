//! Throttling before a freeze, split in three as in gh-ost's `throttler.go`: collectors measure
//! (tunnel health, copy lag of the last sync pass, the wave's recent failures and its operator
//! controls), [`decide`] returns the first *reason* not to freeze now, and the engine's gate
//! ([`obey`]) waits while there is one, saying why (journal event, status, progress line)
//! only when the reason changes.
//!
//! Waiting is bounded by `gate_wait` for health reasons: then the site is left unfrozen on the
//! old side (state `synced`, a failed `gate` step naming the reason) and the wave goes on. An
//! operator's pause waits without bound (only an interrupt ends it). A copy lag is worked off,
//! not waited out: each round runs one more incremental sync pass and measures it again.
//!
//! No site is frozen while the tunnel is unhealthy, and [`tunnel_ok`] is asked again between
//! verify and switch: a tunnel lost during the freeze aborts the site to the old side.

use crate::cutover::checkpoints::{self, Checkpoint};
use crate::cutover::engine::Engine;
use crate::cutover::phase::{CutoverError, Phase};
use crate::cutover::signals::Hold;
use crate::journal::StepOutcome;
use crate::systems::Direction;
use std::time::Instant;

/// Why a site may not freeze now.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    Hold(Hold),
    Tunnel(String),
    /// The last sync pass moved more than the freeze budget allows.
    Delta {
        bytes: u64,
        budget: u64,
    },
    /// The last sync pass took longer than the freeze budget allows (a slow destination).
    CopyLag {
        ms: u64,
        budget_ms: u64,
    },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Hold(h) => f.write_str(&h.reason),
            Reason::Tunnel(r) => write!(f, "tunnel unhealthy: {r}"),
            Reason::Delta { bytes, budget } => {
                write!(f, "copy lag {bytes} bytes > {budget} bytes per pass")
            }
            Reason::CopyLag { ms, budget_ms } => write!(
                f,
                "copy lag {:.1} s > {:.1} s",
                *ms as f64 / 1e3,
                *budget_ms as f64 / 1e3
            ),
        }
    }
}

impl Reason {
    fn bounded(&self) -> bool {
        match self {
            Reason::Hold(h) => h.bounded,
            _ => true,
        }
    }
}

/// The first reason not to freeze `engine`'s site now, or `None`.
pub fn decide(engine: &Engine<'_>) -> Result<Option<Reason>, CutoverError> {
    if let Some(h) = engine.opts.signals.as_ref().and_then(|s| s.hold()) {
        return Ok(Some(Reason::Hold(h)));
    }
    if let Some(t) = &engine.sys.tunnel {
        if let Err(r) = t.check() {
            return Ok(Some(Reason::Tunnel(r.to_string())));
        }
    }
    let site = &engine.spec.site;
    let num = |cp| -> Result<u64, CutoverError> {
        Ok(checkpoints::get_num(engine.journal, site, cp)?.unwrap_or(0))
    };
    let budget = &engine.spec.budget;
    let bytes = num(Checkpoint::LastDelta)?;
    if bytes > budget.max_delta_bytes {
        return Ok(Some(Reason::Delta {
            bytes,
            budget: budget.max_delta_bytes,
        }));
    }
    let ms = num(Checkpoint::LastPassMs)?;
    if ms > budget.max_lag_ms {
        return Ok(Some(Reason::CopyLag {
            ms,
            budget_ms: budget.max_lag_ms,
        }));
    }
    Ok(None)
}

/// Records the last sync pass's size and duration (what [`decide`] compares to the budget).
pub(crate) fn record_pass(
    engine: &mut Engine<'_>,
    bytes: u64,
    ms: u64,
) -> Result<(), CutoverError> {
    let site = engine.spec.site.clone();
    let j = &mut *engine.journal;
    checkpoints::put(j, &site, Checkpoint::LastDelta, &bytes.to_string())?;
    checkpoints::put(j, &site, Checkpoint::LastPassMs, &ms.to_string())?;
    Ok(())
}

/// One more incremental pass (files and changed tables) to work off a copy lag.
fn catch_up(engine: &mut Engine<'_>) -> Result<(), CutoverError> {
    let spec = engine.spec;
    let dbs = engine.dbs_on_old()?;
    let (bytes, ms) = engine.phase(Phase::Sync, |e| {
        let t0 = Instant::now();
        let moved = e.copy_pass(spec, &dbs, Direction::Forward, true, Phase::Sync)?;
        Ok(((moved, t0.elapsed().as_millis() as u64), moved))
    })?;
    record_pass(engine, bytes, ms)
}

/// The gate before a freeze: waits while [`decide`] has a reason (see the module doc).
pub(crate) fn obey(engine: &mut Engine<'_>) -> Result<(), CutoverError> {
    let site = engine.spec.site.clone();
    let signals = engine.opts.signals.clone();
    let tell = |r: Option<&str>| {
        if let Some(s) = &signals {
            s.waiting(&site, r);
        }
    };
    let mut step: Option<i64> = None;
    let mut shown: Option<String> = None;
    let mut bounded_since: Option<Instant> = None;
    loop {
        let reason = match decide(engine) {
            Ok(r) => r,
            Err(e) => {
                tell(None);
                return Err(e);
            }
        };
        let Some(reason) = reason else {
            if let Some(id) = step {
                engine.journal.finish_step(id, &StepOutcome::default())?;
                tell(None);
            }
            return Ok(());
        };
        let text = reason.to_string();
        if step.is_none() {
            step = Some(engine.journal.begin_step(&site, Phase::Gate.name())?);
        }
        if shown.as_deref() != Some(text.as_str()) {
            tell(Some(&text));
            shown = Some(text.clone());
        }
        let since = if reason.bounded() {
            *bounded_since.get_or_insert_with(Instant::now)
        } else {
            bounded_since = None;
            Instant::now()
        };
        if reason.bounded() && since.elapsed() >= engine.opts.gate_wait {
            let waited = since.elapsed().as_secs_f64();
            let msg = format!(
                "{text}; waited {waited:.0} s: the site was not frozen and serves from the old side"
            );
            if let Some(id) = step {
                engine.journal.fail_step(id, &msg)?;
            }
            tell(None);
            return Err(match reason {
                Reason::Delta { bytes, budget } => CutoverError::DeltaTooLarge {
                    bytes,
                    budget,
                    passes: engine.spec.budget.max_sync_passes,
                },
                _ => CutoverError::Gate(msg),
            });
        }
        if engine
            .opts
            .interrupt
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            if let Some(id) = step {
                engine
                    .journal
                    .fail_step(id, &format!("{text}; interrupted while waiting"))?;
            }
            tell(None);
            return Err(CutoverError::Interrupted);
        }
        match reason {
            Reason::Delta { .. } | Reason::CopyLag { .. } => catch_up(engine)?,
            _ => std::thread::sleep(engine.opts.gate_poll),
        }
    }
}

/// Asked between verify and switch, inside the freeze: the switch sends the site's traffic
/// through the tunnel. The gate before the freeze ran the full check; this is the cheap
/// confirmation that the tunnel still answers (`TunnelGate::confirm`).
/// `after_gate` is false when no full check ran just before (a switch resumed after a crash):
/// then the full check is asked.
pub(crate) fn tunnel_ok(engine: &Engine<'_>, after_gate: bool) -> Result<(), CutoverError> {
    if let Some(t) = &engine.sys.tunnel {
        let verdict = if after_gate { t.confirm() } else { t.check() };
        if let Err(r) = verdict {
            return Err(CutoverError::Gate(format!(
                "tunnel unhealthy during the freeze ({r}): not switching"
            )));
        }
    }
    Ok(())
}

//! Shared freeze: sites that share a database move as one group, in one freeze window, so no
//! member ever writes the shared database on the side that does not own it.
//!
//! Each member is prepared and synced on its own; then every member passes the throttle gate,
//! and only then are they all frozen (each member's HAProxy servers in maint, the shared
//! databases paused once), final-synced, verified, checked against the tunnel, switched and
//! unfrozen, in that order. A failure of any member before the commit point aborts every
//! member back to the old side; a member already `live` (or past the commit point after a
//! crash) is completed on its own, since the shared database follows the first switch. A
//! member found wrong after the switch (post-verify, post-check) rolls back with every member
//! past its switch, in one freeze ([`crate::cutover::rollback::run_group`]): never alone.

use crate::cutover::engine::{Engine, EngineOptions, SiteReport};
use crate::cutover::phase::CutoverError;
use crate::cutover::{rollback, throttle};
use crate::journal::{open_journal_at, SiteState};
use crate::site_spec::SiteSpec;
use crate::systems::{SysResult, Systems};
use std::path::Path;

/// One site's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SiteOutcome {
    pub site: String,
    pub report: Option<SiteReport>,
    pub error: Option<String>,
}

/// Builds a site's systems (real or recording).
pub type SystemsFn<'a> = &'a (dyn Fn(&SiteSpec) -> SysResult<Systems> + Sync);

/// Migrates `members` together; one outcome per member, in order.
pub fn migrate_group(
    journal_path: &Path,
    members: &[&SiteSpec],
    systems: SystemsFn<'_>,
    opts: &EngineOptions,
) -> Vec<SiteOutcome> {
    let fail_all = |e: String| {
        members
            .iter()
            .map(|m| SiteOutcome {
                site: m.site.clone(),
                report: None,
                error: Some(e.clone()),
            })
            .collect::<Vec<_>>()
    };
    let mut syss = Vec::new();
    let mut journals = Vec::new();
    for m in members {
        match systems(m) {
            Ok(s) => syss.push(s),
            Err(e) => return fail_all(format!("{}: {e}", m.site)),
        }
        match open_journal_at(journal_path) {
            Ok(j) => journals.push(j),
            Err(e) => return fail_all(e.to_string()),
        }
    }
    let mut engines: Vec<Engine<'_>> = members
        .iter()
        .zip(&syss)
        .zip(journals.iter_mut())
        .map(|((m, s), j)| Engine::new(m, s, &mut **j, opts))
        .collect();
    let result = run(&mut engines);
    let group_err = result.err().map(|e| e.to_string());
    engines
        .into_iter()
        .map(|mut e| {
            let state = e.state();
            if let Ok(s) = &state {
                e.report.state = *s;
            }
            let error = match (&group_err, state) {
                (_, Ok(SiteState::Live)) => None,
                (Some(g), _) => Some(format!("move group: {g}")),
                (None, Ok(s)) => Some(format!("ended {s}")),
                (None, Err(x)) => Some(x.to_string()),
            };
            SiteOutcome {
                site: e.spec.site.clone(),
                report: error.is_none().then_some(e.report),
                error,
            }
        })
        .collect()
}

/// The freeze path of every cutover, a single site being a group of one. The sync leases the
/// members took are released at the end, whatever happened (a freeze lease stays only on a
/// site left frozen, for the watchdog).
pub(crate) fn run(engines: &mut [Engine<'_>]) -> Result<(), CutoverError> {
    let res = run_members(engines);
    let mut released = Ok(());
    for e in engines.iter_mut() {
        if let Err(x) = e.release_sync_lease() {
            released = released.and(Err(x));
        }
    }
    res.and(released)
}

/// A member found live but wrong after the switch ([`CutoverError::rolls_back`]): every member
/// past its switch goes back to the old side together (they share a database, which serves
/// from one side only). Returns `cause`, or the rollback's error when that failed.
fn roll_back_switched(engines: &mut [Engine<'_>], cause: CutoverError) -> CutoverError {
    let mut members = Vec::new();
    for (i, e) in engines.iter().enumerate() {
        match e.state() {
            Ok(SiteState::Switched | SiteState::Live) => members.push(i),
            Ok(_) => {}
            Err(x) => return x,
        }
    }
    match rollback::run_members(engines, &members) {
        Ok(()) => cause,
        Err(x) => x,
    }
}

fn run_members(engines: &mut [Engine<'_>]) -> Result<(), CutoverError> {
    // Each member up to `synced` (or completed, when past the commit point after a crash).
    let mut pending = Vec::new();
    for i in 0..engines.len() {
        match engines[i].advance() {
            Ok(SiteState::Synced) => pending.push(i),
            Ok(_) => {}
            Err(cause) if cause.rolls_back() => return Err(roll_back_switched(engines, cause)),
            Err(e) => return Err(e),
        }
    }
    if pending.is_empty() {
        return Ok(());
    }
    for &i in &pending {
        engines[i].check_interrupt()?;
        engines[i].gate()?;
    }
    // One freeze window for every pending member.
    // Every member's web held and drained first, then the (shared) databases paused.
    let mut res = Ok(());
    for &i in &pending {
        res = engines[i].freeze();
        if res.is_err() {
            break;
        }
    }
    for &i in &pending {
        if res.is_ok() {
            res = engines[i].pause_dbs();
        }
    }
    for step in 0..2 {
        for &i in &pending {
            if res.is_ok() {
                res = match step {
                    0 => engines[i].final_sync(),
                    _ => engines[i].verify(),
                };
            }
        }
    }
    if res.is_ok() {
        res = throttle::tunnel_ok(&engines[pending[0]], true);
    }
    if res.is_ok() {
        for &i in &pending {
            res = engines[i].switch_retrying();
            if res.is_err() {
                break;
            }
        }
        // A switch error before any member's commit point: the group goes back to old.
        if res.is_ok() || pending.iter().any(|&i| engines[i].committed()) {
            // Past it: every member switched is unfrozen, even when another one failed.
            let mut unfreeze = Ok(());
            for &i in &pending {
                if engines[i].state()? == SiteState::Switched {
                    let r = engines[i].unfreeze_retrying();
                    if unfreeze.is_ok() {
                        unfreeze = r;
                    }
                }
            }
            res.and(unfreeze)?;
            for &i in &pending {
                let checked = engines[i]
                    .post_verify()
                    .and_then(|()| engines[i].post_check());
                match checked {
                    Ok(()) => {}
                    Err(cause) if cause.rolls_back() => {
                        return Err(roll_back_switched(engines, cause))
                    }
                    Err(e) => return Err(e),
                }
            }
            return Ok(());
        }
    }
    if let Err(cause) = res {
        let mut abort_err = None;
        for &i in &pending {
            match engines[i].abort_now() {
                // Taken over by another migrator: not ours to put back.
                Ok(()) | Err(CutoverError::Leased { .. }) => {}
                Err(a) => {
                    abort_err.get_or_insert(a);
                }
            }
        }
        if matches!(cause, CutoverError::Leased { .. }) && abort_err.is_none() {
            return Err(cause);
        }
        return Err(match abort_err {
            None => CutoverError::Aborted {
                cause: Box::new(cause),
            },
            Some(a) => CutoverError::AbortFailed {
                cause: Box::new(cause),
                abort: Box::new(a),
            },
        });
    }
    Ok(())
}

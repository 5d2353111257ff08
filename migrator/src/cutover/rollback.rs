//! Per-site rollback after the switch (docs/ARCHITECTURE.md §4): freeze on the new side, copy back
//! what changed there since the switch (file pass and changed tables, new → old),
//! verify while still frozen, then switch HAProxy, DNS and the proxy back and unfreeze on the
//! old side. If the copy back does not verify, the new side serves again (nothing lost).
//!
//! A journal checkpoint marks a rollback in progress from its first action to its last, so a
//! killed rollback is finished by the next `rollback` or `wave run` rather than left frozen.
//! Every action checks what the system reports first, so re-running is safe.

use crate::artifacts::fence::Side;
use crate::cutover::checkpoints::{self, Checkpoint};
use crate::cutover::engine::{Ctx, Engine, SiteReport, RETRY_PAUSE, SWITCH_TRIES};
use crate::cutover::phase::{CutoverError, Phase};
use crate::journal::{JournalStore, SiteState};
use crate::site_spec::SiteSpec;
use crate::systems::{Dc, Direction, SystemError};
use drivers::lb::AdminState;

/// Whether a database of the site is open on `side` (unknown counts as yes: never undone).
fn any_open_on(engine: &Engine<'_>, spec: &SiteSpec, side: &str) -> bool {
    spec.databases.iter().any(|db| {
        engine
            .sys
            .proxy
            .route(db)
            .map(|r| r.side == side && !r.paused())
            .unwrap_or(true)
    })
}

/// Clears the rollback's checkpoints (it is finished or given up).
fn clear(engine: &mut Engine<'_>, site: &str) -> Result<(), CutoverError> {
    checkpoints::clear(engine.journal, site, Checkpoint::Rollback)?;
    checkpoints::clear(engine.journal, site, Checkpoint::RollbackSwitch)?;
    Ok(())
}

/// Whether a rollback of `site` was started and not finished.
pub fn in_progress(journal: &dyn JournalStore, site: &str) -> Result<bool, CutoverError> {
    Ok(checkpoints::is_set(journal, site, Checkpoint::Rollback)?)
}

/// `migrator rollback <site>`: only a switched or live site (or an unfinished rollback).
pub fn rollback_site(mut engine: Engine<'_>) -> Result<SiteReport, CutoverError> {
    let state = engine.state()?;
    let pending = in_progress(engine.journal, &engine.spec.site)?;
    if state == SiteState::Finalized {
        return Err(CutoverError::Finalized(engine.spec.site.clone()));
    }
    // Another live migrator working on the site (a wave, the dashboard): touch nothing.
    crate::cutover::lease::ensure_free(engine.journal, &engine.spec.site)?;
    // Refused before anything is frozen: a copy back the transport cannot do.
    crate::files::transport::check_direction(&engine.spec.homes, Direction::Back)
        .map_err(CutoverError::system(Phase::RollbackCopy))?;
    if !pending && !matches!(state, SiteState::Switched | SiteState::Live) {
        return Err(CutoverError::WrongState {
            state,
            action: "roll back (only a switched or live site can be rolled back)",
        });
    }
    run(&mut engine)?;
    engine.report.state = engine.state()?;
    Ok(engine.report)
}

fn drv(dc: Dc) -> impl Fn(drivers::DriverError) -> SystemError {
    move |x| SystemError::from_driver("haproxy", dc, x)
}

/// The rollback itself.
pub(crate) fn run(engine: &mut Engine<'_>) -> Result<(), CutoverError> {
    let site = engine.spec.site.clone();
    let spec = engine.spec;
    if engine.state()? == SiteState::RolledBack {
        // Killed after the rollback's last step: the old side serves and takes writes since;
        // a copy back now would put stale new-side files over them. Only the cleanup is left
        // (the jobs' token too: owned by the old side, running).
        engine.fence_reset(Side::Old)?;
        clear(engine, &site)?;
        return engine.release_lease();
    }
    // The lease first: refused (nothing recorded) when another migrator holds the site.
    engine.take_lease()?;
    checkpoints::stamp(engine.journal, &site, Checkpoint::Rollback)?;
    checkpoints::stamp(engine.journal, &site, Checkpoint::FreezeStartedMs)?;
    // The site's cron jobs first, as in the forward freeze: a run in progress ends before the
    // databases pause (a job writing its database would otherwise wait on the pause while the
    // freeze waits on it, until the wait runs out and the run is stopped).
    let frozen = engine.fence_freeze();
    let frozen = frozen.and_then(|()| {
        engine.phase(Phase::RollbackFreeze, |e| {
            let err = || CutoverError::system(Phase::RollbackFreeze);
            e.sys
                .lb_old
                .set_server_admin(&spec.old_lb.backend, &spec.old_lb.server, AdminState::Maint)
                .map_err(drv(Dc::Old))
                .map_err(err())?;
            e.sys
                .lb_new
                .set_server_admin(&spec.new_lb.backend, &spec.new_lb.server, AdminState::Maint)
                .map_err(drv(Dc::New))
                .map_err(err())?;
            // As in the forward freeze: requests admitted before the maintenance finish (on
            // both VIPs, which both reach the new web) before the databases pause and copy back.
            e.drain(spec, Dc::Old, Phase::RollbackFreeze)?;
            e.drain(spec, Dc::New, Phase::RollbackFreeze)?;
            for db in &spec.databases {
                let r = e.sys.proxy.route(db).map_err(err())?;
                if r.side == spec.proxy.new_side && !r.paused() {
                    e.sys.proxy.pause(db).map_err(err())?;
                }
            }
            Ok(((), 0))
        })
    });
    if let Err(cause) = frozen {
        // Never left half frozen: the new side serves again.
        return Err(give_up(engine, cause));
    }
    let back: Vec<String> = {
        let mut v = Vec::new();
        for db in &spec.databases {
            let r = engine
                .sys
                .proxy
                .route(db)
                .map_err(CutoverError::system(Phase::RollbackCopy))?;
            if r.side == spec.proxy.new_side && r.paused() {
                v.push(db.clone());
            }
        }
        v
    };
    // A killed run verified the copy and began the switch, and a database already serves on
    // the old side (its commit point): the rollback only goes forward now. The site stayed
    // frozen since, so the verified copy still holds; copying again would go over that
    // database, and undoing would split the site.
    let switch_begun = checkpoints::is_set(engine.journal, &site, Checkpoint::RollbackSwitch)?
        && any_open_on(engine, spec, &spec.proxy.old_side);
    let copied = if switch_begun {
        Ok(())
    } else {
        engine.phase(Phase::RollbackCopy, |e| {
            let moved = e.copy_pass(spec, &back, Direction::Back, true, Phase::RollbackCopy)?;
            Ok(((), moved))
        })
    };
    // A copy back that fails is handled like one that does not verify: never left frozen.
    let verified = copied.and_then(|()| {
        if switch_begun {
            return Ok(());
        }
        engine.phase(Phase::RollbackVerify, |e| {
            let diffs = e
                .sys
                .data
                .verify(spec, &back)
                .map_err(CutoverError::system(Phase::RollbackVerify))?;
            if diffs.is_empty() {
                Ok(((), 0))
            } else {
                Err(CutoverError::VerifyFailed(diffs))
            }
        })
    });
    if let Err(cause) = verified {
        // The copy back failed or is not exact: the new side keeps the data and serves again.
        return Err(give_up(engine, cause));
    }
    // Set once the copy back verified and the rollback's switch begins.
    checkpoints::stamp(engine.journal, &site, Checkpoint::RollbackSwitch)?;
    // Both steps are idempotent: a failure is retried (bounded) rather than left frozen.
    let mut switched = retried(|| engine.phase(Phase::RollbackSwitch, |e| switch_back(e, spec)))
        .and_then(|()| engine.fence_owner(Side::Old));
    if switched.is_ok() {
        switched = retried(|| {
            engine.phase(Phase::RollbackUnfreeze, |e| {
                e.sys
                    .lb_old
                    .set_server_admin(&spec.old_lb.backend, &spec.old_lb.server, AdminState::Ready)
                    .map_err(drv(Dc::Old))
                    .map_err(CutoverError::system(Phase::RollbackUnfreeze))?;
                Ok(((), 0))
            })
        });
    }
    if let Err(cause) = switched {
        if any_open_on(engine, spec, &spec.proxy.old_side) {
            // Past the rollback's commit point: the lease is handed over, the watchdog (or the
            // next run) finishes it.
            return Err(engine.hand_over(cause));
        }
        return Err(give_up(engine, cause));
    }
    engine.fence_unfreeze()?;
    engine.report.freeze_ms = engine.freeze_elapsed()?;
    clear(engine, &site)?;
    engine.release_lease()?;
    Ok(())
}

/// The rollback's switch: old VIP at the old web, DNS at the old VIP, then the databases
/// resumed on the old side (its commit point). Each action checks the system first.
fn switch_back(e: &Ctx<'_>, spec: &SiteSpec) -> Result<((), u64), CutoverError> {
    e.point_site_at(
        spec,
        spec.old_web,
        spec.old_vip,
        &spec.proxy.old_side,
        Phase::RollbackSwitch,
    )?;
    Ok(((), 0))
}

/// Runs `f` up to [`SWITCH_TRIES`] times until it succeeds; the last error otherwise.
fn retried(mut f: impl FnMut() -> Result<(), CutoverError>) -> Result<(), CutoverError> {
    let mut tries = 1;
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) if tries >= SWITCH_TRIES => return Err(e),
            Err(_) => tries += 1,
        }
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// Gives the rollback up after `cause`: the new side serves again, the checkpoint is cleared
/// and the lease released. When undoing fails too, the rollback stays pending (finished by the
/// next run or the watchdog) and both errors are returned.
fn give_up(engine: &mut Engine<'_>, cause: CutoverError) -> CutoverError {
    let site = engine.spec.site.clone();
    let undone = undo_freeze(engine)
        .and_then(|()| clear(engine, &site))
        .and_then(|()| engine.release_lease());
    match undone {
        Ok(()) => cause,
        Err(undo) => CutoverError::AbortFailed {
            cause: Box::new(cause),
            abort: Box::new(undo),
        },
    }
}

/// Serves from the new side again after a rollback that could not verify. A killed earlier
/// run may have begun the rollback's switch: the forward switch is restored first (old VIP at
/// the new web, DNS at the new VIP, databases resumed on the new side), from what each system
/// reports.
fn undo_freeze(engine: &mut Engine<'_>) -> Result<(), CutoverError> {
    let spec = engine.spec;
    engine.phase(Phase::Unfreeze, |e| {
        let err = || CutoverError::system(Phase::Unfreeze);
        e.point_old_vip_at(spec, spec.new_web, Phase::Unfreeze)?;
        e.point_dns_at(spec, spec.new_vip, Phase::Unfreeze)?;
        for db in &spec.databases {
            let r = e.sys.proxy.route(db).map_err(err())?;
            if r.paused() {
                e.sys
                    .proxy
                    .resume(db, Some(&spec.proxy.new_side))
                    .map_err(err())?;
            }
        }
        e.sys
            .lb_new
            .set_server_admin(&spec.new_lb.backend, &spec.new_lb.server, AdminState::Ready)
            .map_err(drv(Dc::New))
            .map_err(err())?;
        e.sys
            .lb_old
            .set_server_admin(&spec.old_lb.backend, &spec.old_lb.server, AdminState::Ready)
            .map_err(drv(Dc::Old))
            .map_err(err())?;
        Ok(((), 0))
    })?;
    engine.fence_reset(Side::New)
}

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
use crate::cutover::freeze::{no_diffs, paused_dbs};
use crate::cutover::phase::{CutoverError, Phase};
use crate::journal::{JournalStore, SiteState};
use crate::site_spec::SiteSpec;
use crate::systems::{Dc, Direction};
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
pub fn rollback_site(engine: Engine<'_>) -> Result<SiteReport, CutoverError> {
    let mut reports = rollback_sites(vec![engine])?;
    Ok(reports.remove(0))
}

/// `migrator rollback <site> --with-group`: the sites of one move group (sharing a database)
/// rolled back together ([`run_group`]); each must be switched or live (or have an unfinished
/// rollback). Nothing is frozen when one is refused.
pub fn rollback_sites(mut engines: Vec<Engine<'_>>) -> Result<Vec<SiteReport>, CutoverError> {
    for engine in &engines {
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
    }
    run_group(&mut engines)?;
    let mut reports = Vec::new();
    for mut engine in engines {
        engine.report.state = engine.state()?;
        reports.push(engine.report);
    }
    Ok(reports)
}

/// The rollback of one site (a move group of one: [`run_group`]).
pub(crate) fn run(engine: &mut Engine<'_>) -> Result<(), CutoverError> {
    run_group(std::slice::from_mut(engine))
}

/// The rollback of every site in `engines` at once: the members of a move group (sites that
/// share a database). A database serves from one side only, so a member rolled back alone
/// would take the shared database back to the old side under the others, still served by the
/// new web (split). As in the forward freeze ([`crate::cutover::group`]) they are frozen
/// together (every member's web held and drained, then the databases paused), each copied back
/// and verified (a shared database once), switched back in order (the first database resumed
/// on the old side is the commit point of them all) and unfrozen. Before that commit point any
/// failure puts every member back on the new side; after it, a member that still fails is
/// handed over (the watchdog or the next run finishes its rollback, forward only).
pub(crate) fn run_group(engines: &mut [Engine<'_>]) -> Result<(), CutoverError> {
    let all: Vec<usize> = (0..engines.len()).collect();
    run_members(engines, &all)
}

/// [`run_group`] over the members `which` of `engines`.
pub(crate) fn run_members(engines: &mut [Engine<'_>], which: &[usize]) -> Result<(), CutoverError> {
    let mut members = Vec::new();
    for &i in which {
        let engine = &mut engines[i];
        if engine.state()? == SiteState::RolledBack {
            // Killed after the rollback's last step: the old side serves and takes writes
            // since; a copy back now would put stale new-side files over them. Only the cleanup
            // is left (the jobs' token too: owned by the old side, running).
            let site = engine.spec.site.clone();
            engine.fence_reset(Side::Old)?;
            clear(engine, &site)?;
            engine.release_lease()?;
        } else {
            members.push(i);
        }
    }
    if members.is_empty() {
        return Ok(());
    }
    // The leases first, all or none: refused (nothing recorded) when another migrator holds
    // a member.
    for (n, &i) in members.iter().enumerate() {
        if let Err(x) = engines[i].take_lease() {
            for &j in &members[..n] {
                let _ = engines[j].release_lease();
            }
            return Err(x);
        }
    }
    for &i in &members {
        let site = engines[i].spec.site.clone();
        checkpoints::stamp(engines[i].journal, &site, Checkpoint::Rollback)?;
        checkpoints::stamp(engines[i].journal, &site, Checkpoint::FreezeStartedMs)?;
    }
    // One member: its databases pause inside its freeze phase, as they always did. Several:
    // only once every member's web is held (a member still serving would wait on a paused
    // shared database while its drain waits on it).
    let one = members.len() == 1;
    let mut frozen = Ok(());
    for &i in &members {
        frozen = freeze_member(&mut engines[i], one);
        if frozen.is_err() {
            break;
        }
    }
    if frozen.is_ok() && !one {
        for &i in &members {
            let spec = engines[i].spec;
            frozen = engines[i].phase(Phase::RollbackFreeze, |e| {
                pause_on_new(e, spec)?;
                Ok(((), 0))
            });
            if frozen.is_err() {
                break;
            }
        }
    }
    if let Err(cause) = frozen {
        // Never left half frozen: the new side serves again.
        return Err(give_up_all(engines, &members, cause));
    }
    let mut copied_dbs: Vec<String> = Vec::new();
    let mut checked = Ok(());
    for &i in &members {
        checked = copy_back_member(&mut engines[i], &mut copied_dbs);
        if checked.is_err() {
            break;
        }
    }
    if let Err(cause) = checked {
        // The copy back failed or is not exact: the new side keeps the data and serves again.
        return Err(give_up_all(engines, &members, cause));
    }
    // Set once every copy back verified and the rollback's switch begins.
    for &i in &members {
        let site = engines[i].spec.site.clone();
        checkpoints::stamp(engines[i].journal, &site, Checkpoint::RollbackSwitch)?;
    }
    let mut first_err = None;
    for &i in &members {
        let engine = &mut engines[i];
        let spec = engine.spec;
        // Both steps are idempotent: a failure is retried (bounded) rather than left frozen.
        let mut switched =
            retried(|| engine.phase(Phase::RollbackSwitch, |e| switch_back(e, spec)))
                .and_then(|()| engine.fence_owner(Side::Old));
        if switched.is_ok() {
            switched = retried(|| {
                engine.phase(Phase::RollbackUnfreeze, |e| {
                    e.set_admin(spec, Dc::Old, AdminState::Ready, Phase::RollbackUnfreeze)?;
                    Ok(((), 0))
                })
            });
        }
        if let Err(cause) = switched {
            let committed = members.iter().any(|&j| {
                let e = &engines[j];
                any_open_on(e, e.spec, &e.spec.proxy.old_side)
            });
            if !committed {
                // Nothing serves on the old side yet: every member goes back to the new side.
                return Err(give_up_all(engines, &members, cause));
            }
            // Past the rollback's commit point: the lease is handed over, the watchdog (or
            // the next run) finishes it; the other members still go forward.
            let handed = engines[i].hand_over(cause);
            first_err.get_or_insert(handed);
            continue;
        }
        let site = spec.site.clone();
        let cleaned = engine
            .fence_unfreeze()
            .and_then(|()| {
                engine.report.freeze_ms = engine.freeze_elapsed()?;
                clear(engine, &site)
            })
            .and_then(|()| engine.release_lease());
        if let Err(e) = cleaned {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// Freezes one member: its cron jobs, then both VIPs' servers in maintenance and drained
/// (requests admitted before finish on both VIPs, which both reach the new web); with `pause`,
/// its databases paused too.
fn freeze_member(engine: &mut Engine<'_>, pause: bool) -> Result<(), CutoverError> {
    let spec = engine.spec;
    // The site's cron jobs first, as in the forward freeze: a run in progress ends before the
    // databases pause (a job writing its database would otherwise wait on the pause while the
    // freeze waits on it, until the wait runs out and the run is stopped).
    engine.fence_freeze()?;
    engine.phase(Phase::RollbackFreeze, |e| {
        e.set_admin(spec, Dc::Old, AdminState::Maint, Phase::RollbackFreeze)?;
        e.set_admin(spec, Dc::New, AdminState::Maint, Phase::RollbackFreeze)?;
        e.drain(spec, Dc::Old, Phase::RollbackFreeze)?;
        e.drain(spec, Dc::New, Phase::RollbackFreeze)?;
        if pause {
            pause_on_new(e, spec)?;
        }
        Ok(((), 0))
    })
}

/// Pauses each database of `spec` open on the new side (one already paused is left).
fn pause_on_new(e: &Ctx<'_>, spec: &SiteSpec) -> Result<(), CutoverError> {
    for db in &spec.databases {
        let r = e
            .sys
            .proxy
            .route(db)
            .map_err(CutoverError::system(Phase::RollbackFreeze))?;
        if r.side == spec.proxy.new_side && !r.paused() {
            e.sys
                .proxy
                .pause(db)
                .map_err(CutoverError::system(Phase::RollbackFreeze))?;
        }
    }
    Ok(())
}

/// Copies one frozen member back (its files, and its databases paused on the new side that
/// no member before it copied: `copied` grows) and verifies the copy.
fn copy_back_member(engine: &mut Engine<'_>, copied: &mut Vec<String>) -> Result<(), CutoverError> {
    let spec = engine.spec;
    let site = spec.site.clone();
    // A killed run verified the copy and began the switch, and a database already serves on
    // the old side (its commit point): the rollback only goes forward now. The site stayed
    // frozen since, so the verified copy still holds; copying again would go over that
    // database, and undoing would split the site.
    let switch_begun = checkpoints::is_set(engine.journal, &site, Checkpoint::RollbackSwitch)?
        && any_open_on(engine, spec, &spec.proxy.old_side);
    if switch_begun {
        return Ok(());
    }
    let back = engine.phase(Phase::RollbackCopy, |e| {
        let mut back = paused_dbs(
            e,
            &spec.databases,
            &spec.proxy.new_side,
            Phase::RollbackCopy,
        )?;
        back.retain(|db| !copied.contains(db));
        let moved = e.copy_pass(spec, &back, Direction::Back, true, Phase::RollbackCopy)?;
        Ok((back, moved))
    })?;
    engine.phase(Phase::RollbackVerify, |e| {
        let diffs = e
            .sys
            .data
            .verify(spec, &back)
            .map_err(CutoverError::system(Phase::RollbackVerify))?;
        no_diffs(diffs)
    })?;
    copied.extend(back);
    Ok(())
}

/// Gives the rollback of every member up after `cause` ([`undo_member`]): each serves from
/// the new side again; when undoing fails for one, both errors are returned (the first one).
fn give_up_all(engines: &mut [Engine<'_>], members: &[usize], cause: CutoverError) -> CutoverError {
    let mut failed = None;
    for &i in members {
        if let Err(undo) = undo_member(&mut engines[i]) {
            failed.get_or_insert(undo);
        }
    }
    match failed {
        None => cause,
        Some(undo) => CutoverError::AbortFailed {
            cause: Box::new(cause),
            abort: Box::new(undo),
        },
    }
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

/// Undoes one member's rollback: the new side serves again, the checkpoint is cleared and the
/// lease released. When undoing fails, the rollback stays pending (finished by the next run or
/// the watchdog).
fn undo_member(engine: &mut Engine<'_>) -> Result<(), CutoverError> {
    let site = engine.spec.site.clone();
    undo_freeze(engine)
        .and_then(|()| clear(engine, &site))
        .and_then(|()| engine.release_lease())
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
        e.set_admin(spec, Dc::New, AdminState::Ready, Phase::Unfreeze)?;
        e.set_admin(spec, Dc::Old, AdminState::Ready, Phase::Unfreeze)?;
        Ok(((), 0))
    })?;
    engine.fence_reset(Side::New)
}

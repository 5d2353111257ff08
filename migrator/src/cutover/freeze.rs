//! The freeze window of one site's cutover, in order: [`Engine::freeze`] (web held and
//! drained), [`Engine::pause_dbs`], [`Engine::final_sync`], [`Engine::verify`], [`Engine::switch`]
//! (the commit point), [`Engine::unfreeze`], [`Engine::post_check`]; and [`Engine::abort_now`],
//! which puts every system back on the old side from what it reports.

use crate::cutover::checkpoints::{self, Checkpoint, PostVerify};
use crate::cutover::engine::{Ctx, Engine};
use crate::cutover::lease;
use crate::cutover::machine::server_error;
use crate::cutover::phase::{CutoverError, Phase};
use crate::journal::now_ms;
use crate::systems::Dc;
use drivers::lb::AdminState;

impl Engine<'_> {
    /// The freeze of the web tier: the site's servers in maintenance on both VIPs and the
    /// requests already admitted drained. The databases are paused after it, by
    /// [`Engine::pause_dbs`], once every member of the move group is held: a request held on
    /// an already paused shared database could never drain.
    pub(crate) fn freeze(&mut self) -> Result<(), CutoverError> {
        let spec = self.spec;
        self.take_lease()?;
        // The site's cron jobs first: none starts from now on, and the wait for runs in
        // progress happens before the web is held (not counted in its write freeze).
        self.fence_freeze()?;
        checkpoints::stamp(self.journal, &spec.site, Checkpoint::FreezeStartedMs)?;
        self.phase(Phase::Freeze, |e| {
            let err = || CutoverError::system(Phase::Freeze);
            let lb = |dc, lbs: &crate::site_spec::LbSpec, l: &dyn drivers::lb::LoadBalancer| {
                l.set_server_admin(&lbs.backend, &lbs.server, AdminState::Maint)
                    .map_err(|x| crate::systems::SystemError::from_driver("haproxy", dc, x))
            };
            lb(crate::systems::Dc::Old, &spec.old_lb, e.sys.lb_old.as_ref()).map_err(err())?;
            lb(crate::systems::Dc::New, &spec.new_lb, e.sys.lb_new.as_ref()).map_err(err())?;
            // Requests admitted before the maintenance finish first (their writes land on
            // the old side before the final copy); the databases pause after.
            e.drain_old_web(spec)?;
            Ok(((), 0))
        })
    }

    /// Pauses the site's databases still open on the old side (the end of a group's freeze),
    /// as the journaled phase `pause-dbs`.
    pub(crate) fn pause_dbs(&mut self) -> Result<(), CutoverError> {
        let dbs = self.dbs_on_old()?;
        self.phase(Phase::PauseDbs, |e| {
            let err = || CutoverError::system(Phase::PauseDbs);
            for db in &dbs {
                if !e.sys.proxy.route(db).map_err(err())?.paused() {
                    e.sys.proxy.pause(db).map_err(err())?;
                }
            }
            Ok(((), 0))
        })
    }

    pub(crate) fn final_sync(&mut self) -> Result<(), CutoverError> {
        let spec = self.spec;
        let dbs: Vec<String> = self.spec.databases.clone();
        self.phase(Phase::FinalSync, |e| {
            let dbs = paused_dbs(e, &dbs, &spec.proxy.old_side, Phase::FinalSync)?;
            let moved = e.tail_pass(spec, &dbs)?;
            Ok(((), moved))
        })
    }

    pub(crate) fn verify(&mut self) -> Result<(), CutoverError> {
        let spec = self.spec;
        self.phase(Phase::Verify, |e| {
            let dbs = paused_dbs(e, &spec.databases, &spec.proxy.old_side, Phase::FinalSync)?;
            let diffs = e
                .sys
                .data
                .verify(spec, &dbs)
                .map_err(CutoverError::system(Phase::Verify))?;
            no_diffs(diffs)
        })?;
        if self.sys.data.verifies_after_switch(spec) {
            let pending = PostVerify::Pending.json();
            checkpoints::put(self.journal, &spec.site, Checkpoint::PostVerify, &pending)?;
        }
        Ok(())
    }

    /// Idempotent: each action checks what the system reports first.
    pub(crate) fn switch(&mut self) -> Result<(), CutoverError> {
        let spec = self.spec;
        self.phase(Phase::Switch, |e| {
            // Its last action is the commit point: writes now land on the new side.
            e.point_site_at(
                spec,
                spec.new_web,
                spec.new_vip,
                &spec.proxy.new_side,
                Phase::Switch,
            )?;
            Ok(((), 0))
        })?;
        self.fence_owner(crate::artifacts::fence::Side::New)
    }

    pub(crate) fn unfreeze(&mut self) -> Result<(), CutoverError> {
        let spec = self.spec;
        // Again (idempotent): a run killed right after the switch's phase never got to it.
        self.ensure_owner(crate::artifacts::fence::Side::New)?;
        self.phase(Phase::Unfreeze, |e| {
            e.set_admin(spec, Dc::New, AdminState::Ready, Phase::Unfreeze)?;
            e.set_admin(spec, Dc::Old, AdminState::Ready, Phase::Unfreeze)?;
            Ok(((), 0))
        })?;
        self.fence_unfreeze()?;
        self.release_lease()?;
        self.report.freeze_ms = self.freeze_elapsed()?;
        if let Some(ms) = self.report.freeze_ms {
            checkpoints::put(
                self.journal,
                &spec.site,
                Checkpoint::FreezeMs,
                &format!("{ms:.1}"),
            )?;
        }
        Ok(())
    }

    pub(crate) fn freeze_elapsed(&self) -> Result<Option<f64>, CutoverError> {
        let started: Option<i64> =
            checkpoints::get_num(self.journal, &self.spec.site, Checkpoint::FreezeStartedMs)?;
        Ok(started.map(|t| (now_ms() - t) as f64))
    }

    /// The databases left to verify after the switch ([`crate::systems::DataMover::
    /// verify_after_switch`]); a difference rolls the site back with its new writes.
    pub(crate) fn post_verify(&mut self) -> Result<(), CutoverError> {
        let spec = self.spec;
        let mark = |journal: &mut dyn crate::journal::JournalStore, v: PostVerify| {
            checkpoints::put(journal, &spec.site, Checkpoint::PostVerify, &v.json())
        };
        if !self.sys.data.verifies_after_switch(spec) {
            let stored = checkpoints::get(self.journal, &spec.site, Checkpoint::PostVerify)?;
            let pending = stored.and_then(|s| serde_json::from_str::<PostVerify>(&s).ok())
                == Some(PostVerify::Pending);
            if pending {
                // Pinned by a migrator that is gone: say so in the journal, not silently.
                let _ = self.phase(Phase::PostVerify, |_| {
                    Err::<((), u64), _>(CutoverError::system(Phase::PostVerify)(
                        crate::systems::SystemError::new(
                            "mariadb",
                            crate::systems::Dc::New,
                            "not verified after the switch: the new side's state pinned in \
                             the freeze was lost when the migrator restarted; compare the \
                             sides with `migrator verify` (the site stays live)",
                        ),
                    ))
                });
                mark(self.journal, PostVerify::Unverified)?;
            }
            return Ok(());
        }
        let res = self.phase(Phase::PostVerify, |e| {
            let diffs = e
                .sys
                .data
                .verify_after_switch(spec)
                .map_err(CutoverError::system(Phase::PostVerify))?;
            if diffs.is_empty() {
                Ok(((), 0))
            } else {
                Err(CutoverError::VerifyAfterSwitch(diffs))
            }
        });
        if let Err(CutoverError::VerifyAfterSwitch(_)) = &res {
            // Rolled back by the caller with its move group ([`CutoverError::rolls_back`]).
            mark(self.journal, PostVerify::Failed)?;
        }
        res?;
        mark(self.journal, PostVerify::Done)?;
        Ok(())
    }

    pub(crate) fn post_check(&mut self) -> Result<(), CutoverError> {
        let spec = self.spec;
        let before: Option<String> =
            checkpoints::get(self.journal, &spec.site, Checkpoint::Fingerprint)?
                .and_then(|s| serde_json::from_str(&s).ok());
        let served = spec.artifacts.verify_served;
        if let Some(b) = before.as_deref().filter(|b| server_error(b)) {
            // The site was failing before it moved: what it answers now cannot be judged
            // against that (rolling a site back for answering 200 where it answered 500 fixes
            // nothing).
            tracing::warn!(
                "{}: post-check skipped: the site answered {b:?} before the move",
                spec.site
            );
        }
        if before.is_none() && !served {
            return Ok(());
        }
        let res = self.phase(Phase::PostCheck, |e| {
            if let Some(before) = before.as_ref().filter(|b| !server_error(b)) {
                let after = e
                    .sys
                    .data
                    .fingerprint(spec)
                    .map_err(CutoverError::system(Phase::PostCheck))?
                    .unwrap_or_default();
                if after != *before {
                    return Err(CutoverError::PostCheck {
                        before: before.clone(),
                        after,
                    });
                }
            }
            if served {
                // The site's rules and PHP settings as the new side serves them (issue 20).
                let diffs = e
                    .sys
                    .data
                    .served_artifacts(spec)
                    .map_err(CutoverError::system(Phase::PostCheck))?;
                if !diffs.is_empty() {
                    return Err(CutoverError::VerifyAfterSwitch(diffs));
                }
            }
            Ok(((), 0))
        });
        // Live but wrong: the caller puts it back on the old side now, with every member of its
        // move group ([`CutoverError::rolls_back`]), rather than leave it broken.
        res
    }

    /// Puts every system back on the old side from what it reports, in the order that never
    /// sends a client to a frozen side: databases resumed on old, the old VIP's server at the
    /// old web and ready, and only then DNS back at the old VIP. Idempotent.
    pub(crate) fn abort_now(&mut self) -> Result<(), CutoverError> {
        lease::ensure_free(self.journal, &self.spec.site)?;
        let spec = self.spec;
        self.phase(Phase::Abort, |e| {
            let err = || CutoverError::system(Phase::Abort);
            for db in &spec.databases {
                let r = e.sys.proxy.route(db).map_err(err())?;
                if r.paused() && r.side == spec.proxy.old_side {
                    e.sys.proxy.resume(db, None).map_err(err())?;
                }
            }
            e.point_old_vip_at(spec, spec.old_web, Phase::Abort)?;
            // The old VIP serves again before DNS sends anyone back to it: restoring DNS first
            // would send clients to a side still in maintenance (503) for the whole TTL.
            e.set_admin(spec, Dc::Old, AdminState::Ready, Phase::Abort)?;
            e.point_dns_at(spec, spec.old_vip, Phase::Abort)?;
            Ok(((), 0))
        })?;
        self.fence_reset(crate::artifacts::fence::Side::Old)?;
        self.release_lease()?;
        self.report.freeze_ms = self.freeze_elapsed()?;
        Ok(())
    }
}

/// A verification's outcome as a phase result: its differences are an error.
pub(crate) fn no_diffs(diffs: Vec<String>) -> Result<((), u64), CutoverError> {
    if diffs.is_empty() {
        Ok(((), 0))
    } else {
        Err(CutoverError::VerifyFailed(diffs))
    }
}

/// The databases of `all` that are paused on `side` (the ones this freeze holds); a proxy
/// error is one of `phase`.
pub(crate) fn paused_dbs(
    e: &Ctx<'_>,
    all: &[String],
    side: &str,
    phase: Phase,
) -> Result<Vec<String>, CutoverError> {
    let mut out = Vec::new();
    for db in all {
        let r = e.sys.proxy.route(db).map_err(CutoverError::system(phase))?;
        if r.paused() && r.side == side {
            out.push(db.clone());
        }
    }
    Ok(out)
}

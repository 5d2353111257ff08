//! The cutover's moves of a site's cron fence ([`crate::artifacts::fence`]), each a no-op for
//! a site without jobs: the freeze freezes the jobs and waits for runs in progress (reported
//! past `artifacts.cron_wait_s`), each commit point hands the owner token to its side, the
//! unfreeze and an abort let the owner's jobs run again.

use crate::artifacts::fence::{self, Side};
use crate::cutover::engine::Engine;
use crate::cutover::phase::{CutoverError, Phase};
use std::time::Duration;

/// How long a run stopped at the freeze gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The journal scope of the side whose artifacts are enabled (key: the site).
pub const ACTIVE_SCOPE: &str = "artifacts-active";

impl Engine<'_> {
    fn has_jobs(&self) -> bool {
        !self.spec.artifacts.cron.is_empty()
    }

    /// Freezes the site's jobs and waits for the runs in progress, reaping those whose process
    /// died ([`fence::settle`]). A run still going at the deadline must not write once the
    /// other side owns the site: its process group is stopped (SIGTERM, SIGKILL after
    /// [`STOP_GRACE`]) when it runs on this host; one that cannot be stopped from here refuses
    /// the freeze ([`CutoverError::CronOverrun`]: the cutover aborts, the old side keeps the
    /// site). Everything is reported (`cron_overruns`, journal checkpoint `cron-overrun`).
    pub(crate) fn fence_freeze(&mut self) -> Result<(), CutoverError> {
        if !self.has_jobs() {
            return Ok(());
        }
        let site = self.spec.site.clone();
        // The side about to gain the site gets its jobs first (refused by the token until the
        // commit point), so a slot due during the freeze is started on both sides and runs once
        // after the unfreeze, on the owner ([`crate::systems::DataMover::arm_artifacts`]).
        let gaining = fence::token(self.journal, &site)?.1.owner.other();
        let phase = match gaining {
            Side::New => Phase::Freeze,
            Side::Old => Phase::RollbackFreeze,
        };
        self.sys
            .data
            .arm_artifacts(self.spec, gaining)
            .map_err(CutoverError::system(phase))?;
        fence::freeze(self.journal, &site)?;
        let wait = Duration::from_secs(self.spec.artifacts.cron_wait_s);
        let settled = fence::settle(self.journal, &site, wait)?;
        let what = |r: &fence::Running| {
            let pid = r.process.as_ref().map(|p| format!(", pid {}", p.pid));
            format!(
                "job {} ({} side, slot {}{})",
                r.job,
                r.side.as_str(),
                r.slot,
                pid.unwrap_or_default()
            )
        };
        for r in &settled.dead {
            self.report.cron_overruns.push(format!(
                "{}: its process died before it ended; not waited for",
                what(r)
            ));
        }
        let mut unstoppable = Vec::new();
        for r in &settled.left {
            let line = match fence::stop(self.journal, &site, r, STOP_GRACE)? {
                Ok(how) => format!(
                    "{} still running {} s into the freeze: its process group was stopped \
                     ({how})",
                    what(r),
                    wait.as_secs()
                ),
                Err(why) => {
                    let line = format!(
                        "{} still running {} s into the freeze and not stoppable from here: {why}",
                        what(r),
                        wait.as_secs()
                    );
                    unstoppable.push(line.clone());
                    line
                }
            };
            self.report.cron_overruns.push(line);
        }
        if !self.report.cron_overruns.is_empty() {
            let json =
                serde_json::to_string(&self.report.cron_overruns).unwrap_or_else(|_| "[]".into());
            self.journal
                .put_checkpoint_raw("cron-overrun", &site, &json)?;
        }
        if !unstoppable.is_empty() {
            return Err(CutoverError::CronOverrun {
                site,
                runs: unstoppable.join("; "),
            });
        }
        Ok(())
    }

    /// A commit point: `side` owns the site's jobs from now on (still frozen), and its staged
    /// artifacts are enabled, the other side's disabled ([`crate::artifacts::activate`]; the
    /// journal's `artifacts-active` checkpoint names the side once done). Idempotent: every
    /// resume after a kill goes through it again.
    pub(crate) fn fence_owner(&mut self, side: Side) -> Result<(), CutoverError> {
        if self.has_jobs() {
            fence::set_owner(self.journal, &self.spec.site, side)?;
        }
        if !self.spec.artifacts.is_empty() {
            let phase = match side {
                Side::New => Phase::Switch,
                Side::Old => Phase::RollbackSwitch,
            };
            self.sys
                .data
                .activate_artifacts(self.spec, side)
                .map_err(CutoverError::system(phase))?;
            let site = self.spec.site.clone();
            self.journal.put_checkpoint_raw(
                ACTIVE_SCOPE,
                &site,
                &format!("{:?}", side.as_str()),
            )?;
        }
        Ok(())
    }

    /// [`Engine::fence_owner`] unless the journal shows it done for `side` (a resume).
    pub(crate) fn ensure_owner(&mut self, side: Side) -> Result<(), CutoverError> {
        let site = &self.spec.site;
        let active = self.journal.checkpoint_raw(ACTIVE_SCOPE, site)?;
        let moved = self.spec.artifacts.is_empty()
            || active.as_deref() == Some(format!("{:?}", side.as_str()).as_str());
        let owned = !self.has_jobs() || fence::token(self.journal, site)?.1.owner == side;
        if moved && owned {
            return Ok(());
        }
        self.fence_owner(side)
    }

    /// The owner's jobs run again.
    pub(crate) fn fence_unfreeze(&mut self) -> Result<(), CutoverError> {
        if self.has_jobs() {
            fence::unfreeze(self.journal, &self.spec.site)?;
        }
        Ok(())
    }

    /// Back on `side`, unfrozen (an abort, a rollback given up).
    pub(crate) fn fence_reset(&mut self, side: Side) -> Result<(), CutoverError> {
        self.fence_owner(side)?;
        self.fence_unfreeze()
    }
}

//! The named, timed phases of a site's cutover and rollback, and how each is journaled.
//!
//! Every phase is written to the journal before it runs (`started`) and after (`done` or
//! `failed` with the error); on success the site's state moves to the phase's target state in
//! the same breath. A `started` row without an end is the trace of a killed migrator.
//!
//! The critical section is `freeze` through `unfreeze`: while in it, an operator's signal is
//! recorded and obeyed only once the site is `live` or back on the old side.

use crate::journal::{JournalError, JournalStore, SiteState, StepOutcome};
use crate::systems::SystemError;
use std::time::Instant;

/// One phase. The names are stable: they are what the journal stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Prepare,
    Sync,
    /// Waiting before the freeze for a throttle reason (journaled only when it had to wait).
    Gate,
    Freeze,
    /// The databases still open on the old side paused, once every member of the move group
    /// is frozen (the site stays `frozen`).
    PauseDbs,
    FinalSync,
    Verify,
    Switch,
    Unfreeze,
    /// The databases verified after the switch against the new side's state pinned in the
    /// freeze (the ones followed by change capture); a difference rolls the site back.
    PostVerify,
    PostCheck,
    Abort,
    RollbackFreeze,
    RollbackCopy,
    RollbackSwitch,
    RollbackUnfreeze,
    RollbackVerify,
    /// `migrator finalize`: live → finalized; no rollback after it.
    Finalize,
    /// `migrator finalize --drop-old-copies`: the old side's databases and homes of a
    /// finalized site with a verified bundle dropped ([`crate::release_old`]).
    ReleaseOld,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Sync => "sync",
            Phase::Gate => "gate",
            Phase::Freeze => "freeze",
            Phase::PauseDbs => "pause-dbs",
            Phase::FinalSync => "final-sync",
            Phase::Verify => "verify",
            Phase::Switch => "switch",
            Phase::Unfreeze => "unfreeze",
            Phase::PostVerify => "post-verify",
            Phase::PostCheck => "post-check",
            Phase::Abort => "abort",
            Phase::RollbackFreeze => "rollback-freeze",
            Phase::RollbackCopy => "rollback-copy",
            Phase::RollbackSwitch => "rollback-switch",
            Phase::RollbackUnfreeze => "rollback-unfreeze",
            Phase::RollbackVerify => "rollback-verify",
            Phase::Finalize => "finalize",
            Phase::ReleaseOld => "release-old",
        }
    }

    /// The state a site is in once the phase succeeded; `None` keeps the current state.
    pub fn target(self) -> Option<SiteState> {
        match self {
            Phase::Prepare => Some(SiteState::Prepared),
            Phase::Sync => Some(SiteState::Synced),
            Phase::Freeze => Some(SiteState::Frozen),
            Phase::FinalSync => Some(SiteState::FinalSynced),
            Phase::Verify => Some(SiteState::Verified),
            Phase::Switch => Some(SiteState::Switched),
            Phase::Unfreeze => Some(SiteState::Live),
            Phase::Abort => Some(SiteState::Aborted),
            Phase::RollbackUnfreeze => Some(SiteState::RolledBack),
            Phase::Finalize => Some(SiteState::Finalized),
            Phase::PostCheck
            | Phase::ReleaseOld
            | Phase::PostVerify
            | Phase::Gate
            | Phase::PauseDbs
            | Phase::RollbackFreeze
            | Phase::RollbackCopy
            | Phase::RollbackVerify
            | Phase::RollbackSwitch => None,
        }
    }
}

/// Why a cutover or rollback stopped.
#[derive(Debug, thiserror::Error)]
pub enum CutoverError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("phase {phase}: {source}")]
    System {
        phase: &'static str,
        #[source]
        source: SystemError,
    },
    #[error("refusing to freeze: {0}")]
    Gate(String),
    #[error(
        "refusing to freeze: last sync pass moved {bytes} bytes, budget is {budget} bytes \
         after {passes} passes"
    )]
    DeltaTooLarge {
        bytes: u64,
        budget: u64,
        passes: u32,
    },
    #[error("verification found {} difference(s): {}", .0.len(), .0.join("; "))]
    VerifyFailed(Vec<String>),
    #[error(
        "verification after the switch found {} difference(s): {} (the site was rolled back \
         with its new writes)",
        .0.len(),
        .0.join("; ")
    )]
    VerifyAfterSwitch(Vec<String>),
    #[error("post-check: the site answered {after:?} after the switch, {before:?} before")]
    PostCheck { before: String, after: String },
    #[error("site is {} : cannot {action}", .state.as_str())]
    WrongState {
        state: SiteState,
        action: &'static str,
    },
    #[error(
        "site {0} is finalized: rollback is refused (after `migrator finalize` the old side's \
         copy is no longer kept in step with the site; move it back with a new migration)"
    )]
    Finalized(String),
    #[error(
        "site {site} is leased by {owner} (another migrator is working on it): refusing to act \
         on it; once that migrator is gone, `migrator lease-watch` or the next run recovers it"
    )]
    Leased { site: String, owner: String },
    #[error(
        "site {site}: finalize refused: {why}; a site is finalized once its bundle (its state \
         at the switch) is verified, or with --override-reason TEXT, which is journaled"
    )]
    BundleNotVerified { site: String, why: String },
    /// A site artifact that cannot move as it is (an expired certificate, a key not matching
    /// it): refused at prepare, before anything is installed on the new side.
    #[error("site {site}: artifacts.{field}: {message}; refused at prepare, nothing installed")]
    Artifact {
        site: String,
        field: String,
        message: String,
    },
    /// A job run still going when the freeze's wait ended, which cannot be stopped from the
    /// migrator's host: the switch would let it write on the side losing the site.
    #[error(
        "site {site}: refusing the switch: {runs}; raise artifacts.cron_wait_s, or stop the \
         run on its host, then run again"
    )]
    CronOverrun { site: String, runs: String },
    #[error("interrupted by the operator before the freeze; the site is still on the old side")]
    Interrupted,
    #[error("{cause}; the site was aborted back to the old side")]
    Aborted {
        #[source]
        cause: Box<CutoverError>,
    },
    #[error("{cause}; then the abort failed too ({abort}): the site needs an operator")]
    AbortFailed {
        cause: Box<CutoverError>,
        abort: Box<CutoverError>,
    },
}

impl CutoverError {
    /// Whether the site was found live but wrong after its switch (differences after the
    /// switch, a failed post-check): it goes back to the old side at once, with every member
    /// of its move group ([`crate::cutover::rollback::run_group`]).
    pub fn rolls_back(&self) -> bool {
        match self {
            CutoverError::VerifyAfterSwitch(_) | CutoverError::PostCheck { .. } => true,
            CutoverError::System { phase, .. } => *phase == Phase::PostCheck.name(),
            _ => false,
        }
    }

    pub fn system(phase: Phase) -> impl FnOnce(SystemError) -> CutoverError {
        move |source| CutoverError::System {
            phase: phase.name(),
            source,
        }
    }
}

/// Runs `f` as `phase` of `site`: journaled before and after, state moved on success.
/// Returns the result and the phase's duration in milliseconds.
pub fn run_phase<T>(
    journal: &mut dyn JournalStore,
    site: &str,
    phase: Phase,
    f: impl FnOnce() -> Result<(T, u64), CutoverError>,
) -> Result<(T, f64), CutoverError> {
    let id = journal.begin_step(site, phase.name())?;
    let t0 = Instant::now();
    match f() {
        Ok((value, bytes)) => {
            journal.finish_step(
                id,
                &StepOutcome {
                    bytes,
                    checksum: None,
                },
            )?;
            if let Some(st) = phase.target() {
                journal.set_site_state(site, st)?;
            }
            Ok((value, t0.elapsed().as_secs_f64() * 1e3))
        }
        Err(e) => {
            journal.fail_step(id, &e.to_string())?;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{SqliteJournal, StepStatus};

    #[test]
    fn phase_is_journaled_before_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = SqliteJournal::open(&dir.path().join("j")).unwrap();
        let (v, _ms) = run_phase(&mut j, "s", Phase::Freeze, || Ok((7, 3))).unwrap();
        assert_eq!(v, 7);
        assert_eq!(j.site_state("s").unwrap(), Some(SiteState::Frozen));
        let err = run_phase::<()>(&mut j, "s", Phase::FinalSync, || {
            Err(CutoverError::Gate("x".into()))
        })
        .unwrap_err();
        assert!(matches!(err, CutoverError::Gate(_)));
        let steps = j.steps("s").unwrap();
        assert_eq!(steps[0].phase, "freeze");
        assert_eq!(steps[0].status, StepStatus::Done);
        assert_eq!(steps[0].bytes, 3);
        assert_eq!(steps[1].status, StepStatus::Failed);
        // A failed phase leaves the state where it was.
        assert_eq!(j.site_state("s").unwrap(), Some(SiteState::Frozen));
    }
}

//! One site's state machine over the [`Engine`]: from the journal's state up to `synced`
//! ([`Engine::advance`]), the freeze of its move group ([`crate::cutover::group`]), and the
//! recovery of a site left mid-freeze ([`Engine::recover`], for the watchdog).

use crate::cutover::checkpoints::{self, Checkpoint};
use crate::cutover::engine::{Engine, SiteReport};
use crate::cutover::lease::LeaseKind;
use crate::cutover::phase::{CutoverError, Phase};
use crate::cutover::{group, lease, rollback, throttle};
use crate::journal::SiteState;
use crate::systems::Direction;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Attempts at the reference fingerprint while the site answers a server error, and the pause
/// between them.
const FINGERPRINT_TRIES: u32 = 4;
const FINGERPRINT_PAUSE: std::time::Duration = std::time::Duration::from_millis(750);

/// Whether a fingerprint (`status:digest`) is a server error (5xx).
pub(crate) fn server_error(fp: &str) -> bool {
    fp.split(':')
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .is_some_and(|s| (500..600).contains(&s))
}

impl Engine<'_> {
    /// Puts a site left mid-freeze by a dead migrator back on one side, going no further:
    /// an unfinished rollback is finished; before the commit point the site is aborted to the
    /// old side; from `verified` on, the switch is completed and the site unfrozen on the new
    /// side. The lease is released. Used by the lease watchdog.
    pub fn recover(mut self) -> Result<SiteReport, CutoverError> {
        lease::ensure_free(self.journal, &self.spec.site)?;
        let left = lease::get(self.journal, &self.spec.site)?;
        // Ours from now on: a second watchdog, or the owner handing over again, is refused.
        self.take_lease()?;
        let pre_freeze = matches!(
            self.state()?,
            SiteState::Planned
                | SiteState::Prepared
                | SiteState::Synced
                | SiteState::Aborted
                | SiteState::RolledBack
        );
        if left.is_some_and(|l| l.kind == LeaseKind::Sync)
            && pre_freeze
            && !rollback::in_progress(self.journal, &self.spec.site)?
        {
            // A dead migrator's sync: nothing was frozen, nothing to put back.
        } else if rollback::in_progress(self.journal, &self.spec.site)? {
            rollback::run(&mut self)?;
        } else {
            match self.state()? {
                SiteState::Frozen | SiteState::FinalSynced | SiteState::Failed => {
                    self.abort_now()?
                }
                SiteState::Verified => match self.resume_switch() {
                    Ok(()) => self.unfreeze_retrying()?,
                    // Back on the old side, unfrozen: recovered.
                    Err(CutoverError::Aborted { .. }) => {}
                    Err(e) => return Err(e),
                },
                SiteState::Switched => self.unfreeze_retrying()?,
                // A lease before `verified`: killed inside the freeze phase (maintenance or
                // pauses may be in place) before it was journaled. Put back from what the
                // systems report.
                SiteState::Planned
                | SiteState::Prepared
                | SiteState::Synced
                | SiteState::Aborted
                | SiteState::RolledBack => self.abort_now()?,
                SiteState::Live | SiteState::Finalized => {}
            }
        }
        self.release_lease()?;
        self.report.state = self.state()?;
        Ok(self.report)
    }

    /// Moves the site to `live` on the new side, resuming from the journal's state. A single
    /// site takes the same freeze path as a move group: it is a group of one
    /// ([`crate::cutover::group`]).
    pub fn migrate(self) -> Result<SiteReport, CutoverError> {
        let mut one = [self];
        group::run(&mut one)?;
        let [mut e] = one;
        if e.opts.interrupt.load(Ordering::SeqCst) && e.report.freeze_ms.is_some() {
            e.report.deferred_signal = true;
        }
        e.report.state = e.state()?;
        Ok(e.report)
    }

    /// Runs the state machine from the journal's state up to `synced`, where a site waits to
    /// be frozen with its move group ([`crate::cutover::group`], the only freeze path); a site
    /// found past the commit point after a crash is completed. Returns the state reached.
    pub(crate) fn advance(&mut self) -> Result<SiteState, CutoverError> {
        // Another live migrator working on the site: touch nothing.
        lease::ensure_free(self.journal, &self.spec.site)?;
        if rollback::in_progress(self.journal, &self.spec.site)? {
            // A rollback was killed: finish it first, the site must end on one side.
            rollback::run(self)?;
            return self.state();
        }
        let mut state = self.state()?;
        // A lease left before `verified`: killed inside the freeze phase itself, before it was
        // journaled. Put back from what the systems report.
        let stale_freeze = self.leased.is_none()
            && lease::get(self.journal, &self.spec.site)?
                .is_some_and(|l| l.kind == LeaseKind::Freeze)
            && matches!(
                state,
                SiteState::Planned
                    | SiteState::Prepared
                    | SiteState::Synced
                    | SiteState::Aborted
                    | SiteState::RolledBack
            );
        if stale_freeze {
            self.abort_now()?;
            state = SiteState::Aborted;
        }
        loop {
            state = match state {
                SiteState::Planned | SiteState::Aborted | SiteState::RolledBack => {
                    self.check_interrupt()?;
                    self.hold_lease(LeaseKind::Sync)?;
                    self.prepare()?;
                    SiteState::Prepared
                }
                SiteState::Prepared => {
                    self.check_interrupt()?;
                    self.hold_lease(LeaseKind::Sync)?;
                    self.sync()?;
                    SiteState::Synced
                }
                SiteState::Synced => {
                    // Held through the gate, then turned into the freeze lease.
                    self.hold_lease(LeaseKind::Sync)?;
                    return Ok(SiteState::Synced);
                }
                // Killed inside the critical section before the commit point.
                SiteState::Frozen | SiteState::FinalSynced | SiteState::Failed => {
                    self.abort_now()?;
                    SiteState::Aborted
                }
                SiteState::Verified => {
                    self.hold_lease(LeaseKind::Freeze)?;
                    self.resume_switch()?;
                    SiteState::Switched
                }
                SiteState::Switched => {
                    self.hold_lease(LeaseKind::Freeze)?;
                    self.unfreeze()?;
                    self.post_verify()?;
                    self.post_check()?;
                    SiteState::Live
                }
                SiteState::Live | SiteState::Finalized => return Ok(state),
            };
        }
    }

    /// Holds the site's lease before a mutating phase: a sync lease for prepare and sync (kept
    /// while the site is frozen: a freeze lease is never downgraded), a freeze lease past it.
    fn hold_lease(&mut self, kind: LeaseKind) -> Result<(), CutoverError> {
        match (self.leased, kind) {
            (Some(LeaseKind::Freeze), _) => Ok(()),
            (Some(LeaseKind::Sync), LeaseKind::Sync) => Ok(()),
            _ => self.take_lease_of(kind),
        }
    }

    pub(crate) fn prepare(&mut self) -> Result<(), CutoverError> {
        let spec = self.spec;
        self.phase(Phase::Prepare, |e| {
            let err = CutoverError::system(Phase::Prepare);
            // Certificates first: one that cannot serve the site refuses the move before
            // anything is written on the new side.
            let now = rustls::pki_types::UnixTime::now();
            crate::artifacts::check_tls(&spec.artifacts, now).map_err(|(field, message)| {
                CutoverError::Artifact {
                    site: spec.site.clone(),
                    field,
                    message,
                }
            })?;
            e.sys.data.prepare(spec).map_err(err)?;
            e.new_backend_ready(spec)?;
            if let (Some(dns), Some(d)) = (&e.sys.dns, &spec.dns) {
                let t = d.target();
                let dns_err = |x| crate::systems::SystemError::from_dns(crate::systems::Dc::Old, x);
                let cur = dns
                    .current(t.name)
                    .map_err(dns_err)
                    .map_err(CutoverError::system(Phase::Prepare))?;
                dns.set_ttl(t.name, &cur, t.low_ttl)
                    .map_err(dns_err)
                    .map_err(CutoverError::system(Phase::Prepare))?;
            }
            // The fingerprint the post-check compares against, taken while the site is healthy:
            // a server error (the site, or something it depends on, failing for a moment) is
            // asked again before it becomes the reference.
            let mut fp = None;
            for attempt in 0..FINGERPRINT_TRIES {
                if attempt > 0 {
                    std::thread::sleep(FINGERPRINT_PAUSE);
                }
                fp = e
                    .sys
                    .data
                    .fingerprint(spec)
                    .map_err(CutoverError::system(Phase::Prepare))?;
                if !fp.as_deref().is_some_and(server_error) {
                    break;
                }
            }
            Ok((fp, 0))
        })
        .and_then(|fp| {
            if let Some(fp) = fp {
                checkpoints::put(
                    self.journal,
                    &spec.site,
                    Checkpoint::Fingerprint,
                    &serde_json::Value::String(fp).to_string(),
                )?;
            }
            Ok(())
        })
    }

    pub(crate) fn sync(&mut self) -> Result<(), CutoverError> {
        let spec = self.spec;
        let dbs = self.dbs_on_old()?;
        let budget = spec.budget.clone();
        let (last, ms) = self.phase(Phase::Sync, |e| {
            let mut total = 0;
            let mut last = (u64::MAX, 0);
            for pass in 0..budget.max_sync_passes {
                let t0 = Instant::now();
                let moved = e.copy_pass(spec, &dbs, Direction::Forward, pass > 0, Phase::Sync)?;
                last = (moved, t0.elapsed().as_millis() as u64);
                total += moved;
                if pass > 0 && moved <= budget.max_delta_bytes && last.1 <= budget.max_lag_ms {
                    break;
                }
            }
            Ok((last, total))
        })?;
        throttle::record_pass(self, last, ms)
    }

    /// The throttle gate before the freeze ([`throttle::obey`]): waits, with a reason, while
    /// the wave is paused, the tunnel unhealthy, the copy lagging or failures too frequent.
    pub(crate) fn gate(&mut self) -> Result<(), CutoverError> {
        throttle::obey(self)
    }

    /// The switch; never left frozen: a failure before the commit point aborts to the old side.
    fn switch_or_abort(&mut self) -> Result<(), CutoverError> {
        if let Err(cause) = self.switch_retrying() {
            if !self.committed() {
                return Err(self.abort_after(cause));
            }
            return Err(cause);
        }
        Ok(())
    }

    /// Completes the switch of a site found `verified` after a crash: as in an uninterrupted
    /// freeze, the tunnel is checked first while no database serves on the new side yet (an
    /// unhealthy one aborts to the old side).
    fn resume_switch(&mut self) -> Result<(), CutoverError> {
        if !self.committed() {
            if let Err(cause) = throttle::tunnel_ok(self, false) {
                return Err(self.abort_after(cause));
            }
        }
        self.switch_or_abort()
    }
}

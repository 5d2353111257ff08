//! One site's cutover: `planned → prepared → synced → frozen → final_synced → verified →
//! switched → live` (ARCHITECTURE.md §4), resumable from whatever the journal says.
//!
//! Phases and their side effects, in order:
//! - **prepare**: destination homes, databases, users (same hash), compat paths, new-side web
//!   config; hosted DNS TTL lowered.
//! - **sync**: file passes and database copies (snapshot, then changed tables) until one pass
//!   moves at most the budget's delta.
//! - gate: the tunnel must be healthy (waited for, bounded) and the delta within budget, or the
//!   site is not frozen and stays `synced` on the old side.
//! - **freeze**: HAProxy server of the site in maint on both VIPs (503 + Retry-After), proxy
//!   pauses the site's databases (returns once drained). The write-unavailability clock starts
//!   (stored in the journal so a resumed run measures it too).
//! - **final-sync**: last file pass and changed tables; **verify**: manifests and checksums.
//! - **switch**: old VIP's server pointed at the new web server (read back), hosted DNS replaced
//!   and confirmed on every authoritative server, then the proxy resumes each database on the
//!   new side: that is the commit point.
//! - **unfreeze**: HAProxy servers ready (old VIP through the tunnel, new VIP directly): `live`.
//! - **post-check**: the site's HTTP answer must equal the fingerprint taken before the freeze;
//!   if not, the site is rolled back.
//!
//! Failure before the commit point → **abort**: every system is put back from what it reports
//! (not from what we believe), the site serves from the old side, state `aborted`.
//! Crash recovery follows the same rule: a site found `frozen`/`final_synced` is aborted and
//! retried; one found `verified` completes its switch once the tunnel checks healthy (aborted
//! otherwise), each action idempotent. A lease left before `verified` (killed inside the freeze
//! phase) counts as frozen. Errors at the switch abort before its commit point and are retried
//! (bounded) after it, so a live migrator never leaves a site frozen.

use crate::journal::{JournalStore, SiteState};
use crate::lease;
use crate::phase::{run_phase, CutoverError, Phase};
use crate::rollback;
use crate::site_spec::SiteSpec;
use crate::systems::{Direction, Systems};
use crate::throttle::{self, WaveSignals};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Knobs of a run.
#[derive(Clone)]
pub struct EngineOptions {
    /// Set by a signal handler. Obeyed only outside the critical section.
    pub interrupt: Arc<AtomicBool>,
    /// How long to wait for an unhealthy tunnel before giving up on freezing the site.
    pub gate_wait: Duration,
    pub gate_poll: Duration,
    /// The wave this site belongs to (pause, error rate, progress), if any.
    pub signals: Option<Arc<dyn WaveSignals>>,
    /// How long a freeze lease lasts without renewal (renewed at every phase of the freeze).
    pub lease_ttl: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            interrupt: Arc::new(AtomicBool::new(false)),
            gate_wait: Duration::from_secs(60),
            gate_poll: Duration::from_millis(500),
            signals: None,
            lease_ttl: Duration::from_secs(60),
        }
    }
}

/// What one site's run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SiteReport {
    pub site: String,
    pub state: String,
    /// Write-unavailability: freeze start to unfreeze end, ms.
    pub freeze_ms: Option<f64>,
    /// Phase name and duration (ms), in order.
    pub phases: Vec<(String, f64)>,
    /// An interrupt arrived inside the critical section and was deferred.
    pub deferred_signal: bool,
}

pub(crate) const SCOPE: &str = "cutover";

/// How long a freeze waits for the site's in-flight requests on the old VIP.
pub(crate) const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// Attempts at a switch past the commit point, or at an unfreeze, before giving up (the lease
/// then stays for the watchdog, which completes the site on the new side).
pub(crate) const SWITCH_TRIES: u32 = 3;
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(200);

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a phase's body may touch: the outside systems (never the journal, which [`run_phase`]
/// writes around it).
pub(crate) struct Ctx<'a> {
    pub sys: &'a Systems,
}

/// The engine for one site.
pub struct Engine<'a> {
    pub spec: &'a SiteSpec,
    pub sys: &'a Systems,
    pub journal: &'a mut dyn JournalStore,
    pub opts: &'a EngineOptions,
    pub report: SiteReport,
    /// This engine holds the site's freeze lease (renewed at every phase until released).
    pub(crate) leased: bool,
}

impl<'a> Engine<'a> {
    pub fn new(
        spec: &'a SiteSpec,
        sys: &'a Systems,
        journal: &'a mut dyn JournalStore,
        opts: &'a EngineOptions,
    ) -> Engine<'a> {
        Engine {
            report: SiteReport {
                site: spec.site.clone(),
                ..Default::default()
            },
            spec,
            sys,
            journal,
            opts,
            leased: false,
        }
    }

    pub(crate) fn state(&self) -> Result<SiteState, CutoverError> {
        Ok(self
            .journal
            .site_state(&self.spec.site)?
            .unwrap_or(SiteState::Planned))
    }

    /// Runs `f` as a journaled phase (recorded before it runs and after).
    pub(crate) fn phase<T>(
        &mut self,
        phase: Phase,
        f: impl FnOnce(&Ctx<'a>) -> Result<(T, u64), CutoverError>,
    ) -> Result<T, CutoverError> {
        let ctx = Ctx { sys: self.sys };
        let site = self.spec.site.clone();
        if self.leased {
            lease::take(self.journal, &site, self.opts.lease_ttl)?;
        }
        let mut moved = 0;
        let (v, ms) = run_phase(self.journal, &site, phase, || {
            f(&ctx).inspect(|(_, b)| moved = *b)
        })?;
        self.report.phases.push((phase.name().to_string(), ms));
        if let Some(s) = &self.opts.signals {
            if let Some(st) = phase.target() {
                s.state(&site, st);
            }
            if moved > 0 {
                s.bytes(&site, moved);
            }
        }
        drill_pause(phase);
        Ok(v)
    }

    /// Takes the freeze lease (before the first freezing action).
    pub(crate) fn take_lease(&mut self) -> Result<(), CutoverError> {
        lease::take(self.journal, &self.spec.site, self.opts.lease_ttl)?;
        self.leased = true;
        Ok(())
    }

    /// Releases the freeze lease (the site serves from one side again).
    pub(crate) fn release_lease(&mut self) -> Result<(), CutoverError> {
        lease::release(self.journal, &self.spec.site)?;
        self.leased = false;
        Ok(())
    }

    /// Puts a site left mid-freeze by a dead migrator back on one side, going no further:
    /// an unfinished rollback is finished; before the commit point the site is aborted to the
    /// old side; from `verified` on, the switch is completed and the site unfrozen on the new
    /// side. The lease is released. Used by the lease watchdog.
    pub fn recover(mut self) -> Result<SiteReport, CutoverError> {
        lease::ensure_free(self.journal, &self.spec.site)?;
        if rollback::in_progress(self.journal, &self.spec.site)? {
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
        self.report.state = self.state()?.as_str().to_string();
        Ok(self.report)
    }

    /// Moves the site to `live` on the new side, resuming from the journal's state.
    pub fn migrate(mut self) -> Result<SiteReport, CutoverError> {
        self.advance(false)?;
        if self.opts.interrupt.load(Ordering::SeqCst) && self.report.freeze_ms.is_some() {
            self.report.deferred_signal = true;
        }
        self.report.state = self.state()?.as_str().to_string();
        Ok(self.report)
    }

    /// Runs the state machine from the journal's state; with `stop_at_synced`, a site that
    /// still has to be frozen stops at `synced` (a move group freezes its members together).
    /// Returns the state reached.
    pub(crate) fn advance(&mut self, stop_at_synced: bool) -> Result<SiteState, CutoverError> {
        // Another live migrator working on the site: touch nothing.
        lease::ensure_free(self.journal, &self.spec.site)?;
        if rollback::in_progress(self.journal, &self.spec.site)? {
            // A rollback was killed: finish it first, the site must end on one side.
            rollback::run(self)?;
            return self.state();
        }
        let mut state = self.state()?;
        let stale_freeze = !self.leased
            && lease::get(self.journal, &self.spec.site)?.is_some()
            && matches!(
                state,
                SiteState::Planned
                    | SiteState::Prepared
                    | SiteState::Synced
                    | SiteState::Aborted
                    | SiteState::RolledBack
            );
        if stale_freeze
            || matches!(
                state,
                SiteState::Frozen | SiteState::FinalSynced | SiteState::Failed
            )
        {
            // Killed inside the critical section before the commit point (a lease left before
            // `verified`: killed inside the freeze phase itself, before it was journaled).
            self.abort_now()?;
            state = SiteState::Aborted;
        }
        loop {
            state = match state {
                SiteState::Planned | SiteState::Aborted | SiteState::RolledBack => {
                    self.check_interrupt()?;
                    self.prepare()?;
                    SiteState::Prepared
                }
                SiteState::Prepared => {
                    self.check_interrupt()?;
                    self.sync()?;
                    SiteState::Synced
                }
                SiteState::Synced if stop_at_synced => return Ok(SiteState::Synced),
                SiteState::Synced => {
                    self.check_interrupt()?;
                    self.gate()?;
                    self.critical_section()?;
                    SiteState::Live
                }
                SiteState::Frozen | SiteState::FinalSynced | SiteState::Failed => {
                    unreachable!("aborted above")
                }
                SiteState::Verified => {
                    self.resume_switch()?;
                    SiteState::Switched
                }
                SiteState::Switched => {
                    self.unfreeze()?;
                    self.post_check()?;
                    SiteState::Live
                }
                SiteState::Live | SiteState::Finalized => return Ok(state),
            };
        }
    }

    pub(crate) fn check_interrupt(&self) -> Result<(), CutoverError> {
        if self.opts.interrupt.load(Ordering::SeqCst) {
            return Err(CutoverError::Interrupted);
        }
        Ok(())
    }

    fn prepare(&mut self) -> Result<(), CutoverError> {
        let spec = self.spec;
        self.phase(Phase::Prepare, |e| {
            let err = CutoverError::system(Phase::Prepare);
            e.sys.data.prepare(spec).map_err(err)?;
            e.new_backend_ready(spec)?;
            if let (Some(dns), Some(d)) = (&e.sys.dns, &spec.dns) {
                let cur = dns
                    .current(&d.name)
                    .map_err(CutoverError::system(Phase::Prepare))?;
                dns.set_ttl(&d.name, &cur, d.low_ttl)
                    .map_err(CutoverError::system(Phase::Prepare))?;
            }
            // The fingerprint the post-check compares against, taken while the site is healthy.
            let fp = e
                .sys
                .data
                .fingerprint(spec)
                .map_err(CutoverError::system(Phase::Prepare))?;
            Ok((fp, 0))
        })
        .and_then(|fp| {
            if let Some(fp) = fp {
                self.journal.put_checkpoint_raw(
                    SCOPE,
                    &format!("{}.fingerprint", spec.site),
                    &serde_json::Value::String(fp).to_string(),
                )?;
            }
            Ok(())
        })
    }

    /// Databases still served from the old side (the ones this cutover moves).
    pub(crate) fn dbs_on_old(&self) -> Result<Vec<String>, CutoverError> {
        let mut out = Vec::new();
        for db in &self.spec.databases {
            let r = self
                .sys
                .proxy
                .route(db)
                .map_err(CutoverError::system(Phase::Sync))?;
            if r.side == self.spec.proxy.old_side {
                out.push(db.clone());
            }
        }
        Ok(out)
    }

    fn sync(&mut self) -> Result<(), CutoverError> {
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

    /// Freeze through unfreeze; any failure before the commit point aborts to the old side.
    fn critical_section(&mut self) -> Result<(), CutoverError> {
        let res = self
            .freeze()
            .and_then(|_| self.final_sync())
            .and_then(|_| self.verify())
            .and_then(|_| throttle::tunnel_ok(self, true));
        if let Err(cause) = res {
            return Err(self.abort_after(cause));
        }
        self.switch_or_abort()?;
        self.unfreeze_retrying()?;
        self.post_check()
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

    /// Aborts to the old side after `cause`; the error says whether the abort worked.
    pub(crate) fn abort_after(&mut self, cause: CutoverError) -> CutoverError {
        if matches!(cause, CutoverError::Leased { .. }) {
            // The site belongs to another migrator now: it is not ours to put back.
            return cause;
        }
        match self.abort_now() {
            Ok(()) => CutoverError::Aborted {
                cause: Box::new(cause),
            },
            Err(abort) => CutoverError::AbortFailed {
                cause: Box::new(cause),
                abort: Box::new(abort),
            },
        }
    }

    /// Whether the commit point is passed: a database of the site is served on the new side.
    /// When the proxy cannot tell, it is assumed passed (an abort is then never attempted).
    pub(crate) fn committed(&self) -> bool {
        self.spec.databases.iter().any(|db| {
            self.sys
                .proxy
                .route(db)
                .map(|r| r.side == self.spec.proxy.new_side && !r.paused())
                .unwrap_or(true)
        })
    }

    /// The switch; once past the commit point a failure is retried ([`SWITCH_TRIES`] in all),
    /// since the site can then only go forward. Before it, the first error is returned.
    pub(crate) fn switch_retrying(&mut self) -> Result<(), CutoverError> {
        let mut tries = 1;
        loop {
            match self.switch() {
                Ok(()) => return Ok(()),
                Err(e) if tries >= SWITCH_TRIES || !self.committed() => return Err(e),
                Err(_) => tries += 1,
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }

    /// The unfreeze, retried ([`SWITCH_TRIES`] in all): the site serves again as soon as it can.
    pub(crate) fn unfreeze_retrying(&mut self) -> Result<(), CutoverError> {
        let mut tries = 1;
        loop {
            match self.unfreeze() {
                Ok(()) => return Ok(()),
                Err(e) if tries >= SWITCH_TRIES => return Err(e),
                Err(_) => tries += 1,
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }
}

/// Crash drills: `MIGRATOR_DRILL_PAUSE_AFTER=<phase>=<ms>` sleeps that long after the named
/// phase is journaled, so a scenario or test can SIGKILL the migrator at a known point (inside
/// the freeze, for example). Unset in normal runs; read per phase, so it costs nothing else.
fn drill_pause(phase: Phase) {
    if let Ok(v) = std::env::var("MIGRATOR_DRILL_PAUSE_AFTER") {
        if let Some((p, ms)) = v.split_once('=') {
            if p == phase.name() {
                if let Ok(ms) = ms.parse::<u64>() {
                    std::thread::sleep(Duration::from_millis(ms));
                }
            }
        }
    }
}

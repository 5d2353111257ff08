//! The engine of one site's cutover: its options, its report, and the helpers every phase
//! uses (journaled phases, the freeze lease, the commit point, bounded retries). The state
//! machine is in [`crate::cutover::machine`], the freeze window in [`crate::cutover::freeze`].

use crate::cutover::lease::{self, LeaseKind};
use crate::cutover::lease_keeper::LeaseKeeper;
use crate::cutover::phase::{run_phase, CutoverError, Phase};
use crate::cutover::signals::WaveSignals;
use crate::journal::{JournalStore, SiteState};
use crate::site_spec::SiteSpec;
use crate::systems::{Dc, Systems};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    /// How long a sync lease (prepare, sync passes) lasts without renewal: long, a sync pass
    /// can take hours; renewed at every phase. Only another host's watchdog waits for it (on
    /// the owner's host a dead owner frees the site at once).
    pub sync_lease_ttl: Duration,
    /// How long an unfreeze past the commit point is retried (with backoff) before the site
    /// is handed over to `lease-watch` and the next `wave run` ([`lease::hand_over`]).
    pub unfreeze_budget: Duration,
    /// The journal (as `--journal` names it) a background thread renews the sync lease
    /// through while one phase runs ([`LeaseKeeper`]); `None`: renewed per phase only.
    pub renew_from: Option<std::path::PathBuf>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            interrupt: Arc::new(AtomicBool::new(false)),
            gate_wait: Duration::from_secs(60),
            gate_poll: Duration::from_millis(500),
            signals: None,
            lease_ttl: Duration::from_secs(60),
            sync_lease_ttl: Duration::from_secs(6 * 3600),
            unfreeze_budget: Duration::from_secs(20),
            renew_from: None,
        }
    }
}

/// What one site's run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SiteReport {
    pub site: String,
    /// The state the run ended in (JSON: its journal name, e.g. `live`).
    pub state: SiteState,
    /// Write-unavailability: freeze start to unfreeze end, ms.
    pub freeze_ms: Option<f64>,
    /// Phase name and duration (ms), in order.
    pub phases: Vec<(String, f64)>,
    /// An interrupt arrived inside the critical section and was deferred.
    pub deferred_signal: bool,
    /// Cron runs still in progress when the freeze's wait for them ended.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cron_overruns: Vec<String>,
}

/// How long a freeze waits for the site's in-flight requests on the old VIP.
pub(crate) const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// Attempts at a switch past the commit point, or at an unfreeze, before giving up (the lease
/// then stays for the watchdog, which completes the site on the new side).
pub(crate) const SWITCH_TRIES: u32 = 3;
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(200);

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
    /// The kind of the site's lease this engine holds (renewed at every phase until released).
    pub(crate) leased: Option<LeaseKind>,
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
            leased: None,
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
        if let Some(kind) = self.leased {
            let ttl = self.ttl(kind);
            lease::take_kind(self.journal, &site, kind, ttl)?;
        }
        let guarded = matches!(phase, Phase::Prepare | Phase::Sync);
        if guarded {
            self.refuse_if_switched()?;
        }
        let keeper = self.keep_sync_lease(phase)?;
        let spec = self.spec;
        let mut moved = 0;
        let (v, ms) = run_phase(self.journal, &site, phase, || {
            if guarded {
                refuse_if_old_vip_at_new(&ctx, spec, phase)?;
            }
            f(&ctx).inspect(|(_, b)| moved = *b)
        })?;
        if let Some(k) = keeper {
            k.stop()?;
        }
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

    /// Under a sync lease, a keeper renewing it while the phase runs (one pass can outlast
    /// the TTL), through a journal handle of its own ([`EngineOptions::renew_from`]).
    fn keep_sync_lease(&self, phase: Phase) -> Result<Option<LeaseKeeper>, CutoverError> {
        let (Some(LeaseKind::Sync), Some(path)) = (self.leased, &self.opts.renew_from) else {
            return Ok(None);
        };
        let ttl = self.ttl(LeaseKind::Sync);
        let journal = crate::journal::open_journal_at(path)?;
        LeaseKeeper::start(journal, &self.spec.site, LeaseKind::Sync, ttl)
            .map(Some)
            .map_err(|e| {
                CutoverError::system(phase)(crate::systems::SystemError::new(
                    "lease renewal",
                    Dc::Old,
                    e.to_string(),
                ))
            })
    }

    fn ttl(&self, kind: LeaseKind) -> Duration {
        match kind {
            LeaseKind::Sync => self.opts.sync_lease_ttl,
            LeaseKind::Freeze => self.opts.lease_ttl,
        }
    }

    /// Takes the freeze lease (before the first freezing action).
    pub(crate) fn take_lease(&mut self) -> Result<(), CutoverError> {
        self.take_lease_of(LeaseKind::Freeze)
    }

    /// Takes the site's lease of `kind` (or turns ours into that kind).
    pub(crate) fn take_lease_of(&mut self, kind: LeaseKind) -> Result<(), CutoverError> {
        let ttl = self.ttl(kind);
        lease::take_kind(self.journal, &self.spec.site, kind, ttl)?;
        self.leased = Some(kind);
        Ok(())
    }

    /// Releases the lease (the site serves from one side again).
    pub(crate) fn release_lease(&mut self) -> Result<(), CutoverError> {
        lease::release(self.journal, &self.spec.site)?;
        self.leased = None;
        Ok(())
    }

    /// Releases a sync lease this engine holds (the run ends before or without a freeze); a
    /// freeze lease stays (the site is frozen: the watchdog's, once we are gone).
    pub(crate) fn release_sync_lease(&mut self) -> Result<(), CutoverError> {
        if self.leased == Some(LeaseKind::Sync) {
            self.release_lease()?;
        }
        Ok(())
    }

    /// Refuses a prepare or sync (which write to the new side) once the journal says the site
    /// switched: a migrator that read an older state never copies over the live new side. The
    /// systems are asked too, inside the phase ([`refuse_if_old_vip_at_new`]).
    fn refuse_if_switched(&self) -> Result<(), CutoverError> {
        let state = self.state()?;
        if new_side_in_use(state) {
            return Err(switched(state));
        }
        Ok(())
    }

    pub(crate) fn check_interrupt(&self) -> Result<(), CutoverError> {
        if self.opts.interrupt.load(Ordering::SeqCst) {
            return Err(CutoverError::Interrupted);
        }
        Ok(())
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
    /// since the site can then only go forward. Before it, the first error is returned. Past
    /// it, a switch that still fails hands the site over to the watchdog.
    pub(crate) fn switch_retrying(&mut self) -> Result<(), CutoverError> {
        let mut tries = 1;
        loop {
            match self.switch() {
                Ok(()) => return Ok(()),
                Err(e) if !self.committed() => return Err(e),
                Err(e) if tries >= SWITCH_TRIES => return Err(self.hand_over(e)),
                Err(_) => tries += 1,
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }

    /// The unfreeze, retried with backoff (from [`RETRY_PAUSE`], doubling, at least
    /// [`SWITCH_TRIES`] attempts, within [`EngineOptions::unfreeze_budget`]): the site serves
    /// again as soon as it can. Still failing, the site is handed over to `lease-watch` and the
    /// next `wave run`, which finish the unfreeze on the new side.
    pub(crate) fn unfreeze_retrying(&mut self) -> Result<(), CutoverError> {
        let deadline = std::time::Instant::now() + self.opts.unfreeze_budget;
        let mut pause = RETRY_PAUSE;
        let mut tries = 1;
        loop {
            match self.unfreeze() {
                Ok(()) => return Ok(()),
                Err(e @ CutoverError::Leased { .. }) => return Err(e),
                Err(e) => {
                    let now = std::time::Instant::now();
                    if tries >= SWITCH_TRIES && now + pause > deadline {
                        return Err(self.hand_over(e));
                    }
                }
            }
            tries += 1;
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Gives a site stuck past the commit point to the watchdog (the lease counts as expired
    /// from now on); returns `cause`, or both errors when the hand-over could not be written.
    pub(crate) fn hand_over(&mut self, cause: CutoverError) -> CutoverError {
        let why = format!("unfreeze on the new side: {cause}");
        match lease::hand_over(self.journal, &self.spec.site, &why) {
            Ok(()) => {
                self.leased = None;
                cause
            }
            Err(e) => CutoverError::AbortFailed {
                cause: Box::new(cause),
                abort: Box::new(e),
            },
        }
    }
}

/// Whether a site in `state` has switched (or is switching: `verified` is past the last copy)
/// so that its new side is, or is about to be, the live one: nothing but a rollback may then
/// write into its new home or new databases (a sync, a copy, a follow would overwrite the live
/// site's writes).
pub fn new_side_in_use(state: SiteState) -> bool {
    match state {
        SiteState::Verified | SiteState::Switched | SiteState::Live | SiteState::Finalized => true,
        SiteState::Planned
        | SiteState::Prepared
        | SiteState::Synced
        | SiteState::Frozen
        | SiteState::FinalSynced
        | SiteState::Aborted
        | SiteState::Failed
        | SiteState::RolledBack => false,
    }
}

fn switched(state: SiteState) -> CutoverError {
    CutoverError::WrongState {
        state,
        action: "prepare or sync (the site already switched: the new side is live and only a \
                 rollback may write to it)",
    }
}

/// Refuses a prepare or sync when the old VIP's server already points at the new web: the site
/// switched, whatever this migrator's journal says (another journal, a lost update).
fn refuse_if_old_vip_at_new(
    ctx: &Ctx<'_>,
    spec: &SiteSpec,
    phase: Phase,
) -> Result<(), CutoverError> {
    let cur = ctx
        .sys
        .lb_old
        .server_state(&spec.old_lb.backend, &spec.old_lb.server)
        .map_err(|x| crate::systems::SystemError::from_driver("haproxy", Dc::Old, x))
        .map_err(CutoverError::system(phase))?;
    if cur.addr == spec.new_web && spec.new_web != spec.old_web {
        return Err(switched(SiteState::Switched));
    }
    Ok(())
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

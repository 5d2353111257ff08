//! A capture yields to freezes: while any site is frozen (a live freeze lease, issue 19's
//! "the freeze must be unchanged"), a capture stops reading the old side and resumes once no
//! freeze lease is held.
//!
//! Why: a capture reads the old SQL server (its `mariadb-dump`) and compresses on this host,
//! and a freeze's final sync and verification read that same server, on the same cores. The
//! freeze is the window where customers see 503s; the capture can wait a few seconds.
//!
//! Which freezes: the ones this process is in ([`crate::cutover::lease::frozen_here`], seen at
//! once, without a journal read) and, for a fleet of migrators sharing one journal, every
//! live freeze lease in the journal (read at most every [`POLL`]). Any site's freeze counts,
//! not only those on the capture's old server: a lease does not say which server a site
//! uses, and waiting a few more seconds is cheap. An expired lease, or one whose owner is gone
//! or handed it over, is not a freeze in progress ([`crate::cutover::lease::Lease::expired`]).
//!
//! Where the capture stops: between two chunks of a part (the work loop stops reading the
//! child's output; `mariadb-dump`, which streams rows, then blocks on its full pipe, and the
//! server on its socket: nothing is read from the old server meanwhile) and before each
//! database. A dump paused mid-part keeps its `--single-transaction` read view open across the
//! pause: on the old server that only delays purge for the pause's length (seconds), which is
//! cheaper than restarting the part. The rate limit does not catch up after a pause.
//!
//! The pause state is public ([`paused_now`], [`totals`]) for the benchmark and the dashboard.

use crate::cutover::lease::{self, LeaseKind};
use crate::journal::{now_ms, JournalStore};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the journal's leases are read (the other migrators' freezes).
pub const POLL: Duration = Duration::from_millis(50);
/// How long a paused capture sleeps between two checks.
const NAP: Duration = Duration::from_millis(10);

static PAUSED: AtomicBool = AtomicBool::new(false);
static PAUSES: AtomicU64 = AtomicU64::new(0);
static PAUSED_US: AtomicU64 = AtomicU64::new(0);

/// Whether a capture of this process is paused for a freeze right now.
pub fn paused_now() -> bool {
    PAUSED.load(Ordering::SeqCst)
}

/// Pauses of the captures of this process so far: (how many, total seconds).
pub fn totals() -> (u64, f64) {
    (
        PAUSES.load(Ordering::SeqCst),
        PAUSED_US.load(Ordering::SeqCst) as f64 / 1e6,
    )
}

/// The freezes a capture yields to: this process's, and the journal's freeze leases.
pub struct Gate<'a> {
    journal: Option<&'a dyn JournalStore>,
    last_poll: Cell<Option<Instant>>,
    frozen_in_journal: Cell<bool>,
    pauses: Cell<u64>,
    paused: Cell<Duration>,
}

impl<'a> Gate<'a> {
    /// `journal`: the one whose freeze leases count (`None`: this process's freezes only).
    pub fn new(journal: Option<&'a dyn JournalStore>) -> Gate<'a> {
        Gate {
            journal,
            last_poll: Cell::new(None),
            frozen_in_journal: Cell::new(false),
            pauses: Cell::new(0),
            paused: Cell::new(Duration::ZERO),
        }
    }

    /// Whether a site is frozen now (the journal read at most every [`POLL`]; a journal that
    /// cannot be read counts as no freeze: the capture is not failed for it).
    fn frozen(&self) -> bool {
        if lease::frozen_here() {
            return true;
        }
        let Some(j) = self.journal else {
            return false;
        };
        if self.last_poll.get().is_none_or(|t| t.elapsed() >= POLL) {
            self.last_poll.set(Some(Instant::now()));
            let now = now_ms();
            let any = lease::all(j).is_ok_and(|all| {
                all.iter()
                    .any(|(_, l)| l.kind == LeaseKind::Freeze && !l.expired(now))
            });
            self.frozen_in_journal.set(any);
        }
        self.frozen_in_journal.get()
    }

    /// Returns at once when no site is frozen; else waits until none is, and returns how long
    /// it waited.
    pub fn wait(&self) -> Duration {
        if !self.frozen() {
            return Duration::ZERO;
        }
        let t = Instant::now();
        PAUSED.store(true, Ordering::SeqCst);
        PAUSES.fetch_add(1, Ordering::SeqCst);
        self.pauses.set(self.pauses.get() + 1);
        while self.frozen() {
            std::thread::sleep(NAP);
        }
        PAUSED.store(false, Ordering::SeqCst);
        let waited = t.elapsed();
        PAUSED_US.fetch_add(waited.as_micros() as u64, Ordering::SeqCst);
        self.paused.set(self.paused.get() + waited);
        waited
    }

    /// This gate's pauses: (how many, total).
    pub fn stats(&self) -> (u64, Duration) {
        (self.pauses.get(), self.paused.get())
    }
}

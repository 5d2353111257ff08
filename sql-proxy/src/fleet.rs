//! Several `sql-proxy` instances answering the same old endpoint (a *fleet*) share one route
//! table in the shared store (`route_store/mariadb.rs`). This file is each instance's side of
//! it:
//!
//! - **Lease.** The instance registers itself (id, endpoints, PID) with a lease that expires
//!   `lease` after each renewal by the *store's* clock, and renews it every `poll`.
//! - **Follow.** Each round also reads the routes changed since the last epoch it applied (one
//!   consistent read) and applies them, so a pause or switch committed through any instance's
//!   admin API reaches every instance within a round.
//! - **Acknowledge.** An instance acknowledges epoch E (`acked_epoch` in the store) once its
//!   live table equals the store's at E *and* no session of a paused database still runs a
//!   statement or holds a transaction (those past the switch deadline are aborted, as in
//!   `switch.rs`). A switch completes only when every live instance acknowledged its epoch
//!   ([`wait_acks`]).
//! - **Fence.** If the lease was not confirmed (renewed and the table read) for half the lease,
//!   the instance fences itself: every route is published as paused (queries held, then a clean
//!   error at the hold deadline), open transactions are rolled back, no route change or new
//!   database is committed. The lease as the store sees it runs at least until
//!   `renewal sent + lease`, so the instance has stopped before any other instance may stop
//!   waiting for it. A switch therefore never waits longer than one lease for an instance that
//!   neither acknowledges nor renews, and never completes while such an instance still serves.
//!   The fence lifts after a round that renewed the lease and applied the table again.
//!
//! Assumptions (see sql-proxy/README.md): the store's nodes keep their clocks within a small
//! fraction of the lease of each other (NTP), and a statement already running on a backend
//! when the fence begins finishes within the other half of the lease.

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::route::{DbRoute, Mode, RestoreError, RouteState, Shared};
use crate::route_store::{SharedStore, Store, StoreError, StoredRoute};

/// This instance's membership of a fleet, and what `/metrics` shows of it.
pub struct Fleet {
    pub instance: String,
    /// The client endpoints this instance answers (recorded with its lease).
    pub endpoints: String,
    pub lease: Duration,
    pub poll: Duration,
    /// The follower's own connection (the admin API commits through `Shared::store`).
    store: SharedStore,
    /// Start of the last round that renewed the lease and applied the table.
    confirmed_at: Mutex<Instant>,
    /// The store epoch the live table equals.
    pub applied: AtomicU64,
    /// The epoch last written as acknowledged.
    pub acked: AtomicU64,
    pub fences: AtomicU64,
    /// Rounds that failed (store unreachable, refused, timed out).
    pub errors: AtomicU64,
    /// Serialises fence and unfence.
    transition: Mutex<()>,
}

/// Why a switch did not complete on the whole fleet.
#[derive(Debug, thiserror::Error)]
#[error(
    "epoch {epoch} not acknowledged within {waited_ms} ms by live instance(s) {missing}; \
     an instance that stops renewing is fenced when its lease runs out"
)]
pub struct NotAcknowledged {
    pub epoch: u64,
    pub waited_ms: u64,
    /// `id (acked E, lease left N ms)`, comma-separated.
    pub missing: String,
}

impl Fleet {
    pub fn new(
        store: SharedStore,
        instance: String,
        endpoints: String,
        lease: Duration,
        poll: Duration,
    ) -> Fleet {
        Fleet {
            instance,
            endpoints,
            lease,
            poll,
            store,
            confirmed_at: Mutex::new(Instant::now()),
            applied: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            fences: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            transition: Mutex::new(()),
        }
    }

    /// Since the start of the last confirmed round.
    pub fn lease_age(&self) -> Duration {
        self.confirmed_at.lock().expect("confirmed lock").elapsed()
    }

    /// How long an unconfirmed lease is served on: half of it.
    pub fn fence_after(&self) -> Duration {
        self.lease / 2
    }

    /// The first lease, before the table is loaded (an instance that registers after a
    /// switch's commit reads that commit; one registered before is waited for).
    pub async fn register(&self) -> Result<(), StoreError> {
        let t0 = Instant::now();
        self.store.forget_expired().await?;
        self.store
            .renew(&self.instance, &self.endpoints, self.lease, 0)
            .await?;
        *self.confirmed_at.lock().expect("confirmed lock") = t0;
        Ok(())
    }

    /// A clean stop: out of the fleet at once.
    pub async fn deregister(&self) -> Result<(), StoreError> {
        self.store.deregister(&self.instance).await
    }
}

impl Shared {
    /// `Some(ms unconfirmed)` when this instance must not serve or change routes.
    pub fn fenced_for_ms(&self) -> Option<u64> {
        let fleet = self.fleet.as_ref()?;
        let age = fleet.lease_age();
        (self.fenced.load(Ordering::SeqCst) || age > fleet.fence_after())
            .then_some(age.as_millis() as u64)
    }

    /// Holds every database: clients see each route paused, the committed one is kept aside;
    /// sessions inside a transaction have it rolled back at their next command.
    pub fn fence(&self, why: &str) {
        let Some(fleet) = &self.fleet else { return };
        let _t = fleet.transition.lock().expect("transition lock");
        if self.fenced.swap(true, Ordering::SeqCst) {
            return;
        }
        fleet.fences.fetch_add(1, Ordering::Relaxed);
        let routes: Vec<Arc<DbRoute>> = self
            .routes
            .read()
            .expect("routes lock")
            .values()
            .cloned()
            .collect();
        for r in &routes {
            let mut real = r.fenced_real.lock().expect("fence lock");
            if real.is_none() {
                let st = r.state.borrow().clone();
                *real = Some(st.clone());
                r.state.send_replace(RouteState {
                    mode: Mode::Paused,
                    ..st
                });
            }
        }
        let mut aborted = 0;
        for s in self.sessions.lock().expect("sessions lock").values() {
            if s.in_txn.load(Ordering::SeqCst) {
                aborted += 1;
                s.abort_txn.store(true, Ordering::SeqCst);
                s.abort_notify.notify_one();
            }
        }
        tracing::error!(
            instance = %fleet.instance,
            unconfirmed_ms = fleet.lease_age().as_millis() as u64,
            routes = routes.len(),
            aborted_transactions = aborted,
            why,
            "FENCED: lease not confirmed with the shared route store; every database held until it is"
        );
    }

    /// Serves the committed routes again (after a confirmed round).
    fn unfence(&self) {
        let Some(fleet) = &self.fleet else { return };
        let _t = fleet.transition.lock().expect("transition lock");
        if !self.fenced.swap(false, Ordering::SeqCst) {
            return;
        }
        for r in self.routes.read().expect("routes lock").values() {
            if let Some(st) = r.fenced_real.lock().expect("fence lock").take() {
                r.state.send_replace(st);
            }
        }
        tracing::warn!(instance = %fleet.instance, epoch = fleet.applied.load(Ordering::SeqCst), "lease confirmed again: serving");
    }

    /// Applies a route committed elsewhere if it is newer than ours. The caller holds the
    /// route's `commit_lock`.
    pub(crate) fn apply_locked(&self, route: &DbRoute, r: &StoredRoute) -> bool {
        if route.epoch.load(Ordering::SeqCst) >= r.epoch {
            return false;
        }
        if self.backend_addr(&r.side).is_none() {
            tracing::error!(database = %r.database, side = %r.side, epoch = r.epoch, "shared route names a side not in this instance's [backends]: not applied, database held");
            return false;
        }
        let before = route.current();
        *route.mode_before_pause.lock().expect("mode lock") = r.resume_mode;
        if r.mode == Mode::Paused && before.mode != Mode::Paused {
            *route.paused_at.lock().expect("paused_at lock") = Some(Instant::now());
        } else if r.mode != Mode::Paused && before.mode == Mode::Paused {
            if let Some(t) = route.paused_at.lock().expect("paused_at lock").take() {
                self.record_pause(&r.database, t.elapsed().as_secs_f64() * 1e3);
            }
        }
        route.publish(RouteState {
            side: Arc::from(r.side.as_str()),
            mode: r.mode,
        });
        self.set_epoch(route, r.epoch);
        tracing::info!(database = %r.database, side = %r.side, mode = %r.mode, epoch = r.epoch, "route followed from the shared store");
        true
    }

    async fn apply_stored(&self, r: &StoredRoute) -> Result<(), RestoreError> {
        if self.backend_addr(&r.side).is_none() {
            return Err(RestoreError::UnknownSide {
                store: self.store.describe(),
                database: r.database.clone(),
                side: r.side.clone(),
            });
        }
        let route = self.route(&r.database);
        let _g = route.commit_lock.lock().await;
        self.apply_locked(&route, r);
        Ok(())
    }

    /// Whether no session of a paused database runs a statement or holds a transaction;
    /// transactions of databases paused longer than the switch deadline are aborted.
    fn drained(&self) -> bool {
        let paused: Vec<Arc<DbRoute>> = self
            .routes
            .read()
            .expect("routes lock")
            .values()
            .filter(|r| r.current().mode == Mode::Paused)
            .cloned()
            .collect();
        let deadline = Duration::from_millis(self.limits.switch_txn_deadline_ms);
        let mut all = true;
        for r in paused {
            let busy: Vec<_> = self
                .sessions_of(&r.name)
                .into_iter()
                .filter(|s| s.busy())
                .collect();
            if busy.is_empty() {
                continue;
            }
            all = false;
            let over = r
                .paused_at
                .lock()
                .expect("paused_at lock")
                .is_some_and(|t| t.elapsed() >= deadline);
            for s in busy
                .iter()
                .filter(|s| over && s.in_txn.load(Ordering::SeqCst))
            {
                s.abort_txn.store(true, Ordering::SeqCst);
                s.abort_notify.notify_one();
            }
        }
        all
    }
}

/// The table as of `snapshot_epoch` was loaded at start: follow from there.
pub fn spawn(shared: Arc<Shared>, loaded_epoch: u64) {
    let Some(fleet) = shared.fleet.clone() else {
        return;
    };
    fleet.applied.store(loaded_epoch, Ordering::SeqCst);
    let watched = shared.clone();
    let f = fleet.clone();
    // The watchdog: independent of the follower, which may hang in a call for a while.
    tokio::spawn(async move {
        let period = (f.poll / 4).clamp(Duration::from_millis(10), Duration::from_millis(100));
        loop {
            tokio::time::sleep(period).await;
            if !watched.fenced.load(Ordering::SeqCst) && f.lease_age() > f.fence_after() {
                watched.fence("no confirmed renewal for half the lease");
            }
        }
    });
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            let t0 = Instant::now();
            match round(&shared, &fleet).await {
                Ok(()) => {
                    *fleet.confirmed_at.lock().expect("confirmed lock") = t0;
                    if failing {
                        tracing::info!(instance = %fleet.instance, "shared route store reachable again");
                        failing = false;
                    }
                    if shared.fenced.load(Ordering::SeqCst) && t0.elapsed() < fleet.fence_after() {
                        shared.unfence();
                    }
                }
                Err(e) => {
                    fleet.errors.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        tracing::warn!(instance = %fleet.instance, error = %e, "lease renewal or route follow failed; fenced if not confirmed within half the lease");
                        failing = true;
                    }
                }
            }
            tokio::time::sleep(fleet.poll.saturating_sub(t0.elapsed())).await;
        }
    });
}

/// One round: renew, read the changes, apply them, acknowledge what is applied and drained.
async fn round(shared: &Shared, fleet: &Fleet) -> Result<(), RoundError> {
    let acked = fleet.acked.load(Ordering::SeqCst);
    fleet
        .store
        .renew(&fleet.instance, &fleet.endpoints, fleet.lease, acked)
        .await?;
    let applied = fleet.applied.load(Ordering::SeqCst);
    let snap = fleet.store.changes_since(applied).await?;
    for r in &snap.changed {
        shared.apply_stored(r).await?;
    }
    fleet.applied.store(snap.last_epoch, Ordering::SeqCst);
    if snap.last_epoch > acked && shared.drained() {
        fleet.store.ack(&fleet.instance, snap.last_epoch).await?;
        fleet.acked.store(snap.last_epoch, Ordering::SeqCst);
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

/// Waits until every live instance of the fleet acknowledged `epoch` (at once with the
/// embedded store); the live instances that did. Instances whose lease ran out are not
/// waited for: they fenced themselves before it did.
pub async fn wait_acks(
    shared: &Shared,
    epoch: u64,
    within: Duration,
) -> Result<Vec<String>, NotAcknowledged> {
    let (Store::Shared(store), Some(fleet)) = (&shared.store, &shared.fleet) else {
        return Ok(Vec::new());
    };
    let started = Instant::now();
    let step = (fleet.poll / 4).clamp(Duration::from_millis(10), Duration::from_millis(100));
    loop {
        let missing = match store.instances().await {
            Ok(rows) => {
                let live: Vec<_> = rows.iter().filter(|r| r.live).collect();
                let late: Vec<String> = live
                    .iter()
                    .filter(|r| r.acked_epoch < epoch)
                    .map(|r| {
                        format!(
                            "{} (acked {}, lease left {} ms)",
                            r.instance, r.acked_epoch, r.lease_left_ms
                        )
                    })
                    .collect();
                if late.is_empty() {
                    return Ok(live.iter().map(|r| r.instance.clone()).collect());
                }
                late.join(", ")
            }
            Err(e) => format!("(store not read: {e})"),
        };
        if started.elapsed() >= within {
            return Err(NotAcknowledged {
                epoch,
                waited_ms: started.elapsed().as_millis() as u64,
                missing,
            });
        }
        tokio::time::sleep(step).await;
    }
}

/// How long a switch waits for acknowledgements after committing: a lease (an instance cut
/// off just before the commit is fenced by then) plus `extra` (its drain) and two rounds.
pub fn ack_wait(shared: &Shared, extra: Duration) -> Duration {
    shared
        .fleet
        .as_ref()
        .map_or(Duration::ZERO, |f| f.lease + extra + 2 * f.poll)
}

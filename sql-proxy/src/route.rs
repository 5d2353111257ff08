//! Live routing state shared by sessions, the switch and the admin API: per database the side
//! (backend) and mode, published through a `watch` channel so a held session wakes the moment
//! its database resumes; the registry of sessions; per database/side counters.
//!
//! Every change of a route goes through [`Shared::commit`]: committed to the route [`Store`]
//! first, applied to the live state only once the store has it. The query path never touches
//! the store (it reads the `watch` channel only). With a shared store, changes committed by
//! other instances arrive through the follower (`fleet.rs`), and an instance that cannot
//! confirm its lease is *fenced*: every route is published as paused (clients held) while
//! [`DbRoute::current`] keeps the committed one.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::{watch, Notify};

use crate::auth::UserStore;
use crate::config::{Config, Limits};
use crate::route_store::{Committed, RouteStore, Store, StoreError, StoredRoute};

pub use crate::mode::Mode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteState {
    pub side: Arc<str>,
    pub mode: Mode,
}

/// One database's route.
pub struct DbRoute {
    pub name: String,
    pub state: watch::Sender<RouteState>,
    /// When the current pause began (for the measured pause in the switch answer).
    pub paused_at: Mutex<Option<Instant>>,
    /// Mode to return to when a pause ends.
    pub mode_before_pause: Mutex<Mode>,
    /// Serializes pause / resume / switch / PUT on this database.
    pub switch_lock: tokio::sync::Mutex<()>,
    /// Serializes store commits of this route with their application to `state`, so the
    /// live state always equals the last committed one.
    pub commit_lock: tokio::sync::Mutex<()>,
    /// Epoch of the last committed change; 0 while the route was never stored (first seen
    /// at a login that has not completed yet).
    pub epoch: AtomicU64,
    /// While this instance is fenced: the route as committed (clients see `state` paused).
    pub fenced_real: Mutex<Option<RouteState>>,
    /// Bytes of this database's queries held now (at most
    /// `limits.hold_buffer_per_database_bytes`).
    pub held_bytes: AtomicUsize,
}

impl DbRoute {
    fn new(name: &str, state: RouteState, resume_mode: Mode, epoch: u64) -> Self {
        DbRoute {
            name: name.to_string(),
            state: watch::channel(state).0,
            paused_at: Mutex::new(None),
            mode_before_pause: Mutex::new(resume_mode),
            switch_lock: tokio::sync::Mutex::new(()),
            commit_lock: tokio::sync::Mutex::new(()),
            epoch: AtomicU64::new(epoch),
            fenced_real: Mutex::new(None),
            held_bytes: AtomicUsize::new(0),
        }
    }

    /// The route as committed (what clients get when this instance is not fenced).
    pub fn current(&self) -> RouteState {
        let real = self.fenced_real.lock().expect("fence lock");
        real.clone().unwrap_or_else(|| self.state.borrow().clone())
    }

    /// Publishes a committed state: to clients, or kept aside while fenced.
    pub fn publish(&self, st: RouteState) {
        let mut real = self.fenced_real.lock().expect("fence lock");
        match real.as_mut() {
            Some(r) => *r = st,
            None => {
                self.state.send_replace(st);
            }
        }
    }

    /// The route of a session that has selected no database yet (and whose user's grants name
    /// no single one): the default side, open, never in the table nor the store. Its name is
    /// empty, which no database has.
    pub fn unrouted(side: Arc<str>) -> Self {
        DbRoute::new(
            "",
            RouteState {
                side,
                mode: Mode::Open,
            },
            Mode::Open,
            0,
        )
    }

    /// See [`DbRoute::unrouted`].
    pub fn is_unrouted(&self) -> bool {
        self.name.is_empty()
    }

    /// The route as the store holds it: side, mode, and the mode a pause returns to.
    pub fn desired(&self) -> Desired {
        let st = self.current();
        let resume_mode = if st.mode == Mode::Paused {
            *self.mode_before_pause.lock().expect("mode lock")
        } else {
            st.mode
        };
        Desired {
            side: st.side,
            mode: st.mode,
            resume_mode,
        }
    }
}

/// A route's committed content (what [`Shared::commit`] writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub side: Arc<str>,
    pub mode: Mode,
    /// The mode a paused database returns to (equal to `mode` when not paused).
    pub resume_mode: Mode,
}

/// Route store activity, for `/metrics`.
pub struct StoreCounters {
    pub commits: AtomicU64,
    pub errors: AtomicU64,
    /// Commit durations.
    pub commit_seconds: crate::histogram::Histogram,
}

impl Default for StoreCounters {
    fn default() -> Self {
        StoreCounters {
            commits: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            commit_seconds: crate::histogram::Histogram::new(crate::histogram::COMMIT_BUCKETS),
        }
    }
}

/// Why the proxy cannot restore its routes (it then refuses to start).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored route names a side the config no longer has: refusing beats guessing.
    #[error(
        "route store {store}: database {database:?} is routed to side {side:?}, which is not \
         in the config's [backends]; put that backend back (a stored route is never changed \
         by editing the config; use the admin API or sql-proxy routes import)"
    )]
    UnknownSide {
        store: String,
        database: String,
        side: String,
    },
}

/// Counters for one (database, side).
#[derive(Default)]
pub struct Counters {
    pub queries: AtomicU64,
    pub errors: AtomicU64,
    pub held: AtomicU64,
    pub hold_timeouts: AtomicU64,
    pub sessions: AtomicU64,
}

/// What the admin API and the switch see of a session.
pub struct SessionInfo {
    pub id: u64,
    pub user: String,
    pub client: SocketAddr,
    pub database: Mutex<String>,
    pub side: Mutex<Arc<str>>,
    /// A command is being executed (set before the route is checked: see `switch`).
    pub in_flight: AtomicBool,
    /// The backend reported an open transaction.
    pub in_txn: AtomicBool,
    /// Set by a switch whose deadline passed: roll back this session's transaction.
    pub abort_txn: AtomicBool,
    pub abort_notify: Notify,
    pub prepared: AtomicUsize,
    pub tracked: Mutex<Vec<String>>,
    /// Other databases the running statement, or the open transaction, acts on (`db.table`,
    /// a database left by `USE` inside the transaction): a pause of those waits for it too.
    pub touching: Mutex<Vec<String>>,
    /// The session holds state bound to its backend connection (temporary tables, GET_LOCK
    /// locks, SQL-level prepared statements, LOCK TABLES): like an open transaction, it keeps
    /// its backend until released, and a switch's deadline ends it (see `pinned.rs`).
    pub pinned: AtomicBool,
    pub started: Instant,
}

/// Everything shared.
pub struct Shared {
    pub routes: RwLock<HashMap<String, Arc<DbRoute>>>,
    pub backends: RwLock<BTreeMap<String, SocketAddr>>,
    /// Sides reached through a unix socket instead (see `Config::backend_sockets`).
    pub backend_sockets: RwLock<BTreeMap<String, PathBuf>>,
    pub default_side: RwLock<Arc<str>>,
    pub users: RwLock<Arc<UserStore>>,
    pub sessions: Mutex<BTreeMap<u64, Arc<SessionInfo>>>,
    pub counters: Mutex<HashMap<(String, String), Arc<Counters>>>,
    /// Completed pauses per database: (count, total ms, max ms) (exported only with
    /// `[admin] per_database_metrics`).
    pub pauses: Mutex<BTreeMap<String, (u64, f64, f64)>>,
    /// Completed pauses, all databases.
    pub pause_seconds: crate::histogram::Histogram,
    pub held_bytes: AtomicUsize,
    pub next_session: AtomicU64,
    pub limits: Limits,
    pub server_version: String,
    /// TLS for clients that ask for it; `None` means CLIENT_SSL is not offered.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// TLS to the backends (`[tls] backend_ca_file`), set once at start: used by the sessions
    /// of TLS clients; required by accounts that require TLS.
    pub backend_tls: std::sync::OnceLock<tokio_rustls::TlsConnector>,
    /// Where every route change is committed before it takes effect.
    pub store: Store,
    pub store_counters: StoreCounters,
    /// This instance's membership of a fleet sharing the store (`None`: embedded store).
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
    /// Set while the lease is not confirmed: every route is held (see `fleet.rs`).
    pub fenced: AtomicBool,
    /// Connection counts, the login throttle and refusal counters (`limits.rs`).
    pub protect: crate::limits::Protections,
    /// Routes in the live table with epoch 0 (named at a login still in progress, never
    /// stored): at most `limits.max_unstored_routes`; freed when their login fails.
    pub unstored: AtomicUsize,
}

impl Shared {
    /// The shared state with every route restored from `store` as last committed, plus the
    /// config's `[databases]` the store has never seen (committed first).
    pub fn new(
        cfg: &Config,
        users: UserStore,
        tls: Option<tokio_rustls::TlsAcceptor>,
        store: Arc<RouteStore>,
    ) -> Result<Arc<Self>, RestoreError> {
        let stored = store.load()?;
        let s = Self::build(cfg, users, tls, Store::Local(store.clone()), stored, None)?;
        for r in store.seed_missing(&cfg.seed())? {
            tracing::info!(database = %r.database, side = %r.side, epoch = r.epoch, "route seeded from the config");
            s.restore(&r);
        }
        Ok(s)
    }

    /// The shared state with every route of `stored` (loaded from `store`), as a member of
    /// `fleet` if given. The caller seeds the config's `[databases]` after
    /// ([`Shared::seed_from_config`]).
    pub fn build(
        cfg: &Config,
        users: UserStore,
        tls: Option<tokio_rustls::TlsAcceptor>,
        store: Store,
        stored: Vec<StoredRoute>,
        fleet: Option<Arc<crate::fleet::Fleet>>,
    ) -> Result<Arc<Self>, RestoreError> {
        for r in &stored {
            if !cfg.backends.contains_key(&r.side) {
                return Err(RestoreError::UnknownSide {
                    store: store.describe(),
                    database: r.database.clone(),
                    side: r.side.clone(),
                });
            }
        }
        let s = Arc::new(Self {
            routes: RwLock::new(HashMap::new()),
            backends: RwLock::new(cfg.backends.clone()),
            backend_sockets: RwLock::new(cfg.backend_sockets.clone()),
            default_side: RwLock::new(Arc::from(cfg.default_side.as_str())),
            users: RwLock::new(Arc::new(users)),
            sessions: Mutex::new(BTreeMap::new()),
            counters: Mutex::new(HashMap::new()),
            pauses: Mutex::new(BTreeMap::new()),
            pause_seconds: crate::histogram::Histogram::new(crate::histogram::PAUSE_BUCKETS),
            held_bytes: AtomicUsize::new(0),
            next_session: AtomicU64::new(1),
            limits: cfg.limits.clone(),
            server_version: cfg.server_version.clone(),
            tls,
            backend_tls: std::sync::OnceLock::new(),
            store,
            store_counters: StoreCounters::default(),
            fleet,
            fenced: AtomicBool::new(false),
            protect: crate::limits::Protections::new(&cfg.limits),
            unstored: AtomicUsize::new(0),
        });
        for r in &stored {
            s.restore(r);
        }
        let paused = stored.iter().filter(|r| r.mode == Mode::Paused).count();
        tracing::info!(
            routes = stored.len(),
            paused,
            store = %s.store.describe(),
            "routes restored"
        );
        Ok(s)
    }

    /// Puts a stored route into the live table as it was committed. A paused one stays
    /// paused (its pause is measured from now).
    fn restore(&self, r: &StoredRoute) {
        let state = RouteState {
            side: Arc::from(r.side.as_str()),
            mode: r.mode,
        };
        if r.mode == Mode::Paused {
            tracing::warn!(
                database = %r.database,
                side = %r.side,
                epoch = r.epoch,
                "restored paused: held until the migrator resumes or aborts the switch"
            );
        }
        let mut routes = self.routes.write().expect("routes lock");
        let route = routes.entry(r.database.clone()).or_insert_with(|| {
            // Counted as unstored until `set_epoch` below, like any route at epoch 0.
            self.unstored.fetch_add(1, Ordering::SeqCst);
            Arc::new(DbRoute::new(&r.database, state.clone(), r.resume_mode, 0))
        });
        // A route already live here was never stored (no login on it completed): the stored
        // one wins, and sessions waiting on it re-home at their next command.
        if route.epoch.load(Ordering::SeqCst) == 0 {
            *route.mode_before_pause.lock().expect("mode lock") = r.resume_mode;
            if r.mode == Mode::Paused {
                *route.paused_at.lock().expect("paused_at lock") = Some(Instant::now());
            }
            route.publish(state);
            self.set_epoch(route, r.epoch);
        }
    }

    /// Commits the config's `[databases]` that the store has never seen (start and SIGHUP);
    /// routes the store knows are left as they are, whatever the config says.
    pub async fn seed_from_config(&self, cfg: &Config) -> Result<(), StoreError> {
        for r in self.store.seed_missing(&cfg.seed()).await? {
            tracing::info!(database = %r.database, side = %r.side, epoch = r.epoch, "route seeded from the config");
            self.restore(&r);
        }
        Ok(())
    }

    /// The route of `db` if the live table has it (stored or first seen), without creating it.
    pub fn lookup(&self, db: &str) -> Option<Arc<DbRoute>> {
        self.routes.read().expect("routes lock").get(db).cloned()
    }

    /// The route of `db`, created in memory on first use with the default side, mode open.
    /// It is committed by [`Shared::ensure_stored`] before any client hears that its login
    /// succeeded, and by any change before that change takes effect.
    pub fn route(&self, db: &str) -> Arc<DbRoute> {
        self.route_bounded(db, usize::MAX)
            .expect("no bound on unstored routes")
    }

    /// The route of `db` for a login: a name the table does not have is added only while
    /// fewer than `limits.max_unstored_routes` unstored routes exist (else `None`). A login
    /// that fails hands it back through [`Shared::release_route`].
    pub fn route_for_login(&self, db: &str) -> Option<Arc<DbRoute>> {
        let r = self.route_bounded(db, self.limits.max_unstored_routes);
        if r.is_none() {
            self.protect
                .counters
                .unstored_routes_refused
                .fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn route_bounded(&self, db: &str, max_unstored: usize) -> Option<Arc<DbRoute>> {
        if let Some(r) = self.routes.read().expect("routes lock").get(db) {
            return Some(r.clone());
        }
        let side = self.default_side.read().expect("default side lock").clone();
        let mut routes = self.routes.write().expect("routes lock");
        if let Some(r) = routes.get(db) {
            return Some(r.clone());
        }
        if self.unstored.load(Ordering::SeqCst) >= max_unstored {
            return None;
        }
        self.unstored.fetch_add(1, Ordering::SeqCst);
        let st = RouteState {
            side,
            mode: Mode::Open,
        };
        let route = DbRoute::new(db, st.clone(), Mode::Open, 0);
        // Read under the routes lock: `fence` sets the flag before it walks them.
        if self.fenced.load(Ordering::SeqCst) {
            *route.fenced_real.lock().expect("fence lock") = Some(st.clone());
            route.state.send_replace(RouteState {
                mode: Mode::Paused,
                ..st
            });
        }
        let r = Arc::new(route);
        routes.insert(db.to_string(), r.clone());
        Some(r)
    }

    /// Hands back a route taken for a login that failed: a route never stored that nobody
    /// else holds (no session, no admin call) leaves the live table, with its counters, so
    /// names tried at logins do not pile up.
    pub fn release_route(&self, route: Arc<DbRoute>) {
        let mut routes = self.routes.write().expect("routes lock");
        let ours = routes
            .get(&route.name)
            .is_some_and(|r| Arc::ptr_eq(r, &route));
        // Held by the table and by `route` only; nobody can take another reference without
        // the lock we hold.
        if ours && Arc::strong_count(&route) == 2 && route.epoch.load(Ordering::SeqCst) == 0 {
            routes.remove(&route.name);
            self.unstored.fetch_sub(1, Ordering::SeqCst);
            self.counters
                .lock()
                .expect("counters lock")
                .retain(|(db, _), c| *db != route.name || Arc::strong_count(c) > 1);
            self.protect
                .counters
                .routes_freed
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a committed epoch; a route leaving epoch 0 is no longer counted as unstored.
    pub(crate) fn set_epoch(&self, route: &DbRoute, epoch: u64) {
        if route.epoch.swap(epoch, Ordering::SeqCst) == 0 && epoch != 0 {
            self.unstored.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Commits `change(current)` to the store, then applies it to the live route; returns the
    /// new epoch. Nothing changes for clients if the commit fails. With a shared store,
    /// `change` is made again (twice at most) on a route another instance changed first.
    pub async fn commit(
        &self,
        route: &Arc<DbRoute>,
        change: impl Fn(&Desired) -> Desired,
    ) -> Result<u64, StoreError> {
        let _g = route.commit_lock.lock().await;
        let mut attempt = 0;
        let (next, epoch) = loop {
            let next = change(&route.desired());
            match self.store_write(route, &next).await {
                Ok(epoch) => break (next, epoch),
                // This instance had not followed the latest change yet (`store_write` applied
                // it): the change is made again on top of it, as an operator's retry would.
                Err(StoreError::Conflict { .. }) if attempt < 2 => attempt += 1,
                Err(e) => return Err(e),
            }
        };
        *route.mode_before_pause.lock().expect("mode lock") = next.resume_mode;
        route.publish(RouteState {
            side: next.side.clone(),
            mode: next.mode,
        });
        self.set_epoch(route, epoch);
        Ok(epoch)
    }

    /// Sets side and/or mode directly, committed first (no draining: use `switch` to move
    /// live traffic). Not for pausing: `switch::pause` drains.
    pub async fn set_route(
        &self,
        db: &str,
        side: Option<&str>,
        mode: Option<Mode>,
    ) -> Result<u64, StoreError> {
        let route = self.route(db);
        self.commit(&route, |cur| {
            let mode = mode.unwrap_or(cur.mode);
            Desired {
                side: side.map_or_else(|| cur.side.clone(), Arc::from),
                mode,
                resume_mode: if mode == Mode::Paused {
                    cur.resume_mode
                } else {
                    mode
                },
            }
        })
        .await
    }

    /// Commits a route first seen at a login (default side) before the client hears OK.
    pub async fn ensure_stored(&self, route: &Arc<DbRoute>) -> Result<(), StoreError> {
        if route.epoch.load(Ordering::SeqCst) != 0 || route.is_unrouted() {
            return Ok(());
        }
        let _g = route.commit_lock.lock().await;
        if route.epoch.load(Ordering::SeqCst) != 0 {
            return Ok(());
        }
        let cur = route.desired();
        let epoch = match self.store_write(route, &cur).await {
            Ok(e) => e,
            // Another instance stored it first: `store_write` applied its route here.
            Err(StoreError::Conflict { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.set_epoch(route, epoch);
        tracing::info!(database = %route.name, side = %cur.side, epoch, "route first seen, stored");
        Ok(())
    }

    /// One durable commit (the SQLite one off the async threads). Refused while fenced. A
    /// shared commit is checked against the route's epoch here: if another instance changed
    /// it meanwhile, its route is applied here and the change refused (`Conflict`). The
    /// caller holds the route's `commit_lock`.
    async fn store_write(&self, route: &DbRoute, d: &Desired) -> Result<u64, StoreError> {
        let started = Instant::now();
        let res = if let Some(ms) = self.fenced_for_ms() {
            Err(StoreError::Fenced { ms })
        } else {
            let expected = route.epoch.load(Ordering::SeqCst);
            match self
                .store
                .commit(&route.name, expected, &d.side, d.mode, d.resume_mode)
                .await
            {
                Ok(Committed::Done(epoch)) => Ok(epoch),
                Ok(Committed::Conflict(current)) => {
                    let now = current.as_ref().map_or(0, |c| c.epoch);
                    if let Some(c) = &current {
                        self.apply_locked(route, c);
                    }
                    Err(StoreError::Conflict {
                        database: route.name.clone(),
                        expected,
                        current: now,
                    })
                }
                Err(e) => Err(e),
            }
        };
        let c = &self.store_counters;
        match &res {
            Ok(_) => {
                c.commits.fetch_add(1, Ordering::Relaxed);
                c.commit_seconds.observe(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(database = %route.name, error = %e, "route change NOT committed, so not applied");
            }
        }
        res
    }

    pub fn backend_addr(&self, side: &str) -> Option<SocketAddr> {
        self.backends
            .read()
            .expect("backends lock")
            .get(side)
            .copied()
    }

    /// The unix socket to reach `side` through, if configured.
    pub fn backend_socket(&self, side: &str) -> Option<PathBuf> {
        self.backend_sockets
            .read()
            .expect("backend sockets lock")
            .get(side)
            .cloned()
    }

    pub fn counters(&self, db: &str, side: &str) -> Arc<Counters> {
        self.counters
            .lock()
            .expect("counters lock")
            .entry((db.to_string(), side.to_string()))
            .or_default()
            .clone()
    }

    pub fn sessions_of(&self, db: &str) -> Vec<Arc<SessionInfo>> {
        self.sessions
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| s.acts_on(db))
            .cloned()
            .collect()
    }

    pub fn register(&self, info: Arc<SessionInfo>) {
        self.sessions
            .lock()
            .expect("sessions lock")
            .insert(info.id, info);
    }

    pub fn unregister(&self, id: u64) {
        self.sessions.lock().expect("sessions lock").remove(&id);
    }

    pub fn record_pause(&self, db: &str, ms: f64) {
        self.pause_seconds.observe(ms / 1e3);
        let mut p = self.pauses.lock().expect("pauses lock");
        let e = p.entry(db.to_string()).or_insert((0, 0.0, 0.0));
        e.0 += 1;
        e.1 += ms;
        e.2 = e.2.max(ms);
    }
}

impl SessionInfo {
    pub fn new(id: u64, user: String, client: SocketAddr, db: String, side: Arc<str>) -> Self {
        Self {
            id,
            user,
            client,
            database: Mutex::new(db),
            side: Mutex::new(side),
            in_flight: AtomicBool::new(false),
            in_txn: AtomicBool::new(false),
            abort_txn: AtomicBool::new(false),
            abort_notify: Notify::new(),
            prepared: AtomicUsize::new(0),
            tracked: Mutex::new(Vec::new()),
            touching: Mutex::new(Vec::new()),
            pinned: AtomicBool::new(false),
            started: Instant::now(),
        }
    }

    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) || self.holds_backend()
    }

    /// An open transaction or pinned state: the session cannot move to another backend now.
    pub fn holds_backend(&self) -> bool {
        self.in_txn.load(Ordering::SeqCst) || self.pinned.load(Ordering::SeqCst)
    }

    /// Whether this session acts on `db`: its current database, or one its running statement
    /// or open transaction touches.
    pub fn acts_on(&self, db: &str) -> bool {
        *self.database.lock().expect("session db lock") == db
            || self
                .touching
                .lock()
                .expect("touching lock")
                .iter()
                .any(|d| d == db)
    }
}

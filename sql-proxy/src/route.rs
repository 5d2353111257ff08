//! Live routing state shared by sessions, the switch and the admin API: per database the side
//! (backend) and mode, published through a `watch` channel so a held session wakes the moment
//! its database resumes; the registry of sessions; per database/side counters.
//!
//! Every change of a route goes through [`Shared::commit`]: committed to the [`RouteStore`]
//! first, applied to the live state only once the store has it. The query path never touches
//! the store (it reads the `watch` channel only).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::{watch, Notify};

use crate::auth::UserStore;
use crate::config::{Config, Limits};
use crate::route_store::{RouteStore, StoreError, StoredRoute};

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
        let st = self.state.borrow().clone();
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
#[derive(Default)]
pub struct StoreCounters {
    pub commits: AtomicU64,
    pub errors: AtomicU64,
    /// Sum of commit durations, microseconds.
    pub commit_micros: AtomicU64,
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
    /// Completed pauses per database: (count, total ms, max ms).
    pub pauses: Mutex<BTreeMap<String, (u64, f64, f64)>>,
    pub held_bytes: AtomicUsize,
    pub next_session: AtomicU64,
    pub limits: Limits,
    pub server_version: String,
    /// TLS for clients that ask for it; `None` means CLIENT_SSL is not offered.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Where every route change is committed before it takes effect.
    pub store: Arc<RouteStore>,
    pub store_counters: StoreCounters,
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
        for r in &stored {
            if !cfg.backends.contains_key(&r.side) {
                return Err(RestoreError::UnknownSide {
                    store: store.path().display().to_string(),
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
            held_bytes: AtomicUsize::new(0),
            next_session: AtomicU64::new(1),
            limits: cfg.limits.clone(),
            server_version: cfg.server_version.clone(),
            tls,
            store,
            store_counters: StoreCounters::default(),
        });
        for r in &stored {
            s.restore(r);
        }
        let paused = stored.iter().filter(|r| r.mode == Mode::Paused).count();
        tracing::info!(
            routes = stored.len(),
            paused,
            store = %s.store.path().display(),
            "routes restored"
        );
        s.seed_from_config(cfg)?;
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
            Arc::new(DbRoute::new(&r.database, state.clone(), r.resume_mode, 0))
        });
        // A route already live here was never stored (no login on it completed): the stored
        // one wins, and sessions waiting on it re-home at their next command.
        if route.epoch.load(Ordering::SeqCst) == 0 {
            *route.mode_before_pause.lock().expect("mode lock") = r.resume_mode;
            if r.mode == Mode::Paused {
                *route.paused_at.lock().expect("paused_at lock") = Some(Instant::now());
            }
            route.state.send_replace(state);
            route.epoch.store(r.epoch, Ordering::SeqCst);
        }
    }

    /// Commits the config's `[databases]` that the store has never seen (start and SIGHUP);
    /// routes the store knows are left as they are, whatever the config says.
    pub fn seed_from_config(&self, cfg: &Config) -> Result<(), StoreError> {
        for r in self.store.seed_missing(&cfg.seed())? {
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
        if let Some(r) = self.routes.read().expect("routes lock").get(db) {
            return r.clone();
        }
        let side = self.default_side.read().expect("default side lock").clone();
        let mut routes = self.routes.write().expect("routes lock");
        routes
            .entry(db.to_string())
            .or_insert_with(|| {
                Arc::new(DbRoute::new(
                    db,
                    RouteState {
                        side,
                        mode: Mode::Open,
                    },
                    Mode::Open,
                    0,
                ))
            })
            .clone()
    }

    /// Commits `change(current)` to the store, then applies it to the live route; returns the
    /// new epoch. Nothing changes for clients if the commit fails.
    pub async fn commit(
        &self,
        route: &Arc<DbRoute>,
        change: impl FnOnce(&Desired) -> Desired,
    ) -> Result<u64, StoreError> {
        let _g = route.commit_lock.lock().await;
        let next = change(&route.desired());
        let epoch = self.store_write(route, &next).await?;
        *route.mode_before_pause.lock().expect("mode lock") = next.resume_mode;
        route.state.send_modify(|st| {
            st.side = next.side.clone();
            st.mode = next.mode;
        });
        route.epoch.store(epoch, Ordering::SeqCst);
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
        let epoch = self.store_write(route, &cur).await?;
        route.epoch.store(epoch, Ordering::SeqCst);
        tracing::info!(database = %route.name, side = %cur.side, epoch, "route first seen, stored");
        Ok(())
    }

    /// One durable commit, off the async threads (it waits for an fsync).
    async fn store_write(&self, route: &DbRoute, d: &Desired) -> Result<u64, StoreError> {
        let store = self.store.clone();
        let (db, side, mode, resume) = (
            route.name.clone(),
            d.side.to_string(),
            d.mode,
            d.resume_mode,
        );
        let started = Instant::now();
        let res = tokio::task::spawn_blocking(move || store.commit(&db, &side, mode, resume))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Io {
                    path: self.store.path().into(),
                    what: "commit task",
                    source: std::io::Error::other(e.to_string()),
                })
            });
        let c = &self.store_counters;
        match &res {
            Ok(_) => {
                c.commits.fetch_add(1, Ordering::Relaxed);
                c.commit_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
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

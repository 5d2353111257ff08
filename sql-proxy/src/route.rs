//! Live routing state shared by sessions, the switch and the admin API: per database the side
//! (backend) and mode, published through a `watch` channel so a held session wakes the moment
//! its database resumes; the registry of sessions; per database/side counters.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::auth::UserStore;
use crate::config::{Config, Limits};

/// A database's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Open,
    /// Reads pass; writes get error 1290.
    ReadOnly,
    /// Queries are held (bounded) until the mode changes.
    Paused,
}

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
    /// Serializes pause / resume / switch on this database.
    pub switch_lock: tokio::sync::Mutex<()>,
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
}

impl Shared {
    pub fn new(
        cfg: &Config,
        users: UserStore,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Arc<Self> {
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
        });
        for (db, r) in &cfg.databases {
            s.set_route(db, Some(&r.side), Some(r.mode));
        }
        s
    }

    /// The route of `db`, created on first use with the default side, mode open.
    pub fn route(&self, db: &str) -> Arc<DbRoute> {
        if let Some(r) = self.routes.read().expect("routes lock").get(db) {
            return r.clone();
        }
        let side = self.default_side.read().expect("default side lock").clone();
        let mut routes = self.routes.write().expect("routes lock");
        routes
            .entry(db.to_string())
            .or_insert_with(|| {
                Arc::new(DbRoute {
                    name: db.to_string(),
                    state: watch::channel(RouteState {
                        side,
                        mode: Mode::Open,
                    })
                    .0,
                    paused_at: Mutex::new(None),
                    mode_before_pause: Mutex::new(Mode::Open),
                    switch_lock: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// Sets side and/or mode of a database directly (no waiting; see `switch` for that).
    pub fn set_route(&self, db: &str, side: Option<&str>, mode: Option<Mode>) -> Arc<DbRoute> {
        let r = self.route(db);
        r.state.send_modify(|st| {
            if let Some(s) = side {
                st.side = Arc::from(s);
            }
            if let Some(m) = mode {
                st.mode = m;
            }
        });
        r
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
            .filter(|s| *s.database.lock().expect("session db lock") == db)
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
            started: Instant::now(),
        }
    }

    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) || self.in_txn.load(Ordering::SeqCst)
    }
}

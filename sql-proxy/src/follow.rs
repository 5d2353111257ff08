//! A session follows the database each command acts on (issue 18, finding 2).
//!
//! - **Its route is the route of its current database**: the one named at login, then each
//!   `COM_INIT_DB` and `USE` (alone, in a multi-statement batch, or inside an executable
//!   comment). The gate (`commands.rs`) then holds it while that database is paused and moves
//!   it to that database's side. A session changing to a database on another side inside a
//!   transaction, or while it holds state bound to its backend (`pinned.rs`), gets a clear
//!   error instead: neither can move.
//! - **No database, no guess**: a client that logs in without a database is routed by its
//!   user's grant only when the grants name exactly one database; otherwise it is *unrouted*
//!   (the default side, open) until it selects one.
//! - **Other databases a statement names** (`db.table`, `db.func()`, `CREATE/DROP DATABASE
//!   db`, `SHOW … FROM db`, the previous database of a batch that changes it, and for a
//!   statement whose reach the proxy cannot see — `CALL`, SQL `EXECUTE` — every database the
//!   user has a grant on): each must be on the session's side (else a clear error, never sent
//!   to the wrong side) and not paused (else a clear error); a `read_only` one makes the
//!   statement read-only. A name after a dot may be a table alias: when it would change the
//!   outcome, sqlparser decides whether it qualifies a table or routine (a statement it cannot
//!   parse counts it as a database). While the statement runs, or the transaction it belongs
//!   to is open, the session counts as a session of those databases, so their pause waits for
//!   it. A statement sqlparser cannot parse counts a dotted name as a database when the proxy
//!   routes it or the user has a grant on it; a name it never routed and the user has no
//!   grant on is then taken as a table or alias (a database in no move exists on one server
//!   only, so nothing can land on a wrong side).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::protocol::ErrPacket;
use crate::route::{DbRoute, Mode, RouteState};
use crate::scope::{schema_qualifiers, Scope};
use crate::session::Session;

/// Databases that exist on every server and belong to none of the platform's sites.
const SYSTEM_SCHEMAS: [&str; 4] = ["information_schema", "performance_schema", "mysql", "sys"];

/// Other databases a statement may act on, by how sure the proxy is that each is one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Refs {
    /// Databases for sure.
    pub certain: BTreeSet<String>,
    /// Databases only if the proxy knows them (a route, or a grant of the user).
    pub maybe: BTreeSet<String>,
    /// `x` of `x.y`: a database, or a table or alias (sqlparser decides when it matters).
    pub qualifiers: BTreeSet<String>,
}

impl Refs {
    /// From a statement's scope; `before`: the session's database before the statement, which
    /// a batch that starts elsewhere than at its `USE` acts on.
    pub fn of(scope: &Scope, before: Option<&str>, grants: impl FnOnce() -> Vec<String>) -> Refs {
        let mut certain = scope.named.clone();
        if let Some((_, earlier)) = scope.uses.split_last() {
            certain.extend(earlier.iter().cloned());
            if scope.before_use {
                certain.extend(before.map(str::to_string));
            }
        }
        if scope.opaque {
            certain.extend(grants());
        }
        Refs {
            certain,
            maybe: scope.maybe.clone(),
            qualifiers: scope.qualifiers.clone(),
        }
    }

    /// Whether any name is not `here` (the session's database): only then is there anything
    /// to check.
    pub fn names_other_than(&self, here: &str) -> bool {
        [&self.certain, &self.maybe, &self.qualifiers]
            .iter()
            .any(|s| s.iter().any(|n| n != here))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sure {
    Certain,
    Maybe,
    Qualifier,
}

fn rank(m: Mode) -> u8 {
    match m {
        Mode::Open => 0,
        Mode::ReadOnly => 1,
        Mode::Paused => 2,
    }
}

fn refused(msg: String) -> ErrPacket {
    ErrPacket::new(1105, "HY000", msg)
}

impl Session {
    /// The session's current database, as named in errors.
    fn here(&self) -> String {
        if self.route.is_unrouted() {
            "this session (no database selected)".into()
        } else {
            format!("database '{}' of this session", self.route.name)
        }
    }

    /// Makes `route` the session's route; returns the previous one.
    pub(crate) fn set_route(&mut self, route: Arc<DbRoute>) -> Arc<DbRoute> {
        self.route_rx = route.state.subscribe();
        *self.info.database.lock().expect("db lock") = route.name.clone();
        let side = self.info.side.lock().expect("side lock").clone();
        self.counters.sessions.fetch_sub(1, Ordering::Relaxed);
        self.counters = self.shared.counters(&route.name, &side);
        self.counters.sessions.fetch_add(1, Ordering::Relaxed);
        self.gate_ok = None;
        std::mem::replace(&mut self.route, route)
    }

    /// Before a command that selects `db` (`COM_INIT_DB`, `USE`): the session follows `db`'s
    /// route. Returns the previous route (to go back to if the server refuses `db`), `None`
    /// when `db` is already the session's.
    pub(crate) fn enter_db(&mut self, db: &str) -> Result<Option<Arc<DbRoute>>, ErrPacket> {
        if db.is_empty() {
            // (An empty name is how an unrouted session's route is told apart.)
            return Err(ErrPacket::new(1046, "3D000", "No database selected"));
        }
        if !self.route.is_unrouted() && self.route.name == db {
            return Ok(None);
        }
        // Bounded like a login's (limits.max_unstored_routes): a name the server refuses is
        // handed back by `restore_route`.
        let next = self.shared.route_for_login(db).ok_or_else(|| {
            ErrPacket::new(
                1040,
                "08004",
                "sql-proxy: too many databases not known yet being selected \
                 (limits.max_unstored_routes); retry shortly",
            )
        })?;
        let next_side = next.state.borrow().side.clone();
        let side = self.info.side.lock().expect("side lock").clone();
        if self.backend.is_some() && *next_side != *side {
            if self.info.in_txn.load(Ordering::SeqCst) {
                return Err(refused(format!(
                    "sql-proxy: database '{db}' is served by another server than {}, and a \
                     transaction cannot move: COMMIT or ROLLBACK before USE {db}",
                    self.here()
                )));
            }
            if !self.pinned.is_empty() {
                return Err(refused(format!(
                    "sql-proxy: database '{db}' is served by another server than {}, and this \
                     session holds {} there; release them (or reconnect) before USE {db}",
                    self.here(),
                    self.pinned.describe()
                )));
            }
        }
        if self.info.in_txn.load(Ordering::SeqCst) && !self.route.is_unrouted() {
            // The open transaction may have written the database being left: its pause must
            // still wait for this session.
            let left = self.route.name.clone();
            let mut t = self.info.touching.lock().expect("touching lock");
            if !t.contains(&left) {
                t.push(left);
            }
        }
        Ok(Some(self.set_route(next)))
    }

    /// Goes back to the route before [`Session::enter_db`] (the server refused the database).
    pub(crate) fn restore_route(&mut self, prev: Option<Arc<DbRoute>>) {
        if let Some(prev) = prev {
            let refused = self.set_route(prev);
            // A name the server refused does not stay in the route table (issue 18, finding 9).
            self.shared.release_route(refused);
        }
    }

    /// Checks the other databases a statement acts on against this session's side; returns
    /// the mode the statement runs under (the strictest).
    pub(crate) async fn check_others(
        &mut self,
        mut mode: Mode,
        refs: &Refs,
        sql: &[u8],
    ) -> Result<Mode, ErrPacket> {
        if !refs.names_other_than(&self.route.name) {
            return Ok(mode);
        }
        let here = self.route.name.clone();
        let mut names: Vec<(String, Sure)> = Vec::new();
        for (set, sure) in [
            (&refs.certain, Sure::Certain),
            (&refs.maybe, Sure::Maybe),
            (&refs.qualifiers, Sure::Qualifier),
        ] {
            for n in set {
                let system = SYSTEM_SCHEMAS.iter().any(|s| s.eq_ignore_ascii_case(n));
                if *n != here && !system && !names.iter().any(|(m, _)| m == n) {
                    names.push((n.clone(), sure));
                }
            }
        }
        if names.is_empty() {
            return Ok(mode);
        }
        // Published before the routes are read: a pause of one of them either sees this
        // session busy with it, or this session sees the pause.
        {
            let mut t = self.info.touching.lock().expect("touching lock");
            for (n, _) in &names {
                if !t.contains(n) {
                    t.push(n.clone());
                }
            }
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        let side = self.info.side.lock().expect("side lock").clone();
        let default_side = self
            .shared
            .default_side
            .read()
            .expect("default side")
            .clone();
        let users = self.shared.users.read().expect("users lock").clone();
        let grants = users
            .users
            .get(&self.login.user)
            .map(|u| u.databases.clone())
            .unwrap_or_default();
        let mut parsed: Option<Option<BTreeSet<String>>> = None;
        for (n, sure) in names {
            let known = self.shared.lookup(&n);
            let granted = grants.contains(&n);
            if sure == Sure::Maybe && known.is_none() && !granted {
                continue;
            }
            // A database the proxy never routed is served from the default side, open.
            let st = known.as_ref().map_or_else(
                || RouteState {
                    side: default_side.clone(),
                    mode: Mode::Open,
                },
                |r| r.state.borrow().clone(),
            );
            let differs = *st.side != *side || rank(st.mode) > rank(mode);
            if differs && sure == Sure::Qualifier {
                let q = parsed.get_or_insert_with(|| schema_qualifiers(sql));
                let schema = match q {
                    Some(q) => q.contains(&n),
                    // Unparseable (MariaDB syntax sqlparser lacks, e.g. SQL_CALC_FOUND_ROWS):
                    // a database the proxy knows counts; a name it never routed and the user
                    // has no grant on is taken as a table or alias (were it a database, it is
                    // in no move, so it exists only on its own server).
                    None => known.is_some() || granted,
                };
                if !schema {
                    continue; // a table or alias, not a database
                }
            }
            if *st.side != *side {
                return Err(refused(format!(
                    "sql-proxy: this statement names database '{n}', which is served by another \
                     server than {}; a statement never spans two servers: run it in a session \
                     on '{n}' (USE {n})",
                    self.here()
                )));
            }
            match st.mode {
                Mode::Paused => {
                    return Err(ErrPacket::new(
                        1205,
                        "HY000",
                        format!(
                            "sql-proxy: this statement names database '{n}', which is paused \
                             for a move; the statement was not run, retry it"
                        ),
                    ))
                }
                Mode::ReadOnly => mode = Mode::ReadOnly,
                Mode::Open => {}
            }
            // Only a database the user is granted becomes a route here (and is stored): names a
            // client merely writes are not kept (issue 18, finding 9); the server refuses a
            // database the account has no grant on.
            if known.is_none() && granted {
                // Served from the default side from now on: recorded before it is used.
                let r = self.shared.route(&n);
                self.shared
                    .ensure_stored(&r)
                    .await
                    .map_err(|e| crate::session::route_not_stored(&n, &e))?;
            }
        }
        Ok(mode)
    }

    /// After a command: the other databases stay touched while its transaction is open.
    pub(crate) fn end_touching(&mut self) {
        if !self.info.in_txn.load(Ordering::SeqCst) {
            let mut t = self.info.touching.lock().expect("touching lock");
            if !t.is_empty() {
                t.clear();
            }
        }
        self.info
            .pinned
            .store(!self.pinned.is_empty(), Ordering::SeqCst);
    }

    /// Makes the backend session's transactions read-only while the statement's mode is
    /// `read_only`, read-write (and the client's own `SET SESSION TRANSACTION`) otherwise: the
    /// server then refuses what the proxy's classifier cannot see, such as a stored function
    /// that writes, called in a SELECT.
    pub(crate) async fn enforce_access(&mut self, read_only: bool) -> Result<(), ErrPacket> {
        if read_only == self.backend_ro {
            return Ok(());
        }
        let mut sqls = vec![if read_only {
            "SET SESSION TRANSACTION READ ONLY".to_string()
        } else {
            "SET SESSION TRANSACTION READ WRITE".to_string()
        }];
        if !read_only {
            sqls.extend(
                self.state
                    .setting("session transaction")
                    .map(str::to_string),
            );
        }
        self.backend_query(&sqls).await?;
        self.backend_ro = read_only;
        Ok(())
    }

    /// After a statement that called functions under `read_only`: a stored function may have
    /// set the session's next transactions read-write; set them read-only again.
    pub(crate) async fn reassert_read_only(&mut self) -> Result<(), ErrPacket> {
        self.backend_query(&["SET SESSION TRANSACTION READ ONLY".to_string()])
            .await
    }

    /// Runs the proxy's own statements; on failure the backend connection is dropped (its
    /// state is unknown) and the next command starts on a fresh one.
    async fn backend_query(&mut self, sqls: &[String]) -> Result<(), ErrPacket> {
        let Some(be) = self.backend.as_mut() else {
            return Ok(());
        };
        for sql in sqls {
            if let Err(e) = be.query(sql).await {
                tracing::warn!(session = self.info.id, error = %e, "setting the backend's transaction access mode failed");
                self.backend = None;
                self.gate_ok = None;
                return Err(ErrPacket::new(
                    2013,
                    "HY000",
                    format!("sql-proxy: the server connection was reset ({e}); retry"),
                ));
            }
        }
        Ok(())
    }

    /// After a batch that changed database and failed part-way: which database is current on
    /// the server now. The session follows it (same side: the batch was checked).
    pub(crate) async fn resync_database(&mut self) {
        let Some(be) = self.backend.as_mut() else {
            return;
        };
        match be.query("SELECT DATABASE()").await {
            Ok(rows) => {
                let db = rows.first().and_then(|r| r.first().cloned()).flatten();
                if let Some(db) = db {
                    if db != self.route.name {
                        let next = self.shared.route(&db);
                        self.set_route(next);
                    }
                    self.state.database = Some(db);
                }
            }
            Err(e) => {
                tracing::warn!(session = self.info.id, error = %e, "reading the current database failed");
                self.backend = None;
                self.gate_ok = None;
            }
        }
    }

    /// A session that must move to another backend while it holds pinned state: the state is
    /// lost with its backend connection, and the client is told what it lost.
    pub(crate) fn lose_pinned_state(&mut self) -> ErrPacket {
        let what = self.pinned.describe();
        self.pinned.clear();
        self.info.pinned.store(false, Ordering::SeqCst);
        self.backend = None;
        self.gate_ok = None;
        let db = &self.route.name;
        tracing::warn!(session = self.info.id, database = %db, lost = %what, "session state bound to the old server dropped at a move");
        ErrPacket::new(
            1317,
            "70100",
            format!(
                "sql-proxy: database '{db}' moved to another server; this session's {what} \
                 were bound to the old one and are gone (the command was not run): recreate \
                 them, or retry"
            ),
        )
    }
}

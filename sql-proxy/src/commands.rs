//! The command loop of a session. Before each command: the database it selects (`USE`,
//! COM_INIT_DB) becomes the session's route (`follow.rs`); the gate holds while that database
//! is paused and re-homes after a switch; the other databases it names are checked
//! (`follow.rs`); writes are refused in read_only and the backend's transactions are made
//! read-only too. Then per-command handling: prepared statements (`prepared.rs`), state
//! tracking for SET/USE/COM_INIT_DB and pinned state, COM_CHANGE_USER.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::follow::Refs;
use crate::protocol::{build_auth_switch, build_ok, cap, status, ErrPacket, NATIVE_PASSWORD};
use crate::relay::{exchange, write_client, RelayError};
use crate::response::Expect;
use crate::route::{DbRoute, Mode};
use crate::scope::Scope;
use crate::session::{routed_database, Session, Stmt};
use crate::session_state::changes_of;
use crate::wire::{Packet, Reader};

pub const COM_QUIT: u8 = 0x01;
pub const COM_INIT_DB: u8 = 0x02;
pub const COM_QUERY: u8 = 0x03;
pub const COM_FIELD_LIST: u8 = 0x04;
pub const COM_STATISTICS: u8 = 0x09;
pub const COM_DEBUG: u8 = 0x0d;
pub const COM_PING: u8 = 0x0e;
pub const COM_CHANGE_USER: u8 = 0x11;
pub const COM_STMT_PREPARE: u8 = 0x16;
pub const COM_STMT_EXECUTE: u8 = 0x17;
pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
pub const COM_STMT_CLOSE: u8 = 0x19;
pub const COM_STMT_RESET: u8 = 0x1a;
pub const COM_SET_OPTION: u8 = 0x1b;
pub const COM_STMT_FETCH: u8 = 0x1c;
pub const COM_RESET_CONNECTION: u8 = 0x1f;

fn prepared_use_error() -> ErrPacket {
    ErrPacket::new(
        1295,
        "HY000",
        "sql-proxy: USE in a prepared statement is not supported (the proxy routes by the \
         database a session uses); run USE or COM_INIT_DB itself",
    )
}

pub(crate) fn read_only_error() -> ErrPacket {
    ErrPacket::new(
        1290,
        "HY000",
        "The MariaDB server is running with the --read-only option so it cannot execute this statement",
    )
}

impl Session {
    pub(crate) async fn command_loop(&mut self) -> Result<(), RelayError> {
        loop {
            let p = self.next_command().await?;
            let Some(&cmd) = p.payload.first() else {
                return Err(RelayError::ClientDecode(crate::wire::bad(
                    "command",
                    "empty packet",
                )));
            };
            if cmd == COM_QUIT {
                return Ok(());
            }
            self.info.in_flight.store(true, Ordering::SeqCst);
            let r = self.run(cmd, p).await;
            let long_data = self.stmts.values().any(|s| s.long_data);
            if long_data {
                self.info.in_txn.store(true, Ordering::SeqCst);
            }
            self.info.in_flight.store(false, Ordering::SeqCst);
            r?;
        }
    }

    /// Before a command: hold while the database is paused (unless this session is inside a
    /// transaction, which must be allowed to finish), move to the route's current side.
    /// Returns the mode the command runs under.
    ///
    /// Fast path (every command of a session whose route did not change): one atomic load of
    /// the route's version. `in_flight` was stored (SeqCst) before; the fence keeps that store
    /// ahead of the version load, so a concurrent pause either sees this session busy or this
    /// session sees the pause.
    pub(crate) async fn gate(&mut self, bytes: usize) -> Result<Mode, ErrPacket> {
        if let Some(mode) = self.gate_ok {
            std::sync::atomic::fence(Ordering::SeqCst);
            if self.backend.is_some() && matches!(self.route_rx.has_changed(), Ok(false)) {
                return Ok(mode);
            }
        }
        self.gate_ok = None;
        loop {
            let st = self.route_rx.borrow_and_update().clone();
            let in_txn = self.info.in_txn.load(Ordering::SeqCst);
            // A session holding pinned state runs on like one inside a transaction: the pause
            // waits for it to release the state (or ends it at the deadline).
            let pinned = !self.pinned.is_empty();
            if st.mode == Mode::Paused && !in_txn && !pinned {
                self.hold(bytes).await?;
                continue;
            }
            let current = self.info.side.lock().expect("side lock").clone();
            let moving = *st.side != *current && !in_txn;
            if self.backend.is_some() && moving && pinned && st.mode != Mode::Paused {
                // Moved without a drain (a direct PUT of the side): the state cannot follow.
                return Err(self.lose_pinned_state());
            }
            if self.backend.is_none() || (moving && !pinned) {
                self.connect_backend(&st.side).await?;
                self.gate_ok = (st.mode != Mode::Paused).then_some(st.mode);
            } else if *st.side == *current && st.mode != Mode::Paused {
                self.gate_ok = Some(st.mode);
            }
            return Ok(st.mode);
        }
    }

    async fn hold(&mut self, bytes: usize) -> Result<(), ErrPacket> {
        let db = self.route.name.clone();
        let limits = &self.shared.limits;
        // The database's own share first: one tenant cannot fill the buffer for all.
        let route = self.route.clone();
        let mine = route.held_bytes.fetch_add(bytes, Ordering::SeqCst);
        let held = self.shared.held_bytes.fetch_add(bytes, Ordering::SeqCst);
        let share_full = mine + bytes > limits.hold_buffer_per_database_bytes;
        if share_full || held + bytes > limits.hold_buffer_bytes {
            route.held_bytes.fetch_sub(bytes, Ordering::SeqCst);
            self.shared.held_bytes.fetch_sub(bytes, Ordering::SeqCst);
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            if share_full {
                let c = &self.shared.protect.counters;
                c.hold_share_refused.fetch_add(1, Ordering::Relaxed);
            }
            let which = if share_full {
                "its share of the hold buffer"
            } else {
                "the hold buffer"
            };
            return Err(ErrPacket::new(
                1040,
                "HY000",
                format!("sql-proxy: database '{db}' is paused for a move and {which} is full; retry shortly"),
            ));
        }
        self.counters.held.fetch_add(1, Ordering::Relaxed);
        self.info.in_flight.store(false, Ordering::SeqCst);
        let deadline = Duration::from_millis(limits.hold_deadline_ms);
        let rx = &mut self.route_rx;
        let waited = tokio::time::timeout(deadline, async {
            loop {
                if rx.borrow_and_update().mode != Mode::Paused {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await;
        self.info.in_flight.store(true, Ordering::SeqCst);
        self.shared.held_bytes.fetch_sub(bytes, Ordering::SeqCst);
        route.held_bytes.fetch_sub(bytes, Ordering::SeqCst);
        match waited {
            Ok(true) => Ok(()),
            _ => {
                self.counters.hold_timeouts.fetch_add(1, Ordering::Relaxed);
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                Err(ErrPacket::new(
                    1205,
                    "HY000",
                    format!(
                        "sql-proxy: database '{db}' stayed paused for a move longer than {} ms; \
                         the query was not run, retry it",
                        deadline.as_millis()
                    ),
                ))
            }
        }
    }

    async fn reply_err(&mut self, seq: u8, e: &ErrPacket) -> Result<(), RelayError> {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        write_client(&mut self.client, seq, &e.build()).await?;
        Ok(())
    }

    async fn run(&mut self, cmd: u8, mut p: Packet) -> Result<(), RelayError> {
        let seq = p.last_seq.wrapping_add(1);
        // 1. The database the command selects: the session follows its route (`follow.rs`).
        let scope = match cmd {
            COM_QUERY | COM_STMT_PREPARE => Some(Scope::of(&p.payload[1..])),
            _ => None,
        };
        if let Some(sc) = &scope {
            if sc.prepared_use || (cmd == COM_STMT_PREPARE && !sc.uses.is_empty()) {
                return self.reply_err(seq, &prepared_use_error()).await;
            }
        }
        let target = match cmd {
            COM_INIT_DB => Some(String::from_utf8_lossy(&p.payload[1..]).into_owned()),
            _ => scope.as_ref().and_then(|sc| sc.uses.last().cloned()),
        };
        // The database before a USE (only a batch with a USE needs it: no clone otherwise).
        let before = target
            .as_ref()
            .and_then(|_| (!self.route.is_unrouted()).then(|| self.route.name.clone()));
        let prev = match target.as_deref().map(|db| self.enter_db(db)) {
            Some(Err(e)) => return self.reply_err(seq, &e).await,
            Some(Ok(prev)) => prev,
            None => None,
        };
        // 2. The gate: hold while paused, move to the route's side.
        let mode = match self.gate(p.payload.len()).await {
            Ok(m) => m,
            Err(e) => {
                self.restore_route(prev);
                return self.reply_err(seq, &e).await;
            }
        };
        if let Some(e) = self.pending_error.take() {
            if !matches!(cmd, COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA) {
                self.restore_route(prev);
                return self.reply_err(seq, &e).await;
            }
        }
        // 3. The other databases it names: same side, not paused; the strictest mode.
        if cmd == COM_STMT_EXECUTE {
            self.resolve_last_prepared(&mut p.payload);
        }
        let checked = match (&scope, cmd) {
            (Some(sc), _) => {
                let refs = Refs::of(sc, before.as_deref(), || self.grants());
                self.check_others(mode, &refs, &p.payload[1..]).await
            }
            (None, COM_STMT_EXECUTE) => {
                // Cloned only when the statement names another database (rare).
                let here = &self.route.name;
                let other = Self::client_stmt_id(&p.payload)
                    .and_then(|id| self.stmts.get(&id))
                    .filter(|st| st.refs.names_other_than(here))
                    .map(|st| (st.refs.clone(), st.sql.clone()));
                match other {
                    Some((refs, sql)) => self.check_others(mode, &refs, &sql).await,
                    None => Ok(mode),
                }
            }
            _ => Ok(mode),
        };
        let mode = match checked {
            Ok(m) => m,
            Err(e) => {
                self.restore_route(prev);
                self.end_touching();
                return self.reply_err(seq, &e).await;
            }
        };
        let r = self
            .run_checked(cmd, p, seq, mode, scope, target, prev)
            .await;
        self.end_touching();
        r
    }

    /// The user's granted databases (what a statement of unseen reach may act on).
    fn grants(&self) -> Vec<String> {
        let users = self.shared.users.read().expect("users lock").clone();
        users
            .users
            .get(&self.login.user)
            .map(|u| u.databases.clone())
            .unwrap_or_default()
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_checked(
        &mut self,
        cmd: u8,
        mut p: Packet,
        seq: u8,
        mode: Mode,
        scope: Option<Scope>,
        target: Option<String>,
        prev: Option<Arc<DbRoute>>,
    ) -> Result<(), RelayError> {
        let read_only = mode == Mode::ReadOnly;
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        let expect = match cmd {
            COM_QUERY => {
                let sc = scope.as_ref().expect("scanned");
                // Several statements calling functions: a stored function in one could make
                // the next one's transaction read-write before the proxy can set it back.
                if read_only && (is_write_cmd(&p.payload[1..]) || (sc.calls && sc.statements > 1)) {
                    self.restore_route(prev);
                    return self.reply_err(seq, &read_only_error()).await;
                }
                if let Some(sql) = crate::rewrite::hide_socket(&p.payload[1..]) {
                    p.payload.truncate(1);
                    p.payload.extend_from_slice(&sql);
                }
                Expect::Results { binary: false }
            }
            COM_INIT_DB | COM_PING | COM_STATISTICS | COM_DEBUG | COM_SET_OPTION
            | COM_RESET_CONNECTION | COM_STMT_RESET => Expect::Single,
            COM_FIELD_LIST => Expect::FieldList,
            COM_STMT_PREPARE => {
                if read_only && is_write_cmd(&p.payload[1..]) {
                    self.last_prepared = None;
                    return self.reply_err(seq, &read_only_error()).await;
                }
                if let Some(sql) = crate::rewrite::hide_socket(&p.payload[1..]) {
                    p.payload.truncate(1);
                    p.payload.extend_from_slice(&sql);
                }
                Expect::Prepare
            }
            COM_STMT_EXECUTE => Expect::Results { binary: true },
            COM_STMT_FETCH => Expect::Rows,
            COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA => return self.stmt_no_reply(cmd, p).await,
            COM_CHANGE_USER => return self.change_user(p).await,
            _ => {
                let e = ErrPacket::new(
                    1047,
                    "08S01",
                    format!("sql-proxy: command 0x{cmd:02x} is not supported"),
                );
                return self.reply_err(seq, &e).await;
            }
        };
        let mut client_stmt_id = None;
        let mut changes = Vec::new();
        let mut calls = scope.as_ref().is_some_and(|sc| sc.calls);
        let mut pins = match cmd {
            COM_QUERY => scope.as_ref().map(|sc| sc.pins.clone()).unwrap_or_default(),
            _ => Vec::new(),
        };
        match cmd {
            COM_QUERY => {
                changes = changes_of(&p.payload[1..]);
                if let Err(e) = self.check_replay_size(&changes) {
                    return self.reply_err(seq, &e).await;
                }
            }
            COM_STMT_PREPARE => client_stmt_id = Some(self.next_stmt),
            COM_STMT_EXECUTE | COM_STMT_RESET | COM_STMT_FETCH => {
                if let Some(st) = self.stmt_mut(&p.payload) {
                    calls = st.calls;
                    if cmd == COM_STMT_EXECUTE {
                        pins = st.pins.clone();
                    }
                }
                if let Err(e) = self.map_stmt(cmd, mode, &mut p.payload) {
                    return self.reply_err(seq, &e).await;
                }
            }
            _ => {}
        }
        // (MariaDB refuses even to prepare a write in a read-only transaction.)
        if matches!(cmd, COM_QUERY | COM_STMT_EXECUTE | COM_STMT_PREPARE) {
            if let Err(e) = self.enforce_access(read_only).await {
                self.restore_route(prev);
                return self.reply_err(seq, &e).await;
            }
        }
        let be = self.backend.as_mut().expect("gate connected a backend");
        let out = exchange(
            &mut self.client,
            &mut self.cbuf,
            be,
            &p.payload,
            seq,
            expect,
            client_stmt_id,
        )
        .await?;
        if let Some(st) = out.scanner.status {
            self.info
                .in_txn
                .store(st & status::IN_TRANS != 0, Ordering::SeqCst);
        }
        let ok = !out.scanner.error;
        self.pinned.apply(&pins, ok);
        if read_only && calls && matches!(cmd, COM_QUERY | COM_STMT_EXECUTE) {
            // Nothing to tell the client if this fails: its next command starts afresh.
            let _ = self.reassert_read_only().await;
        }
        if let Some(db) = target {
            let single = scope.as_ref().is_none_or(|sc| sc.statements == 1);
            if ok {
                self.state.database = Some(db);
                if let Err(e) = self.shared.ensure_stored(&self.route).await {
                    // The client already has its OK; the route is served from the default
                    // side as before, and the next login or change records it.
                    tracing::error!(database = %self.route.name, error = %e, "route first used by USE not stored");
                }
            } else if single {
                self.restore_route(prev);
            } else {
                self.resync_database().await;
            }
        }
        if !ok {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            if cmd == COM_STMT_PREPARE {
                self.last_prepared = None;
            }
            return Ok(());
        }
        match cmd {
            COM_QUERY if !changes.is_empty() => {
                let target_db = self.state.database.clone();
                self.state.apply(changes);
                // The database was followed above; a USE inside the text is already applied.
                self.state.database = target_db;
                *self.info.tracked.lock().expect("tracked lock") = self.state.tracked();
            }
            COM_SET_OPTION => {
                self.set_option = Reader::new(&p.payload[1..]).u16("option").ok();
            }
            COM_RESET_CONNECTION => {
                self.state.reset();
                self.stmts.clear();
                self.set_option = None;
                self.pinned.clear();
                self.last_prepared = None;
                self.backend_ro = false;
                self.info.prepared.store(0, Ordering::Relaxed);
            }
            COM_STMT_RESET => {
                if let Some(st) = self.stmt_mut(&p.payload) {
                    st.long_data = false;
                }
            }
            COM_STMT_EXECUTE => {
                if let Some(st) = self.stmt_mut(&p.payload) {
                    st.long_data = false;
                }
            }
            COM_STMT_PREPARE => {
                if let Some((bid, params, _)) = out.prepared {
                    let sql = p.payload[1..].to_vec();
                    let write = is_write_cmd(&sql);
                    let sc = scope.expect("scanned");
                    let before = (!self.route.is_unrouted()).then(|| self.route.name.clone());
                    let mut refs = Refs::of(&sc, before.as_deref(), || self.grants());
                    // Executed later, perhaps after a USE: it still acts on this database.
                    refs.certain.extend(before);
                    self.stmts.insert(
                        self.next_stmt,
                        Stmt {
                            sql,
                            backend_id: bid,
                            params,
                            write,
                            types: None,
                            needs_types: false,
                            long_data: false,
                            refs,
                            calls: sc.calls,
                            pins: sc.pins,
                        },
                    );
                    self.last_prepared = Some(self.next_stmt);
                    self.next_stmt = self.next_stmt.wrapping_add(1).max(1);
                    self.info
                        .prepared
                        .store(self.stmts.len(), Ordering::Relaxed);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A `SET` whose text would make the state replayed after a switch larger than
    /// `limits.max_set_replay_bytes` is refused before it runs.
    fn check_replay_size(&self, changes: &[crate::session_state::Change]) -> Result<(), ErrPacket> {
        if changes.is_empty() {
            return Ok(());
        }
        let max = self.shared.limits.max_set_replay_bytes;
        let mut after = self.state.clone();
        after.apply(changes.to_vec());
        let size: usize = after.replay().iter().map(String::len).sum();
        if size <= max {
            return Ok(());
        }
        let c = &self.shared.protect.counters;
        c.set_replay_refused.fetch_add(1, Ordering::Relaxed);
        Err(ErrPacket::new(
            1105,
            "HY000",
            format!(
                "sql-proxy: this SET was not run: the session's SET statements would reach \
                 {size} bytes, over the {max} bytes the proxy carries across a database move \
                 (limits.max_set_replay_bytes)"
            ),
        ))
    }

    /// COM_CHANGE_USER: checked against the user store like a login, then a fresh backend
    /// login as the new user (session state and statements start over, as on a server).
    async fn change_user(&mut self, p: Packet) -> Result<(), RelayError> {
        let mut seq = p.last_seq.wrapping_add(1);
        let caps = self.login.capabilities;
        let parsed = (|| {
            let mut r = Reader::new(&p.payload[1..]);
            let user = String::from_utf8_lossy(r.nul_str("user")?).into_owned();
            let auth = if caps & cap::SECURE_CONNECTION != 0 {
                let n = r.u8("auth length")? as usize;
                r.take(n, "auth response")?.to_vec()
            } else {
                r.nul_str("auth response")?.to_vec()
            };
            let db = if r.is_empty() {
                Vec::new()
            } else {
                r.nul_str("database")?.to_vec()
            };
            let charset = if r.remaining() >= 2 {
                Some(r.u16("charset")?)
            } else {
                None
            };
            let plugin = if caps & cap::PLUGIN_AUTH != 0 && !r.is_empty() {
                Some(String::from_utf8_lossy(r.nul_str("plugin")?).into_owned())
            } else {
                None
            };
            Ok::<_, crate::wire::DecodeError>((user, auth, db, charset, plugin))
        })();
        let (user, mut token, db, charset, plugin) = match parsed {
            Ok(v) => v,
            Err(e) => {
                let e = ErrPacket::new(
                    1043,
                    "08S01",
                    format!("sql-proxy: bad COM_CHANGE_USER: {e}"),
                );
                return self.reply_err(seq, &e).await;
            }
        };
        if plugin.as_deref().is_some_and(|p| p != NATIVE_PASSWORD) {
            write_client(
                &mut self.client,
                seq,
                &build_auth_switch(NATIVE_PASSWORD, &self.scramble),
            )
            .await?;
            let p = crate::relay::read_client_packet(&mut self.client, &mut self.cbuf).await?;
            seq = p.last_seq.wrapping_add(1);
            token = p.payload;
        }
        let users = self.shared.users.read().expect("users lock").clone();
        let checked = crate::session::check_login(
            &self.shared,
            &users,
            &user,
            self.info.client,
            self.client.is_tls(),
            &token,
            &self.scramble,
        )
        .await;
        let stage1 = match checked {
            Ok(s) => s,
            Err(e) => {
                self.reply_err(seq, &e).await?;
                return Err(RelayError::ClientClosed);
            }
        };
        let db = (!db.is_empty()).then(|| String::from_utf8_lossy(&db).into_owned());
        let routed = routed_database(&users, &user, db.as_deref());
        let default_side = self
            .shared
            .default_side
            .read()
            .expect("default side")
            .clone();
        let route = match &routed {
            Some(db) => match self.shared.route_for_login(db) {
                Some(route) => route,
                None => {
                    let e = ErrPacket::new(
                        1040,
                        "08004",
                        "sql-proxy: too many logins to databases not known yet \
                         (limits.max_unstored_routes)",
                    );
                    self.reply_err(seq, &e).await?;
                    return Err(RelayError::ClientClosed);
                }
            },
            None => Arc::new(DbRoute::unrouted(default_side)),
        };
        self.login.user = user.clone();
        self.login.stage1 = stage1;
        if let Some(c) = charset {
            self.login.charset = c as u8;
        }
        self.state = crate::session_state::SessionState::new(db, self.login.charset);
        self.stmts.clear();
        self.set_option = None;
        self.backend = None;
        self.pinned.clear();
        self.last_prepared = None;
        // On failure the session ends, and `session::serve` hands the route back.
        self.set_route(route);
        let side: Arc<str> = self.route_rx.borrow().side.clone();
        let connected = match self.connect_backend(&side).await {
            Ok(()) => self
                .shared
                .ensure_stored(&self.route)
                .await
                .map_err(|e| crate::session::route_not_stored(&self.route.name, &e)),
            Err(e) => Err(e),
        };
        match connected {
            Ok(()) => {
                write_client(
                    &mut self.client,
                    seq,
                    &build_ok(0, 0, status::AUTOCOMMIT, 0),
                )
                .await?;
                Ok(())
            }
            Err(e) => {
                self.reply_err(seq, &e).await?;
                Err(RelayError::ClientClosed)
            }
        }
    }
}

fn is_write_cmd(sql: &[u8]) -> bool {
    crate::classify::is_write(sql)
}

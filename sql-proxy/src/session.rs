//! One client connection: the login (our greeting and scramble, the hash check, the backend
//! login with stage 1), then the command loop. Before each command the session passes the
//! gate (`gate.rs`: hold while paused, re-home after a switch); then the command is relayed
//! (`relay.rs`) and its effect on tracked state recorded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rand::Rng;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::auth::{AuthOutcome, Stage1};
use crate::backend::{BackendConn, BackendError, BackendTls, Login};
use crate::protocol::{
    build_auth_switch, build_ok, cap, status, ErrPacket, HandshakeResponse, HandshakeV10,
    NATIVE_PASSWORD,
};
use crate::relay::{read_client_packet, write_client, RelayError};
use crate::route::{Counters, DbRoute, Mode, RouteState, SessionInfo, Shared};
use crate::session_state::SessionState;
use crate::stream::{ClientIo, ClientStream};

/// A prepared statement as the client sees it.
pub(crate) struct Stmt {
    pub sql: Vec<u8>,
    pub backend_id: u32,
    pub params: u16,
    pub write: bool,
    /// Parameter types from the last execute that sent them (re-sent after a re-prepare).
    pub types: Option<Vec<u8>>,
    /// Re-prepared on a new backend and the types not yet sent there.
    pub needs_types: bool,
    pub long_data: bool,
    /// Other databases its text names (checked at every execute: routes change).
    pub refs: crate::follow::Refs,
    /// Its text calls functions (under read_only the backend is set read-only again after).
    pub calls: bool,
    /// State its execution pins to the backend (`GET_LOCK` in a prepared SELECT).
    pub pins: Vec<crate::scope::Pin>,
}

pub struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) info: Arc<SessionInfo>,
    pub(crate) client: ClientStream,
    pub(crate) cbuf: BytesMut,
    pub(crate) backend: Option<BackendConn>,
    pub(crate) login: Login,
    pub(crate) route: Arc<DbRoute>,
    pub(crate) route_rx: watch::Receiver<RouteState>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) state: SessionState,
    pub(crate) stmts: HashMap<u32, Stmt>,
    pub(crate) next_stmt: u32,
    /// Error owed to the client for its next command (its transaction was aborted).
    pub(crate) pending_error: Option<ErrPacket>,
    /// Last COM_SET_OPTION value (replayed on a new backend).
    pub(crate) set_option: Option<u16>,
    pub(crate) scramble: [u8; 20],
    /// The mode the gate let the last command through under, while the session is on the
    /// route's current side; `None` makes the next command take the full gate.
    pub(crate) gate_ok: Option<Mode>,
    /// State bound to the current backend connection (see `pinned.rs`).
    pub(crate) pinned: crate::pinned::Pinned,
    /// The proxy set the backend session's transactions read-only (see `follow.rs`).
    pub(crate) backend_ro: bool,
    /// The client id of the statement prepared last: what id 0xFFFFFFFF names.
    pub(crate) last_prepared: Option<u32>,
}

fn new_scramble() -> [u8; 20] {
    let mut rng = rand::thread_rng();
    let mut s = [0u8; 20];
    for b in &mut s {
        *b = rng.gen_range(1..=127u8);
    }
    s
}

/// Maps a failed backend login or connect to what the client is told.
pub(crate) fn backend_err_to_client(e: &BackendError, db: &str) -> ErrPacket {
    match e {
        BackendError::Server { err, .. } => err.clone(),
        // Refused as the server refuses such an account without TLS (clients show a 1045 at
        // login; the text says why).
        BackendError::Tls { .. } => ErrPacket::new(1045, "28000", format!("sql-proxy: {e}")),
        other => ErrPacket::new(
            2013,
            "HY000",
            format!("sql-proxy: database '{db}' is unreachable right now ({other})"),
        ),
    }
}

/// An error refusing a login, as the stock clients read it. Codes 2000-2999 are the client
/// library's own: sent by a server during the handshake, libmariadb reports them as "2027
/// malformed packet" and drops the text, so they go out as 1429 ("unable to connect to
/// foreign data source", what a server says when the source behind it is unreachable).
pub(crate) fn login_refusal(e: ErrPacket) -> ErrPacket {
    if (2000..3000).contains(&e.code) {
        ErrPacket::new(1429, "HY000", e.message)
    } else {
        e
    }
}

/// Serves one client connection to its end. `_conn` keeps it counted against the connection
/// limits until then.
pub async fn serve(
    shared: Arc<Shared>,
    client: TcpStream,
    peer: SocketAddr,
    _conn: crate::limits::ConnGuard,
) {
    let _ = client.set_nodelay(true);
    let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    match login(shared.clone(), client, peer, id).await {
        Ok(Some(mut s)) => {
            let db = s.route.name.clone();
            let r = s.command_loop().await;
            if let Err(e) = r {
                if matches!(e, RelayError::ClientTooLarge(_)) {
                    let c = &shared.protect.counters;
                    c.oversized_packets.fetch_add(1, Ordering::Relaxed);
                }
                if !matches!(e, RelayError::ClientClosed) {
                    tracing::info!(session = id, database = %db, error = %e, "session ended");
                }
            }
            s.counters.sessions.fetch_sub(1, Ordering::Relaxed);
            shared.unregister(id);
            // A route never stored (a failed COM_CHANGE_USER to a new name) is freed.
            let route = s.route.clone();
            drop(s);
            shared.release_route(route);
        }
        Ok(None) => {}
        Err(e) => {
            if matches!(e, RelayError::ClientTooLarge(_)) {
                let c = &shared.protect.counters;
                c.oversized_login_packets.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(session = id, client = %peer, error = %e, "login aborted")
        }
    }
}

/// Reads exactly one single-frame packet of at most `max` bytes (no read-ahead: TLS may start
/// right after it). A larger one is refused at its header, before its payload is read.
async fn read_exact_packet(
    tcp: &mut TcpStream,
    max: usize,
) -> Result<crate::wire::Packet, RelayError> {
    let mut h = [0u8; 4];
    tcp.read_exact(&mut h).await.map_err(RelayError::Client)?;
    let len = h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16;
    if len > max || len >= crate::wire::MAX_FRAME {
        return Err(RelayError::ClientTooLarge(
            crate::wire::PacketError::TooLarge { len, max },
        ));
    }
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload)
        .await
        .map_err(RelayError::Client)?;
    Ok(crate::wire::Packet {
        seq: h[3],
        last_seq: h[3],
        payload,
    })
}

/// What the client part of a login (before any backend is involved) ends with.
struct Authenticated {
    client: ClientStream,
    cbuf: BytesMut,
    seq: u8,
    resp: HandshakeResponse,
    stage1: Option<Stage1>,
}

/// The login of one client; `None` when it was refused (and told so) or dropped.
async fn login(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
) -> Result<Option<Session>, RelayError> {
    let scramble = new_scramble();
    let limits = &shared.limits;
    // The whole client part of a login, TLS handshake and auth switch included, within one
    // deadline: a client that sends nothing, or a byte at a time, is cut off.
    let deadline = Duration::from_millis(limits.handshake_timeout_ms);
    let authed = match tokio::time::timeout(
        deadline,
        authenticate(&shared, tcp, peer, id, &scramble),
    )
    .await
    {
        Ok(r) => r?,
        Err(_) => {
            let c = &shared.protect.counters;
            c.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::info!(session = id, client = %peer, "login cut off at handshake_timeout_ms");
            return Ok(None);
        }
    };
    let Some(Authenticated {
        mut client,
        cbuf,
        seq,
        resp,
        stage1,
    }) = authed
    else {
        return Ok(None);
    };
    client.max_packet = limits.max_packet_bytes;
    let users = shared.users.read().expect("users lock").clone();
    // The backend leg as safe as the client's: TLS for TLS clients when a backend CA is set,
    // always for accounts that require it (refused at the backend connect without one).
    let backend_tls = match users.users.get(&resp.user) {
        Some(u) if u.require_tls => BackendTls::Required,
        _ if client.is_tls() => BackendTls::Preferred,
        _ => BackendTls::Off,
    };
    let routed_db = routed_database(&users, &resp.user, resp.database.as_deref());
    // A database named (or the user's single grant): its route, bounded (a name tried at a
    // login that fails is handed back); none: the default side until the client selects one.
    let route = match &routed_db {
        Some(db) => match shared.route_for_login(db) {
            Some(route) => route,
            None => {
                let e = ErrPacket::new(
                    1040,
                    "08004",
                    "sql-proxy: too many logins to databases not known yet \
                     (limits.max_unstored_routes); retry shortly",
                );
                write_client(&mut client, seq, &e.build()).await?;
                return Ok(None);
            }
        },
        None => Arc::new(DbRoute::unrouted(
            shared
                .default_side
                .read()
                .expect("default side lock")
                .clone(),
        )),
    };
    // Handed back (and freed if nobody else uses it) unless the login completes.
    let claim = RouteClaim {
        shared: shared.clone(),
        route: Some(route.clone()),
    };
    let routed_db = routed_db.unwrap_or_default();
    let route_rx = route.state.subscribe();
    let side = route_rx.borrow().side.clone();
    let info = Arc::new(SessionInfo::new(
        id,
        resp.user.clone(),
        peer,
        routed_db.clone(),
        side.clone(),
    ));
    let login = Login {
        user: resp.user.clone(),
        stage1,
        database: resp.database.clone(),
        capabilities: resp.capabilities & cap::PROXY_OFFER,
        charset: resp.charset,
        max_packet: resp.max_packet,
        tls: backend_tls,
    };
    let counters = shared.counters(&routed_db, &side);
    let mut s = Session {
        shared: shared.clone(),
        info,
        client,
        cbuf,
        backend: None,
        login,
        route,
        route_rx,
        counters,
        state: SessionState::new(resp.database.clone(), resp.charset),
        stmts: HashMap::new(),
        next_stmt: 1,
        pending_error: None,
        set_option: None,
        scramble,
        gate_ok: None,
        pinned: Default::default(),
        backend_ro: false,
        last_prepared: None,
    };
    // A refused login: the session's reference to the route goes first, so that the claim
    // finds the route held by the table alone and can free it.
    let refused = |s: Session, claim: RouteClaim| {
        drop(s);
        drop(claim);
        Ok(None)
    };
    // A new connection to a paused database waits like a query does.
    s.info.in_flight.store(true, Ordering::SeqCst);
    let gate = s.gate(0).await;
    s.info.in_flight.store(false, Ordering::SeqCst);
    if let Err(e) = gate {
        write_client(&mut s.client, seq, &login_refusal(e).build()).await?;
        return refused(s, claim);
    }
    if s.backend.is_none() {
        let side = s.info.side.lock().expect("side lock").clone();
        if let Err(e) = s.connect_backend(&side).await {
            write_client(&mut s.client, seq, &login_refusal(e).build()).await?;
            return refused(s, claim);
        }
    }
    // A database first seen here is served from the default side: that route is committed
    // before the client may write, so a restart can never serve it from another side.
    if let Err(e) = shared.ensure_stored(&s.route).await {
        write_client(
            &mut s.client,
            seq,
            &route_not_stored(&s.route.name, &e).build(),
        )
        .await?;
        return refused(s, claim);
    }
    claim.keep();
    write_client(&mut s.client, seq, &build_ok(0, 0, status::AUTOCOMMIT, 0)).await?;
    s.counters.sessions.fetch_add(1, Ordering::Relaxed);
    shared.register(s.info.clone());
    tracing::debug!(session = id, user = %s.info.user, database = %routed_db, side = %side, "session open");
    Ok(Some(s))
}

/// A route taken for a login or a COM_CHANGE_USER: released when dropped unless kept.
pub(crate) struct RouteClaim {
    pub shared: Arc<Shared>,
    pub route: Option<Arc<DbRoute>>,
}

impl RouteClaim {
    /// The login completed: the route is stored and stays.
    pub fn keep(mut self) {
        self.route = None;
    }
}

impl Drop for RouteClaim {
    fn drop(&mut self) {
        if let Some(r) = self.route.take() {
            self.shared.release_route(r);
        }
    }
}

/// The client part of a login: greeting, login packet (TLS first if asked), auth switch, the
/// hash check. Refusals are answered here (`None`); no backend is touched.
async fn authenticate(
    shared: &Arc<Shared>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    scramble: &[u8; 20],
) -> Result<Option<Authenticated>, RelayError> {
    let limits = &shared.limits;
    let greeting = HandshakeV10 {
        server_version: shared.server_version.clone(),
        connection_id: id as u32,
        scramble: scramble.to_vec(),
        capabilities: cap::PROXY_OFFER | if shared.tls.is_some() { cap::SSL } else { 0 },
        charset: 45,
        status: status::AUTOCOMMIT,
        auth_plugin: NATIVE_PASSWORD.into(),
    };
    {
        use tokio::io::AsyncWriteExt;
        let mut out = BytesMut::new();
        crate::wire::encode_packet(&mut out, 0, &greeting.build());
        tcp.write_all(&out).await.map_err(RelayError::Client)?;
    }
    let mut cbuf = BytesMut::with_capacity(1024);
    let max = limits.max_login_packet_bytes;
    let mut p = read_exact_packet(&mut tcp, max).await?;
    let mut client = ClientStream::new(ClientIo::Plain(tcp), max);
    if HandshakeResponse::is_ssl_request(&p.payload) {
        let (Some(acceptor), ClientIo::Plain(tcp)) = (shared.tls.clone(), client.io) else {
            return Ok(None); // SSL was not offered; a conforming client never asks.
        };
        let tls = acceptor.accept(tcp).await.map_err(RelayError::Client)?;
        client = ClientStream::new(ClientIo::Tls(Box::new(tls)), max);
        p = read_client_packet(&mut client, &mut cbuf).await?;
    }
    let mut seq = p.last_seq.wrapping_add(1);
    let resp = match HandshakeResponse::parse(&p.payload) {
        Ok(r) => r,
        Err(e) => {
            let e = ErrPacket::new(1043, "08S01", format!("sql-proxy: bad handshake: {e}"));
            write_client(&mut client, seq, &e.build()).await?;
            return Ok(None);
        }
    };
    if resp.capabilities & cap::COMPRESS != 0 {
        let e = ErrPacket::new(
            1043,
            "08S01",
            "sql-proxy: protocol compression is not supported; connect without --compress",
        );
        write_client(&mut client, seq, &e.build()).await?;
        return Ok(None);
    }
    let mut token = resp.auth_response.clone();
    if resp
        .auth_plugin
        .as_deref()
        .is_some_and(|p| p != NATIVE_PASSWORD)
    {
        write_client(
            &mut client,
            seq,
            &build_auth_switch(NATIVE_PASSWORD, scramble),
        )
        .await?;
        let p = read_client_packet(&mut client, &mut cbuf).await?;
        seq = p.last_seq.wrapping_add(1);
        token = p.payload;
    }
    let users = shared.users.read().expect("users lock").clone();
    let tls = client.is_tls();
    match check_login(shared, &users, &resp.user, peer, tls, &token, scramble).await {
        Ok(stage1) => Ok(Some(Authenticated {
            client,
            cbuf,
            seq,
            resp,
            stage1,
        })),
        Err(e) => {
            tracing::info!(session = id, user = %resp.user, client = %peer, code = e.code, "login refused");
            write_client(&mut client, seq, &e.build()).await?;
            Ok(None)
        }
    }
}

/// The hash check of a login or COM_CHANGE_USER, behind the throttle: an address or a user
/// name with too many recent failures is refused without checking the password, and every
/// refusal is answered `login_failure_delay_ms` after the check began, so an unknown user and
/// a wrong password cannot be told apart by time (nor by text: both get 1045).
pub(crate) async fn check_login(
    shared: &Shared,
    users: &crate::auth::UserStore,
    user: &str,
    peer: SocketAddr,
    tls: bool,
    token: &[u8],
    scramble: &[u8],
) -> Result<Option<Stage1>, ErrPacket> {
    let began = tokio::time::Instant::now();
    let host = peer.ip().to_string();
    let throttle = &shared.protect.logins;
    let counters = &shared.protect.counters;
    let refusal = if let Some(left) = throttle.ip_blocked(peer.ip()) {
        counters.logins_throttled.fetch_add(1, Ordering::Relaxed);
        crate::limits::host_blocked(peer.ip(), left)
    } else if let Some(left) = throttle.user_blocked(user) {
        counters.logins_throttled.fetch_add(1, Ordering::Relaxed);
        crate::limits::user_blocked(user, &host, left)
    } else {
        match users.check_login(user, &host, tls, token, scramble) {
            AuthOutcome::Ok(s) => return Ok(s),
            AuthOutcome::Denied(e) => {
                counters.login_failures.fetch_add(1, Ordering::Relaxed);
                throttle.failed(peer.ip(), user);
                if let Some(reason) = users.left_out(user) {
                    // The operator learns why (the client only gets the usual 1045).
                    counters.logins_left_out.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(user = %user, client = %peer, reason = reason.name(), "login refused: the account was left out of the proxy's user store: {}", reason.why());
                }
                e
            }
        }
    };
    tokio::time::sleep_until(began + Duration::from_millis(shared.limits.login_failure_delay_ms))
        .await;
    Err(refusal)
}

/// The refusal of a login whose route could not be committed (fail closed).
pub(crate) fn route_not_stored(db: &str, e: &crate::route_store::StoreError) -> ErrPacket {
    ErrPacket::new(
        1105,
        "HY000",
        format!("sql-proxy: the route of database '{db}' could not be recorded ({e}); refusing to serve it"),
    )
}

/// The database that routes a session: the one the client asked for, else the user's only
/// granted database; `None` (unrouted until it selects one) for a user with none or several:
/// picking one of several could send its writes to the wrong side.
pub(crate) fn routed_database(
    users: &crate::auth::UserStore,
    user: &str,
    asked: Option<&str>,
) -> Option<String> {
    if let Some(db) = asked {
        return Some(db.to_string());
    }
    match users.users.get(user).map(|u| u.databases.as_slice()) {
        Some([only]) => Some(only.clone()),
        _ => None,
    }
}

impl Session {
    /// Opens a backend connection on `side` as this session's user, replays tracked state and
    /// re-prepares statements. Replaces the current backend connection only on success.
    pub(crate) async fn connect_backend(&mut self, side: &Arc<str>) -> Result<(), ErrPacket> {
        self.gate_ok = None;
        let db = self.route.name.clone();
        let Some(addr) = self.shared.backend_addr(side) else {
            return Err(ErrPacket::new(
                2005,
                "HY000",
                format!("sql-proxy: database '{db}' routes to unknown backend '{side}'"),
            ));
        };
        let mut login = self.login.clone();
        // The current database, if it is the one routing the session (a session about to
        // select another one logs in without, then selects it).
        login.database = self
            .state
            .database
            .clone()
            .filter(|d| *d == self.route.name);
        let timeout = Duration::from_millis(self.shared.limits.backend_connect_ms);
        let socket = self.shared.backend_socket(side);
        let tls = self.shared.backend_tls.get();
        let mut be = BackendConn::connect_via(side, addr, socket.as_deref(), &login, tls, timeout)
            .await
            .map_err(|e| backend_err_to_client(&e, &db))?;
        let fail = |what: &str, e: BackendError| {
            tracing::warn!(session = self.info.id, database = %db, side = %side, error = %e, "{what} failed on the new backend");
            ErrPacket::new(
                2013,
                "HY000",
                format!(
                    "sql-proxy: database '{db}' moved to '{side}' but {what} failed there: {e}"
                ),
            )
        };
        // LAST_INSERT_ID() is carried over (read on the old connection, set on the new).
        let last_id = match self.backend.as_mut() {
            Some(old) => tokio::time::timeout(timeout, old.query("SELECT LAST_INSERT_ID()"))
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|rows| rows.first()?.first()?.clone())
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&v| v != 0),
            None => None,
        };
        if let Some(id) = last_id {
            be.query(&format!("SELECT LAST_INSERT_ID({id})"))
                .await
                .map_err(|e| fail("restoring LAST_INSERT_ID()", e))?;
        }
        for sql in self.state.replay() {
            be.query(&sql)
                .await
                .map_err(|e| fail("restoring session state", e))?;
        }
        if let Some(opt) = self.set_option {
            let mut cmd = vec![0x1b];
            cmd.extend_from_slice(&opt.to_le_bytes());
            be.write_packet(0, &cmd)
                .await
                .map_err(|e| fail("COM_SET_OPTION", e))?;
            be.read_packet()
                .await
                .map_err(|e| fail("COM_SET_OPTION", e))?;
        }
        let mut new_ids = Vec::with_capacity(self.stmts.len());
        for (cid, st) in &self.stmts {
            let bid = be
                .prepare(&st.sql)
                .await
                .map_err(|e| fail("re-preparing a statement", e))?;
            new_ids.push((*cid, bid));
        }
        for (cid, bid) in new_ids {
            if let Some(st) = self.stmts.get_mut(&cid) {
                st.backend_id = bid;
                st.needs_types = true;
            }
        }
        let old_side = self.info.side.lock().expect("side lock").clone();
        if self.backend.is_some() && *old_side != **side {
            self.counters.sessions.fetch_sub(1, Ordering::Relaxed);
            self.counters = self.shared.counters(&db, side);
            self.counters.sessions.fetch_add(1, Ordering::Relaxed);
        } else if self.backend.is_none() && *old_side != **side {
            self.counters = self.shared.counters(&db, side);
        }
        *self.info.side.lock().expect("side lock") = side.clone();
        self.backend = Some(be);
        self.backend_ro = false;
        Ok(())
    }

    /// Drops the backend connection, which makes the server roll back the open transaction
    /// (and drops the state pinned to it).
    pub(crate) fn abort_transaction(&mut self) {
        if !self.info.in_txn.load(Ordering::SeqCst) {
            self.info.abort_txn.store(false, Ordering::SeqCst);
            self.pending_error = Some(self.lose_pinned_state());
            return;
        }
        let lost = self.pinned.describe();
        self.pinned.clear();
        self.info.pinned.store(false, Ordering::SeqCst);
        self.backend = None;
        self.gate_ok = None;
        self.info.in_txn.store(false, Ordering::SeqCst);
        self.info.abort_txn.store(false, Ordering::SeqCst);
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let db = &self.route.name;
        tracing::warn!(session = self.info.id, database = %db, "open transaction aborted by a switch deadline");
        self.pending_error = Some(ErrPacket::new(
            1317,
            "70100",
            format!(
                "sql-proxy: your open transaction was rolled back because database '{db}' is \
                 moving to another server and the transaction outlived the switch deadline; \
                 nothing of it was committed, retry it{}",
                if lost.is_empty() {
                    String::new()
                } else {
                    format!(" (this session's {lost} were lost with it)")
                }
            ),
        ));
    }

    /// Waits for the client's next packet, acting on a switch's abort request meanwhile.
    pub(crate) async fn next_command(&mut self) -> Result<crate::wire::Packet, RelayError> {
        loop {
            if self.info.abort_txn.load(Ordering::SeqCst) {
                if self.info.holds_backend() {
                    self.abort_transaction();
                } else {
                    // Released before the request was seen: nothing to abort, and a later
                    // transaction must not be aborted by this stale request.
                    self.info.abort_txn.store(false, Ordering::SeqCst);
                }
            }
            if let Some((p, used)) =
                crate::wire::decode_packet_limited(&self.cbuf, self.client.max_packet)?
            {
                bytes::Buf::advance(&mut self.cbuf, used);
                crate::relay::shrink(&mut self.cbuf);
                return Ok(p);
            }
            self.cbuf.reserve(4096);
            let info = self.info.clone();
            tokio::select! {
                r = tokio::io::AsyncReadExt::read_buf(&mut self.client, &mut self.cbuf) => {
                    match r {
                        Ok(0) => return Err(RelayError::ClientClosed),
                        Ok(_) => {}
                        Err(e) => return Err(RelayError::Client(e)),
                    }
                }
                _ = info.abort_notify.notified() => {}
            }
        }
    }
}

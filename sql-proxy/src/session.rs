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
use crate::backend::{BackendConn, BackendError, Login};
use crate::protocol::{
    build_auth_switch, build_ok, cap, status, ErrPacket, HandshakeResponse, HandshakeV10,
    NATIVE_PASSWORD,
};
use crate::relay::{read_client_packet, write_client, RelayError};
use crate::route::{Counters, DbRoute, Mode, RouteState, SessionInfo, Shared};
use crate::session_state::SessionState;
use crate::stream::ClientStream;

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
        other => ErrPacket::new(
            2013,
            "HY000",
            format!("sql-proxy: database '{db}' is unreachable right now ({other})"),
        ),
    }
}

/// Serves one client connection to its end.
pub async fn serve(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr) {
    let _ = client.set_nodelay(true);
    let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    match login(shared.clone(), client, peer, id).await {
        Ok(Some(mut s)) => {
            let db = s.route.name.clone();
            let r = s.command_loop().await;
            if let Err(e) = r {
                if !matches!(e, RelayError::ClientClosed) {
                    tracing::info!(session = id, database = %db, error = %e, "session ended");
                }
            }
            s.counters.sessions.fetch_sub(1, Ordering::Relaxed);
            shared.unregister(id);
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(session = id, error = %e, "login aborted"),
    }
}

/// Reads exactly one single-frame packet (no read-ahead: TLS may start right after it).
async fn read_exact_packet(tcp: &mut TcpStream) -> Result<crate::wire::Packet, RelayError> {
    let mut h = [0u8; 4];
    tcp.read_exact(&mut h).await.map_err(RelayError::Client)?;
    let len = h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16;
    if len >= crate::wire::MAX_FRAME {
        return Err(RelayError::ClientDecode(crate::wire::bad(
            "login packet",
            "too large",
        )));
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

async fn login(
    shared: Arc<Shared>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
) -> Result<Option<Session>, RelayError> {
    let scramble = new_scramble();
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
    let mut p = read_exact_packet(&mut tcp).await?;
    let host = peer.ip().to_string();
    let mut client = ClientStream::Plain(tcp);
    if HandshakeResponse::is_ssl_request(&p.payload) {
        let (Some(acceptor), ClientStream::Plain(tcp)) = (shared.tls.clone(), client) else {
            return Ok(None); // SSL was not offered; a conforming client never asks.
        };
        let tls = acceptor.accept(tcp).await.map_err(RelayError::Client)?;
        client = ClientStream::Tls(Box::new(tls));
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
            &build_auth_switch(NATIVE_PASSWORD, &scramble),
        )
        .await?;
        let p = read_client_packet(&mut client, &mut cbuf).await?;
        seq = p.last_seq.wrapping_add(1);
        token = p.payload;
    }
    let users = shared.users.read().expect("users lock").clone();
    let tls = matches!(client, ClientStream::Tls(_));
    let stage1: Option<Stage1> = match users.check_login(&resp.user, &host, tls, &token, &scramble)
    {
        AuthOutcome::Ok(s) => s,
        AuthOutcome::Denied(e) => {
            tracing::info!(session = id, user = %resp.user, client = %peer, code = e.code, "login refused");
            write_client(&mut client, seq, &e.build()).await?;
            return Ok(None);
        }
    };
    let routed_db = routed_database(&users, &resp.user, resp.database.as_deref());
    let route = shared.route(&routed_db);
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
    };
    // A new connection to a paused database waits like a query does.
    s.info.in_flight.store(true, Ordering::SeqCst);
    let gate = s.gate(0).await;
    s.info.in_flight.store(false, Ordering::SeqCst);
    if let Err(e) = gate {
        write_client(&mut s.client, seq, &e.build()).await?;
        return Ok(None);
    }
    if s.backend.is_none() {
        let side = s.info.side.lock().expect("side lock").clone();
        if let Err(e) = s.connect_backend(&side).await {
            write_client(&mut s.client, seq, &e.build()).await?;
            return Ok(None);
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
        return Ok(None);
    }
    write_client(&mut s.client, seq, &build_ok(0, 0, status::AUTOCOMMIT, 0)).await?;
    s.counters.sessions.fetch_add(1, Ordering::Relaxed);
    shared.register(s.info.clone());
    tracing::debug!(session = id, user = %s.info.user, database = %routed_db, side = %side, "session open");
    Ok(Some(s))
}

/// The refusal of a login whose route could not be committed (fail closed).
pub(crate) fn route_not_stored(db: &str, e: &crate::route_store::StoreError) -> ErrPacket {
    ErrPacket::new(
        1105,
        "HY000",
        format!("sql-proxy: the route of database '{db}' could not be recorded ({e}); refusing to serve it"),
    )
}

/// The database that routes a session: the one the client asked for, else the user's first.
pub(crate) fn routed_database(
    users: &crate::auth::UserStore,
    user: &str,
    asked: Option<&str>,
) -> String {
    if let Some(db) = asked {
        return db.to_string();
    }
    users
        .users
        .get(user)
        .and_then(|u| u.databases.first().cloned())
        .unwrap_or_default()
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
        login.database = self.state.database.clone();
        let timeout = Duration::from_millis(self.shared.limits.backend_connect_ms);
        let socket = self.shared.backend_socket(side);
        let mut be = BackendConn::connect_via(side, addr, socket.as_deref(), &login, timeout)
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
        Ok(())
    }

    /// Drops the backend connection, which makes the server roll back the open transaction.
    pub(crate) fn abort_transaction(&mut self) {
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
                 nothing of it was committed, retry it"
            ),
        ));
    }

    /// Waits for the client's next packet, acting on a switch's abort request meanwhile.
    pub(crate) async fn next_command(&mut self) -> Result<crate::wire::Packet, RelayError> {
        loop {
            if self.info.abort_txn.load(Ordering::SeqCst) && self.info.in_txn.load(Ordering::SeqCst)
            {
                self.abort_transaction();
            }
            if let Some((p, used)) =
                crate::wire::decode_packet(&self.cbuf).map_err(RelayError::ClientDecode)?
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

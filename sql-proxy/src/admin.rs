//! Admin API (HTTP + JSON, `Authorization: Bearer <token>` on every path, 401 without) and
//! Prometheus metrics. The migrator drives cutover through it; see `sql-proxy/README.md`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::UserStore;
use crate::fleet;
use crate::route::{Mode, Shared};
use crate::route_store::{Store, StoreError};
use crate::switch::{self, SwitchError};

#[derive(Clone)]
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub token: Arc<str>,
    pub users_file: PathBuf,
    /// Export per-database series (`[admin] per_database_metrics`).
    pub per_database_metrics: bool,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/routes", get(list_routes))
        .route("/routes/{db}", get(get_route).put(set_route))
        .route("/routes/{db}/pause", post(pause))
        .route("/routes/{db}/resume", post(resume))
        .route("/routes/{db}/switch", post(switch_db))
        .route("/sessions", get(list_sessions))
        .route("/fleet", get(fleet_view))
        .route("/reload", post(reload))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

async fn require_token(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let want = st.token.as_bytes();
    let ok = given.len() == want.len()
        && given.bytes().zip(want).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "missing or wrong bearer token"})),
        )
            .into_response();
    }
    next.run(req).await
}

fn err(code: StatusCode, msg: impl std::fmt::Display) -> Response {
    (code, Json(json!({"error": msg.to_string()}))).into_response()
}

#[derive(Serialize)]
struct RouteView {
    database: String,
    side: String,
    mode: Mode,
    sessions: usize,
    /// Epoch of the route's last committed change; 0: never stored (no client logged in to
    /// it yet, nothing changed it): it would be served from `default_side`.
    epoch: u64,
    /// This instance is fenced (lease not confirmed): the route above is held, not served.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    fenced: bool,
}

/// A route as clients are served now. An unknown database is shown as it would be served
/// (default side, open, epoch 0) without being created.
fn view(shared: &Shared, db: &str) -> RouteView {
    let (side, mode, epoch) = match shared.lookup(db) {
        Some(r) => {
            let st = r.current();
            (st.side, st.mode, r.epoch.load(Ordering::SeqCst))
        }
        None => (
            shared
                .default_side
                .read()
                .expect("default side lock")
                .clone(),
            Mode::Open,
            0,
        ),
    };
    RouteView {
        database: db.into(),
        side: side.to_string(),
        mode,
        sessions: shared.sessions_of(db).len(),
        epoch,
        fenced: shared.fenced.load(Ordering::SeqCst),
    }
}

/// 503 when the change could not be made durable (nothing changed; 409 when another instance
/// changed the route first), 504 when the fleet did not confirm it in time, 409 otherwise.
fn switch_err(e: SwitchError) -> Response {
    let code = match e {
        SwitchError::Store {
            source: StoreError::Conflict { .. },
            ..
        } => StatusCode::CONFLICT,
        SwitchError::Store { .. } => StatusCode::SERVICE_UNAVAILABLE,
        SwitchError::PauseNotAcknowledged { .. } | SwitchError::ResumeNotAcknowledged { .. } => {
            StatusCode::GATEWAY_TIMEOUT
        }
        _ => StatusCode::CONFLICT,
    };
    err(code, e)
}

async fn list_routes(State(st): State<AdminState>) -> Response {
    let mut names: Vec<String> = st
        .shared
        .routes
        .read()
        .expect("routes lock")
        .keys()
        .cloned()
        .collect();
    names.sort();
    let v: Vec<_> = names.iter().map(|n| view(&st.shared, n)).collect();
    Json(v).into_response()
}

async fn get_route(State(st): State<AdminState>, Path(db): Path<String>) -> Response {
    Json(view(&st.shared, &db)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRoute {
    side: Option<String>,
    mode: Option<Mode>,
}

async fn set_route(
    State(st): State<AdminState>,
    Path(db): Path<String>,
    Json(b): Json<SetRoute>,
) -> Response {
    if let Some(s) = &b.side {
        if st.shared.backend_addr(s).is_none() {
            return err(
                StatusCode::BAD_REQUEST,
                format!("side {s:?} is not a configured backend"),
            );
        }
    }
    if b.mode == Some(Mode::Paused) {
        return err(
            StatusCode::BAD_REQUEST,
            "use POST /routes/{db}/pause to pause",
        );
    }
    let route = st.shared.route(&db);
    let _g = route.switch_lock.lock().await;
    if route.current().mode == Mode::Paused {
        return err(
            StatusCode::CONFLICT,
            format!("database {db} is paused for a move: end it with POST /routes/{db}/resume"),
        );
    }
    let res = st.shared.set_route(&db, b.side.as_deref(), b.mode).await;
    match res {
        Ok(epoch) => {
            let within = fleet::ack_wait(&st.shared, Duration::ZERO);
            match fleet::wait_acks(&st.shared, epoch, within).await {
                Ok(_) => Json(view(&st.shared, &db)).into_response(),
                Err(source) => switch_err(SwitchError::ResumeNotAcknowledged { db, source }),
            }
        }
        Err(source) => switch_err(SwitchError::Store { db, source }),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    txn_deadline_ms: Option<u64>,
}

fn deadlines(st: &AdminState, txn: Option<u64>) -> (Duration, Duration) {
    let l = &st.shared.limits;
    (
        Duration::from_millis(txn.unwrap_or(l.switch_txn_deadline_ms)),
        Duration::from_millis(l.switch_statement_grace_ms),
    )
}

async fn pause(
    State(st): State<AdminState>,
    Path(db): Path<String>,
    body: Option<Json<PauseBody>>,
) -> Response {
    let b = body.map(|j| j.0).unwrap_or_default();
    let (txn, grace) = deadlines(&st, b.txn_deadline_ms);
    let route = st.shared.route(&db);
    let _g = route.switch_lock.lock().await;
    match switch::pause(&st.shared, &db, txn, grace).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => switch_err(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResumeBody {
    side: Option<String>,
}

async fn resume(
    State(st): State<AdminState>,
    Path(db): Path<String>,
    body: Option<Json<ResumeBody>>,
) -> Response {
    let b = body.map(|j| j.0).unwrap_or_default();
    let Some(route) = st.shared.lookup(&db) else {
        return switch_err(SwitchError::NotPaused { db });
    };
    // A resume waits for a pause still draining instead of ending it mid-drain.
    let _g = route.switch_lock.lock().await;
    match switch::resume(&st.shared, &db, b.side.as_deref()).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => switch_err(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchBody {
    to: String,
    txn_deadline_ms: Option<u64>,
}

async fn switch_db(
    State(st): State<AdminState>,
    Path(db): Path<String>,
    Json(b): Json<SwitchBody>,
) -> Response {
    let (txn, grace) = deadlines(&st, b.txn_deadline_ms);
    match switch::switch(&st.shared, &db, &b.to, txn, grace).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => switch_err(e),
    }
}

async fn list_sessions(State(st): State<AdminState>) -> Response {
    let sessions: Vec<_> = st
        .shared
        .sessions
        .lock()
        .expect("sessions lock")
        .values()
        .map(|s| {
            json!({
                "id": s.id,
                "user": s.user,
                "client": s.client.to_string(),
                "database": *s.database.lock().expect("db lock"),
                "side": s.side.lock().expect("side lock").to_string(),
                "in_transaction": s.in_txn.load(Ordering::Relaxed),
                "prepared_statements": s.prepared.load(Ordering::Relaxed),
                "tracked_variables": *s.tracked.lock().expect("tracked lock"),
                "age_s": s.started.elapsed().as_secs(),
            })
        })
        .collect();
    Json(sessions).into_response()
}

/// This instance's membership of its fleet and every instance the store knows.
async fn fleet_view(State(st): State<AdminState>) -> Response {
    let sh = &st.shared;
    let (Store::Shared(store), Some(f)) = (&sh.store, &sh.fleet) else {
        return err(
            StatusCode::NOT_FOUND,
            "this proxy has no [fleet]: its routes are its own (embedded store)",
        );
    };
    let instances = match store.instances().await {
        Ok(i) => serde_json::to_value(i).unwrap_or_default(),
        Err(e) => json!({"error": e.to_string()}),
    };
    Json(json!({
        "fleet": store.fleet(),
        "instance": f.instance,
        "fenced": sh.fenced.load(Ordering::SeqCst),
        "lease_age_ms": f.lease_age().as_millis() as u64,
        "lease_ms": f.lease.as_millis() as u64,
        "applied_epoch": f.applied.load(Ordering::SeqCst),
        "acked_epoch": f.acked.load(Ordering::SeqCst),
        "instances": instances,
    }))
    .into_response()
}

/// Re-reads the user store; sessions stay connected.
async fn reload(State(st): State<AdminState>) -> Response {
    match UserStore::load(&st.users_file) {
        Ok(u) => {
            let n = u.users.len();
            *st.shared.users.write().expect("users lock") = Arc::new(u);
            Json(json!({"users": n})).into_response()
        }
        Err(e) => err(StatusCode::BAD_REQUEST, e),
    }
}

async fn metrics(State(st): State<AdminState>) -> Response {
    let out = crate::metrics::render(&st.shared, st.per_database_metrics);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

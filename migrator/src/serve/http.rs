//! Routes, the authentication layer, pages and assets.
//!
//! Every route but `/login` is behind [`require_auth`]: a bearer token or a session cookie,
//! and a CSRF token on every POST. Pages are static HTML shells filled by `assets/app.js` from
//! the JSON API (polled every 2 s); assets are compiled into the binary.

use super::auth::{cookie_value, Principal, COOKIE};
use super::controls::ControlFailure;
use super::{queries, Shared};
use crate::control::Action;
use axum::body::Body;
use axum::extract::{Form, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use std::time::Instant;

const PAGE: &str = include_str!("../../assets/page.html");
const LOGIN: &str = include_str!("../../assets/login.html");
const OVERVIEW: &str = include_str!("../../assets/overview.html");
const WAVE: &str = include_str!("../../assets/wave.html");
const SITE: &str = include_str!("../../assets/site.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const CHARTS_JS: &str = include_str!("../../assets/charts.js");
const STYLE: &str = include_str!("../../assets/style.css");

/// The router of a dashboard.
pub fn router(app: Shared) -> Router {
    let protected = Router::new()
        .route("/", get(overview_page))
        .route("/wave/{n}", get(wave_page))
        .route("/site/{name}", get(site_page))
        .route("/assets/app.js", get(|| asset(APP_JS, "text/javascript")))
        .route(
            "/assets/charts.js",
            get(|| asset(CHARTS_JS, "text/javascript")),
        )
        .route("/assets/style.css", get(|| asset(STYLE, "text/css")))
        .route("/api/session", get(session))
        .route("/api/overview", get(api_overview))
        .route("/api/wave/{n}", get(api_wave))
        .route("/api/wave/{n}/sites", get(api_wave_sites))
        .route("/api/wave/{n}/control", post(api_wave_control))
        .route("/api/site/{name}", get(api_site))
        .route("/api/site/{name}/rollback", post(api_rollback))
        .route("/metrics", get(metrics))
        .route("/logout", post(logout))
        .layer(middleware::from_fn_with_state(app.clone(), require_auth));
    Router::new()
        .route("/login", get(login_form).post(login))
        .merge(protected)
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, "cache-control", "no-store");
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(
        h,
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    );
    res
}

fn is_api(path: &str) -> bool {
    path.starts_with("/api/") || path == "/metrics" || path.starts_with("/assets/")
}

fn unauthorized(path: &str, message: &str) -> Response {
    if is_api(path) {
        let mut r = (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({ "error": message })),
        )
            .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"migrator\""),
        );
        r
    } else {
        (StatusCode::UNAUTHORIZED, login_html(path, Some(message))).into_response()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn login_html(next: &str, error: Option<&str>) -> axum::response::Html<String> {
    axum::response::Html(
        LOGIN
            .replace("{{next}}", &esc(next))
            .replace("{{error}}", &error.map(esc).unwrap_or_default()),
    )
}

/// Removes `token=…` from a query string.
fn strip_token(query: &str) -> String {
    query
        .split('&')
        .filter(|kv| !kv.starts_with("token=") && !kv.is_empty())
        .collect::<Vec<_>>()
        .join("&")
}

fn session_cookie(id: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict"))
        .expect("hex cookie is a valid header")
}

async fn require_auth(State(app): State<Shared>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    // `?token=` link: exchange it for a session and drop it from the address.
    if let Some(tok) = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_string)
    {
        if req.method() != Method::GET || !app.auth.token_ok(&tok) {
            return unauthorized(&path, "wrong token");
        }
        let Ok(id) = app.auth.login("operator") else {
            return (StatusCode::INTERNAL_SERVER_ERROR, "RNG failure").into_response();
        };
        let rest = strip_token(&query);
        let target = if rest.is_empty() {
            path
        } else {
            format!("{path}?{rest}")
        };
        let mut r = StatusCode::SEE_OTHER.into_response();
        r.headers_mut()
            .insert(header::SET_COOKIE, session_cookie(&id));
        if let Ok(v) = HeaderValue::from_str(&target) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or("\u{0}invalid"));
    let cookie = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| cookie_value(c, COOKIE));
    let Some(principal) = app.auth.check(bearer, cookie) else {
        return unauthorized(
            &path,
            if bearer.is_some() || cookie.is_some() {
                "wrong token or expired session"
            } else {
                "a token is required (Authorization: Bearer, or log in)"
            },
        );
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let sent = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !super::auth::constant_time_eq(sent.as_bytes(), principal.csrf.as_bytes()) {
            return (
                StatusCode::FORBIDDEN,
                Json(serde_json::json!({
                    "error": "missing or wrong CSRF token (X-CSRF-Token; see GET /api/session)"
                })),
            )
                .into_response();
        }
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

async fn login_form(Query(q): Query<std::collections::HashMap<String, String>>) -> Response {
    let next = q.get("next").map(String::as_str).unwrap_or("/");
    login_html(next, None).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    who: String,
    #[serde(default)]
    next: String,
}

async fn login(State(app): State<Shared>, Form(f): Form<LoginForm>) -> Response {
    // Only local paths: never redirect elsewhere after a login.
    let next = if f.next.starts_with('/') && !f.next.starts_with("//") {
        f.next.clone()
    } else {
        "/".to_string()
    };
    if !app.auth.token_ok(&f.token) {
        return (
            StatusCode::UNAUTHORIZED,
            login_html(&next, Some("wrong token")),
        )
            .into_response();
    }
    let Ok(id) = app.auth.login(&f.who) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "RNG failure").into_response();
    };
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&id));
    if let Ok(v) = HeaderValue::from_str(&next) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn logout(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(id) = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| cookie_value(c, COOKIE))
    {
        app.auth.logout(id);
    }
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/login"));
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("migrator_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    r
}

async fn asset(body: &'static str, ctype: &'static str) -> Response {
    ([(header::CONTENT_TYPE, ctype)], body).into_response()
}

fn page(p: &Principal, name: &str, title: &str, arg: &str, body: &str) -> Response {
    axum::response::Html(
        PAGE.replace("{{body}}", body)
            .replace("{{title}}", &esc(title))
            .replace("{{page}}", name)
            .replace("{{arg}}", &esc(arg))
            .replace("{{csrf}}", &esc(&p.csrf))
            .replace("{{who}}", &esc(&p.who)),
    )
    .into_response()
}

async fn overview_page(Extension(p): Extension<Principal>) -> Response {
    page(&p, "overview", "Campaign overview", "", OVERVIEW)
}

async fn wave_page(Extension(p): Extension<Principal>, UrlPath(n): UrlPath<String>) -> Response {
    page(&p, "wave", &format!("Wave {n}"), &n, WAVE)
}

async fn site_page(Extension(p): Extension<Principal>, UrlPath(name): UrlPath<String>) -> Response {
    page(&p, "site", &format!("Site {name}"), &name, SITE)
}

async fn session(Extension(p): Extension<Principal>) -> Response {
    Json(serde_json::json!({ "who": p.who, "csrf": p.csrf })).into_response()
}

/// A JSON answer with the server time it took (`Server-Timing`).
fn timed_json<T: serde::Serialize>(t0: Instant, v: &T) -> Response {
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut r = Json(v).into_response();
    if let Ok(h) = HeaderValue::from_str(&format!("db;dur={ms:.2}")) {
        r.headers_mut().insert("server-timing", h);
    }
    r
}

/// An API error: its status and a message for the operator.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> ApiError {
    ApiError(status, msg.to_string())
}

/// Runs `f` on a pooled read connection in the blocking pool.
async fn with_db<T: Send + 'static>(
    app: &Shared,
    f: impl FnOnce(&dyn crate::journal::SqlConn, &super::App) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let conn = app
            .pool
            .get()
            .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e))?;
        f(&*conn, &app)
    })
    .await
    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?
}

fn sql_err(e: impl std::fmt::Display) -> ApiError {
    error(StatusCode::INTERNAL_SERVER_ERROR, format!("journal: {e}"))
}

async fn api_overview(State(app): State<Shared>) -> Response {
    let t0 = Instant::now();
    let r = with_db(&app, |conn, app| {
        let o = queries::overview(conn).map_err(sql_err)?;
        let mut controls = serde_json::Map::new();
        for w in &o.waves {
            if let Ok(wave) = u32::try_from(w.wave) {
                if let Ok((st, _, _)) = app.controls.wave_view(wave) {
                    controls.insert(
                        w.wave.to_string(),
                        serde_json::to_value(st).unwrap_or_default(),
                    );
                }
            }
        }
        let running = app.controls.latest_status();
        Ok(serde_json::json!({
            "overview": o, "controls": controls, "running": running,
        }))
    })
    .await;
    match r {
        Ok(v) => timed_json(t0, &v),
        Err(e) => e.into_response(),
    }
}

fn wave_arg(n: &str) -> Result<Option<i64>, ApiError> {
    if n == "all" {
        return Ok(None);
    }
    n.parse::<i64>().map(Some).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            format!("wave {n:?}: expected a number or `all`"),
        )
    })
}

async fn api_wave(State(app): State<Shared>, UrlPath(n): UrlPath<String>) -> Response {
    let t0 = Instant::now();
    let wave = match wave_arg(&n) {
        Ok(Some(w)) => w,
        Ok(None) => {
            return error(StatusCode::BAD_REQUEST, "wave `all` has no controls").into_response()
        }
        Err(e) => return e.into_response(),
    };
    let r = with_db(&app, move |conn, app| {
        let states: std::collections::BTreeMap<String, i64> = conn
            .query(
                "SELECT state, n FROM dash_counts WHERE wave = ? AND n <> 0",
                &[wave.into()],
            )
            .and_then(|rows| rows.iter().map(|r| Ok((r.text(0)?, r.i64(1)?))).collect())
            .map_err(sql_err)?;
        let freeze = queries::freeze_stats(conn, wave).map_err(sql_err)?;
        let (control, history, status) = match u32::try_from(wave) {
            Ok(w) => app
                .controls
                .wave_view(w)
                .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?,
            Err(_) => Default::default(),
        };
        Ok(serde_json::json!({
            "wave": wave, "states": states, "freeze": freeze, "control": control,
            "history": history, "status": status,
        }))
    })
    .await;
    match r {
        Ok(v) => timed_json(t0, &v),
        Err(e) => e.into_response(),
    }
}

async fn api_wave_sites(
    State(app): State<Shared>,
    UrlPath(n): UrlPath<String>,
    Query(f): Query<queries::SiteFilter>,
) -> Response {
    let t0 = Instant::now();
    let wave = match wave_arg(&n) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let r = with_db(&app, move |conn, _| {
        queries::site_page(conn, wave, &f).map_err(|e| match e {
            queries::QueryError::State(_) => error(StatusCode::BAD_REQUEST, e),
            queries::QueryError::Sql(e) => sql_err(e),
        })
    })
    .await;
    match r {
        Ok(v) => timed_json(t0, &v),
        Err(e) => e.into_response(),
    }
}

async fn api_site(State(app): State<Shared>, UrlPath(name): UrlPath<String>) -> Response {
    let t0 = Instant::now();
    let r = with_db(&app, move |conn, app| {
        let d = super::site::site_detail(conn, &name).map_err(sql_err)?;
        let Some(mut d) = d else {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("site {name} is in neither the journal nor the plan"),
            ));
        };
        let reason = if !app.controls.can_rollback() {
            Some("the dashboard was started without --sites")
        } else if !d.can_rollback {
            Some("only a switched or live site can be rolled back")
        } else {
            None
        };
        d.can_rollback &= app.controls.can_rollback();
        Ok(serde_json::json!({ "site": d, "rollback_unavailable": reason }))
    })
    .await;
    match r {
        Ok(v) => timed_json(t0, &v),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct WaveControl {
    action: String,
    #[serde(default)]
    value: Option<u32>,
    /// The page asked the operator and they confirmed.
    #[serde(default)]
    confirm: bool,
}

fn control_error(e: ControlFailure) -> ApiError {
    match e {
        ControlFailure::Refused(_) => error(StatusCode::CONFLICT, e),
        ControlFailure::NotFound(_) => error(StatusCode::NOT_FOUND, e),
        ControlFailure::Journal(_) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn api_wave_control(
    State(app): State<Shared>,
    Extension(p): Extension<Principal>,
    UrlPath(n): UrlPath<String>,
    Json(c): Json<WaveControl>,
) -> Response {
    let Ok(wave) = n.parse::<u32>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("wave {n:?}: expected a number"),
        )
        .into_response();
    };
    if !c.confirm {
        return error(StatusCode::BAD_REQUEST, "a control needs \"confirm\": true").into_response();
    }
    let action = match (c.action.as_str(), c.value) {
        ("pause", _) => Action::Pause,
        ("resume", _) => Action::Resume,
        ("throttle", Some(v)) => Action::Throttle(v),
        ("throttle", None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "throttle needs \"value\": N (0 removes the limit)",
            )
            .into_response()
        }
        (other, _) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown action {other:?} (pause, resume, throttle)"),
            )
            .into_response()
        }
    };
    let r = tokio::task::spawn_blocking(move || app.controls.wave(wave, action, &p.who)).await;
    match r {
        Ok(Ok(rec)) => Json(rec).into_response(),
        Ok(Err(e)) => control_error(e).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

#[derive(Deserialize)]
struct Confirm {
    #[serde(default)]
    confirm: bool,
}

async fn api_rollback(
    State(app): State<Shared>,
    Extension(p): Extension<Principal>,
    UrlPath(site): UrlPath<String>,
    Json(c): Json<Confirm>,
) -> Response {
    if !c.confirm {
        return error(
            StatusCode::BAD_REQUEST,
            "a rollback needs \"confirm\": true",
        )
        .into_response();
    }
    let r = tokio::task::spawn_blocking(move || app.controls.rollback(&site, &p.who)).await;
    match r {
        Ok(Ok(id)) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "started": true, "control": id })),
        )
            .into_response(),
        Ok(Err(e)) => control_error(e).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn metrics(State(app): State<Shared>) -> Response {
    match with_db(&app, |conn, _| {
        super::metrics::render(conn).map_err(sql_err)
    })
    .await
    {
        Ok(text) => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Body::from(text))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Err(e) => e.into_response(),
    }
}
